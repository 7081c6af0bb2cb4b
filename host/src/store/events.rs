//! Touchpoints: ingest (idempotent by client event id, creating unknown
//! contacts from the identity an event carries), timeline, activity.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::Row;

use super::contacts::{ContactInput, upsert_in};
use super::suppressions::stop_of;
use super::{Store, StoreError, is_unique_violation, new_id};
use crate::model::{ActivityCount, Event, Fields};

pub(super) const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// One touchpoint to record. The contact is named by `contact_id`, or by
/// `email` / `external_id` (created on the fly when unknown).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// What happened: `signup`, `page.visited`, `purchase`.
    #[schema(pattern = "^[a-z][a-z0-9._-]{0,63}$")]
    pub kind: String,
    /// Unix epoch milliseconds; defaults to the time of ingestion.
    #[serde(default)]
    pub at: Option<i64>,
    #[serde(default)]
    #[schema(inline)]
    pub properties: Fields,
    /// The sender's id for this event: a resend with the same id is
    /// recorded once.
    #[serde(default)]
    pub client_event_id: Option<String>,
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// Written by nachfass about the contact (`stage.changed`,
    /// `segment.entered`): on the timeline, but not the contact's own
    /// activity, so `last_seen_at` stays.
    #[serde(skip)]
    pub system: bool,
}

/// What ingesting one event did.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingested {
    pub event: Event,
    /// The event was recorded before (same client event id); nothing changed.
    pub duplicate: bool,
    pub contact_created: bool,
}

/// `page.visited`, `email.opened`, `purchase`: lower-case words joined by
/// dots, underscores or dashes.
pub(super) fn validate_kind(kind: &str) -> Result<(), StoreError> {
    let valid = !kind.is_empty()
        && kind.len() <= 64
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "event kind `{kind}` must be 1-64 lower-case letters, digits, `.`, `_` or `-`, starting with a letter"
        )))
    }
}

/// The day counter row of an event: a hash of its id spreads concurrent
/// writers over 64 rows per day.
pub(super) fn shard_of(event_id: &str) -> i64 {
    let hash = event_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    i64::try_from(hash % 64).unwrap_or(0)
}

/// Counts a touchpoint on its day, for the dashboard.
pub(crate) async fn count_event_in(
    conn: &mut sqlx::AnyConnection,
    event_id: &str,
    at: i64,
) -> Result<(), StoreError> {
    let shard = shard_of(event_id);
    sqlx::query(
        "INSERT INTO event_days (day, shard, events) VALUES ($1, $2, 1) \
         ON CONFLICT (day, shard) DO UPDATE SET events = event_days.events + 1",
    )
    .bind(at.div_euclid(DAY_MS))
    .bind(shard)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) fn from_row(row: &sqlx::any::AnyRow) -> Result<Event, StoreError> {
    let properties: String = row.try_get("properties")?;
    Ok(Event {
        id: row.try_get("id")?,
        contact_id: row.try_get("contact_id")?,
        kind: row.try_get("kind")?,
        at: row.try_get("at")?,
        properties: serde_json::from_str(&properties)
            .map_err(|e| StoreError::Invalid(format!("stored properties are not valid: {e}")))?,
    })
}

/// How long an accepted event may wait for its profile effects before a
/// `process_events` job applies them (after a crash of the node that
/// accepted it).
pub const PROCESS_GRACE_MS: i64 = 30_000;

