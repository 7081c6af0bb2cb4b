//! Packaging a plugin project into one file: the component with its manifest
//! embedded. Used by `nachfass plugin build` and by the test suite. The
//! manifest comes from the project's own metadata file: `Cargo.toml`
//! (`[package.metadata.nachfass]`), `pyproject.toml` (`[tool.nachfass]`) or
//! `package.json` (`"nachfass"`).

use std::path::{Path, PathBuf};

use crate::runtime::LimitOverrides;
use crate::runtime::manifest::{self, ConfigKey, ContactPart, Manifest, ManifestError};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {detail}")]
    CargoToml { path: PathBuf, detail: String },
    /// `pyproject.toml` or `package.json` lacks or garbles a field.
    #[error("{path}: {detail}")]
    Project { path: PathBuf, detail: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads a plugin crate's manifest from its `Cargo.toml`: name, version,
/// description and authors from `[package]` (workspace-inherited values
/// included), world, configuration keys and capabilities from
/// `[package.metadata.nachfass]` (and the publisher who signs it, if any).
pub fn manifest_from_crate(crate_dir: &Path) -> Result<Manifest, PackError> {
    let path = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)?;
    manifest_from_toml(&path, &text, workspace_package(crate_dir))
}

/// The manifest from a crate's `Cargo.toml` text; `workspace` is the
/// `[workspace.package]` its `.workspace = true` fields inherit from, and
/// `path` only names the file in errors.
pub fn manifest_from_toml(
    path: &Path,
    text: &str,
    workspace: Option<toml::Table>,
) -> Result<Manifest, PackError> {
    let bad = |detail: String| PackError::CargoToml {
        path: path.to_owned(),
        detail,
    };
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let package = doc
        .get("package")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| bad("no [package] table".into()))?;
    let field = |key: &str| -> Option<toml::Value> {
        match package.get(key) {
            Some(toml::Value::Table(t))
                if t.get("workspace").and_then(toml::Value::as_bool) == Some(true) =>
            {
                workspace.as_ref().and_then(|w| w.get(key)).cloned()
            }
            other => other.cloned(),
        }
    };
    let text = |key: &str| field(key).and_then(|v| v.as_str().map(str::to_owned));
    let meta = package
        .get("metadata")
        .and_then(|m| m.get("nachfass"))
        .and_then(toml::Value::as_table)
        .ok_or_else(|| bad("no [package.metadata.nachfass] table; add one with `world = \"scorer\"` (or segment-rule, channel)".into()))?;
    let world = meta
        .get("world")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| bad("[package.metadata.nachfass] needs `world`".into()))?
        .parse()?;
    let config: Vec<ConfigKey> = match meta.get("config") {
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("config: {e}")))?,
        None => Vec::new(),
    };
    let capabilities: Vec<String> = match meta.get("capabilities") {
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("capabilities: {e}")))?,
        None => Vec::new(),
    };
    let http_hosts: Vec<String> = match meta.get("http_hosts") {
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("http_hosts: {e}")))?,
        None => Vec::new(),
    };
    let limits: LimitOverrides = match meta.get("limits") {
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("limits: {e}")))?,
        None => LimitOverrides::default(),
    };
    let reads: Option<Vec<ContactPart>> = match meta.get("reads") {
        Some(value) => Some(
            value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("reads: {e}")))?,
        ),
        None => None,
    };
    let author = field("authors")
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let publisher = match meta.get("publisher") {
        Some(value) => value
            .as_str()
            .ok_or_else(|| bad("publisher must be a string".into()))?
            .to_owned(),
        None => String::new(),
    };
    let manifest = Manifest {
        name: text("name").ok_or_else(|| bad("[package] has no name".into()))?,
        version: text("version").ok_or_else(|| bad("[package] has no version".into()))?,
        world,
        description: text("description").unwrap_or_default(),
        author,
        publisher,
        // A crate built against an older WIT than the SDK's (without the
        // SDK, say) names it; `validate` refuses one the host does not speak.
        api: match meta.get("api") {
            Some(value) => value
                .as_str()
                .ok_or_else(|| bad("api must be a string such as \"0.1.0\"".into()))?
                .to_owned(),
            None => manifest::API_VERSION.to_owned(),
        },
        config,
        capabilities,
        http_hosts,
        limits,
        reads,
    };
    manifest.validate()?;
    Ok(manifest)
}

/// Reads a Python plugin's manifest from its `pyproject.toml`: name,
/// version, description and authors from `[project]`, world, configuration
/// keys and capabilities from `[tool.nachfass]`.
pub fn manifest_from_pyproject(dir: &Path) -> Result<Manifest, PackError> {
    let path = dir.join("pyproject.toml");
    let bad = |detail: String| PackError::Project {
        path: path.clone(),
        detail,
    };
    let doc: toml::Table = std::fs::read_to_string(&path)?
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let project = doc
        .get("project")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| bad("no [project] table with name and version".into()))?;
    let meta = doc
        .get("tool")
        .and_then(|t| t.get("nachfass"))
        .ok_or_else(|| bad("no [tool.nachfass] table; add one with `world = \"scorer\"` (or segment-rule, channel)".into()))?;
    let json = |v: &toml::Value| serde_json::to_value(v).unwrap_or_default();
    let project =
        serde_json::Value::Object(project.iter().map(|(k, v)| (k.clone(), json(v))).collect());
    manifest_from_json_parts(&project, &json(meta)).map_err(bad)
}

