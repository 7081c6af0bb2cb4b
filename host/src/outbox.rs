//! The outbox: a queued message is handed to its channel plugin, carrying
//! its idempotency key, after the step that queued it has committed. The
//! outcome and its timeline event commit with the job's removal; a crash
//! between the provider's accept and that commit is the one window in
//! which a message can go out twice, with the same key both times.
//! Deliveries run in batches: a few reads for the batch, the plugin calls
//! side by side, the outcomes in one transaction.

use std::sync::Arc;

use sqlx::AnyConnection;
use tracing::Instrument;

use crate::journeys::{Journeys, props};
use crate::model::{Delivery, Message, SendError, Value};
use crate::runtime::{Binding, CallResult, Plugin, World};
use crate::store::bindings::bindings_in;
use crate::store::jobs::{ClaimedJob, JobOutcome, JobRegistry, backoff, finish_in};
use crate::store::outbox::{
    DeliverMessage, MAX_DELIVERY_ATTEMPTS, OutboxEntry, OutboxStatus, Purpose, outbox_entries_in,
    settle_outbox_in,
};
use crate::store::suppressions::suppressions_of_in;
use crate::store::timeline::record_in;
use crate::store::{BindingKind, StoreError};

pub fn register_jobs(registry: &mut JobRegistry<Journeys>) {
    registry.register_batch(
        |journeys: Arc<Journeys>, jobs: Vec<(_, DeliverMessage)>| async move {
            deliver_batch(&journeys, jobs).await
        },
    );
}

/// Plugin calls of one batch in flight at once: providers answer in tens
/// of milliseconds, so calls overlap while the batch's writes wait.
const CALLS_AT_ONCE: usize = 32;

/// What a job's message comes to: a new state for its outbox entry (or
/// none, when it was settled already), or an outcome for the scheduler
/// with nothing written (a retry).
#[derive(Clone)]
enum Settlement {
    Write(Option<Box<Outcome>>),
    Job(JobOutcome),
}

/// A message's new state and why.
#[derive(Clone)]
struct Outcome {
    entry: OutboxEntry,
    status: OutboxStatus,
    provider_id: Option<String>,
    reason: Option<String>,
}

impl Outcome {
    /// A new state with no provider id.
    fn settle(entry: &OutboxEntry, status: OutboxStatus, reason: Option<String>) -> Settlement {
        Settlement::Write(Some(Box::new(Outcome {
            entry: entry.clone(),
            status,
            provider_id: None,
            reason,
        })))
    }
}

