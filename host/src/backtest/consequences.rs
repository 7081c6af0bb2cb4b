//! What a backtest's changed scores and memberships would have set off:
//! the journey enrolments they trigger (a stage reached, a score passed, a
//! segment entered) and each enrolment's first send, put through the
//! policy gate (suppression, consent, frequency cap, send window) at the
//! time it would have gone out. Only reads: nothing is enrolled, queued,
//! rendered or delivered.
//!
//! Simplifications, said in the report's README entry: a journey enrols a
//! contact once per replay (its first trigger); the first send is found by
//! following `send`, `wait` and `set_attribute` steps from the start (a
//! journey that waits for an event or branches first counts as "no send
//! known"); consent and suppressions are the contact's as stored now, and
//! suppressions count from their time.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::journeys::definition::{Purpose, Step, Trigger};
use crate::journeys::{JourneyDef, Journeys};
use crate::policy::{self, Decision, SendFacts};
use crate::replay::{SegmentReplay, Step as Replayed};
use crate::store::StoreError;
use crate::store::consents::consent_in;
use crate::store::outbox::marketing_sends_since_in;
use crate::store::suppressions::suppressions_in;

/// Samples kept in the report.
const SAMPLES: usize = 10;

/// An active journey whose trigger scores or memberships can fire.
pub(super) struct Watched {
    def: Arc<JourneyDef>,
    trigger: Watch,
    /// The first send: its channel binding and how long after enrolment.
    first_send: Option<(String, i64, Option<crate::model::journey::SendWindow>)>,
}

enum Watch {
    Stage(String),
    ScoreAtLeast(i64),
    /// One of the backtested segments.
    SegmentEntered,
}

/// The active journeys a backtest of `segments` (for a rule) or of scores
/// can set off.
pub(super) async fn watched(
    journeys: &Journeys,
    segments: &[String],
) -> Result<Vec<Watched>, StoreError> {
    let mut watched = Vec::new();
    for (_, def) in journeys.active().await?.iter() {
        let trigger = match &def.trigger {
            Trigger::StageChanged(stage) => Watch::Stage(stage.clone()),
            Trigger::ScoreAtLeast(points) => Watch::ScoreAtLeast(*points),
            Trigger::SegmentEntered(segment) if segments.contains(segment) => Watch::SegmentEntered,
            _ => continue,
        };
        watched.push(Watched {
            first_send: first_send(def),
            def: def.clone(),
            trigger,
        });
    }
    Ok(watched)
}

/// The first send step reached without waiting for an event or a branch.
fn first_send(
    def: &JourneyDef,
) -> Option<(String, i64, Option<crate::model::journey::SendWindow>)> {
    let mut after = 0;
    let mut index = 0;
    // A journey's steps may loop; a walk longer than its steps is one.
    for _ in 0..def.steps.len() {
        let step = def.steps.get(index)?;
        let next = match step {
            Step::Send {
                binding,
                send_window,
                ..
            } => return Some((binding.clone(), after, send_window.clone())),
            Step::Wait { duration, next, .. } => {
                after += duration.millis;
                next.as_deref()
            }
            Step::SetAttribute { next, .. } => next.as_deref(),
            _ => return None,
        };
        index = match next {
            Some(id) => def.step(id)?.0,
            None => index + 1,
        };
    }
    None
}

/// When each watched journey would enrol the contact, by one version's
/// replay (`None`: never).
pub(super) fn enrolments(
    watched: &[Watched],
    steps: Option<&[Replayed]>,
    segment: Option<&SegmentReplay>,
) -> Vec<Option<i64>> {
    watched
        .iter()
        .map(|w| match (&w.trigger, steps, segment) {
            (Watch::Stage(stage), Some(steps), _) => {
                let mut before = None::<&str>;
                steps.iter().find_map(|s| {
                    let reached = s.stage == *stage && before != Some(stage.as_str());
                    before = Some(s.stage.as_str());
                    reached.then_some(s.at)
                })
            }
            (Watch::ScoreAtLeast(points), Some(steps), _) => {
                steps.iter().find(|s| s.score >= *points).map(|s| s.at)
            }
            (Watch::SegmentEntered, _, Some(segment)) => segment.first_in,
            _ => None,
        })
        .collect()
}

/// One version's enrolments and what the gate says about their first send.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Sends {
    pub enrolments: i64,
    /// The gate lets the first send out when it is due.
    pub sent: i64,
    pub deferred: i64,
    pub skipped: i64,
    /// The journey waits for an event or branches before its first send.
    pub no_send_known: i64,
}

/// An enrolment only one version causes, with the gate's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsequenceSample {
    pub contact_id: String,
    pub journey: String,
    /// `new` (only the candidate enrols) or `dropped` (only live does).
    pub change: String,
    pub enrolled_at: i64,
    /// When the first send would be due.
    pub send_at: Option<i64>,
    /// `send`, `defer`, `skip` or `none`.
    pub decision: String,
    pub reason: Option<String>,
}

