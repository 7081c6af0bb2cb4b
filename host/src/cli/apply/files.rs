//! The files `apply` reads: `plugins/*.wasm`, `bindings/*.json` and
//! `journeys/*.json` under the directories given (or single files inside
//! such folders), each parsed as the server will parse it, before anything
//! is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cli::plugin::server::LocalPlugin;
use crate::cli::{CliError, fail};
use crate::journeys::JourneyDef;
use crate::store::BindingDef;

/// A binding file, parsed as the server will.
pub struct LocalBinding {
    pub file: PathBuf,
    pub def: BindingDef,
}

impl LocalBinding {
    pub fn read(file: &Path) -> Result<LocalBinding, CliError> {
        let text = std::fs::read(file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
        let def: BindingDef = serde_json::from_slice(&text)
            .map_err(|e| fail(format!("{}: not a binding: {e}", file.display())))?;
        Ok(LocalBinding {
            file: file.to_path_buf(),
            def,
        })
    }
}

/// A journey file: the definition, and the bytes sent as they are.
pub struct LocalJourney {
    pub file: PathBuf,
    pub def: JourneyDef,
    pub bytes: Vec<u8>,
}

impl LocalJourney {
    pub fn read(file: &Path) -> Result<LocalJourney, CliError> {
        let bytes = std::fs::read(file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
        let def = JourneyDef::from_json(&bytes)
            .map_err(|e| fail(format!("{}: not a journey definition: {e}", file.display())))?;
        Ok(LocalJourney {
            file: file.to_path_buf(),
            def,
            bytes,
        })
    }
}

/// Everything the paths name, read and checked.
#[derive(Default)]
pub struct Desired {
    pub plugins: Vec<LocalPlugin>,
    pub bindings: Vec<LocalBinding>,
    pub journeys: Vec<LocalJourney>,
}

const FOLDERS: [&str; 3] = ["plugins", "bindings", "journeys"];

impl Desired {
    pub fn read(paths: &[PathBuf]) -> Result<Desired, CliError> {
        let mut desired = Desired::default();
        for path in paths {
            if path.is_dir() {
                let mut found = false;
                for folder in FOLDERS {
                    let dir = path.join(folder);
                    if dir.is_dir() {
                        found = true;
                        for file in files_in(&dir, folder)? {
                            desired.add(folder, &file)?;
                        }
                    }
                }
                if !found {
                    return Err(fail(format!(
                        "{}: no plugins/, bindings/ or journeys/ folder in it; apply takes a directory holding them, or files inside them",
                        path.display()
                    )));
                }
            } else if path.is_file() {
                let folder = path
                    .parent()
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str())
                    .filter(|n| FOLDERS.contains(n))
                    .ok_or_else(|| {
                        fail(format!(
                            "{}: apply tells plugins, bindings and journeys apart by their folder; put the file under plugins/, bindings/ or journeys/",
                            path.display()
                        ))
                    })?;
                desired.add(folder, path)?;
            } else {
                return Err(fail(format!(
                    "{}: no such file or directory",
                    path.display()
                )));
            }
        }
        desired.check_unique()?;
        // Older versions first, so the newest of a plugin's files ends live.
        desired.plugins.sort_by(|a, b| {
            let version = |p: &LocalPlugin| semver::Version::parse(&p.manifest.version).ok();
            (&a.manifest.name, version(a)).cmp(&(&b.manifest.name, version(b)))
        });
        Ok(desired)
    }

    fn add(&mut self, folder: &str, file: &Path) -> Result<(), CliError> {
        match folder {
            "plugins" => self.plugins.push(LocalPlugin::read(file, None)?),
            "bindings" => self.bindings.push(LocalBinding::read(file)?),
            _ => self.journeys.push(LocalJourney::read(file)?),
        }
        Ok(())
    }

    /// Two files for one binding, journey or plugin version would make the
    /// outcome depend on the order they are read in.
    fn check_unique(&self) -> Result<(), CliError> {
        let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
        let items = self
            .plugins
            .iter()
            .map(|p| (format!("plugin {}", p.manifest.id()), p.file.as_path()))
            .chain(
                self.bindings
                    .iter()
                    .map(|b| (format!("binding {}", b.def.name), b.file.as_path())),
            )
            .chain(
                self.journeys
                    .iter()
                    .map(|j| (format!("journey {}", j.def.name), j.file.as_path())),
            );
        for (what, file) in items {
            if let Some(first) = seen.insert(what.clone(), file) {
                return Err(fail(format!(
                    "{what} is defined twice, in {} and {}; keep one",
                    first.display(),
                    file.display()
                )));
            }
        }
        Ok(())
    }
}

/// The files of one folder, sorted: `*.wasm` under plugins/ (a
/// `*.manifest.json` beside one is its sidecar), `*.json` elsewhere.
fn files_in(dir: &Path, folder: &str) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let wanted = if folder == "plugins" { "wasm" } else { "json" };
    let mut files = BTreeSet::new();
    for entry in entries {
        let path = entry
            .map_err(|e| fail(format!("{}: {e}", dir.display())))?
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == wanted) {
            files.insert(path);
        }
    }
    Ok(files.into_iter().collect())
}
