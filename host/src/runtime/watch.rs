//! The plugins directory: loaded at start, then watched. Dropping a newer
//! version in makes it live without a restart; a broken file is reported
//! and whatever is live stays live.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::registry::{Activation, Registry};

/// What the directory scan saw of one file, to notice changes cheaply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

/// The outcome of loading one file, for logs and tests.
#[derive(Debug)]
pub struct ScanReport {
    pub path: PathBuf,
    pub outcome: Result<String, String>,
}

/// Watches a plugins directory by polling: portable, and a plugin drop is
/// an operator action where a second of delay does not matter.
pub struct PluginDir {
    dir: PathBuf,
    seen: HashMap<PathBuf, Fingerprint>,
}

impl PluginDir {
    pub fn new(dir: impl Into<PathBuf>) -> PluginDir {
        PluginDir {
            dir: dir.into(),
            seen: HashMap::new(),
        }
    }

    /// Loads every new or changed `.wasm` file; newer versions go live.
    pub async fn scan(&mut self, registry: &Registry) -> Vec<ScanReport> {
        let mut reports = Vec::new();
        let mut files = match list_wasm(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the plugins directory");
                return reports;
            }
        };
        files.sort();
        for path in files {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let print = Fingerprint {
                len: meta.len(),
                modified: meta.modified().ok(),
            };
            if self.seen.get(&path) == Some(&print) {
                continue;
            }
            // A file still being copied in changes between two looks; take
            // it on the next scan once it has settled.
            if !settled(&path, print).await {
                continue;
            }
            self.seen.insert(path.clone(), print);
            let outcome = match registry.install_file(&path, Activation::IfNewer).await {
                Ok(installed) => {
                    let state = if installed.live {
                        "live"
                    } else {
                        "installed, an equal or newer version is live"
                    };
                    tracing::info!(file = %path.display(), plugin = %installed.plugin.id(), state, "plugin file loaded");
                    Ok(format!("{} {state}", installed.plugin.id()))
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "plugin file rejected; the live version stays");
                    Err(e.to_string())
                }
            };
            reports.push(ScanReport { path, outcome });
        }
        reports
    }

    /// Scans now, then every `interval` until the registry is dropped.
    pub fn spawn(
        mut self,
        registry: Arc<Registry>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&registry);
        drop(registry);
        tokio::spawn(async move {
            while let Some(registry) = weak.upgrade() {
                self.scan(&registry).await;
                drop(registry);
                tokio::time::sleep(interval).await;
            }
        })
    }
}

async fn settled(path: &Path, print: Fingerprint) -> bool {
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::metadata(path)
        .is_ok_and(|m| m.len() == print.len && m.modified().ok() == print.modified)
}

fn list_wasm(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect())
}
