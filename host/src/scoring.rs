//! Live scoring: every scorer binding sees every new touchpoint; deltas and
//! their reasons go to the score history; thresholds move the stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ingest::Pipeline;
use crate::model::{ActivityCount, Contact, Event, ScoreChange};
use crate::runtime::{Binding, World};
use crate::store::{BindingDef, BindingKind, StoreError};

/// Score thresholds of the lifecycle stages. `customer` is reached by a
/// `purchase`, never by points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageThresholds {
    pub lead: i64,
    pub mql: i64,
    pub sql: i64,
}

impl Default for StageThresholds {
    fn default() -> Self {
        StageThresholds {
            lead: 10,
            mql: 50,
            sql: 100,
        }
    }
}

/// The lifecycle stages, in order.
pub const STAGES: [&str; 5] = ["subscriber", "lead", "mql", "sql", "customer"];

impl StageThresholds {
    /// The stage a score earns. Stages only move forward here: a falling
    /// score does not demote, that is a decision for people.
    pub fn stage_for(&self, current: &str, score: i64, event_kind: &str) -> String {
        let earned = if event_kind == "purchase" {
            "customer"
        } else if score >= self.sql {
            "sql"
        } else if score >= self.mql {
            "mql"
        } else if score >= self.lead {
            "lead"
        } else {
            "subscriber"
        };
        let rank = |s: &str| STAGES.iter().position(|o| *o == s).unwrap_or(0);
        if rank(earned) > rank(current) {
            earned.to_owned()
        } else {
            current.to_owned()
        }
    }
}

pub(crate) fn runtime_binding(def: &BindingDef, world: World) -> Arc<Binding> {
    let mut binding = Binding::new(&def.name, world);
    binding.config = def.config.clone();
    binding.allow_http = def.allow_http.clone();
    Arc::new(binding)
}

pub(crate) async fn score_event(
    pipeline: &Pipeline,
    event: &Event,
    activity: &[ActivityCount],
    now: i64,
) -> Result<(), StoreError> {
    let bindings = pipeline.store.bindings(BindingKind::Scorer).await?;
    // A purchase makes a customer even where nothing scores.
    if bindings.is_empty() && event.kind != "purchase" {
        return Ok(());
    }
    let mut contact = pipeline.store.contact(&event.contact_id).await?;
    contact.segments = pipeline.store.memberships(&contact.id).await?;
    for def in bindings {
        let Some(plugin) = pipeline.registry.live(&def.plugin) else {
            tracing::warn!(binding = %def.name, plugin = %def.plugin, "scorer plugin not installed; skipped");
            continue;
        };
        let binding = runtime_binding(&def, World::Scorer);
        match plugin
            .on_event(&binding, now, &contact, event, activity)
            .await
        {
            Ok(Ok(change)) if change.delta != 0 => {
                contact.score = pipeline
                    .store
                    .apply_score(&contact.id, &def.name, &change, Some(&event.id), now)
                    .await?;
            }
            Ok(Ok(_)) => {}
            // A scorer's failure must not lose the touchpoint: it is logged
            // and counted on the plugin, and the event stays recorded.
            Ok(Err(declined)) => {
                tracing::warn!(binding = %def.name, error = %declined, "scorer declined")
            }
            Err(failed) => tracing::warn!(binding = %def.name, error = %failed, "scorer failed"),
        }
    }
    update_stage(pipeline, &contact, &event.kind, now).await
}

/// Explicit scoring after a profile change: each scorer's `on-profile`
/// answer replaces its previous profile contribution.
pub(crate) async fn score_profile(
    pipeline: &Pipeline,
    contact_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let bindings = pipeline.store.bindings(BindingKind::Scorer).await?;
    if bindings.is_empty() {
        return Ok(());
    }
    let mut contact = pipeline.store.contact(contact_id).await?;
    contact.segments = pipeline.store.memberships(contact_id).await?;
    for def in bindings {
        let Some(plugin) = pipeline.registry.live(&def.plugin) else {
            continue;
        };
        let binding = runtime_binding(&def, World::Scorer);
        let change = match plugin.on_profile(&binding, now, &contact).await {
            Ok(Ok(change)) => change,
            Ok(Err(declined)) => {
                tracing::warn!(binding = %def.name, error = %declined, "scorer declined the profile");
                continue;
            }
            Err(failed) => {
                tracing::warn!(binding = %def.name, error = %failed, "scorer failed on the profile");
                continue;
            }
        };
        let previous = pipeline.store.profile_points(contact_id, &def.name).await?;
        if change.delta != previous {
            let mut reasons = change.reasons.clone();
            if previous != 0 {
                reasons.push(format!("replaces the earlier profile score {previous:+}"));
            }
            let difference = ScoreChange {
                delta: change.delta - previous,
                reasons,
            };
            contact.score = pipeline
                .store
                .apply_score(contact_id, &def.name, &difference, None, now)
                .await?;
            pipeline
                .store
                .set_profile_points(contact_id, &def.name, change.delta)
                .await?;
        }
    }
    update_stage(pipeline, &contact, "profile.changed", now).await
}

async fn update_stage(
    pipeline: &Pipeline,
    contact: &Contact,
    cause: &str,
    now: i64,
) -> Result<(), StoreError> {
    let stage = pipeline
        .stages
        .stage_for(&contact.stage, contact.score, cause);
    if stage != contact.stage {
        pipeline.store.set_stage(&contact.id, &stage, now).await?;
        let score = contact.score.to_string();
        let properties = [
            ("from", contact.stage.as_str()),
            ("to", stage.as_str()),
            ("score", score.as_str()),
        ];
        pipeline
            .record(&contact.id, "stage.changed", &properties, now)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::StageThresholds;

    #[test]
    fn stages_follow_thresholds_forward_only() {
        let t = StageThresholds::default();
        assert_eq!(t.stage_for("subscriber", 12, "email.opened"), "lead");
        assert_eq!(t.stage_for("subscriber", 120, "email.opened"), "sql");
        assert_eq!(t.stage_for("mql", 3, "email.opened"), "mql");
        assert_eq!(t.stage_for("lead", 0, "purchase"), "customer");
        assert_eq!(t.stage_for("customer", 500, "download"), "customer");
    }
}
