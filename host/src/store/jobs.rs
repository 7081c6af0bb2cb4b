//! The durable job queue: a job is a row with a kind, arguments (JSON), a
//! due time, a lease, an attempt count and a unique key. Claiming leases a
//! batch of due jobs to one worker (PostgreSQL: `FOR UPDATE SKIP LOCKED`,
//! so nodes never wait on each other); a lease that runs out is claimed
//! again. A finished job is deleted in the transaction that did its work.
//!
//! A job kind is a [`JobArgs`] type (its arguments, key and attempt limit)
//! and a handler registered for it in a [`JobRegistry`], as River and Oban
//! have workers: adding a kind touches its own module and one
//! registration, nothing else.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use super::bulk::{Col, Keep, Kept, Param, Write, json_rows, to_json};
use super::{Dialect, Store, StoreError, new_id};

/// Attempts before a job that keeps failing is marked failed, unless its
/// kind says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 12;

/// Delay before attempt `attempts + 1`: 10 s doubling up to an hour, with
/// ±20 % jitter drawn from `seed`, so retries of many jobs spread out.
pub fn backoff(attempts: i64, seed: &str) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let base = 10_000_i64.saturating_mul(1 << exponent).min(3_600_000);
    let digest = Sha256::digest(format!("{seed}\n{attempts}"));
    let spread = i64::from(u16::from_be_bytes([digest[0], digest[1]])) % 401 - 200;
    base + base * spread / 1000
}

/// The arguments of one kind of job, stored as the row's JSON payload.
pub trait JobArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The `kind` column; never change it for a kind that may be queued.
    const KIND: &'static str;
    /// Attempts before the job is marked failed.
    const MAX_ATTEMPTS: i64 = DEFAULT_MAX_ATTEMPTS;
    /// One job per key: enqueueing a second with the same key does nothing.
    fn unique_key(&self) -> String;
}

/// What became of a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Its work committed, and the job with it.
    Done,
    /// Try again after `after_ms` (a transient failure).
    Retry { after_ms: i64, error: String },
    /// Out of attempts or unrecoverable; recorded.
    Failed { error: String },
    /// Not run, and not counted as an attempt: due again at `until` (a
    /// delivery held back by its binding's rate limit).
    Defer { until: i64 },
}

/// A job leased to this worker.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub due_at: i64,
    /// Including this one.
    pub attempts: i64,
    /// The claim's lease token: the worker's name and the claim's number
    /// in this process (`node-…/42`), matched by every write that needs
    /// the lease.
    pub leased_by: String,
    /// How long a lease lasts; long work extends it by this much.
    pub lease_ms: i64,
    /// Until when this worker knows the lease is its own.
    pub lease: LeaseHold,
}

/// The end of a claimed job's lease as far as its worker knows: set by
/// the claim, moved on by every extension that reached the database.
/// Work that cannot be taken back (a message handed to its provider)
/// starts only while the lease has time to spare: a worker whose
/// extensions stall (a starved process, a slow or unreachable database)
/// stops starting such work before its lease can run out under it and
/// another node runs the same job.
#[derive(Clone, Debug)]
pub struct LeaseHold(Arc<AtomicI64>);

impl LeaseHold {
    pub fn new(until: i64) -> LeaseHold {
        LeaseHold(Arc::new(AtomicI64::new(until)))
    }

