//! The outbox: a queued message is handed to its channel plugin, carrying
//! its idempotency key, after the step that queued it has committed. The
//! outcome and its timeline event commit with the job's removal; a crash
//! between the provider's accept and that commit is the one window in
//! which a message can go out twice, with the same key both times.
//! Deliveries run in batches: a few reads for the batch, the plugin calls
//! side by side, the outcomes in small groups written together as
//! the calls come back (so the window stays as small as it was).
//! A binding with a rate takes its batch's tokens from its cluster-wide
//! bucket before any call; the messages beyond them wait, uncounted.

use std::sync::Arc;

use tracing::Instrument;

use crate::journeys::{Journeys, props};
use crate::model::{Delivery, Message, SendError, Value};
use crate::runtime::{Binding, CallResult, Plugin, World};
use crate::store::bindings::{BindingDef, bindings_in};
use crate::store::delivery_writes::DeliveryEnd;
use crate::store::jobs::{ClaimedJob, JobOutcome, JobRegistry, backoff};
use crate::store::outbox::{
    DeliverMessage, MAX_DELIVERY_ATTEMPTS, OutboxEntry, OutboxSettle, OutboxStatus, Purpose,
    outbox_entries_in,
};
use crate::store::step_writes::NewEvent;
use crate::store::suppressions::suppressions_of_in;
use crate::store::{BindingKind, StoreError, new_event_id};

pub fn register_jobs(registry: &mut JobRegistry<Journeys>) {
    registry.register_batch(
        |journeys: Arc<Journeys>, jobs: Vec<(_, DeliverMessage)>| async move {
            deliver_batch(&journeys, jobs).await
        },
    );
}

/// Messages of one batch called but not yet recorded, at most. Those are
/// the messages a crash could send twice, so a call's place is freed only
/// once its outcome is written: the deliveries lane runs two batches, so a
/// node has at most 64 — as many as it ran at once before batches.
const CALLS_AT_ONCE: usize = 32;

/// Outcomes written together: half the calls, so one group is
/// written while the other half is out.
const SETTLE_GROUP: usize = 16;

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
    /// The timeline event that says what became of the message.
    fn event(&self) -> (&'static str, crate::model::Fields) {
        let entry = &self.entry;
        let kind = match self.status {
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
            ("provider_id", self.provider_id.as_deref()),
            ("reason", self.reason.as_deref()),
        ] {
            if let Some(value) = value {
                properties.insert(key.into(), Value::Text(value.to_owned()));
            }
        }
        (kind, properties)
    }

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
/// the outcomes in groups written together as the calls come back. One
/// outcome per job, in order.
pub async fn deliver_batch(
    journeys: &Arc<Journeys>,
    jobs: Vec<(ClaimedJob, DeliverMessage)>,
) -> Vec<Result<JobOutcome, StoreError>> {
    let plans = match plan(journeys, &jobs).await {
        Ok(plans) => plans,
        Err(e) => {
            let error = e.to_string();
            return jobs
                .iter()
                .map(|_| Err(StoreError::Invalid(error.clone())))
                .collect();
        }
    };
    let jobs: Vec<ClaimedJob> = jobs.into_iter().map(|(job, _)| job).collect();
    let mut outcomes: Vec<Option<Result<JobOutcome, StoreError>>> =
        jobs.iter().map(|_| None).collect();
    let mut ready: Vec<(usize, Result<Settlement, StoreError>)> = Vec::new();
    let mut waiting = std::collections::VecDeque::new();
    for (index, plan) in plans.into_iter().enumerate() {
        match plan {
            // Nothing to write (a deferral, say): no transaction for it.
            Plan::Done(Ok(Settlement::Job(outcome))) => outcomes[index] = Some(Ok(outcome)),
            Plan::Done(settlement) => ready.push((index, settlement)),
            Plan::Call(call) => waiting.push_back((index, *call)),
        }
    }
    let places = Arc::new(tokio::sync::Semaphore::new(CALLS_AT_ONCE));
    let mut calls = tokio::task::JoinSet::new();
    // The places of calls whose outcomes wait to be written.
    let mut held = Vec::new();
    let mut given_back = 0u64;
    loop {
        while let Some(place) = waiting
            .front()
            .and_then(|_| places.clone().try_acquire_owned().ok())
        {
            let Some((index, call)) = waiting.pop_front() else {
                break;
            };
            // A lease this node cannot confirm may run out during the call
            // and the message be sent again by the node that takes it over:
            // the job goes back unsent instead, for whoever claims it next.
            let now = journeys.pipeline.clock.now();
            let job = &jobs[index];
            if job.lease.has_time_to_spare(now, job.lease_ms) {
                calls.spawn(make_call(journeys.clone(), index, call, place));
            } else {
                outcomes[index] = Some(Ok(JobOutcome::Defer { until: now }));
                given_back += 1;
            }
        }
        while let Some(done) = calls.try_join_next() {
            collect(done, &mut ready, &mut held);
        }
        let all_back = calls.is_empty() && waiting.is_empty();
        if ready.len() >= SETTLE_GROUP || (all_back && !ready.is_empty()) {
            let group = std::mem::take(&mut ready);
            for (index, outcome) in settle_group(journeys, &jobs, group).await {
                outcomes[index] = Some(outcome);
            }
            held.clear();
            continue;
        }
        if all_back {
            break;
        }
        if let Some(done) = calls.join_next().await {
            collect(done, &mut ready, &mut held);
        }
    }
    if given_back > 0 {
        metrics::counter!("nachfass_deliveries_given_back_total").increment(given_back);
        tracing::warn!(
            given_back,
            "deliveries given back unsent: their leases could not be extended in time"
        );
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Invalid("the delivery call failed".into()))))
        .collect()
}

