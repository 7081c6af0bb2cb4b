//! Shadow mode: a candidate version of a scorer or segment-rule plugin
//! runs beside a binding's live version on the binding's live calls, with
//! the same inputs and `host.now`. Its answers are recorded beside the
//! live ones and never applied: no score, membership, stage, run or event
//! comes from them, and channel bindings cannot be shadowed at all, so no
//! connector's `deliver` is ever called for a shadow. The report compares
//! the two (agreement, disagreements with samples, latency and
//! instructions of both); promoting makes the candidate live on every node
//! through the ordinary activation.
//!
//! The live path calls [`observe`] once after the live answer is known. It
//! costs one atomic load when nothing is in shadow; with a shadow, one
//! candidate call and a push onto this node's shadow queue, which a
//! background task writes in batches (`store/shadow_queue.rs`): a full
//! queue drops the observation and counts it, the live path never waits.
//! Whatever the candidate does (trap, limit) is recorded and goes no
//! further.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{ActivityCount, Contact, PluginError, ScoreChange};
use crate::pipeline::Pipeline;
use crate::plugins::{Plugins, PluginsError};
use crate::runtime::registry::Pin;
use crate::runtime::{
    Binding, CallResult, Plugin, RuntimeError, ScorerInput, World, take_last_usage,
};
use crate::store::shadows::ShadowTally;
use crate::store::{BindingDef, BindingKind, ShadowResult, ShadowRow, StoreError};

/// Disagreements shown in a report.
const SAMPLES: u32 = 20;
/// Newest calls whose costs the percentiles are taken over.
const USAGE_WINDOW: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plugins(#[from] PluginsError),
}

/// `POST /v1/bindings/{name}/shadow`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// The candidate: an installed version of the binding's plugin.
    pub version: String,
    /// The plugin the version belongs to; default (and the only one
    /// accepted) the binding's own.
    #[serde(default)]
    pub plugin: Option<String>,
}

/// One live call, its inputs and the live answer, as the live path saw it.
pub(crate) enum Call<'a> {
    /// A scorer asked about a round of events at once.
    OnEventBatch {
        items: &'a [ScorerInput<'a>],
        answer: &'a Result<Vec<Result<ScoreChange, PluginError>>, RuntimeError>,
    },
    OnProfile {
        contact: &'a Contact,
        answer: &'a CallResult<ScoreChange>,
    },
    Matches {
        contact: &'a Contact,
        activity: &'a [ActivityCount],
        answer: &'a CallResult<bool>,
    },
    /// A segment rule asked about a batch of contacts at once.
    MatchesBatch {
        items: &'a [(Contact, Vec<ActivityCount>)],
        answer: &'a CallResult<Vec<bool>>,
    },
}

