//! Suppressions: reasons never to send to a contact on a channel
//! (unsubscribed, bounced, complained, erased, objected).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow, Row};

use super::{Store, StoreError};
use crate::model::{Fields, Value};

/// A reason never to send to a contact on a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow, utoipa::ToSchema)]
pub struct Suppression {
    /// A channel kind (`email`), or `*` for all.
    pub channel: String,
    /// `unsubscribed`, `hard_bounced`, `complained`, `erased`, `objected`.
    pub reason: String,
    /// `marketing` or `all`.
    pub scope: String,
    pub at: i64,
}

/// The suppression a touchpoint of `kind` means, if it is a stop event:
/// `email.unsubscribed` (a channel, then what happened; the channel
/// property names the one unsubscribed from), `*.objected`, a hard
/// `*.bounced` or `*.hard_bounced`, `*.complained`. The host applies it
/// whenever such an event is stored, whether or not a journey exists.
pub fn stop_of(kind: &str, properties: &Fields, at: i64) -> Option<Suppression> {
    let text = |key: &str| match properties.get(key) {
        Some(Value::Text(t)) => Some(t.as_str()),
        _ => None,
    };
    let (channel, what) = kind.split_once('.').unwrap_or(("*", kind));
    let (channel, reason, scope) = match what {
        "unsubscribed" => (text("channel").unwrap_or("*"), "unsubscribed", "marketing"),
        "objected" => ("*", "objected", "marketing"),
        "bounced" if text("type") == Some("hard") => (channel, "hard_bounced", "all"),
        "hard_bounced" => (channel, "hard_bounced", "all"),
        "complained" => (channel, "complained", "all"),
        _ => return None,
    };
    Some(Suppression {
        channel: channel.to_owned(),
        reason: reason.to_owned(),
        scope: scope.to_owned(),
        at,
    })
}

pub async fn suppressions_in(
    conn: &mut AnyConnection,
    contact_id: &str,
) -> Result<Vec<Suppression>, StoreError> {
    let suppressions = sqlx::query_as::<_, Suppression>(
        "SELECT channel, reason, scope, at FROM suppressions WHERE contact_id = $1 ORDER BY at",
    )
    .bind(contact_id.to_owned())
    .fetch_all(conn)
    .await?;
    Ok(suppressions)
}

/// The suppressions of `contact_ids`, by contact, oldest first:
/// [`suppressions_in`] for many at once.
pub async fn suppressions_of_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    contact_ids: &[String],
) -> Result<HashMap<String, Vec<Suppression>>, StoreError> {
    if contact_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT contact_id, channel, reason, scope, at FROM suppressions \
         WHERE {} ORDER BY at",
        super::bulk::json_in(dialect, "contact_id", 1)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(contact_ids)?)
        .fetch_all(conn)
        .await?;
    let mut suppressions: HashMap<String, Vec<Suppression>> = HashMap::new();
    for row in rows {
        let contact: String = row.try_get("contact_id")?;
        suppressions
            .entry(contact)
            .or_default()
            .push(Suppression::from_row(&row)?);
    }
    Ok(suppressions)
}

pub async fn suppress_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    suppression: &Suppression,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO suppressions (contact_id, channel, reason, scope, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(contact_id.to_owned())
    .bind(suppression.channel.clone())
    .bind(suppression.reason.clone())
    .bind(suppression.scope.clone())
    .bind(suppression.at)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    pub async fn suppressions(&self, contact_id: &str) -> Result<Vec<Suppression>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        suppressions_in(&mut conn, contact_id).await
    }
}
