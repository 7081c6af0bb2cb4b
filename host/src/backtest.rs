//! Backtests: a candidate version of a scorer or segment-rule plugin
//! replayed over every contact's stored events in a time range, beside the
//! version serving its bindings live, as a durable job. Nothing live is written: the replay
//! keeps scores and stages in memory, and only the backtest's own row
//! (progress, figures, report) changes. The report compares the two:
//! score distribution, changed scores, when contacts reach MQL and SQL (or
//! who would enter and leave a segment), how many of those each version
//! ranks reach a goal event in time, and the journey enrolments and sends
//! each version would set off, through the policy gate
//! (`backtest/consequences.rs`).

mod consequences;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::journeys::Journeys;
use crate::pipeline::Pipeline;
use crate::replay::{self, ReplayError, Replayed, Step};
use crate::runtime::{ScorerSession, World};
use crate::store::{BindingKind, ClaimedJob, StoreError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Contacts per page: their histories are read together, and progress
/// and the figures so far are saved after each.
const PAGE: u32 = 1_000;
/// Samples kept per list in the report.
const SAMPLES: usize = 10;
/// Lower edges of the score histogram's buckets after the first (`< 0`).
const BUCKETS: [i64; 8] = [0, 10, 25, 50, 75, 100, 150, 200];

/// `POST /v1/plugins/{name}/backtests`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// The candidate: an installed version of the plugin.
    pub version: String,
    /// Scorer bindings of the plugin to run the candidate in; default all.
    #[serde(default)]
    pub bindings: Option<Vec<String>>,
    /// Unix epoch milliseconds, inclusive; default 90 days before `to`.
    #[serde(default)]
    pub from: Option<i64>,
    /// Unix epoch milliseconds, exclusive; default now.
    #[serde(default)]
    pub to: Option<i64>,
    /// Event kinds that count as an outcome; default `purchase`,
    /// `demo.booked`.
    #[serde(default)]
    pub goal_events: Option<Vec<String>>,
    /// Days after reaching MQL within which a goal event counts; default 30.
    #[serde(default)]
    pub window_days: Option<u32>,
}

/// What a backtest runs, checked and with the defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub plugin: String,
    /// `scorer` or `segment-rule`.
    #[serde(default = "scorer_world")]
    pub world: String,
    pub version: String,
    pub bindings: Vec<String>,
    pub from: i64,
    pub to: i64,
    pub goal_events: Vec<String>,
    pub window_days: u32,
}

fn scorer_world() -> String {
    World::Scorer.as_str().to_owned()
}

/// The kind of binding a plugin of `world` serves, if backtests replay it.
fn binding_kind(world: World) -> Option<BindingKind> {
    match world {
        World::Scorer => Some(BindingKind::Scorer),
        World::SegmentRule => Some(BindingKind::Segment),
        World::Channel => None,
    }
}

