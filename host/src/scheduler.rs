//! The durable scheduler: leases due jobs in batches, runs them, and gives
//! failed ones back with exponential backoff and jitter. Several nodes on
//! one PostgreSQL database share the queue; a node that dies leaves leases
//! that run out and are claimed again.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::journeys::{AdvanceRun, Journeys, TimeoutRun};
use crate::store::Backtest;
use crate::store::jobs::{
    ClaimedJob, JobArgs, JobOutcome, JobRegistry, KindFilter, ProcessEvents, ProfileChanged,
    RouteEvent, backoff,
};
use crate::store::outbox::DeliverMessage;
use crate::store::tasks::{Rescore, SegmentRebuild};
use crate::store::{Dialect, StoreError};

/// Every job kind the server runs, each with its handler.
pub fn job_registry() -> JobRegistry<Journeys> {
    let mut registry = JobRegistry::default();
    crate::journeys::register_jobs(&mut registry);
    crate::outbox::register_jobs(&mut registry);
    crate::consent::register_jobs(&mut registry);
    registry
        .register(
            |journeys: Arc<Journeys>, job, args: SegmentRebuild| async move {
                crate::segments::run_rebuild_task(&journeys.pipeline, &job, &args.task).await?;
                Ok(JobOutcome::Done)
            },
        )
        .register(|journeys: Arc<Journeys>, job, args: Rescore| async move {
            crate::scoring::run_rescore_task(&journeys.pipeline, &job, &args.task).await?;
            Ok(JobOutcome::Done)
        })
        .register(|journeys: Arc<Journeys>, job, args: Backtest| async move {
            crate::backtest::run(&journeys, &job, &args.backtest).await?;
            Ok(JobOutcome::Done)
        })
        .register(
            |journeys: Arc<Journeys>, job, args: ProcessEvents| async move {
                journeys.pipeline.process_events(&args.events).await?;
                finish(&journeys, &job).await
            },
        )
        .register(
            |journeys: Arc<Journeys>, job, args: ProfileChanged| async move {
                let now = journeys.pipeline.clock.now();
                match journeys.pipeline.after_profile(&args.contact_id, now).await {
                    // Deleted since: nothing to score.
                    Ok(()) | Err(StoreError::NotFound(_)) => finish(&journeys, &job).await,
                    Err(e) => Err(e),
                }
            },
        );
    registry
}

/// Deletes a job whose work committed in transactions of its own.
async fn finish(journeys: &Journeys, job: &ClaimedJob) -> Result<JobOutcome, StoreError> {
    let mut conn = journeys.pipeline.store.pool().acquire().await?;
    crate::store::jobs::finish_in(&mut conn, job).await?;
    Ok(JobOutcome::Done)
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How long a claimed job belongs to this node.
    pub lease_ms: i64,
    /// Jobs claimed (and run at once) per round.
    pub batch: u32,
    /// Pause when nothing is due.
    pub idle: Duration,
    /// Journey steps (routing, advancing, timeouts) or deliveries claimed
    /// and run as one batch at most.
    pub step_batch: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_ms: 60_000,
            batch: 64,
            idle: Duration::from_millis(200),
            step_batch: 100,
        }
    }
}

pub struct Scheduler {
    journeys: Arc<Journeys>,
    registry: JobRegistry<Journeys>,
    config: SchedulerConfig,
    /// This node's name on its leases.
    worker: String,
    /// Claims the lanes of [`Scheduler::run_forever`] made.
    claims: std::sync::atomic::AtomicU64,
}

impl Scheduler {
    /// A scheduler running every kind of [`job_registry`].
    pub fn new(journeys: Arc<Journeys>, config: SchedulerConfig) -> Arc<Scheduler> {
        Scheduler::with_registry(journeys, config, job_registry())
    }

