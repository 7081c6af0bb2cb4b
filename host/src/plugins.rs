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
use crate::runtime::capabilities::{Capabilities, CapabilityDiff};
use crate::runtime::registry::{Activation, RegistryError, Shadowing};
use crate::runtime::watch::Import;
use crate::runtime::{Limits, LoadError, Manifest, Plugin, Registry, RuntimeLimits};
use crate::store::plugins::Grant;
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
    #[error(
        "{plugin}@{} asks for more than the live {plugin}@{}: {}. An admin approves exactly that with POST /v1/plugins/{plugin}/versions/{}/approve (the body: `needs_approval` from the details), or in the dashboard",
        review.version, review.against, review.needs_approval, review.version
    )]
    NeedsApproval { plugin: String, review: Box<Review> },
    #[error(
        "the approval does not match what {plugin}@{} asks for beyond the live {}: it asks for {}, the approval grants {}. Approve exactly what GET /v1/plugins shows as `needs_approval`",
        review.version, review.against, review.needs_approval, approved
    )]
    ApprovalMismatch {
        plugin: String,
        review: Box<Review>,
        approved: Box<CapabilityDiff>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
}

/// What a version asks for beyond the live one, not yet approved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Review {
    pub version: String,
    /// The live version it was compared with.
    pub against: String,
    pub needs_approval: CapabilityDiff,
}

