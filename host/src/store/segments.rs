//! Reading contacts page by page for segment rebuilds, and segment members.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError};
use crate::model::{ActivityCount, Contact};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Store {
    pub async fn count_contacts(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM contacts")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Contacts in id order after `after` (keyset pagination), with their
    /// segments filled in.
    pub async fn contacts_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Contact>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
             FROM contacts WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or("").to_owned())
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await?;
        let mut contacts = rows
            .iter()
            .map(super::contacts::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if let (Some(first), Some(last)) = (contacts.first(), contacts.last()) {
            let rows = sqlx::query(
                "SELECT contact_id, segment FROM segment_members WHERE contact_id >= $1 AND contact_id <= $2 ORDER BY segment",
            )
            .bind(first.id.clone())
            .bind(last.id.clone())
            .fetch_all(&self.pool)
            .await?;
            let mut by_contact: HashMap<String, Vec<String>> = HashMap::new();
            for row in rows {
                by_contact
                    .entry(row.try_get("contact_id")?)
                    .or_default()
                    .push(row.try_get("segment")?);
            }
            for contact in &mut contacts {
                contact.segments = by_contact.remove(&contact.id).unwrap_or_default();
            }
        }
        Ok(contacts)
    }

    /// Activity summaries of every contact with an id in `first..=last`, in
    /// one query.
    pub async fn activity_range(
        &self,
        first: &str,
        last: &str,
        now: i64,
    ) -> Result<HashMap<String, Vec<ActivityCount>>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact_id, kind, COUNT(*) AS total, \
                    SUM(CASE WHEN at > $1 THEN 1 ELSE 0 END) AS last_24_hours, \
                    SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END) AS last_30_days, \
                    MAX(at) AS last_at \
             FROM events WHERE contact_id >= $3 AND contact_id <= $4 AND at <= $5 \
             GROUP BY contact_id, kind ORDER BY contact_id, kind",
        )
        .bind(now - DAY_MS)
        .bind(now - 30 * DAY_MS)
        .bind(first.to_owned())
        .bind(last.to_owned())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut by_contact: HashMap<String, Vec<ActivityCount>> = HashMap::new();
        for row in rows {
            let contact_id: String = row.try_get("contact_id")?;
            by_contact
                .entry(contact_id)
                .or_default()
                .push(super::events::activity_from_row(&row)?);
        }
        Ok(by_contact)
    }

    pub async fn segment_size(&self, segment: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM segment_members WHERE segment = $1")
            .bind(segment.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Member contact ids in id order after `after`.
    pub async fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact_id FROM segment_members WHERE segment = $1 AND contact_id > $2 ORDER BY contact_id LIMIT $3",
        )
        .bind(segment.to_owned())
        .bind(after.unwrap_or("").to_owned())
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("contact_id")?))
            .collect()
    }
}

impl Store {
    /// Writes a batch of membership changes of one segment and their
    /// `segment.entered` / `segment.left` events in one transaction.
    /// Returns (entered, left).
    pub async fn apply_segment_changes(
        &self,
        segment: &str,
        changes: &[(String, bool)],
        now: i64,
    ) -> Result<(i64, i64), StoreError> {
        let properties = serde_json::json!({ "segment": segment }).to_string();
        let (mut entered, mut left) = (0, 0);
        let mut tx = self.write_tx().await?;
        for (contact_id, member) in changes {
            let changed = if *member {
                sqlx::query(
                    "INSERT INTO segment_members (segment, contact_id, since) SELECT $1, $2, $3 \
                     WHERE NOT EXISTS (SELECT 1 FROM segment_members WHERE segment = $1 AND contact_id = $2)",
                )
                .bind(segment.to_owned())
                .bind(contact_id.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                sqlx::query("DELETE FROM segment_members WHERE segment = $1 AND contact_id = $2")
                    .bind(segment.to_owned())
                    .bind(contact_id.clone())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            };
            if changed == 0 {
                continue;
            }
            let kind = if *member {
                "segment.entered"
            } else {
                "segment.left"
            };
            let event_id = super::new_id("e");
            sqlx::query(
                "INSERT INTO events (id, contact_id, kind, at, properties, received_at) VALUES ($1, $2, $3, $4, $5, $4)",
            )
            .bind(event_id.clone())
            .bind(contact_id.clone())
            .bind(kind)
            .bind(now)
            .bind(properties.clone())
            .execute(&mut *tx)
            .await?;
            super::events::count_event_in(&mut tx, &event_id, now).await?;
            if self.routes_events() {
                let job = super::jobs::RouteEvent { event_id };
                super::jobs::enqueue_in(&mut tx, &job, now, now).await?;
            }
            if *member { entered += 1 } else { left += 1 }
        }
        tx.commit().await?;
        Ok((entered, left))
    }
}