    pub fn until(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// The database holds the lease until `until` (never moves it back).
    pub fn confirm(&self, until: i64) {
        self.0.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether at least half of a `lease_ms` lease is left at `now`. The
    /// scheduler extends leases every third of their length, so a worker
    /// whose extensions arrive keeps more than that; less means they are
    /// a sixth of a lease late or more (10 s of the default minute).
    pub fn has_time_to_spare(&self, now: i64, lease_ms: i64) -> bool {
        self.until() - now >= lease_ms / 2
    }
}

impl ClaimedJob {
    /// The job's arguments.
    pub fn args<J: JobArgs>(&self) -> Result<J, StoreError> {
        serde_json::from_str(&self.payload).map_err(|e| {
            StoreError::Invalid(format!(
                "job {} ({}) has a bad payload: {e}",
                self.id, self.kind
            ))
        })
    }
}

/// How many jobs wait, for the API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueueCounts {
    pub due: i64,
    pub scheduled: i64,
    pub leased: i64,
    pub failed: i64,
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<JobOutcome, StoreError>> + Send>>;
type BatchFuture = Pin<Box<dyn Future<Output = Vec<Result<JobOutcome, StoreError>>> + Send>>;

/// How one kind of job runs, with `C` the context every handler gets (the
/// journeys engine, for the server's scheduler).
struct Handler<C> {
    max_attempts: i64,
    run: Runner<C>,
}

enum Runner<C> {
    /// One job at a time, each in its own transaction.
    Single(Box<dyn Fn(Arc<C>, ClaimedJob) -> HandlerFuture + Send + Sync>),
    /// Many jobs of the kind at once (one transaction for all, say): the
    /// handler answers one outcome per job, in order.
    Batch(Box<dyn Fn(Arc<C>, Vec<ClaimedJob>) -> BatchFuture + Send + Sync>),
}

/// The job kinds a worker runs. A running server's lanes claim only these
/// kinds, so a kind without a handler here waits for a node that has one
/// (a rolling upgrade); a one-off run of the queue (`tick`) claims any
/// kind and gives such a job back, until its attempts run out.
pub struct JobRegistry<C> {
    handlers: HashMap<&'static str, Handler<C>>,
}

impl<C> Default for JobRegistry<C> {
    fn default() -> Self {
        JobRegistry {
            handlers: HashMap::new(),
        }
    }
}

impl<C: Send + Sync + 'static> JobRegistry<C> {
    /// Runs jobs of kind `J::KIND` with `handler`; the last registration of
    /// a kind wins.
    pub fn register<J, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        J: JobArgs,
        F: Fn(Arc<C>, ClaimedJob, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<JobOutcome, StoreError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run = move |context: Arc<C>, job: ClaimedJob| -> HandlerFuture {
            let handler = handler.clone();
            Box::pin(async move {
                let args = job.args::<J>()?;
                handler(context, job, args).await
            })
        };
        self.handlers.insert(
            J::KIND,
            Handler {
                max_attempts: J::MAX_ATTEMPTS,
                run: Runner::Single(Box::new(run)),
            },
        );
        self
    }

    /// Runs jobs of kind `J::KIND` many at a time with `handler`, which
    /// answers one outcome per job, in the order given. A job whose
    /// arguments do not parse fails alone; the rest still run.
    pub fn register_batch<J, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        J: JobArgs,
        F: Fn(Arc<C>, Vec<(ClaimedJob, J)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<JobOutcome, StoreError>>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run = move |context: Arc<C>, jobs: Vec<ClaimedJob>| -> BatchFuture {
            let handler = handler.clone();
            Box::pin(async move {
                let mut outcomes: Vec<Option<Result<JobOutcome, StoreError>>> =
                    Vec::with_capacity(jobs.len());
                let mut parsed = Vec::with_capacity(jobs.len());
                for job in jobs {
                    match job.args::<J>() {
                        Ok(args) => {
                            outcomes.push(None);
                            parsed.push((job, args));
                        }
                        Err(e) => outcomes.push(Some(Err(e))),
                    }
                }
                let mut ran = handler(context, parsed).await.into_iter();
                outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Some(bad) => bad,
                        None => ran.next().unwrap_or_else(|| {
                            Err(StoreError::Invalid(
                                "a batch handler answered fewer outcomes than jobs".into(),
                            ))
                        }),
                    })
                    .collect()
            })
        };
        self.handlers.insert(
            J::KIND,
            Handler {
                max_attempts: J::MAX_ATTEMPTS,
                run: Runner::Batch(Box::new(run)),
            },
        );
        self
    }

    /// Whether jobs of `kind` run many at a time ([`Self::run_batch`]).
    pub fn runs_in_batches(&self, kind: &str) -> bool {
        matches!(
            self.handlers.get(kind).map(|h| &h.run),
            Some(Runner::Batch(_))
        )
    }

    /// The kinds this registry runs, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Attempts before a job of `kind` is marked failed.
    pub fn max_attempts(&self, kind: &str) -> i64 {
        self.handlers
            .get(kind)
            .map_or(DEFAULT_MAX_ATTEMPTS, |h| h.max_attempts)
    }

    /// Runs `job` with its kind's handler (a batch of one for a kind run
    /// in batches).
    pub async fn run(&self, context: Arc<C>, job: ClaimedJob) -> Result<JobOutcome, StoreError> {
        match self.handlers.get(job.kind.as_str()).map(|h| &h.run) {
            Some(Runner::Single(run)) => run(context, job).await,
            Some(Runner::Batch(_)) => {
                let mut outcomes = self.run_batch(context, vec![job]).await;
                outcomes.pop().unwrap_or_else(|| {
                    Err(StoreError::Invalid("a batch of one gave no outcome".into()))
                })
            }
            None => Err(unknown_kind(&job.kind)),
        }
    }

    /// Runs jobs of one kind together: one outcome per job, in order.
    /// Jobs of a kind not run in batches run one after the other.
    pub async fn run_batch(
        &self,
        context: Arc<C>,
        jobs: Vec<ClaimedJob>,
    ) -> Vec<Result<JobOutcome, StoreError>> {
        let Some(kind) = jobs.first().map(|j| j.kind.clone()) else {
            return Vec::new();
        };
        match self.handlers.get(kind.as_str()).map(|h| &h.run) {
            Some(Runner::Batch(run)) if jobs.iter().all(|j| j.kind == kind) => {
                run(context, jobs).await
            }
            Some(_) => {
                let mut outcomes = Vec::with_capacity(jobs.len());
                for job in jobs {
                    outcomes.push(Box::pin(self.run(context.clone(), job)).await);
                }
                outcomes
            }
            None => jobs.iter().map(|_| Err(unknown_kind(&kind))).collect(),
        }
    }
}