/// Checks a request against what is installed and bound, and queues the
/// backtest. Returns its id.
pub async fn start(
    pipeline: &Pipeline,
    plugin: &str,
    request: BacktestRequest,
) -> Result<String, ReplayError> {
    let live = pipeline.registry.live(plugin).ok_or_else(|| {
        ReplayError::NotFound(format!(
            "plugin `{plugin}` is not installed (GET /v1/plugins lists them)"
        ))
    })?;
    let world = live.manifest().world;
    let Some(kind) = binding_kind(world) else {
        return Err(ReplayError::Invalid(format!(
            "`{plugin}` is a {world} plugin; backtests replay scorers and segment rules"
        )));
    };
    let candidate = pipeline
        .registry
        .version(plugin, &request.version)
        .ok_or_else(|| {
            ReplayError::NotFound(format!(
                "version `{}` of plugin `{plugin}` is not installed; upload it first (POST /v1/plugins)",
                request.version
            ))
        })?;
    let candidate_world = candidate.manifest().world;
    if candidate_world != world {
        return Err(ReplayError::Invalid(format!(
            "{} is a {candidate_world} plugin, but the bindings of `{plugin}` are {world}s",
            candidate.id()
        )));
    }
    let served: Vec<String> = pipeline
        .store
        .bindings(kind)
        .await?
        .into_iter()
        .filter(|b| b.plugin == plugin)
        .map(|b| b.name)
        .collect();
    let bindings = match request.bindings {
        Some(wanted) => {
            for name in &wanted {
                let def = replay::binding_of_kind(pipeline, name, kind).await?;
                if def.plugin != plugin {
                    return Err(ReplayError::Invalid(format!(
                        "binding `{name}` runs plugin `{}`, not `{plugin}`",
                        def.plugin
                    )));
                }
            }
            wanted
        }
        None => served,
    };
    if bindings.is_empty() {
        return Err(ReplayError::Invalid(format!(
            "`{plugin}` serves no {} binding, so there is nothing to compare; bind it first (POST /v1/bindings)",
            kind.as_str()
        )));
    }
    let now = pipeline.clock.now();
    let to = request.to.unwrap_or(now + 1);
    let from = request.from.unwrap_or(to.saturating_sub(90 * DAY_MS));
    if from >= to {
        return Err(ReplayError::Invalid(format!(
            "the range is empty: `from` ({from}) must be before `to` ({to})"
        )));
    }
    if pipeline.store.count_contacts_with_events(from, to).await? == 0 {
        return Err(ReplayError::Invalid(format!(
            "no events between {from} and {to}: choose a range with history"
        )));
    }
    let goal_events = request
        .goal_events
        .unwrap_or_else(|| vec!["purchase".into(), "demo.booked".into()]);
    if goal_events.is_empty() || goal_events.iter().any(|g| g.trim().is_empty()) {
        return Err(ReplayError::Invalid(
            "`goal_events` must name at least one event kind (e.g. \"purchase\")".into(),
        ));
    }
    let window_days = request.window_days.unwrap_or(30);
    if !(1..=365).contains(&window_days) {
        return Err(ReplayError::Invalid(format!(
            "`window_days` must be 1 to 365, not {window_days}"
        )));
    }
    let plan = Plan {
        plugin: plugin.to_owned(),
        world: world.as_str().to_owned(),
        version: candidate.manifest().version.clone(),
        bindings,
        from,
        to,
        goal_events,
        window_days,
    };
    let plan_json = serde_json::to_value(&plan).map_err(|e| ReplayError::Invalid(e.to_string()))?;
    Ok(pipeline
        .store
        .create_backtest(plugin, &plan.version, &plan_json, now)
        .await?)
}

