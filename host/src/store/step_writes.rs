//! The writes of a batch of journey steps, made at the end of the batch
//! with one statement per table (see `bulk.rs`) instead of some ten per
//! step: queued messages with their delivery jobs, further jobs, timeline
//! events, run states, changed attributes, and the removal of the finished
//! jobs. The journeys layer collects them while its steps run.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::AnyConnection;

use super::bulk::{self, Col, EventRow, Keep, Kept, Param, Write, run_writes_in};
use super::jobs::{ClaimedJob, NewJob, enqueue_rows_in, held_removal, kept_jobs_write};
use super::outbox::{OutboxEntry, delivery_jobs, outbox_write, queue_messages_in};
use super::runs::{Run, set_conversion_value_in};
use super::{Dialect, StoreError, cached_plans_from_here_in};

/// A timeline event, written only if `queued` (an outbox id) is absent or
/// that message was queued by this batch.
pub struct NewEvent {
    pub id: String,
    pub contact_id: String,
    pub kind: String,
    /// The properties as JSON.
    pub properties: String,
    pub at: i64,
    pub queued: Option<String>,
}

/// Everything a batch of steps writes.
#[derive(Default)]
pub struct StepBatchWrites {
    /// Each with a delivery job, unless its idempotency key is queued
    /// already.
    pub outbox: Vec<OutboxEntry>,
    pub jobs: Vec<NewJob>,
    pub events: Vec<NewEvent>,
    /// The final state of each run the batch changed.
    pub runs: Vec<Run>,
    /// `(run id, value)`: what goal events brought to the runs they
    /// converted.
    pub conversions: Vec<(String, f64)>,
    /// `(contact id, attributes as JSON)`: the final attributes of each
    /// contact the batch changed.
    pub attributes: Vec<(String, String)>,
    /// Jobs done, removed if still leased to whoever claimed them.
    pub finished: Vec<ClaimedJob>,
}

/// Writes `writes` at `now`. Returns whether every finished job was still
/// held: if not, the caller must roll back (another worker has a job, and
/// its work counts).
pub async fn write_step_batch_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    writes: &StepBatchWrites,
    now: i64,
) -> Result<bool, StoreError> {
    // Keyed updates and deletes first, each planned for its run: a cached
    // plan, costed while a table was small (a new database), goes on
    // reading the whole table as it grows (1 ms a batch at 3,000 runs, and
    // growing, in the latency bench). One statement on PostgreSQL (see
    // `run_writes_in`), the jobs' removal last, so that its count is the
    // statement's answer.
    let finished: Vec<&ClaimedJob> = writes.finished.iter().collect();
    let mut keyed = Vec::new();
    keyed.extend(runs_write(dialect, &writes.runs)?);
    keyed.extend(attributes_write(dialect, &writes.attributes, now)?);
    let removal = held_removal(dialect, &finished)?;
    let removing = removal.is_some();
    keyed.extend(removal);
    let removed = run_writes_in(conn, dialect, keyed).await?;
    if removing && removed != finished.len() as u64 {
        return Ok(false);
    }
    // One per converting goal event: rare next to the rows above.
    for (run_id, value) in &writes.conversions {
        set_conversion_value_in(conn, run_id, *value).await?;
    }
    // Then the inserts, each row checked by its foreign keys on cached plans.
    cached_plans_from_here_in(conn, dialect).await?;
    match dialect {
        Dialect::Postgres => insert_in_one_statement(conn, writes, now).await?,
        Dialect::Sqlite => {
            let queued = queue_messages_in(conn, dialect, &writes.outbox, now).await?;
            enqueue_rows_in(conn, dialect, &writes.jobs, now).await?;
            let events: Vec<&NewEvent> = writes
                .events
                .iter()
                .filter(|e| e.queued.as_ref().is_none_or(|id| queued.contains(id)))
                .collect();
            insert_new_events_in(conn, dialect, &events).await?;
        }
    }
    Ok(true)
}

/// The batch's messages, jobs and events as one PostgreSQL statement: one
/// round trip instead of four statements (the messages, their delivery
/// jobs, the other jobs, the events). A message whose idempotency key is queued
/// already is not queued again, and neither its delivery job nor its
/// `message.queued` event is added: both are kept only for the messages
/// the outbox insert answers.
async fn insert_in_one_statement(
    conn: &mut AnyConnection,
    writes: &StepBatchWrites,
    now: i64,
) -> Result<(), StoreError> {
    let dialect = Dialect::Postgres;
    let deliveries = delivery_jobs(&writes.outbox, now)?;
    let jobs: Vec<Kept<&NewJob>> = writes
        .jobs
        .iter()
        .map(|job| Kept {
            row: job,
            keep: None,
        })
        .chain(deliveries.iter().map(|(job, outbox_id)| Kept {
            row: job,
            keep: Some(outbox_id),
        }))
        .collect();
    let events: Vec<Kept<EventRow>> = writes
        .events
        .iter()
        .map(|event| Kept {
            row: event_row(event),
            keep: event.queued.as_deref(),
        })
        .collect();
    let mut items = Vec::new();
    let mut last = Write {
        sql: "SELECT 1".into(),
        params: Vec::new(),
    };
    // Without messages there is no `queued` item, and no row has a `keep`
    // value to check.
    let mut queued = Keep("j.keep IS NULL");
    if let Some(outbox) = outbox_write(dialect, &writes.outbox)? {
        items.push(("queued".to_owned(), outbox));
        last.sql = "SELECT id FROM queued".into();
        queued = Keep("j.keep IS NULL OR j.keep IN (SELECT id FROM queued)");
    }
    if !jobs.is_empty() {
        items.push((
            "enqueued".to_owned(),
            kept_jobs_write(dialect, &jobs, queued, now)?,
        ));
    }
    if !events.is_empty() {
        items.push((
            "logged".to_owned(),
            bulk::kept_events_write(dialect, &events, queued)?,
        ));
    }
    if items.is_empty() {
        return Ok(());
    }
    bulk::one_statement(items, last).execute(conn).await?;
    Ok(())
}

