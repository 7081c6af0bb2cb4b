//! Journey definitions (every saved version kept), journey runs, the
//! outbox, consents and suppressions. Functions ending in `_in` run inside
//! the caller's transaction, so a step's state change, its outbox row and
//! its timeline events commit together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::jobs::{JobArgs, enqueue_in};
use super::{Dialect, Store, StoreError, new_id};
use crate::model::{Contact, Event, Fields};

/// A reason never to send to a contact on a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// A channel kind (`email`), or `*` for all.
    pub channel: String,
    /// `unsubscribed`, `hard_bounced`, `complained`, `erased`, `objected`.
    pub reason: String,
    /// `marketing` or `all`.
    pub scope: String,
    pub at: i64,
}

/// One saved version of a journey.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JourneyVersion {
    pub name: String,
    pub version: i64,
    pub definition: String,
    pub active: bool,
    pub created_at: i64,
}

/// A contact's way through one journey version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    pub id: String,
    pub journey: String,
    pub version: i64,
    pub contact_id: String,
    pub purpose: String,
    /// `active`, `waiting`, `completed`, `converted` or `exited`.
    pub status: String,
    /// The step to run next (or waited in); none once finished.
    pub step: Option<String>,
    pub seq: i64,
    pub waiting_for: Option<String>,
    pub trigger_event: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_reason: Option<String>,
}

/// A message queued for a channel binding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub idempotency_key: String,
    pub run_id: String,
    pub journey: String,
    pub step: String,
    pub variant: Option<String>,
    pub contact_id: String,
    pub binding: String,
    pub channel: String,
    pub purpose: String,
    /// The rendered `Message` as JSON.
    pub message: String,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub status: String,
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// A contact's consent for one channel and purpose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub channel: String,
    #[serde(default = "marketing")]
    pub purpose: String,
    /// `granted`, `pending` (awaiting confirmation) or `withdrawn`.
    pub status: String,
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

fn marketing() -> String {
    "marketing".to_owned()
}

/// Column lists as macros, so queries stay `&'static str` (sqlx refuses
/// strings built at run time).
macro_rules! run_columns {
    () => {
        "id, journey, version, contact_id, purpose, status, step, seq, waiting_for, trigger_event, started_at, ended_at, exit_reason"
    };
}

fn run_from_row(row: &sqlx::any::AnyRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: row.try_get("id")?,
        journey: row.try_get("journey")?,
        version: row.try_get("version")?,
        contact_id: row.try_get("contact_id")?,
        purpose: row.try_get("purpose")?,
        status: row.try_get("status")?,
        step: row.try_get("step")?,
        seq: row.try_get("seq")?,
        waiting_for: row.try_get("waiting_for")?,
        trigger_event: row.try_get("trigger_event")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        exit_reason: row.try_get("exit_reason")?,
    })
}

macro_rules! outbox_columns {
    () => {
        "id, idempotency_key, run_id, journey, step, variant, contact_id, binding, channel, purpose, message, status, provider_id, last_error, created_at, sent_at"
    };
}

