//! Route, advance and timeout jobs run many at a time, in one transaction
//! for a whole batch. A commit per job was most of a step's cost (on
//! PostgreSQL a WAL flush each, on SQLite a turn at the one write lock);
//! now a batch of jobs shares one. Steps of runs hold their writes until
//! the batch ends and then make them one statement per table
//! (`writes.rs`), and so do events to route (`route.rs`). A step that
//! fails takes back its writes and leaves the others' work standing; an
//! event that fails to route makes the batch's events route again one by
//! one. Failed jobs go back to the scheduler as before (retried with
//! backoff).
//! A job whose lease was lost is left to the node that holds it.

use sqlx::AnyConnection;

use super::advance::advance_in;
use super::facts::StepFacts;
use super::route::{route_in, start_runs_in};
use super::{ActiveJourneys, AdvanceRun, Journeys};
use crate::store::StoreError;
use crate::store::jobs::{ClaimedJob, JobOutcome};
use crate::store::runs::Run;
use crate::store::step_writes::write_step_batch_in;

/// What one job of a batch asks for.
pub(super) enum StepJob {
    Route { event_id: String },
    Advance { run_id: String, seq: i64 },
    Timeout { run_id: String, seq: i64 },
}

/// Runs `jobs` in one transaction; one outcome per job, in order.
pub(super) async fn run_steps(
    journeys: &Journeys,
    jobs: Vec<(ClaimedJob, StepJob)>,
) -> Vec<Result<JobOutcome, StoreError>> {
    match run_in_one_transaction(journeys, &jobs).await {
        Ok(BatchEnd::Committed(outcomes)) => outcomes,
        // Left to the worker that holds it now.
        Ok(BatchEnd::LeaseLost) if jobs.len() == 1 => vec![Ok(JobOutcome::Done)],
        Ok(BatchEnd::LeaseLost) => run_held_again(journeys, jobs).await,
        Err(e) if jobs.len() == 1 => vec![Err(e)],
        // Nothing of the batch committed (a lost connection, a deadlock
        // with another node's batch): each job runs again on its own, so
        // one bad moment does not cost a whole batch its backoff.
        Err(e) => {
            tracing::info!(error = %e, jobs = jobs.len(), "a batch of steps failed; running its jobs one by one");
            one_by_one(journeys, &jobs).await
        }
    }
}

/// How a batch's transaction ended.
enum BatchEnd {
    Committed(Vec<Result<JobOutcome, StoreError>>),
    /// Another worker holds one of the jobs now (its lease ran out), and
    /// its work counts: nothing of the batch was kept.
    LeaseLost,
}

/// After a batch that kept nothing because leases were lost: the jobs
/// taken over are left to their new worker, and the others run again as
/// one batch. On a node too slow to extend its leases in time, a hundred
/// transactions one by one would only slow it down further.
async fn run_held_again(
    journeys: &Journeys,
    jobs: Vec<(ClaimedJob, StepJob)>,
) -> Vec<Result<JobOutcome, StoreError>> {
    let claimed: Vec<&ClaimedJob> = jobs.iter().map(|(job, _)| job).collect();
    let held = match journeys.pipeline.store.still_held(&claimed).await {
        // None lost after all (a removal that missed a job for another
        // reason): rather than repeat the batch, each job runs alone.
        Ok(held) if held.len() == jobs.len() => return one_by_one(journeys, &jobs).await,
        Ok(held) => held,
        Err(e) => {
            tracing::info!(error = %e, "could not tell which leases are still held; running the batch's jobs one by one");
            return one_by_one(journeys, &jobs).await;
        }
    };
    tracing::info!(
        lost = jobs.len() - held.len(),
        held = held.len(),
        "a batch of steps lost leases; its held jobs run again together"
    );
    let is_held: Vec<bool> = jobs.iter().map(|(job, _)| held.contains(&job.id)).collect();
    let again: Vec<(ClaimedJob, StepJob)> = jobs
        .into_iter()
        .zip(&is_held)
        .filter_map(|(job, held)| held.then_some(job))
        .collect();
    let mut ran = if again.is_empty() {
        Vec::new()
    } else {
        Box::pin(run_steps(journeys, again)).await
    }
    .into_iter();
    is_held
        .into_iter()
        .map(|held| {
            if held {
                ran.next().unwrap_or_else(|| {
                    Err(StoreError::Invalid("a step batch lost an outcome".into()))
                })
            } else {
                // Left to the worker that holds it now.
                Ok(JobOutcome::Done)
            }
        })
        .collect()
}

/// Each of `jobs` in a transaction of its own.
async fn one_by_one(
    journeys: &Journeys,
    jobs: &[(ClaimedJob, StepJob)],
) -> Vec<Result<JobOutcome, StoreError>> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs.chunks(1) {
        match run_in_one_transaction(journeys, job).await {
            Ok(BatchEnd::Committed(mut ran)) => outcomes.append(&mut ran),
            Ok(BatchEnd::LeaseLost) => outcomes.push(Ok(JobOutcome::Done)),
            Err(e) => outcomes.push(Err(e)),
        }
    }
    outcomes
}

