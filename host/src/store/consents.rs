//! Consents: one row per contact, channel and purpose, with its source
//! and proof; every change is also a `consent.changed` event.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow, Row};

use super::contacts::contact_in;
use super::timeline::record_in;
use super::{Store, StoreError};
use crate::model::Fields;
pub use crate::model::status::{ConsentStatus, Purpose};

/// A contact's consent for one channel and purpose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub channel: String,
    #[serde(default)]
    pub purpose: Purpose,
    pub status: ConsentStatus,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub text_version: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub updated_at: i64,
}

/// Writes the contact's one consent row for the consent's channel and
/// purpose.
pub async fn write_consent_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    consent: &Consent,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM consents WHERE contact_id = $1 AND channel = $2 AND purpose = $3")
        .bind(contact_id.to_owned())
        .bind(consent.channel.clone())
        .bind(consent.purpose)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO consents (contact_id, channel, purpose, status, source, text_version, ip, user_agent, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(contact_id.to_owned())
    .bind(consent.channel.clone())
    .bind(consent.purpose)
    .bind(consent.status)
    .bind(consent.source.clone())
    .bind(consent.text_version.clone())
    .bind(consent.ip.clone())
    .bind(consent.user_agent.clone())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The consent's status and when it was recorded.
pub async fn consent_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    channel: &str,
    purpose: Purpose,
) -> Result<Option<(ConsentStatus, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT status, updated_at FROM consents WHERE contact_id = $1 AND channel = $2 AND purpose = $3",
    )
    .bind(contact_id.to_owned())
    .bind(channel.to_owned())
    .bind(purpose)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => Ok(Some((row.try_get("status")?, row.try_get("updated_at")?))),
        None => Ok(None),
    }
}

/// The consents of `contact_ids` for `purpose`, by contact and channel:
/// [`consent_in`] for many at once.
pub async fn consents_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    contact_ids: &[String],
    purpose: Purpose,
) -> Result<HashMap<(String, String), (ConsentStatus, i64)>, StoreError> {
    if contact_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT contact_id, channel, status, updated_at FROM consents \
         WHERE purpose = $1 AND {}",
        super::bulk::json_in(dialect, "contact_id", 2)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(purpose)
        .bind(super::bulk::to_json(contact_ids)?)
        .fetch_all(conn)
        .await?;
    let mut consents = HashMap::new();
    for row in rows {
        consents.insert(
            (row.try_get("contact_id")?, row.try_get("channel")?),
            (row.try_get("status")?, row.try_get("updated_at")?),
        );
    }
    Ok(consents)
}

impl Store {
    pub async fn set_consent(
        &self,
        contact_id: &str,
        consent: &Consent,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        if contact_in(&mut tx, contact_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("contact {contact_id}")));
        }
        write_consent_in(&mut tx, contact_id, consent, now).await?;
        let mut properties = Fields::new();
        for (key, value) in [
            ("channel", consent.channel.as_str()),
            ("purpose", consent.purpose.as_str()),
            ("status", consent.status.as_str()),
        ] {
            properties.insert(key.into(), crate::model::Value::Text(value.to_owned()));
        }
        record_in(&mut tx, contact_id, "consent.changed", properties, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn consents(&self, contact_id: &str) -> Result<Vec<Consent>, StoreError> {
        let consents = sqlx::query_as::<_, Consent>(
            "SELECT channel, purpose, status, source, text_version, ip, user_agent, updated_at \
             FROM consents WHERE contact_id = $1 ORDER BY channel, purpose",
        )
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(consents)
    }
}
