//! Deterministic replay: a scorer binding's version run again over a
//! contact's stored events, in order, with `host.now` set to each event's
//! time and the activity summary rebuilt from the events before it. Plugins
//! are pure functions of those inputs, so replaying the version that scored
//! live reproduces the stored score history; replaying another version
//! shows what it would have done (the backtest runs on this).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::model::{ActivityCount, Contact, Event};
use crate::pipeline::Pipeline;
use crate::runtime::{Binding, Plugin, ScorerSession, World};
use crate::scoring::runtime_binding;
use crate::stages::StageThresholds;
use crate::store::{BindingDef, BindingKind, ScoreEntry, StoreError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Events nachfass writes about a contact itself (`Pipeline::record`): they
/// count in the activity summary, as live, but are never scored.
pub const SYSTEM_KINDS: [&str; 4] = [
    "stage.changed",
    "segment.entered",
    "segment.left",
    "contact.merged",
];

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One scorer binding as a replay runs it: its definition with a chosen
/// version.
#[derive(Clone)]
pub struct Replayed {
    pub name: String,
    pub plugin: Arc<Plugin>,
    pub binding: Arc<Binding>,
}

impl Replayed {
    /// `def` run by `version` of its plugin, or by the version that serves
    /// it live when `version` is `None`. Refuses a version that is not
    /// installed or not a scorer.
    pub fn new(
        pipeline: &Pipeline,
        def: &BindingDef,
        version: Option<&str>,
    ) -> Result<Replayed, ReplayError> {
        Replayed::of_world(pipeline, def, version, World::Scorer)
    }

    /// Like [`Replayed::new`] for a binding of `world` (a segment rule).
    pub fn of_world(
        pipeline: &Pipeline,
        def: &BindingDef,
        version: Option<&str>,
        expected: World,
    ) -> Result<Replayed, ReplayError> {
        let plugin = match version {
            Some(version) => pipeline.registry.version(&def.plugin, version).ok_or_else(|| {
                ReplayError::NotFound(format!(
                    "version {version} of plugin `{}` is not installed; upload it first (POST /v1/plugins)",
                    def.plugin
                ))
            })?,
            None => pipeline
                .registry
                .resolve(&def.plugin, def.version.as_deref())
                .ok_or_else(|| {
                    ReplayError::NotFound(format!(
                        "plugin `{}` of binding `{}` is not installed on this node",
                        def.plugin, def.name
                    ))
                })?,
        };
        let world = plugin.manifest().world;
        if world != expected {
            return Err(ReplayError::Invalid(format!(
                "{} is a {world} plugin, but binding `{}` needs a {expected}",
                plugin.id(),
                def.name
            )));
        }
        Ok(Replayed {
            name: def.name.clone(),
            binding: runtime_binding(def, expected, &plugin),
            plugin,
        })
    }
}

/// The scorer binding named `name`, or a clear error.
pub async fn scorer_binding(pipeline: &Pipeline, name: &str) -> Result<BindingDef, ReplayError> {
    binding_of_kind(pipeline, name, BindingKind::Scorer).await
}

/// The binding of `kind` named `name`, or a clear error.
pub async fn binding_of_kind(
    pipeline: &Pipeline,
    name: &str,
    wanted: BindingKind,
) -> Result<BindingDef, ReplayError> {
    if let Some(def) = pipeline
        .store
        .bindings(wanted)
        .await?
        .into_iter()
        .find(|b| b.name == name)
    {
        return Ok(def);
    }
    let others = [
        BindingKind::Scorer,
        BindingKind::Segment,
        BindingKind::Channel,
    ];
    for kind in others.into_iter().filter(|k| *k != wanted) {
        if pipeline
            .store
            .bindings(kind)
            .await?
            .iter()
            .any(|b| b.name == name)
        {
            return Err(ReplayError::Invalid(format!(
                "binding `{name}` is a {} binding; name a {} binding",
                kind.as_str(),
                wanted.as_str()
            )));
        }
    }
    Err(ReplayError::NotFound(format!(
        "{} binding `{name}` does not exist (GET /v1/bindings lists them)",
        wanted.as_str()
    )))
}

/// What one replayed event did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub event_id: String,
    pub kind: String,
    pub at: i64,
    /// The replayed bindings' change, summed.
    pub delta: i64,
    pub reasons: Vec<String>,
    /// A call that failed or declined: no change, as live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The contact's score and stage after this event: the replayed
    /// change plus what other bindings stored for it.
    pub score: i64,
    pub stage: String,
}

/// A contact's stored history, as a replay reads it.
pub struct History {
    pub contact: Contact,
    /// Oldest first, system events included (they count as activity).
    pub events: Vec<Event>,
    /// Stored score changes of the bindings not replayed (profile ones
    /// too), oldest first: they are applied as they happened.
    pub others: Vec<ScoreEntry>,
}

/// Replays `replayed` over `history`. The contact starts as a subscriber
/// with no score; stages follow `stages` as live scoring does.
pub async fn replay_history(
    stages: &StageThresholds,
    history: &History,
    replayed: &[Replayed],
) -> Vec<Step> {
    let mut sessions = sessions(replayed);
    replay_history_in(stages, history, replayed, &mut sessions).await
}

