//! The durable job queue: a job is a row with a due time, a lease, an
//! attempt count and a unique key. Claiming leases a batch of due jobs to
//! one worker (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so nodes never wait on
//! each other); a lease that runs out is claimed again. A finished job is
//! deleted in the transaction that did its work.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Dialect, Store, StoreError, new_id};

/// A job leased to this worker.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedJob {
    pub id: String,
    pub payload: String,
    pub due_at: i64,
    /// Including this one.
    pub attempts: i64,
    pub leased_by: String,
    /// How long a lease lasts; long work extends it by this much.
    pub lease_ms: i64,
}

/// How many jobs wait, for the API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueueCounts {
    pub due: i64,
    pub scheduled: i64,
    pub leased: i64,
    pub failed: i64,
}

/// Adds a job unless one with the same key exists. Returns whether it was
/// added.
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    unique_key: &str,
    payload: &str,
    due_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO jobs (id, unique_key, payload, due_at, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(new_id("j"))
    .bind(unique_key.to_owned())
    .bind(payload.to_owned())
    .bind(due_at)
    .bind(now)
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

impl Store {
    pub async fn enqueue(
        &self,
        unique_key: &str,
        payload: &str,
        due_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        enqueue_in(&mut conn, unique_key, payload, due_at, now).await
    }

    /// Leases up to `limit` jobs due at `now` for `lease_ms`, oldest first.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE jobs SET lease_until = $1, leased_by = $2, attempts = attempts + 1 ",
                    "WHERE id IN (SELECT id FROM jobs WHERE due_at <= $3 AND failed_at IS NULL ",
                    "AND (lease_until IS NULL OR lease_until < $3) ORDER BY due_at LIMIT $4 ",
                    $lock,
                    ") RETURNING id, payload, due_at, attempts"
                )
            };
        }
        let sql = match self.dialect {
            Dialect::Postgres => claim!("FOR UPDATE SKIP LOCKED"),
            // One writer at a time: the write transaction is the lock.
            Dialect::Sqlite => claim!(""),
        };
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(sql)
            .bind(now + lease_ms)
            .bind(worker.to_owned())
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut jobs = rows
            .iter()
            .map(|row| {
                Ok(ClaimedJob {
                    id: row.try_get("id")?,
                    payload: row.try_get("payload")?,
                    due_at: row.try_get("due_at")?,
                    attempts: row.try_get("attempts")?,
                    leased_by: worker.to_owned(),
                    lease_ms,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        jobs.sort_by_key(|j| j.due_at);
        Ok(jobs)
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
        let row = sqlx::query("SELECT MIN(due_at) AS next FROM jobs WHERE failed_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("next")?)
    }
}