/// Reads a JavaScript plugin's manifest from its `package.json`: name,
/// version, description and author from the top level, world,
/// configuration keys and capabilities from `"nachfass"`.
pub fn manifest_from_package_json(dir: &Path) -> Result<Manifest, PackError> {
    let path = dir.join("package.json");
    let bad = |detail: String| PackError::Project {
        path: path.clone(),
        detail,
    };
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path)?).map_err(|e| bad(e.to_string()))?;
    let meta = doc.get("nachfass").ok_or_else(|| {
        bad(
            "no \"nachfass\" object; add one with \"world\": \"channel\" (or segment-rule, scorer)"
                .into(),
        )
    })?;
    manifest_from_json_parts(&doc, meta).map_err(bad)
}

/// The manifest from a project description (`name`, `version`,
/// `description`, `author` or `authors`) and its nachfass table (`world`,
/// `config`, `capabilities`), as pyproject.toml and package.json have them.
fn manifest_from_json_parts(
    project: &serde_json::Value,
    meta: &serde_json::Value,
) -> Result<Manifest, String> {
    let text =
        |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_owned);
    let world = text(meta, "world")
        .ok_or("the nachfass table needs `world` (segment-rule, scorer or channel)")?
        .parse()
        .map_err(|e: ManifestError| e.to_string())?;
    let list = |key: &str| -> Result<serde_json::Value, String> {
        Ok(meta
            .get(key)
            .cloned()
            .unwrap_or(serde_json::Value::Array(Vec::new())))
    };
    let config: Vec<ConfigKey> =
        serde_json::from_value(list("config")?).map_err(|e| format!("config: {e}"))?;
    let capabilities: Vec<String> =
        serde_json::from_value(list("capabilities")?).map_err(|e| format!("capabilities: {e}"))?;
    let http_hosts: Vec<String> =
        serde_json::from_value(list("http_hosts")?).map_err(|e| format!("http_hosts: {e}"))?;
    let limits: LimitOverrides = match meta.get("limits") {
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| format!("limits: {e}"))?,
        None => LimitOverrides::default(),
    };
    let reads: Option<Vec<ContactPart>> = match meta.get("reads") {
        Some(value) => {
            Some(serde_json::from_value(value.clone()).map_err(|e| format!("reads: {e}"))?)
        }
        None => None,
    };
    // `author = "A"` (package.json), `authors = [{name = "A"}]` (PEP 621),
    // or `{"name": "A"}` objects in either.
    let person = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        other => text(other, "name"),
    };
    let author = match (project.get("author"), project.get("authors")) {
        (Some(one), _) => person(one).unwrap_or_default(),
        (None, Some(serde_json::Value::Array(many))) => many
            .iter()
            .filter_map(person)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    let manifest = Manifest {
        name: text(project, "name").ok_or("no project name")?,
        version: text(project, "version").ok_or("no project version")?,
        world,
        description: text(project, "description").unwrap_or_default(),
        author,
        publisher: text(meta, "publisher").unwrap_or_default(),
        // componentize-py and componentize-js build against the first
        // version (`plugin build` hands them that package).
        api: manifest::API_VERSION_0_1.to_owned(),
        config,
        capabilities,
        http_hosts,
        limits,
        reads,
    };
    manifest.validate().map_err(|e| e.to_string())?;
    Ok(manifest)
}

/// `[workspace.package]` of the nearest enclosing workspace, if any.
fn workspace_package(crate_dir: &Path) -> Option<toml::Table> {
    crate_dir.ancestors().skip(1).find_map(|dir| {
        workspace_package_of(&std::fs::read_to_string(dir.join("Cargo.toml")).ok()?)
    })
}

/// `[workspace.package]` of a workspace's `Cargo.toml` text.
pub fn workspace_package_of(text: &str) -> Option<toml::Table> {
    let doc: toml::Table = text.parse().ok()?;
    doc.get("workspace")?.get("package")?.as_table().cloned()
}

/// Writes `component` with `manifest` embedded to `out` (which may be
/// `component` itself).
pub fn pack(component: &Path, manifest: &Manifest, out: &Path) -> Result<(), PackError> {
    let bytes = std::fs::read(component)?;
    std::fs::write(out, manifest::embed(&bytes, manifest)?)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::World;

    #[test]
    fn reads_pyproject_and_package_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            r#"[project]
name = "py-scorer"
version = "1.2.0"
description = "d"
authors = [{ name = "Ada" }, { name = "Grace" }]

[tool.nachfass]
world = "scorer"
config = [{ key = "points", required = true }]
"#,
        )
        .unwrap();
        let m = manifest_from_pyproject(dir.path()).unwrap();
        assert_eq!(m.id(), "py-scorer@1.2.0");
        assert_eq!(m.world, World::Scorer);
        assert_eq!(m.author, "Ada, Grace");
        assert!(m.config[0].required);

        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "js-hook", "version": "0.3.0", "author": "Ada",
                "nachfass": {"world": "channel", "capabilities": ["http"]}}"#,
        )
        .unwrap();
        let m = manifest_from_package_json(dir.path()).unwrap();
        assert_eq!((m.world, m.author.as_str()), (World::Channel, "Ada"));
        assert_eq!(m.capabilities, ["http"]);
    }

    #[test]
    fn names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\nversion = \"1.0.0\"\n",
        )
        .unwrap();
        let e = manifest_from_pyproject(dir.path()).unwrap_err().to_string();
        assert!(e.contains("[tool.nachfass]"), "{e}");
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "x", "version": "1.0.0", "nachfass": {"world": "mailer"}}"#,
        )
        .unwrap();
        let e = manifest_from_package_json(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown world `mailer`"), "{e}");
    }
}