/// `$first, $first+1, …`: `count` numbered placeholders.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes one touchpoint in the caller's transaction: the contact (found
/// or created from the identity), the event, the day count and
/// `last_seen_at`. A contact's own event waits for its profile effects
/// (`processed_at` empty); an event nachfass writes about the contact is
/// born processed, and routed to journeys at once when `routes`.
pub(super) async fn store_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    input: &EventInput,
    now: i64,
    routes: bool,
) -> Result<Ingested, StoreError> {
    let properties =
        serde_json::to_string(&input.properties).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let at = input.at.unwrap_or(now);
    let (contact_id, contact_created) = match (&input.contact_id, &input.email, &input.external_id)
    {
        (Some(id), _, _) => {
            let exists = sqlx::query("SELECT id FROM contacts WHERE id = $1")
                .bind(id.clone())
                .fetch_optional(&mut **tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("contact {id}")));
            }
            (id.clone(), false)
        }
        (None, None, None) => {
            return Err(StoreError::Invalid(
                "an event needs a contact_id, an email or an external_id".into(),
            ));
        }
        (None, email, external_id) => {
            let identity = ContactInput {
                email: email.clone(),
                external_id: external_id.clone(),
                ..ContactInput::default()
            };
            let record = upsert_in(tx, &identity, now).await?;
            (record.contact.id, record.created)
        }
    };
    let event = Event {
        id: new_id("e"),
        contact_id: contact_id.clone(),
        kind: input.kind.clone(),
        at,
        properties: input.properties.clone(),
    };
    sqlx::query(
        "INSERT INTO events (id, contact_id, kind, at, properties, client_event_id, received_at, processed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(event.id.clone())
    .bind(contact_id.clone())
    .bind(event.kind.clone())
    .bind(at)
    .bind(properties)
    .bind(input.client_event_id.clone())
    .bind(now)
    .bind(input.system.then_some(now))
    .execute(&mut **tx)
    .await?;
    count_event_in(tx, &event.id, at).await?;
    if !input.system {
        sqlx::query(
            "UPDATE contacts SET last_seen_at = $1 WHERE id = $2 AND (last_seen_at IS NULL OR last_seen_at < $1)",
        )
        .bind(at)
        .bind(contact_id)
        .execute(&mut **tx)
        .await?;
    }
    // A system event is routed at once, a contact's own event once its
    // effects are applied (`ProcessEvents`). With no journey yet only a
    // stop event is, at once: it still suppresses (see `stop_of`).
    let route_now = if routes {
        input.system
    } else {
        stop_of(&event.kind, &event.properties, now).is_some()
    };
    if route_now {
        let job = super::jobs::RouteEvent {
            event_id: event.id.clone(),
        };
        super::jobs::enqueue_in(tx, &job, now, now).await?;
    }
    Ok(Ingested {
        event,
        duplicate: false,
        contact_created,
    })
}

impl Store {
    /// Records one touchpoint. Contact creation, the event and the
    /// contact's `last_seen_at` commit together. Two first events of the
    /// same new identity at once race to create the contact; the loser
    /// tries again and finds it.
    pub async fn ingest_event(&self, input: &EventInput, now: i64) -> Result<Ingested, StoreError> {
        let mut attempt = 0;
        loop {
            match self.ingest_once(input, now).await {
                Err(StoreError::Conflict(_)) if attempt < 2 && input.contact_id.is_none() => {
                    attempt += 1
                }
                outcome => return outcome,
            }
        }
    }

    async fn ingest_once(&self, input: &EventInput, now: i64) -> Result<Ingested, StoreError> {
        validate_kind(&input.kind)?;
        if let Some(existing) = self
            .event_by_client_id(input.client_event_id.as_deref())
            .await?
        {
            return self.resent(input, existing).await;
        }
        let mut tx = self.write_tx().await?;
        let routes = self.routes_events_in(&mut tx).await?;
        let stored = store_in(&mut tx, input, now, routes).await;
        let ingested = match stored {
            Ok(ingested) => ingested,
            // A concurrent resend won the race: report its event.
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                drop(tx);
                if let Some(existing) = self
                    .event_by_client_id(input.client_event_id.as_deref())
                    .await?
                {
                    return self.resent(input, existing).await;
                }
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        if !input.system {
            let job = super::jobs::ProcessEvents {
                events: vec![ingested.event.id.clone()],
            };
            super::jobs::enqueue_in(&mut tx, &job, now + PROCESS_GRACE_MS, now).await?;
        }
        tx.commit().await?;
        self.jobs_wake.notify();
        Ok(ingested)
    }

    /// Records a group of touchpoints in one transaction (group commit):
    /// one result per input, in order. A bad item (unknown kind, unknown
    /// contact, an invalid identity, a client event id taken by another
    /// event) gets its own error and the others are stored. Should the
    /// group meet a concurrent writer (the same new identity or client
    /// event id committed meanwhile), each item is stored on its own, as
    /// [`Store::ingest_event`] does.
    pub async fn ingest_events(
        &self,
        inputs: &[EventInput],
        now: i64,
    ) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
        match self.ingest_group(inputs, now).await {
            Err(e @ (StoreError::Database(_) | StoreError::Conflict(_))) => {
                tracing::debug!(error = %e, events = inputs.len(), "group commit met a concurrent writer; storing one by one");
                let mut results = Vec::with_capacity(inputs.len());
                for input in inputs {
                    results.push(self.ingest_event(input, now).await);
                }
                Ok(results)
            }
            outcome => outcome,
        }
    }