/// One call session per replayed binding, in order: a replay's calls of a
/// version share an instance (`runtime/plugin/session.rs`).
pub fn sessions(replayed: &[Replayed]) -> Vec<ScorerSession<'_>> {
    replayed
        .iter()
        .map(|r| r.plugin.scorer_session(&r.binding))
        .collect()
}

/// [`replay_history`] through `sessions` (from [`sessions`] of the same
/// `replayed`, new for each contact).
pub async fn replay_history_in(
    stages: &StageThresholds,
    history: &History,
    replayed: &[Replayed],
    sessions: &mut [ScorerSession<'_>],
) -> Vec<Step> {
    let mut by_event: HashMap<&str, i64> = HashMap::new();
    let mut profile: Vec<&ScoreEntry> = Vec::new();
    let ids: HashSet<&str> = history.events.iter().map(|e| e.id.as_str()).collect();
    for entry in &history.others {
        match entry.event_id.as_deref() {
            Some(id) if ids.contains(id) => *by_event.entry(id).or_default() += entry.delta,
            Some(_) => {}
            None => profile.push(entry),
        }
    }
    let mut profile = profile.into_iter().peekable();
    let mut contact = history.contact.clone();
    contact.score = 0;
    contact.stage = crate::stages::STAGES[0].to_owned();
    let mut steps = Vec::new();
    for (index, event) in history.events.iter().enumerate() {
        if SYSTEM_KINDS.contains(&event.kind.as_str()) {
            continue;
        }
        // Profile scores that came before this event, as they happened.
        let mut profile_changed = false;
        while let Some(entry) = profile.next_if(|p| p.at <= event.at) {
            contact.score += entry.delta;
            profile_changed = true;
        }
        if profile_changed {
            contact.stage = stages.stage_for(&contact.stage, contact.score, "profile.changed");
        }
        contact.score += by_event.get(event.id.as_str()).copied().unwrap_or(0);
        let activity = activity_before(&history.events[..=index], event);
        let mut step = Step {
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            at: event.at,
            delta: 0,
            reasons: Vec::new(),
            error: None,
            score: 0,
            stage: String::new(),
        };
        for (replay, session) in replayed.iter().zip(sessions.iter_mut()) {
            let answer = session.on_event(event.at, &contact, event, &activity).await;
            match answer {
                Ok(Ok(change)) => {
                    contact.score += change.delta;
                    step.delta += change.delta;
                    if change.delta != 0 {
                        step.reasons.extend(change.reasons);
                    }
                }
                Ok(Err(declined)) => {
                    step.error = Some(format!("{}: declined: {declined}", replay.name))
                }
                Err(failed) => step.error = Some(format!("{}: failed: {failed}", replay.name)),
            }
        }
        contact.stage = stages.stage_for(&contact.stage, contact.score, &event.kind);
        step.score = contact.score;
        step.stage = contact.stage.clone();
        steps.push(step);
    }
    steps
}

/// The activity summary live scoring gives `event`: every event up to and
/// including it (`seen`), counted at the event's time, then with the event
/// itself taken off its kind's counts.
fn activity_before(seen: &[Event], event: &Event) -> Vec<ActivityCount> {
    let mut kinds = activity_at(seen, event.at);
    if let Some(own) = kinds.iter_mut().find(|a| a.kind == event.kind) {
        own.total = own.total.saturating_sub(1);
        own.last_24_hours = own.last_24_hours.saturating_sub(1);
        own.last_30_days = own.last_30_days.saturating_sub(1);
    }
    kinds
}

/// The activity summary of `seen` at `now`, as the store counts it.
fn activity_at(seen: &[Event], now: i64) -> Vec<ActivityCount> {
    let mut kinds: BTreeMap<&str, ActivityCount> = BTreeMap::new();
    for e in seen.iter().filter(|e| e.at <= now) {
        let a = kinds
            .entry(e.kind.as_str())
            .or_insert_with(|| ActivityCount {
                kind: e.kind.clone(),
                total: 0,
                last_24_hours: 0,
                last_30_days: 0,
                last_at: None,
            });
        a.total += 1;
        if e.at > now - DAY_MS {
            a.last_24_hours += 1;
        }
        if e.at > now - 30 * DAY_MS {
            a.last_30_days += 1;
        }
        a.last_at = Some(a.last_at.map_or(e.at, |t| t.max(e.at)));
    }
    kinds.into_values().collect()
}

/// A segment rule replayed over a contact's events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentReplay {
    /// When the rule first put the contact in the segment.
    pub first_in: Option<i64>,
    /// Whether the contact is a member after the last event.
    pub member: bool,
    /// Calls that failed or declined (the membership stays, as live).
    pub failed: i64,
}

