//! Backtests as rows: the plan, the progress (a cursor over contacts and
//! the figures so far, written together) and the report once done. The
//! figures are JSON the analytics layer defines; the store keeps them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use super::jobs::{ClaimedJob, JobArgs, enqueue_in, finish_in, renew_lease_in};
use super::{ScoreEntry, Store, StoreError, new_id};

/// The job that runs one backtest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backtest {
    pub backtest: String,
}

impl JobArgs for Backtest {
    const KIND: &'static str = "backtest";
    /// A backtest that keeps failing (a version not loadable on any node)
    /// should say so soon rather than retry for a day.
    const MAX_ATTEMPTS: i64 = 5;
    fn unique_key(&self) -> String {
        format!("backtest:{}", self.backtest)
    }
}

/// A backtest as any node reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BacktestRow {
    pub id: String,
    pub plugin: String,
    pub version: String,
    pub plan: Value,
    /// Contacts with events in the range (counted when the job starts).
    pub total: i64,
    pub evaluated: i64,
    pub done: bool,
    pub error: Option<String>,
    pub report: Option<Value>,
    #[serde(skip)]
    pub cursor: Option<String>,
    #[serde(skip)]
    pub tally: Option<Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, plugin, version, plan, total, evaluated, cursor, tally, report, error, created_at, updated_at, finished_at";

fn json(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Invalid(format!("stored backtest {column} is not JSON: {e}")))
    })
    .transpose()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<BacktestRow, StoreError> {
    let finished_at: Option<i64> = row.try_get("finished_at")?;
    Ok(BacktestRow {
        id: row.try_get("id")?,
        plugin: row.try_get("plugin")?,
        version: row.try_get("version")?,
        plan: json(row, "plan")?.unwrap_or(Value::Null),
        total: row.try_get("total")?,
        evaluated: row.try_get("evaluated")?,
        done: finished_at.is_some(),
        error: row.try_get("error")?,
        report: json(row, "report")?,
        cursor: row.try_get("cursor")?,
        tally: json(row, "tally")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at,
    })
}

impl Store {
    /// Records a backtest and queues its job, together.
    pub async fn create_backtest(
        &self,
        plugin: &str,
        version: &str,
        plan: &Value,
        now: i64,
    ) -> Result<String, StoreError> {
        let id = new_id("bt");
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO backtests (id, plugin, version, plan, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id.clone())
        .bind(plugin.to_owned())
        .bind(version.to_owned())
        .bind(plan.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let job = Backtest {
            backtest: id.clone(),
        };
        enqueue_in(&mut tx, &job, now, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn backtest(&self, id: &str) -> Result<BacktestRow, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM backtests WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("backtest {id}")))?;
        from_row(&row)
    }

    /// The newest backtests of `plugin`, newest first.
    pub async fn backtests(
        &self,
        plugin: &str,
        limit: u32,
    ) -> Result<Vec<BacktestRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backtests WHERE plugin = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(plugin.to_owned())
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn set_backtest_total(
        &self,
        id: &str,
        total: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE backtests SET total = $1, updated_at = $2 WHERE id = $3")
            .bind(total)
            .bind(now)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the figures up to `cursor` and extends the job's lease, in
    /// one transaction. `false`: this worker lost the lease; nothing was
    /// recorded and the caller stops.
    pub async fn backtest_page_done(
        &self,
        job: &ClaimedJob,
        id: &str,
        cursor: &str,
        evaluated: i64,
        tally: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        if !renew_lease_in(&mut tx, job, now + job.lease_ms).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE backtests SET cursor = $1, evaluated = evaluated + $2, tally = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(cursor.to_owned())
        .bind(evaluated)
        .bind(tally.to_string())
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps the report (or why there is none) and deletes the job, in one
    /// transaction. `false`: the lease was lost.
    pub async fn finish_backtest(
        &self,
        job: &ClaimedJob,
        id: &str,
        report: Option<&Value>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        if !finish_in(&mut tx, job).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE backtests SET report = $1, error = $2, finished_at = $3, updated_at = $3 WHERE id = $4",
        )
        .bind(report.map(Value::to_string))
        .bind(error.map(str::to_owned))
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The contact's events with `from <= at < to`, in the order they
    /// happened (ties in the order they arrived), for a replay.
    pub async fn events_between(
        &self,
        contact_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::model::Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact_id, kind, at, properties FROM events \
             WHERE contact_id = $1 AND at >= $2 AND at < $3 ORDER BY at, received_at, id",
        )
        .bind(contact_id.to_owned())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::events::from_row).collect()
    }

    /// [`Store::events_between`] for a page of contacts at once (ids from
    /// `first` to `last`, as `contacts_page` returns them), each
    /// contact's events in that same order.
    pub async fn events_of_page(
        &self,
        first: &str,
        last: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::model::Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact_id, kind, at, properties FROM events \
             WHERE contact_id >= $1 AND contact_id <= $2 AND at >= $3 AND at < $4 \
             ORDER BY contact_id, at, received_at, id",
        )
        .bind(first.to_owned())
        .bind(last.to_owned())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::events::from_row).collect()
    }

    /// [`Store::score_history`] for a page of contacts at once, with each
    /// change's contact.
    pub async fn score_changes_of_page(
        &self,
        first: &str,
        last: &str,
    ) -> Result<Vec<(String, ScoreEntry)>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact_id, binding, delta, reasons, event_id, at FROM score_changes \
             WHERE contact_id >= $1 AND contact_id <= $2 ORDER BY contact_id, at, id",
        )
        .bind(first.to_owned())
        .bind(last.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let reasons: String = row.try_get("reasons")?;
                Ok((
                    row.try_get("contact_id")?,
                    ScoreEntry {
                        binding: row.try_get("binding")?,
                        delta: row.try_get("delta")?,
                        reasons: serde_json::from_str(&reasons)
                            .map_err(|e| StoreError::Invalid(e.to_string()))?,
                        event_id: row.try_get("event_id")?,
                        at: row.try_get("at")?,
                    },
                ))
            })
            .collect()
    }

    /// How many contacts have an event with `from <= at < to`.
    pub async fn count_contacts_with_events(&self, from: i64, to: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT contact_id) AS n FROM events WHERE at >= $1 AND at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
