//! Plugins by name, each with its loaded versions and one live version.
//!
//! Going live is an atomic pointer swap: a call takes an `Arc` of the live
//! version when it starts and finishes on it, so in-flight calls never see
//! a half-swapped plugin. The version live before the last activation is
//! kept for rollback.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::Runtime;
use super::breaker::Breakers;
use super::error::LoadError;
use super::manifest::{ContactPart, Manifest, World};
use super::plugin::Plugin;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no plugin named `{0}` is installed")]
    UnknownPlugin(String),
    #[error("plugin `{name}` has no version {version}; installed: {installed}")]
    UnknownVersion {
        name: String,
        version: String,
        installed: String,
    },
    #[error(
        "plugin `{name}` is a {live}; a new version cannot change it to a {new}. Publish it under a new name"
    )]
    WorldChanged {
        name: String,
        live: World,
        new: World,
    },
    #[error("{id} is already installed with different content; give the new build a new version")]
    Conflict { id: String },
    #[error("plugin `{0}` has no previous version to roll back to")]
    NothingToRollBack(String),
}

/// A binding's pin: one version, or a semantic-version range.
#[derive(Clone, Debug, PartialEq)]
pub enum Pin {
    Exact(semver::Version),
    Range(semver::VersionReq),
}

impl Pin {
    /// `1.2.0` is that version exactly (not cargo's `^1.2.0`); anything
    /// else is a range (`^1.2`, `~1.2.3`, `>=1, <2`, `=1.2.0`).
    pub fn parse(pin: &str) -> Result<Pin, String> {
        if let Ok(version) = semver::Version::parse(pin.trim()) {
            return Ok(Pin::Exact(version));
        }
        semver::VersionReq::parse(pin).map(Pin::Range).map_err(|e| {
            format!("version `{pin}` is neither a version like 1.2.0 nor a range like ^1.2: {e}")
        })
    }

    pub fn matches(&self, version: &semver::Version) -> bool {
        match self {
            Pin::Exact(pinned) => pinned == version,
            Pin::Range(range) => range.matches(version),
        }
    }
}

/// Whether a newly installed version goes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Always: an operator uploaded it to use it.
    Now,
    /// Only if it is newer than the live version: how a plugins directory
    /// is read, so a restart always lands on the newest version.
    IfNewer,
    /// Keep it installed for a later `activate`.
    Later,
}

/// What `install` did.
#[derive(Debug)]
pub struct Installed {
    pub plugin: Arc<Plugin>,
    pub live: bool,
    /// The same name, version and content was installed already.
    pub unchanged: bool,
}

/// A plugin as listed by the registry.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PluginSummary {
    pub name: String,
    pub world: World,
    pub live: String,
    pub previous: Option<String>,
    pub versions: Vec<String>,
    pub description: String,
    /// Each version's publisher if it was signed by a trusted key, `null`
    /// if unsigned.
    pub signed_by: BTreeMap<String, Option<String>>,
    /// Each version's component hash (SHA-256 of the uploaded bytes), so a
    /// deploy can tell an installed version from a new build of it.
    pub sha256: BTreeMap<String, String>,
    /// The parts of a contact the live version is handed (its manifest's
    /// `reads`); none for a channel, which is handed messages.
    pub reads: Vec<ContactPart>,
}

struct Slot {
    world: World,
    live: ArcSwap<Plugin>,
    state: Mutex<SlotState>,
}

struct SlotState {
    versions: BTreeMap<semver::Version, Arc<Plugin>>,
    previous: Option<Arc<Plugin>>,
}

pub struct Registry {
    runtime: Runtime,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Held while this registry is brought in line with the cluster's
    /// state, so an older reading never overwrites a newer one.
    sync: tokio::sync::Mutex<()>,
    breakers: Breakers,
    /// Candidate versions running beside bindings in shadow mode, by
    /// binding name: read on every live call, so a lookup is one atomic
    /// load and never a database read. The reconcile keeps it in line with
    /// the cluster's state.
    shadows: ArcSwap<BTreeMap<String, Arc<Shadowing>>>,
}

/// A candidate version in shadow for one binding.
#[derive(Debug)]
pub struct Shadowing {
    /// The shadow's id, which its recorded results carry.
    pub id: String,
    pub plugin: Arc<Plugin>,
}