/// Delivers the messages of a batch of jobs: a few reads for all of them
/// (entries, suppressions, bindings), the plugin calls side by side, and
/// every outcome in one transaction, each job in a savepoint of its own.
/// One outcome per job, in order.
pub async fn deliver_batch(
    journeys: &Arc<Journeys>,
    jobs: Vec<(ClaimedJob, DeliverMessage)>,
) -> Vec<Result<JobOutcome, StoreError>> {
    let settlements = match plan(journeys, &jobs).await {
        Ok(plans) => call_all(journeys, plans).await,
        Err(e) => {
            let error = e.to_string();
            return jobs
                .iter()
                .map(|_| Err(StoreError::Invalid(error.clone())))
                .collect();
        }
    };
    let jobs: Vec<ClaimedJob> = jobs.into_iter().map(|(job, _)| job).collect();
    // The messages went out: their outcomes are worth a few tries, since a
    // job retried now would send its message again (with the same key).
    let mut settlements = settlements;
    let mut tries = 0;
    loop {
        tries += 1;
        let kept = (tries < SETTLE_TRIES).then(|| copy_settlements(&settlements));
        match settle_all(journeys, &jobs, settlements).await {
            Ok(outcomes) => return outcomes,
            Err(e) => match kept {
                Some(again) => {
                    tracing::warn!(error = %e, tries, "recording a batch of deliveries failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
                    settlements = again;
                }
                // Nothing was written: every job is retried.
                None => {
                    let error = e.to_string();
                    return jobs
                        .iter()
                        .map(|_| Err(StoreError::Invalid(error.clone())))
                        .collect();
                }
            },
        }
    }
}

/// Attempts at writing a batch's outcomes.
const SETTLE_TRIES: u64 = 3;

fn copy_settlements(
    settlements: &[Result<Settlement, StoreError>],
) -> Vec<Result<Settlement, StoreError>> {
    settlements
        .iter()
        .map(|s| match s {
            Ok(settlement) => Ok(settlement.clone()),
            Err(e) => Err(StoreError::Invalid(e.to_string())),
        })
        .collect()
}

/// A job's message, ready to hand to its plugin, or settled without one.
enum Plan {
    Done(Result<Settlement, StoreError>),
    Call(Box<Call>),
}

/// A plugin call to make.
struct Call {
    job: ClaimedJob,
    entry: OutboxEntry,
    plugin: Arc<Plugin>,
    binding: Arc<Binding>,
    message: Message,
}

async fn plan(
    journeys: &Journeys,
    jobs: &[(ClaimedJob, DeliverMessage)],
) -> Result<Vec<Plan>, StoreError> {
    let store = &journeys.pipeline.store;
    let ids: Vec<String> = jobs.iter().map(|(_, a)| a.outbox_id.clone()).collect();
    let mut conn = store.pool().acquire().await?;
    let entries = outbox_entries_in(&mut conn, &ids).await?;
    let mut contacts: Vec<String> = entries.values().map(|e| e.contact_id.clone()).collect();
    contacts.sort_unstable();
    contacts.dedup();
    let suppressions = suppressions_of_in(&mut conn, &contacts).await?;
    let bindings = bindings_in(&mut conn, BindingKind::Channel).await?;
    drop(conn);
    Ok(jobs
        .iter()
        .map(|(job, args)| {
            let Some(entry) = entries
                .get(&args.outbox_id)
                .filter(|e| e.status == OutboxStatus::Pending)
            else {
                // Delivered, failed or cancelled already, or the contact erased.
                return Plan::Done(Ok(Settlement::Write(None)));
            };
            let marketing = entry.purpose == Purpose::Marketing;
            // A stop that came after the message was queued still wins.
            let stop = suppressions
                .get(&entry.contact_id)
                .into_iter()
                .flatten()
                .find(|s| s.applies(&entry.channel, marketing));
            if let Some(s) = stop {
                let reason = format!("cancelled: contact is suppressed ({})", s.reason);
                return Plan::Done(Ok(Outcome::settle(
                    entry,
                    OutboxStatus::Cancelled,
                    Some(reason),
                )));
            }
            let Some(binding) = bindings.iter().find(|b| b.name == entry.binding) else {
                let reason = format!("channel binding `{}` was deleted", entry.binding);
                return Plan::Done(Ok(Outcome::settle(
                    entry,
                    OutboxStatus::Failed,
                    Some(reason),
                )));
            };
            let Some(plugin) = journeys
                .pipeline
                .registry
                .resolve(&binding.plugin, binding.version.as_deref())
            else {
                let why = format!("plugin `{}` is not installed", binding.plugin);
                return Plan::Done(Ok(Settlement::Job(retry(job, why))));
            };
            let message = match serde_json::from_str::<Message>(&entry.message) {
                Ok(message) => message,
                Err(e) => {
                    let why = format!("outbox entry {}: {e}", entry.id);
                    return Plan::Done(Err(StoreError::Invalid(why)));
                }
            };
            Plan::Call(Box::new(Call {
                job: job.clone(),
                entry: entry.clone(),
                binding: crate::scoring::runtime_binding(binding, World::Channel, &plugin),
                plugin,
                message,
            }))
        })
        .collect())
}

/// Makes the plugin calls of `plans`, [`CALLS_AT_ONCE`] at a time; one
/// settlement per plan, in order.
async fn call_all(
    journeys: &Arc<Journeys>,
    plans: Vec<Plan>,
) -> Vec<Result<Settlement, StoreError>> {
    let mut settlements: Vec<Option<Result<Settlement, StoreError>>> = Vec::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(CALLS_AT_ONCE));
    let mut calls = tokio::task::JoinSet::new();
    for (index, plan) in plans.into_iter().enumerate() {
        match plan {
            Plan::Done(settlement) => settlements.push(Some(settlement)),
            Plan::Call(call) => {
                let Call {
                    job,
                    entry,
                    plugin,
                    binding,
                    message,
                } = *call;
                settlements.push(None);
                let journeys = journeys.clone();
                let permits = permits.clone();
                let span = tracing::info_span!("deliver", binding = %entry.binding, message = %entry.idempotency_key, attempt = job.attempts);
                calls.spawn(
                    async move {
                        // The semaphore is never closed, so a permit always comes.
                        let _permit = permits.acquire_owned().await;
                        let now = journeys.pipeline.clock.now();
                        let answer = plugin.deliver(&binding, now, &message).await;
                        (index, Ok(judge(&job, &entry, answer)))
                    }
                    .instrument(span),
                );
            }
        }
    }
    while let Some(done) = calls.join_next().await {
        match done {
            Ok((index, settlement)) => settlements[index] = Some(settlement),
            // A panicked call: its slot stays empty and the job is retried.
            Err(e) => tracing::error!(error = %e, "a delivery call panicked"),
        }
    }
    settlements
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err(StoreError::Invalid("the delivery call failed".into()))))
        .collect()
}

