//! Trusted publisher keys: the Ed25519 keys whose signed plugin bundles the
//! cluster accepts. Every change is written to the audit log in the same
//! transaction, so who trusted whom and when is never lost.

use serde::Serialize;
use sqlx::Row;

use super::tracking::audit_in;
use super::{Store, StoreError};
use crate::runtime::Runtime;
use crate::runtime::signature::{PublicKey, TrustPolicy};

/// A key an operator trusts, and for which publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TrustedKey {
    /// `ed25519:<64 hex digits>`.
    pub public_key: String,
    pub publisher: String,
    pub added_at: i64,
    /// The API key id (or `cli`) that added it.
    pub added_by: String,
}

impl Store {
    pub async fn trusted_keys(&self) -> Result<Vec<TrustedKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT public_key, publisher, added_at, added_by FROM trusted_keys ORDER BY publisher, public_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TrustedKey {
                    public_key: row.try_get("public_key")?,
                    publisher: row.try_get("publisher")?,
                    added_at: row.try_get("added_at")?,
                    added_by: row.try_get("added_by")?,
                })
            })
            .collect()
    }

    /// Gives `runtime` the trusted keys as they are in the database now,
    /// keeping its signature policy. Each node calls this after a change it
    /// made and periodically, to follow changes made on other nodes.
    pub async fn reload_trust(&self, runtime: &Runtime) -> Result<(), StoreError> {
        let Some(current) = runtime.trust_policy() else {
            return Ok(());
        };
        let mut trusted = std::collections::BTreeMap::new();
        for key in self.trusted_keys().await? {
            match key.public_key.parse::<PublicKey>() {
                Ok(public_key) => {
                    trusted.insert(public_key, key.publisher);
                }
                Err(e) => {
                    tracing::warn!(key = %key.public_key, "ignoring a stored trusted key: {e}")
                }
            }
        }
        runtime.set_trust(TrustPolicy {
            signatures: current.signatures,
            trusted,
        });
        Ok(())
    }

    /// Trusts `public_key` for `publisher`. Trusting the same key for the
    /// same publisher again changes nothing (`Ok(false)`); the same key for
    /// another publisher is a conflict.
    pub async fn trust_key(
        &self,
        public_key: &str,
        publisher: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT publisher FROM trusted_keys WHERE public_key = $1")
                .bind(public_key.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        match existing {
            Some(known) if known == publisher => return Ok(false),
            Some(known) => {
                return Err(StoreError::Conflict(format!(
                    "key {public_key} is already trusted for publisher `{known}`; remove it first to trust it for `{publisher}`"
                )));
            }
            None => {}
        }
        sqlx::query(
            "INSERT INTO trusted_keys (public_key, publisher, added_at, added_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(public_key.to_owned())
        .bind(publisher.to_owned())
        .bind(now)
        .bind(actor.to_owned())
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({ "public_key": public_key, "publisher": publisher });
        audit_in(&mut tx, actor, "trust.key_added", None, &detail, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stops trusting a key; plugins already installed stay installed.
    pub async fn distrust_key(
        &self,
        public_key: &str,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let publisher: Option<String> = sqlx::query_scalar(
            "DELETE FROM trusted_keys WHERE public_key = $1 RETURNING publisher",
        )
        .bind(public_key.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(publisher) = publisher else {
            return Err(StoreError::NotFound(format!("trusted key {public_key}")));
        };
        let detail = serde_json::json!({ "public_key": public_key, "publisher": publisher });
        audit_in(&mut tx, actor, "trust.key_removed", None, &detail, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
