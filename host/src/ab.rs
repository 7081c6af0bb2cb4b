//! A/B tests of a send step's variants: the results per variant on the
//! chosen metric, a two-proportion z-test between the leader and the
//! runner-up, and — when the step asks for it — promotion of a significant
//! winner to all new sends, recorded with the figures that justified it.

use serde::Serialize;
use serde_json::json;

use crate::journeys::Journeys;
use crate::journeys::definition::{JourneyDef, Step};
use crate::kpis::{MessageKpis, journey_kpis};
pub use crate::model::journey::{AbMetric, AbTest};
use crate::store::StoreError;

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VariantResult {
    pub variant: String,
    pub trials: i64,
    pub successes: i64,
    pub rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AbResult {
    pub step: String,
    pub metric: AbMetric,
    pub variants: Vec<VariantResult>,
    pub leader: Option<String>,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    /// Both compared variants reached the minimum sample.
    pub enough_data: bool,
    pub significant: bool,
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26, error < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Pooled two-proportion z-test: (z, two-sided p).
pub fn z_test(s1: i64, n1: i64, s2: i64, n2: i64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (p1, p2) = (s1 as f64 / n1 as f64, s2 as f64 / n2 as f64);
    let pooled = (s1 + s2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (p1 - p2) / se;
    Some((z, 2.0 * (1.0 - normal_cdf(z.abs()))))
}

fn successes(kpis: &MessageKpis, metric: AbMetric) -> i64 {
    match metric {
        AbMetric::Opened => kpis.opened_unique,
        AbMetric::Clicked => kpis.clicked_unique,
        AbMetric::Responded => kpis.responded,
        AbMetric::Converted => kpis.converted,
    }
}

pub fn evaluate(step: &str, test: &AbTest, groups: &[MessageKpis]) -> AbResult {
    let mut variants: Vec<VariantResult> = groups
        .iter()
        .filter(|g| g.step.as_deref() == Some(step))
        .filter_map(|g| {
            let trials = g.delivered;
            let wins = successes(g, test.metric);
            Some(VariantResult {
                variant: g.variant.clone()?,
                trials,
                successes: wins,
                rate: (trials > 0).then(|| wins as f64 / trials as f64),
            })
        })
        .collect();
    variants.sort_by(|a, b| b.rate.unwrap_or(0.0).total_cmp(&a.rate.unwrap_or(0.0)));
    let (leader, z, p, enough) = match (variants.first(), variants.get(1)) {
        (Some(a), Some(b)) => {
            let enough = a.trials >= test.min_sample && b.trials >= test.min_sample;
            match z_test(a.successes, a.trials, b.successes, b.trials) {
                Some((z, p)) => (Some(a.variant.clone()), Some(z), Some(p), enough),
                None => (Some(a.variant.clone()), None, None, enough),
            }
        }
        _ => (None, None, None, false),
    };
    let significant = enough && p.is_some_and(|p| p < 1.0 - test.confidence);
    AbResult {
        step: step.to_owned(),
        metric: test.metric,
        variants,
        leader,
        z,
        p_value: p,
        enough_data: enough,
        significant,
    }
}

/// The A/B results of every tested step of a journey's latest version.
pub fn results(def: &JourneyDef, groups: &[MessageKpis]) -> Vec<(AbResult, bool)> {
    def.steps
        .iter()
        .filter_map(|step| match step {
            Step::Send {
                id,
                variants,
                ab_test: Some(test),
                ..
            } if variants.len() > 1 => {
                let live = variants.iter().filter(|v| v.weight > 0).count();
                Some((evaluate(id, test, groups), test.auto_promote && live > 1))
            }
            _ => None,
        })
        .collect()
}

/// Promotes significant winners of auto-promoting steps: a new version in
/// which only the winner keeps its weight. Returns the promoted (step,
/// variant) pairs.
pub async fn promote_winners(
    journeys: &Journeys,
    name: &str,
    actor: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let store = &journeys.pipeline.store;
    let (latest, def) = journeys.latest(name).await?;
    let now = journeys.pipeline.clock.now();
    let kpis = journey_kpis(store, &def, 0, now + 1).await?;
    let mut promoted = Vec::new();
    let mut next = (*def).clone();
    for (result, may_promote) in results(&def, &kpis.by_step) {
        let (true, true, Some(winner)) = (may_promote, result.significant, result.leader.clone())
        else {
            continue;
        };
        for step in &mut next.steps {
            if let Step::Send { id, variants, .. } = step
                && *id == result.step
            {
                for variant in variants.iter_mut() {
                    if variant.name != winner {
                        variant.weight = 0;
                    }
                }
            }
        }
        let detail = json!({ "journey": name, "from_version": latest.version, "result": result });
        store
            .audit(actor, "ab.promoted", None, &detail, now)
            .await?;
        tracing::info!(journey = name, step = %result.step, winner = %winner, p = ?result.p_value, "A/B winner promoted");
        promoted.push((result.step.clone(), winner));
    }
    if !promoted.is_empty() {
        journeys
            .save_def(&next)
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
    }
    Ok(promoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_z_test_matches_textbook_figures() {
        // 200/1000 vs 150/1000: pooled 0.175, z = 0.05 / 0.016993 ≈ 2.942,
        // p ≈ 0.0033.
        let (z, p) = z_test(200, 1000, 150, 1000).unwrap();
        assert!((z - 2.9424).abs() < 0.001, "{z}");
        assert!((p - 0.00326).abs() < 0.0002, "{p}");
        let (_, p) = z_test(52, 500, 48, 500).unwrap();
        assert!(p > 0.6, "{p}");
        assert!(z_test(0, 0, 1, 10).is_none());
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }
}