/// A call's index, its settlement, and its place among the calls at once.
type CallBack = (
    usize,
    Result<Settlement, StoreError>,
    tokio::sync::OwnedSemaphorePermit,
);

fn collect(
    done: Result<CallBack, tokio::task::JoinError>,
    ready: &mut Vec<(usize, Result<Settlement, StoreError>)>,
    held: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
) {
    match done {
        Ok((index, settlement, place)) => {
            ready.push((index, settlement));
            held.push(place);
        }
        // A panicked call: its job gets no outcome and is retried.
        Err(e) => tracing::error!(error = %e, "a delivery call panicked"),
    }
}

/// Writes a group's outcomes. The messages went out: their outcomes are
/// worth a few tries, since a job retried now would send its message
/// again (with the same key).
async fn settle_group(
    journeys: &Journeys,
    jobs: &[ClaimedJob],
    group: Vec<(usize, Result<Settlement, StoreError>)>,
) -> Vec<(usize, Result<JobOutcome, StoreError>)> {
    let indices: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
    let mut settlements: Vec<Result<Settlement, StoreError>> =
        group.into_iter().map(|(_, s)| s).collect();
    let group_jobs: Vec<&ClaimedJob> = indices.iter().map(|i| &jobs[*i]).collect();
    let mut tries = 0;
    loop {
        tries += 1;
        let kept = (tries < SETTLE_TRIES).then(|| copy_settlements(&settlements));
        match settle_all(journeys, &group_jobs, settlements).await {
            Ok(outcomes) => return indices.into_iter().zip(outcomes).collect(),
            Err(e) => match kept {
                Some(again) => {
                    tracing::warn!(error = %e, tries, "recording deliveries failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
                    settlements = again;
                }
                // Nothing was written: every job of the group is retried.
                None => {
                    let error = e.to_string();
                    return indices
                        .into_iter()
                        .map(|i| (i, Err(StoreError::Invalid(error.clone()))))
                        .collect();
                }
            },
        }
    }
}

/// Attempts at writing a group's outcomes.
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
    let entries = outbox_entries_in(&mut conn, store.dialect(), &ids).await?;
    let mut contacts: Vec<String> = entries.values().map(|e| e.contact_id.clone()).collect();
    contacts.sort_unstable();
    contacts.dedup();
    let suppressions = suppressions_of_in(&mut conn, store.dialect(), &contacts).await?;
    let bindings = bindings_in(&mut conn, BindingKind::Channel).await?;
    drop(conn);
    let mut plans: Vec<Plan> = jobs
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
        .collect();
    hold_to_rate(journeys, &bindings, &mut plans).await?;
    Ok(plans)
}