/// Runs the candidate in shadow for the binding (if any) on the live
/// call's inputs and records both answers. Call it right after the live
/// call, before any other `.await`: the live call's cost is read from this
/// thread's last finished call.
///
/// The candidate runs under the limits the live call ran under, so the
/// costs compare like for like and a candidate that needs more than the
/// binding allows shows up here as failures, before it goes live. A batch
/// call's cost is shared evenly among its contacts.
pub(crate) async fn observe(
    pipeline: &Pipeline,
    binding: &Arc<Binding>,
    live: &Plugin,
    now: i64,
    call: Call<'_>,
) {
    let live_usage = take_last_usage().unwrap_or_default();
    let Some(shadow) = pipeline.registry.shadow(&binding.name) else {
        return;
    };
    let candidate = &shadow.plugin;
    // (contact, event, call name, live side, candidate side)
    let mut pairs: Vec<(&str, Option<String>, &str, Side, Side)> = Vec::new();
    let usage = match call {
        Call::OnEventBatch { items, answer } => {
            let theirs = candidate.on_event_batch(binding, now, items).await;
            let usage = take_last_usage().unwrap_or_default();
            for (index, item) in items.iter().enumerate() {
                let nth =
                    |all: &Result<Vec<Result<ScoreChange, PluginError>>, RuntimeError>| match all {
                        Ok(all) => match all.get(index) {
                            Some(Ok(change)) => score(&Ok(Ok(change.clone()))),
                            Some(Err(declined)) => score(&Ok(Err(declined.clone()))),
                            None => Side {
                                outcome: "failed",
                                value: None,
                                detail: Some("no answer for this event".into()),
                            },
                        },
                        Err(failed) => Side {
                            outcome: "failed",
                            value: None,
                            detail: Some(failed.to_string()),
                        },
                    };
                pairs.push((
                    &item.contact.id,
                    Some(item.event.id.clone()),
                    "on-event",
                    nth(answer),
                    nth(&theirs),
                ));
            }
            usage
        }
        Call::OnProfile { contact, answer } => {
            let theirs = candidate.on_profile(binding, now, contact).await;
            let usage = take_last_usage().unwrap_or_default();
            pairs.push((
                &contact.id,
                None,
                "on-profile",
                score(answer),
                score(&theirs),
            ));
            usage
        }
        Call::Matches {
            contact,
            activity,
            answer,
        } => {
            let theirs = candidate.matches(binding, now, contact, activity).await;
            let usage = take_last_usage().unwrap_or_default();
            pairs.push((
                &contact.id,
                None,
                "matches",
                member(answer),
                member(&theirs),
            ));
            usage
        }
        Call::MatchesBatch { items, answer } => {
            let theirs = candidate.matches_batch(binding, now, items).await;
            let usage = take_last_usage().unwrap_or_default();
            for (index, (contact, _)) in items.iter().enumerate() {
                let nth =
                    |all: &Vec<bool>| (i64::from(all.get(index).copied().unwrap_or(false)), None);
                pairs.push((
                    &contact.id,
                    None,
                    "matches",
                    side(answer, nth),
                    side(&theirs, nth),
                ));
            }
            usage
        }
    };
    let calls = u64::try_from(pairs.len().max(1)).unwrap_or(1);
    let share = |n: u64| as_i64(n / calls);
    let results: Vec<ShadowResult> = pairs
        .into_iter()
        .map(
            |(contact_id, event_id, name, live_side, candidate_side)| ShadowResult {
                shadow_id: shadow.id.clone(),
                contact_id: contact_id.to_owned(),
                event_id,
                call: name.to_owned(),
                live_version: live.manifest().version.clone(),
                agree: live_side.outcome == candidate_side.outcome
                    && live_side.value == candidate_side.value,
                live_outcome: live_side.outcome.to_owned(),
                live_value: live_side.value,
                live_micros: share(live_usage.micros),
                live_fuel: share(live_usage.fuel),
                candidate_outcome: candidate_side.outcome.to_owned(),
                candidate_value: candidate_side.value,
                candidate_detail: candidate_side.detail,
                candidate_micros: share(usage.micros),
                candidate_fuel: share(usage.fuel),
                at: now,
            },
        )
        .collect();
    // Queued, not written: the live path never waits on an observation.
    pipeline.store.queue_shadow_results(results);
}

/// One side's answer, reduced to what is compared.
struct Side {
    /// `ok`, `declined` or `failed`.
    outcome: &'static str,
    value: Option<i64>,
    detail: Option<String>,
}

fn side<T>(answer: &CallResult<T>, value: impl FnOnce(&T) -> (i64, Option<String>)) -> Side {
    match answer {
        Ok(Ok(answer)) => {
            let (value, detail) = value(answer);
            Side {
                outcome: "ok",
                value: Some(value),
                detail,
            }
        }
        Ok(Err(declined)) => Side {
            outcome: "declined",
            value: None,
            detail: Some(declined.to_string()),
        },
        Err(failed) => Side {
            outcome: "failed",
            value: None,
            detail: Some(failed.to_string()),
        },
    }
}

fn score(answer: &CallResult<ScoreChange>) -> Side {
    side(answer, |change| {
        (
            change.delta,
            Some(change.reasons.join("; ")).filter(|r| !r.is_empty()),
        )
    })
}

fn member(answer: &CallResult<bool>) -> Side {
    side(answer, |member| (i64::from(*member), None))
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn world_of(kind: BindingKind) -> Option<World> {
    match kind {
        BindingKind::Scorer => Some(World::Scorer),
        BindingKind::Segment => Some(World::SegmentRule),
        BindingKind::Channel => None,
    }
}

fn plugins(pipeline: &Pipeline) -> Plugins {
    Plugins::new(
        pipeline.store.clone(),
        pipeline.registry.clone(),
        pipeline.clock.clone(),
    )
}

async fn binding(pipeline: &Pipeline, name: &str) -> Result<BindingDef, ShadowError> {
    pipeline
        .store
        .all_bindings()
        .await?
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| {
            ShadowError::NotFound(format!(
                "no binding named `{name}` (GET /v1/bindings lists them)"
            ))
        })
}