/// Enrolments and sends, candidate against live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Consequences {
    pub live: Sends,
    pub candidate: Sends,
    /// Enrolments only the candidate causes.
    pub new: i64,
    /// Enrolments only live causes.
    pub dropped: i64,
    pub samples: Vec<ConsequenceSample>,
}

/// One enrolment's first send, decided.
pub(super) struct Decided {
    pub journey: usize,
    pub enrolled_at: i64,
    pub send_at: Option<i64>,
    pub decision: Option<Decision>,
}

/// Puts each enrolment's first send through the policy gate at the time
/// it would be due. `earlier` sends of the same replay count towards the
/// frequency cap, beside the contact's stored ones.
pub(super) async fn decide(
    journeys: &Journeys,
    watched: &[Watched],
    contact: &crate::model::Contact,
    enrolled: &[Option<i64>],
) -> Result<Vec<Decided>, StoreError> {
    let mut order: Vec<(usize, i64)> = enrolled
        .iter()
        .enumerate()
        .filter_map(|(i, at)| at.map(|at| (i, at)))
        .collect();
    order.sort_by_key(|(i, at)| (*at, *i));
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = journeys.pipeline.store.pool().acquire().await?;
    let suppressions = suppressions_in(&mut conn, &contact.id).await?;
    let cap = &journeys.policy.cap;
    let mut simulated: Vec<i64> = Vec::new();
    let mut decided = Vec::new();
    for (journey, enrolled_at) in order {
        let watch = &watched[journey];
        let Some((binding, after, step_window)) = &watch.first_send else {
            decided.push(Decided {
                journey,
                enrolled_at,
                send_at: None,
                decision: None,
            });
            continue;
        };
        let due = enrolled_at.saturating_add(*after);
        let channel = journeys
            .channel_kind_in(&mut conn, binding)
            .await?
            .unwrap_or_else(|| binding.clone());
        let consent = consent_in(&mut conn, &contact.id, &channel, Purpose::Marketing).await?;
        let mut recent = marketing_sends_since_in(&mut conn, &contact.id, due - cap.per.millis)
            .await?
            .into_iter()
            .filter(|t| *t <= due)
            .collect::<Vec<_>>();
        recent.extend(simulated.iter().filter(|t| **t <= due));
        let in_force: Vec<_> = suppressions
            .iter()
            .filter(|s| s.at <= due)
            .cloned()
            .collect();
        let def = &watch.def;
        let facts = SendFacts {
            purpose: def.purpose,
            channel: &channel,
            consent: consent.as_ref().map(|(status, _)| *status),
            consent_at: consent.as_ref().map(|(_, at)| *at),
            erased_at: None,
            suppressions: &in_force,
            window: step_window.as_ref().or(def.send_window.as_ref()),
            contact_timezone: contact.timezone.as_deref(),
            recent_sends: &recent,
            now: due,
        };
        let decision = policy::decide(&journeys.policy, &facts);
        if decision == Decision::Send && def.purpose == Purpose::Marketing {
            simulated.push(due);
        }
        decided.push(Decided {
            journey,
            enrolled_at,
            send_at: Some(due),
            decision: Some(decision),
        });
    }
    Ok(decided)
}

impl Sends {
    fn add(&mut self, decided: &Decided) {
        self.enrolments += 1;
        match &decided.decision {
            None => self.no_send_known += 1,
            Some(Decision::Send) => self.sent += 1,
            Some(Decision::Defer { .. }) => self.deferred += 1,
            Some(Decision::Skip { .. }) => self.skipped += 1,
        }
    }
}

impl Consequences {
    /// Adds one contact's enrolments by both versions.
    pub(super) fn add(
        &mut self,
        contact_id: &str,
        watched: &[Watched],
        live: &[Decided],
        candidate: &[Decided],
    ) {
        for d in live {
            self.live.add(d);
        }
        for d in candidate {
            self.candidate.add(d);
        }
        let only =
            |these: &[Decided], others: &[Decided], change: &str| -> Vec<ConsequenceSample> {
                these
                    .iter()
                    .filter(|d| !others.iter().any(|o| o.journey == d.journey))
                    .map(|d| {
                        let (decision, reason) = match &d.decision {
                            None => ("none", None),
                            Some(Decision::Send) => ("send", None),
                            Some(Decision::Defer { reason, .. }) => ("defer", Some(reason.clone())),
                            Some(Decision::Skip { reason }) => ("skip", Some(reason.clone())),
                        };
                        ConsequenceSample {
                            contact_id: contact_id.to_owned(),
                            journey: watched[d.journey].def.name.clone(),
                            change: change.to_owned(),
                            enrolled_at: d.enrolled_at,
                            send_at: d.send_at,
                            decision: decision.to_owned(),
                            reason,
                        }
                    })
                    .collect()
            };
        let new = only(candidate, live, "new");
        let dropped = only(live, candidate, "dropped");
        self.new += i64::try_from(new.len()).unwrap_or(i64::MAX);
        self.dropped += i64::try_from(dropped.len()).unwrap_or(i64::MAX);
        for sample in new.into_iter().chain(dropped) {
            if self.samples.len() < SAMPLES {
                self.samples.push(sample);
            }
        }
    }
}