    pub fn with_registry(
        journeys: Arc<Journeys>,
        config: SchedulerConfig,
        registry: JobRegistry<Journeys>,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            journeys,
            registry,
            config,
            worker: format!("node-{}", uuid::Uuid::new_v4().simple()),
            claims: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// How many claims the lanes have made so far: about one per batch
    /// under load and none while nothing is due, between polls.
    pub fn claims_made(&self) -> u64 {
        self.claims.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Claims one batch of due jobs and runs them. Returns how many.
    pub async fn tick(self: &Arc<Self>) -> Result<usize, StoreError> {
        let store = &self.journeys.pipeline.store;
        let now = self.journeys.pipeline.clock.now();
        let jobs = store
            .claim_jobs(&self.worker, now, self.config.lease_ms, self.config.batch)
            .await?;
        let claimed = jobs.len();
        // SQLite has one writer and 8 pooled connections: more than 4 jobs
        // at once would only queue for the lock while holding connections
        // the API needs. PostgreSQL runs the whole batch at once.
        let at_once = match store.dialect() {
            Dialect::Sqlite => 4,
            Dialect::Postgres => claimed.max(1),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(at_once));
        let mut running = JoinSet::new();
        for work in self.split(jobs) {
            let this = self.clone();
            let permits = permits.clone();
            running.spawn(async move {
                // The semaphore is never closed, so a permit always comes.
                let _permit = permits.acquire_owned().await;
                this.run_work(work).await
            });
        }
        while running.join_next().await.is_some() {}
        Ok(claimed)
    }

    /// Splits claimed jobs into what runs as one: all jobs of a kind run
    /// in batches together, every other job alone.
    fn split(&self, jobs: Vec<ClaimedJob>) -> Vec<Vec<ClaimedJob>> {
        let mut batches: Vec<Vec<ClaimedJob>> = Vec::new();
        let mut singles = Vec::new();
        for job in jobs {
            if !self.registry.runs_in_batches(&job.kind) {
                singles.push(vec![job]);
            } else if let Some(batch) = batches.iter_mut().find(|b| b[0].kind == job.kind) {
                batch.push(job);
            } else {
                batches.push(vec![job]);
            }
        }
        batches.extend(singles);
        batches
    }

    /// Runs one piece of [`Self::split`] work and records its outcomes.
    async fn run_work(&self, jobs: Vec<ClaimedJob>) {
        let [first, ..] = jobs.as_slice() else {
            return;
        };
        let span = if jobs.len() == 1 {
            tracing::debug_span!("job", kind = %first.kind, id = %first.id, attempt = first.attempts)
        } else {
            tracing::debug_span!("jobs", kind = %first.kind, count = jobs.len())
        };
        async {
            let started = self.journeys.pipeline.clock.now();
            for job in &jobs {
                metrics::histogram!("nachfass_job_lag_seconds", "kind" => job.kind.clone())
                    .record((started - job.due_at).max(0) as f64 / 1000.0);
            }
            let work = self.registry.run_batch(self.journeys.clone(), jobs.clone());
            // A job that outlives its lease keeps it: another node never
            // runs it beside this one (a long sweep, a rebuild between
            // batches).
            let outcomes = tokio::select! {
                biased;
                outcomes = work => outcomes,
                never = self.heartbeat(&jobs) => match never {},
            };
            for (job, ran) in jobs.iter().zip(outcomes) {
                self.record(job, ran).await;
            }
        }
        .instrument(span)
        .await
    }

    /// Records what became of `job`: done (its work already committed),
    /// retried with backoff, deferred without counting, or failed for good.
    async fn record(&self, job: &ClaimedJob, ran: Result<JobOutcome, StoreError>) {
        let store = &self.journeys.pipeline.store;
        let max_attempts = self.registry.max_attempts(&job.kind);
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(e) if job.attempts >= max_attempts => JobOutcome::Failed {
                error: e.to_string(),
            },
            Err(e) => JobOutcome::Retry {
                after_ms: backoff(job.attempts, &job.id),
                error: e.to_string(),
            },
        };
        let now = self.journeys.pipeline.clock.now();
        let label = match &outcome {
            JobOutcome::Done => "done",
            JobOutcome::Retry { .. } => "retry",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::Defer { .. } => "deferred",
        };
        metrics::counter!("nachfass_jobs_total", "kind" => job.kind.clone(), "outcome" => label)
            .increment(1);
        let written = match &outcome {
            JobOutcome::Done => Ok(()),
            JobOutcome::Retry { after_ms, error } => {
                tracing::info!(job = %job.id, attempt = job.attempts, error, "job will be retried");
                store.retry_job(job, now + after_ms, error).await
            }
            JobOutcome::Failed { error } => {
                tracing::warn!(job = %job.id, attempt = job.attempts, error, "job failed for good");
                store.fail_job(job, error, now).await
            }
            JobOutcome::Defer { until } => store.defer_job(job, *until).await,
        };
        // The lease runs out and the job comes back: nothing is lost.
        if let Err(e) = written {
            tracing::warn!(job = %job.id, error = %e, "could not record the job's outcome");
        }
    }

    /// Extends the leases of running `jobs` every third of their length
    /// until dropped (the jobs finished). A lost lease is logged; the job's
    /// own transaction then finds it lost and rolls back.
    async fn heartbeat(&self, jobs: &[ClaimedJob]) -> std::convert::Infallible {
        let lease_ms = jobs.iter().map(|j| j.lease_ms).min().unwrap_or(60_000);
        let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1).max(1));
        let store = &self.journeys.pipeline.store;
        loop {
            tokio::time::sleep(every).await;
            let until = self.journeys.pipeline.clock.now() + lease_ms;
            let lost = match jobs {
                [job] => store
                    .extend_lease(job, until)
                    .await
                    .map(|held| u64::from(!held)),
                _ => store.extend_leases(jobs, until).await,
            };
            match lost {
                Ok(0) => {}
                Ok(lost) => tracing::warn!(
                    lost,
                    "leases lost while running; another node may run those jobs"
                ),
                Err(e) => tracing::warn!(error = %e, "could not extend the leases"),
            }
        }
    }

    /// Runs rounds until nothing is due at the clock's present time (tests
    /// and the CLI use this with an injected clock). Returns the jobs run.
    pub async fn run_until_idle(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            match self.tick().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// The node's loop, until `shutdown` turns true: one lane for
    /// deliveries, one for journey steps and one for everything else, so a
    /// backlog of due steps never starves the deliveries they create (nor
    /// a long rebuild the steps, nor the other way round).
    /// A lane claims as soon as a running job frees a place, and wakes when
    /// jobs are committed (this node's signal; on PostgreSQL every node's,
    /// through `LISTEN nachfass_jobs`), polling only as a backstop for
    /// jobs that come due later.
    pub async fn run_forever(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let store = self.journeys.pipeline.store.clone();
        if store.dialect() == Dialect::Postgres {
            tokio::spawn(listen_for_jobs(
                store.url().to_owned(),
                store.jobs_wake().clone(),
                shutdown.clone(),
            ));
        }
        // The other kinds this node runs, named: a claim of named kinds
        // reads the (kind, due time) index, where "all but these" would
        // walk every due step and delivery. A kind no node here knows
        // waits for a node that does.
        let work_kinds = self
            .registry
            .kinds()
            .into_iter()
            .filter(|kind| !LANED_KINDS.contains(kind))
            .collect();
        let lanes = [
            // Plugin calls outside the batch's one transaction: one batch
            // calls while another writes, on either database.
            Lane {
                name: "deliveries",
                kinds: DELIVERY_KINDS.to_vec(),
                batched: true,
                room: (2, 2),
            },
            // One batch at a time on SQLite's one writer; two on
            // PostgreSQL (one writes while the other computes).
            Lane {
                name: "steps",
                kinds: STEP_KINDS.to_vec(),
                batched: true,
                room: (1, 2),
            },
            // SQLite has one writer and 8 pooled connections: more than 4
            // jobs at once would only queue for the lock while holding
            // connections the API needs.
            Lane {
                name: "work",
                kinds: work_kinds,
                batched: false,
                room: (4, self.config.batch.max(1) as usize),
            },
        ];
        let mut running = JoinSet::new();
        for lane in lanes {
            running.spawn(self.clone().run_lane(lane, shutdown.clone()));
        }
        // Each lane returns once `shutdown` turns true and its jobs finished.
        while running.join_next().await.is_some() {}
    }

    /// One lane's loop: keeps up to its share of jobs running, claiming
    /// more whenever one finishes or jobs are committed. Running jobs
    /// finish before it returns.
    async fn run_lane(
        self: Arc<Self>,
        lane: Lane,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let store = self.journeys.pipeline.store.clone();
        let mut wake = store.jobs_wake().subscribe();
        let room = match store.dialect() {
            Dialect::Sqlite => lane.room.0,
            Dialect::Postgres => lane.room.1,
        };
        let mut running: JoinSet<()> = JoinSet::new();
        while !*shutdown.borrow() {
            let free = room.saturating_sub(running.len());
            // Seen: a wake while the lane is full is served by the claim
            // that follows a finished job.
            let seen = wake.borrow_and_update().seen_by(&lane.kinds);
            let mut more_due = false;
            if free > 0 {
                let now = self.journeys.pipeline.clock.now();
                let limit = if lane.batched {
                    self.config.step_batch.max(1)
                } else {
                    u32::try_from(free)
                        .unwrap_or(u32::MAX)
                        .min(self.config.batch)
                };
                match store
                    .claim_jobs_of(
                        KindFilter::Only(&lane.kinds),
                        &self.worker,
                        now,
                        self.config.lease_ms,
                        limit,
                    )
                    .await
                {
                    // Nothing due: no task to wait for. A task that ends at
                    // once would wake this loop to claim again at once,
                    // polling the database as fast as it answers.
                    Ok(jobs) if jobs.is_empty() => {
                        self.count_claim(&lane, false);
                    }
                    Ok(jobs) => {
                        self.count_claim(&lane, true);
                        more_due = jobs.len() == limit as usize;
                        if lane.batched {
                            // The kinds of one claim run one after another.
                            let this = self.clone();
                            let span = tracing::debug_span!("lane", lane = lane.name);
                            running.spawn(
                                async move {
                                    for work in this.split(jobs) {
                                        this.run_work(work).await;
                                    }
                                }
                                .instrument(span),
                            );
                        } else {
                            for job in jobs {
                                let this = self.clone();
                                let span = tracing::debug_span!("lane", lane = lane.name);
                                running.spawn(
                                    async move { this.run_work(vec![job]).await }.instrument(span),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(lane = lane.name, error = %e, "claiming jobs failed");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                }
            }
            // A full claim: more may be due at once.
            if more_due && running.len() < room {
                continue;
            }
            let idle = tokio::time::sleep(self.config.idle);
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    changed = wake.changed() => {
                        // Jobs of other lanes' kinds only: wait on.
                        if changed.is_ok() && wake.borrow_and_update().seen_by(&lane.kinds) == seen {
                            continue;
                        }
                    }
                    _ = &mut idle => {}
                    _ = shutdown.changed() => {}
                }
                break;
            }
        }
        while running.join_next().await.is_some() {}
    }
}

impl Scheduler {
    fn count_claim(&self, lane: &Lane, found: bool) {
        self.claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = if found { "jobs" } else { "none" };
        metrics::counter!("nachfass_job_claims_total", "lane" => lane.name, "found" => found)
            .increment(1);
    }
}

/// The job kinds of the deliveries lane.
const DELIVERY_KINDS: &[&str] = &[DeliverMessage::KIND];

/// The job kinds of the steps lane, run in batches.
const STEP_KINDS: &[&str] = &[RouteEvent::KIND, AdvanceRun::KIND, TimeoutRun::KIND];

/// Every kind with a lane of its own.
const LANED_KINDS: &[&str] = &[
    DeliverMessage::KIND,
    RouteEvent::KIND,
    AdvanceRun::KIND,
    TimeoutRun::KIND,
];

/// A part of the queue run apart from the rest.
struct Lane {
    name: &'static str,
    /// The kinds it claims.
    kinds: Vec<&'static str>,
    /// Claims many jobs and runs each kind's as one batch.
    batched: bool,
    /// Jobs (or batches) running at once, on SQLite and on PostgreSQL.
    room: (usize, usize),
}

/// Wakes this node's lanes on every `NOTIFY nachfass_jobs` (a trigger
/// sends one when jobs are committed on any node), and after a lost
/// connection too, since notices sent meanwhile are gone.
async fn listen_for_jobs(
    url: String,
    wake: crate::store::jobs::JobsWake,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for jobs; polling only");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        if let Err(e) = listener.listen("nachfass_jobs").await {
            tracing::warn!(error = %e, "LISTEN nachfass_jobs failed; polling only");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // From here this node's own commits come back as notices too.
        wake.set_listening(true);
        wake.wake_all();
        loop {
            tokio::select! {
                notice = listener.recv() => match notice {
                    // The kinds the commit inserted, comma-separated; none
                    // from a node whose trigger predates them.
                    Ok(notice) if !notice.payload().is_empty() => {
                        wake.wake_kinds(notice.payload().split(','));
                    }
                    Ok(_) => wake.wake_all(),
                    Err(e) => {
                        tracing::warn!(error = %e, "job listener lost its connection");
                        wake.set_listening(false);
                        wake.wake_all();
                        break;
                    }
                },
                _ = shutdown.changed() => {
                    wake.set_listening(false);
                    return;
                }
            }
        }
    }
}