/// Puts a candidate version in shadow for a binding, on every node.
pub async fn start(
    pipeline: &Pipeline,
    name: &str,
    request: &ShadowRequest,
    actor: &str,
) -> Result<ShadowRow, ShadowError> {
    let def = binding(pipeline, name).await?;
    let Some(world) = world_of(def.kind) else {
        return Err(ShadowError::Invalid(format!(
            "binding `{name}` is a channel: shadow mode runs scorers and segment rules only, since a connector in shadow would have to deliver to find anything out"
        )));
    };
    let plugins = plugins(pipeline);
    let plugin = request.plugin.as_deref().unwrap_or(&def.plugin);
    let installed =
        |registry: &crate::runtime::Registry| registry.version(plugin, &request.version);
    let candidate = match installed(&pipeline.registry) {
        Some(found) => found,
        // Uploaded through another node a moment ago: load it here.
        None => {
            plugins.reconcile().await?;
            installed(&pipeline.registry).ok_or_else(|| {
                let versions = pipeline
                    .registry
                    .list()
                    .into_iter()
                    .find(|p| p.name == plugin)
                    .map(|p| format!("installed: {}", p.versions.join(", ")))
                    .unwrap_or_else(|| format!("no plugin named `{plugin}` is installed"));
                ShadowError::NotFound(format!(
                    "version `{}` of plugin `{plugin}` is not installed ({versions}); upload it first (POST /v1/plugins)",
                    request.version
                ))
            })?
        }
    };
    let candidate_world = candidate.manifest().world;
    if candidate_world != world {
        return Err(ShadowError::Invalid(format!(
            "{} is a {candidate_world} plugin, but binding `{name}` runs a {world}; shadow a version of `{}`",
            candidate.id(),
            def.plugin
        )));
    }
    if plugin != def.plugin {
        return Err(ShadowError::Invalid(format!(
            "binding `{name}` runs plugin `{}`; a shadow compares versions of that plugin, so promoting it is an activation. Bind `{plugin}` separately to compare it",
            def.plugin
        )));
    }
    let serving = pipeline
        .registry
        .resolve(&def.plugin, def.version.as_deref());
    if serving.is_some_and(|p| Arc::ptr_eq(&p, &candidate)) {
        return Err(ShadowError::Invalid(format!(
            "{} serves binding `{name}` already; shadow another version",
            candidate.id()
        )));
    }
    let row = pipeline
        .store
        .create_shadow(
            name,
            def.kind.as_str(),
            plugin,
            &candidate.manifest().version,
            actor,
            pipeline.clock.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(why) => ShadowError::Conflict(why),
            other => other.into(),
        })?;
    plugins.reconcile().await?;
    Ok(row)
}

async fn active(pipeline: &Pipeline, name: &str) -> Result<ShadowRow, ShadowError> {
    pipeline
        .store
        .latest_shadow(name)
        .await?
        .filter(|s| s.status == "active")
        .ok_or_else(|| {
            ShadowError::NotFound(format!(
                "binding `{name}` has no shadow running (POST /v1/bindings/{name}/shadow starts one)"
            ))
        })
}

/// Ends the binding's shadow; its results stay for the report.
pub async fn discard(pipeline: &Pipeline, name: &str) -> Result<ShadowReport, ShadowError> {
    let shadow = active(pipeline, name).await?;
    end(pipeline, &shadow, "discarded").await?;
    report_of(pipeline, name).await
}

/// Makes the candidate live on every node (the ordinary activation: the
/// capability review applies, and the database notice spreads it) and ends
/// the shadow.
pub async fn promote(
    pipeline: &Pipeline,
    name: &str,
    actor: &str,
) -> Result<ShadowReport, ShadowError> {
    let shadow = active(pipeline, name).await?;
    let def = binding(pipeline, name).await?;
    if let Some(pin) = &def.version {
        let fits = semver::Version::parse(&shadow.version)
            .ok()
            .zip(Pin::parse(pin).ok())
            .is_some_and(|(version, pin)| pin.matches(&version));
        if !fits {
            return Err(ShadowError::Conflict(format!(
                "binding `{name}` pins version `{pin}`, which {} does not fit, so making it live would not change the binding; change the pin (PUT /v1/bindings/{name}) or discard the shadow",
                shadow.version
            )));
        }
    }
    plugins(pipeline)
        .activate(&shadow.plugin, &shadow.version, actor)
        .await?;
    end(pipeline, &shadow, "promoted").await?;
    report_of(pipeline, name).await
}

