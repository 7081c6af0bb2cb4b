//! The store: contacts and their touchpoints in SQLite (embedded default,
//! a file in WAL mode) or PostgreSQL (several nodes), through one sqlx
//! `Any` pool. Each dialect has its own migrations, run at connect.
//!
//! Queries use `$1, $2, …` placeholders, numbered in order of first
//! appearance: PostgreSQL reads them natively and SQLite as named
//! parameters bound by position.

mod api_keys;
pub mod backtests;
pub mod bindings;
mod bulk;
pub mod consents;
pub mod contacts;
pub mod delivery_writes;
mod event_group;
mod events;
pub mod jobs;
pub mod journeys;
mod merge;
pub mod outbox;
pub mod plugins;
mod profile_batch;
pub mod rates;
pub mod runs;
mod segments;
mod shadow_queue;
pub mod shadows;
mod stats;
pub mod step_writes;
pub mod suppressions;
pub mod tasks;
pub mod timeline;
pub mod tracking;
mod trust;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

pub use api_keys::{ApiKey, Scope};
pub use backtests::{Backtest, BacktestRow};
pub use bindings::{BindingDef, BindingKind, ScoreEntry};
pub use consents::Consent;
pub use contacts::{ContactInput, ContactRecord, Identity};
pub use event_group::{Applying, PreparedGroup, WrittenGroup};
pub use events::{EventInput, Ingested};
pub use jobs::{ClaimedJob, QueueCounts};
pub use journeys::JourneyVersion;
pub use merge::{ContactFilter, MergeReport};
pub use outbox::OutboxEntry;
pub use plugins::{PluginState, Saved, StoredVersion};
pub use profile_batch::{Applied, ProfileEffect};
pub use rates::Rate;
pub use runs::Run;
pub use segments::{PageChanges, TaskStep};
pub use shadow_queue::ShadowQueueLimits;
pub use shadows::{ShadowResult, ShadowRow};
pub use stats::MessageCounts;
pub use tasks::TaskProgress;
pub use trust::TrustedKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("unsupported database URL `{0}`: use sqlite://path or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection pool with the schema migrated. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Set once this node knows a journey exists: then every new event also
    /// queues a job that routes it to journeys, in the event's own
    /// transaction (`routes_events_in`).
    routing: Arc<AtomicBool>,
    /// Wakes this node's scheduler when jobs were committed here.
    jobs_wake: jobs::JobsWake,
    /// Where the database is, for listeners that need their own
    /// connection (PostgreSQL `LISTEN`).
    url: Arc<str>,
    /// Shadow results on their way to the database (`shadow_queue.rs`).
    shadow_queue: Arc<shadow_queue::ShadowQueue>,
    /// API keys looked up lately.
    api_keys: Arc<api_keys::KeyCache>,
    /// SQLite: the one connection write transactions take turns on. The
    /// database allows one writer anyway; waiting for this connection is
    /// first come, first served, where waiting for the lock (SQLite's busy
    /// handler) is a lottery with sleeps of up to 100 ms between tries, so a
    /// busy writer (a batch of steps) could starve another (deliveries).
    writer: Option<AnyPool>,
    /// What signs tracking links and hashes erased addresses (see
    /// `tracking.rs`): the database's, read once at connect.
    signing_secret: Arc<[u8]>,
}

