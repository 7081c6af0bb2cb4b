//! The outbox: a queued message is handed to its channel plugin, carrying
//! its idempotency key, after the step that queued it has committed. The
//! outcome and its timeline event commit with the job's removal; a crash
//! between the provider's accept and that commit is the one window in
//! which a message can go out twice, with the same key both times.

use tracing::Instrument;

use crate::journeys::{Journeys, props};
use crate::model::{Message, SendError, Value};
use crate::runtime::World;
use crate::store::jobs::{ClaimedJob, JobOutcome, JobRegistry, backoff, finish_in};
use crate::store::outbox::{
    DeliverMessage, MAX_DELIVERY_ATTEMPTS, OutboxEntry, OutboxStatus, Purpose, settle_outbox_in,
};
use crate::store::timeline::record_in;
use crate::store::{BindingKind, StoreError};

pub fn register_jobs(registry: &mut JobRegistry<Journeys>) {
    registry.register(|journeys, job, args: DeliverMessage| async move {
        deliver(&journeys, &job, &args.outbox_id).await
    });
}

pub async fn deliver(
    journeys: &Journeys,
    job: &ClaimedJob,
    outbox_id: &str,
) -> Result<JobOutcome, StoreError> {
    let store = &journeys.pipeline.store;
    let entry = store.outbox_entry(outbox_id).await?;
    let Some(entry) = entry.filter(|e| e.status == OutboxStatus::Pending) else {
        // Delivered, failed or cancelled already, or the contact erased.
        return settle(journeys, job, None).await;
    };
    let marketing = entry.purpose == Purpose::Marketing;
    // A stop that came after the message was queued still wins.
    let suppressions = store.suppressions(&entry.contact_id).await?;
    if let Some(s) = suppressions
        .iter()
        .find(|s| s.applies(&entry.channel, marketing))
    {
        let reason = format!("cancelled: contact is suppressed ({})", s.reason);
        return settle(
            journeys,
            job,
            Some((&entry, OutboxStatus::Cancelled, None, Some(&reason))),
        )
        .await;
    }
    let binding = store
        .bindings(BindingKind::Channel)
        .await?
        .into_iter()
        .find(|b| b.name == entry.binding);
    let Some(binding) = binding else {
        let reason = format!("channel binding `{}` was deleted", entry.binding);
        return settle(
            journeys,
            job,
            Some((&entry, OutboxStatus::Failed, None, Some(&reason))),
        )
        .await;
    };
    let Some(plugin) = journeys
        .pipeline
        .registry
        .resolve(&binding.plugin, binding.version.as_deref())
    else {
        return Ok(retry(
            job,
            format!("plugin `{}` is not installed", binding.plugin),
        ));
    };
    let message: Message = serde_json::from_str(&entry.message)
        .map_err(|e| StoreError::Invalid(format!("outbox entry {}: {e}", entry.id)))?;
    let runtime_binding = crate::scoring::runtime_binding(&binding, World::Channel, &plugin);
    let span = tracing::info_span!("deliver", binding = %entry.binding, message = %entry.idempotency_key, attempt = job.attempts);
    let answer = plugin
        .deliver(&runtime_binding, journeys.pipeline.clock.now(), &message)
        .instrument(span)
        .await;
    let transient = match answer {
        Ok(Ok(delivery)) => {
            let provider_id = delivery.provider_id;
            return settle(
                journeys,
                job,
                Some((
                    &entry,
                    OutboxStatus::Delivered,
                    provider_id.as_deref(),
                    None,
                )),
            )
            .await;
        }
        Ok(Err(SendError::Permanent(why))) => {
            let reason = format!("permanent: {why}");
            return settle(
                journeys,
                job,
                Some((&entry, OutboxStatus::Failed, None, Some(&reason))),
            )
            .await;
        }
        Ok(Err(SendError::RateLimited(seconds))) => {
            let wait = i64::from(seconds) * 1000;
            if job.attempts < MAX_DELIVERY_ATTEMPTS {
                return Ok(JobOutcome::Retry {
                    after_ms: wait.max(backoff(job.attempts, &job.id)),
                    error: format!("rate limited: retry after {seconds} s"),
                });
            }
            format!("rate limited {} times", job.attempts)
        }
        Ok(Err(SendError::Transient(why))) => format!("transient: {why}"),
        // A trap or a limit is the plugin's fault, perhaps passing (a slow
        // provider hitting the timeout): retried like a transient error.
        Err(failure) => format!("plugin failed: {failure}"),
    };
    if job.attempts < MAX_DELIVERY_ATTEMPTS {
        return Ok(retry(job, transient));
    }
    let reason = format!("gave up after {} attempts: {transient}", job.attempts);
    settle(
        journeys,
        job,
        Some((&entry, OutboxStatus::Failed, None, Some(&reason))),
    )
    .await
}

fn retry(job: &ClaimedJob, error: String) -> JobOutcome {
    JobOutcome::Retry {
        after_ms: backoff(job.attempts, &job.id),
        error,
    }
}

/// Records an outcome (status, provider id, reason) and removes the job.
async fn settle(
    journeys: &Journeys,
    job: &ClaimedJob,
    outcome: Option<(&OutboxEntry, OutboxStatus, Option<&str>, Option<&str>)>,
) -> Result<JobOutcome, StoreError> {
    let now = journeys.pipeline.clock.now();
    let mut tx = journeys.pipeline.store.write_tx().await?;
    if let Some((entry, status, provider_id, reason)) = outcome {
        settle_outbox_in(&mut tx, &entry.id, status, provider_id, reason, now).await?;
        let kind = match status {
            OutboxStatus::Delivered => "message.sent",
            OutboxStatus::Cancelled => "message.cancelled",
            OutboxStatus::Pending | OutboxStatus::Failed => "message.failed",
        };
        let mut properties = props(&[
            ("journey", &entry.journey),
            ("step", &entry.step),
            ("run", &entry.run_id),
            ("binding", &entry.binding),
            ("channel", &entry.channel),
            ("purpose", entry.purpose.as_str()),
            ("message", &entry.idempotency_key),
        ]);
        for (key, value) in [
            ("variant", entry.variant.as_deref()),
            ("provider_id", provider_id),
            ("reason", reason),
        ] {
            if let Some(value) = value {
                properties.insert(key.into(), Value::Text(value.to_owned()));
            }
        }
        record_in(&mut tx, &entry.contact_id, kind, properties, now).await?;
    }
    if finish_in(&mut tx, job).await? {
        tx.commit().await?;
    }
    Ok(JobOutcome::Done)
}