async fn run_in_one_transaction(
    journeys: &Journeys,
    jobs: &[(ClaimedJob, StepJob)],
) -> Result<BatchEnd, StoreError> {
    let needs_routing = jobs
        .iter()
        .any(|(_, step)| matches!(step, StepJob::Route { .. }));
    let active = if needs_routing {
        journeys.active().await?
    } else {
        ActiveJourneys::default()
    };
    let now = journeys.now();
    let store = &journeys.pipeline.store;
    let mut tx = store.write_tx().await?;
    let run_ids: Vec<String> = jobs
        .iter()
        .filter_map(|(_, step)| match step {
            StepJob::Advance { run_id, .. } | StepJob::Timeout { run_id, .. } => {
                Some(run_id.clone())
            }
            StepJob::Route { .. } => None,
        })
        .collect();
    let event_ids: Vec<String> = jobs
        .iter()
        .filter_map(|(_, step)| match step {
            StepJob::Route { event_id } => Some(event_id.clone()),
            _ => None,
        })
        .collect();
    // A batch holds jobs of one kind: steps of runs, or events to route.
    let mut facts = if !run_ids.is_empty() {
        StepFacts::load(journeys, &mut tx, &run_ids, now).await?
    } else {
        StepFacts::load_events(journeys, &mut tx, &event_ids).await?
    };
    let dialect = store.dialect();
    let (outcomes, writes) = if needs_routing {
        route_all(journeys, &mut tx, &mut facts, &active, jobs, now).await?;
        let (started, all) = start_runs_in(&mut tx, dialect, &mut facts.writes).await?;
        if !all && jobs.len() > 1 {
            // Another node started one of the runs a moment ago. Later
            // events of the batch may have routed to the run not started:
            // each event is routed again on its own.
            return Err(StoreError::Conflict(
                "a run the batch started was started by another node".into(),
            ));
        }
        let mut steps =
            first_steps(journeys, &mut tx, &mut facts, started, jobs.len(), now).await?;
        let finished = jobs.iter().map(|(job, _)| job.clone()).collect();
        let outcomes = jobs.iter().map(|_| Ok(JobOutcome::Done)).collect();
        (outcomes, steps.writes.take(finished))
    } else {
        let (outcomes, finished) = advance_all(journeys, &mut tx, &mut facts, jobs, now).await;
        (outcomes, facts.writes.take(finished))
    };
    if !write_step_batch_in(&mut tx, dialect, &writes, now).await? {
        tx.rollback().await?;
        return Ok(BatchEnd::LeaseLost);
    }
    tx.commit().await?;
    // The batch queued further steps and deliveries.
    store.jobs_wake().notify();
    Ok(BatchEnd::Committed(outcomes))
}

/// Steps of runs, their writes held in `facts.writes` and made at the end
/// of the batch, with no savepoint: a step that fails takes back its
/// writes, and its reads changed nothing. Returns the outcomes and the
/// jobs done.
async fn advance_all(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    jobs: &[(ClaimedJob, StepJob)],
    now: i64,
) -> (Vec<Result<JobOutcome, StoreError>>, Vec<ClaimedJob>) {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut finished = Vec::with_capacity(jobs.len());
    for (index, (job, step)) in jobs.iter().enumerate() {
        let (StepJob::Advance { run_id, seq } | StepJob::Timeout { run_id, seq }) = step else {
            continue;
        };
        facts.writes.begin(index);
        let timed_out = matches!(step, StepJob::Timeout { .. });
        let contact = facts.contact_of_run(run_id);
        match advance_in(journeys, tx, facts, run_id, *seq, timed_out, now).await {
            Ok(()) => {
                finished.push(job.clone());
                outcomes.push(Ok(JobOutcome::Done));
            }
            Err(e) => {
                facts.writes.discard();
                if let Some(contact) = contact {
                    facts.forget(&contact);
                }
                outcomes.push(Err(e));
            }
        }
    }
    (outcomes, finished)
}

/// The first steps of the runs routing `started`, in the same
/// transaction: a trigger's message is queued when the event is routed,
/// without a job, claim and commit of its own between. The routing's
/// writes (taken from `routed`) go on in the returned facts, the steps'
/// after them; so do its contacts and events, not read again. A run
/// whose first step fails gets its job as before and is retried with
/// backoff; the routing stands.
async fn first_steps(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    routed: &mut StepFacts,
    started: Vec<Run>,
    routed_jobs: usize,
    now: i64,
) -> Result<StepFacts, StoreError> {
    let run_ids: Vec<String> = started.iter().map(|run| run.id.clone()).collect();
    let mut steps = if started.is_empty() {
        StepFacts::default()
    } else {
        StepFacts::for_started(journeys, tx, started, routed, now).await?
    };
    steps.writes = std::mem::take(&mut routed.writes);
    for (index, run_id) in run_ids.iter().enumerate() {
        // Tagged after the routed jobs: a failing step takes back its own
        // writes only.
        steps.writes.begin(routed_jobs + index);
        let contact = steps.contact_of_run(run_id);
        if let Err(e) = advance_in(journeys, tx, &mut steps, run_id, 0, false, now).await {
            tracing::info!(run = %run_id, error = %e, "a run's first step failed; its job retries it");
            steps.writes.discard();
            if let Some(contact) = contact {
                steps.forget(&contact);
            }
            let first = AdvanceRun {
                run_id: run_id.clone(),
                seq: 0,
            };
            steps.writes.job(&first, now)?;
        }
    }
    Ok(steps)
}

/// Events to route, in order, each seeing the runs as the events before
/// it left them. A job that fails fails the batch, whose jobs then run
/// again one by one (`run_steps`).
async fn route_all(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    active: &ActiveJourneys,
    jobs: &[(ClaimedJob, StepJob)],
    now: i64,
) -> Result<(), StoreError> {
    for (index, (_, step)) in jobs.iter().enumerate() {
        let StepJob::Route { event_id } = step else {
            return Err(StoreError::Invalid(
                "a batch of events to route holds a step of a run".into(),
            ));
        };
        facts.writes.begin(index);
        route_in(journeys, tx, facts, active, event_id, now).await?;
    }
    Ok(())
}
