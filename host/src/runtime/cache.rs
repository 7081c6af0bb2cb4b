//! Compiled components cached on disk by content hash, so a restart loads
//! machine code instead of compiling again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Hex SHA-256 of a component's bytes: its identity in the cache.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Clone, Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<ArtifactCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(ArtifactCache { dir })
    }

    /// The artifact file for `hash` on this engine. The engine's
    /// compatibility hash is part of the name, so a different wasmtime or
    /// different settings never load an old artifact.
    fn path(&self, engine: &Engine, hash: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{hash}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the artifact for `hash`, or compiles `bytes` and stores it.
    /// Returns the component and whether it came from the cache.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.path(engine, hash);
        if path.exists() {
            match deserialize_own_artifact(engine, &path) {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping unreadable cached artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = write_atomically(&path, &component.serialize()?) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
        }
        Ok((component, false))
    }
}

/// Only ever called on files this cache wrote itself, named by the content
/// hash of the source and the engine's compatibility hash. Read into memory
/// rather than mapped: a mapped file that someone truncates while a plugin
/// runs would kill the process with SIGBUS.
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    // SAFETY: the bytes come from nachfass's own cache directory and were
    // written by `Component::serialize` of an engine with the same
    // compatibility hash, which is what wasmtime documents as sound.
    unsafe { Component::deserialize(engine, &bytes) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