fn unknown_kind(kind: &str) -> StoreError {
    StoreError::Invalid(format!("no handler for job kind `{kind}` on this node"))
}

/// Adds a job unless one with the same key exists. Returns whether it was
/// added.
pub async fn enqueue_in<J: JobArgs>(
    conn: &mut AnyConnection,
    job: &J,
    due_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let payload = serde_json::to_string(job)
        .map_err(|e| StoreError::Invalid(format!("job {} cannot be stored: {e}", J::KIND)))?;
    enqueue_row_in(conn, J::KIND, &job.unique_key(), &payload, due_at, now).await
}

/// A job to add unless one with its key exists, as stored.
pub struct NewJob {
    pub kind: &'static str,
    pub unique_key: String,
    /// The job's arguments as JSON.
    pub payload: String,
    pub due_at: i64,
}

impl NewJob {
    pub fn of<J: JobArgs>(job: &J, due_at: i64) -> Result<NewJob, StoreError> {
        Ok(NewJob {
            kind: J::KIND,
            unique_key: job.unique_key(),
            payload: serde_json::to_string(job).map_err(|e| {
                StoreError::Invalid(format!("job {} cannot be stored: {e}", J::KIND))
            })?,
            due_at,
        })
    }
}

/// Adds many jobs of one kind in one statement (the batched ingest queues
/// a route job per event), each unless one with its key exists. Returns
/// how many were added.
pub async fn enqueue_many_in<J: JobArgs>(
    conn: &mut AnyConnection,
    dialect: Dialect,
    jobs: &[J],
    due_at: i64,
    now: i64,
) -> Result<u64, StoreError> {
    let rows = jobs
        .iter()
        .map(|job| NewJob::of(job, due_at))
        .collect::<Result<Vec<_>, StoreError>>()?;
    enqueue_rows_in(conn, dialect, &rows, now).await
}

/// Adds jobs of any kinds and due times in one statement, each unless one
/// with its key exists. Returns how many were added.
pub async fn enqueue_rows_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    jobs: &[NewJob],
    now: i64,
) -> Result<u64, StoreError> {
    match jobs_write(dialect, jobs, now)? {
        Some(write) => write.execute(conn).await,
        None => Ok(0),
    }
}

/// The insert of [`enqueue_rows_in`] as a write, if there are jobs.
pub(super) fn jobs_write(
    dialect: Dialect,
    jobs: &[NewJob],
    now: i64,
) -> Result<Option<Write>, StoreError> {
    if jobs.is_empty() {
        return Ok(None);
    }
    let rows: Vec<JobRow> = jobs.iter().map(JobRow::of).collect();
    Ok(Some(Write {
        sql: jobs_insert(dialect, None),
        params: vec![Param::Text(to_json(&rows)?), Param::Int(now)],
    }))
}

