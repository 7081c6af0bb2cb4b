//! Reading contacts page by page for segment rebuilds, and segment members.

use std::collections::HashMap;

use sqlx::Row;

use super::jobs::{ClaimedJob, renew_lease_in};
use super::tasks::advance_cursor_in;
use super::{Dialect, Store, StoreError, cached_plans_from_here_in, new_id};
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
        let page = self.page(after, limit, None).await?;
        Ok(page.into_iter().map(|(contact, _)| contact).collect())
    }

    /// [`Store::contacts_page`] with each contact's activity summary as of
    /// `now`: what a segment rule is asked about.
    pub async fn contacts_with_activity(
        &self,
        after: Option<&str>,
        limit: u32,
        now: i64,
    ) -> Result<Vec<(Contact, Vec<ActivityCount>)>, StoreError> {
        self.page(after, limit, Some(now)).await
    }

    /// What a segment rule is asked about: [`Store::contacts_page`] with
    /// each contact's activity summary as of `activity_at`, or with none
    /// (and without summing any) for a rule that does not read activity.
    pub async fn contacts_for_rule(
        &self,
        after: Option<&str>,
        limit: u32,
        activity_at: Option<i64>,
    ) -> Result<Vec<(Contact, Vec<ActivityCount>)>, StoreError> {
        self.page(after, limit, activity_at).await
    }

    /// Up to `limit` (1 to 10,000) contacts after `after`, in id order,
    /// each with its activity as of `activity_at` (none without it).
    async fn page(
        &self,
        after: Option<&str>,
        limit: u32,
        activity_at: Option<i64>,
    ) -> Result<Vec<(Contact, Vec<ActivityCount>)>, StoreError> {
        let limit = i64::from(limit.clamp(1, 10_000));
        match self.dialect {
            Dialect::Sqlite => self.page_as_json(after, limit, activity_at).await,
            Dialect::Postgres => self.page_by_rows(after, limit, activity_at).await,
        }
    }

    /// SQLite: the whole page as one JSON value, built by SQLite in one
    /// statement. sqlx hands each row of a SQLite statement from its worker
    /// thread to the caller through a channel, and those hand-offs (and
    /// the row decoding) cost more than reading the row; one row per page
    /// leaves SQLite's own reads, each contact's segments and activity found
    /// through its indexes.
    async fn page_as_json(
        &self,
        after: Option<&str>,
        limit: i64,
        activity_at: Option<i64>,
    ) -> Result<Vec<(Contact, Vec<ActivityCount>)>, StoreError> {
        const SQL: &str = "SELECT json_group_array(json_array(\
               json_object('id', c.id, 'email', c.email, 'external_id', c.external_id, \
                 'phone', c.phone, 'timezone', c.timezone, 'score', c.score, 'stage', c.stage, \
                 'attributes', json(c.attributes), 'created_at', c.created_at, \
                 'last_seen_at', c.last_seen_at, \
                 'segments', json((SELECT json_group_array(m.segment) \
                   FROM segment_members m WHERE m.contact_id = c.id))), \
               CASE WHEN $3 IS NULL THEN json('[]') ELSE json((\
                 SELECT json_group_array(json_array(kind, total, last_24_hours, last_30_days, last_at)) \
                 FROM (SELECT e.kind AS kind, COUNT(*) AS total, \
                         SUM(e.at > $4) AS last_24_hours, SUM(e.at > $5) AS last_30_days, \
                         MAX(e.at) AS last_at \
                       FROM events e WHERE e.contact_id = c.id AND e.at <= $3 \
                       GROUP BY e.kind ORDER BY e.kind))) END)) \
             FROM (SELECT * FROM contacts WHERE id > $1 ORDER BY id LIMIT $2) AS c";
        let now = activity_at.unwrap_or(0);
        let json: String = sqlx::query_scalar(SQL)
            .bind(after.unwrap_or("").to_owned())
            .bind(limit)
            .bind(activity_at)
            .bind(now - DAY_MS)
            .bind(now - 30 * DAY_MS)
            .fetch_one(&self.pool)
            .await?;
        let mut page: Vec<(Contact, Vec<super::events::ActivityJson>)> =
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Invalid(format!("stored contacts are not valid: {e}")))?;
        // Sorted here rather than by SQLite, which would sort through a
        // temporary b-tree per page and per contact; the page comes in id
        // order already, so this is one pass.
        page.sort_by(|(a, _), (b, _)| a.id.cmp(&b.id));
        Ok(page
            .into_iter()
            .map(|(mut contact, activity)| {
                contact.segments.sort();
                (contact, super::events::activity_from_json(activity))
            })
            .collect())
    }

    /// PostgreSQL: the page's contacts, their memberships and (with
    /// `activity_at`) their activity, one query each over the page's id range.
    async fn page_by_rows(
        &self,
        after: Option<&str>,
        limit: i64,
        activity_at: Option<i64>,
    ) -> Result<Vec<(Contact, Vec<ActivityCount>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
             FROM contacts WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or("").to_owned())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut contacts = rows
            .iter()
            .map(super::contacts::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(first), Some(last)) = (contacts.first(), contacts.last()) else {
            return Ok(Vec::new());
        };
        let (first, last) = (first.id.clone(), last.id.clone());
        // Ordered along the by-contact index: ordered by segment alone, the
        // whole primary key (segment, contact_id) is walked for every page,
        // and a rebuild becomes quadratic.
        let rows = sqlx::query(
            "SELECT contact_id, segment FROM segment_members WHERE contact_id >= $1 AND contact_id <= $2 \
             ORDER BY contact_id, segment",
        )
        .bind(first.clone())
        .bind(last.clone())
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
        let mut activity = match activity_at {
            Some(now) => self.activity_range(&first, &last, now).await?,
            None => HashMap::new(),
        };
        Ok(contacts
            .into_iter()
            .map(|contact| {
                let summary = activity.remove(&contact.id).unwrap_or_default();
                (contact, summary)
            })
            .collect())
    }

    /// Activity summaries of every contact with an id in `first..=last`, in
    /// one query (`at + 0`: see [`Store::applied_activity`]).
    async fn activity_range(
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
             FROM events WHERE contact_id >= $3 AND contact_id <= $4 AND at + 0 <= $5 \
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

/// Where a rebuild task records a page, in the page's own transaction: its
/// cursor and progress, and the job's lease (renewed by its length).
pub struct TaskStep<'a> {
    pub job: &'a ClaimedJob,
    pub task: &'a str,
    /// The cursor the page started after (`None`: the first page).
    pub from: Option<&'a str>,
    /// The last contact id of the page.
    pub cursor: &'a str,
    pub evaluated: i64,
}

