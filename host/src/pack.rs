//! Packaging a plugin crate into one file: the component with its manifest
//! embedded. Used by `nachfass plugin build` and by the test suite.

use std::path::{Path, PathBuf};

use crate::runtime::manifest::{self, ConfigKey, Manifest, ManifestError};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {detail}")]
    CargoToml { path: PathBuf, detail: String },
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
    let bad = |detail: String| PackError::CargoToml {
        path: path.clone(),
        detail,
    };
    let doc: toml::Table = std::fs::read_to_string(&path)?
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let package = doc
        .get("package")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| bad("no [package] table".into()))?;
    let workspace = workspace_package(crate_dir);
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
        api: manifest::API_VERSION.to_owned(),
        config,
        capabilities,
    };
    manifest.validate()?;
    Ok(manifest)
}

/// `[workspace.package]` of the nearest enclosing workspace, if any.
fn workspace_package(crate_dir: &Path) -> Option<toml::Table> {
    crate_dir.ancestors().skip(1).find_map(|dir| {
        let doc: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .ok()?
            .parse()
            .ok()?;
        doc.get("workspace")?.get("package")?.as_table().cloned()
    })
}

/// Writes `component` with `manifest` embedded to `out`.
pub fn pack(component: &Path, manifest: &Manifest, out: &Path) -> Result<(), PackError> {
    let bytes = std::fs::read(component)?;
    std::fs::write(out, manifest::embed(&bytes, manifest)?)?;
    Ok(())
}