/// The insert of those of `jobs` that `keep` keeps.
pub(super) fn kept_jobs_write(
    dialect: Dialect,
    jobs: &[Kept<'_, &NewJob>],
    keep: Keep<'_>,
    now: i64,
) -> Result<Write, StoreError> {
    let rows: Vec<Kept<JobRow>> = jobs
        .iter()
        .map(|job| Kept {
            row: JobRow::of(job.row),
            keep: job.keep,
        })
        .collect();
    Ok(Write {
        sql: jobs_insert(dialect, Some(keep)),
        params: vec![Param::Text(to_json(&rows)?), Param::Int(now)],
    })
}

/// A new job as a row to insert, with its id.
#[derive(Serialize)]
struct JobRow<'a> {
    id: String,
    kind: &'a str,
    unique_key: &'a str,
    payload: &'a str,
    due_at: i64,
}

impl<'a> JobRow<'a> {
    fn of(job: &'a NewJob) -> Self {
        JobRow {
            id: new_id("j"),
            kind: job.kind,
            unique_key: &job.unique_key,
            payload: &job.payload,
            due_at: job.due_at,
        }
    }
}

/// The insert of the job rows bound at `$1`, created at `$2`; a job whose
/// unique key is queued already is not added again.
fn jobs_insert(dialect: Dialect, keep: Option<Keep<'_>>) -> String {
    let from = json_rows(
        dialect,
        1,
        &Keep::columns(
            keep,
            &[
                ("id", Col::Text),
                ("kind", Col::Text),
                ("unique_key", Col::Text),
                ("payload", Col::Text),
                ("due_at", Col::Int),
            ],
        ),
    );
    // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    format!(
        "INSERT INTO jobs (id, kind, unique_key, payload, due_at, created_at) \
         SELECT j.id, j.kind, j.unique_key, j.payload, j.due_at, $2 FROM {from} WHERE true{} \
         ON CONFLICT DO NOTHING",
        Keep::and(keep)
    )
}

