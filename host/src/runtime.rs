//! The plugin runtime: one wasmtime engine, sandboxed calls with limits, a
//! registry of plugin versions with hot swap.

pub mod bindings;
pub mod breaker;
pub mod cache;
pub mod capabilities;
mod convert;
pub mod error;
pub mod limits;
mod mail;
pub mod manifest;
pub mod outgoing_http;
pub mod plugin;
pub mod pool;
pub mod registry;
pub mod sandbox;
pub mod signature;
mod smtp_sessions;
mod views;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use error::{LoadError, RuntimeError, RuntimeErrorKind};
pub use limits::{DEFAULT_FUEL, LimitOverrides, Limits, RuntimeLimits};
pub use manifest::{ContactPart, ContactParts, Manifest, World};
pub use plugin::{CallResult, CallUsage, Plugin, ScorerInput, ScorerSession, take_last_usage};
pub use pool::PoolPlan;
pub use registry::Registry;
pub use sandbox::Binding;

use sandbox::CallState;

/// How to build a [`Runtime`].
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub limits: RuntimeLimits,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Which signatures a server accepts. `None` (tools such as `plugin
    /// test`) still refuses a bundle whose signature does not match its
    /// bytes, but trusts any signer.
    pub trust: Option<signature::TrustPolicy>,
}

/// The engine and everything shared by all plugins. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    pool: PoolPlan,
    linkers: [Linker<CallState>; 3],
    limits: RuntimeLimits,
    cache: Option<cache::ArtifactCache>,
    trust: Option<ArcSwap<signature::TrustPolicy>>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let limits = config.limits;
        let (engine, pool) = pool::engine(&limits)?;
        spawn_epoch_ticker(&engine, limits.epoch_tick)?;
        let linkers = [
            sandbox::linker(&engine, World::SegmentRule)?,
            sandbox::linker(&engine, World::Scorer)?,
            sandbox::linker(&engine, World::Channel)?,
        ];
        let cache = config
            .cache_dir
            .map(cache::ArtifactCache::new)
            .transpose()?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                pool,
                linkers,
                limits,
                cache,
                trust: config.trust.map(ArcSwap::from_pointee),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn limits(&self) -> &RuntimeLimits {
        &self.inner.limits
    }

    /// How the instance pool was laid out: its slots may be fewer than
    /// [`RuntimeLimits::max_instances`] under an address-space limit.
    pub fn pool(&self) -> PoolPlan {
        self.inner.pool
    }

    /// The trust policy in force, if this runtime enforces one.
    pub fn trust_policy(&self) -> Option<Arc<signature::TrustPolicy>> {
        self.inner.trust.as_ref().map(|trust| trust.load_full())
    }

    /// Replaces the trust policy (after trusted keys changed); versions
    /// already loaded stay loaded. No effect on a runtime built without one.
    pub fn set_trust(&self, policy: signature::TrustPolicy) {
        if let Some(trust) = &self.inner.trust {
            trust.store(Arc::new(policy));
        }
    }

    /// Checks a component's signature against the trust policy: who signed
    /// it, if anyone, or why it is refused.
    pub fn check_signature(
        &self,
        bytes: &[u8],
    ) -> Result<Option<signature::SignedBy>, signature::SignatureError> {
        match &self.inner.trust {
            Some(trust) => trust.load().check(bytes),
            None => signature::verify(bytes),
        }
    }

    fn linker(&self, world: World) -> &Linker<CallState> {
        let index = match world {
            World::SegmentRule => 0,
            World::Scorer => 1,
            World::Channel => 2,
        };
        &self.inner.linkers[index]
    }

    /// Loads a plugin file: its manifest (embedded, or beside it), then
    /// [`Runtime::load`].
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let bytes = tokio::fs::read(path).await?;
        self.check_size(bytes.len())?;
        let manifest = Manifest::for_file(path, &bytes)?;
        self.load(bytes, manifest).await
    }

    /// Compiles (or takes from the cache) and type-checks a component
    /// against the world its manifest claims. Nothing is registered here.
    pub async fn load(&self, bytes: Vec<u8>, manifest: Manifest) -> Result<Plugin, LoadError> {
        self.check_size(bytes.len())?;
        manifest.validate()?;
        // Bytes that do not even parse are a broken component, not a
        // signature problem: say so as any other load would.
        let signed_by = self.check_signature(&bytes).map_err(|e| match e {
            signature::SignatureError::Manifest(e) => LoadError::Manifest(e),
            other => LoadError::Signature(other),
        })?;
        if signed_by.is_some() {
            // The signature covers the embedded manifest; a manifest from
            // elsewhere must not stand in for it.
            let signed = manifest::read_section(&bytes, manifest::SECTION_NAME)?
                .map(Manifest::from_json)
                .transpose()?;
            if signed.as_ref() != Some(&manifest) {
                return Err(LoadError::Invalid(
                    "the manifest given differs from the signed manifest inside the bundle; upload the bundle as it is".into(),
                ));
            }
        }
        let runtime = self.clone();
        let hash = cache::content_hash(&bytes);
        let span =
            tracing::info_span!("plugin_load", plugin = %manifest.id(), world = %manifest.world);
        // Compiling takes milliseconds to seconds: keep it off the async
        // workers so requests keep flowing during an upload.
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let (component, from_cache) = runtime.compile(&hash, &bytes)?;
            Plugin::new(runtime, manifest, hash, component, from_cache)
                .map(|plugin| plugin.signed_by(signed_by))
        })
        .await
        .map_err(|e| LoadError::Invalid(format!("compilation was aborted: {e}")))?
    }

    fn check_size(&self, size: usize) -> Result<(), LoadError> {
        let limit = self.inner.limits.max_component_bytes;
        if size > limit {
            return Err(LoadError::TooLarge { size, limit });
        }
        Ok(())
    }

    fn compile(&self, hash: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        manifest::read_section(bytes, manifest::SECTION_NAME)?;
        let compiled = match &self.inner.cache {
            Some(cache) => cache.load_or_compile(&self.inner.engine, hash, bytes),
            None => Component::new(&self.inner.engine, bytes).map(|c| (c, false)),
        };
        compiled.map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }
}

/// One thread advances the engine's epoch; stores trap once their
/// wall-clock backstop (in ticks) passes. It holds only a weak reference and ends with the engine.
fn spawn_epoch_ticker(engine: &Engine, tick: std::time::Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("nachfass-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(drop)
}