impl Registry {
    pub fn new(runtime: Runtime) -> Registry {
        Registry {
            runtime,
            slots: RwLock::new(BTreeMap::new()),
            sync: tokio::sync::Mutex::new(()),
            breakers: Breakers::default(),
            shadows: ArcSwap::default(),
        }
    }

    /// The candidate in shadow for `binding`, if any.
    pub fn shadow(&self, binding: &str) -> Option<Arc<Shadowing>> {
        self.shadows.load().get(binding).cloned()
    }

    /// Replaces every shadow at once (the reconcile's reading of the
    /// cluster's state). A shadow already running keeps its `Arc`, so a
    /// call in flight finishes as it began.
    pub fn set_shadows(&self, shadows: BTreeMap<String, Arc<Shadowing>>) {
        self.shadows.store(Arc::new(shadows));
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Loads a plugin file and adds it.
    pub async fn install_file(
        &self,
        path: &Path,
        activation: Activation,
    ) -> Result<Installed, RegistryError> {
        let plugin = self.runtime.load_file(path).await?;
        self.add(plugin, activation)
    }

    /// Loads a component with its manifest and adds it.
    pub async fn install(
        &self,
        bytes: Vec<u8>,
        manifest: Manifest,
        activation: Activation,
    ) -> Result<Installed, RegistryError> {
        let plugin = self.runtime.load(bytes, manifest).await?;
        self.add(plugin, activation)
    }

    /// Adds a loaded plugin version; a failure changes nothing.
    pub fn add(&self, plugin: Plugin, activation: Activation) -> Result<Installed, RegistryError> {
        let name = plugin.manifest().name.clone();
        let version = plugin.manifest().semver();
        let plugin = Arc::new(plugin);
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get(&name).cloned() else {
            let mut versions = BTreeMap::new();
            versions.insert(version, plugin.clone());
            slots.insert(
                name.clone(),
                Arc::new(Slot {
                    world: plugin.manifest().world,
                    live: ArcSwap::new(plugin.clone()),
                    state: Mutex::new(SlotState {
                        versions,
                        previous: None,
                    }),
                }),
            );
            tracing::info!(plugin = %plugin.id(), hash = %plugin.hash(), "plugin installed and live");
            return Ok(Installed {
                plugin,
                live: true,
                unchanged: false,
            });
        };
        drop(slots);
        if slot.world != plugin.manifest().world {
            return Err(RegistryError::WorldChanged {
                name,
                live: slot.world,
                new: plugin.manifest().world,
            });
        }
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = state.versions.get(&version) {
            if existing.hash() != plugin.hash() {
                return Err(RegistryError::Conflict {
                    id: plugin.id().to_owned(),
                });
            }
            let existing = existing.clone();
            let live = Arc::ptr_eq(&slot.live.load(), &existing);
            return Ok(Installed {
                plugin: existing,
                live,
                unchanged: true,
            });
        }
        state.versions.insert(version.clone(), plugin.clone());
        let live = match activation {
            Activation::Now => true,
            Activation::IfNewer => version > slot.live.load().manifest().semver(),
            Activation::Later => false,
        };
        if live {
            state.previous = Some(slot.live.swap(plugin.clone()));
            tracing::info!(plugin = %plugin.id(), hash = %plugin.hash(), "plugin version live");
        } else {
            tracing::info!(plugin = %plugin.id(), "plugin version installed, not live");
        }
        Ok(Installed {
            plugin,
            live,
            unchanged: false,
        })
    }

    /// The live version of `name`. Hold the `Arc` for the whole call.
    pub fn live(&self, name: &str) -> Option<Arc<Plugin>> {
        self.slot(name).map(|slot| slot.live.load_full())
    }

    /// This node's circuit breakers, per binding and plugin version.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Serialises bringing this registry in line with the cluster's state.
    pub async fn sync_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sync.lock().await
    }

