//! The end of a group of deliveries: each message's new state, the
//! timeline event that says so, and the removal of its delivery job.
//!
//! Only the messages whose jobs this worker still holds are written: a job
//! whose lease ran out belongs to the worker that claimed it next, and so
//! does its message's outcome. The removal decides, row by row, so one
//! lost lease costs nothing to the rest of the group.
//!
//! On PostgreSQL the whole group is one statement, which is atomic without
//! a transaction around it: one round trip where a transaction of its own
//! took six. On a busy node every round trip waits for both processes to
//! be scheduled again, and the six cost a delivery batch 80% of its time
//! (14 ms a group of 16 in the dispatch bench). Its events' foreign-key
//! checks keep cached plans all the same (`CACHED_CHECKS_ITEM`). SQLite,
//! which has no round trips, runs three statements in one write
//! transaction.

use std::collections::HashSet;

use sqlx::Row;

use super::bulk::{self, Keep, Kept, Write};
use super::jobs::{ClaimedJob, held_removal};
use super::outbox::{OutboxSettle, kept_settle_write, settle_outbox_many_in};
use super::step_writes::{NewEvent, event_row, insert_new_events_in};
use super::{CACHED_CHECKS_ITEM, Dialect, Store, StoreError};

/// A delivery job's end.
pub struct DeliveryEnd<'a> {
    pub job: &'a ClaimedJob,
    /// The message's new state and the event that says so; none when the
    /// message was settled already (only the job is removed).
    pub outcome: Option<(OutboxSettle<'a>, &'a NewEvent)>,
}

impl Store {
    /// Writes the ends of a group of deliveries; answers the ids of the
    /// jobs removed. A job missing from the answer was no longer held,
    /// and nothing of it was written.
    pub async fn end_deliveries(
        &self,
        ends: &[DeliveryEnd<'_>],
    ) -> Result<HashSet<String>, StoreError> {
        if ends.is_empty() {
            return Ok(HashSet::new());
        }
        match self.dialect() {
            Dialect::Postgres => end_in_one_statement(self, ends).await,
            Dialect::Sqlite => end_in_one_transaction(self, ends).await,
        }
    }
}

/// The removal of the held jobs of `ends` (see `held_removal`).
fn removal(dialect: Dialect, ends: &[DeliveryEnd<'_>]) -> Result<Write, StoreError> {
    let jobs: Vec<&ClaimedJob> = ends.iter().map(|end| end.job).collect();
    held_removal(dialect, &jobs)?.ok_or_else(|| StoreError::Invalid("no jobs to remove".into()))
}

async fn end_in_one_statement(
    store: &Store,
    ends: &[DeliveryEnd<'_>],
) -> Result<HashSet<String>, StoreError> {
    let mut settles = Vec::with_capacity(ends.len());
    let mut events = Vec::with_capacity(ends.len());
    for end in ends {
        let Some((settle, event)) = &end.outcome else {
            continue;
        };
        let keep = Some(end.job.id.as_str());
        settles.push(Kept { row: settle, keep });
        events.push(Kept {
            row: event_row(event),
            keep,
        });
    }
    // Only the messages of the jobs the removal answers change.
    let held = Keep("j.keep IN (SELECT id FROM done)");
    let statement = bulk::one_statement(
        vec![
            ("done".into(), removal(Dialect::Postgres, ends)?),
            (
                "settled".into(),
                kept_settle_write(Dialect::Postgres, &settles, held)?,
            ),
            (
                "logged".into(),
                bulk::kept_events_write(Dialect::Postgres, &events, held)?,
            ),
            (
                "checks".into(),
                Write {
                    sql: CACHED_CHECKS_ITEM.into(),
                    params: Vec::new(),
                },
            ),
        ],
        // Read `checks` wherever a job was removed: only then are events
        // inserted, and so checked.
        Write {
            sql: "SELECT done.id FROM done CROSS JOIN checks".into(),
            params: Vec::new(),
        },
    );
    let done = statement.query().fetch_all(store.pool()).await?;
    done.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

async fn end_in_one_transaction(
    store: &Store,
    ends: &[DeliveryEnd<'_>],
) -> Result<HashSet<String>, StoreError> {
    let mut tx = store.write_tx().await?;
    let done = removal(Dialect::Sqlite, ends)?
        .query()
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<HashSet<String>, _>>()?;
    let outcomes: Vec<&(OutboxSettle, &NewEvent)> = ends
        .iter()
        .filter(|end| done.contains(&end.job.id))
        .filter_map(|end| end.outcome.as_ref())
        .collect();
    let settles: Vec<OutboxSettle> = outcomes.iter().map(|(s, _)| s.clone()).collect();
    settle_outbox_many_in(&mut tx, Dialect::Sqlite, &settles).await?;
    let events: Vec<&NewEvent> = outcomes.iter().map(|(_, event)| *event).collect();
    insert_new_events_in(&mut tx, Dialect::Sqlite, &events).await?;
    tx.commit().await?;
    Ok(done)
}
