//! Plugin tasks: long work a plugin change causes — rebuilding a segment,
//! re-scoring every contact's profile — as durable jobs. The task row keeps
//! a cursor and the progress, so a task resumes where it stopped after a
//! crash and any node can report it; the job carries the lease.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::jobs::{ClaimedJob, JobArgs, enqueue_row_in, finish_in, renew_lease_in};
use super::{Store, StoreError, new_id};

/// Re-evaluates every contact against one segment.
pub const SEGMENT_REBUILD: &str = "segment_rebuild";
/// Re-runs one scorer binding's `on-profile` for every contact.
pub const RESCORE: &str = "rescore";

/// The job of a segment rebuild task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentRebuild {
    pub task: String,
}

impl JobArgs for SegmentRebuild {
    const KIND: &'static str = SEGMENT_REBUILD;
    fn unique_key(&self) -> String {
        format!("task:{}", self.task)
    }
}

/// The job of a re-score task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rescore {
    pub task: String,
}

impl JobArgs for Rescore {
    const KIND: &'static str = RESCORE;
    fn unique_key(&self) -> String {
        format!("task:{}", self.task)
    }
}

/// A task's progress, as any node reads it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskProgress {
    pub id: String,
    pub kind: String,
    /// The segment or scorer binding.
    pub target: String,
    /// What caused it (`binding created`, `version-tag@2.0.0 live`, …).
    pub reason: String,
    pub total: i64,
    pub evaluated: i64,
    /// Contacts that entered the segment, or whose score changed.
    pub entered: i64,
    /// Contacts that left the segment.
    pub left: i64,
    pub done: bool,
    pub error: Option<String>,
    #[serde(skip)]
    pub cursor: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<TaskProgress, StoreError> {
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(TaskProgress {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        target: row.try_get("target")?,
        reason: row.try_get("reason")?,
        total: row.try_get("total")?,
        evaluated: row.try_get("evaluated")?,
        entered: row.try_get("entered")?,
        left: row.try_get("left_count")?,
        done: finished.is_some(),
        error: row.try_get("error")?,
        cursor: row.try_get("cursor")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const COLUMNS: &str = "id, kind, target, reason, total, evaluated, entered, left_count, cursor, error, created_at, updated_at, finished_at";

/// Records a task and queues its job, in the caller's transaction.
pub async fn enqueue_task_in(
    conn: &mut AnyConnection,
    kind: &str,
    target: &str,
    reason: &str,
    now: i64,
) -> Result<String, StoreError> {
    let id = new_id("t");
    sqlx::query(
        "INSERT INTO plugin_tasks (id, kind, target, reason, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(id.clone())
    .bind(kind.to_owned())
    .bind(target.to_owned())
    .bind(reason.to_owned())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // Both task kinds take the same arguments (see `SegmentRebuild`).
    let payload = serde_json::json!({ "task": id }).to_string();
    enqueue_row_in(conn, kind, &format!("task:{id}"), &payload, now, now).await?;
    Ok(id)
}

/// A rebuild for every segment and a re-score for every scorer that
/// `plugin` serves, after its live version changed.
pub async fn enqueue_consequences_in(
    conn: &mut AnyConnection,
    plugin: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT name, kind FROM bindings WHERE plugin = $1 ORDER BY name")
        .bind(plugin.to_owned())
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let (name, kind): (String, String) = (row.try_get("name")?, row.try_get("kind")?);
        let task = match kind.as_str() {
            "segment" => SEGMENT_REBUILD,
            "scorer" => RESCORE,
            _ => continue,
        };
        enqueue_task_in(conn, task, &name, reason, now).await?;
    }
    Ok(())
}

/// Moves a task's cursor from `from` past a finished page and adds the
/// page's counts, in the caller's transaction (the one that wrote the
/// page's effects). `false` when the cursor is no longer at `from`:
/// another runner of the task got there first (a lease that ran out while
/// this one still worked), and the caller rolls back.
pub(super) async fn advance_cursor_in(
    conn: &mut AnyConnection,
    id: &str,
    from: Option<&str>,
    to: &str,
    counts: [i64; 3],
    now: i64,
) -> Result<bool, StoreError> {
    let [evaluated, entered, left] = counts;
    let done = sqlx::query(
        "UPDATE plugin_tasks SET cursor = $1, evaluated = evaluated + $2, entered = entered + $3, \
         left_count = left_count + $4, updated_at = $5 WHERE id = $6 AND COALESCE(cursor, '') = $7",
    )
    .bind(to.to_owned())
    .bind(evaluated)
    .bind(entered)
    .bind(left)
    .bind(now)
    .bind(id.to_owned())
    .bind(from.unwrap_or_default().to_owned())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    pub async fn enqueue_task(
        &self,
        kind: &str,
        target: &str,
        reason: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let mut tx = self.write_tx().await?;
        let id = enqueue_task_in(&mut tx, kind, target, reason, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn task(&self, id: &str) -> Result<TaskProgress, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM plugin_tasks WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        from_row(&row)
    }

    /// The newest task of `kind` for `target`.
    pub async fn latest_task(
        &self,
        kind: &str,
        target: &str,
    ) -> Result<Option<TaskProgress>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM plugin_tasks WHERE kind = $1 AND target = $2 ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind.to_owned())
            .bind(target.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The newest tasks, newest first.
    pub async fn recent_tasks(&self, limit: u32) -> Result<Vec<TaskProgress>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM plugin_tasks ORDER BY created_at DESC, id DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Sets how many contacts the task covers (counted when it starts or
    /// resumes).
    pub async fn set_task_total(&self, id: &str, total: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE plugin_tasks SET total = $1, updated_at = $2 WHERE id = $3")
            .bind(total)
            .bind(now)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a finished batch up to `cursor` and extends the job's lease
    /// by its length. Returns `false` when this worker lost the lease (the
    /// job belongs to another node now): then nothing is recorded and the
    /// caller stops.
    #[allow(clippy::too_many_arguments)]
    pub async fn task_batch_done(
        &self,
        job: &ClaimedJob,
        id: &str,
        cursor: &str,
        evaluated: i64,
        entered: i64,
        left: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        if !renew_lease_in(&mut tx, job, now + job.lease_ms).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE plugin_tasks SET cursor = $1, evaluated = evaluated + $2, entered = entered + $3, \
             left_count = left_count + $4, updated_at = $5 WHERE id = $6",
        )
        .bind(cursor.to_owned())
        .bind(evaluated)
        .bind(entered)
        .bind(left)
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks the task finished (with an error, if it could not run) and
    /// deletes its job, in one transaction. `false`: the lease was lost.
    pub async fn finish_task(
        &self,
        job: &ClaimedJob,
        id: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        if !finish_in(&mut tx, job).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE plugin_tasks SET finished_at = $1, updated_at = $1, error = $2 WHERE id = $3",
        )
        .bind(now)
        .bind(error.map(str::to_owned))
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
