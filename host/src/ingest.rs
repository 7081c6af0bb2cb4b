//! Ingest: store touchpoints as a group (`queue.rs` gathers single
//! requests into groups) and apply their effects on scores, stages and
//! segment memberships as one batch (`batch.rs`): on PostgreSQL in the
//! group's one transaction, on SQLite in a second one. Profile changes
//! (upsert, update, merge) are scored and re-segmented here too. Data
//! flow: store → score → segment → route.

use tracing::Instrument;

use crate::model::{Contact, Event, Fields, Value};
pub use crate::pipeline::Pipeline;
use crate::scoring;
use crate::segments;
use crate::store::{
    Applying, ContactInput, ContactRecord, Dialect, EventInput, Ingested, MergeReport, StoreError,
};

mod batch;
mod queue;

pub use queue::IngestQueue;

/// How a group's one transaction ended.
enum OneTransaction {
    Committed(Vec<Result<Ingested, StoreError>>),
    /// Failed before its commit: nothing of the group was written.
    NotWritten(StoreError),
}

impl Pipeline {
    /// Stores the event; a new one (not a resend) is scored and the
    /// contact's segments re-evaluated.
    pub async fn ingest(&self, input: &EventInput) -> Result<Ingested, StoreError> {
        let mut results = self.ingest_batch(std::slice::from_ref(input)).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invalid("event was not stored".into())))
    }

    /// Stores a group of events (one result per input, in order; a bad
    /// item is refused on its own) and applies the new ones' effects
    /// (scores, stages, segments) as one batch.
    ///
    /// On PostgreSQL both happen in one transaction: the events are
    /// stored applied, with no backstop job to queue and delete and no
    /// second commit. Should that transaction fail before its commit
    /// (a concurrent writer took an identity meanwhile), the group goes
    /// the SQLite way. On SQLite the group is stored in one transaction
    /// and applied in a second: its one writer connection is not held
    /// while plugins run. Stored is durable: should applying fail, the
    /// `process_events` job queued with the events applies them later.
    pub async fn ingest_batch(
        &self,
        inputs: &[EventInput],
    ) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
        if self.store.dialect() == Dialect::Postgres {
            match self.store_applied(inputs).await? {
                OneTransaction::Committed(results) => return Ok(results),
                OneTransaction::NotWritten(e) => {
                    tracing::debug!(error = %e, events = inputs.len(), "storing and applying a group in one transaction failed; storing it, then applying it");
                }
            }
        }
        let (results, fresh) = self.store_batch(inputs).await?;
        self.apply_fresh(fresh).await;
        Ok(results)
    }

    /// A group stored and applied in one transaction (PostgreSQL). An
    /// error before the commit wrote nothing; a failed commit is the
    /// caller's error, as any commit's.
    async fn store_applied(&self, inputs: &[EventInput]) -> Result<OneTransaction, StoreError> {
        let now = self.clock.now();
        let store = &self.store;
        let attempt = async {
            let mut tx = store.write_tx().await?;
            let prepared = store.prepare_group_in(&mut tx, inputs).await?;
            let written = store
                .write_group_in(&mut tx, inputs, prepared, now, Applying::InTransaction)
                .await?;
            let fresh: Vec<Event> = written.fresh().cloned().collect();
            let ids: Vec<String> = fresh.iter().map(|e| e.id.clone()).collect();
            // The group's events are not stored yet: the effects are
            // computed over the activity before them, each added in its
            // turn, and then stored with what they caused.
            let effects = if fresh.is_empty() {
                Vec::new()
            } else {
                self.effects_of(&mut tx, &fresh, now).await?
            };
            store
                .write_profile_effects_in(&mut tx, &ids, &effects, Some(&written), now)
                .await?;
            Ok::<_, StoreError>((tx, written))
        };
        let span = tracing::debug_span!("store_applied", events = inputs.len());
        let (tx, written) = match attempt.instrument(span).await {
            Ok(ready) => ready,
            Err(e) => return Ok(OneTransaction::NotWritten(e)),
        };
        tx.commit().await?;
        store.jobs_wake().notify();
        metrics::counter!("nachfass_events_ingested_total")
            .increment(written.fresh().count() as u64);
        Ok(OneTransaction::Committed(
            store.group_results(inputs, written, now).await,
        ))
    }

    /// The first half of the SQLite way of [`Pipeline::ingest_batch`]:
    /// stores the group in one transaction; answers the results and the
    /// new events (not resends) whose effects are still to apply.
    async fn store_batch(
        &self,
        inputs: &[EventInput],
    ) -> Result<(Vec<Result<Ingested, StoreError>>, Vec<Event>), StoreError> {
        let now = self.clock.now();
        let results = self.store.ingest_events(inputs, now).await?;
        let fresh: Vec<Event> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|i| !i.duplicate)
            .map(|i| i.event.clone())
            .collect();
        Ok((results, fresh))
    }

    /// The second half of the SQLite way of [`Pipeline::ingest_batch`]:
    /// applies the effects of stored events as one batch, named for the
    /// backstop job by the first of them.
    async fn apply_fresh(&self, fresh: Vec<Event>) {
        let Some(first) = fresh.first() else {
            return;
        };
        metrics::counter!("nachfass_events_ingested_total").increment(fresh.len() as u64);
        let span = tracing::debug_span!("apply_events", events = fresh.len());
        let backstop = first.id.clone();
        if let Err(e) = self
            .apply_events(fresh, Some(&backstop))
            .instrument(span)
            .await
        {
            tracing::warn!(error = %e, "applying events failed; their process_events job retries");
        }
    }

    /// Creates or updates a contact; a profile change is scored (explicit
    /// scoring) and the contact's segments re-evaluated.
    pub async fn upsert_contact(&self, input: &ContactInput) -> Result<ContactRecord, StoreError> {
        let now = self.clock.now();
        let record = self.store.upsert_contact(input, now).await?;
        let id = record.contact.id.clone();
        self.after_profile(&id, now).await?;
        Ok(ContactRecord {
            contact: self.store.contact(&id).await?,
            created: record.created,
        })
    }

    /// Changes a contact by id, then scores the profile and re-evaluates
    /// its segments.
    pub async fn update_contact(
        &self,
        id: &str,
        patch: &ContactInput,
    ) -> Result<Contact, StoreError> {
        let now = self.clock.now();
        self.store.update_contact(id, patch, now).await?;
        self.after_profile(id, now).await?;
        self.store.contact(id).await
    }

    /// Re-scores a changed profile and re-evaluates its segments.
    pub async fn after_profile(&self, id: &str, now: i64) -> Result<(), StoreError> {
        async {
            scoring::score_profile(self, id, now).await?;
            let activity = self.store.activity(id, now).await?;
            segments::evaluate_contact(self, id, &activity, now).await
        }
        .instrument(tracing::debug_span!("after_profile", contact = %id))
        .await
    }

    /// Merges `merged` into `survivor`, records `contact.merged` with what
    /// moved, and re-scores and re-segments the survivor.
    pub async fn merge(&self, survivor: &str, merged: &str) -> Result<MergeReport, StoreError> {
        let now = self.clock.now();
        let report = self.store.merge_contacts(survivor, merged, now).await?;
        let moved = report.events_moved.to_string();
        self.record(
            survivor,
            "contact.merged",
            &[("merged", merged), ("events_moved", &moved)],
            now,
        )
        .await?;
        scoring::score_profile(self, survivor, now).await?;
        let activity = self.store.activity(survivor, now).await?;
        segments::evaluate_contact(self, survivor, &activity, now).await?;
        Ok(report)
    }

    /// Writes an event about the contact that nachfass itself caused
    /// (`stage.changed`, `segment.entered`): on the same timeline, but not
    /// scored again.
    pub(crate) async fn record(
        &self,
        contact_id: &str,
        kind: &str,
        properties: &[(&str, &str)],
        now: i64,
    ) -> Result<(), StoreError> {
        let properties: Fields = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
            .collect();
        let input = EventInput {
            kind: kind.to_owned(),
            at: Some(now),
            properties,
            contact_id: Some(contact_id.to_owned()),
            system: true,
            ..EventInput::default()
        };
        self.store.ingest_event(&input, now).await.map(drop)
    }
}