/// Replays segment rule `rule` over `history`: after each event, as live
/// segments do, with the activity including it and the score as stored
/// up to then. The contact starts outside the segment.
pub async fn replay_segment(history: &History, rule: &Replayed) -> SegmentReplay {
    let mut contact = history.contact.clone();
    contact.segments.retain(|s| *s != rule.name);
    let mut result = SegmentReplay::default();
    for (index, event) in history.events.iter().enumerate() {
        if SYSTEM_KINDS.contains(&event.kind.as_str()) {
            continue;
        }
        contact.score = history
            .others
            .iter()
            .filter(|e| e.at <= event.at)
            .map(|e| e.delta)
            .sum();
        let activity = activity_at(&history.events[..=index], event.at);
        match rule
            .plugin
            .matches(&rule.binding, event.at, &contact, &activity)
            .await
        {
            Ok(Ok(member)) => {
                if member && !result.member {
                    result.first_in.get_or_insert(event.at);
                    contact.segments.push(rule.name.clone());
                } else if !member && result.member {
                    contact.segments.retain(|s| *s != rule.name);
                }
                result.member = member;
            }
            _ => result.failed += 1,
        }
    }
    result
}

/// A contact's history between `from` and `to`, with the stored changes of
/// every binding but `replayed` (and every profile score) kept as they are.
pub async fn history(
    pipeline: &Pipeline,
    contact_id: &str,
    replayed: &[&str],
    from: i64,
    to: i64,
) -> Result<History, StoreError> {
    let store = &pipeline.store;
    let mut contact = store.contact(contact_id).await?;
    contact.segments = store.memberships(contact_id).await?;
    let events = store.events_between(contact_id, from, to).await?;
    let entries = store.score_history(contact_id).await?;
    Ok(History::of(contact, events, entries, replayed, from, to))
}

impl History {
    /// `contact` (with its memberships), its `events` between `from` and
    /// `to` in order, and its stored score changes in order, of which
    /// those of the `replayed` bindings' events and those outside the
    /// range are left out.
    pub fn of(
        contact: Contact,
        events: Vec<Event>,
        entries: Vec<ScoreEntry>,
        replayed: &[&str],
        from: i64,
        to: i64,
    ) -> History {
        let others = entries
            .into_iter()
            .filter(|e| {
                // A replay calls `on-event` only: profile scores stay as stored.
                (e.event_id.is_none() || !replayed.contains(&e.binding.as_str()))
                    && e.at >= from
                    && e.at < to
            })
            .collect();
        History {
            contact,
            events,
            others,
        }
    }
}

/// A replay of one contact with the stored history beside it.
#[derive(Clone, Debug, Serialize)]
pub struct ContactReplay {
    pub contact_id: String,
    pub binding: String,
    /// The version replayed (`name@version`).
    pub plugin: String,
    pub steps: Vec<StepWithStored>,
    /// Whether every step's change equals the stored one and the final
    /// score and stage equal the contact's.
    pub matches_stored: bool,
    pub stored_score: i64,
    pub stored_stage: String,
}

/// A replayed step and what live scoring stored for the same event.
#[derive(Clone, Debug, Serialize)]
pub struct StepWithStored {
    #[serde(flatten)]
    pub step: Step,
    pub stored_delta: i64,
    pub stored_reasons: Vec<String>,
    pub matches: bool,
}

/// Replays scorer binding `binding` over every stored event of
/// `contact_id` with `version` (default: the version serving it).
pub async fn replay_contact(
    pipeline: &Pipeline,
    contact_id: &str,
    binding: &str,
    version: Option<&str>,
) -> Result<ContactReplay, ReplayError> {
    let def = scorer_binding(pipeline, binding).await?;
    let replayed = Replayed::new(pipeline, &def, version)?;
    let history = history(pipeline, contact_id, &[binding], i64::MIN, i64::MAX).await?;
    let steps = replay_history(&pipeline.stages, &history, std::slice::from_ref(&replayed)).await;
    let mut stored: HashMap<String, (i64, Vec<String>)> = HashMap::new();
    for entry in pipeline.store.score_history(contact_id).await? {
        if entry.binding != binding {
            continue;
        }
        if let Some(event_id) = entry.event_id {
            let slot = stored.entry(event_id).or_default();
            slot.0 += entry.delta;
            slot.1.extend(entry.reasons);
        }
    }
    let steps: Vec<StepWithStored> = steps
        .into_iter()
        .map(|step| {
            let (stored_delta, stored_reasons) = stored.remove(&step.event_id).unwrap_or_default();
            let matches = stored_delta == step.delta && stored_reasons == step.reasons;
            StepWithStored {
                step,
                stored_delta,
                stored_reasons,
                matches,
            }
        })
        .collect();
    let last = steps.last().map(|s| &s.step);
    // A stored change for an event the replay did not see (a system event
    // scored, an event gone) is a difference too.
    let matches_stored = stored.is_empty()
        && steps.iter().all(|s| s.matches)
        && last
            .is_none_or(|s| s.score == history.contact.score && s.stage == history.contact.stage);
    Ok(ContactReplay {
        contact_id: contact_id.to_owned(),
        binding: binding.to_owned(),
        plugin: replayed.plugin.id().to_owned(),
        steps,
        matches_stored,
        stored_score: history.contact.score,
        stored_stage: history.contact.stage,
    })
}
