//! The profile pipeline's storage in batches: the events accepted but not
//! yet applied, their contacts with memberships and activity (a few
//! queries for a whole batch), and the effects — score changes, stages,
//! memberships, the timeline events they cause, route jobs — written in
//! one transaction that also marks the events applied. A crash before
//! that commit leaves the events unapplied (a `process_events` job
//! applies them later); after it, they are applied exactly once.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::events::{DAY_MS, activity_from_row, from_row as event_from_row, placeholders};
use super::{Store, StoreError, new_id};
use crate::model::{ActivityCount, Contact, Event, Fields, Value};

/// Ids per statement: well inside both databases' bind limits.
const CHUNK: usize = 500;

/// One effect of a batch, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum ProfileEffect {
    /// A scorer's change to the contact's score.
    Score {
        contact_id: String,
        binding: String,
        delta: i64,
        reasons: Vec<String>,
        event_id: String,
    },
    /// The score moved the contact to another stage (`stage.changed`).
    Stage {
        contact_id: String,
        from: String,
        to: String,
        score: i64,
    },
    /// A segment rule's answer differs from the stored membership
    /// (`segment.entered` / `segment.left` when the write changed it).
    Membership {
        segment: String,
        contact_id: String,
        member: bool,
    },
}

/// What applying a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every event of the batch was applied, with its effects.
    Done,
    /// Another worker applied some of the events meanwhile: nothing was
    /// written; compute again for the rest.
    Raced,
}

