//! Listing contacts with filters, and merging two contacts into one.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError};
use crate::model::Contact;
use crate::model::status::ConsentStatus;

/// Filters for listing contacts; all optional, combined with AND.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
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
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MergeReport {
    pub survivor: String,
    pub merged: String,
    pub events_moved: u64,
    pub score_changes_moved: u64,
    pub segments_added: u64,
    pub score_added: i64,
    /// Sent and queued messages now on the survivor: their unsubscribe,
    /// click and open links keep working.
    pub messages_moved: u64,
    pub consents_moved: u64,
    pub suppressions_moved: u64,
}

/// How much a consent state forbids: a merge keeps the stricter one of
/// the two contacts, so a withdrawal is never lost to a grant.
fn strictness(status: ConsentStatus) -> u8 {
    match status {
        ConsentStatus::Granted => 0,
        ConsentStatus::Pending => 1,
        ConsentStatus::Expired => 2,
        ConsentStatus::Withdrawn => 3,
    }
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
        let moved = move_messaging(&mut tx, survivor, merged, now).await?;
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
            messages_moved: moved.messages,
            consents_moved: moved.consents,
            suppressions_moved: moved.suppressions,
        })
    }
}

struct Moved {
    messages: u64,
    consents: u64,
    suppressions: u64,
}

/// Re-points the merged contact's journey runs, messages and consent
/// requests to the survivor and folds its consents and suppressions in.
async fn move_messaging(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    survivor: &str,
    merged: &str,
    now: i64,
) -> Result<Moved, StoreError> {
    let (survivor, merged) = (survivor.to_owned(), merged.to_owned());
    // One open run per journey and contact: the merged contact's run of a
    // journey the survivor is already in ends here.
    sqlx::query(
        "UPDATE journey_runs SET status = 'exited', ended_at = $1, exit_reason = 'contact merged' \
         WHERE contact_id = $2 AND ended_at IS NULL AND journey IN \
           (SELECT journey FROM journey_runs WHERE contact_id = $3 AND ended_at IS NULL)",
    )
    .bind(now)
    .bind(merged.clone())
    .bind(survivor.clone())
    .execute(&mut **tx)
    .await?;
    for table in ["journey_runs", "consent_requests"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET contact_id = $1 WHERE contact_id = $2"
        )))
        .bind(survivor.clone())
        .bind(merged.clone())
        .execute(&mut **tx)
        .await?;
    }
    let messages = sqlx::query("UPDATE outbox SET contact_id = $1 WHERE contact_id = $2")
        .bind(survivor.clone())
        .bind(merged.clone())
        .execute(&mut **tx)
        .await?
        .rows_affected();

    let consent_rows =
        sqlx::query("SELECT channel, purpose, status FROM consents WHERE contact_id = $1")
            .bind(merged.clone())
            .fetch_all(&mut **tx)
            .await?;
    let mut consents = 0;
    for row in consent_rows {
        let (channel, purpose, status): (String, String, ConsentStatus) = (
            row.try_get("channel")?,
            row.try_get("purpose")?,
            row.try_get("status")?,
        );
        let kept = sqlx::query(
            "SELECT status FROM consents WHERE contact_id = $1 AND channel = $2 AND purpose = $3",
        )
        .bind(survivor.clone())
        .bind(channel.clone())
        .bind(purpose.clone())
        .fetch_optional(&mut **tx)
        .await?;
        let take = match &kept {
            None => true,
            Some(kept) => strictness(status) > strictness(kept.try_get("status")?),
        };
        if !take {
            continue;
        }
        if kept.is_some() {
            sqlx::query(
                "DELETE FROM consents WHERE contact_id = $1 AND channel = $2 AND purpose = $3",
            )
            .bind(survivor.clone())
            .bind(channel.clone())
            .bind(purpose.clone())
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query(
            "UPDATE consents SET contact_id = $1 WHERE contact_id = $2 AND channel = $3 AND purpose = $4",
        )
        .bind(survivor.clone())
        .bind(merged.clone())
        .bind(channel)
        .bind(purpose)
        .execute(&mut **tx)
        .await?;
        consents += 1;
    }
    // Suppressions only ever add up: any reason on either contact stays,
    // with the wider scope where both have it.
    sqlx::query(
        "UPDATE suppressions SET scope = 'all' WHERE contact_id = $1 AND scope <> 'all' AND EXISTS \
         (SELECT 1 FROM suppressions s WHERE s.contact_id = $2 AND s.channel = suppressions.channel \
          AND s.reason = suppressions.reason AND s.scope = 'all')",
    )
    .bind(survivor.clone())
    .bind(merged.clone())
    .execute(&mut **tx)
    .await?;
    let suppressions = sqlx::query(
        "INSERT INTO suppressions (contact_id, channel, reason, scope, at) \
         SELECT $1, s.channel, s.reason, s.scope, s.at FROM suppressions s WHERE s.contact_id = $2 \
         AND NOT EXISTS (SELECT 1 FROM suppressions k WHERE k.contact_id = $1 AND k.channel = s.channel AND k.reason = s.reason)",
    )
    .bind(survivor)
    .bind(merged)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(Moved {
        messages,
        consents,
        suppressions,
    })
}
