//! Routing a new event: stop events suppress and end marketing runs, goals
//! convert runs, waiting runs wake, and triggers enrol. A batch of events
//! reads its contacts' runs once (`StepFacts::load_events`), routes each
//! event in order against the runs as the earlier ones left them, and
//! writes what changed at its end, one statement per table.

use std::collections::HashSet;

use sqlx::AnyConnection;

use super::advance::{finish_run, move_to};
use super::definition::{JourneyDef, ReEntry, Step, Trigger, properties_match};
use super::facts::StepFacts;
use super::writes::StepWrites;
use super::{ActiveJourneys, AdvanceRun, Journeys, props};
use crate::model::{Contact, Event, Value};
use crate::store::jobs::enqueue_in;
use crate::store::runs::{
    Purpose, Run, RunStatus, insert_run_in, insert_runs_in, last_run_in, new_run_id,
};
use crate::store::step_writes::NewEvent;
use crate::store::suppressions::{stop_of, suppress_in};
use crate::store::timeline::record_in;
use crate::store::{Dialect, StoreError};

/// Routes one event of a batch: what it does to runs is held in `facts`
/// (for the events after it) and in `facts.writes` (for the batch's end).
/// A suppression, which stops later sends at once, is written here.
pub(super) async fn route_in(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    active: &ActiveJourneys,
    event_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let Some(event) = facts.event(tx, event_id).await? else {
        return Ok(());
    };
    // The contact may have been deleted since; then there is nothing to do.
    let Some(contact) = facts.contact(tx, &event.contact_id).await? else {
        return Ok(());
    };
    let dialect = journeys.pipeline.store.dialect();
    let stopped = apply_stop(tx, &event, now).await?;
    for mut run in facts.open_runs(tx, dialect, &contact.id).await? {
        let def = journeys
            .definition_in(tx, &run.journey, run.version)
            .await?;
        if stopped
            .as_deref()
            .is_some_and(|scope| scope == "all" || run.purpose == Purpose::Marketing)
        {
            finish_run(
                &mut facts.writes,
                &mut run,
                RunStatus::Exited,
                Some(&event.kind),
                now,
            )?;
        } else if let Some(goal) = def
            .goals
            .iter()
            .find(|g| g.event == event.kind && properties_match(&g.filter, &event.properties))
        {
            finish_run(
                &mut facts.writes,
                &mut run,
                RunStatus::Converted,
                Some(&goal.event),
                now,
            )?;
            let mut properties = props(&[
                ("journey", &run.journey),
                ("run", &run.id),
                ("goal", &goal.event),
            ]);
            if let Some(value) = event.properties.get("value") {
                properties.insert("value".into(), value.clone());
                let amount = match value {
                    Value::Integer(i) => Some(*i as f64),
                    Value::Float(f) => Some(*f),
                    Value::Text(t) => t.parse().ok(),
                    _ => None,
                };
                if let Some(amount) = amount {
                    facts.writes.conversion(&run.id, amount);
                }
            }
            facts
                .writes
                .event(&contact.id, "journey.converted", &properties, now)?;
        } else {
            wake(&mut facts.writes, &def, &mut run, &event, now)?;
        }
        facts.run_routed(run);
    }
    if stopped.is_none() {
        for (version, def) in active.iter() {
            if !triggers(&def.trigger, &event, &contact) {
                continue;
            }
            let last = facts.latest_run(&contact.id, &def.name);
            if let Some(run) = new_run(def, *version, &contact.id, Some(&event.id), last, now) {
                facts.writes.new_run(&run, &entered(&run))?;
                facts.run_routed(run);
            }
        }
    }
    Ok(())
}

/// Starts the runs routing held back in `writes`, in one statement, and
/// adds each started run's `journey.entered` event to `writes`. Returns
/// the runs started, and whether all were: a run is not started when its
/// contact has one of that journey open already (another node enrolled
/// them a moment ago; one run is enough).
pub(super) async fn start_runs_in(
    tx: &mut AnyConnection,
    dialect: Dialect,
    writes: &mut StepWrites,
) -> Result<(Vec<Run>, bool), StoreError> {
    let (runs, events): (Vec<Run>, Vec<NewEvent>) = writes.take_new_runs().into_iter().unzip();
    let inserted: HashSet<String> = insert_runs_in(tx, dialect, &runs).await?;
    let all = inserted.len() == runs.len();
    let mut started = Vec::with_capacity(inserted.len());
    for (run, entered) in runs.into_iter().zip(events) {
        if inserted.contains(&run.id) {
            writes.started(entered);
            started.push(run);
        }
    }
    Ok((started, all))
}

