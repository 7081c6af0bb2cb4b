//! Journey runs: a contact's way through one journey version. Functions
//! ending in `_in` run inside the caller's transaction, so a step's state
//! change, its outbox row and its timeline events commit together.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::{AnyConnection, FromRow, Row};

use super::{Dialect, Store, StoreError, new_id};
pub use crate::model::status::{Purpose, RunStatus};

/// A contact's way through one journey version.
#[derive(Clone, Debug, PartialEq, Serialize, FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: String,
    pub journey: String,
    pub version: i64,
    pub contact_id: String,
    pub purpose: Purpose,
    pub status: RunStatus,
    /// The step to run next (or waited in); none once finished.
    pub step: Option<String>,
    pub seq: i64,
    pub waiting_for: Option<String>,
    pub trigger_event: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_reason: Option<String>,
}

/// Column lists as macros, so queries stay `&'static str` (sqlx refuses
/// strings built at run time).
macro_rules! run_columns {
    () => {
        "id, journey, version, contact_id, purpose, status, step, seq, waiting_for, trigger_event, started_at, ended_at, exit_reason"
    };
}

/// A run, locked for this transaction on PostgreSQL.
pub async fn run_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
) -> Result<Option<Run>, StoreError> {
    let sql = match dialect {
        Dialect::Postgres => concat!(
            "SELECT ",
            run_columns!(),
            " FROM journey_runs WHERE id = $1 FOR UPDATE"
        ),
        Dialect::Sqlite => concat!(
            "SELECT ",
            run_columns!(),
            " FROM journey_runs WHERE id = $1"
        ),
    };
    let run = sqlx::query_as::<_, Run>(sql)
        .bind(id.to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(run)
}

/// The end of a read of runs that locks them for this transaction on
/// PostgreSQL, in id order, so two transactions lock alike and cannot
/// deadlock on them (SQLite's one writer needs no lock).
fn locked_in_id_order(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => " ORDER BY id FOR UPDATE",
        Dialect::Sqlite => "",
    }
}

/// The runs of `ids` that exist, by id, locked for this transaction on
/// PostgreSQL (in id order, so two batches lock alike) as [`run_in`] does.
pub async fn runs_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    ids: &[String],
) -> Result<HashMap<String, Run>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let lock = locked_in_id_order(dialect);
    let sql = format!(
        "SELECT {} FROM journey_runs WHERE {}{lock}",
        run_columns!(),
        super::bulk::json_in(dialect, "id", 1)
    );
    let runs = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(ids)?)
        .fetch_all(conn)
        .await?;
    Ok(runs.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// The contact's latest run of a journey.
pub async fn last_run_in(
    conn: &mut AnyConnection,
    journey: &str,
    contact_id: &str,
) -> Result<Option<Run>, StoreError> {
    let run = sqlx::query_as::<_, Run>(concat!("SELECT ", run_columns!(), " FROM journey_runs WHERE journey = $1 AND contact_id = $2 ORDER BY started_at DESC, id DESC LIMIT 1"))
    .bind(journey.to_owned())
    .bind(contact_id.to_owned())
    .fetch_optional(conn)
    .await?;
    Ok(run)
}

/// Starts a run unless the contact has one open in that journey. Returns
/// whether it did.
pub async fn insert_run_in(conn: &mut AnyConnection, run: &Run) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "INSERT INTO journey_runs (",
        run_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(run.id.clone())
    .bind(run.journey.clone())
    .bind(run.version)
    .bind(run.contact_id.clone())
    .bind(run.purpose)
    .bind(run.status)
    .bind(run.step.clone())
    .bind(run.seq)
    .bind(run.waiting_for.clone())
    .bind(run.trigger_event.clone())
    .bind(run.started_at)
    .bind(run.ended_at)
    .bind(run.exit_reason.clone())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The latest run of each journey for each of `contact_ids`: what
/// routing a batch of events reads. An open run is its
/// journey's latest (a contact enters again only after the last run
/// ended), so these hold every open run too. On PostgreSQL they are locked
/// for this transaction in id order, as [`runs_in`] locks: a step of one of
/// these runs waits instead of overwriting what routing changes.
pub async fn latest_runs_of_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    contact_ids: &[String],
) -> Result<Vec<Run>, StoreError> {
    if contact_ids.is_empty() {
        return Ok(Vec::new());
    }
    let lock = locked_in_id_order(dialect);
    let sql = format!(
        "SELECT {columns} FROM journey_runs WHERE id IN (SELECT id FROM \
         (SELECT id, ROW_NUMBER() OVER (PARTITION BY contact_id, journey \
          ORDER BY started_at DESC, id DESC) AS newest \
          FROM journey_runs WHERE {contacts}) AS ranked WHERE newest = 1){lock}",
        columns = run_columns!(),
        contacts = super::bulk::json_in(dialect, "contact_id", 1)
    );
    let runs = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(contact_ids)?)
        .fetch_all(conn)
        .await?;
    Ok(runs)
}

/// Starts `runs` in one statement, each unless its contact has a run of
/// that journey open already (another node enrolled them a moment ago).
/// Returns the ids of the runs started.
pub async fn insert_runs_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    runs: &[Run],
) -> Result<HashSet<String>, StoreError> {
    use super::bulk::Col;
    if runs.is_empty() {
        return Ok(HashSet::new());
    }
    let from = super::bulk::json_rows(
        dialect,
        1,
        &[
            ("id", Col::Text),
            ("journey", Col::Text),
            ("version", Col::Int),
            ("contact_id", Col::Text),
            ("purpose", Col::Text),
            ("status", Col::Text),
            ("step", Col::Text),
            ("seq", Col::Int),
            ("waiting_for", Col::Text),
            ("trigger_event", Col::Text),
            ("started_at", Col::Int),
            ("ended_at", Col::Int),
            ("exit_reason", Col::Text),
        ],
    );
    let selected: Vec<String> = run_columns!()
        .split(", ")
        .map(|c| format!("j.{c}"))
        .collect();
    // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    let sql = format!(
        "INSERT INTO journey_runs ({}) SELECT {} FROM {from} WHERE true \
         ON CONFLICT DO NOTHING RETURNING id",
        run_columns!(),
        selected.join(", ")
    );
    let started = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(runs)?)
        .fetch_all(conn)
        .await?;
    Ok(started.into_iter().collect())
}

/// The value the goal event brought (an order's total), for revenue.
pub async fn set_conversion_value_in(
    conn: &mut AnyConnection,
    run_id: &str,
    value: f64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE journey_runs SET conversion_value = $1 WHERE id = $2")
        .bind(value)
        .bind(run_id.to_owned())
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Runs by status, for one journey.
    pub async fn run_counts(&self, journey: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM journey_runs WHERE journey = $1 GROUP BY status",
        )
        .bind(journey.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn contact_runs(&self, contact_id: &str) -> Result<Vec<Run>, StoreError> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "SELECT ",
            run_columns!(),
            " FROM journey_runs WHERE contact_id = $1 ORDER BY started_at DESC"
        ))
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }
}

pub(crate) fn new_run_id() -> String {
    new_id("r")
}
