//! Ingest: store a touchpoint, then let it move the score and the segment
//! memberships of its contact. Data flow: ingest → score → segment.

use tracing::Instrument;

use crate::model::{ActivityCount, Contact, Event, Fields, Value};
pub use crate::pipeline::Pipeline;
use crate::scoring;
use crate::segments;
use crate::store::{ContactInput, ContactRecord, EventInput, Ingested, MergeReport, StoreError};

impl Pipeline {
    /// Stores the event; a new one (not a resend) is scored and the
    /// contact's segments re-evaluated.
    pub async fn ingest(&self, input: &EventInput) -> Result<Ingested, StoreError> {
        let now = self.clock.now();
        let ingested = self.store.ingest_event(input, now).await?;
        if !ingested.duplicate {
            metrics::counter!("nachfass_events_ingested_total").increment(1);
            let span = tracing::debug_span!("after_event", event = %ingested.event.id, kind = %ingested.event.kind);
            self.after_event(&ingested.event, now)
                .instrument(span)
                .await?;
        }
        Ok(ingested)
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

    async fn after_profile(&self, id: &str, now: i64) -> Result<(), StoreError> {
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

    async fn after_event(&self, event: &Event, now: i64) -> Result<(), StoreError> {
        let activity = self.store.activity(&event.contact_id, now).await?;
        scoring::score_event(self, event, &before(&activity, event), now).await?;
        segments::evaluate_contact(self, &event.contact_id, &activity, now).await
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

/// The activity summary as it was before `event`: scorers cap per day on
/// what came before.
fn before(activity: &[ActivityCount], event: &Event) -> Vec<ActivityCount> {
    activity
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if a.kind == event.kind {
                a.total = a.total.saturating_sub(1);
                a.last_24_hours = a.last_24_hours.saturating_sub(1);
                a.last_30_days = a.last_30_days.saturating_sub(1);
            }
            a
        })
        .collect()
}