/// A run waiting for this event moves on to its `on_event` step.
fn wake(
    writes: &mut StepWrites,
    def: &JourneyDef,
    run: &mut Run,
    event: &Event,
    now: i64,
) -> Result<(), StoreError> {
    if run.status != RunStatus::Waiting || run.waiting_for.as_deref() != Some(event.kind.as_str()) {
        return Ok(());
    }
    let Some((
        index,
        Step::WaitUntil {
            filter, on_event, ..
        },
    )) = run.step.as_deref().and_then(|s| def.step(s))
    else {
        return Ok(());
    };
    if !properties_match(filter, &event.properties) {
        return Ok(());
    }
    let next = def.resolve(index, on_event.as_deref());
    move_to(writes, run, next, now)?;
    writes.run(run);
    Ok(())
}

/// Events that mean "stop": they suppress the contact and end its
/// marketing runs (a complaint or hard bounce ends every run on that
/// address). Returns the scope of runs to end.
async fn apply_stop(
    tx: &mut AnyConnection,
    event: &Event,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let Some(suppression) = stop_of(&event.kind, &event.properties, now) else {
        return Ok(None);
    };
    suppress_in(tx, &event.contact_id, &suppression).await?;
    Ok(Some(suppression.scope))
}

fn triggers(trigger: &Trigger, event: &Event, contact: &Contact) -> bool {
    let property = |key: &str, wanted: &str| matches!(event.properties.get(key), Some(Value::Text(t)) if t == wanted);
    match trigger {
        Trigger::Event { kind, filter } => {
            event.kind == *kind && properties_match(filter, &event.properties)
        }
        Trigger::SegmentEntered(segment) => {
            event.kind == "segment.entered" && property("segment", segment)
        }
        Trigger::SegmentLeft(segment) => {
            event.kind == "segment.left" && property("segment", segment)
        }
        Trigger::StageChanged(stage) => event.kind == "stage.changed" && property("to", stage),
        Trigger::ScoreAtLeast(points) => contact.score >= *points,
        Trigger::Manual | Trigger::Schedule { .. } => false,
    }
}

/// The run a trigger starts, if the re-entry policy allows one after
/// `last` (the contact's latest run of the journey). `cause` is the event
/// (or sweep) that enrolled the contact; the same cause never enrols twice.
fn new_run(
    def: &JourneyDef,
    version: i64,
    contact_id: &str,
    cause: Option<&str>,
    last: Option<&Run>,
    now: i64,
) -> Option<Run> {
    if let Some(last) = last {
        let allowed = last.ended_at.is_some()
            && cause.is_none_or(|c| last.trigger_event.as_deref() != Some(c))
            && match &def.re_entry {
                ReEntry::Never => false,
                ReEntry::AfterExit => true,
                ReEntry::After(span) => last.started_at + span.millis <= now,
            };
        if !allowed {
            return None;
        }
    }
    let first = def.steps.first()?;
    Some(Run {
        id: new_run_id(),
        journey: def.name.clone(),
        version,
        contact_id: contact_id.to_owned(),
        purpose: def.purpose,
        status: RunStatus::Active,
        step: Some(first.id().to_owned()),
        seq: 0,
        waiting_for: None,
        trigger_event: cause.map(str::to_owned),
        started_at: now,
        ended_at: None,
        exit_reason: None,
    })
}

/// The properties of a run's `journey.entered` event.
fn entered(run: &Run) -> crate::model::Fields {
    let version = run.version.to_string();
    props(&[
        ("journey", &run.journey),
        ("version", &version),
        ("run", &run.id),
    ])
}

/// Starts a run now, in the caller's transaction, if the re-entry policy
/// allows (a sweep, an enrolment by hand). Returns the new run's id.
pub(super) async fn enroll(
    tx: &mut AnyConnection,
    def: &JourneyDef,
    version: i64,
    contact_id: &str,
    cause: Option<&str>,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let last = last_run_in(tx, &def.name, contact_id).await?;
    let Some(run) = new_run(def, version, contact_id, cause, last.as_ref(), now) else {
        return Ok(None);
    };
    // Another worker enrolled the contact a moment ago: one run is enough.
    if !insert_run_in(tx, &run).await? {
        return Ok(None);
    }
    let job = AdvanceRun {
        run_id: run.id.clone(),
        seq: 0,
    };
    enqueue_in(tx, &job, now, now).await?;
    record_in(tx, contact_id, "journey.entered", entered(&run), now).await?;
    Ok(Some(run.id))
}
