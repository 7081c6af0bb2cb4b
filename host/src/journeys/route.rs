//! Routing a new event: stop events suppress and end marketing runs, goals
//! convert runs, waiting runs wake, and triggers enrol — all in the one
//! transaction that also removes the route job.

use sqlx::AnyConnection;

use super::advance::{finish_run, move_to};
use super::definition::{JourneyDef, ReEntry, Step, Trigger, properties_match};
use super::facts::StepFacts;
use super::writes::StepWrites;
use super::{ActiveJourneys, AdvanceRun, Journeys, props};
use crate::model::{Contact, Event, Value};
use crate::policy::Suppression;
use crate::store::StoreError;
use crate::store::jobs::{ClaimedJob, enqueue_in, finish_in};
use crate::store::runs::{
    Purpose, Run, RunStatus, insert_run_in, last_run_in, new_run_id, open_runs_in,
    set_conversion_value_in,
};
use crate::store::suppressions::suppress_in;
use crate::store::timeline::record_in;

/// Routes one event in the caller's transaction and removes its job; what
/// it does to runs is held in `facts.writes`, which the caller writes
/// before the job's savepoint is kept. Returns `false` when the job's
/// lease was lost: the caller rolls back.
#[allow(clippy::too_many_arguments)]
pub(super) async fn route_in(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    active: &ActiveJourneys,
    job: &ClaimedJob,
    event_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let found = match facts.event(tx, event_id).await? {
        Some(event) => facts
            .contact(tx, &event.contact_id)
            .await?
            .map(|contact| (event, contact)),
        None => None,
    };
    // The contact may have been deleted since; then there is nothing to do.
    if let Some((event, contact)) = found {
        let stopped = apply_stop(tx, &event, now).await?;
        for mut run in open_runs_in(tx, journeys.pipeline.store.dialect(), &contact.id).await? {
            let def = journeys
                .definition_in(tx, &run.journey, run.version)
                .await?;
            if stopped.is_some_and(|scope| scope == "all" || run.purpose == Purpose::Marketing) {
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
                        set_conversion_value_in(tx, &run.id, amount).await?;
                    }
                }
                record_in(tx, &contact.id, "journey.converted", properties, now).await?;
            } else {
                wake(&mut facts.writes, &def, &mut run, &event, now)?;
            }
        }
        if stopped.is_none() {
            for (version, def) in active.iter() {
                if triggers(&def.trigger, &event, &contact) {
                    enroll(tx, def, *version, &contact.id, Some(&event.id), now).await?;
                }
            }
        }
    }
    finish_in(tx, job).await
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
) -> Result<Option<&'static str>, StoreError> {
    let text = |key: &str| match event.properties.get(key) {
        Some(Value::Text(t)) => Some(t.as_str()),
        _ => None,
    };
    // `email.unsubscribed`, `sms.complained`: the channel, then what happened.
    let (channel, what) = event
        .kind
        .split_once('.')
        .unwrap_or(("*", event.kind.as_str()));
    let (channel, reason, scope) = match what {
        "unsubscribed" => (text("channel").unwrap_or("*"), "unsubscribed", "marketing"),
        "objected" => ("*", "objected", "marketing"),
        "bounced" if text("type") == Some("hard") => (channel, "hard_bounced", "all"),
        "hard_bounced" => (channel, "hard_bounced", "all"),
        "complained" => (channel, "complained", "all"),
        _ => return Ok(None),
    };
    let suppression = Suppression {
        channel: channel.to_owned(),
        reason: reason.to_owned(),
        scope: scope.to_owned(),
        at: now,
    };
    suppress_in(tx, &event.contact_id, &suppression).await?;
    Ok(Some(scope))
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

/// Starts a run if the re-entry policy allows. `cause` is the event (or
/// sweep) that enrolled the contact; the same cause never enrols twice.
pub(super) async fn enroll(
    tx: &mut AnyConnection,
    def: &JourneyDef,
    version: i64,
    contact_id: &str,
    cause: Option<&str>,
    now: i64,
) -> Result<Option<String>, StoreError> {
    if let Some(last) = last_run_in(tx, &def.name, contact_id).await? {
        let allowed = last.ended_at.is_some()
            && cause.is_none_or(|c| last.trigger_event.as_deref() != Some(c))
            && match &def.re_entry {
                ReEntry::Never => false,
                ReEntry::AfterExit => true,
                ReEntry::After(span) => last.started_at + span.millis <= now,
            };
        if !allowed {
            return Ok(None);
        }
    }
    let Some(first) = def.steps.first() else {
        return Ok(None);
    };
    let run = Run {
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
    let version = version.to_string();
    record_in(
        tx,
        contact_id,
        "journey.entered",
        props(&[
            ("journey", &def.name),
            ("version", &version),
            ("run", &run.id),
        ]),
        now,
    )
    .await?;
    Ok(Some(run.id))
}