    /// The version a binding runs: the live one, or with a pin the version
    /// it names (`1.2.0`) or, for a range (`^1.2`, `>=1, <2`), the live
    /// version if it fits, else the newest installed one that does.
    pub fn resolve(&self, name: &str, pin: Option<&str>) -> Option<Arc<Plugin>> {
        let Some(pin) = pin else {
            return self.live(name);
        };
        let slot = self.slot(name)?;
        let wanted = Pin::parse(pin).ok()?;
        let live = slot.live.load_full();
        if wanted.matches(&live.manifest().semver()) {
            return Some(live);
        }
        let state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .versions
            .iter()
            .rev()
            .find(|(version, _)| wanted.matches(version))
            .map(|(_, plugin)| plugin.clone())
    }

    /// An installed version of `name`.
    pub fn version(&self, name: &str, version: &str) -> Option<Arc<Plugin>> {
        let slot = self.slot(name)?;
        let state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let version = semver::Version::parse(version).ok()?;
        state.versions.get(&version).cloned()
    }

    /// Whether `name@version` with this content is installed.
    pub fn has(&self, name: &str, version: &str, hash: &str) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        let state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        semver::Version::parse(version)
            .ok()
            .and_then(|v| state.versions.get(&v).map(|p| p.hash() == hash))
            .unwrap_or(false)
    }

    /// Sets the live and previous version as the cluster's state says.
    /// Returns whether the live version changed.
    pub fn set_live(
        &self,
        name: &str,
        live: &str,
        previous: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))?;
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let find = |version: &str| {
            semver::Version::parse(version)
                .ok()
                .and_then(|v| state.versions.get(&v).cloned())
        };
        let wanted = find(live).ok_or_else(|| RegistryError::UnknownVersion {
            name: name.to_owned(),
            version: live.to_owned(),
            installed: state
                .versions
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let previous = previous.and_then(find);
        let old = slot.live.swap(wanted.clone());
        state.previous = previous;
        let changed = !Arc::ptr_eq(&old, &wanted);
        if changed {
            tracing::info!(plugin = %wanted.id(), "plugin version live");
        }
        Ok(changed)
    }

    /// Makes an installed version live.
    pub fn activate(&self, name: &str, version: &str) -> Result<Arc<Plugin>, RegistryError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))?;
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = semver::Version::parse(version)
            .ok()
            .and_then(|v| state.versions.get(&v).cloned())
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.to_owned(),
                version: version.to_owned(),
                installed: state
                    .versions
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let old = slot.live.swap(wanted.clone());
        if !Arc::ptr_eq(&old, &wanted) {
            state.previous = Some(old);
            tracing::info!(plugin = %wanted.id(), "plugin version activated");
        }
        Ok(wanted)
    }

    /// Makes the version that was live before the last activation live
    /// again; rolling back twice returns to where you started.
    pub fn rollback(&self, name: &str) -> Result<Arc<Plugin>, RegistryError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))?;
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let previous = state
            .previous
            .take()
            .ok_or_else(|| RegistryError::NothingToRollBack(name.to_owned()))?;
        state.previous = Some(slot.live.swap(previous.clone()));
        tracing::info!(plugin = %previous.id(), "plugin rolled back");
        Ok(previous)
    }

    pub fn list(&self) -> Vec<PluginSummary> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .map(|(name, slot)| {
                let state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
                let live = slot.live.load();
                PluginSummary {
                    name: name.clone(),
                    world: slot.world,
                    live: live.manifest().version.clone(),
                    previous: state
                        .previous
                        .as_ref()
                        .map(|p| p.manifest().version.clone()),
                    versions: state.versions.keys().map(ToString::to_string).collect(),
                    description: live.manifest().description.clone(),
                    reads: live.contact_parts().named(),
                    signed_by: state
                        .versions
                        .iter()
                        .map(|(version, plugin)| {
                            (
                                version.to_string(),
                                plugin.signer().map(|s| s.publisher.clone()),
                            )
                        })
                        .collect(),
                    sha256: state
                        .versions
                        .iter()
                        .map(|(version, plugin)| (version.to_string(), plugin.hash().to_owned()))
                        .collect(),
                }
            })
            .collect()
    }

    /// Every installed version of every plugin, for metrics.
    pub fn all_versions(&self) -> Vec<Arc<Plugin>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .values()
            .flat_map(|slot| {
                let state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
                state.versions.values().cloned().collect::<Vec<_>>()
            })
            .collect()
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}
