//! Listing contacts with filters, and merging two contacts into one.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError};
use crate::model::Contact;

/// Filters for listing contacts; all optional, combined with AND.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactFilter {
    pub stage: Option<String>,
    pub segment: Option<String>,
    pub min_score: Option<i64>,
    /// Part of the email address (case-insensitive).
    pub q: Option<String>,
    /// Cursor: the last id of the previous page.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// What a merge did, for the caller and the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MergeReport {
    pub survivor: String,
    pub merged: String,
    pub events_moved: u64,
    pub score_changes_moved: u64,
    pub segments_added: u64,
    pub score_added: i64,
}

impl Store {
    /// Contacts in id order, filtered; pass the last id as `after` for the
    /// next page.
    pub async fn list_contacts(&self, filter: &ContactFilter) -> Result<Vec<Contact>, StoreError> {
        // Unused filters bind neutral values rather than NULL, so one
        // statement serves every combination on both databases. The
        // segment test is a correlated EXISTS: an index probe per contact
        // in id order, where PostgreSQL would otherwise plan `IN` badly
        // behind the `OR` (14 s over 1M contacts).
        let rows = sqlx::query(
            "SELECT id FROM contacts \
             WHERE id > $1 AND ($2 = '' OR stage = $2) AND score >= $3 \
               AND ($4 = '' OR EXISTS (SELECT 1 FROM segment_members m WHERE m.segment = $4 AND m.contact_id = contacts.id)) \
               AND ($5 = '' OR email LIKE $5) \
             ORDER BY id LIMIT $6",
        )
        .bind(filter.after.clone().unwrap_or_default())
        .bind(filter.stage.clone().unwrap_or_default())
        .bind(filter.min_score.unwrap_or(i64::MIN))
        .bind(filter.segment.clone().unwrap_or_default())
        .bind(
            filter
                .q
                .as_deref()
                .map(|q| format!("%{}%", q.trim().to_lowercase().replace(['%', '_'], "")))
                .unwrap_or_default(),
        )
        .bind(i64::from(filter.limit.unwrap_or(100).clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        let mut contacts = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let mut contact = self.contact(&id).await?;
            contact.segments = self.memberships(&id).await?;
            contacts.push(contact);
        }
        Ok(contacts)
    }

    /// Moves everything of `merged` onto `survivor` and deletes `merged`:
    /// events, score history, segment memberships, attributes the survivor
    /// lacks, identities the survivor lacks, and event-earned score.
    pub async fn merge_contacts(
        &self,
        survivor: &str,
        merged: &str,
        now: i64,
    ) -> Result<MergeReport, StoreError> {
        if survivor == merged {
            return Err(StoreError::Invalid(
                "a contact cannot be merged into itself".into(),
            ));
        }
        let keep = self.contact(survivor).await?;
        let gone = self.contact(merged).await?;
        let profile_points: i64 = {
            let row = sqlx::query("SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) AS p FROM profile_scores WHERE contact_id = $1")
                .bind(merged.to_owned())
                .fetch_one(&self.pool)
                .await?;
            row.try_get("p")?
        };
        let mut attributes = gone.attributes.clone();
        attributes.extend(keep.attributes.clone());
        let attributes =
            serde_json::to_string(&attributes).map_err(|e| StoreError::Invalid(e.to_string()))?;
        // Profile points are re-earned by the survivor's own profile scoring.
        let score_added = gone.score - profile_points;

        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE contacts SET email = NULL, external_id = NULL WHERE id = $1")
            .bind(merged.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE contacts SET email = $1, external_id = $2, phone = $3, timezone = $4, attributes = $5, \
             score = score + $6, last_seen_at = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(keep.email.clone().or(gone.email.clone()))
        .bind(keep.external_id.clone().or(gone.external_id.clone()))
        .bind(keep.phone.clone().or(gone.phone.clone()))
        .bind(keep.timezone.clone().or(gone.timezone.clone()))
        .bind(attributes)
        .bind(score_added)
        .bind(keep.last_seen_at.max(gone.last_seen_at))
        .bind(now)
        .bind(survivor.to_owned())
        .execute(&mut *tx)
        .await?;
        let events_moved = sqlx::query("UPDATE events SET contact_id = $1 WHERE contact_id = $2")
            .bind(survivor.to_owned())
            .bind(merged.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let score_changes_moved =
            sqlx::query("UPDATE score_changes SET contact_id = $1 WHERE contact_id = $2")
                .bind(survivor.to_owned())
                .bind(merged.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let segments_added = sqlx::query(
            "INSERT INTO segment_members (segment, contact_id, since) \
             SELECT m.segment, $1, m.since FROM segment_members m WHERE m.contact_id = $2 \
             AND NOT EXISTS (SELECT 1 FROM segment_members s WHERE s.segment = m.segment AND s.contact_id = $1)",
        )
        .bind(survivor.to_owned())
        .bind(merged.to_owned())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM contacts WHERE id = $1")
            .bind(merged.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(MergeReport {
            survivor: survivor.to_owned(),
            merged: merged.to_owned(),
            events_moved,
            score_changes_moved,
            segments_added,
            score_added,
        })
    }
}