/// What a plugin's answer means for the message.
fn judge(
    job: &ClaimedJob,
    entry: &OutboxEntry,
    answer: CallResult<Delivery, SendError>,
) -> Settlement {
    let transient = match answer {
        Ok(Ok(delivery)) => {
            return Settlement::Write(Some(Box::new(Outcome {
                entry: entry.clone(),
                status: OutboxStatus::Delivered,
                provider_id: delivery.provider_id,
                reason: None,
            })));
        }
        Ok(Err(SendError::Permanent(why))) => {
            let reason = format!("permanent: {why}");
            return Outcome::settle(entry, OutboxStatus::Failed, Some(reason));
        }
        Ok(Err(SendError::RateLimited(seconds))) => {
            let wait = i64::from(seconds) * 1000;
            if job.attempts < MAX_DELIVERY_ATTEMPTS {
                return Settlement::Job(JobOutcome::Retry {
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
        return Settlement::Job(retry(job, transient));
    }
    let reason = format!("gave up after {} attempts: {transient}", job.attempts);
    Outcome::settle(entry, OutboxStatus::Failed, Some(reason))
}

fn retry(job: &ClaimedJob, error: String) -> JobOutcome {
    JobOutcome::Retry {
        after_ms: backoff(job.attempts, &job.id),
        error,
    }
}

/// Writes the settlements of a batch in one transaction, each job in a
/// savepoint of its own: an outcome (status, provider id, reason) with its
/// timeline event, and the job's removal.
async fn settle_all(
    journeys: &Journeys,
    jobs: &[ClaimedJob],
    settlements: Vec<Result<Settlement, StoreError>>,
) -> Result<Vec<Result<JobOutcome, StoreError>>, StoreError> {
    let now = journeys.pipeline.clock.now();
    let mut tx = journeys.pipeline.store.write_tx().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (job, settlement) in jobs.iter().zip(settlements) {
        let outcome = match settlement {
            Ok(Settlement::Write(outcome)) => outcome,
            Ok(Settlement::Job(outcome)) => {
                outcomes.push(Ok(outcome));
                continue;
            }
            Err(e) => {
                outcomes.push(Err(e));
                continue;
            }
        };
        sqlx::query("SAVEPOINT nachfass_delivery")
            .execute(&mut *tx)
            .await?;
        match settle_in(&mut tx, job, outcome.as_deref(), now).await {
            Ok(true) => {
                sqlx::query("RELEASE SAVEPOINT nachfass_delivery")
                    .execute(&mut *tx)
                    .await?;
                outcomes.push(Ok(JobOutcome::Done));
                continue;
            }
            // The lease ran out and another worker has the job.
            Ok(false) => outcomes.push(Ok(JobOutcome::Done)),
            Err(e) => outcomes.push(Err(e)),
        }
        sqlx::query("ROLLBACK TO SAVEPOINT nachfass_delivery")
            .execute(&mut *tx)
            .await?;
        sqlx::query("RELEASE SAVEPOINT nachfass_delivery")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Records `outcome` and removes the job, in the caller's transaction;
/// `false` when the job's lease was lost (the caller undoes this).
async fn settle_in(
    tx: &mut AnyConnection,
    job: &ClaimedJob,
    outcome: Option<&Outcome>,
    now: i64,
) -> Result<bool, StoreError> {
    if let Some(Outcome {
        entry,
        status,
        provider_id,
        reason,
    }) = outcome
    {
        let (status, provider_id, reason) = (*status, provider_id.as_deref(), reason.as_deref());
        settle_outbox_in(tx, &entry.id, status, provider_id, reason, now).await?;
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
        record_in(tx, &entry.contact_id, kind, properties, now).await?;
    }
    finish_in(tx, job).await
}
