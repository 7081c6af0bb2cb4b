//! The plugin manifest and how it travels inside a component.
//!
//! A plugin is one file agencies can hand around: `nachfass plugin build`
//! appends the manifest as a top-level custom section named
//! [`SECTION_NAME`]. A component without the section may ship the manifest
//! beside it as `<file>.manifest.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::limits::LimitOverrides;
use super::outgoing_http::is_destination;

/// Name of the custom section holding the manifest JSON.
pub const SECTION_NAME: &str = "nachfass:manifest";

/// The newest WIT package version, the one the SDK builds against.
pub const API_VERSION: &str = "0.2.0";

/// The first WIT package version; componentize-py and componentize-js
/// plugins are still built against it (its scorer has no batch export).
pub const API_VERSION_0_1: &str = "0.1.0";

/// Every `nachfass:plugin` version this host loads, oldest first (each
/// kept in `wit/since_v<version>`).
pub const API_VERSIONS: [&str; 2] = [API_VERSION_0_1, API_VERSION];

/// The three kinds of plugin, one per WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    SegmentRule,
    Scorer,
    Channel,
}

impl World {
    pub const ALL: [World; 3] = [World::SegmentRule, World::Scorer, World::Channel];

    pub fn as_str(self) -> &'static str {
        match self {
            World::SegmentRule => "segment-rule",
            World::Scorer => "scorer",
            World::Channel => "channel",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for World {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        World::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| ManifestError::UnknownWorld(s.to_owned()))
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    /// Who publishes the plugin; a signed bundle's signature must be by
    /// this publisher's key (see `runtime::signature`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub publisher: String,
    /// The WIT package version the plugin was built against.
    #[serde(default = "default_api")]
    pub api: String,
    /// Configuration keys the plugin reads through `host.config`.
    #[serde(default)]
    pub config: Vec<ConfigKey>,
    /// Capabilities the plugin asks for beyond the `host` interface
    /// (`http` for outgoing requests). A binding grants them.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Hosts a channel needs to reach (`host`, `host:port`, `*.domain`).
    /// When given, a binding's `allow_http` only takes effect within them;
    /// when empty, the binding alone decides. A new host in an upgrade
    /// needs an admin's approval (see `runtime::capabilities`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_hosts: Vec<String>,
    /// Limits the plugin needs, where the world's defaults do not fit: the
    /// defaults of its bindings (a binding's own `limits` still win).
    #[serde(default, skip_serializing_if = "LimitOverrides::is_empty")]
    pub limits: LimitOverrides,
    /// The parts of a contact a segment rule or scorer reads. The host
    /// hands it nothing else: the others arrive empty. Without `reads` a
    /// plugin is handed the whole contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<Vec<ContactPart>>,
}

/// A part of a contact that a plugin may declare it reads; each reaches
/// only a plugin that names it. A contact's id, score, stage, time zone
/// and times are always handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ContactPart {
    /// The email address and phone number.
    ContactPoints,
    /// The custom attributes.
    Attributes,
    /// The names of the segments the contact belongs to.
    Segments,
    /// The activity summary (counts per event kind).
    Activity,
}

impl ContactPart {
    pub const ALL: [ContactPart; 4] = [
        ContactPart::ContactPoints,
        ContactPart::Attributes,
        ContactPart::Segments,
        ContactPart::Activity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContactPart::ContactPoints => "contact-points",
            ContactPart::Attributes => "attributes",
            ContactPart::Segments => "segments",
            ContactPart::Activity => "activity",
        }
    }
}

/// What a plugin is handed of each contact, from its manifest's `reads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactParts {
    pub contact_points: bool,
    pub attributes: bool,
    pub segments: bool,
    pub activity: bool,
}

impl ContactParts {
    /// The whole contact: what a plugin without `reads` is handed.
    pub const ALL: ContactParts = ContactParts {
        contact_points: true,
        attributes: true,
        segments: true,
        activity: true,
    };

    /// `activity` if the plugin reads it, else nothing.
    pub fn activity<'a, T>(&self, activity: &'a [T]) -> &'a [T] {
        if self.activity { activity } else { &[] }
    }

    /// The parts handed over, by name.
    pub fn named(&self) -> Vec<ContactPart> {
        ContactPart::ALL
            .into_iter()
            .filter(|part| match part {
                ContactPart::ContactPoints => self.contact_points,
                ContactPart::Attributes => self.attributes,
                ContactPart::Segments => self.segments,
                ContactPart::Activity => self.activity,
            })
            .collect()
    }

    /// Exactly the parts named.
    pub fn of(parts: &[ContactPart]) -> ContactParts {
        ContactParts {
            contact_points: parts.contains(&ContactPart::ContactPoints),
            attributes: parts.contains(&ContactPart::Attributes),
            segments: parts.contains(&ContactPart::Segments),
            activity: parts.contains(&ContactPart::Activity),
        }
    }
}

