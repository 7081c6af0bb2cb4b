//! The plugins directory: loaded at start, then watched. Dropping a newer
//! version in makes it live without a restart; a broken file is reported
//! and whatever is live stays live. Where a file goes is the [`Import`]'s
//! business: a server imports into the database, the cluster's truth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::registry::{Activation, Registry};

/// Takes one plugin file in; answers what became of it.
pub trait Import: Send + Sync + 'static {
    fn import(&self, path: &Path) -> impl Future<Output = Result<String, String>> + Send;
}

/// A registry alone (no database): newer versions go live in this process.
impl Import for Registry {
    async fn import(&self, path: &Path) -> Result<String, String> {
        let installed = self
            .install_file(path, Activation::IfNewer)
            .await
            .map_err(|e| e.to_string())?;
        let state = if installed.live {
            "live"
        } else {
            "installed, an equal or newer version is live"
        };
        Ok(format!("{} {state}", installed.plugin.id()))
    }
}

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
    pub async fn scan(&mut self, importer: &impl Import) -> Vec<ScanReport> {
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
            let outcome = importer.import(&path).await;
            match &outcome {
                Ok(what) => {
                    tracing::info!(file = %path.display(), outcome = %what, "plugin file loaded")
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "plugin file rejected; the live version stays")
                }
            }
            reports.push(ScanReport { path, outcome });
        }
        reports
    }

    /// Scans now, then every `interval` until the importer is dropped.
    pub fn spawn<I: Import>(
        mut self,
        importer: Arc<I>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&importer);
        drop(importer);
        tokio::spawn(async move {
            while let Some(importer) = weak.upgrade() {
                self.scan(&*importer).await;
                drop(importer);
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