/// Settings every SQLite connection gets: WAL lets readers run beside the
/// one writer; the busy timeout queues writers (autocommit statements, other
/// processes) instead of failing, long enough for a batch of steps or a
/// group of events ahead of them. The WAL is copied back into the database
/// every 8,000 pages (32 MiB) rather than SQLite's 1,000: the hot pages of
/// jobs and outbox were copied back again and again, and under a backlog of
/// sends that cost a twelfth of the time. Statement journals (the undo
/// of one statement of a batch inside its transaction) stay in memory: in
/// a temporary file each batch write made a round of `pwrite`s through ext4.
async fn prepare_connection(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
) -> Result<(), sqlx::Error> {
    if dialect == Dialect::Sqlite {
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA foreign_keys = ON").await?;
        conn.execute("PRAGMA busy_timeout = 30000").await?;
        conn.execute("PRAGMA synchronous = NORMAL").await?;
        conn.execute("PRAGMA wal_autocheckpoint = 8000").await?;
        conn.execute("PRAGMA temp_store = MEMORY").await?;
    } else {
        // sqlx prepares every statement once per connection, and after five
        // runs PostgreSQL keeps one generic plan for it, costed with the
        // table sizes of that moment. A queue, an outbox or a new
        // database's events outgrow those within seconds, and autovacuum's
        // next ANALYZE (which would replan) is up to a minute away: the
        // ingest bench's reads went through whole tables, 2-6 ms each,
        // where their indexes answer in 0.1 ms. Planned for each run, a
        // statement sees the tables as they are; planning our statements
        // costs far less than one such scan. (It also replans the foreign-key
        // checks PostgreSQL runs per inserted row: a 1M rebuild's first
        // build writes at 27k contacts/s with it, 37-42k without. Unnamed
        // statements, which sqlx sends without a statement cache, keep
        // those checks cached but cost a round trip each: 200k sends in
        // 68.9 s against 83.5 s this way, but the million in 516 s against
        // 457 s, and single-event ingest at 996/s against 1,300-1,390/s.)
        // Transactions that insert many rows after their reads switch back
        // for the rest of the transaction: `cached_plans_from_here_in`.
        // Measured again in the eighteenth session, alternating release
        // builds: with `auto` for every statement, 100k sends took 13-15%
        // less busy CPU, but ingest on PostgreSQL fell from 1,115 and
        // 1,457 to 702 and 996 single events/s, and from 6,319 and 6,546
        // to 4,327 and 4,954 in batches.
        conn.execute("SET plan_cache_mode = force_custom_plan")
            .await?;
    }
    Ok(())
}

/// How long a pooled connection may sit unused and still be handed out
/// without a ping first.
const TRUSTED_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a pooled connection may be handed out: one that sat unused for
/// a while is pinged first (the server may have restarted or dropped it
/// meanwhile); one in use a moment ago is trusted. A ping before every
/// use cost one round trip each time, some 0.3 ms on a busy node, once
/// per ingest group.
async fn ping_if_idle(
    conn: &mut sqlx::AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for > TRUSTED_IDLE {
        sqlx::Connection::ping(conn).await?;
    }
    Ok(true)
}

/// From here to the end of the transaction on `conn`, PostgreSQL may keep
/// cached plans again. For a transaction's inserts, after its reads and
/// its keyed updates and deletes: every row they insert is checked
/// against its parent table by a foreign-key query, which
/// `force_custom_plan` would plan afresh for each row, at more than the
/// row's own cost. Updates and deletes stay before it: a cached plan for
/// one, costed while its table was small, reads the whole table ever
/// after (a new database's first minutes). Nothing to do on SQLite.
pub(crate) async fn cached_plans_from_here_in(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
) -> Result<(), StoreError> {
    if dialect == Dialect::Postgres {
        conn.execute("SET LOCAL plan_cache_mode = auto").await?;
    }
    Ok(())
}

/// The same for one PostgreSQL statement run outside a transaction: a
/// `WITH` item, to be read by the statement's last part, that lets the
/// foreign-key checks of the rows it inserts keep cached plans. The
/// setting lasts until the end of the statement's own transaction, that
/// is, of the statement; the checks run at its end, after the item was
/// read, and the statement itself was planned for its run before. Without
/// it a delivery group planned one check per event it wrote: 10 of the
/// 32 s PostgreSQL spent on those statements in 100k sends.
pub(crate) const CACHED_CHECKS_ITEM: &str =
    "SELECT set_config('plan_cache_mode', 'auto', true) AS mode";