fn default_api() -> String {
    API_VERSION.to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("unknown world `{0}`: expected segment-rule, scorer or channel")]
    UnknownWorld(String),
    #[error("the manifest is not valid: {0}")]
    Invalid(String),
    #[error(
        "no manifest: the component has no `{SECTION_NAME}` section and no `.manifest.json` file beside it; build it with `nachfass plugin build`"
    )]
    Missing,
    #[error(
        "no manifest: the component has no `{SECTION_NAME}` section and there is no `{sidecar}` beside it; build it with `nachfass plugin build`"
    )]
    MissingSidecar {
        /// The exact sidecar file name that was looked for.
        sidecar: String,
    },
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Manifest {
    /// The version, parsed; [`Manifest::validate`] guarantees it parses.
    pub fn semver(&self) -> semver::Version {
        semver::Version::parse(&self.version).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
    }

    /// What the plugin is handed of each contact: nothing for a channel,
    /// which is handed messages.
    pub fn contact_parts(&self) -> ContactParts {
        match (self.world, self.reads.as_deref()) {
            (World::Channel, _) => ContactParts::of(&[]),
            (_, Some(parts)) => ContactParts::of(parts),
            (_, None) => ContactParts::ALL,
        }
    }

    /// `name@version`, the plugin's identity in the registry.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(ManifestError::Invalid(format!(
                "name `{}` must be 1-64 characters of a-z, 0-9, `-` or `_`",
                self.name
            )));
        }
        if let Err(e) = semver::Version::parse(&self.version) {
            return Err(ManifestError::Invalid(format!(
                "version `{}` is not a semantic version like 1.2.3: {e}",
                self.version
            )));
        }
        let major_minor = |v: &str| {
            let mut parts = v.split('.');
            (
                parts.next().map(str::to_owned),
                parts.next().map(str::to_owned),
            )
        };
        if !API_VERSIONS
            .iter()
            .any(|known| major_minor(known) == major_minor(&self.api))
        {
            return Err(ManifestError::Invalid(format!(
                "built against nachfass:plugin@{}, this host speaks @{}; rebuild with a matching nachfass-sdk",
                self.api,
                API_VERSIONS.join(" and @")
            )));
        }
        if !self.http_hosts.is_empty() && self.world != World::Channel {
            return Err(ManifestError::Invalid(format!(
                "http_hosts: only a channel may reach hosts over HTTP, this is a {}; remove http_hosts",
                self.world
            )));
        }
        if self.reads.is_some() && self.world == World::Channel {
            return Err(ManifestError::Invalid(
                "reads: a channel is handed messages, not contacts; remove reads".into(),
            ));
        }
        if let Some(bad) = self.http_hosts.iter().find(|h| !is_destination(h)) {
            return Err(ManifestError::Invalid(format!(
                "http_hosts entry `{bad}` must be a host, host:port or *.domain"
            )));
        }
        Ok(())
    }

    /// Reads the manifest of a component: its embedded section, else the
    /// `<file>.manifest.json` beside `path`.
    pub fn for_file(path: &Path, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if let Some(json) = read_section(bytes, SECTION_NAME)? {
            return Manifest::from_json(json);
        }
        let beside = sidecar_path(path);
        match std::fs::read(&beside) {
            Ok(json) => Manifest::from_json(&json),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ManifestError::MissingSidecar {
                    sidecar: beside
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a binding's configuration keys against the ones this plugin
    /// declares: a key it does not read (a typo) and a required key left out
    /// are refused, each naming what the plugin knows.
    pub fn check_config<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let known: Vec<&str> = self.config.iter().map(|k| k.key.as_str()).collect();
        let given: Vec<&str> = keys.into_iter().collect();
        let unknown: Vec<&str> = given
            .iter()
            .copied()
            .filter(|key| !known.contains(key))
            .collect();
        let missing: Vec<&str> = self
            .config
            .iter()
            .filter(|k| k.required && !given.contains(&k.key.as_str()))
            .map(|k| k.key.as_str())
            .collect();
        let mut problems = Vec::new();
        if !unknown.is_empty() {
            let known = if known.is_empty() {
                "it reads no configuration".to_owned()
            } else {
                format!("known keys: {}", known.join(", "))
            };
            problems.push(format!(
                "unknown configuration key{} {} for plugin `{}`; {known}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.name
            ));
        }
        if !missing.is_empty() {
            problems.push(format!(
                "plugin `{}` needs configuration: {}",
                self.name,
                missing.join(", ")
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn from_json(json: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            serde_json::from_slice(json).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }
}

/// `plugin.wasm` → `plugin.wasm.manifest.json`.
pub fn sidecar_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    path.with_file_name(name)
}

const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Returns `bytes` with `manifest` as a top-level custom section, replacing
/// an earlier manifest section.
pub fn embed(bytes: &[u8], manifest: &Manifest) -> Result<Vec<u8>, ManifestError> {
    let mut out = without_section(bytes, SECTION_NAME)?;
    let json = serde_json::to_vec(manifest).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    append_section(&mut out, SECTION_NAME, &json);
    Ok(out)
}

/// `bytes` without any top-level custom section called `name`.
pub fn without_section(bytes: &[u8], name: &str) -> Result<Vec<u8>, ManifestError> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&COMPONENT_HEADER);
    for section in top_level_sections(bytes)? {
        if section.custom_name != Some(name) {
            out.extend_from_slice(section.raw);
        }
    }
    Ok(out)
}

/// Appends a top-level custom section `name` with `payload` to `bytes`.
pub fn append_section(bytes: &mut Vec<u8>, name: &str, payload: &[u8]) {
    use wasm_encoder::ComponentSection;
    let section = wasm_encoder::CustomSection {
        name: name.into(),
        data: payload.into(),
    };
    section.append_to_component(bytes);
}

/// The payload of the top-level custom section `name`, if present.
pub fn read_section<'a>(bytes: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ManifestError> {
    Ok(top_level_sections(bytes)?
        .into_iter()
        .find(|s| s.custom_name == Some(name))
        .map(|s| s.custom_payload))
}

struct Section<'a> {
    /// The whole section as it is in the file (id, size and content), so
    /// a component without one section is the same bytes otherwise: a
    /// signature covers them.
    raw: &'a [u8],
    custom_name: Option<&'a str>,
    custom_payload: &'a [u8],
}

