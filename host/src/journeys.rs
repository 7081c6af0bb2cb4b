//! Follow-up journeys: definitions, enrolment, and the steps a run takes.
//!
//! Data flow: an event is stored with a `route` job (one transaction) →
//! routing ends runs that reached a goal, wakes runs waiting for it and
//! enrols contacts whose trigger it matches → each run's steps advance in
//! `advance` jobs, a send passing the policy gate into the outbox → the
//! outbox's `deliver` jobs call the channel plugin. Every job is durable
//! and every transition carries the run's `seq`, so a job that runs twice
//! (a crash, an expired lease) changes nothing the second time.

mod advance;
mod batch;
pub mod condition;
mod facts;
pub mod preview;
pub mod ready_made;
mod route;
pub(crate) mod send;
mod sweep;
pub mod validate;
mod writes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::ingest::Pipeline;
use crate::model::{Fields, Value};
use crate::policy::Policy;
use crate::store::bindings::bindings_in;
use crate::store::jobs::{JobArgs, JobRegistry, RouteEvent};
use crate::store::{BindingKind, JourneyVersion, StoreError};
use crate::tracking::Tracking;

/// The definition types are data (the model layer): policy and rendering
/// read them below this layer.
pub use crate::model::journey as definition;
pub use definition::JourneyDef;
pub use validate::Known;

/// Runs the run's current step; stale unless the run is at `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdvanceRun {
    pub run_id: String,
    pub seq: i64,
}

impl JobArgs for AdvanceRun {
    const KIND: &'static str = "advance";
    fn unique_key(&self) -> String {
        format!("advance:{}:{}", self.run_id, self.seq)
    }
}

/// A `wait_until` ran out of time; stale unless the run is still at `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeoutRun {
    pub run_id: String,
    pub seq: i64,
}

impl JobArgs for TimeoutRun {
    const KIND: &'static str = "timeout";
    fn unique_key(&self) -> String {
        format!("timeout:{}:{}", self.run_id, self.seq)
    }
}

/// A scheduled journey's sweep at cron time `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepJourney {
    pub journey: String,
    pub version: i64,
    pub at: i64,
}

impl JobArgs for SweepJourney {
    const KIND: &'static str = "sweep";
    fn unique_key(&self) -> String {
        format!("sweep:{}:{}:{}", self.journey, self.version, self.at)
    }
}

/// The job kinds of journeys: routing events, advancing runs, timeouts
/// (these three in batches, see `batch`) and scheduled sweeps.
pub fn register_jobs(registry: &mut JobRegistry<Journeys>) {
    use batch::{StepJob, run_steps};
    registry
        .register_batch(
            |journeys: Arc<Journeys>, jobs: Vec<(_, RouteEvent)>| async move {
                let jobs = jobs.into_iter().map(|(job, args)| {
                    let step = StepJob::Route {
                        event_id: args.event_id,
                    };
                    (job, step)
                });
                run_steps(&journeys, jobs.collect()).await
            },
        )
        .register_batch(
            |journeys: Arc<Journeys>, jobs: Vec<(_, AdvanceRun)>| async move {
                let jobs = jobs.into_iter().map(|(job, args)| {
                    let step = StepJob::Advance {
                        run_id: args.run_id,
                        seq: args.seq,
                    };
                    (job, step)
                });
                run_steps(&journeys, jobs.collect()).await
            },
        )
        .register_batch(
            |journeys: Arc<Journeys>, jobs: Vec<(_, TimeoutRun)>| async move {
                let jobs = jobs.into_iter().map(|(job, args)| {
                    let step = StepJob::Timeout {
                        run_id: args.run_id,
                        seq: args.seq,
                    };
                    (job, step)
                });
                run_steps(&journeys, jobs.collect()).await
            },
        )
        .register(|journeys, job, args: SweepJourney| async move {
            sweep::sweep(&journeys, &job, &args.journey, args.version, args.at).await
        });
}