fn outbox_from_row(row: &sqlx::any::AnyRow) -> Result<OutboxEntry, StoreError> {
    Ok(OutboxEntry {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        run_id: row.try_get("run_id")?,
        journey: row.try_get("journey")?,
        step: row.try_get("step")?,
        variant: row.try_get("variant")?,
        contact_id: row.try_get("contact_id")?,
        binding: row.try_get("binding")?,
        channel: row.try_get("channel")?,
        purpose: row.try_get("purpose")?,
        message: row.try_get("message")?,
        status: row.try_get("status")?,
        provider_id: row.try_get("provider_id")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<JourneyVersion, StoreError> {
    Ok(JourneyVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        definition: row.try_get("definition")?,
        active: row.try_get::<i64, _>("active")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Writes an event nachfass caused (`journey.entered`, `message.sent`)
/// inside the caller's transaction. It is not routed to journeys again.
pub async fn record_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    kind: &str,
    properties: Fields,
    now: i64,
) -> Result<Event, StoreError> {
    let event = Event {
        id: new_id("e"),
        contact_id: contact_id.to_owned(),
        kind: kind.to_owned(),
        at: now,
        properties,
    };
    let json =
        serde_json::to_string(&event.properties).map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO events (id, contact_id, kind, at, properties, received_at) VALUES ($1, $2, $3, $4, $5, $4)",
    )
    .bind(event.id.clone())
    .bind(event.contact_id.clone())
    .bind(event.kind.clone())
    .bind(now)
    .bind(json)
    .execute(conn)
    .await?;
    // Not counted in `event_days`: that counts touchpoints, and a hot
    // counter row inside every job's transaction would serialize the
    // scheduler.
    Ok(event)
}

pub async fn definition_in(
    conn: &mut AnyConnection,
    name: &str,
    version: i64,
) -> Result<String, StoreError> {
    let row = sqlx::query("SELECT definition FROM journeys WHERE name = $1 AND version = $2")
        .bind(name.to_owned())
        .bind(version)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("journey {name} version {version}")))?;
    Ok(row.try_get("definition")?)
}

pub async fn event_in(conn: &mut AnyConnection, id: &str) -> Result<Option<Event>, StoreError> {
    let row = sqlx::query("SELECT id, contact_id, kind, at, properties FROM events WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(super::events::from_row).transpose()
}

/// The contact with its segments, or `None` once deleted.
pub async fn contact_in(conn: &mut AnyConnection, id: &str) -> Result<Option<Contact>, StoreError> {
    let row = sqlx::query(
        "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
         FROM contacts WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut contact = super::contacts::from_row(&row)?;
    let rows =
        sqlx::query("SELECT segment FROM segment_members WHERE contact_id = $1 ORDER BY segment")
            .bind(id.to_owned())
            .fetch_all(conn)
            .await?;
    contact.segments = rows
        .iter()
        .map(|r| r.try_get("segment"))
        .collect::<Result<_, _>>()?;
    Ok(Some(contact))
}

/// When the contact last had an event of each kind.
pub async fn last_event_times_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    kinds: &[String],
) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut last = BTreeMap::new();
    for kind in kinds {
        let row =
            sqlx::query("SELECT MAX(at) AS at FROM events WHERE contact_id = $1 AND kind = $2")
                .bind(contact_id.to_owned())
                .bind(kind.clone())
                .fetch_one(&mut *conn)
                .await?;
        if let Some(at) = row.try_get::<Option<i64>, _>("at")? {
            last.insert(kind.clone(), at);
        }
    }
    Ok(last)
}

pub async fn set_attribute_in(
    conn: &mut AnyConnection,
    contact: &Contact,
    now: i64,
) -> Result<(), StoreError> {
    let attributes = serde_json::to_string(&contact.attributes)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query("UPDATE contacts SET attributes = $1, updated_at = $2 WHERE id = $3")
        .bind(attributes)
        .bind(now)
        .bind(contact.id.clone())
        .execute(conn)
        .await?;
    Ok(())
}

/// A run, locked for this transaction on PostgreSQL.
pub async fn run_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
) -> Result<Option<Run>, StoreError> {
    let sql = match dialect {
        Dialect::Postgres => concat!(
            "SELECT ",
            run_columns!(),
            " FROM journey_runs WHERE id = $1 FOR UPDATE"
        ),
        Dialect::Sqlite => concat!(
            "SELECT ",
            run_columns!(),
            " FROM journey_runs WHERE id = $1"
        ),
    };
    let row = sqlx::query(sql)
        .bind(id.to_owned())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// The contact's open runs, locked for this transaction on PostgreSQL so a
/// concurrent step job waits instead of overwriting the routing's change.
pub async fn open_runs_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    contact_id: &str,
) -> Result<Vec<Run>, StoreError> {
    macro_rules! open_runs {
        ($lock:literal) => {
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM journey_runs WHERE contact_id = $1 AND ended_at IS NULL ORDER BY started_at",
                $lock
            )
        };
    }
    let sql = match dialect {
        Dialect::Postgres => open_runs!(" FOR UPDATE"),
        Dialect::Sqlite => open_runs!(""),
    };
    let rows = sqlx::query(sql)
        .bind(contact_id.to_owned())
        .fetch_all(conn)
        .await?;
    rows.iter().map(run_from_row).collect()
}

