//! Plugins as cluster state. The database holds every version (component
//! and manifest, by SHA-256) and each plugin's live and previous version;
//! this node's [`Registry`] follows it. Uploads, activations, rollbacks and
//! plugins-directory imports write the database first, then bring the
//! local registry in line; other nodes hear of it through PostgreSQL
//! `LISTEN/NOTIFY` and a periodic reconcile (the only way on SQLite, and
//! the safety net for missed notices and reconnects).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::runtime::registry::{Activation, RegistryError};
use crate::runtime::watch::Import;
use crate::runtime::{LoadError, Manifest, Plugin, Registry};
use crate::store::plugins::PLUGINS_CHANNEL;
use crate::store::{Saved, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an upload did.
#[derive(Debug)]
pub struct Uploaded {
    pub plugin: Arc<Plugin>,
    pub live: bool,
    /// The same name, version and content was stored already.
    pub unchanged: bool,
}

/// The cluster's plugins, seen from this node. Cheap to build per request.
#[derive(Clone)]
pub struct Plugins {
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
}

impl Plugins {
    pub fn new(store: Store, registry: Arc<Registry>, clock: Arc<dyn Clock>) -> Plugins {
        Plugins {
            store,
            registry,
            clock,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Compiles and type-checks a component, stores it, and (with
    /// `activate`, or as the plugin's first version) makes it live on every
    /// node. A failure at any step changes nothing.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        manifest: Manifest,
        activate: bool,
        actor: &str,
    ) -> Result<Uploaded, PluginsError> {
        let plugin = self
            .registry
            .runtime()
            .load(bytes.clone(), manifest.clone())
            .await?;
        let now = self.clock.now();
        let saved = self
            .store
            .save_plugin_version(plugin.hash(), &manifest, &bytes, now)
            .await?;
        // A plugin's first version goes live whatever `activate` says.
        let first = !self
            .store
            .plugin_states()
            .await?
            .iter()
            .any(|s| s.name == manifest.name);
        if saved == Saved::New && (activate || first) {
            self.store
                .set_live_plugin(&manifest.name, &manifest.version, false, actor, now)
                .await?;
        }
        let hash = plugin.hash().to_owned();
        if !self.registry.has(&manifest.name, &manifest.version, &hash) {
            self.registry.add(plugin, Activation::Later)?;
        }
        self.reconcile().await?;
        let live = self
            .registry
            .live(&manifest.name)
            .is_some_and(|p| p.hash() == hash);
        let plugin = self
            .registry
            .version(&manifest.name, &manifest.version)
            .ok_or_else(|| RegistryError::UnknownPlugin(manifest.name.clone()))?;
        Ok(Uploaded {
            plugin,
            live,
            unchanged: saved == Saved::Unchanged,
        })
    }

    /// Makes a stored version live on every node.
    pub async fn activate(
        &self,
        name: &str,
        version: &str,
        actor: &str,
    ) -> Result<Arc<Plugin>, PluginsError> {
        self.store
            .set_live_plugin(name, version, false, actor, self.clock.now())
            .await?;
        self.reconcile().await?;
        self.live(name)
    }

    /// Makes the previous version live again on every node.
    pub async fn rollback(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Arc<Plugin>, PluginsError> {
        self.store
            .rollback_plugin(name, actor, reason, self.clock.now())
            .await?;
        self.reconcile().await?;
        self.live(name)
    }

    fn live(&self, name: &str) -> Result<Arc<Plugin>, PluginsError> {
        self.registry
            .live(name)
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()).into())
    }

    /// Brings this node's registry in line with the database: loads the
    /// versions it lacks (compiled artifacts come from the disk cache) and
    /// sets each plugin's live and previous version. Returns the plugins
    /// whose live version changed here.
    pub async fn reconcile(&self) -> Result<Vec<String>, PluginsError> {
        let _guard = self.registry.sync_guard().await;
        for stored in self.store.plugin_versions().await? {
            let manifest = stored.manifest;
            if self
                .registry
                .has(&manifest.name, &manifest.version, &stored.sha256)
            {
                continue;
            }
            let bytes = self.store.plugin_component(&stored.sha256).await?;
            let id = manifest.id();
            // One unusable version (say, stored by a newer node) must not
            // keep the others from loading.
            match self.registry.runtime().load(bytes, manifest).await {
                Ok(plugin) => {
                    if let Err(e) = self.registry.add(plugin, Activation::Later) {
                        tracing::error!(plugin = %id, error = %e, "stored plugin version conflicts with one loaded here");
                    }
                }
                Err(e) => {
                    tracing::error!(plugin = %id, error = %e, "stored plugin version cannot be loaded")
                }
            }
        }
        let mut changed = Vec::new();
        for state in self.store.plugin_states().await? {
            match self
                .registry
                .set_live(&state.name, &state.live, state.previous.as_deref())
            {
                Ok(true) => changed.push(state.name),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(plugin = %state.name, error = %e, "cannot make the cluster's live version live here")
                }
            }
        }
        Ok(changed)
    }

    /// Reconciles every `interval` and, on PostgreSQL (`listen_url`), as
    /// soon as another node announces a change. Runs until the registry is
    /// dropped.
    pub fn spawn_sync(
        self,
        interval: Duration,
        listen_url: Option<String>,
    ) -> tokio::task::JoinHandle<()> {
        let wake = Arc::new(tokio::sync::Notify::new());
        if let Some(url) = listen_url {
            tokio::spawn(listen(url, wake.clone(), Arc::downgrade(&self.registry)));
        }
        let weak = Arc::downgrade(&self.registry);
        let (store, clock) = (self.store, self.clock);
        drop(self.registry);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = wake.notified() => {}
                }
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                let plugins = Plugins::new(store.clone(), registry, clock.clone());
                match plugins.reconcile().await {
                    Ok(changed) if !changed.is_empty() => {
                        tracing::info!(plugins = ?changed, "live plugin versions changed by another node")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "plugin reconcile failed; retrying"),
                }
            }
        })
    }
}

/// Wakes the reconcile on every notice; after a lost connection too, since
/// notices sent meanwhile are gone.
async fn listen(url: String, wake: Arc<tokio::sync::Notify>, alive: std::sync::Weak<Registry>) {
    while alive.strong_count() > 0 {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for plugin changes; reconciling periodically");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(PLUGINS_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        wake.notify_one();
        while alive.strong_count() > 0 {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "plugin change listener lost its connection");
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}

/// Files dropped into the plugins directory are imported into the
/// database: a new version goes live (everywhere) if it is newer than the
/// live one; a file already stored changes nothing, so a restart never
/// undoes a rollback.
impl Import for Plugins {
    async fn import(&self, path: &Path) -> Result<String, String> {
        let result: Result<String, PluginsError> = async {
            let plugin = self.registry.runtime().load_file(path).await?;
            let manifest = plugin.manifest().clone();
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| PluginsError::Load(e.into()))?;
            let now = self.clock.now();
            let saved = self
                .store
                .save_plugin_version(plugin.hash(), &manifest, &bytes, now)
                .await?;
            let live = saved == Saved::New
                && self
                    .store
                    .set_live_plugin(&manifest.name, &manifest.version, true, "plugins-dir", now)
                    .await?;
            self.reconcile().await?;
            Ok(match (saved, live) {
                (Saved::Unchanged, _) => format!("{} stored already", manifest.id()),
                (Saved::New, true) => format!("{} live", manifest.id()),
                (Saved::New, false) => format!(
                    "{} installed, an equal or newer version is live",
                    manifest.id()
                ),
            })
        }
        .await;
        result.map_err(|e| e.to_string())
    }
}