/// Adds a job row as it is (for kinds whose arguments are built here).
pub(super) async fn enqueue_row_in(
    conn: &mut AnyConnection,
    kind: &str,
    unique_key: &str,
    payload: &str,
    due_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO jobs (id, kind, unique_key, payload, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT DO NOTHING",
    )
    .bind(new_id("j"))
    .bind(kind.to_owned())
    .bind(unique_key.to_owned())
    .bind(payload.to_owned())
    .bind(due_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Wakes this node's scheduler lanes when jobs are committed: counters
/// every lane watches (one for all, one per kind named), so a wake that
/// comes while a lane is busy is not lost, and a lane looks only when
/// jobs of its kinds may have come.
///
/// On PostgreSQL, once the scheduler listens (`LISTEN nachfass_jobs`; a
/// trigger notifies with the kinds each commit inserted), this node's
/// own commits come back that way too, with their kinds: [`notify`]
/// does nothing then, so a commit wakes each lane once, not twice.
///
/// [`notify`]: JobsWake::notify
#[derive(Clone, Debug, Default)]
pub struct JobsWake(Arc<WakeShared>);

#[derive(Debug)]
struct WakeShared {
    woken: tokio::sync::watch::Sender<Woken>,
    /// The scheduler hears every commit through PostgreSQL.
    listening: std::sync::atomic::AtomicBool,
}

impl Default for WakeShared {
    fn default() -> Self {
        WakeShared {
            woken: tokio::sync::watch::Sender::new(Woken::default()),
            listening: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How often jobs were committed: of any kind, and of each kind named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    any: u64,
    kinds: BTreeMap<String, u64>,
}

impl Woken {
    /// What a lane of `kinds` remembers of this state.
    pub fn seen_by(&self, kinds: &[&str]) -> (u64, Vec<u64>) {
        (
            self.any,
            kinds
                .iter()
                .map(|kind| self.kinds.get(*kind).copied().unwrap_or(0))
                .collect(),
        )
    }
}

impl JobsWake {
    /// This node committed jobs: every lane looks at once (unless the
    /// commit's notice from PostgreSQL will wake them, see above).
    pub fn notify(&self) {
        if !self.0.listening.load(std::sync::atomic::Ordering::Acquire) {
            self.wake_all();
        }
    }

    /// Jobs of unknown kinds were committed (or notices may have been
    /// missed): every lane looks.
    pub fn wake_all(&self) {
        self.0.woken.send_modify(|w| w.any = w.any.wrapping_add(1));
    }

    /// Jobs of `kinds` were committed: the lanes that claim them look.
    pub fn wake_kinds<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        self.0.woken.send_modify(|w| {
            for kind in kinds {
                let n = w.kinds.entry(kind.to_owned()).or_default();
                *n = n.wrapping_add(1);
            }
        });
    }

    /// Whether every commit is heard through PostgreSQL (set by the
    /// scheduler's listener while it listens).
    pub fn set_listening(&self, listening: bool) {
        self.0
            .listening
            .store(listening, std::sync::atomic::Ordering::Release);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Woken> {
        self.0.woken.subscribe()
    }
}

/// Which kinds a claim takes: a scheduler lane runs some kinds apart
/// from the rest, so a backlog of one never starves the other.
///
/// Prefer `Only`: it reads the `(kind, due_at)` index, where `Except` walks
/// every due job of the other kinds (at a million due steps, 200 ms a claim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindFilter<'a> {
    Any,
    Only(&'a [&'a str]),
    Except(&'a [&'a str]),
}

impl<'a> KindFilter<'a> {
    /// The SQL condition on `kind`, with its placeholders numbered from
    /// `first`, and the values to bind.
    fn condition(&self, first: usize) -> (String, &'a [&'a str]) {
        let list = |kinds: &[&str]| super::events::placeholders(first, kinds.len());
        match self {
            KindFilter::Any => (String::new(), &[]),
            KindFilter::Only(kinds) => (format!("AND kind IN ({}) ", list(kinds)), kinds),
            KindFilter::Except(kinds) => (format!("AND kind NOT IN ({}) ", list(kinds)), kinds),
        }
    }

    /// PostgreSQL: the kinds to claim from, as a `FROM` item `k(kind)`,
    /// with the JSON list to bind at `$param` if the item needs one. Each
    /// kind is then read from the `(kind, due_at)` index on its own: one
    /// index ordered by due time alone led the planner, guided by
    /// statistics that a queue outdates within seconds, to walk past every
    /// due job of the other lanes (tens of thousands of deliveries in front
    /// of the due steps, 8 ms a claim). The kinds present are found by a
    /// loose scan of that index, a probe per kind.
    fn postgres_kinds(&self, param: usize) -> (String, Option<String>) {
        let json = |kinds: &[&str]| serde_json::Value::from(kinds.to_vec()).to_string();
        match self {
            KindFilter::Only(kinds) => (
                format!("jsonb_array_elements_text(${param}::jsonb) AS k(kind)"),
                Some(json(kinds)),
            ),
            KindFilter::Any => (format!("({PRESENT_KINDS}) AS k"), None),
            KindFilter::Except(kinds) => (
                format!(
                    "(SELECT kind FROM ({PRESENT_KINDS}) AS present WHERE kind NOT IN \
                     (SELECT jsonb_array_elements_text(${param}::jsonb))) AS k"
                ),
                Some(json(kinds)),
            ),
        }
    }
}

/// PostgreSQL: the kinds of jobs that are not failed, by a loose scan of
/// the `(kind, due_at)` index (one probe per kind instead of a pass over
/// every job).
const PRESENT_KINDS: &str = "WITH RECURSIVE kinds(kind) AS (\
     SELECT MIN(kind) FROM jobs WHERE failed_at IS NULL \
     UNION ALL SELECT (SELECT MIN(kind) FROM jobs WHERE failed_at IS NULL AND kind > kinds.kind) \
     FROM kinds WHERE kinds.kind IS NOT NULL) \
     SELECT kind FROM kinds WHERE kind IS NOT NULL";

/// Applies the profile effects (scores, stages, segments) of stored
/// events that were accepted but not applied: the node that accepted
/// them normally applies them at once and this job then finds nothing to
/// do; after a crash in between, it applies them. Queued with the events,
/// in their transaction, due a little later.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcessEvents {
    pub events: Vec<String>,
}

impl JobArgs for ProcessEvents {
    const KIND: &'static str = "process_events";
    fn unique_key(&self) -> String {
        // The first event's id is unique: it belongs to one batch.
        format!(
            "process:{}",
            self.events.first().map(String::as_str).unwrap_or_default()
        )
    }
}

/// Re-scores a contact and re-evaluates its segments after a change that
/// a journey made to the profile (a `set_attribute` step), in a job of
/// its own queued in the step's transaction.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ProfileChanged {
    pub contact_id: String,
    /// Makes each change its own job (one per step taken).
    pub change: String,
}

impl JobArgs for ProfileChanged {
    const KIND: &'static str = "profile_changed";
    fn unique_key(&self) -> String {
        format!("profile:{}:{}", self.contact_id, self.change)
    }
}