/// Runs a backtest job from its cursor to the end, saving the figures after
/// every page of contacts and keeping the report when done.
pub async fn run(journeys: &Arc<Journeys>, job: &ClaimedJob, id: &str) -> Result<(), StoreError> {
    let pipeline = &journeys.pipeline;
    let store = &pipeline.store;
    let row = store.backtest(id).await?;
    if row.done {
        return store
            .finish_backtest(
                job,
                id,
                row.report.as_ref(),
                row.error.as_deref(),
                pipeline.clock.now(),
            )
            .await
            .map(drop);
    }
    let plan: Plan = serde_json::from_value(row.plan.clone())
        .map_err(|e| StoreError::Invalid(format!("backtest {id} has a bad plan: {e}")))?;
    let world = match plan.world.parse::<World>() {
        Ok(World::SegmentRule) => World::SegmentRule,
        _ => World::Scorer,
    };
    let kind = binding_kind(world).unwrap_or(BindingKind::Scorer);
    let mut live = Vec::new();
    let mut candidate = Vec::new();
    for name in &plan.bindings {
        let prepared = match replay::binding_of_kind(pipeline, name, kind).await {
            Ok(def) => Replayed::of_world(pipeline, &def, None, world).and_then(|l| {
                Ok((
                    l,
                    Replayed::of_world(pipeline, &def, Some(&plan.version), world)?,
                ))
            }),
            Err(e) => Err(e),
        };
        match prepared {
            Ok((l, c)) => {
                live.push(l);
                candidate.push(c);
            }
            // Not loaded on this node yet: retried, by any node.
            Err(ReplayError::NotFound(why)) if why.contains("not installed") => {
                return Err(StoreError::Invalid(why));
            }
            Err(ReplayError::Store(e)) => return Err(e),
            Err(e) => {
                let why = e.to_string();
                let now = pipeline.clock.now();
                store
                    .finish_backtest(job, id, None, Some(&why), now)
                    .await?;
                return Ok(());
            }
        }
    }
    let now = pipeline.clock.now();
    store
        .set_backtest_total(
            id,
            store.count_contacts_with_events(plan.from, plan.to).await?,
            now,
        )
        .await?;
    let mut tally: Tally = match &row.tally {
        Some(saved) => serde_json::from_value(saved.clone())
            .map_err(|e| StoreError::Invalid(format!("backtest {id} has bad figures: {e}")))?,
        None => Tally::default(),
    };
    // A segment backtest replays no scorer: every score counts as stored.
    let names: Vec<String> = match world {
        World::Scorer => plan.bindings.clone(),
        _ => Vec::new(),
    };
    let segments = match world {
        World::SegmentRule => plan.bindings.clone(),
        _ => Vec::new(),
    };
    let watched = consequences::watched(journeys, &segments).await?;
    let side_by_side = Arc::new(SideBySide {
        pipeline: pipeline.clone(),
        journeys: journeys.clone(),
        watched,
        plan: plan.clone(),
        world,
        names,
        live,
        candidate,
    });
    // Each task keeps an instance per version and binding while it replays
    // a contact: at most a quarter of the plugin pool, so live calls keep
    // theirs.
    let kept = 2 * plan.bindings.len().max(1);
    let slots = usize::try_from(pipeline.registry.runtime().pool().instances).unwrap_or(0);
    let tasks = (slots / 4 / kept).clamp(1, AT_ONCE);
    // The next page is read while this one replays.
    let read = |after: Option<String>| {
        let (store, names, plan) = (store.clone(), side_by_side.names.clone(), plan.clone());
        tokio::spawn(async move {
            let page = store.contacts_page(after.as_deref(), PAGE).await?;
            let last = page.last().map(|c| c.id.clone());
            let histories = page_histories(&store, page, &names, &plan).await?;
            Ok::<_, StoreError>((last, histories))
        })
    };
    let mut next = read(row.cursor.clone());
    loop {
        let (last, histories) = next
            .await
            .map_err(|e| StoreError::Invalid(format!("a page read failed: {e}")))??;
        let Some(last) = last else {
            let report = serde_json::to_value(tally.report(&plan))
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            store
                .finish_backtest(job, id, Some(&report), None, pipeline.clock.now())
                .await?;
            return Ok(());
        };
        next = read(Some(last.clone()));
        // Contacts replay in AT_ONCE tasks (each contact is independent),
        // each task one contact after another through its own call
        // sessions; the figures are added in contact order, so samples do
        // not depend on timing.
        let mut shares: Vec<Vec<(usize, replay::History)>> =
            (0..tasks).map(|_| Vec::new()).collect();
        for (index, history) in histories.into_iter().enumerate() {
            shares[index % tasks].push((index, history));
        }
        let mut running = JoinSet::new();
        for share in shares.into_iter().filter(|s| !s.is_empty()) {
            let work = side_by_side.clone();
            running.spawn(async move { work.share(share).await });
        }
        let mut done = Vec::new();
        while let Some(joined) = running.join_next().await {
            done.extend(
                joined.map_err(|e| StoreError::Invalid(format!("a replay task failed: {e}")))?,
            );
        }
        done.sort_by_key(|(index, _, _)| *index);
        let mut evaluated = 0;
        for (_, contact_id, outcome) in done {
            let Some((compared, live_sends, candidate_sends)) = outcome? else {
                continue;
            };
            tally.consequences.add(
                &contact_id,
                &side_by_side.watched,
                &live_sends,
                &candidate_sends,
            );
            match compared {
                Compared::Scores {
                    live,
                    candidate,
                    goals,
                } => tally.add(&contact_id, &live, &candidate, &goals, &plan),
                Compared::Segments {
                    live,
                    candidate,
                    goals,
                } => tally.add_segment(&contact_id, &live, &candidate, &goals, &plan),
            }
            evaluated += 1;
        }
        let figures =
            serde_json::to_value(&tally).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let now = pipeline.clock.now();
        if !store
            .backtest_page_done(job, id, &last, evaluated, &figures, now)
            .await?
        {
            tracing::warn!(backtest = %id, "lease lost; another node continues the backtest");
            next.abort();
            return Ok(());
        }
    }
}

