//! The outbox: messages queued for a channel binding, each with its
//! delivery job, written in the step's transaction.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow, Row};

use super::bulk::{Col, Keep, Kept, Param, Write, json_rows, rows_match, to_json};
use super::jobs::{JobArgs, NewJob, enqueue_rows_in};
use super::{Dialect, Store, StoreError, new_id};
pub use crate::model::status::{OutboxStatus, Purpose};

/// A message queued for a channel binding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow)]
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
    pub purpose: Purpose,
    /// The rendered `Message` as JSON.
    pub message: String,
    pub status: OutboxStatus,
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

macro_rules! outbox_columns {
    () => {
        "id, idempotency_key, run_id, journey, step, variant, contact_id, binding, channel, purpose, message, status, provider_id, last_error, created_at, sent_at"
    };
}
const OUTBOX_COLUMNS: &str = outbox_columns!();

/// Queues a message with its delivery job, in the caller's transaction.
/// Returns false when a message with the same idempotency key is queued
/// already (then nothing is added).
pub async fn queue_message_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    entry: &OutboxEntry,
    now: i64,
) -> Result<bool, StoreError> {
    let queued = queue_messages_in(conn, dialect, std::slice::from_ref(entry), now).await?;
    Ok(queued.contains(&entry.id))
}

/// Queues many messages, each with its delivery job, in two statements.
/// Returns the ids of those queued: a message whose idempotency key is
/// queued already is not added again.
pub async fn queue_messages_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    entries: &[OutboxEntry],
    now: i64,
) -> Result<HashSet<String>, StoreError> {
    let Some(insert) = outbox_write(dialect, entries)? else {
        return Ok(HashSet::new());
    };
    let queued: HashSet<String> = insert
        .query()
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let deliveries: Vec<NewJob> = delivery_jobs(entries, now)?
        .into_iter()
        .filter(|(_, outbox_id)| queued.contains(*outbox_id))
        .map(|(job, _)| job)
        .collect();
    enqueue_rows_in(conn, dialect, &deliveries, now).await?;
    Ok(queued)
}

/// The insert of `entries` into the outbox, if any, answering the ids of
/// those queued (`RETURNING id`): a message whose idempotency key is
/// queued already is not added again.
pub(super) fn outbox_write(
    dialect: Dialect,
    entries: &[OutboxEntry],
) -> Result<Option<Write>, StoreError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let from = json_rows(
        dialect,
        1,
        &[
            ("id", Col::Text),
            ("idempotency_key", Col::Text),
            ("run_id", Col::Text),
            ("journey", Col::Text),
            ("step", Col::Text),
            ("variant", Col::Text),
            ("contact_id", Col::Text),
            ("binding", Col::Text),
            ("channel", Col::Text),
            ("purpose", Col::Text),
            ("message", Col::Text),
            ("status", Col::Text),
            ("provider_id", Col::Text),
            ("last_error", Col::Text),
            ("created_at", Col::Int),
            ("sent_at", Col::Int),
        ],
    );
    let selected: Vec<String> = OUTBOX_COLUMNS
        .split(", ")
        .map(|c| format!("j.{c}"))
        .collect();
    // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    let sql = format!(
        "INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {} FROM {from} WHERE true \
         ON CONFLICT DO NOTHING RETURNING id",
        selected.join(", ")
    );
    Ok(Some(Write {
        sql,
        params: vec![Param::Text(to_json(entries)?)],
    }))
}

/// The delivery job of each of `entries`, with the message's id: to be
/// added only for the messages queued.
pub(super) fn delivery_jobs(
    entries: &[OutboxEntry],
    now: i64,
) -> Result<Vec<(NewJob, &str)>, StoreError> {
    entries
        .iter()
        .map(|entry| {
            let job = NewJob::of(
                &DeliverMessage {
                    outbox_id: entry.id.clone(),
                },
                now,
            )?;
            Ok((job, entry.id.as_str()))
        })
        .collect()
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

/// One message's outcome, for [`settle_outbox_many_in`].
#[derive(Clone, Serialize)]
pub struct OutboxSettle<'a> {
    pub id: &'a str,
    pub status: OutboxStatus,
    pub provider_id: Option<&'a str>,
    pub last_error: Option<&'a str>,
    /// When it was delivered, if it was.
    pub sent_at: Option<i64>,
}