#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    #[error("the journey definition is not valid")]
    Invalid(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What saving a definition did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Saved {
    pub name: String,
    pub version: i64,
    /// False when the definition equals the latest version.
    pub created: bool,
}

/// The journeys engine: shared by the API and the scheduler.
pub struct Journeys {
    pub pipeline: Pipeline,
    pub policy: Policy,
    /// Saved versions never change, so they are cached for good.
    versions: Mutex<HashMap<(String, i64), Arc<JourneyDef>>>,
    /// The latest active versions, for trigger matching; re-read after a
    /// save here and every few seconds for saves on other nodes.
    active: Mutex<(Option<Instant>, ActiveJourneys)>,
    /// Channel kind (`email`, `sms`) of each channel plugin version.
    channel_kinds: Mutex<HashMap<String, String>>,
    /// Where tracking and unsubscribe links point.
    public_url: Mutex<String>,
    tracking: Mutex<Option<Tracking>>,
}

/// The latest version of each journey taking entries, with its number.
pub type ActiveJourneys = Arc<Vec<(i64, Arc<JourneyDef>)>>;

const ACTIVE_REFRESH: StdDuration = StdDuration::from_secs(5);

impl Journeys {
    pub fn new(pipeline: Pipeline, policy: Policy) -> Arc<Journeys> {
        Arc::new(Journeys {
            pipeline,
            policy,
            versions: Mutex::default(),
            active: Mutex::default(),
            channel_kinds: Mutex::default(),
            public_url: Mutex::new("http://127.0.0.1:8080".to_owned()),
            tracking: Mutex::default(),
        })
    }

    /// The address recipients reach this server at (`https://…`), for
    /// tracking and unsubscribe links.
    pub fn set_public_url(&self, url: &str) {
        *lock(&self.public_url) = url.trim_end_matches('/').to_owned();
        *lock(&self.tracking) = None;
    }

    /// The link signer, with the database's secret.
    pub fn tracking(&self) -> Tracking {
        if let Some(tracking) = lock(&self.tracking).clone() {
            return tracking;
        }
        let secret = self.pipeline.store.signing_secret();
        let tracking = Tracking::new(secret, &lock(&self.public_url));
        *lock(&self.tracking) = Some(tracking.clone());
        tracking
    }

    fn now(&self) -> i64 {
        self.pipeline.clock.now()
    }

    /// Parses, validates and stores a definition as a new version, then
    /// schedules its first sweep if it has a cron trigger.
    pub async fn save(&self, json: &[u8]) -> Result<Saved, JourneyError> {
        let def = JourneyDef::from_json(json).map_err(|e| JourneyError::Invalid(vec![e]))?;
        self.save_def(&def).await
    }

    pub async fn save_def(&self, def: &JourneyDef) -> Result<Saved, JourneyError> {
        validate::validate(def, &self.known().await?).map_err(JourneyError::Invalid)?;
        let canonical =
            serde_json::to_string(def).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let now = self.now();
        let (version, created) = self
            .pipeline
            .store
            .save_journey(&def.name, &canonical, now)
            .await?;
        self.forget_active();
        sweep::schedule_next(self, &def.name, version, def, now).await?;
        Ok(Saved {
            name: def.name.clone(),
            version,
            created,
        })
    }

    /// Stops or resumes a journey's new entries (running runs go on).
    /// Resuming a scheduled journey queues its next sweep: a sweep that
    /// fell due while it was stopped ended its chain of sweeps. `false`
    /// when there is no such journey.
    pub async fn set_active(&self, name: &str, active: bool) -> Result<bool, StoreError> {
        let now = self.now();
        let store = &self.pipeline.store;
        if !store.set_journey_active(name, active, now).await? {
            return Ok(false);
        }
        self.forget_active();
        if active {
            let (latest, def) = self.latest(name).await?;
            sweep::schedule_next(self, name, latest.version, &def, now).await?;
        }
        Ok(true)
    }

    /// The bindings and segments a definition may name.
    pub async fn known(&self) -> Result<Known, StoreError> {
        let store = &self.pipeline.store;
        Ok(Known {
            channel_bindings: store
                .bindings(BindingKind::Channel)
                .await?
                .into_iter()
                .map(|b| b.name)
                .collect(),
            segments: store
                .bindings(BindingKind::Segment)
                .await?
                .into_iter()
                .map(|b| b.name)
                .collect(),
        })
    }

    pub async fn definition(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Arc<JourneyDef>, StoreError> {
        let mut conn = self.pipeline.store.pool().acquire().await?;
        self.definition_in(&mut conn, name, version).await
    }

    /// A saved version, read on the caller's connection when not cached:
    /// a job's transaction must not wait for a second pooled connection
    /// (with SQLite's few connections, that wait can deadlock).
    pub(crate) async fn definition_in(
        &self,
        conn: &mut AnyConnection,
        name: &str,
        version: i64,
    ) -> Result<Arc<JourneyDef>, StoreError> {
        let key = (name.to_owned(), version);
        if let Some(def) = lock(&self.versions).get(&key) {
            return Ok(def.clone());
        }
        let json = crate::store::journeys::definition_in(conn, name, version).await?;
        let def =
            Arc::new(JourneyDef::from_json(json.as_bytes()).map_err(|e| {
                StoreError::Invalid(format!("stored journey {name} v{version}: {e}"))
            })?);
        lock(&self.versions).insert(key, def.clone());
        Ok(def)
    }

    /// A journey's latest version and its definition.
    pub async fn latest(
        &self,
        name: &str,
    ) -> Result<(JourneyVersion, Arc<JourneyDef>), StoreError> {
        let latest = self
            .pipeline
            .store
            .journey_versions(name)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("journey {name}")))?;
        let def = self.definition(name, latest.version).await?;
        Ok((latest, def))
    }

    /// Latest versions of the journeys that take new entries.
    pub async fn active(&self) -> Result<ActiveJourneys, StoreError> {
        {
            let cached = lock(&self.active);
            if let (Some(at), list) = &*cached
                && at.elapsed() < ACTIVE_REFRESH
            {
                return Ok(list.clone());
            }
        }
        let mut list = Vec::new();
        for version in self.pipeline.store.latest_journeys().await? {
            if version.active {
                list.push((
                    version.version,
                    self.definition(&version.name, version.version).await?,
                ));
            }
        }
        let list = Arc::new(list);
        *lock(&self.active) = (Some(Instant::now()), list.clone());
        Ok(list)
    }

    pub fn forget_active(&self) {
        lock(&self.active).0 = None;
    }

    /// Enrols a contact by hand (`POST /v1/journeys/{name}/enroll`).
    /// Returns the new run's id, or `None` when the re-entry policy says no.
    pub async fn enroll(&self, name: &str, contact_id: &str) -> Result<Option<String>, StoreError> {
        let (latest, def) = self.latest(name).await?;
        if !latest.active {
            return Err(StoreError::Conflict(format!(
                "journey {name} is stopped; save it again to take new entries"
            )));
        }
        let now = self.now();
        let store = &self.pipeline.store;
        let mut tx = store.write_tx().await?;
        if crate::store::contacts::contact_in(&mut tx, contact_id)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("contact {contact_id}")));
        }
        let run = route::enroll(&mut tx, &def, latest.version, contact_id, None, now).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// The channel kind of a channel binding's live plugin, reading the
    /// binding on the caller's connection.
    pub(crate) async fn channel_kind_in(
        &self,
        conn: &mut AnyConnection,
        binding: &str,
    ) -> Result<Option<String>, StoreError> {
        let bindings = bindings_in(conn, BindingKind::Channel).await?;
        Ok(self.channel_kind_of(&bindings, binding).await)
    }

    /// The channel kind of `binding` among the channel bindings `bindings`;
    /// `None` when there is no such binding or no live plugin for it.
    pub(crate) async fn channel_kind_of(
        &self,
        bindings: &[crate::store::BindingDef],
        binding: &str,
    ) -> Option<String> {
        let def = bindings.iter().find(|b| b.name == binding)?;
        let plugin = self
            .pipeline
            .registry
            .resolve(&def.plugin, def.version.as_deref())?;
        if let Some(kind) = lock(&self.channel_kinds).get(plugin.id()) {
            return Some(kind.clone());
        }
        let runtime_binding =
            crate::scoring::runtime_binding(def, crate::runtime::World::Channel, &plugin);
        let info = match plugin.describe(&runtime_binding, self.now()).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(binding, error = %e, "channel describe failed");
                return None;
            }
        };
        let kind = serde_json::to_value(info.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "webhook".to_owned());
        lock(&self.channel_kinds).insert(plugin.id().to_owned(), kind.clone());
        Some(kind)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop the engine; the data is a cache.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `[("journey", "welcome")]` as event properties.
pub(crate) fn props(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
        .collect()
}