/// Routes a stored event to goals, waits and triggers. An event's route
/// job is queued in the transaction that applies its profile effects (a
/// `score_at_least` trigger sees the score the event produced); a system
/// event's with the event itself. A crash never loses a trigger.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RouteEvent {
    pub event_id: String,
}

impl JobArgs for RouteEvent {
    const KIND: &'static str = "route";
    fn unique_key(&self) -> String {
        format!("route:{}", self.event_id)
    }
}

/// Moves a held job's lease to `until`, in the caller's transaction (a
/// long job records its progress and keeps its lease together). Returns
/// `false` when this worker no longer holds the job.
pub async fn renew_lease_in(
    conn: &mut AnyConnection,
    job: &ClaimedJob,
    until: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE jobs SET lease_until = $1 WHERE id = $2 AND leased_by = $3")
        .bind(until)
        .bind(job.id.clone())
        .bind(job.leased_by.clone())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a finished job, if this worker still holds its lease. Returns
/// whether it did: `false` means the lease ran out and another worker took
/// the job, so the caller's transaction should roll back.
pub async fn finish_in(conn: &mut AnyConnection, job: &ClaimedJob) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM jobs WHERE id = $1 AND leased_by = $2")
        .bind(job.id.clone())
        .bind(job.leased_by.clone())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The removal of those of `jobs` still leased to whoever claimed them,
/// answering their ids (none when `jobs` is empty). Another worker that
/// took a job over holds it now, and its work counts.
pub(super) fn held_removal(
    dialect: Dialect,
    jobs: &[&ClaimedJob],
) -> Result<Option<Write>, StoreError> {
    #[derive(Serialize)]
    struct Held<'a> {
        id: &'a str,
        leased_by: &'a str,
    }
    if jobs.is_empty() {
        return Ok(None);
    }
    let rows: Vec<Held> = jobs
        .iter()
        .map(|job| Held {
            id: &job.id,
            leased_by: &job.leased_by,
        })
        .collect();
    let from = json_rows(dialect, 1, &[("id", Col::Text), ("leased_by", Col::Text)]);
    Ok(Some(Write {
        sql: format!(
            "DELETE FROM jobs WHERE (id, leased_by) IN (SELECT j.id, j.leased_by FROM {from}) \
             RETURNING id"
        ),
        params: vec![Param::Text(to_json(&rows)?)],
    }))
}

impl Store {
    pub async fn enqueue<J: JobArgs>(
        &self,
        job: &J,
        due_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        enqueue_in(&mut conn, job, due_at, now).await
    }

