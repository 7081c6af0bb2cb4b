//! Running a run's steps until it waits, is deferred or ends. Everything a
//! job does to a run is held in the batch's writes (`writes.rs`) and
//! commits in one transaction with the job's removal.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use super::condition::{self, Facts};
use super::definition::{JourneyDef, Step};
use super::facts::StepFacts;
use super::send::{SendOutcome, send};
use super::writes::StepWrites;
use super::{AdvanceRun, Journeys, TimeoutRun, props};
use crate::store::StoreError;
use crate::store::jobs::ProfileChanged;
use crate::store::runs::{Run, RunStatus};
use crate::store::timeline::last_event_times_in;

/// Steps one job may take without pausing; validation refuses loops
/// without a wait, so this only guards against the unforeseen.
const MAX_STEPS_PER_JOB: usize = 100;

/// Runs one advance (or timeout) job, reading in the caller's transaction
/// and writing into `facts.writes`; the caller removes the job with them.
pub(super) async fn advance_in(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    run_id: &str,
    seq: i64,
    timed_out: bool,
    now: i64,
) -> Result<(), StoreError> {
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
            move_to(&mut facts.writes, &mut run, next, now)?;
        } else {
            drive(journeys, tx, facts, &def, &mut run, now).await?;
        }
        facts.writes.run(&run);
    }
    Ok(())
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
        return finish_run(
            &mut facts.writes,
            run,
            RunStatus::Exited,
            Some("contact deleted"),
            now,
        );
    };
    for _ in 0..MAX_STEPS_PER_JOB {
        let Some(step_id) = run.step.clone() else {
            return finish_run(&mut facts.writes, run, RunStatus::Completed, None, now);
        };
        let Some((index, step)) = def.step(&step_id) else {
            let why = format!("step `{step_id}` is not in version {}", run.version);
            return finish_run(&mut facts.writes, run, RunStatus::Exited, Some(&why), now);
        };
        match step {
            Step::Wait { duration, next, .. } => {
                run.step = def.resolve(index, next.as_deref());
                return pause(&mut facts.writes, run, now + duration.millis);
            }
            Step::WaitUntil { event, timeout, .. } => {
                run.status = RunStatus::Waiting;
                run.waiting_for = Some(event.clone());
                run.seq += 1;
                let job = TimeoutRun {
                    run_id: run.id.clone(),
                    seq: run.seq,
                };
                return facts.writes.job(&job, now + timeout.millis);
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
                    // Stored, and written by earlier steps of this batch.
                    let mut last = last_event_times_in(tx, &contact.id, &kinds).await?;
                    for (kind, at) in facts.writes.last_event_times(&contact.id, &kinds) {
                        let known = last.entry(kind).or_insert(at);
                        *known = (*known).max(at);
                    }
                    last
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
                facts.writes.attributes(&contact)?;
                facts.contact_changed(&contact);
                // Re-scored and re-segmented like any profile change, once
                // this step has committed.
                let rescore = ProfileChanged {
                    contact_id: contact.id.clone(),
                    change: format!("{}:{}:{}", run.id, run.seq, step_id),
                };
                facts.writes.job(&rescore, now)?;
                run.step = def.resolve(index, next.as_deref());
            }
            Step::Exit { reason, .. } => {
                let reason = reason.as_deref().unwrap_or("exit step");
                return finish_run(&mut facts.writes, run, RunStatus::Exited, Some(reason), now);
            }
            Step::Send { next, .. } => {
                match send(journeys, tx, facts, def, run, &contact, step, now).await? {
                    SendOutcome::Queued | SendOutcome::Skipped => {
                        run.step = def.resolve(index, next.as_deref());
                    }
                    SendOutcome::Deferred(until) => return pause(&mut facts.writes, run, until),
                }
            }
        }
    }
    finish_run(
        &mut facts.writes,
        run,
        RunStatus::Exited,
        Some("too many steps without a wait"),
        now,
    )
}

/// The run continues at its current step at `until`.
fn pause(writes: &mut StepWrites, run: &mut Run, until: i64) -> Result<(), StoreError> {
    run.seq += 1;
    let job = AdvanceRun {
        run_id: run.id.clone(),
        seq: run.seq,
    };
    writes.job(&job, until)
}

/// Leaves a wait for `next` (or ends the run there is none), continuing
/// at once in a new job.
pub(super) fn move_to(
    writes: &mut StepWrites,
    run: &mut Run,
    next: Option<String>,
    now: i64,
) -> Result<(), StoreError> {
    run.status = RunStatus::Active;
    run.waiting_for = None;
    match next {
        Some(step) => {
            run.step = Some(step);
            pause(writes, run, now)
        }
        None => finish_run(writes, run, RunStatus::Completed, None, now),
    }
}

/// Ends a run (`completed`, `converted`, `exited`) and says so on the
/// contact's timeline.
pub(super) fn finish_run(
    writes: &mut StepWrites,
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
    writes.run(run);
    if status != RunStatus::Converted {
        let kind = format!("journey.{status}");
        let mut properties = props(&[("journey", &run.journey), ("run", &run.id)]);
        if let Some(reason) = reason {
            properties.extend(props(&[("reason", reason)]));
        }
        writes.event(&run.contact_id, &kind, &properties, now)?;
    }
    Ok(())
}
