//! What the steps of a batch write, held back until the batch ends and
//! then written one statement per table (`store::step_writes`). Each write
//! is tagged with the job that made it: a job that fails takes its writes
//! back without a savepoint, and the others' stand. Later steps of the
//! batch see earlier steps' runs and timeline events through here.

use std::collections::BTreeMap;

use crate::model::{Contact, Fields};
use crate::store::StoreError;
use crate::store::jobs::{ClaimedJob, JobArgs, NewJob};
use crate::store::outbox::OutboxEntry;
use crate::store::runs::Run;
use crate::store::step_writes::{NewEvent, StepBatchWrites};

#[derive(Default)]
pub(super) struct StepWrites {
    /// The job whose writes come next (its index in the batch).
    job: usize,
    outbox: Vec<(usize, OutboxEntry)>,
    jobs: Vec<(usize, NewJob)>,
    events: Vec<(usize, NewEvent)>,
    runs: Vec<(usize, Run)>,
    /// Runs routing started, inserted before the other writes, each with
    /// its `journey.entered` event (its id taken when routing started it,
    /// so the timeline keeps the order of what routing did).
    new_runs: Vec<(usize, Run, NewEvent)>,
    /// `(run id, value)`: what a goal event brought.
    conversions: Vec<(usize, String, f64)>,
    attributes: Vec<(usize, String, String)>,
}

impl StepWrites {
    /// The writes that follow are job `job`'s.
    pub fn begin(&mut self, job: usize) {
        self.job = job;
    }

    /// Takes back every write of the current job.
    pub fn discard(&mut self) {
        let job = self.job;
        self.outbox.retain(|(j, _)| *j != job);
        self.jobs.retain(|(j, _)| *j != job);
        self.events.retain(|(j, _)| *j != job);
        self.runs.retain(|(j, _)| *j != job);
        self.new_runs.retain(|(j, _, _)| *j != job);
        self.conversions.retain(|(j, _, _)| *j != job);
        self.attributes.retain(|(j, _, _)| *j != job);
    }

    /// A timeline event of the contact's.
    pub fn event(
        &mut self,
        contact_id: &str,
        kind: &str,
        properties: &Fields,
        at: i64,
    ) -> Result<(), StoreError> {
        self.event_if_queued(contact_id, kind, properties, at, None)
    }

    /// A timeline event written only if the message `queued` (an outbox
    /// id) is queued by this batch, not already there under its key.
    pub fn event_if_queued(
        &mut self,
        contact_id: &str,
        kind: &str,
        properties: &Fields,
        at: i64,
        queued: Option<&str>,
    ) -> Result<(), StoreError> {
        let event = new_event(contact_id, kind, properties, at, queued)?;
        self.events.push((self.job, event));
        Ok(())
    }

    pub fn job<J: JobArgs>(&mut self, job: &J, due_at: i64) -> Result<(), StoreError> {
        self.jobs.push((self.job, NewJob::of(job, due_at)?));
        Ok(())
    }

    /// The run's state as the batch leaves it (the last one written wins).
    pub fn run(&mut self, run: &Run) {
        self.runs.push((self.job, run.clone()));
    }

    /// A run to start, with the event that says so; both are written
    /// only if the run is started (see `route::start_runs_in`).
    pub fn new_run(&mut self, run: &Run, entered: &Fields) -> Result<(), StoreError> {
        let event = new_event(
            &run.contact_id,
            "journey.entered",
            entered,
            run.started_at,
            None,
        )?;
        self.new_runs.push((self.job, run.clone(), event));
        Ok(())
    }

    /// The runs to start with their events, taken.
    pub fn take_new_runs(&mut self) -> Vec<(Run, NewEvent)> {
        std::mem::take(&mut self.new_runs)
            .into_iter()
            .map(|(_, run, event)| (run, event))
            .collect()
    }

    /// The event of a run that was started.
    pub fn started(&mut self, entered: NewEvent) {
        self.events.push((self.job, entered));
    }

    /// The value a goal event brought to the run it converted.
    pub fn conversion(&mut self, run_id: &str, value: f64) {
        self.conversions.push((self.job, run_id.to_owned(), value));
    }

    /// A message for the outbox, with its delivery job.
    pub fn message(&mut self, entry: OutboxEntry) {
        self.outbox.push((self.job, entry));
    }

    /// The contact's attributes as the batch leaves them.
    pub fn attributes(&mut self, contact: &Contact) -> Result<(), StoreError> {
        let json = serde_json::to_string(&contact.attributes)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.attributes.push((self.job, contact.id.clone(), json));
        Ok(())
    }

    /// The run as an earlier step of the batch left it.
    pub fn latest_run(&self, id: &str) -> Option<Run> {
        self.runs
            .iter()
            .rev()
            .find(|(_, run)| run.id == id)
            .map(|(_, run)| run.clone())
    }

    /// When the batch wrote events of `kinds` for the contact last.
    pub fn last_event_times(&self, contact_id: &str, kinds: &[String]) -> BTreeMap<String, i64> {
        let mut last = BTreeMap::new();
        for (_, event) in &self.events {
            if event.contact_id == contact_id && kinds.contains(&event.kind) {
                let at = last.entry(event.kind.clone()).or_insert(event.at);
                *at = (*at).max(event.at);
            }
        }
        last
    }

    /// Everything held, to write; `finished` are the jobs to remove.
    pub fn take(&mut self, finished: Vec<ClaimedJob>) -> StepBatchWrites {
        let taken = std::mem::take(self);
        StepBatchWrites {
            outbox: taken.outbox.into_iter().map(|(_, e)| e).collect(),
            jobs: taken.jobs.into_iter().map(|(_, j)| j).collect(),
            events: taken.events.into_iter().map(|(_, e)| e).collect(),
            runs: taken.runs.into_iter().map(|(_, r)| r).collect(),
            conversions: taken
                .conversions
                .into_iter()
                .map(|(_, id, value)| (id, value))
                .collect(),
            attributes: taken
                .attributes
                .into_iter()
                .map(|(_, id, json)| (id, json))
                .collect(),
            finished,
        }
    }
}

/// A timeline event to write, with its id taken now.
fn new_event(
    contact_id: &str,
    kind: &str,
    properties: &Fields,
    at: i64,
    queued: Option<&str>,
) -> Result<NewEvent, StoreError> {
    let properties =
        serde_json::to_string(properties).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(NewEvent {
        id: crate::store::new_event_id(),
        contact_id: contact_id.to_owned(),
        kind: kind.to_owned(),
        properties,
        at,
        queued: queued.map(str::to_owned),
    })
}