/// [`settle_outbox_in`] for many messages in one statement.
pub async fn settle_outbox_many_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    settles: &[OutboxSettle<'_>],
) -> Result<(), StoreError> {
    if settles.is_empty() {
        return Ok(());
    }
    Write {
        sql: settle_update(dialect, None),
        params: vec![Param::Text(to_json(settles)?)],
    }
    .execute(conn)
    .await?;
    Ok(())
}

/// The settle of those of `settles` that `keep` keeps.
pub(super) fn kept_settle_write(
    dialect: Dialect,
    settles: &[Kept<'_, &OutboxSettle<'_>>],
    keep: Keep<'_>,
) -> Result<Write, StoreError> {
    Ok(Write {
        sql: settle_update(dialect, Some(keep)),
        params: vec![Param::Text(to_json(settles)?)],
    })
}

/// The update of each message of the rows bound at `$1` to its outcome.
fn settle_update(dialect: Dialect, keep: Option<Keep<'_>>) -> String {
    let from = json_rows(
        dialect,
        1,
        &Keep::columns(
            keep,
            &[
                ("id", Col::Text),
                ("status", Col::Text),
                ("provider_id", Col::Text),
                ("last_error", Col::Text),
                ("sent_at", Col::Int),
            ],
        ),
    );
    let keyed = rows_match(dialect, "outbox.id", 1, "id");
    format!(
        "UPDATE outbox SET status = j.status, provider_id = j.provider_id, last_error = j.last_error, \
         sent_at = j.sent_at, attempts = attempts + 1 FROM {from} WHERE outbox.id = j.id{keyed}{}",
        Keep::and(keep)
    )
}

/// When the contact's marketing messages since `since` were queued.
pub async fn marketing_sends_since_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    since: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT created_at FROM outbox WHERE contact_id = $1 AND purpose = $2 AND created_at > $3 \
         AND status IN ($4, $5)",
    )
    .bind(contact_id.to_owned())
    .bind(Purpose::Marketing)
    .bind(since)
    .bind(OutboxStatus::Pending)
    .bind(OutboxStatus::Delivered)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("created_at")?)).collect()
}

/// When the marketing messages of `contact_ids` queued after `since` were
/// queued, by contact: [`marketing_sends_since_in`] for many at once.
pub async fn marketing_sends_of_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    contact_ids: &[String],
    since: i64,
) -> Result<HashMap<String, Vec<i64>>, StoreError> {
    if contact_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT contact_id, created_at FROM outbox WHERE purpose = $1 AND created_at > $2 \
         AND status IN ($3, $4) AND {}",
        super::bulk::json_in(dialect, "contact_id", 5)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Purpose::Marketing)
        .bind(since)
        .bind(OutboxStatus::Pending)
        .bind(OutboxStatus::Delivered)
        .bind(super::bulk::to_json(contact_ids)?)
        .fetch_all(conn)
        .await?;
    let mut sends: HashMap<String, Vec<i64>> = HashMap::new();
    for row in rows {
        let contact: String = row.try_get("contact_id")?;
        sends
            .entry(contact)
            .or_default()
            .push(row.try_get("created_at")?);
    }
    Ok(sends)
}

/// The outbox entries of `ids` that exist, by id.
pub async fn outbox_entries_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    ids: &[String],
) -> Result<HashMap<String, OutboxEntry>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT {} FROM outbox WHERE {}",
        outbox_columns!(),
        super::bulk::json_in(dialect, "id", 1)
    );
    let entries = sqlx::query_as::<_, OutboxEntry>(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(ids)?)
        .fetch_all(conn)
        .await?;
    Ok(entries.into_iter().map(|e| (e.id.clone(), e)).collect())
}

impl Store {
    pub async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let entry = sqlx::query_as::<_, OutboxEntry>(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        Ok(entry)
    }

    /// The contact's messages, newest first.
    pub async fn contact_outbox(&self, contact_id: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let entries = sqlx::query_as::<_, OutboxEntry>(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE contact_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(entries)
    }
}

pub(crate) fn new_outbox_id() -> String {
    new_id("m")
}