/// What an upload did.
#[derive(Debug)]
pub struct Uploaded {
    pub plugin: Arc<Plugin>,
    pub live: bool,
    /// The same name, version and content was stored already.
    pub unchanged: bool,
    /// Held back: it asks for capabilities an admin has not approved.
    pub review: Option<Review>,
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
        check_limits(&plugin, self.registry.runtime().limits())?;
        let now = self.clock.now();
        let saved = self
            .store
            .save_plugin_version(plugin.hash(), &manifest, &bytes, now)
            .await?;
        let hash = plugin.hash().to_owned();
        if !self.registry.has(&manifest.name, &manifest.version, &hash) {
            self.registry.add(plugin, Activation::Later)?;
        }
        // A plugin's first version goes live whatever `activate` says, and
        // needs no review: there is nothing it could ask for more than.
        let live_version = self.live_version(&manifest.name).await?;
        let mut review = None;
        if saved == Saved::New && (activate || live_version.is_none()) {
            review = self.review(&manifest.name, &manifest.version).await?;
            if review.is_none() {
                self.store
                    .set_live_plugin(
                        &manifest.name,
                        &manifest.version,
                        false,
                        live_version.as_deref(),
                        actor,
                        now,
                    )
                    .await?;
            }
        }
        self.reconcile().await?;
        let live = self
            .registry
            .live(&manifest.name)
            .is_some_and(|p| p.hash() == hash);
        if !live && review.is_none() {
            // Shown with every answer about a version that is not live, so
            // a repeated upload still says what it waits for.
            review = self.review(&manifest.name, &manifest.version).await?;
        }
        let plugin = self
            .registry
            .version(&manifest.name, &manifest.version)
            .ok_or_else(|| RegistryError::UnknownPlugin(manifest.name.clone()))?;
        Ok(Uploaded {
            plugin,
            live,
            unchanged: saved == Saved::Unchanged,
            review,
        })
    }

    /// Makes a stored version live on every node; refused while it asks
    /// for capabilities beyond the live version that no admin approved.
    pub async fn activate(
        &self,
        name: &str,
        version: &str,
        actor: &str,
    ) -> Result<Arc<Plugin>, PluginsError> {
        let live = self.live_version(name).await?;
        if let Some(review) = self.review(name, version).await? {
            return Err(PluginsError::NeedsApproval {
                plugin: name.to_owned(),
                review: Box::new(review),
            });
        }
        self.store
            .set_live_plugin(
                name,
                version,
                false,
                live.as_deref(),
                actor,
                self.clock.now(),
            )
            .await?;
        self.reconcile().await?;
        self.live(name)
    }

    /// An admin approves what `name@version` asks for beyond the live
    /// version — exactly that, as the review shows it, so what they saw is
    /// what they grant — and it goes live on every node.
    pub async fn approve(
        &self,
        name: &str,
        version: &str,
        approved: &CapabilityDiff,
        actor: &str,
    ) -> Result<Arc<Plugin>, PluginsError> {
        let Some(live) = self.live_version(name).await? else {
            return Err(
                StoreError::NotFound(format!("no plugin named `{name}` is installed")).into(),
            );
        };
        if live == version {
            return Err(PluginsError::Conflict(format!(
                "{name}@{version} is live already; there is nothing to approve"
            )));
        }
        // Compared with what the review shows, earlier approvals deducted.
        let grants = self.store.plugin_grants(name).await?;
        let needs_approval = self
            .review_against(name, version, &live, grants.get(version))
            .await?
            .map(|review| review.needs_approval)
            .unwrap_or_default();
        if needs_approval != *approved {
            return Err(PluginsError::ApprovalMismatch {
                plugin: name.to_owned(),
                review: Box::new(Review {
                    version: version.to_owned(),
                    against: live,
                    needs_approval,
                }),
                approved: Box::new(approved.clone()),
            });
        }
        self.store
            .approve_plugin_version(name, version, &live, approved, actor, self.clock.now())
            .await?;
        self.reconcile().await?;
        self.live(name)
    }

    /// What `name@version` asks for beyond the live version that no admin
    /// approved yet; `None` when it may go live as it is (nothing new, the
    /// plugin's first version, the live one itself, or one that was live
    /// before: its capabilities were granted then).
    pub async fn review(&self, name: &str, version: &str) -> Result<Option<Review>, PluginsError> {
        let Some(live) = self.live_version(name).await? else {
            return Ok(None);
        };
        let grants = self.store.plugin_grants(name).await?;
        self.review_against(name, version, &live, grants.get(version))
            .await
    }

    /// Every version of every plugin that waits for an approval to go live.
    pub async fn reviews(&self) -> Result<Vec<(String, Review)>, PluginsError> {
        let states = self.store.plugin_states().await?;
        let mut reviews = Vec::new();
        for summary in self.registry.list() {
            let Some(state) = states.iter().find(|s| s.name == summary.name) else {
                continue;
            };
            let grants = self.store.plugin_grants(&summary.name).await?;
            for version in &summary.versions {
                // A listing must not fail for one version this node cannot
                // compare (its live version did not load here, say).
                match self
                    .review_against(&summary.name, version, &state.live, grants.get(version))
                    .await
                {
                    Ok(review) => reviews.extend(review.map(|r| (summary.name.clone(), r))),
                    Err(e) => {
                        tracing::warn!(plugin = %summary.name, version, error = %e, "cannot review this version here")
                    }
                }
            }
        }
        Ok(reviews)
    }

    async fn review_against(
        &self,
        name: &str,
        version: &str,
        live: &str,
        grant: Option<&Grant>,
    ) -> Result<Option<Review>, PluginsError> {
        if live == version || grant.is_some_and(|g| g.was_live) {
            return Ok(None);
        }
        let asked = self.asked(name, version, live).await?;
        let needs_approval = match grant.and_then(|g| g.approved.as_ref()) {
            Some(granted) => asked.beyond(granted),
            None => asked,
        };
        Ok((!needs_approval.is_empty()).then(|| Review {
            version: version.to_owned(),
            against: live.to_owned(),
            needs_approval,
        }))
    }

    /// What `version` may do that `live` may not, from the versions this
    /// node has loaded (the reconcile loads every stored version; one
    /// stored by another node a moment ago is loaded here first).
    async fn asked(
        &self,
        name: &str,
        version: &str,
        live: &str,
    ) -> Result<CapabilityDiff, PluginsError> {
        if self.registry.version(name, version).is_none()
            || self.registry.version(name, live).is_none()
        {
            self.reconcile().await?;
        }
        let loaded = |v: &str| {
            self.registry.version(name, v).ok_or_else(|| {
                let installed = self
                    .registry
                    .list()
                    .into_iter()
                    .find(|p| p.name == name)
                    .map(|p| p.versions.join(", "))
                    .unwrap_or_default();
                PluginsError::Registry(RegistryError::UnknownVersion {
                    name: name.to_owned(),
                    version: v.to_owned(),
                    installed,
                })
            })
        };
        let (new, old) = (loaded(version)?, loaded(live)?);
        Ok(Capabilities::of(&new).added_since(&Capabilities::of(&old)))
    }

    /// The cluster's live version of `name`, from the database.
    async fn live_version(&self, name: &str) -> Result<Option<String>, PluginsError> {
        Ok(self
            .store
            .plugin_states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.live))
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
    /// sets each plugin's live and previous version; forgets this node's
    /// breaker counts of paused bindings. Returns the plugins whose live
    /// version changed here.
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
        self.sync_shadows().await?;
        // A binding paused by any node's breaker: this node forgets the
        // calls it counted for it, so that after a resume it counts afresh
        // here too, as the node that tripped does. (Paused, it is not
        // called, so nothing new is counted meanwhile.)
        for def in self.store.all_bindings().await? {
            if def.paused.is_some() {
                self.registry.breakers().reset(&def.name);
            }
        }
        Ok(changed)
    }

    /// Runs exactly the cluster's active shadows here (shadow mode), each
    /// with its candidate version as loaded above.
    async fn sync_shadows(&self) -> Result<(), PluginsError> {
        let mut running = std::collections::BTreeMap::new();
        for shadow in self.store.active_shadows().await? {
            let Some(plugin) = self.registry.version(&shadow.plugin, &shadow.version) else {
                tracing::error!(binding = %shadow.binding, plugin = %shadow.plugin, version = %shadow.version, "the shadow's candidate is not loaded here; not shadowing");
                continue;
            };
            running.insert(
                shadow.binding,
                Arc::new(Shadowing {
                    id: shadow.id,
                    plugin,
                }),
            );
        }
        self.registry.set_shadows(running);
        Ok(())
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

/// Refuses a version whose manifest asks for limits above the server's
/// maxima: no binding could run it as it asks.
fn check_limits(plugin: &Plugin, max: &RuntimeLimits) -> Result<(), PluginsError> {
    let manifest = plugin.manifest();
    Limits::for_world(manifest.world)
        .with_overrides(&manifest.limits)
        .check_within(max)
        .map_err(|why| PluginsError::Invalid(format!("{}: manifest limits: {why}", manifest.id())))
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
            check_limits(&plugin, self.registry.runtime().limits())?;
            let manifest = plugin.manifest().clone();
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| PluginsError::Load(e.into()))?;
            let now = self.clock.now();
            let saved = self
                .store
                .save_plugin_version(plugin.hash(), &manifest, &bytes, now)
                .await?;
            if !self
                .registry
                .has(&manifest.name, &manifest.version, plugin.hash())
            {
                self.registry.add(plugin, Activation::Later)?;
            }
            let live_version = self.live_version(&manifest.name).await?;
            let review = match saved {
                Saved::New => self.review(&manifest.name, &manifest.version).await?,
                Saved::Unchanged => None,
            };
            let live = saved == Saved::New
                && review.is_none()
                && self
                    .store
                    .set_live_plugin(
                        &manifest.name,
                        &manifest.version,
                        true,
                        live_version.as_deref(),
                        "plugins-dir",
                        now,
                    )
                    .await?;
            self.reconcile().await?;
            Ok(match (saved, live, review) {
                (Saved::Unchanged, _, _) => format!("{} stored already", manifest.id()),
                (Saved::New, true, _) => format!("{} live", manifest.id()),
                (Saved::New, false, Some(review)) => format!(
                    "{} installed, not live: it asks for more than the live {}: {}; an admin approves it (POST /v1/plugins/{}/versions/{}/approve)",
                    manifest.id(),
                    review.against,
                    review.needs_approval,
                    manifest.name,
                    manifest.version
                ),
                (Saved::New, false, None) => format!(
                    "{} installed, an equal or newer version is live",
                    manifest.id()
                ),
            })
        }
        .await;
        result.map_err(|e| e.to_string())
    }
}