/// Contacts replayed at once, at most.
const AT_ONCE: usize = 4;

/// What a backtest replays each contact with.
struct SideBySide {
    pipeline: Pipeline,
    /// The active journeys and the policy, for the consequences.
    journeys: Arc<Journeys>,
    watched: Vec<consequences::Watched>,
    plan: Plan,
    world: World,
    /// Scorer bindings replayed (their stored changes are left out).
    names: Vec<String>,
    live: Vec<Replayed>,
    candidate: Vec<Replayed>,
}

/// One contact compared, and each version's enrolments, decided.
type ContactOutcome = (
    Compared,
    Vec<consequences::Decided>,
    Vec<consequences::Decided>,
);

/// One contact, live against candidate.
enum Compared {
    Scores {
        live: Vec<Step>,
        candidate: Vec<Step>,
        goals: Vec<i64>,
    },
    Segments {
        live: replay::SegmentReplay,
        candidate: replay::SegmentReplay,
        goals: Vec<i64>,
    },
}

/// The histories of a page of contacts (in the page's order), read in two
/// queries for the page rather than four per contact.
async fn page_histories(
    store: &crate::store::Store,
    page: Vec<crate::model::Contact>,
    replayed: &[String],
    plan: &Plan,
) -> Result<Vec<replay::History>, StoreError> {
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return Ok(Vec::new());
    };
    let mut events: HashMap<String, Vec<crate::model::Event>> = HashMap::new();
    for event in store
        .events_of_page(&first.id, &last.id, plan.from, plan.to)
        .await?
    {
        events
            .entry(event.contact_id.clone())
            .or_default()
            .push(event);
    }
    let mut entries: HashMap<String, Vec<crate::store::ScoreEntry>> = HashMap::new();
    for (contact, entry) in store.score_changes_of_page(&first.id, &last.id).await? {
        entries.entry(contact).or_default().push(entry);
    }
    let replayed: Vec<&str> = replayed.iter().map(String::as_str).collect();
    Ok(page
        .into_iter()
        .map(|contact| {
            let events = events.remove(&contact.id).unwrap_or_default();
            let entries = entries.remove(&contact.id).unwrap_or_default();
            replay::History::of(contact, events, entries, &replayed, plan.from, plan.to)
        })
        .collect())
}

/// A task's contacts, one after another: (index in the page, contact,
/// outcome).
type ShareDone = Vec<(usize, String, Result<Option<ContactOutcome>, StoreError>)>;

impl SideBySide {
    /// Replays a share of a page, contact after contact. A contact's calls
    /// of each version and binding go through one session: one instance
    /// for all its events, none kept from one contact to the next.
    async fn share(&self, share: Vec<(usize, replay::History)>) -> ShareDone {
        let mut done = Vec::with_capacity(share.len());
        for (index, history) in share {
            let mut live = replay::sessions(&self.live);
            let mut candidate = replay::sessions(&self.candidate);
            let id = history.contact.id.clone();
            let outcome = self.contact(history, &mut live, &mut candidate).await;
            done.push((index, id, outcome));
        }
        done
    }

