//! Running a run's steps until it waits, is deferred or ends. Everything a
//! job does to a run commits in one transaction with the job's removal.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use super::condition::{self, Facts};
use super::definition::{JourneyDef, Step};
use super::facts::StepFacts;
use super::send::{SendOutcome, send};
use super::{AdvanceRun, Journeys, TimeoutRun, props};
use crate::store::StoreError;
use crate::store::contacts::set_attribute_in;
use crate::store::jobs::{ClaimedJob, ProfileChanged, enqueue_in, finish_in};
use crate::store::runs::{Run, RunStatus, update_run_in};
use crate::store::timeline::{last_event_times_in, record_in};

/// Steps one job may take without pausing; validation refuses loops
/// without a wait, so this only guards against the unforeseen.
const MAX_STEPS_PER_JOB: usize = 100;

/// Runs one advance (or timeout) job in the caller's transaction and
/// removes it. Returns `false` when the job's lease was lost: the caller
/// rolls back.
#[allow(clippy::too_many_arguments)]
pub(super) async fn advance_in(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    job: &ClaimedJob,
    run_id: &str,
    seq: i64,
    timed_out: bool,
    now: i64,
) -> Result<bool, StoreError> {
    let run = facts.run(tx, journeys, run_id).await?;
    // A job for a transition that already happened (or a run that ended)
    // is stale: the work was done, by this job's earlier attempt or another.
    let current = run.filter(|r| {
        r.ended_at.is_none() && r.seq == seq && (r.status == RunStatus::Waiting) == timed_out
    });
    if let Some(mut run) = current {
        let def = journeys
            .definition_in(tx, &run.journey, run.version)
            .await?;
        if timed_out {
            let next = match run.step.as_deref().and_then(|s| def.step(s)) {
                Some((index, Step::WaitUntil { on_timeout, .. })) => {
                    def.resolve(index, on_timeout.as_deref())
                }
                _ => None,
            };
            move_to(tx, &mut run, next, now).await?;
        } else {
            drive(journeys, tx, facts, &def, &mut run, now).await?;
        }
        update_run_in(tx, &run).await?;
    }
    finish_in(tx, job).await
}

/// Takes steps until the run pauses or ends.
async fn drive(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    def: &JourneyDef,
    run: &mut Run,
    now: i64,
) -> Result<(), StoreError> {
    let Some(mut contact) = facts.contact(tx, &run.contact_id).await? else {
        return finish_run(tx, run, RunStatus::Exited, Some("contact deleted"), now).await;
    };
    for _ in 0..MAX_STEPS_PER_JOB {
        let Some(step_id) = run.step.clone() else {
            return finish_run(tx, run, RunStatus::Completed, None, now).await;
        };
        let Some((index, step)) = def.step(&step_id) else {
            let why = format!("step `{step_id}` is not in version {}", run.version);
            return finish_run(tx, run, RunStatus::Exited, Some(&why), now).await;
        };
        match step {
            Step::Wait { duration, next, .. } => {
                run.step = def.resolve(index, next.as_deref());
                return pause(tx, run, now + duration.millis, now).await;
            }
            Step::WaitUntil { event, timeout, .. } => {
                run.status = RunStatus::Waiting;
                run.waiting_for = Some(event.clone());
                run.seq += 1;
                let job = TimeoutRun {
                    run_id: run.id.clone(),
                    seq: run.seq,
                };
                enqueue_in(tx, &job, now + timeout.millis, now).await?;
                return Ok(());
            }
            Step::Branch {
                condition,
                then,
                otherwise,
                ..
            } => {
                let kinds = condition::event_kinds(condition);
                let last_events = if kinds.is_empty() {
                    BTreeMap::new()
                } else {
                    last_event_times_in(tx, &contact.id, &kinds).await?
                };
                let facts = Facts {
                    contact: &contact,
                    last_events: &last_events,
                    now,
                };
                let taken = if condition::holds(condition, &facts) {
                    then
                } else {
                    otherwise
                };
                run.step = Some(taken.clone());
            }
            Step::SetAttribute {
                name, value, next, ..
            } => {
                contact.attributes.insert(name.clone(), value.clone());
                set_attribute_in(tx, &contact, now).await?;
                facts.contact_changed(&contact);
                // Re-scored and re-segmented like any profile change, once
                // this step has committed.
                let rescore = ProfileChanged {
                    contact_id: contact.id.clone(),
                    change: format!("{}:{}:{}", run.id, run.seq, step_id),
                };
                enqueue_in(tx, &rescore, now, now).await?;
                run.step = def.resolve(index, next.as_deref());
            }
            Step::Exit { reason, .. } => {
                let reason = reason.as_deref().unwrap_or("exit step");
                return finish_run(tx, run, RunStatus::Exited, Some(reason), now).await;
            }
            Step::Send { next, .. } => {
                match send(journeys, tx, facts, def, run, &contact, step, now).await? {
                    SendOutcome::Queued | SendOutcome::Skipped => {
                        run.step = def.resolve(index, next.as_deref());
                    }
                    SendOutcome::Deferred(until) => return pause(tx, run, until, now).await,
                }
            }
        }
    }
    finish_run(
        tx,
        run,
        RunStatus::Exited,
        Some("too many steps without a wait"),
        now,
    )
    .await
}

/// The run continues at its current step at `until`.
async fn pause(
    tx: &mut AnyConnection,
    run: &mut Run,
    until: i64,
    now: i64,
) -> Result<(), StoreError> {
    run.seq += 1;
    let job = AdvanceRun {
        run_id: run.id.clone(),
        seq: run.seq,
    };
    enqueue_in(tx, &job, until, now).await?;
    Ok(())
}

/// Leaves a wait for `next` (or ends the run there is none), continuing
/// at once in a new job.
pub(super) async fn move_to(
    tx: &mut AnyConnection,
    run: &mut Run,
    next: Option<String>,
    now: i64,
) -> Result<(), StoreError> {
    run.status = RunStatus::Active;
    run.waiting_for = None;
    match next {
        Some(step) => {
            run.step = Some(step);
            pause(tx, run, now, now).await
        }
        None => finish_run(tx, run, RunStatus::Completed, None, now).await,
    }
}

/// Ends a run (`completed`, `converted`, `exited`) and says so on the
/// contact's timeline. The caller writes the run.
pub(super) async fn finish_run(
    tx: &mut AnyConnection,
    run: &mut Run,
    status: RunStatus,
    reason: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    run.status = status;
    run.step = None;
    run.waiting_for = None;
    run.ended_at = Some(now);
    run.exit_reason = reason.map(str::to_owned);
    run.seq += 1;
    update_run_in(tx, run).await?;
    if status != RunStatus::Converted {
        let kind = format!("journey.{status}");
        let mut properties = props(&[("journey", &run.journey), ("run", &run.id)]);
        if let Some(reason) = reason {
            properties.extend(props(&[("reason", reason)]));
        }
        record_in(tx, &run.contact_id, &kind, properties, now).await?;
    }
    Ok(())
}
