//! The signing secret, what recipients did with each message, the audit
//! log of data-protection actions, and hashes of erased addresses.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError, new_id};

/// The server's secret for signed links and address hashes: made once,
/// shared by every node through the database.
pub(super) async fn signing_secret_in(conn: &mut AnyConnection) -> Result<Vec<u8>, StoreError> {
    let read = async |conn: &mut AnyConnection| -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = 'signing_secret'")
            .fetch_optional(conn)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    };
    if let Some(secret) = read(conn).await? {
        return hex::decode(secret)
            .map_err(|e| StoreError::Invalid(format!("signing secret: {e}")));
    }
    let fresh = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('signing_secret', $1) ON CONFLICT DO NOTHING",
    )
    .bind(fresh)
    .execute(&mut *conn)
    .await?;
    let secret = read(conn)
        .await?
        .ok_or_else(|| StoreError::Invalid("the signing secret vanished".into()))?;
    hex::decode(secret).map_err(|e| StoreError::Invalid(format!("signing secret: {e}")))
}

pub(super) fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEntry, StoreError> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        contact_id: row.try_get("contact_id")?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    /// The API key (its id) or the party (`recipient`) that acted.
    pub actor: String,
    pub action: String,
    pub contact_id: Option<String>,
    pub detail: serde_json::Value,
}

pub async fn audit_in(
    conn: &mut AnyConnection,
    actor: &str,
    action: &str,
    contact_id: Option<&str>,
    detail: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, contact_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id("a"))
    .bind(now)
    .bind(actor.to_owned())
    .bind(action.to_owned())
    .bind(contact_id.map(str::to_owned))
    .bind(detail.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The database's signing secret: made once, never changed, so read
    /// once, at connect.
    pub fn signing_secret(&self) -> &[u8] {
        &self.signing_secret
    }

    /// Records what a recipient did with a message; returns how many times
    /// they did it before (0: this is the first, a unique open or click).
    pub async fn message_event(
        &self,
        outbox_id: &str,
        kind: &str,
        detail: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        // The message's own counters (the KPIs read these), and what it was
        // before this one.
        let counter = match kind {
            "opened" => Some((
                "SELECT opens AS n FROM outbox WHERE id = $1",
                "UPDATE outbox SET opens = opens + 1 WHERE id = $1",
            )),
            "clicked" => Some((
                "SELECT clicks AS n FROM outbox WHERE id = $1",
                "UPDATE outbox SET clicks = clicks + 1 WHERE id = $1",
            )),
            "unsubscribed" => Some((
                "SELECT unsubscribes AS n FROM outbox WHERE id = $1",
                "UPDATE outbox SET unsubscribes = unsubscribes + 1 WHERE id = $1",
            )),
            "complained" => Some((
                "SELECT complaints AS n FROM outbox WHERE id = $1",
                "UPDATE outbox SET complaints = complaints + 1 WHERE id = $1",
            )),
            _ => None,
        };
        let mut before = 0;
        if let Some((read, bump)) = counter {
            if let Some(row) = sqlx::query(read)
                .bind(outbox_id.to_owned())
                .fetch_optional(&mut *tx)
                .await?
            {
                before = row.try_get("n")?;
            }
            sqlx::query(bump)
                .bind(outbox_id.to_owned())
                .execute(&mut *tx)
                .await?;
        } else if kind == "bounced" {
            // A hard bounce stays hard.
            let bounce = if detail == Some("hard") {
                "hard"
            } else {
                "soft"
            };
            sqlx::query("UPDATE outbox SET bounce = CASE WHEN bounce = 'hard' THEN 'hard' ELSE $1 END WHERE id = $2")
                .bind(bounce)
                .bind(outbox_id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO message_events (outbox_id, kind, detail, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(outbox_id.to_owned())
        .bind(kind.to_owned())
        .bind(detail.map(str::to_owned))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// The outbox entry with this idempotency key or provider id.
    pub async fn outbox_by_reference(&self, reference: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM outbox WHERE idempotency_key = $1 OR provider_id = $1 LIMIT 1",
        )
        .bind(reference.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        contact_id: Option<&str>,
        detail: &serde_json::Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        audit_in(&mut conn, actor, action, contact_id, detail, now).await
    }

    pub async fn audit_entries(&self, contact_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, contact_id, detail FROM audit_log WHERE contact_id = $1 ORDER BY at, id",
        )
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// The latest entries of one action (e.g. `ab.promoted`), newest first.
    pub async fn audit_by_action(
        &self,
        action: &str,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, contact_id, detail FROM audit_log WHERE action = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(action.to_owned())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// Remembers that an address was erased (as a salted hash, never the
    /// address itself).
    pub async fn remember_erased(&self, address_hash: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO erased_addresses (address_hash, at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(address_hash.to_owned())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// When an address was erased, if it was.
pub async fn erased_at_in(
    conn: &mut AnyConnection,
    address_hash: &str,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT at FROM erased_addresses WHERE address_hash = $1")
        .bind(address_hash.to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get("at")).transpose()?)
}

/// When each of `address_hashes` that was erased was erased:
/// [`erased_at_in`] for many at once.
pub async fn erased_of_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    address_hashes: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    if address_hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT address_hash, at FROM erased_addresses WHERE {}",
        super::bulk::json_in(dialect, "address_hash", 1)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(address_hashes)?)
        .fetch_all(conn)
        .await?;
    let mut erased = HashMap::new();
    for row in rows {
        erased.insert(row.try_get("address_hash")?, row.try_get("at")?);
    }
    Ok(erased)
}