    /// `None`: the contact has no event of its own in the range. With the
    /// comparison, each version's enrolments put through the policy gate.
    async fn contact(
        &self,
        history: replay::History,
        live: &mut [ScorerSession<'_>],
        candidate: &mut [ScorerSession<'_>],
    ) -> Result<Option<ContactOutcome>, StoreError> {
        let plan = &self.plan;
        if !history
            .events
            .iter()
            .any(|e| !replay::SYSTEM_KINDS.contains(&e.kind.as_str()))
        {
            return Ok(None);
        }
        let goals: Vec<i64> = history
            .events
            .iter()
            .filter(|e| plan.goal_events.contains(&e.kind))
            .map(|e| e.at)
            .collect();
        let stages = &self.pipeline.stages;
        let compared = if self.world == World::SegmentRule {
            Compared::Segments {
                live: segment_replay(&history, &self.live).await,
                candidate: segment_replay(&history, &self.candidate).await,
                goals,
            }
        } else {
            Compared::Scores {
                live: replay::replay_history_in(stages, &history, &self.live, live).await,
                candidate: replay::replay_history_in(stages, &history, &self.candidate, candidate)
                    .await,
                goals,
            }
        };
        let enrolled = |live: bool| match &compared {
            Compared::Scores {
                live: l,
                candidate: c,
                ..
            } => consequences::enrolments(&self.watched, Some(if live { l } else { c }), None),
            Compared::Segments {
                live: l,
                candidate: c,
                ..
            } => consequences::enrolments(&self.watched, None, Some(if live { l } else { c })),
        };
        let (live, candidate) = (enrolled(true), enrolled(false));
        let journeys = &self.journeys;
        let contact = &history.contact;
        let live = consequences::decide(journeys, &self.watched, contact, &live).await?;
        let candidate = consequences::decide(journeys, &self.watched, contact, &candidate).await?;
        Ok(Some((compared, live, candidate)))
    }
}

/// The contact's membership under the plan's segments: a member of any,
/// since the first time any took it in.
async fn segment_replay(history: &replay::History, rules: &[Replayed]) -> replay::SegmentReplay {
    let mut all = replay::SegmentReplay::default();
    for rule in rules {
        let one = replay::replay_segment(history, rule).await;
        all.member |= one.member;
        all.failed += one.failed;
        all.first_in = match (all.first_in, one.first_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    all
}

/// Who would be in the segment at the end of the range, candidate against
/// live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentDiff {
    pub live_members: i64,
    pub candidate_members: i64,
    /// Members with the candidate, not live.
    pub entered: i64,
    /// Members live, not with the candidate.
    pub left: i64,
    pub samples: Vec<MemberSample>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberSample {
    pub contact_id: String,
    /// `entered` or `left`.
    pub change: String,
}

/// A contact whose final score differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreSample {
    pub contact_id: String,
    pub live: i64,
    pub candidate: i64,
    pub delta: i64,
}

/// A contact that reaches a stage at another time, or only with one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSample {
    pub contact_id: String,
    /// `earlier`, `later`, `never` (only live reaches it) or `new` (only
    /// the candidate does).
    pub change: String,
    pub live_at: Option<i64>,
    pub candidate_at: Option<i64>,
}

/// When contacts reach one stage, candidate against live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageDiff {
    pub live_reached: i64,
    pub candidate_reached: i64,
    pub same_time: i64,
    pub earlier: i64,
    pub later: i64,
    /// Reached live, never with the candidate.
    pub never: i64,
    /// Reached only with the candidate.
    pub new: i64,
    pub samples: Vec<StageSample>,
}

impl StageDiff {
    fn add(&mut self, contact_id: &str, live: Option<i64>, candidate: Option<i64>) {
        self.live_reached += i64::from(live.is_some());
        self.candidate_reached += i64::from(candidate.is_some());
        let change = match (live, candidate) {
            (Some(l), Some(c)) if c == l => {
                self.same_time += 1;
                return;
            }
            (Some(l), Some(c)) if c < l => {
                self.earlier += 1;
                "earlier"
            }
            (Some(_), Some(_)) => {
                self.later += 1;
                "later"
            }
            (Some(_), None) => {
                self.never += 1;
                "never"
            }
            (None, Some(_)) => {
                self.new += 1;
                "new"
            }
            (None, None) => return,
        };
        if self.samples.len() < SAMPLES {
            self.samples.push(StageSample {
                contact_id: contact_id.to_owned(),
                change: change.to_owned(),
                live_at: live,
                candidate_at: candidate,
            });
        }
    }
}

/// Contacts a version ranks MQL (a scorer) or puts in the segment (a
/// rule), and how many of them reached a goal event within the window
/// after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub ranked: i64,
    pub converted: i64,
}

