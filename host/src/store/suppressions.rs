//! Suppressions: reasons never to send to a contact on a channel
//! (unsubscribed, bounced, complained, erased, objected).

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow};

use super::{Store, StoreError};

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
