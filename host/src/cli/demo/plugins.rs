//! The example plugins built with the host (`host/build.rs`) and embedded
//! in the binary, so `nachfass demo` needs no source tree and no cargo.

use std::path::{Path, PathBuf};

use crate::pack;
use crate::runtime::manifest;

/// One embedded plugin: the component cargo built and its crate's
/// `Cargo.toml`, which holds the manifest.
pub struct EmbeddedPlugin {
    /// The crate's directory under `plugins/`, for error messages.
    pub crate_dir: &'static str,
    pub component: &'static [u8],
    pub cargo_toml: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Writes every embedded plugin, its manifest embedded as `nachfass plugin
/// build` does, into `dir` (where `serve` finds them). A file that is
/// already there with the same bytes is left alone.
pub fn write_into(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let workspace = pack::workspace_package_of(WORKSPACE_TOML);
    let mut written = Vec::new();
    for plugin in EMBEDDED {
        let label = Path::new("plugins")
            .join(plugin.crate_dir)
            .join("Cargo.toml");
        let manifest = pack::manifest_from_toml(&label, plugin.cargo_toml, workspace.clone())
            .map_err(|e| e.to_string())?;
        let bytes = manifest::embed(plugin.component, &manifest).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{}-{}.wasm", manifest.name, manifest.version));
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_plugin_has_a_valid_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_into(dir.path()).unwrap();
        assert_eq!(written.len(), EMBEDDED.len());
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&"demo-mailbox-0.1.0.wasm".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"engagement-0.1.0.wasm".to_owned()),
            "{names:?}"
        );
    }
}