/// The contact's latest run of a journey.
pub async fn last_run_in(
    conn: &mut AnyConnection,
    journey: &str,
    contact_id: &str,
) -> Result<Option<Run>, StoreError> {
    let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM journey_runs WHERE journey = $1 AND contact_id = $2 ORDER BY started_at DESC, id DESC LIMIT 1"))
    .bind(journey.to_owned())
    .bind(contact_id.to_owned())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// Starts a run unless the contact has one open in that journey. Returns
/// whether it did.
pub async fn insert_run_in(conn: &mut AnyConnection, run: &Run) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "INSERT INTO journey_runs (",
        run_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(run.id.clone())
    .bind(run.journey.clone())
    .bind(run.version)
    .bind(run.contact_id.clone())
    .bind(run.purpose.clone())
    .bind(run.status.clone())
    .bind(run.step.clone())
    .bind(run.seq)
    .bind(run.waiting_for.clone())
    .bind(run.trigger_event.clone())
    .bind(run.started_at)
    .bind(run.ended_at)
    .bind(run.exit_reason.clone())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The value the goal event brought (an order's total), for revenue.
pub async fn set_conversion_value_in(
    conn: &mut AnyConnection,
    run_id: &str,
    value: f64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE journey_runs SET conversion_value = $1 WHERE id = $2")
        .bind(value)
        .bind(run_id.to_owned())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn update_run_in(conn: &mut AnyConnection, run: &Run) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE journey_runs SET status = $1, step = $2, seq = $3, waiting_for = $4, ended_at = $5, exit_reason = $6 WHERE id = $7",
    )
    .bind(run.status.clone())
    .bind(run.step.clone())
    .bind(run.seq)
    .bind(run.waiting_for.clone())
    .bind(run.ended_at)
    .bind(run.exit_reason.clone())
    .bind(run.id.clone())
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues a message with its delivery job, in the caller's transaction.
/// Returns false when a message with the same idempotency key is queued
/// already (then nothing is added).
pub async fn queue_message_in(
    tx: &mut AnyConnection,
    entry: &OutboxEntry,
    now: i64,
) -> Result<bool, StoreError> {
    if !insert_outbox_in(tx, entry).await? {
        return Ok(false);
    }
    let job = DeliverMessage {
        outbox_id: entry.id.clone(),
    };
    enqueue_in(tx, &job, now, now).await?;
    Ok(true)
}

/// Attempts before a message that keeps failing transiently is given up.
pub const MAX_DELIVERY_ATTEMPTS: i64 = 8;

/// Hands an outbox entry to its channel (the outbox's handler runs it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliverMessage {
    pub outbox_id: String,
}

impl JobArgs for DeliverMessage {
    const KIND: &'static str = "deliver";
    /// The handler gives up itself at this count, recording why on the
    /// message; the queue's own limit is the same.
    const MAX_ATTEMPTS: i64 = MAX_DELIVERY_ATTEMPTS;
    fn unique_key(&self) -> String {
        format!("deliver:{}", self.outbox_id)
    }
}

pub async fn insert_outbox_in(
    conn: &mut AnyConnection,
    entry: &OutboxEntry,
) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "INSERT INTO outbox (",
        outbox_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(entry.id.clone())
    .bind(entry.idempotency_key.clone())
    .bind(entry.run_id.clone())
    .bind(entry.journey.clone())
    .bind(entry.step.clone())
    .bind(entry.variant.clone())
    .bind(entry.contact_id.clone())
    .bind(entry.binding.clone())
    .bind(entry.channel.clone())
    .bind(entry.purpose.clone())
    .bind(entry.message.clone())
    .bind(entry.status.clone())
    .bind(entry.provider_id.clone())
    .bind(entry.last_error.clone())
    .bind(entry.created_at)
    .bind(entry.sent_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets an outbox entry's outcome.
pub async fn settle_outbox_in(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    provider_id: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE outbox SET status = $1, provider_id = $2, last_error = $3, sent_at = $4, attempts = attempts + 1 WHERE id = $5",
    )
    .bind(status.to_owned())
    .bind(provider_id.map(str::to_owned))
    .bind(error.map(str::to_owned))
    .bind((status == "delivered").then_some(now))
    .bind(id.to_owned())
    .execute(conn)
    .await?;
    Ok(())
}

/// When the contact's marketing messages since `since` were queued.
pub async fn marketing_sends_since_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    since: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT created_at FROM outbox WHERE contact_id = $1 AND purpose = 'marketing' AND created_at > $2 \
         AND status IN ('pending', 'delivered')",
    )
    .bind(contact_id.to_owned())
    .bind(since)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("created_at")?)).collect()
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
        .bind(consent.purpose.clone())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO consents (contact_id, channel, purpose, status, source, text_version, ip, user_agent, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(contact_id.to_owned())
    .bind(consent.channel.clone())
    .bind(consent.purpose.clone())
    .bind(consent.status.clone())
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
    purpose: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT status, updated_at FROM consents WHERE contact_id = $1 AND channel = $2 AND purpose = $3",
    )
    .bind(contact_id.to_owned())
    .bind(channel.to_owned())
    .bind(purpose.to_owned())
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => Ok(Some((row.try_get("status")?, row.try_get("updated_at")?))),
        None => Ok(None),
    }
}