/// Inserts timeline events in one statement.
pub async fn insert_new_events_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    events: &[&NewEvent],
) -> Result<(), StoreError> {
    let rows: Vec<EventRow> = events.iter().map(|e| event_row(e)).collect();
    bulk::insert_events_in(conn, dialect, &rows).await
}

/// The row of a timeline event: received and processed when it happened.
pub(super) fn event_row(event: &NewEvent) -> EventRow<'_> {
    EventRow {
        id: &event.id,
        contact_id: &event.contact_id,
        kind: &event.kind,
        at: event.at,
        properties: event.properties.as_str().into(),
        client_event_id: None,
        received_at: event.at,
        processed_at: Some(event.at),
    }
}

/// The update of each run to its last state in `runs`, if any.
fn runs_write(dialect: Dialect, runs: &[Run]) -> Result<Option<Write>, StoreError> {
    #[derive(Serialize)]
    struct RunRow<'a> {
        id: &'a str,
        status: &'a str,
        step: Option<&'a str>,
        seq: i64,
        waiting_for: Option<&'a str>,
        ended_at: Option<i64>,
        exit_reason: Option<&'a str>,
    }
    if runs.is_empty() {
        return Ok(None);
    }
    // The last state of each run; sorted, so that two PostgreSQL batches
    // lock rows in the same order.
    let mut last: HashMap<&str, &Run> = HashMap::new();
    for run in runs {
        last.insert(&run.id, run);
    }
    let mut rows: Vec<RunRow> = last
        .into_values()
        .map(|run| RunRow {
            id: &run.id,
            status: run.status.as_str(),
            step: run.step.as_deref(),
            seq: run.seq,
            waiting_for: run.waiting_for.as_deref(),
            ended_at: run.ended_at,
            exit_reason: run.exit_reason.as_deref(),
        })
        .collect();
    rows.sort_unstable_by(|a, b| a.id.cmp(b.id));
    let from = bulk::json_rows(
        dialect,
        1,
        &[
            ("id", Col::Text),
            ("status", Col::Text),
            ("step", Col::Text),
            ("seq", Col::Int),
            ("waiting_for", Col::Text),
            ("ended_at", Col::Int),
            ("exit_reason", Col::Text),
        ],
    );
    let keyed = bulk::rows_match(dialect, "journey_runs.id", 1, "id");
    let sql = format!(
        "UPDATE journey_runs SET status = j.status, step = j.step, seq = j.seq, \
         waiting_for = j.waiting_for, ended_at = j.ended_at, exit_reason = j.exit_reason \
         FROM {from} WHERE journey_runs.id = j.id{keyed}"
    );
    Ok(Some(Write {
        sql,
        params: vec![Param::Text(bulk::to_json(&rows)?)],
    }))
}

/// The update of each contact to its last attributes in `changed`, if any.
fn attributes_write(
    dialect: Dialect,
    changed: &[(String, String)],
    now: i64,
) -> Result<Option<Write>, StoreError> {
    #[derive(Serialize)]
    struct AttributesRow<'a> {
        id: &'a str,
        attributes: &'a str,
    }
    if changed.is_empty() {
        return Ok(None);
    }
    let mut last: HashMap<&str, &str> = HashMap::new();
    for (id, attributes) in changed {
        last.insert(id, attributes);
    }
    let mut rows: Vec<AttributesRow> = last
        .into_iter()
        .map(|(id, attributes)| AttributesRow { id, attributes })
        .collect();
    rows.sort_unstable_by(|a, b| a.id.cmp(b.id));
    let from = bulk::json_rows(dialect, 1, &[("id", Col::Text), ("attributes", Col::Text)]);
    let keyed = bulk::rows_match(dialect, "contacts.id", 1, "id");
    let sql = format!(
        "UPDATE contacts SET attributes = j.attributes, updated_at = $2 \
         FROM {from} WHERE contacts.id = j.id{keyed}"
    );
    Ok(Some(Write {
        sql,
        params: vec![Param::Text(bulk::to_json(&rows)?), Param::Int(now)],
    }))
}