impl Store {
    /// The events among `ids` whose effects are not applied yet, in the
    /// order they were accepted.
    pub async fn unprocessed_events(&self, ids: &[String]) -> Result<Vec<Event>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, contact_id, kind, at, properties FROM events \
                 WHERE processed_at IS NULL AND id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for id in chunk {
                query = query.bind(id.clone());
            }
            for row in query.fetch_all(&self.pool).await? {
                found.push(event_from_row(&row)?);
            }
        }
        let order: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        found.sort_by_key(|e| order.get(e.id.as_str()).copied().unwrap_or(usize::MAX));
        Ok(found)
    }

    /// The contacts of `ids` with their segment memberships, by id (a
    /// deleted contact is missing).
    pub async fn contacts_with_segments(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Contact>, StoreError> {
        let mut contacts = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let list = placeholders(1, chunk.len());
            let sql = format!(
                "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
                 FROM contacts WHERE id IN ({list})"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for id in chunk {
                query = query.bind(id.clone());
            }
            for row in query.fetch_all(&self.pool).await? {
                let contact = super::contacts::from_row(&row)?;
                contacts.insert(contact.id.clone(), contact);
            }
            let sql = format!(
                "SELECT contact_id, segment FROM segment_members WHERE contact_id IN ({list}) \
                 ORDER BY contact_id, segment"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for id in chunk {
                query = query.bind(id.clone());
            }
            for row in query.fetch_all(&self.pool).await? {
                let contact_id: String = row.try_get("contact_id")?;
                if let Some(contact) = contacts.get_mut(&contact_id) {
                    contact.segments.push(row.try_get("segment")?);
                }
            }
        }
        Ok(contacts)
    }

    /// Per contact of `ids`: the activity summary at `now` over its
    /// applied events (events still waiting for their effects are left
    /// out: the batch that applies them adds each in its turn).
    pub async fn applied_activity(
        &self,
        ids: &[String],
        now: i64,
    ) -> Result<HashMap<String, Vec<ActivityCount>>, StoreError> {
        let mut activity: HashMap<String, Vec<ActivityCount>> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT contact_id, kind, COUNT(*) AS total, \
                        SUM(CASE WHEN at > $1 THEN 1 ELSE 0 END) AS last_24_hours, \
                        SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END) AS last_30_days, \
                        MAX(at) AS last_at \
                 FROM events WHERE at <= $3 AND processed_at IS NOT NULL AND contact_id IN ({}) \
                 GROUP BY contact_id, kind ORDER BY contact_id, kind",
                placeholders(4, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(now - DAY_MS)
                .bind(now - 30 * DAY_MS)
                .bind(now);
            for id in chunk {
                query = query.bind(id.clone());
            }
            for row in query.fetch_all(&self.pool).await? {
                let contact_id: String = row.try_get("contact_id")?;
                activity
                    .entry(contact_id)
                    .or_default()
                    .push(activity_from_row(&row)?);
            }
        }
        Ok(activity)
    }

    /// Marks `events` applied and writes `effects`, all in one
    /// transaction, then queues the route jobs of the events and of the
    /// timeline events the effects caused (when journeys exist). The
    /// `process_events` job that was the group's backstop (`backstop`, its
    /// first event), not yet taken by a worker, goes with it.
    pub async fn apply_profile_effects(
        &self,
        events: &[String],
        effects: &[ProfileEffect],
        backstop: Option<&str>,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let routes = self.routes_events();
        let mut tx = self.write_tx().await?;
        let mut claimed = 0;
        for chunk in events.chunks(CHUNK) {
            let sql = format!(
                "UPDATE events SET processed_at = $1 WHERE processed_at IS NULL AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(now);
            for id in chunk {
                query = query.bind(id.clone());
            }
            claimed += query.execute(&mut *tx).await?.rows_affected();
        }
        if usize::try_from(claimed).ok() != Some(events.len()) {
            return Ok(Applied::Raced);
        }
        if let Some(first) = backstop {
            let job = super::jobs::ProcessEvents {
                events: vec![first.to_owned()],
            };
            sqlx::query(
                "DELETE FROM jobs WHERE kind = $1 AND unique_key = $2 AND leased_by IS NULL",
            )
            .bind(<super::jobs::ProcessEvents as super::jobs::JobArgs>::KIND)
            .bind(super::jobs::JobArgs::unique_key(&job))
            .execute(&mut *tx)
            .await?;
        }
        if routes {
            for id in events {
                let job = super::jobs::RouteEvent {
                    event_id: id.clone(),
                };
                super::jobs::enqueue_in(&mut tx, &job, now, now).await?;
            }
        }
        // Scores move by the sum of a contact's changes: a concurrent
        // writer's change to the same contact is kept.
        let mut score_moves: BTreeMap<&str, i64> = BTreeMap::new();
        for effect in effects {
            if let ProfileEffect::Score {
                contact_id,
                binding,
                delta,
                reasons,
                event_id,
            } = effect
            {
                let reasons = serde_json::to_string(reasons)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO score_changes (id, contact_id, binding, delta, reasons, event_id, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(new_id("s"))
                .bind(contact_id.clone())
                .bind(binding.clone())
                .bind(*delta)
                .bind(reasons)
                .bind(event_id.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                *score_moves.entry(contact_id).or_default() += delta;
            }
        }
        for (contact_id, delta) in score_moves {
            sqlx::query("UPDATE contacts SET score = score + $1, updated_at = $2 WHERE id = $3")
                .bind(delta)
                .bind(now)
                .bind(contact_id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        for effect in effects {
            match effect {
                ProfileEffect::Score { .. } => {}
                ProfileEffect::Stage {
                    contact_id,
                    from,
                    to,
                    score,
                } => {
                    sqlx::query("UPDATE contacts SET stage = $1, updated_at = $2 WHERE id = $3")
                        .bind(to.clone())
                        .bind(now)
                        .bind(contact_id.clone())
                        .execute(&mut *tx)
                        .await?;
                    let score = score.to_string();
                    let properties = [("from", from.as_str()), ("to", to), ("score", &score)];
                    record_in(
                        &mut tx,
                        contact_id,
                        "stage.changed",
                        &properties,
                        now,
                        routes,
                    )
                    .await?;
                }
                ProfileEffect::Membership {
                    segment,
                    contact_id,
                    member,
                } => {
                    let written = if *member {
                        sqlx::query(
                            "INSERT INTO segment_members (segment, contact_id, since) \
                             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        )
                        .bind(segment.clone())
                        .bind(contact_id.clone())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                    } else {
                        sqlx::query(
                            "DELETE FROM segment_members WHERE segment = $1 AND contact_id = $2",
                        )
                        .bind(segment.clone())
                        .bind(contact_id.clone())
                        .execute(&mut *tx)
                        .await?
                    };
                    let changed = written.rows_affected() > 0;
                    if changed {
                        let kind = if *member {
                            "segment.entered"
                        } else {
                            "segment.left"
                        };
                        record_in(
                            &mut tx,
                            contact_id,
                            kind,
                            &[("segment", segment)],
                            now,
                            routes,
                        )
                        .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        self.jobs_wake.notify();
        Ok(Applied::Done)
    }
}

/// Writes an event nachfass caused about the contact, in the caller's
/// transaction.
async fn record_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    contact_id: &str,
    kind: &str,
    properties: &[(&str, &str)],
    now: i64,
    routes: bool,
) -> Result<(), StoreError> {
    let properties: Fields = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
        .collect();
    let input = super::EventInput {
        kind: kind.to_owned(),
        at: Some(now),
        properties,
        contact_id: Some(contact_id.to_owned()),
        system: true,
        ..super::EventInput::default()
    };
    super::events::store_in(tx, &input, now, routes)
        .await
        .map(drop)
}