pub async fn suppressions_in(
    conn: &mut AnyConnection,
    contact_id: &str,
) -> Result<Vec<Suppression>, StoreError> {
    let rows = sqlx::query(
        "SELECT channel, reason, scope, at FROM suppressions WHERE contact_id = $1 ORDER BY at",
    )
    .bind(contact_id.to_owned())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Suppression {
                channel: r.try_get("channel")?,
                reason: r.try_get("reason")?,
                scope: r.try_get("scope")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
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
    /// Saves a definition as the journey's next version, unless it equals
    /// the latest one. Returns the version and whether it is new.
    pub async fn save_journey(
        &self,
        name: &str,
        definition: &str,
        now: i64,
    ) -> Result<(i64, bool), StoreError> {
        let mut tx = self.write_tx().await?;
        let latest = sqlx::query(
            "SELECT version, definition FROM journeys WHERE name = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(name.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let (version, created) = match latest {
            Some(row) if row.try_get::<String, _>("definition")? == definition => {
                (row.try_get("version")?, false)
            }
            Some(row) => (row.try_get::<i64, _>("version")? + 1, true),
            None => (1, true),
        };
        if created {
            sqlx::query("INSERT INTO journeys (name, version, definition, created_at) VALUES ($1, $2, $3, $4)")
                .bind(name.to_owned())
                .bind(version)
                .bind(definition.to_owned())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        set_active_in(&mut tx, name, true, now).await?;
        tx.commit().await?;
        Ok((version, created))
    }

    pub async fn set_journey_active(
        &self,
        name: &str,
        active: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT name FROM journey_states WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            set_active_in(&mut tx, name, active, now).await?;
        }
        tx.commit().await?;
        Ok(exists)
    }

    /// The latest version of every journey.
    pub async fn latest_journeys(&self) -> Result<Vec<JourneyVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.name, j.version, j.definition, s.active, j.created_at FROM journeys j \
             JOIN journey_states s ON s.name = j.name \
             WHERE j.version = (SELECT MAX(version) FROM journeys k WHERE k.name = j.name) ORDER BY j.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub async fn journey_versions(&self, name: &str) -> Result<Vec<JourneyVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.name, j.version, j.definition, s.active, j.created_at FROM journeys j \
             JOIN journey_states s ON s.name = j.name WHERE j.name = $1 ORDER BY j.version DESC",
        )
        .bind(name.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Runs by status, for one journey.
    pub async fn run_counts(&self, journey: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM journey_runs WHERE journey = $1 GROUP BY status",
        )
        .bind(journey.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn contact_runs(&self, contact_id: &str) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM journey_runs WHERE contact_id = $1 ORDER BY started_at DESC"
        ))
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    /// The contact's messages, newest first.
    pub async fn contact_outbox(&self, contact_id: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE contact_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    pub async fn set_consent(
        &self,
        contact_id: &str,
        consent: &Consent,
        now: i64,
    ) -> Result<(), StoreError> {
        if !matches!(consent.status.as_str(), "granted" | "pending" | "withdrawn") {
            return Err(StoreError::Invalid(format!(
                "consent status `{}` must be granted, pending or withdrawn",
                consent.status
            )));
        }
        if !matches!(consent.purpose.as_str(), "marketing" | "transactional") {
            return Err(StoreError::Invalid(format!(
                "consent purpose `{}` must be marketing or transactional",
                consent.purpose
            )));
        }
        let mut tx = self.write_tx().await?;
        if contact_in(&mut tx, contact_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("contact {contact_id}")));
        }
        write_consent_in(&mut tx, contact_id, consent, now).await?;
        let mut properties = Fields::new();
        for (key, value) in [
            ("channel", &consent.channel),
            ("purpose", &consent.purpose),
            ("status", &consent.status),
        ] {
            properties.insert(key.into(), crate::model::Value::Text(value.clone()));
        }
        record_in(&mut tx, contact_id, "consent.changed", properties, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn consents(&self, contact_id: &str) -> Result<Vec<Consent>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, purpose, status, source, text_version, ip, user_agent, updated_at \
             FROM consents WHERE contact_id = $1 ORDER BY channel, purpose",
        )
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Consent {
                    channel: r.try_get("channel")?,
                    purpose: r.try_get("purpose")?,
                    status: r.try_get("status")?,
                    source: r.try_get("source")?,
                    text_version: r.try_get("text_version")?,
                    ip: r.try_get("ip")?,
                    user_agent: r.try_get("user_agent")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    pub async fn suppressions(&self, contact_id: &str) -> Result<Vec<Suppression>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        suppressions_in(&mut conn, contact_id).await
    }

    /// Whether any journey exists, so ingest routes events to journeys.
    pub async fn has_journeys(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM journey_states WHERE active = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}

async fn set_active_in(
    conn: &mut AnyConnection,
    name: &str,
    active: bool,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM journey_states WHERE name = $1")
        .bind(name.to_owned())
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO journey_states (name, active, updated_at) VALUES ($1, $2, $3)")
        .bind(name.to_owned())
        .bind(i64::from(active))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) fn new_run_id() -> String {
    new_id("r")
}

pub(crate) fn new_outbox_id() -> String {
    new_id("m")
}
