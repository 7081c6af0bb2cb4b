//! The profile pipeline's storage in batches: the events accepted but not
//! yet applied, their contacts with memberships and activity (a few
//! queries for a whole batch), and the effects — score changes, stages,
//! memberships, the timeline events they cause, route jobs — written in
//! one transaction that also marks the events applied. A crash before
//! that commit leaves the events unapplied (a `process_events` job
//! applies them later); after it, they are applied exactly once.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::bulk::{self, Col};
use super::events::{DAY_MS, activity_from_json, from_row as event_from_row};
use super::{Dialect, Store, StoreError, WrittenGroup, cached_plans_from_here_in, new_id};
use crate::model::{ActivityCount, Contact, Event, Fields, Value};

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

/// Contacts by id, and the activity summaries of those that have any.
pub type Profiles = (
    HashMap<String, Contact>,
    HashMap<String, Vec<ActivityCount>>,
);

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
        let sql = format!(
            "SELECT id, contact_id, kind, at, properties FROM events \
             WHERE processed_at IS NULL AND {}",
            bulk::json_in(self.dialect, "id", 1)
        );
        let mut found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bulk::to_json(ids)?)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let order: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        found.sort_by_key(|e| order.get(e.id.as_str()).copied().unwrap_or(usize::MAX));
        Ok(found)
    }

    /// The contacts of `ids` (a deleted contact is missing) with their
    /// segment memberships, and their activity summaries at `now` over
    /// their applied events, read on `conn` in one query.
    ///
    /// Events still waiting for their effects are left out of the
    /// activity: the batch that applies them adds each in its turn.
    /// `at + 0`: the time bound must never pick the index on `at`. Every
    /// stored event is due by now, so that index leads through the whole
    /// table; PostgreSQL took it whenever its statistics were older than
    /// the table's growth (seen at 2-3.5 ms a group in the ingest bench, a
    /// figure that grows with the table). The contact's index is the way.
    pub async fn profiles_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        ids: &[String],
        now: i64,
    ) -> Result<Profiles, StoreError> {
        // Per contact, its segments' names and its activity (one array of
        // kind, total, last 24 hours, last 30 days, last at per kind), each
        // as one JSON array.
        let (segments, activity) = match self.dialect {
            Dialect::Sqlite => (
                "(SELECT json_group_array(m.segment) FROM segment_members m \
                 WHERE m.contact_id = contacts.id)",
                "(SELECT json_group_array(json_array(kind, total, last_24_hours, last_30_days, last_at)) \
                 FROM (SELECT e.kind AS kind, COUNT(*) AS total, SUM(e.at > $2) AS last_24_hours, \
                              SUM(e.at > $3) AS last_30_days, MAX(e.at) AS last_at \
                       FROM events e WHERE e.contact_id = contacts.id AND e.at + 0 <= $4 \
                         AND e.processed_at IS NOT NULL GROUP BY e.kind))",
            ),
            Dialect::Postgres => (
                "(SELECT COALESCE(jsonb_agg(m.segment), '[]')::text \
                 FROM segment_members m WHERE m.contact_id = contacts.id)",
                "(SELECT COALESCE(jsonb_agg(jsonb_build_array(kind, total, last_24_hours, last_30_days, last_at)), '[]')::text \
                 FROM (SELECT e.kind AS kind, COUNT(*) AS total, \
                              SUM(CASE WHEN e.at > $2 THEN 1 ELSE 0 END) AS last_24_hours, \
                              SUM(CASE WHEN e.at > $3 THEN 1 ELSE 0 END) AS last_30_days, MAX(e.at) AS last_at \
                       FROM events e WHERE e.contact_id = contacts.id AND e.at + 0 <= $4 \
                         AND e.processed_at IS NOT NULL GROUP BY e.kind) AS a)",
            ),
        };
        let sql = format!(
            "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at, \
                    {segments} AS segments, {activity} AS activity \
             FROM contacts WHERE {}",
            bulk::json_in(self.dialect, "id", 1)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bulk::to_json(ids)?)
            .bind(now - DAY_MS)
            .bind(now - 30 * DAY_MS)
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
        let invalid =
            |e: serde_json::Error| StoreError::Invalid(format!("stored profile is not valid: {e}"));
        let (mut contacts, mut activities) = (HashMap::new(), HashMap::new());
        for row in rows {
            let mut contact = super::contacts::from_row(&row)?;
            let segments: String = row.try_get("segments")?;
            contact.segments = serde_json::from_str(&segments).map_err(invalid)?;
            let activity: String = row.try_get("activity")?;
            let mut activity =
                activity_from_json(serde_json::from_str(&activity).map_err(invalid)?);
            // In name order, as the rest of the pipeline keeps them; the
            // aggregates promise no order.
            contact.segments.sort();
            activity.sort_by(|a, b| a.kind.cmp(&b.kind));
            if !activity.is_empty() {
                activities.insert(contact.id.clone(), activity);
            }
            contacts.insert(contact.id.clone(), contact);
        }
        Ok((contacts, activities))
    }

    /// Marks `events` applied and writes `effects`, all in one
    /// transaction with one statement per table, then queues the route
    /// jobs of the events and of the timeline events the effects caused
    /// (once a journey exists). The `process_events` job that was the
    /// group's backstop (`backstop`, its first event), not yet taken by a
    /// worker, goes with it.
    pub async fn apply_profile_effects(
        &self,
        events: &[String],
        effects: &[ProfileEffect],
        backstop: Option<&str>,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let dialect = self.dialect;
        let mut tx = self.write_tx().await?;
        // The claim: only the worker whose update takes every event of the
        // batch writes its effects.
        let sql = format!(
            "UPDATE events SET processed_at = $1 WHERE processed_at IS NULL AND {}",
            bulk::json_in(dialect, "id", 2)
        );
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(bulk::to_json(events)?)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
        self.write_profile_effects_in(&mut tx, events, effects, None, now)
            .await?;
        tx.commit().await?;
        self.jobs_wake.notify();
        Ok(Applied::Done)
    }

    /// The writes of [`Store::apply_profile_effects`] in `tx`, for
    /// `events`, which are marked applied already or are the own events of
    /// `group`: the effects, the timeline events they caused, and the route
    /// jobs of all (once a journey exists). `group`: a group written in `tx`
    /// with [`super::Applying::InTransaction`], whose events are stored here
    /// with the caused ones and counted on their days with them.
    pub async fn write_profile_effects_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        events: &[String],
        effects: &[ProfileEffect],
        group: Option<&WrittenGroup>,
        now: i64,
    ) -> Result<(), StoreError> {
        let dialect = self.dialect;
        let routes = match group {
            Some(group) => group.routes,
            None => self.routes_events_in(tx).await?,
        };
        // Planned for this run: a cached plan, costed when the table was
        // small, goes on reading the whole of it (seen in a new database).
        update_contacts(tx, dialect, effects, now).await?;
        // Inserts follow, each row checked by its foreign key.
        cached_plans_from_here_in(tx, dialect).await?;
        let changed = write_memberships(tx, dialect, effects, now).await?;

        // The timeline events the effects caused, in the order they happened.
        let mut caused: Vec<(String, &str, &'static str, Fields)> = Vec::new();
        for (index, effect) in effects.iter().enumerate() {
            match effect {
                ProfileEffect::Score { .. } => {}
                ProfileEffect::Stage {
                    contact_id,
                    from,
                    to,
                    score,
                } => {
                    let properties = [
                        ("from", from.clone()),
                        ("to", to.clone()),
                        ("score", score.to_string()),
                    ];
                    caused.push((
                        new_id("e"),
                        contact_id,
                        "stage.changed",
                        text_fields(properties),
                    ));
                }
                ProfileEffect::Membership {
                    segment,
                    contact_id,
                    member,
                } if changed.contains(&index) => {
                    let kind = if *member {
                        "segment.entered"
                    } else {
                        "segment.left"
                    };
                    caused.push((
                        new_id("e"),
                        contact_id,
                        kind,
                        text_fields([("segment", segment.clone())]),
                    ));
                }
                ProfileEffect::Membership { .. } => {}
            }
        }
        let (mut rows, system) = match group {
            Some(group) => group.unwritten_rows(now)?,
            None => (Vec::new(), Vec::new()),
        };
        // The group's events come first: they caused the others.
        let caused_rows = caused
            .iter()
            .map(|(id, contact_id, kind, properties)| {
                Ok(bulk::EventRow {
                    id,
                    contact_id,
                    kind,
                    at: now,
                    properties: serde_json::to_string(properties)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?
                        .into(),
                    client_event_id: None,
                    received_at: now,
                    processed_at: Some(now),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        rows.extend(caused_rows);
        // The rest in one statement on PostgreSQL (see `run_writes_in`).
        let mut writes = Vec::new();
        writes.extend(score_changes_write(dialect, effects, now)?);
        writes.extend(bulk::events_write(dialect, &rows)?);
        if routes {
            // In the order they happened: the group's system events (stored
            // as they came), then the applied ones, then what they caused.
            let jobs = system
                .iter()
                .copied()
                .chain(events.iter().map(String::as_str))
                .chain(caused.iter().map(|(id, ..)| id.as_str()))
                .map(|id| {
                    let job = super::jobs::RouteEvent {
                        event_id: id.to_owned(),
                    };
                    super::jobs::NewJob::of(&job, now)
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            writes.extend(super::jobs::jobs_write(dialect, &jobs, now)?);
        }
        // Every row inserted here: the caused events, and the group's.
        // Last: the counter rows stay locked until the commit.
        writes.extend(bulk::days_write(
            dialect,
            rows.iter().map(|row| (row.id, row.at)),
        )?);
        bulk::run_writes_in(tx, dialect, writes).await?;
        Ok(())
    }
}

fn text_fields<const N: usize>(properties: [(&str, String); N]) -> Fields {
    properties
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Text(v)))
        .collect()
}

/// The insert of the scorers' changes, one row each, if any.
fn score_changes_write(
    dialect: Dialect,
    effects: &[ProfileEffect],
    now: i64,
) -> Result<Option<bulk::Write>, StoreError> {
    #[derive(Serialize)]
    struct ScoreRow<'a> {
        id: String,
        contact_id: &'a str,
        binding: &'a str,
        delta: i64,
        reasons: String,
        event_id: &'a str,
    }
    let mut rows = Vec::new();
    for effect in effects {
        if let ProfileEffect::Score {
            contact_id,
            binding,
            delta,
            reasons,
            event_id,
        } = effect
        {
            rows.push(ScoreRow {
                id: new_id("s"),
                contact_id,
                binding,
                delta: *delta,
                reasons: serde_json::to_string(reasons)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                event_id,
            });
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let from = bulk::json_rows(
        dialect,
        1,
        &[
            ("id", Col::Text),
            ("contact_id", Col::Text),
            ("binding", Col::Text),
            ("delta", Col::Int),
            ("reasons", Col::Text),
            ("event_id", Col::Text),
        ],
    );
    let sql = format!(
        "INSERT INTO score_changes (id, contact_id, binding, delta, reasons, event_id, at) \
         SELECT j.id, j.contact_id, j.binding, j.delta, j.reasons, j.event_id, $2 FROM {from}"
    );
    Ok(Some(bulk::Write {
        sql,
        params: vec![
            bulk::Param::Text(bulk::to_json(&rows)?),
            bulk::Param::Int(now),
        ],
    }))
}

/// Scores move by the sum of a contact's changes (a concurrent writer's
/// change to the same contact is kept) and stages to the last one: one
/// statement, in contact id order.
async fn update_contacts(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    effects: &[ProfileEffect],
    now: i64,
) -> Result<(), StoreError> {
    #[derive(Default, Serialize)]
    struct ContactRow<'a> {
        id: &'a str,
        delta: i64,
        stage: Option<&'a str>,
    }
    let mut rows: BTreeMap<&str, ContactRow<'_>> = BTreeMap::new();
    for effect in effects {
        match effect {
            ProfileEffect::Score {
                contact_id, delta, ..
            } => {
                let row = rows.entry(contact_id).or_default();
                row.id = contact_id;
                row.delta += delta;
            }
            ProfileEffect::Stage { contact_id, to, .. } => {
                let row = rows.entry(contact_id).or_default();
                row.id = contact_id;
                row.stage = Some(to);
            }
            ProfileEffect::Membership { .. } => {}
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let rows: Vec<ContactRow<'_>> = rows.into_values().collect();
    let from = bulk::json_rows(
        dialect,
        1,
        &[("id", Col::Text), ("delta", Col::Int), ("stage", Col::Text)],
    );
    let keyed = bulk::rows_match(dialect, "contacts.id", 1, "id");
    let sql = format!(
        "UPDATE contacts SET score = contacts.score + j.delta, \
         stage = COALESCE(j.stage, contacts.stage), updated_at = $2 \
         FROM {from} WHERE contacts.id = j.id{keyed}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(bulk::to_json(&rows)?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the membership changes; answers which of them (by index in
/// `effects`) changed a stored membership, as one insert or delete at a
/// time would have: a pair's first change only when the stored row
/// differed (a concurrent writer may have made it already), each later
/// one always (it undoes the one before).
async fn write_memberships(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    effects: &[ProfileEffect],
    now: i64,
) -> Result<HashSet<usize>, StoreError> {
    #[derive(Serialize)]
    struct MemberRow<'a> {
        segment: &'a str,
        contact_id: &'a str,
    }
    // Per (segment, contact): the indexes of its changes, in order.
    let mut pairs: BTreeMap<(&str, &str), Vec<(usize, bool)>> = BTreeMap::new();
    for (index, effect) in effects.iter().enumerate() {
        if let ProfileEffect::Membership {
            segment,
            contact_id,
            member,
        } = effect
        {
            pairs
                .entry((segment.as_str(), contact_id.as_str()))
                .or_default()
                .push((index, *member));
        }
    }
    let mut changed = HashSet::new();
    if pairs.is_empty() {
        return Ok(changed);
    }
    // First the first change of every pair, which may find the row as
    // wanted already; then the last state of pairs that ended elsewhere.
    let (mut enter, mut leave) = (Vec::new(), Vec::new());
    let (mut enter_after, mut leave_after) = (Vec::new(), Vec::new());
    for (&(segment, contact_id), changes) in &pairs {
        let row = MemberRow {
            segment,
            contact_id,
        };
        let (Some(&(_, first)), Some(&(_, last))) = (changes.first(), changes.last()) else {
            continue;
        };
        changed.extend(changes.iter().skip(1).map(|(index, _)| *index));
        let after = (last != first).then_some(MemberRow {
            segment,
            contact_id,
        });
        if first {
            enter.push(row);
        } else {
            leave.push(row);
        }
        match after {
            Some(row) if last => enter_after.push(row),
            Some(row) => leave_after.push(row),
            None => {}
        }
    }
    let from = bulk::json_rows(
        dialect,
        1,
        &[("segment", Col::Text), ("contact_id", Col::Text)],
    );
    let insert = format!(
        "INSERT INTO segment_members (segment, contact_id, since) \
         SELECT j.segment, j.contact_id, $2 FROM {from} WHERE true \
         ON CONFLICT DO NOTHING RETURNING segment, contact_id"
    );
    let delete = format!(
        "DELETE FROM segment_members WHERE (segment, contact_id) IN \
         (SELECT j.segment, j.contact_id FROM {from}) RETURNING segment, contact_id"
    );
    let mut written = Vec::new();
    if !enter.is_empty() {
        written.extend(
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(bulk::to_json(&enter)?)
                .bind(now)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    if !leave.is_empty() {
        written.extend(
            sqlx::query(sqlx::AssertSqlSafe(delete.as_str()))
                .bind(bulk::to_json(&leave)?)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    for row in written {
        let segment: String = row.try_get("segment")?;
        let contact_id: String = row.try_get("contact_id")?;
        if let Some(changes) = pairs.get(&(segment.as_str(), contact_id.as_str()))
            && let Some(&(index, _)) = changes.first()
        {
            changed.insert(index);
        }
    }
    if !enter_after.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
            .bind(bulk::to_json(&enter_after)?)
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
    }
    if !leave_after.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(delete.as_str()))
            .bind(bulk::to_json(&leave_after)?)
            .fetch_all(&mut **tx)
            .await?;
    }
    Ok(changed)
}