async fn end(pipeline: &Pipeline, shadow: &ShadowRow, status: &str) -> Result<(), ShadowError> {
    let now = pipeline.clock.now();
    if !pipeline.store.end_shadow(&shadow.id, status, now).await? {
        return Err(ShadowError::Conflict(format!(
            "the shadow of `{}` was ended meanwhile",
            shadow.binding
        )));
    }
    plugins(pipeline).reconcile().await?;
    Ok(())
}

/// Median and 99th percentile (nearest rank).
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: i64,
    pub p99: i64,
}

/// One version's side of a report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SideFigures {
    /// Calls that declined or failed.
    pub failed: i64,
    pub latency_micros: Percentiles,
    /// Instructions (wasmtime fuel) per call.
    pub fuel: Percentiles,
}

/// A call on which the versions answered differently.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Disagreement {
    pub contact_id: String,
    /// The contact's profile.
    pub profile: String,
    pub event_id: Option<String>,
    pub call: String,
    pub live_version: String,
    pub live_outcome: String,
    /// Score delta, or 1/0 for a segment rule.
    pub live_value: Option<i64>,
    pub candidate_outcome: String,
    pub candidate_value: Option<i64>,
    pub candidate_detail: Option<String>,
    pub at: i64,
}

/// What a shadow found so far.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShadowReport {
    pub shadow: ShadowRow,
    pub calls: i64,
    pub agreed: i64,
    pub disagreed: i64,
    /// Calls not recorded because a node's shadow queue was full (the
    /// figures above leave them out).
    pub dropped: i64,
    /// `agreed / calls`; null before the first call.
    pub agreement_rate: Option<f64>,
    pub live: SideFigures,
    pub candidate: SideFigures,
    /// The newest disagreements, newest first.
    pub disagreements: Vec<Disagreement>,
}

/// The report of the binding's shadow: the running one, or the last.
pub async fn report_of(pipeline: &Pipeline, name: &str) -> Result<ShadowReport, ShadowError> {
    let shadow = pipeline.store.latest_shadow(name).await?.ok_or_else(|| {
        ShadowError::NotFound(format!(
            "binding `{name}` has had no shadow (POST /v1/bindings/{name}/shadow starts one)"
        ))
    })?;
    // This node's queued results count; other nodes' arrive within their
    // queue's interval.
    pipeline.store.flush_shadow_results().await?;
    let tally = pipeline
        .store
        .shadow_tally(&shadow.id, SAMPLES, USAGE_WINDOW)
        .await?;
    Ok(report(shadow, tally))
}

fn report(shadow: ShadowRow, tally: ShadowTally) -> ShadowReport {
    let column = |pick: fn(&(i64, i64, i64, i64)) -> i64| -> Percentiles {
        let mut values: Vec<i64> = tally.usage.iter().map(pick).collect();
        values.sort_unstable();
        Percentiles {
            p50: percentile(&values, 50),
            p99: percentile(&values, 99),
        }
    };
    ShadowReport {
        calls: tally.calls,
        agreed: tally.agreed,
        disagreed: tally.calls - tally.agreed,
        dropped: tally.dropped,
        agreement_rate: (tally.calls > 0).then(|| tally.agreed as f64 / tally.calls as f64),
        live: SideFigures {
            failed: tally.live_failed,
            latency_micros: column(|u| u.0),
            fuel: column(|u| u.1),
        },
        candidate: SideFigures {
            failed: tally.candidate_failed,
            latency_micros: column(|u| u.2),
            fuel: column(|u| u.3),
        },
        disagreements: tally
            .disagreements
            .into_iter()
            .map(|r| Disagreement {
                profile: format!("/v1/contacts/{}", r.contact_id),
                contact_id: r.contact_id,
                event_id: r.event_id,
                call: r.call,
                live_version: r.live_version,
                live_outcome: r.live_outcome,
                live_value: r.live_value,
                candidate_outcome: r.candidate_outcome,
                candidate_value: r.candidate_value,
                candidate_detail: r.candidate_detail,
                at: r.at,
            })
            .collect(),
        shadow,
    }
}

/// The nearest-rank percentile of sorted values; 0 for none.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), 50);
        assert_eq!(percentile(&values, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        assert_eq!(percentile(&[], 50), 0);
    }
}