impl Store {
    /// Connects to `sqlite://path` (created if missing) or `postgres://…`
    /// and runs the migrations of that dialect.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let listen_url: Arc<str> = Arc::from(url.as_str());
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
            .after_connect(move |conn, _| Box::pin(prepare_connection(conn, dialect)))
            .connect_with(options.clone())
            .await?;
        match dialect {
            Dialect::Sqlite => {
                // sqlx's migration lock is PostgreSQL's advisory lock and
                // does nothing on SQLite: two processes starting on a new
                // file (a `serve` and a CLI command) both read "nothing
                // applied", and the second then fails creating a table
                // the first made. The whole run holds SQLite's write lock
                // instead (each migration a savepoint inside it): the
                // second waits for the busy timeout's length at most, then
                // finds every migration applied.
                let mut conn = pool.acquire().await?;
                let mut run = conn.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::migrate!("migrations/sqlite").run(&mut *run).await?;
                run.commit().await?;
            }
            Dialect::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let writer = match dialect {
            Dialect::Sqlite => Some(
                AnyPoolOptions::new()
                    .max_connections(1)
                    // As long as the busy timeout: a writer waits this long.
                    .acquire_timeout(std::time::Duration::from_secs(30))
                    .after_connect(move |conn, _| Box::pin(prepare_connection(conn, dialect)))
                    .connect_with(options)
                    .await?,
            ),
            Dialect::Postgres => None,
        };
        // Made (if new) here, in a statement of its own, so that it is
        // committed before anything signs or hashes with it: made inside a
        // batch that rolled back, it would vanish while this node kept it.
        let signing_secret: Arc<[u8]> = {
            let mut conn = pool.acquire().await?;
            tracking::signing_secret_in(&mut conn).await?.into()
        };
        let store = Store {
            pool,
            dialect,
            routing: Arc::default(),
            jobs_wake: jobs::JobsWake::default(),
            url: listen_url,
            shadow_queue: Arc::new(shadow_queue::ShadowQueue::new(
                shadow_queue::ShadowQueueLimits::default(),
            )),
            api_keys: Arc::default(),
            writer,
            signing_secret,
        };
        Ok(store)
    }

    /// Whether new events are routed to journeys (queue a route job): once
    /// any journey was saved, on any node. Journeys are never deleted,
    /// and a stopped one's running runs still wait for goals, events and
    /// stop events, so once true it stays true and is kept here. Until
    /// then it is read in `conn`, the events' own transaction, so no node
    /// routes late: the first events stored after another node saved the
    /// first journey are routed, scheduler on this node or not.
    pub(crate) async fn routes_events_in(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<bool, StoreError> {
        if self.routing.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let any = journeys::any_journey_in(conn).await?;
        if any {
            self.routing.store(true, Ordering::Relaxed);
        }
        Ok(any)
    }

    /// A transaction that will write, on SQLite on the writer connection
    /// (in turn with the node's other write transactions). SQLite takes
    /// the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and
    /// upgrades later fails with "database is locked" under concurrent
    /// writers instead of waiting for the busy timeout.
    pub(crate) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match (&self.writer, self.dialect) {
            (Some(writer), _) => writer.begin_with("BEGIN IMMEDIATE").await,
            (None, Dialect::Sqlite) => self.pool.begin_with("BEGIN IMMEDIATE").await,
            (None, Dialect::Postgres) => self.pool.begin().await,
        }
    }

    /// How many of this build's migrations the database lacks (0 when
    /// ready); an error when the database does not answer.
    pub async fn migrations_pending(&self) -> Result<usize, StoreError> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await?;
        Ok(migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    /// The database URL this store connected to (for a `LISTEN`
    /// connection of its own).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// This node's signal that jobs were committed.
    pub fn jobs_wake(&self) -> &jobs::JobsWake {
        &self.jobs_wake
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A new time-ordered identifier with a readable prefix (`c_…`, `e_…`).
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A fresh timeline event id.
pub fn new_event_id() -> String {
    new_id("e")
}

/// Whether a database error is a unique-constraint violation.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.is_unique_violation() || e.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}