    /// Leases up to `limit` jobs due at `now` for `lease_ms`, oldest first.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.claim_jobs_of(KindFilter::Any, worker, now, lease_ms, limit)
            .await
    }

    /// Leases up to `limit` due jobs of the kinds `filter` lets through.
    pub async fn claim_jobs_of(
        &self,
        filter: KindFilter<'_>,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        if filter == KindFilter::Only(&[]) {
            return Ok(Vec::new());
        }
        // A lease is this claim's, not the worker's: a batch that stalled
        // past its lease, whose jobs the same node then claimed again, must
        // not give back, retry, fail or finish the new claim's jobs (a
        // give-back made a job due again while the new claim delivered
        // it). Every check of a lease matches this token.
        static CLAIMS: AtomicU64 = AtomicU64::new(0);
        let lease_token = format!("{worker}/{}", CLAIMS.fetch_add(1, Ordering::Relaxed));
        // The statement, and the kinds to bind after the four shared values.
        let (sql, kinds) = match self.dialect {
            // One writer at a time: the write transaction is the lock.
            Dialect::Sqlite => {
                let (kinds, kind_values) = filter.condition(5);
                let sql = format!(
                    "UPDATE jobs SET lease_until = $1, leased_by = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM jobs WHERE due_at <= $3 AND failed_at IS NULL \
                     AND (lease_until IS NULL OR lease_until < $3) {kinds}ORDER BY due_at LIMIT $4) \
                     RETURNING id, kind, payload, due_at, attempts"
                );
                (sql, kind_values.iter().map(|k| (*k).to_owned()).collect())
            }
            Dialect::Postgres => {
                let (kinds, list) = filter.postgres_kinds(5);
                let sql = format!(
                    "UPDATE jobs SET lease_until = $1, leased_by = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT due.id FROM {kinds} CROSS JOIN LATERAL \
                     (SELECT id, due_at FROM jobs WHERE jobs.kind = k.kind AND due_at <= $3 \
                     AND failed_at IS NULL AND (lease_until IS NULL OR lease_until < $3) \
                     ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS due \
                     ORDER BY due.due_at LIMIT $4) \
                     RETURNING id, kind, payload, due_at, attempts"
                );
                (sql, list.into_iter().collect::<Vec<String>>())
            }
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(now + lease_ms)
            .bind(lease_token.clone())
            .bind(now)
            .bind(i64::from(limit));
        for kind in kinds {
            query = query.bind(kind);
        }
        let rows = match self.dialect {
            // One statement is atomic on its own: one round trip, where a
            // transaction around it took three (BEGIN and COMMIT), each a
            // wait for the lane on a busy node.
            Dialect::Postgres => query.fetch_all(&self.pool).await?,
            Dialect::Sqlite => {
                let mut tx = self.write_tx().await?;
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
        };
        let mut jobs = rows
            .iter()
            .map(|row| {
                Ok(ClaimedJob {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    payload: row.try_get("payload")?,
                    due_at: row.try_get("due_at")?,
                    attempts: row.try_get("attempts")?,
                    leased_by: lease_token.clone(),
                    lease_ms,
                    lease: LeaseHold::new(now + lease_ms),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Ids are time-ordered: jobs due in the same millisecond (the route
        // jobs of a contact's events stored together) run in the order they
        // were queued.
        jobs.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
        Ok(jobs)
    }

    /// Extends a running job's lease to `until` while this worker holds
    /// it, and moves its [`LeaseHold`] on. Returns `false` when the lease
    /// was lost (another node may run the job now).
    pub async fn extend_lease(&self, job: &ClaimedJob, until: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND leased_by = $3 AND lease_until < $1",
        )
        .bind(until)
        .bind(job.id.clone())
        .bind(job.leased_by.clone())
        .execute(&self.pool)
        .await?;
        // Not moved: either held with a later lease already, or lost.
        if done.rows_affected() == 0 && self.still_held(&[job]).await?.is_empty() {
            return Ok(false);
        }
        job.lease.confirm(until);
        Ok(true)
    }

    /// Extends the leases of running `jobs` (a batch) to `until` in one
    /// statement, and moves the [`LeaseHold`] of each job extended on.
    /// Returns how many this worker no longer holds.
    ///
    /// On PostgreSQL, rows locked by a transaction (the batch's own, which
    /// is finishing those jobs) are skipped rather than waited for: a
    /// heartbeat that waited held the rows it had extended meanwhile, and
    /// a transaction finishing jobs in another order deadlocked with it.
    pub async fn extend_leases(&self, jobs: &[ClaimedJob], until: i64) -> Result<u64, StoreError> {
        let Some(first) = jobs.first() else {
            return Ok(0);
        };
        let held = super::bulk::json_in(self.dialect, "id", 3);
        let sql = match self.dialect {
            Dialect::Sqlite => format!(
                "UPDATE jobs SET lease_until = $1 WHERE leased_by = $2 AND {held} RETURNING id"
            ),
            Dialect::Postgres => format!(
                "UPDATE jobs SET lease_until = $1 WHERE id IN \
                 (SELECT id FROM jobs WHERE leased_by = $2 AND {held} \
                  ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id"
            ),
        };
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let ids = super::bulk::to_json(&ids)?;
        let extended: std::collections::HashSet<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(until)
                .bind(first.leased_by.clone())
                .bind(ids.clone())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        for job in jobs.iter().filter(|job| extended.contains(&job.id)) {
            job.lease.confirm(until);
        }
        if extended.len() == jobs.len() {
            return Ok(0);
        }
        // Skipped or gone: finished (deleted) is not lost; leased to
        // someone else, or given back, is.
        let sql = format!(
            "SELECT COUNT(*) FROM jobs WHERE (leased_by IS NULL OR leased_by <> $1) AND {}",
            super::bulk::json_in(self.dialect, "id", 2)
        );
        let lost: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(first.leased_by.clone())
            .bind(ids)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(lost).unwrap_or(0))
    }

    /// The ids of those of `jobs` this worker still holds.
    pub async fn still_held(
        &self,
        jobs: &[&ClaimedJob],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let Some(first) = jobs.first() else {
            return Ok(Default::default());
        };
        let sql = format!(
            "SELECT id FROM jobs WHERE leased_by = $1 AND {}",
            super::bulk::json_in(self.dialect, "id", 2)
        );
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let held: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(first.leased_by.clone())
            .bind(super::bulk::to_json(&ids)?)
            .fetch_all(&self.pool)
            .await?;
        Ok(held.into_iter().collect())
    }

    /// Gives a job back to run again at `due_at`, noting why.
    pub async fn retry_job(
        &self,
        job: &ClaimedJob,
        due_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET due_at = $1, lease_until = NULL, leased_by = NULL, last_error = $2 \
             WHERE id = $3 AND leased_by = $4",
        )
        .bind(due_at)
        .bind(error.to_owned())
        .bind(job.id.clone())
        .bind(job.leased_by.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts a job back, due at `due_at`, with the attempt its claim counted
    /// given back: it did not run.
    pub async fn defer_job(&self, job: &ClaimedJob, due_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET due_at = $1, lease_until = NULL, leased_by = NULL, \
             attempts = attempts - 1 WHERE id = $2 AND leased_by = $3",
        )
        .bind(due_at)
        .bind(job.id.clone())
        .bind(job.leased_by.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up on a job: it stays, marked failed, for operators to see.
    pub async fn fail_job(
        &self,
        job: &ClaimedJob,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET failed_at = $1, lease_until = NULL, last_error = $2 \
             WHERE id = $3 AND leased_by = $4",
        )
        .bind(now)
        .bind(error.to_owned())
        .bind(job.id.clone())
        .bind(job.leased_by.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn queue_counts(&self, now: i64) -> Result<QueueCounts, StoreError> {
        let row = sqlx::query(
            "SELECT \
               COUNT(CASE WHEN failed_at IS NULL AND due_at <= $1 AND (lease_until IS NULL OR lease_until < $1) THEN 1 END) AS due, \
               COUNT(CASE WHEN failed_at IS NULL AND due_at > $1 THEN 1 END) AS scheduled, \
               COUNT(CASE WHEN failed_at IS NULL AND lease_until >= $1 THEN 1 END) AS leased, \
               COUNT(CASE WHEN failed_at IS NOT NULL THEN 1 END) AS failed \
             FROM jobs",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueCounts {
            due: row.try_get("due")?,
            scheduled: row.try_get("scheduled")?,
            leased: row.try_get("leased")?,
            failed: row.try_get("failed")?,
        })
    }

    /// When the next job falls due, if any waits.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let sql = match self.dialect {
            Dialect::Sqlite => {
                "SELECT MIN(due_at) AS next FROM jobs WHERE failed_at IS NULL".to_owned()
            }
            // A probe per kind in the `(kind, due_at)` index.
            Dialect::Postgres => format!(
                "SELECT MIN((SELECT MIN(due_at) FROM jobs WHERE jobs.kind = k.kind \
                 AND failed_at IS NULL)) AS next FROM ({PRESENT_KINDS}) AS k"
            ),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("next")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        for attempt in 1..6 {
            let base = 10_000 * (1 << (attempt - 1));
            let delay = backoff(attempt, "job");
            assert!(
                delay >= base * 8 / 10 && delay <= base * 12 / 10,
                "{attempt}: {delay}"
            );
        }
        assert!(backoff(40, "job") <= 3_600_000 * 12 / 10);
        let spread: std::collections::HashSet<i64> =
            (0..50).map(|i| backoff(3, &format!("job{i}"))).collect();
        assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
    }

    #[test]
    fn a_lane_sees_wakes_of_its_kinds_and_of_all() {
        let wake = JobsWake::default();
        let lane = ["deliver"];
        let seen = |wake: &JobsWake| wake.subscribe().borrow().seen_by(&lane);
        let start = seen(&wake);
        wake.wake_kinds(["advance", "route"]);
        assert_eq!(seen(&wake), start, "other lanes' kinds");
        wake.wake_kinds(["route", "deliver"]);
        let after_kind = seen(&wake);
        assert_ne!(after_kind, start);
        wake.wake_all();
        assert_ne!(seen(&wake), after_kind);
        // Listening, this node's commits come back as notices instead.
        let before = seen(&wake);
        wake.set_listening(true);
        wake.notify();
        assert_eq!(seen(&wake), before);
        wake.set_listening(false);
        wake.notify();
        assert_ne!(seen(&wake), before);
    }
}
