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
use super::writes::StepWrites;
use super::{ActiveJourneys, AdvanceRun, Journeys};
use crate::store::StoreError;
use crate::store::jobs::{ClaimedJob, JobOutcome};
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
        Ok(outcomes) => outcomes,
        Err(e) if jobs.len() == 1 => vec![Err(e)],
        // Nothing of the batch committed (a lost connection, a deadlock
        // with another node's batch): each job runs again on its own, so
        // one bad moment does not cost a whole batch its backoff.
        Err(e) => {
            tracing::info!(error = %e, jobs = jobs.len(), "a batch of steps failed; running its jobs one by one");
            let mut outcomes = Vec::with_capacity(jobs.len());
            for job in jobs.chunks(1) {
                let mut ran = match run_in_one_transaction(journeys, job).await {
                    Ok(ran) => ran,
                    Err(e) => vec![Err(e)],
                };
                outcomes.append(&mut ran);
            }
            outcomes
        }
    }
}

async fn run_in_one_transaction(
    journeys: &Journeys,
    jobs: &[(ClaimedJob, StepJob)],
) -> Result<Vec<Result<JobOutcome, StoreError>>, StoreError> {
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
        let writes = std::mem::take(&mut facts.writes);
        let mut steps = first_steps(journeys, &mut tx, writes, &started, jobs.len(), now).await?;
        let finished = jobs.iter().map(|(job, _)| job.clone()).collect();
        let outcomes = jobs.iter().map(|_| Ok(JobOutcome::Done)).collect();
        (outcomes, steps.writes.take(finished))
    } else {
        let (outcomes, finished) = advance_all(journeys, &mut tx, &mut facts, jobs, now).await;
        (outcomes, facts.writes.take(finished))
    };
    if !write_step_batch_in(&mut tx, dialect, &writes, now).await? {
        // Another worker has one of the jobs now (its lease ran out),
        // and its work counts: nothing of this batch is kept.
        tx.rollback().await?;
        if jobs.len() == 1 {
            return Ok(vec![Ok(JobOutcome::Done)]);
        }
        return Err(StoreError::Invalid(
            "a job's lease ran out during its batch".into(),
        ));
    }
    tx.commit().await?;
    // The batch queued further steps and deliveries.
    store.jobs_wake().notify();
    Ok(outcomes)
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
/// without a job, claim and commit of its own between. `writes` (the
/// routing's) go on in the returned facts, the steps' after them. A run
/// whose first step fails gets its job as before and is retried with
/// backoff; the routing stands.
async fn first_steps(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    writes: StepWrites,
    started: &[String],
    routed: usize,
    now: i64,
) -> Result<StepFacts, StoreError> {
    let mut steps = if started.is_empty() {
        StepFacts::default()
    } else {
        StepFacts::load(journeys, tx, started, now).await?
    };
    steps.writes = writes;
    for (index, run_id) in started.iter().enumerate() {
        // Tagged after the routed jobs: a failing step takes back its own
        // writes only.
        steps.writes.begin(routed + index);
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