/// What a rebuild page changed: contacts that entered and left the segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageChanges {
    pub entered: i64,
    pub left: i64,
}

impl Store {
    /// Applies one rebuild page in one transaction: the contacts in
    /// `enter` become members, those in `leave` stop being members, each
    /// change gets its `segment.entered` / `segment.left` event, and the
    /// task (if any) records the page. Set-based: a handful of statements
    /// per page whatever its size, the ids passed as one JSON array.
    ///
    /// Idempotent per contact: a contact that is already a member (or
    /// already gone, say by a live evaluation meanwhile) changes nothing
    /// and gets no event. `None`: the task's lease was lost, or another
    /// runner of the task moved its cursor first (a lease that ran out
    /// while this one worked); nothing was written, and the caller stops.
    pub async fn apply_rebuild_page(
        &self,
        segment: &str,
        enter: &[&str],
        leave: &[&str],
        step: Option<TaskStep<'_>>,
        now: i64,
    ) -> Result<Option<PageChanges>, StoreError> {
        let mut tx = self.write_tx().await?;
        if !(enter.is_empty() && leave.is_empty()) {
            cached_plans_from_here_in(&mut tx, self.dialect).await?;
        }
        if let Some(step) = &step
            && !renew_lease_in(&mut tx, step.job, now + step.job.lease_ms).await?
        {
            return Ok(None);
        }
        let changes = self
            .write_page_changes(&mut tx, segment, enter, leave, now)
            .await?;
        if let Some(step) = step {
            let counts = [step.evaluated, changes.entered, changes.left];
            let advanced =
                advance_cursor_in(&mut tx, step.task, step.from, step.cursor, counts, now).await?;
            if !advanced {
                return Ok(None);
            }
        }
        tx.commit().await?;
        if changes.routed {
            self.jobs_wake.notify();
        }
        Ok(Some(PageChanges {
            entered: changes.entered,
            left: changes.left,
        }))
    }