fn malformed(e: wasmparser::BinaryReaderError) -> ManifestError {
    ManifestError::NotAComponent(format!("malformed at byte {}: {}", e.offset(), e.message()))
}

/// Splits a component binary into its top-level sections. Nested modules
/// and components are skipped whole, so their custom sections are not seen.
fn top_level_sections(bytes: &[u8]) -> Result<Vec<Section<'_>>, ManifestError> {
    use wasmparser::{Chunk, Payload};
    if bytes.len() < 8 || bytes[..4] != COMPONENT_HEADER[..4] {
        return Err(ManifestError::NotAComponent(
            "the file does not start with the WebAssembly magic bytes".into(),
        ));
    }
    if bytes[4..8] != COMPONENT_HEADER[4..8] {
        return Err(ManifestError::NotAComponent(
            "this is a core WebAssembly module, not a component; build for wasm32-wasip2".into(),
        ));
    }
    let mut parser = wasmparser::Parser::new(0);
    let mut sections = Vec::new();
    // Sections follow each other: one starts where the one before ended.
    let (mut pos, mut start) = (0, COMPONENT_HEADER.len());
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let (payload, consumed) = match parser.parse(rest, true).map_err(malformed)? {
            Chunk::Parsed { payload, consumed } => (payload, consumed),
            // Not returned when the whole input is given (`eof`).
            Chunk::NeedMoreData(_) => {
                return Err(ManifestError::NotAComponent("the file is cut short".into()));
            }
        };
        pos += consumed;
        let end = match &payload {
            Payload::Version { .. } => continue,
            Payload::End(_) => break,
            // The parser leaves a nested module or component to the caller.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                pos = unchecked_range.end;
                unchecked_range.end
            }
            other => match other.as_section() {
                Some((_, range)) => range.end,
                None => {
                    return Err(ManifestError::NotAComponent(format!(
                        "unexpected content at byte {start}"
                    )));
                }
            },
        };
        let (custom_name, custom_payload) = match &payload {
            Payload::CustomSection(custom) => (Some(custom.name()), custom.data()),
            _ => (None, &[][..]),
        };
        let raw = bytes.get(start..end).ok_or_else(|| {
            ManifestError::NotAComponent(format!("section at byte {start} runs past the end"))
        })?;
        sections.push(Section {
            raw,
            custom_name,
            custom_payload,
        });
        start = end;
    }
    Ok(sections)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "inactive-days".into(),
            version: "1.0.0".into(),
            world: World::SegmentRule,
            description: "no activity for N days".into(),
            author: "nachfass".into(),
            publisher: String::new(),
            api: API_VERSION.into(),
            config: vec![],
            capabilities: vec![],
            http_hosts: vec![],
            limits: LimitOverrides::default(),
            reads: None,
        }
    }

    #[test]
    fn embed_then_read_round_trips_and_replaces() {
        let empty = COMPONENT_HEADER.to_vec();
        let once = embed(&empty, &manifest()).unwrap();
        let mut changed = manifest();
        changed.version = "1.1.0".into();
        let twice = embed(&once, &changed).unwrap();
        let json = read_section(&twice, SECTION_NAME).unwrap().unwrap();
        assert_eq!(Manifest::from_json(json).unwrap(), changed);
        assert_eq!(top_level_sections(&twice).unwrap().len(), 1);
    }

    #[test]
    fn rejects_core_modules_and_garbage() {
        let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        assert!(
            matches!(read_section(&core, SECTION_NAME), Err(ManifestError::NotAComponent(m)) if m.contains("core"))
        );
        assert!(read_section(b"hello world", SECTION_NAME).is_err());
        let mut truncated = COMPONENT_HEADER.to_vec();
        truncated.extend_from_slice(&[0, 0x7f, 1, 2]);
        assert!(read_section(&truncated, SECTION_NAME).is_err());
    }

    #[test]
    fn binding_configuration_is_checked_against_the_declared_keys() {
        let mut m = manifest();
        m.config = vec![
            ConfigKey {
                key: "trial_points".into(),
                description: String::new(),
                required: false,
            },
            ConfigKey {
                key: "days".into(),
                description: String::new(),
                required: true,
            },
        ];
        assert!(m.check_config(["days", "trial_points"]).is_ok());
        let typo = m.check_config(["days", "trial_point"]).unwrap_err();
        assert_eq!(
            typo,
            "unknown configuration key `trial_point` for plugin `inactive-days`; known keys: trial_points, days"
        );
        let missing = m.check_config([]).unwrap_err();
        assert!(missing.contains("needs configuration: days"), "{missing}");
    }

    #[test]
    fn reads_names_the_parts_a_plugin_is_handed() {
        assert_eq!(manifest().contact_parts(), ContactParts::ALL);
        let json =
            br#"{"name":"x","version":"1.0.0","world":"scorer","reads":["activity","attributes"]}"#;
        let parts = Manifest::from_json(json).unwrap().contact_parts();
        assert_eq!(
            parts,
            ContactParts {
                contact_points: false,
                attributes: true,
                segments: false,
                activity: true,
            }
        );
        let nothing = br#"{"name":"x","version":"1.0.0","world":"scorer","reads":[]}"#;
        assert!(
            !Manifest::from_json(nothing)
                .unwrap()
                .contact_parts()
                .attributes
        );
        let typo = br#"{"name":"x","version":"1.0.0","world":"scorer","reads":["emails"]}"#;
        let why = Manifest::from_json(typo).unwrap_err().to_string();
        assert!(why.contains("contact-points"), "{why}");
        let mut channel = manifest();
        channel.world = World::Channel;
        assert!(channel.contact_parts().named().is_empty());
        let channel = br#"{"name":"x","version":"1.0.0","world":"channel","reads":["activity"]}"#;
        let why = Manifest::from_json(channel).unwrap_err().to_string();
        assert!(why.contains("remove reads"), "{why}");
    }

    #[test]
    fn validates_names_and_api() {
        let mut bad = manifest();
        bad.name = "Bad Name".into();
        assert!(bad.validate().is_err());
        let mut first = manifest();
        first.api = API_VERSION_0_1.into();
        assert!(first.validate().is_ok(), "0.1.0 components still load");
        let mut newer = manifest();
        newer.api = "0.3.0".into();
        let why = newer.validate().unwrap_err().to_string();
        assert!(
            why.contains("rebuild") && why.contains("@0.1.0 and @0.2.0"),
            "{why}"
        );
        assert!(
            Manifest::from_json(br#"{"name":"x","version":"1","world":"scorer","oops":1}"#)
                .is_err()
        );
    }
}
