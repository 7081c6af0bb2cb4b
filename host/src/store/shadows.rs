//! Shadows as rows: which candidate version runs beside which binding (at
//! most one active per binding, cluster state like the plugins), and the
//! pair of answers recorded for each live call. Figures are derived from
//! the results by the shadow module; the store only keeps and counts them.

use serde::Serialize;
use sqlx::Row;

use super::bulk::{self, Col};
use super::plugins::notify_in;
use super::{Dialect, Store, StoreError, is_unique_violation, new_id};

/// A shadow as any node reads it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShadowRow {
    pub id: String,
    pub binding: String,
    /// `scorer` or `segment`.
    pub kind: String,
    pub plugin: String,
    /// The candidate version.
    pub version: String,
    /// `active`, `promoted` or `discarded`.
    pub status: String,
    pub created_by: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
}

/// One live call and the candidate's answer to the same input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShadowResult {
    pub shadow_id: String,
    pub contact_id: String,
    pub event_id: Option<String>,
    /// `on-event`, `on-profile` or `matches`.
    pub call: String,
    pub live_version: String,
    /// `ok`, `declined` or `failed`, for each side.
    pub live_outcome: String,
    /// A scorer's delta, a rule's 1 or 0; `None` unless `ok`.
    pub live_value: Option<i64>,
    pub live_micros: i64,
    pub live_fuel: i64,
    pub candidate_outcome: String,
    pub candidate_value: Option<i64>,
    /// The candidate's reasons, or why it declined or failed.
    pub candidate_detail: Option<String>,
    pub candidate_micros: i64,
    pub candidate_fuel: i64,
    pub agree: bool,
    pub at: i64,
}

/// What the report is computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShadowTally {
    pub calls: i64,
    pub agreed: i64,
    pub live_failed: i64,
    pub candidate_failed: i64,
    /// Results dropped because this or another node's queue was full.
    pub dropped: i64,
    /// The newest disagreements, newest first.
    pub disagreements: Vec<ShadowResult>,
    /// `(live micros, live fuel, candidate micros, candidate fuel)` of the
    /// newest calls.
    pub usage: Vec<(i64, i64, i64, i64)>,
}

const SHADOW_COLUMNS: &str =
    "id, binding, kind, plugin, version, status, created_by, created_at, ended_at";
const RESULT_COLUMNS: &str = "shadow_id, contact_id, event_id, call, live_version, live_outcome, live_value, live_micros, live_fuel, candidate_outcome, candidate_value, candidate_detail, candidate_micros, candidate_fuel, agree, at";

