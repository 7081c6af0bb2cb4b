//! Scheduled journeys: at each cron time, enrol every contact that matches
//! the trigger's condition ("everyone inactive for 60 days").

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::condition::{self, Facts};
use super::definition::{JourneyDef, Trigger};
use super::route::enroll;
use super::{Journeys, SweepJourney};
use crate::store::StoreError;
use crate::store::jobs::{ClaimedJob, JobOutcome, enqueue_in, finish_in};
use crate::store::timeline::last_event_times_in;

const PAGE: u32 = 500;

/// The first cron time after `now`, in the trigger's time zone.
pub fn next_time(cron: &str, timezone: Option<&str>, now: i64) -> Option<i64> {
    let schedule = cron::Schedule::from_str(cron).ok()?;
    let tz: Tz = timezone
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let after = DateTime::<Utc>::from_timestamp_millis(now)?.with_timezone(&tz);
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

/// Queues the journey's next sweep, if it is a scheduled one.
pub(super) async fn schedule_next(
    journeys: &Journeys,
    name: &str,
    version: i64,
    def: &JourneyDef,
    after: i64,
) -> Result<(), StoreError> {
    let Trigger::Schedule { cron, timezone, .. } = &def.trigger else {
        return Ok(());
    };
    let Some(at) = next_time(cron, timezone.as_deref(), after) else {
        return Ok(());
    };
    let job = SweepJourney {
        journey: name.to_owned(),
        version,
        at,
    };
    let now = journeys.now();
    journeys.pipeline.store.enqueue(&job, at, now).await?;
    Ok(())
}

pub(super) async fn sweep(
    journeys: &Journeys,
    job: &ClaimedJob,
    name: &str,
    version: i64,
    at: i64,
) -> Result<JobOutcome, StoreError> {
    let store = &journeys.pipeline.store;
    let latest = store.journey_versions(name).await?.into_iter().next();
    // A newer version (or a stop) replaced this schedule.
    let current = latest.filter(|l| l.active && l.version == version);
    let next_sweep = match current {
        Some(_) => {
            let def = journeys.definition(name, version).await?;
            enrol_matching(journeys, &def, version, at).await?;
            match &def.trigger {
                Trigger::Schedule { cron, timezone, .. } => {
                    next_time(cron, timezone.as_deref(), at.max(journeys.now()))
                }
                _ => None,
            }
        }
        None => None,
    };
    let now = journeys.now();
    let mut tx = store.write_tx().await?;
    if let Some(next) = next_sweep {
        let job = SweepJourney {
            journey: name.to_owned(),
            version,
            at: next,
        };
        enqueue_in(&mut tx, &job, next, now).await?;
    }
    if finish_in(&mut tx, job).await? {
        tx.commit().await?;
    }
    Ok(JobOutcome::Done)
}

/// Pages through all contacts; each page's enrolments commit together.
/// A sweep that crashed half-way runs again: its cause `sweep:<at>` keeps
/// anyone from entering twice.
async fn enrol_matching(
    journeys: &Journeys,
    def: &JourneyDef,
    version: i64,
    at: i64,
) -> Result<(), StoreError> {
    let Trigger::Schedule {
        condition: wanted, ..
    } = &def.trigger
    else {
        return Ok(());
    };
    let store = &journeys.pipeline.store;
    let cause = format!("sweep:{at}");
    let kinds = wanted
        .as_ref()
        .map(condition::event_kinds)
        .unwrap_or_default();
    let mut after: Option<String> = None;
    loop {
        let page = store.contacts_page(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let now = journeys.now();
        let mut tx = store.write_tx().await?;
        for contact in &page {
            if let Some(wanted) = wanted {
                let last_events = if kinds.is_empty() {
                    BTreeMap::new()
                } else {
                    last_event_times_in(&mut tx, &contact.id, &kinds).await?
                };
                let facts = Facts {
                    contact,
                    last_events: &last_events,
                    now,
                };
                if !condition::holds(wanted, &facts) {
                    continue;
                }
            }
            enroll(&mut tx, def, version, &contact.id, Some(&cause), now).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