/// The figures so far, saved with the cursor. Missing fields read as zero,
/// so figures saved by an older node still resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    pub contacts: i64,
    pub events: i64,
    /// Plugin calls that failed or declined (no change, as live).
    pub failed_calls: i64,
    pub live_scores: Vec<i64>,
    pub candidate_scores: Vec<i64>,
    pub changed: i64,
    pub changed_samples: Vec<ScoreSample>,
    pub mql: StageDiff,
    pub sql: StageDiff,
    /// Contacts with a goal event in the range.
    pub goal_contacts: i64,
    pub live: Ranked,
    pub candidate: Ranked,
    pub segment: SegmentDiff,
    /// Journey enrolments and sends each version causes, through the
    /// policy gate.
    pub consequences: consequences::Consequences,
}

fn bucket(score: i64) -> usize {
    BUCKETS.iter().filter(|edge| score >= **edge).count()
}

fn first_at(steps: &[Step], stages: &[&str]) -> Option<i64> {
    steps
        .iter()
        .find(|s| stages.contains(&s.stage.as_str()))
        .map(|s| s.at)
}

impl Tally {
    fn add(
        &mut self,
        contact_id: &str,
        live: &[Step],
        candidate: &[Step],
        goals: &[i64],
        plan: &Plan,
    ) {
        if self.live_scores.is_empty() {
            self.live_scores = vec![0; BUCKETS.len() + 1];
            self.candidate_scores = vec![0; BUCKETS.len() + 1];
        }
        self.contacts += 1;
        self.events += i64::try_from(live.len()).unwrap_or(i64::MAX);
        self.failed_calls += i64::try_from(
            live.iter()
                .chain(candidate)
                .filter(|s| s.error.is_some())
                .count(),
        )
        .unwrap_or(i64::MAX);
        let live_score = live.last().map_or(0, |s| s.score);
        let candidate_score = candidate.last().map_or(0, |s| s.score);
        self.live_scores[bucket(live_score)] += 1;
        self.candidate_scores[bucket(candidate_score)] += 1;
        if live_score != candidate_score {
            self.changed += 1;
            if self.changed_samples.len() < SAMPLES {
                self.changed_samples.push(ScoreSample {
                    contact_id: contact_id.to_owned(),
                    live: live_score,
                    candidate: candidate_score,
                    delta: candidate_score - live_score,
                });
            }
        }
        let live_mql = first_at(live, &["mql", "sql"]);
        let candidate_mql = first_at(candidate, &["mql", "sql"]);
        self.mql.add(contact_id, live_mql, candidate_mql);
        self.sql.add(
            contact_id,
            first_at(live, &["sql"]),
            first_at(candidate, &["sql"]),
        );
        self.outcome(live_mql, candidate_mql, goals, plan);
    }

    fn add_segment(
        &mut self,
        contact_id: &str,
        live: &replay::SegmentReplay,
        candidate: &replay::SegmentReplay,
        goals: &[i64],
        plan: &Plan,
    ) {
        self.contacts += 1;
        self.failed_calls += live.failed + candidate.failed;
        let diff = &mut self.segment;
        diff.live_members += i64::from(live.member);
        diff.candidate_members += i64::from(candidate.member);
        let change = match (live.member, candidate.member) {
            (false, true) => Some("entered"),
            (true, false) => Some("left"),
            _ => None,
        };
        if let Some(change) = change {
            if change == "entered" {
                diff.entered += 1;
            } else {
                diff.left += 1;
            }
            if diff.samples.len() < SAMPLES {
                diff.samples.push(MemberSample {
                    contact_id: contact_id.to_owned(),
                    change: change.to_owned(),
                });
            }
        }
        self.outcome(live.first_in, candidate.first_in, goals, plan);
    }

    /// Counts the contacts each version ranks (from `live` / `candidate`
    /// on) and those of them that reached a goal within the window.
    fn outcome(&mut self, live: Option<i64>, candidate: Option<i64>, goals: &[i64], plan: &Plan) {
        let window = i64::from(plan.window_days) * DAY_MS;
        let converted = |from: Option<i64>| {
            from.is_some_and(|t| goals.iter().any(|g| *g >= t && *g <= t + window))
        };
        self.goal_contacts += i64::from(!goals.is_empty());
        for (ranked, from) in [(&mut self.live, live), (&mut self.candidate, candidate)] {
            ranked.ranked += i64::from(from.is_some());
            ranked.converted += i64::from(converted(from));
        }
    }