fn shadow_from_row(row: &sqlx::any::AnyRow) -> Result<ShadowRow, StoreError> {
    Ok(ShadowRow {
        id: row.try_get("id")?,
        binding: row.try_get("binding")?,
        kind: row.try_get("kind")?,
        plugin: row.try_get("plugin")?,
        version: row.try_get("version")?,
        status: row.try_get("status")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

fn result_from_row(row: &sqlx::any::AnyRow) -> Result<ShadowResult, StoreError> {
    let agree: i64 = row.try_get("agree")?;
    Ok(ShadowResult {
        shadow_id: row.try_get("shadow_id")?,
        contact_id: row.try_get("contact_id")?,
        event_id: row.try_get("event_id")?,
        call: row.try_get("call")?,
        live_version: row.try_get("live_version")?,
        live_outcome: row.try_get("live_outcome")?,
        live_value: row.try_get("live_value")?,
        live_micros: row.try_get("live_micros")?,
        live_fuel: row.try_get("live_fuel")?,
        candidate_outcome: row.try_get("candidate_outcome")?,
        candidate_value: row.try_get("candidate_value")?,
        candidate_detail: row.try_get("candidate_detail")?,
        candidate_micros: row.try_get("candidate_micros")?,
        candidate_fuel: row.try_get("candidate_fuel")?,
        agree: agree != 0,
        at: row.try_get("at")?,
    })
}

impl Store {
    /// Starts a shadow; every node runs it once it hears of the change.
    pub async fn create_shadow(
        &self,
        binding: &str,
        kind: &str,
        plugin: &str,
        version: &str,
        actor: &str,
        now: i64,
    ) -> Result<ShadowRow, StoreError> {
        let row = ShadowRow {
            id: new_id("sh"),
            binding: binding.to_owned(),
            kind: kind.to_owned(),
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            status: "active".into(),
            created_by: actor.to_owned(),
            created_at: now,
            ended_at: None,
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO shadows (id, binding, kind, plugin, version, status, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.id.clone())
        .bind(row.binding.clone())
        .bind(row.kind.clone())
        .bind(row.plugin.clone())
        .bind(row.version.clone())
        .bind(row.status.clone())
        .bind(row.created_by.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "binding `{binding}` has a shadow running already; discard it first (DELETE /v1/bindings/{binding}/shadow)"
                ))
            } else {
                e.into()
            }
        })?;
        notify_in(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Every active shadow, for the reconcile.
    pub async fn active_shadows(&self) -> Result<Vec<ShadowRow>, StoreError> {
        let sql = format!("SELECT {SHADOW_COLUMNS} FROM shadows WHERE status = 'active'");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(shadow_from_row).collect()
    }

    /// The binding's active shadow, or else its newest ended one.
    pub async fn latest_shadow(&self, binding: &str) -> Result<Option<ShadowRow>, StoreError> {
        let sql = format!(
            "SELECT {SHADOW_COLUMNS} FROM shadows WHERE binding = $1 \
             ORDER BY CASE WHEN status = 'active' THEN 0 ELSE 1 END, created_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(binding.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(shadow_from_row).transpose()
    }

    /// Ends an active shadow as `status`; false when it was not active
    /// (another request ended it first).
    pub async fn end_shadow(&self, id: &str, status: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let ended = sqlx::query(
            "UPDATE shadows SET status = $1, ended_at = $2 WHERE id = $3 AND status = 'active'",
        )
        .bind(status.to_owned())
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if ended {
            notify_in(&mut tx, self.dialect).await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    /// Writes a batch of recorded pairs of answers in one multi-row insert,
    /// and adds results dropped on the way to their shadows' counts, in one
    /// transaction: the only write shadow mode makes (through this node's
    /// queue, `shadow_queue.rs`).
    pub(super) async fn record_shadow_results(
        &self,
        results: &[ShadowResult],
        dropped: &[(String, i64)],
    ) -> Result<(), StoreError> {
        if results.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        if !results.is_empty() {
            // One statement whatever the batch size: the rows go as one
            // JSON array (a parameter per value would be 17 per row, and
            // SQLite looks each parameter up by a linear scan).
            #[derive(Serialize)]
            struct ResultRow<'a> {
                id: String,
                #[serde(flatten)]
                result: &'a ShadowResult,
            }
            let rows: Vec<ResultRow> = results
                .iter()
                .map(|result| ResultRow {
                    id: new_id("shr"),
                    result,
                })
                .collect();
            let from = bulk::json_rows(
                self.dialect,
                1,
                &[
                    ("id", Col::Text),
                    ("shadow_id", Col::Text),
                    ("contact_id", Col::Text),
                    ("event_id", Col::Text),
                    ("call", Col::Text),
                    ("live_version", Col::Text),
                    ("live_outcome", Col::Text),
                    ("live_value", Col::Int),
                    ("live_micros", Col::Int),
                    ("live_fuel", Col::Int),
                    ("candidate_outcome", Col::Text),
                    ("candidate_value", Col::Int),
                    ("candidate_detail", Col::Text),
                    ("candidate_micros", Col::Int),
                    ("candidate_fuel", Col::Int),
                    ("agree", Col::Bool),
                    ("at", Col::Int),
                ],
            );
            let agree = match self.dialect {
                Dialect::Sqlite => "j.agree",
                Dialect::Postgres => "CASE WHEN j.agree THEN 1 ELSE 0 END",
            };
            let sql = format!(
                "INSERT INTO shadow_results (id, {RESULT_COLUMNS}) \
                 SELECT j.id, j.shadow_id, j.contact_id, j.event_id, j.call, j.live_version, j.live_outcome, j.live_value, j.live_micros, j.live_fuel, \
                 j.candidate_outcome, j.candidate_value, j.candidate_detail, j.candidate_micros, j.candidate_fuel, {agree}, j.at FROM {from}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(bulk::to_json(&rows)?)
                .execute(&mut *tx)
                .await?;
        }
        for (shadow, count) in dropped {
            sqlx::query("UPDATE shadows SET dropped = dropped + $1 WHERE id = $2")
                .bind(*count)
                .bind(shadow.clone())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Counts of a shadow's results, its newest `samples` disagreements and
    /// the costs of its newest `usage` calls.
    pub async fn shadow_tally(
        &self,
        id: &str,
        samples: u32,
        usage: u32,
    ) -> Result<ShadowTally, StoreError> {
        let counts = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS calls, \
                    CAST(COALESCE(SUM(agree), 0) AS BIGINT) AS agreed, \
                    CAST(COALESCE(SUM(CASE WHEN live_outcome = 'ok' THEN 0 ELSE 1 END), 0) AS BIGINT) AS live_failed, \
                    CAST(COALESCE(SUM(CASE WHEN candidate_outcome = 'ok' THEN 0 ELSE 1 END), 0) AS BIGINT) AS candidate_failed \
             FROM shadow_results WHERE shadow_id = $1",
        )
        .bind(id.to_owned())
        .fetch_one(&self.pool)
        .await?;
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM shadow_results WHERE shadow_id = $1 AND agree = 0 ORDER BY at DESC, id DESC LIMIT $2"
        );
        let disagreements = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_owned())
            .bind(i64::from(samples))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(result_from_row)
            .collect::<Result<_, _>>()?;
        let usage = sqlx::query(
            "SELECT live_micros, live_fuel, candidate_micros, candidate_fuel FROM shadow_results \
             WHERE shadow_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(id.to_owned())
        .bind(i64::from(usage))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("live_micros")?,
                row.try_get("live_fuel")?,
                row.try_get("candidate_micros")?,
                row.try_get("candidate_fuel")?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
        let dropped: i64 = sqlx::query("SELECT dropped FROM shadows WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("dropped"))
            .transpose()?
            .unwrap_or(0);
        Ok(ShadowTally {
            calls: counts.try_get("calls")?,
            dropped,
            agreed: counts.try_get("agreed")?,
            live_failed: counts.try_get("live_failed")?,
            candidate_failed: counts.try_get("candidate_failed")?,
            disagreements,
            usage,
        })
    }
}