/// Holds back the calls beyond what each rate-limited binding's bucket
/// grants. The tokens are taken for the whole batch at once, the first
/// calls (oldest due) get them, and the rest are deferred to when theirs
/// come: no attempt counted, no call made, nothing for the breaker to
/// see. Bindings without a rate cost nothing here.
async fn hold_to_rate(
    journeys: &Journeys,
    bindings: &[BindingDef],
    plans: &mut [Plan],
) -> Result<(), StoreError> {
    for def in bindings {
        let Some(rate) = &def.rate else {
            continue;
        };
        let calls: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| matches!(plan, Plan::Call(call) if call.entry.binding == def.name))
            .map(|(index, _)| index)
            .collect();
        if calls.is_empty() {
            continue;
        }
        let want = u32::try_from(calls.len()).unwrap_or(u32::MAX);
        let now = journeys.pipeline.clock.now();
        let grant = journeys
            .pipeline
            .store
            .take_tokens(&def.name, rate, want, now)
            .await?;
        let held = calls
            .get(usize::try_from(grant.granted).unwrap_or(usize::MAX)..)
            .unwrap_or_default();
        for (index, until) in held.iter().zip(grant.deferred_to) {
            plans[*index] = Plan::Done(Ok(Settlement::Job(JobOutcome::Defer { until })));
        }
        if !held.is_empty() {
            metrics::counter!("nachfass_deliveries_deferred_total", "binding" => def.name.clone())
                .increment(held.len() as u64);
            tracing::info!(
                binding = %def.name,
                granted = grant.granted,
                deferred = held.len(),
                "delivery rate limit reached; messages deferred"
            );
        }
    }
    Ok(())
}

/// Hands one message to its plugin, holding `place` among the calls at
/// once until the caller has written the outcome.
async fn make_call(
    journeys: Arc<Journeys>,
    index: usize,
    call: Call,
    place: tokio::sync::OwnedSemaphorePermit,
) -> CallBack {
    let Call {
        job,
        entry,
        plugin,
        binding,
        message,
    } = call;
    let span = tracing::info_span!("deliver", binding = %entry.binding, message = %entry.idempotency_key, attempt = job.attempts);
    let now = journeys.pipeline.clock.now();
    let answer = plugin
        .deliver(&binding, now, &message)
        .instrument(span)
        .await;
    (index, Ok(judge(&job, &entry, answer)), place)
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

/// Writes the settlements of a group together (see `delivery_writes`):
/// the outcomes (status, provider id, reason) with their timeline events,
/// and the jobs' removal. A job whose lease was lost meanwhile is done
/// here: another worker has it, and nothing of it is written.
async fn settle_all(
    journeys: &Journeys,
    jobs: &[&ClaimedJob],
    settlements: Vec<Result<Settlement, StoreError>>,
) -> Result<Vec<Result<JobOutcome, StoreError>>, StoreError> {
    let now = journeys.pipeline.clock.now();
    let mut written = Vec::new();
    for (job, settlement) in jobs.iter().zip(&settlements) {
        let Ok(Settlement::Write(outcome)) = settlement else {
            continue;
        };
        let outcome = match outcome {
            Some(outcome) => {
                let (kind, properties) = outcome.event();
                let event = NewEvent {
                    id: new_event_id(),
                    contact_id: outcome.entry.contact_id.clone(),
                    kind: kind.to_owned(),
                    properties: serde_json::to_string(&properties)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    at: now,
                    queued: None,
                };
                Some((outcome, event))
            }
            None => None,
        };
        written.push((*job, outcome));
    }
    let ends: Vec<DeliveryEnd> = written
        .iter()
        .map(|(job, outcome)| DeliveryEnd {
            job,
            outcome: outcome.as_ref().map(|(outcome, event)| {
                let settle = OutboxSettle {
                    id: &outcome.entry.id,
                    status: outcome.status,
                    provider_id: outcome.provider_id.as_deref(),
                    last_error: outcome.reason.as_deref(),
                    sent_at: (outcome.status == OutboxStatus::Delivered).then_some(now),
                };
                (settle, event)
            }),
        })
        .collect();
    let removed = journeys.pipeline.store.end_deliveries(&ends).await?;
    if removed.len() < ends.len() {
        tracing::info!(
            left = ends.len() - removed.len(),
            "deliveries another worker took over were left to it"
        );
    }
    Ok(settlements
        .into_iter()
        .map(|settlement| match settlement {
            Ok(Settlement::Write(_)) => Ok(JobOutcome::Done),
            Ok(Settlement::Job(outcome)) => Ok(outcome),
            Err(e) => Err(e),
        })
        .collect())
}
