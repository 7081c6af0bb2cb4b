//! Route, advance and timeout jobs run many at a time: one transaction for
//! a whole batch, each job inside a savepoint of its own. A commit per job
//! was most of a step's cost (on PostgreSQL a WAL flush each, on SQLite a
//! turn at the one write lock); now a batch of jobs shares one. A job that
//! fails, or whose lease was lost, rolls back to its savepoint and leaves
//! the others' work standing; its outcome goes back to the scheduler as
//! before (retried with backoff, or left to the node that holds it).

use super::advance::advance_in;
use super::facts::StepFacts;
use super::route::route_in;
use super::{ActiveJourneys, Journeys};
use crate::store::StoreError;
use crate::store::jobs::{
    ClaimedJob, JobOutcome, keep_savepoint_in, savepoint_in, undo_savepoint_in,
};

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
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (job, step) in jobs {
        savepoint_in(&mut tx).await?;
        let (ran, contact) = match step {
            StepJob::Route { event_id } => {
                let ran =
                    route_in(journeys, &mut tx, &mut facts, &active, job, event_id, now).await;
                (ran, None)
            }
            StepJob::Advance { run_id, seq } | StepJob::Timeout { run_id, seq } => {
                let timed_out = matches!(step, StepJob::Timeout { .. });
                let contact = facts.contact_of_run(run_id);
                let ran = advance_in(
                    journeys, &mut tx, &mut facts, job, run_id, *seq, timed_out, now,
                )
                .await;
                (ran, contact)
            }
        };
        match ran {
            Ok(true) => {
                keep_savepoint_in(&mut tx).await?;
                outcomes.push(Ok(JobOutcome::Done));
                continue;
            }
            // The lease ran out and another worker has the job: its work
            // here is undone, and the other worker's counts.
            Ok(false) => outcomes.push(Ok(JobOutcome::Done)),
            Err(e) => outcomes.push(Err(e)),
        }
        undo_savepoint_in(&mut tx).await?;
        if let Some(contact) = contact {
            facts.forget(&contact);
        }
    }
    tx.commit().await?;
    // The batch queued further steps and deliveries.
    store.jobs_wake().notify();
    Ok(outcomes)
}
