//! What a plugin version may do, and what an upgrade asks for beyond the
//! live version: the interfaces its component imports, the configuration
//! keys it reads, the hosts it may reach over HTTP, the limits it asks
//! for and the parts of a contact it is handed (`reads`). Only additions
//! count; an admin approves them before such a version goes live (see
//! `crate::plugins`).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::limits::{LimitOverrides, Limits};
use super::manifest::ContactParts;
use super::outgoing_http::covers;
use super::plugin::Plugin;

/// The import that lets a component make outgoing HTTP requests.
const OUTGOING_HTTP: &str = "wasi:http/outgoing-handler";

/// `*` in a diff's `http_hosts`: the version declares no hosts, so it may
/// reach whatever its bindings allow.
pub const ANY_HOST: &str = "*";

/// Where a version may send HTTP requests.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HttpReach {
    /// It does not import outgoing HTTP.
    Nowhere,
    /// It imports outgoing HTTP and declares no hosts: its bindings decide.
    Anywhere,
    /// Only these (`http_hosts` of its manifest).
    Hosts(Vec<String>),
}

/// Everything a version may do beyond pure computation.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    imports: BTreeSet<String>,
    config: BTreeSet<String>,
    http: HttpReach,
    /// The world's defaults with what the manifest asks for.
    limits: Limits,
    /// The parts of a contact it is handed (`contact-points`, ...).
    reads: BTreeSet<String>,
}

/// What a version asks for beyond another: the body of an approval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityDiff {
    /// Imported interfaces, as `package/interface@version` with the version
    /// cut to what semver treats as compatible (`wasi:io/streams@0.2`).
    #[serde(default)]
    pub imports: BTreeSet<String>,
    /// Configuration keys.
    #[serde(default)]
    pub config: BTreeSet<String>,
    /// Outgoing HTTP destinations; `*` for any host its bindings allow.
    #[serde(default)]
    pub http_hosts: BTreeSet<String>,
    /// Limits raised above the live version's, with the new values.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Parts of a contact it would be handed and the live version is not
    /// (`contact-points`, `attributes`, `segments`, `activity`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub reads: BTreeSet<String>,
}

impl Capabilities {
    pub fn of(plugin: &Plugin) -> Capabilities {
        let manifest = plugin.manifest();
        let imports: BTreeSet<String> = plugin.imports().iter().map(|i| compatible(i)).collect();
        let http = if !imports.iter().any(|i| i.starts_with(OUTGOING_HTTP)) {
            HttpReach::Nowhere
        } else if manifest.http_hosts.is_empty() {
            HttpReach::Anywhere
        } else {
            HttpReach::Hosts(
                manifest
                    .http_hosts
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
            )
        };
        Capabilities {
            imports,
            config: manifest.config.iter().map(|k| k.key.clone()).collect(),
            http,
            limits: Limits::for_world(manifest.world).with_overrides(&manifest.limits),
            reads: parts_read(plugin.contact_parts()),
        }
    }

    /// What `self` may do that `live` may not.
    pub fn added_since(&self, live: &Capabilities) -> CapabilityDiff {
        let http_hosts = match (&self.http, &live.http) {
            (HttpReach::Nowhere, _) | (_, HttpReach::Anywhere) => BTreeSet::new(),
            (HttpReach::Anywhere, _) => BTreeSet::from([ANY_HOST.to_owned()]),
            (HttpReach::Hosts(new), HttpReach::Nowhere) => new.iter().cloned().collect(),
            (HttpReach::Hosts(new), HttpReach::Hosts(old)) => new
                .iter()
                .filter(|host| !old.iter().any(|o| covers(o, host)))
                .cloned()
                .collect(),
        };
        let (new, old) = (&self.limits, &live.limits);
        let raised = |new: u64, old: u64| (new > old).then_some(new);
        let millis = |l: &Limits| u64::try_from(l.wall_time.as_millis()).unwrap_or(u64::MAX);
        CapabilityDiff {
            imports: self.imports.difference(&live.imports).cloned().collect(),
            config: self.config.difference(&live.config).cloned().collect(),
            http_hosts,
            limits: LimitOverrides {
                fuel: raised(new.fuel, old.fuel),
                wall_time_ms: raised(millis(new), millis(old)),
                memory_bytes: (new.memory_bytes > old.memory_bytes).then_some(new.memory_bytes),
                max_output_bytes: (new.max_output_bytes > old.max_output_bytes)
                    .then_some(new.max_output_bytes),
            },
            reads: self.reads.difference(&live.reads).cloned().collect(),
        }
    }
}