    /// A known client event id: a resend of the same event is a
    /// duplicate; the id reused for another event is a conflict, answered
    /// without anything from the stored event (the caller may lack read
    /// scope).
    pub(super) async fn resent(
        &self,
        input: &EventInput,
        existing: Event,
    ) -> Result<Ingested, StoreError> {
        let same_contact = match (&input.contact_id, &input.email, &input.external_id) {
            (Some(id), _, _) => *id == existing.contact_id,
            (None, Some(email), _) => {
                let email = super::contacts::normalize_email(email)?;
                self.contact_id_where("email", &email).await? == Some(existing.contact_id.clone())
            }
            (None, None, Some(external_id)) => {
                self.contact_id_where("external_id", external_id.trim())
                    .await?
                    == Some(existing.contact_id.clone())
            }
            (None, None, None) => false,
        };
        let same = same_contact
            && input.kind == existing.kind
            && input.at.is_none_or(|at| at == existing.at)
            && input.properties == existing.properties;
        if !same {
            return Err(StoreError::Conflict(
                "client_event_id is already taken by a different event; use a new id for a new event"
                    .into(),
            ));
        }
        Ok(Ingested {
            event: existing,
            duplicate: true,
            contact_created: false,
        })
    }

    async fn contact_id_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<String>, StoreError> {
        let sql = match column {
            "email" => "SELECT id FROM contacts WHERE email = $1",
            _ => "SELECT id FROM contacts WHERE external_id = $1",
        };
        let row = sqlx::query(sql)
            .bind(value.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    async fn event_by_client_id(
        &self,
        client_event_id: Option<&str>,
    ) -> Result<Option<Event>, StoreError> {
        let Some(client_event_id) = client_event_id else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT id, contact_id, kind, at, properties FROM events WHERE client_event_id = $1",
        )
        .bind(client_event_id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The stored events of these client event ids, by client event id.
    pub(super) async fn events_by_client_ids_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        client_event_ids: &[&str],
    ) -> Result<HashMap<String, Event>, StoreError> {
        let mut found = HashMap::new();
        if client_event_ids.is_empty() {
            return Ok(found);
        }
        let sql = format!(
            "SELECT id, contact_id, kind, at, properties, client_event_id FROM events WHERE {}",
            super::bulk::json_in(self.dialect, "client_event_id", 1)
        );
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(super::bulk::to_json(client_event_ids)?)
            .fetch_all(conn)
            .await?
        {
            let client_id: String = row.try_get("client_event_id")?;
            found.insert(client_id, from_row(&row)?);
        }
        Ok(found)
    }

    /// The contact's touchpoints, newest first; `before` pages back in time.
    pub async fn timeline(
        &self,
        contact_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact_id, kind, at, properties FROM events \
             WHERE contact_id = $1 AND at < $2 ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(contact_id.to_owned())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The newest events of one kind across all contacts (the demo
    /// mailbox lists deferred sends with it).
    pub async fn recent_events(&self, kind: &str, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact_id, kind, at, properties FROM events \
             WHERE kind = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(kind.to_owned())
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Every event of the contact, oldest first (for a data export).
    pub async fn all_events(&self, contact_id: &str) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact_id, kind, at, properties FROM events WHERE contact_id = $1 ORDER BY at, id",
        )
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Per event kind: total, last 24 hours, last 30 days, newest time —
    /// the summary segment rules and scorers receive (`at + 0`: see
    /// [`Store::applied_activity`]).
    pub async fn activity(
        &self,
        contact_id: &str,
        now: i64,
    ) -> Result<Vec<ActivityCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS total, \
                    SUM(CASE WHEN at > $1 THEN 1 ELSE 0 END) AS last_24_hours, \
                    SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END) AS last_30_days, \
                    MAX(at) AS last_at \
             FROM events WHERE contact_id = $3 AND at + 0 <= $4 GROUP BY kind ORDER BY kind",
        )
        .bind(now - DAY_MS)
        .bind(now - 30 * DAY_MS)
        .bind(contact_id.to_owned())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(activity_from_row).collect()
    }
}

/// An activity count as a query aggregates it into JSON: kind, total,
/// last 24 hours, last 30 days, last at.
pub(super) type ActivityJson = (String, u32, u32, u32, Option<i64>);

/// The counts of [`ActivityJson`] arrays.
pub(super) fn activity_from_json(counts: Vec<ActivityJson>) -> Vec<ActivityCount> {
    counts
        .into_iter()
        .map(
            |(kind, total, last_24_hours, last_30_days, last_at)| ActivityCount {
                kind,
                total,
                last_24_hours,
                last_30_days,
                last_at,
            },
        )
        .collect()
}

/// An `ActivityCount` from a row with kind, total, last_24_hours,
/// last_30_days and last_at.
pub(super) fn activity_from_row(row: &sqlx::any::AnyRow) -> Result<ActivityCount, StoreError> {
    let count = |column: &str| -> Result<u32, StoreError> {
        let n: i64 = row.try_get(column)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    };
    Ok(ActivityCount {
        kind: row.try_get("kind")?,
        total: count("total")?,
        last_24_hours: count("last_24_hours")?,
        last_30_days: count("last_30_days")?,
        last_at: row.try_get("last_at")?,
    })
}