    /// The membership changes of a rebuild page and their events, in the
    /// caller's transaction.
    async fn write_page_changes(
        &self,
        tx: &mut sqlx::AnyConnection,
        segment: &str,
        enter: &[&str],
        leave: &[&str],
        now: i64,
    ) -> Result<Written, StoreError> {
        let entered = if enter.is_empty() {
            Vec::new()
        } else {
            let sql = match self.dialect {
                Dialect::Sqlite => {
                    // `WHERE true`: SQLite's grammar needs it before an
                    // upsert clause on INSERT … SELECT.
                    "INSERT INTO segment_members (segment, contact_id, since) \
                     SELECT $1, value, $2 FROM json_each($3) WHERE true \
                     ON CONFLICT DO NOTHING RETURNING contact_id"
                }
                Dialect::Postgres => {
                    "INSERT INTO segment_members (segment, contact_id, since) \
                     SELECT $1, id, $2 FROM jsonb_array_elements_text($3::jsonb) AS ids(id) \
                     ON CONFLICT DO NOTHING RETURNING contact_id"
                }
            };
            sqlx::query_scalar::<_, String>(sql)
                .bind(segment.to_owned())
                .bind(now)
                .bind(json_array(enter))
                .fetch_all(&mut *tx)
                .await?
        };
        let left = if leave.is_empty() {
            Vec::new()
        } else {
            let sql = match self.dialect {
                Dialect::Sqlite => {
                    "DELETE FROM segment_members WHERE segment = $1 \
                     AND contact_id IN (SELECT value FROM json_each($2)) RETURNING contact_id"
                }
                Dialect::Postgres => {
                    "DELETE FROM segment_members WHERE segment = $1 \
                     AND contact_id IN (SELECT jsonb_array_elements_text($2::jsonb)) RETURNING contact_id"
                }
            };
            sqlx::query_scalar::<_, String>(sql)
                .bind(segment.to_owned())
                .bind(json_array(leave))
                .fetch_all(&mut *tx)
                .await?
        };
        let properties = serde_json::json!({ "segment": segment }).to_string();
        let mut event_ids = Vec::with_capacity(entered.len() + left.len());
        for (kind, contacts) in [("segment.entered", &entered), ("segment.left", &left)] {
            if contacts.is_empty() {
                continue;
            }
            let rows: Vec<(String, &str)> = contacts
                .iter()
                .map(|contact| (new_id("e"), contact.as_str()))
                .collect();
            let sql = match self.dialect {
                Dialect::Sqlite => {
                    "INSERT INTO events (id, contact_id, kind, at, properties, received_at, processed_at) \
                     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), $2, $3, $4, $3, $3 \
                     FROM jsonb_each($1)"
                }
                Dialect::Postgres => {
                    "INSERT INTO events (id, contact_id, kind, at, properties, received_at, processed_at) \
                     SELECT e->>0, e->>1, $2, $3, $4, $3, $3 FROM jsonb_array_elements($1::jsonb) AS rows(e)"
                }
            };
            let json = serde_json::to_string(&rows)
                .map_err(|e| StoreError::Invalid(format!("event rows: {e}")))?;
            sqlx::query(sql)
                .bind(json)
                .bind(kind)
                .bind(now)
                .bind(properties.clone())
                .execute(&mut *tx)
                .await?;
            event_ids.extend(rows.into_iter().map(|(id, _)| id));
        }
        if let Some(first) = event_ids.first() {
            count_events_in(tx, first, now, event_ids.len()).await?;
        }
        // Events nachfass writes about a contact are born processed (no
        // profile effects of their own) and routed to journeys at once.
        let routed = !event_ids.is_empty() && self.routes_events_in(tx).await?;
        if routed {
            let jobs: Vec<super::jobs::RouteEvent> = event_ids
                .into_iter()
                .map(|event_id| super::jobs::RouteEvent { event_id })
                .collect();
            super::jobs::enqueue_many_in(tx, self.dialect, &jobs, now, now).await?;
        }
        Ok(Written {
            entered: i64::try_from(entered.len()).unwrap_or(i64::MAX),
            left: i64::try_from(left.len()).unwrap_or(i64::MAX),
            routed,
        })
    }
}

/// What [`Store::write_page_changes`] wrote.
struct Written {
    entered: i64,
    left: i64,
    /// Route jobs were queued: the scheduler is woken after the commit.
    routed: bool,
}

/// `["a","b"]`: ids handed to a statement as one parameter, so a page of
/// any size is one prepared statement (and stays under bind limits).
fn json_array(ids: &[&str]) -> String {
    serde_json::Value::from(ids).to_string()
}

/// Counts `n` touchpoints on their day for the dashboard, on one shard
/// (any shard counts the same; the first event's id picks it, so
/// concurrent pages rarely wait on the same row).
async fn count_events_in(
    conn: &mut sqlx::AnyConnection,
    first_event_id: &str,
    at: i64,
    n: usize,
) -> Result<(), StoreError> {
    let hash = first_event_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    sqlx::query(
        "INSERT INTO event_days (day, shard, events) VALUES ($1, $2, $3) \
         ON CONFLICT (day, shard) DO UPDATE SET events = event_days.events + $3",
    )
    .bind(at.div_euclid(DAY_MS))
    .bind(i64::try_from(hash % 64).unwrap_or(0))
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}