/// The parts of a contact a plugin is handed, by name.
fn parts_read(parts: ContactParts) -> BTreeSet<String> {
    parts
        .named()
        .into_iter()
        .map(|part| part.as_str().to_owned())
        .collect()
}

impl CapabilityDiff {
    pub fn is_empty(&self) -> bool {
        *self == CapabilityDiff::default()
    }

    /// What of `self` `granted` does not cover.
    pub fn beyond(&self, granted: &CapabilityDiff) -> CapabilityDiff {
        let over = |asked: Option<u64>, granted: Option<u64>| {
            asked.filter(|a| granted.is_none_or(|g| a > &g))
        };
        let over_usize = |asked: Option<usize>, granted: Option<usize>| {
            asked.filter(|a| granted.is_none_or(|g| a > &g))
        };
        CapabilityDiff {
            imports: self.imports.difference(&granted.imports).cloned().collect(),
            config: self.config.difference(&granted.config).cloned().collect(),
            http_hosts: self
                .http_hosts
                .iter()
                .filter(|h| {
                    !granted
                        .http_hosts
                        .iter()
                        .any(|g| g == *h || (h.as_str() != ANY_HOST && covers(g, h)))
                })
                .cloned()
                .collect(),
            limits: LimitOverrides {
                fuel: over(self.limits.fuel, granted.limits.fuel),
                wall_time_ms: over(self.limits.wall_time_ms, granted.limits.wall_time_ms),
                memory_bytes: over_usize(self.limits.memory_bytes, granted.limits.memory_bytes),
                max_output_bytes: over_usize(
                    self.limits.max_output_bytes,
                    granted.limits.max_output_bytes,
                ),
            },
            reads: self.reads.difference(&granted.reads).cloned().collect(),
        }
    }

    /// Everything either grants: an approval adds to earlier ones.
    pub fn merged(&self, other: &CapabilityDiff) -> CapabilityDiff {
        CapabilityDiff {
            imports: self.imports.union(&other.imports).cloned().collect(),
            config: self.config.union(&other.config).cloned().collect(),
            http_hosts: self.http_hosts.union(&other.http_hosts).cloned().collect(),
            limits: LimitOverrides {
                fuel: self.limits.fuel.max(other.limits.fuel),
                wall_time_ms: self.limits.wall_time_ms.max(other.limits.wall_time_ms),
                memory_bytes: self.limits.memory_bytes.max(other.limits.memory_bytes),
                max_output_bytes: self
                    .limits
                    .max_output_bytes
                    .max(other.limits.max_output_bytes),
            },
            reads: self.reads.union(&other.reads).cloned().collect(),
        }
    }
}