    fn report(&self, plan: &Plan) -> Report {
        let label = |i: usize| match i {
            0 => format!("<{}", BUCKETS[0]),
            i if i == BUCKETS.len() => format!(">={}", BUCKETS[i - 1]),
            i => format!("{}-{}", BUCKETS[i - 1], BUCKETS[i] - 1),
        };
        let count = |v: &Vec<i64>, i: usize| v.get(i).copied().unwrap_or(0);
        let buckets = (0..=BUCKETS.len())
            .map(|i| Bucket {
                label: label(i),
                live: count(&self.live_scores, i),
                candidate: count(&self.candidate_scores, i),
            })
            .collect();
        let figures = |r: &Ranked| OutcomeFigures {
            ranked: r.ranked,
            converted: r.converted,
            precision: ratio(r.converted, r.ranked),
            recall: ratio(r.converted, self.goal_contacts),
        };
        let live = figures(&self.live);
        let candidate = figures(&self.candidate);
        let lift = match (candidate.precision, live.precision) {
            (Some(c), Some(l)) if l > 0.0 => Some(c / l),
            _ => None,
        };
        Report {
            plan: plan.clone(),
            contacts: self.contacts,
            events: self.events,
            failed_calls: self.failed_calls,
            scores: ScoreReport {
                buckets,
                changed: self.changed,
                samples: self.changed_samples.clone(),
            },
            mql: self.mql.clone(),
            sql: self.sql.clone(),
            segment: (plan.world == World::SegmentRule.as_str()).then(|| self.segment.clone()),
            consequences: self.consequences.clone(),
            outcomes: Outcomes {
                goal_events: plan.goal_events.clone(),
                window_days: plan.window_days,
                goal_contacts: self.goal_contacts,
                live,
                candidate,
                lift,
            },
        }
    }
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    // Counts stay far below 2^53, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The finished backtest's report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub plan: Plan,
    /// Contacts with events in the range, and their events replayed.
    pub contacts: i64,
    pub events: i64,
    pub failed_calls: i64,
    pub scores: ScoreReport,
    pub mql: StageDiff,
    pub sql: StageDiff,
    /// For a segment rule: who would enter and leave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentDiff>,
    pub outcomes: Outcomes,
    /// The journey enrolments and first sends each version would have
    /// caused, through the policy gate; nothing was enrolled or sent.
    pub consequences: consequences::Consequences,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreReport {
    /// Final scores at the end of the range, live and candidate.
    pub buckets: Vec<Bucket>,
    pub changed: i64,
    pub samples: Vec<ScoreSample>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub label: String,
    pub live: i64,
    pub candidate: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcomes {
    pub goal_events: Vec<String>,
    pub window_days: u32,
    pub goal_contacts: i64,
    pub live: OutcomeFigures,
    pub candidate: OutcomeFigures,
    /// Candidate precision over live precision.
    pub lift: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutcomeFigures {
    /// Contacts ranked MQL (a scorer) or put in the segment (a rule).
    pub ranked: i64,
    /// Of those, reached a goal event within the window after.
    pub converted: i64,
    /// `converted / ranked`.
    pub precision: Option<f64>,
    /// `converted / goal_contacts`.
    pub recall: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_edges_at_the_stage_thresholds() {
        assert_eq!(bucket(-3), 0);
        assert_eq!(bucket(0), 1);
        assert_eq!(bucket(9), 1);
        assert_eq!(bucket(10), 2);
        assert_eq!(bucket(50), 4);
        assert_eq!(bucket(100), 6);
        assert_eq!(bucket(1000), 8);
    }

    #[test]
    fn stage_diff_sorts_earlier_later_never_new() {
        let mut diff = StageDiff::default();
        diff.add("a", Some(5), Some(3));
        diff.add("b", Some(5), Some(7));
        diff.add("c", Some(5), None);
        diff.add("d", None, Some(1));
        diff.add("e", Some(2), Some(2));
        diff.add("f", None, None);
        assert_eq!(
            (
                diff.earlier,
                diff.later,
                diff.never,
                diff.new,
                diff.same_time
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!((diff.live_reached, diff.candidate_reached), (4, 4));
        assert_eq!(diff.samples.len(), 4);
    }
}