/// `http_hosts a.example, b.example; config api_key; limits fuel 20000000`.
impl fmt::Display for CapabilityDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
        if !self.http_hosts.is_empty() {
            parts.push(format!("http_hosts {}", list(&self.http_hosts)));
        }
        if !self.config.is_empty() {
            parts.push(format!("config {}", list(&self.config)));
        }
        if !self.imports.is_empty() {
            parts.push(format!("imports {}", list(&self.imports)));
        }
        if !self.reads.is_empty() {
            parts.push(format!("reads {}", list(&self.reads)));
        }
        let limits = [
            ("fuel", self.limits.fuel),
            ("wall_time_ms", self.limits.wall_time_ms),
            ("memory_bytes", self.limits.memory_bytes.map(|v| v as u64)),
            (
                "max_output_bytes",
                self.limits.max_output_bytes.map(|v| v as u64),
            ),
        ];
        let raised: Vec<String> = limits
            .iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name} {v}")))
            .collect();
        if !raised.is_empty() {
            parts.push(format!("limits {}", raised.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// An import name with its version cut to the semver-compatible part, so
/// a rebuild against a patch release of an interface is no new import but
/// another major (or 0.x minor) version is: `wasi:io/streams@0.2.3` →
/// `wasi:io/streams@0.2`, `x:y/z@1.4.0` → `x:y/z@1`.
fn compatible(import: &str) -> String {
    let Some((name, version)) = import.rsplit_once('@') else {
        return import.to_owned();
    };
    match semver::Version::parse(version) {
        Ok(v) if v.major > 0 => format!("{name}@{}", v.major),
        Ok(v) if v.minor > 0 => format!("{name}@0.{}", v.minor),
        Ok(v) => format!("{name}@0.0.{}", v.patch),
        Err(_) => import.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::World;

    fn caps(imports: &[&str], config: &[&str], http: HttpReach) -> Capabilities {
        Capabilities {
            imports: imports.iter().map(|i| compatible(i)).collect(),
            config: config.iter().map(|c| (*c).to_owned()).collect(),
            http,
            limits: Limits::for_world(World::Channel),
            reads: BTreeSet::new(),
        }
    }

    #[test]
    fn reading_more_of_a_contact_counts() {
        let activity_only = ContactParts {
            activity: true,
            ..ContactParts::of(&[])
        };
        let mut live = caps(&[], &[], HttpReach::Nowhere);
        live.reads = parts_read(activity_only);
        let mut next = live.clone();
        next.reads = parts_read(ContactParts::ALL);
        let diff = next.added_since(&live);
        assert_eq!(
            diff.to_string(),
            "reads attributes, contact-points, segments"
        );
        assert!(
            live.added_since(&next).is_empty(),
            "reading less asks nothing"
        );
        assert!(diff.beyond(&diff).is_empty());
    }

    #[test]
    fn only_additions_count() {
        let hosts = |h: &[&str]| HttpReach::Hosts(h.iter().map(|s| (*s).to_owned()).collect());
        let live = caps(
            &[
                "wasi:http/outgoing-handler@0.2.0",
                "nachfass:plugin/host@0.1.0",
            ],
            &["url", "secret"],
            hosts(&["*.sms.example", "a.example"]),
        );
        let next = caps(
            &[
                "wasi:http/outgoing-handler@0.2.6",
                "nachfass:plugin/host@0.1.0",
                "wasi:random/random@0.2.0",
            ],
            &["url", "region"],
            hosts(&["eu.sms.example", "b.example"]),
        );
        let diff = next.added_since(&live);
        assert_eq!(
            diff.to_string(),
            "http_hosts b.example; config region; imports wasi:random/random@0.2"
        );
        assert!(live.added_since(&live).is_empty());
        let undeclared = caps(
            &["wasi:http/outgoing-handler@0.2.0"],
            &[],
            HttpReach::Anywhere,
        );
        assert_eq!(
            undeclared.added_since(&live).http_hosts,
            BTreeSet::from(["*".to_owned()])
        );
        assert!(live.added_since(&undeclared).http_hosts.is_empty());
    }

    #[test]
    fn raised_limits_count_and_approvals_cover() {
        let live = caps(&[], &[], HttpReach::Nowhere);
        let mut next = live.clone();
        next.limits.fuel *= 2;
        next.limits.memory_bytes /= 2;
        let diff = next.added_since(&live);
        assert_eq!(diff.limits.fuel, Some(next.limits.fuel));
        assert_eq!(diff.limits.memory_bytes, None);
        assert!(diff.beyond(&diff).is_empty());
        let mut less = diff.clone();
        less.limits.fuel = Some(live.limits.fuel);
        assert_eq!(diff.beyond(&less), diff);
        assert!(diff.beyond(&less.merged(&diff)).is_empty());
    }

    #[test]
    fn import_versions_compare_by_compatibility() {
        assert_eq!(compatible("wasi:io/streams@0.2.3"), "wasi:io/streams@0.2");
        assert_eq!(compatible("x:y/z@1.4.0"), "x:y/z@1");
        assert_eq!(compatible("x:y/z@0.0.3"), "x:y/z@0.0.3");
        assert_eq!(compatible("plain"), "plain");
    }
}
