//! Profile scoring: a scorer's `on-profile` answer after a profile change,
//! and re-score tasks over every contact. (Event scoring runs in batches in
//! `ingest/batch.rs`.) Thresholds move the stage.

use std::sync::Arc;

use crate::model::{Contact, ScoreChange};
use crate::pipeline::Pipeline;
use crate::runtime::{Binding, Plugin, World};
use crate::store::{BindingDef, BindingKind, ClaimedJob, StoreError};

pub use crate::stages::{STAGES, StageThresholds};

/// The sandbox's view of a binding of `plugin`: limits are the world's
/// defaults, then what the plugin's manifest asks for (approved when that
/// version went live), then the binding's own.
pub(crate) fn runtime_binding(def: &BindingDef, world: World, plugin: &Plugin) -> Arc<Binding> {
    let mut binding = Binding::new(&def.name, world);
    binding.config = def.config.clone();
    binding.allow_http = def.allow_http.clone();
    binding.limits = binding
        .limits
        .with_overrides(&plugin.manifest().limits)
        .with_overrides(&def.limits);
    Arc::new(binding)
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
        let Some(plugin) = pipeline
            .registry
            .resolve(&def.plugin, def.version.as_deref())
        else {
            continue;
        };
        if def.paused.is_some() {
            continue;
        }
        let binding = runtime_binding(&def, World::Scorer, &plugin);
        profile_score(pipeline, &plugin, &binding, &mut contact, now).await?;
    }
    update_stage(pipeline, &contact, "profile.changed", now).await
}

/// Asks one scorer binding about a profile and replaces its earlier profile
/// contribution with the answer. Returns whether the score changed.
async fn profile_score(
    pipeline: &Pipeline,
    plugin: &Plugin,
    binding: &Arc<Binding>,
    contact: &mut Contact,
    now: i64,
) -> Result<bool, StoreError> {
    let name = binding.name.as_str();
    let answer = plugin.on_profile(binding, now, contact).await;
    crate::breaker::observe(pipeline, name, plugin, !matches!(answer, Ok(Ok(_)))).await;
    let change = match answer {
        Ok(Ok(change)) => change,
        Ok(Err(declined)) => {
            tracing::warn!(binding = %name, error = %declined, "scorer declined the profile");
            return Ok(false);
        }
        Err(failed) => {
            tracing::warn!(binding = %name, error = %failed, "scorer failed on the profile");
            return Ok(false);
        }
    };
    let previous = pipeline.store.profile_points(&contact.id, name).await?;
    if change.delta == previous {
        return Ok(false);
    }
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
        .apply_score(&contact.id, name, &difference, None, now)
        .await?;
    pipeline
        .store
        .set_profile_points(&contact.id, name, change.delta)
        .await?;
    Ok(true)
}

/// Contacts per page of a re-score.
const RESCORE_BATCH: u32 = 200;

/// Runs a re-score task: one scorer binding's `on-profile` for every
/// contact, from the task's cursor, recording progress and extending the
/// job's lease after every page. Re-scoring a contact twice (after a crash)
/// changes nothing the second time: the answer replaces the binding's
/// earlier profile contribution.
pub async fn run_rescore_task(
    pipeline: &Pipeline,
    job: &ClaimedJob,
    task_id: &str,
) -> Result<(), StoreError> {
    let store = &pipeline.store;
    let task = store.task(task_id).await?;
    let now = pipeline.clock.now();
    let Some(def) = store
        .bindings(BindingKind::Scorer)
        .await?
        .into_iter()
        .find(|b| b.name == task.target)
    else {
        let why = format!("scorer binding {} does not exist any more", task.target);
        store.finish_task(job, task_id, Some(&why), now).await?;
        return Ok(());
    };
    if let Some(paused) = &def.paused {
        let why = format!("binding {} is paused: {paused}", def.name);
        store.finish_task(job, task_id, Some(&why), now).await?;
        return Ok(());
    }
    // Not loaded on this node yet: the job is retried, by any node.
    let plugin = pipeline
        .registry
        .resolve(&def.plugin, def.version.as_deref())
        .ok_or_else(|| StoreError::Invalid(format!("plugin `{}` is not installed", def.plugin)))?;
    let binding = runtime_binding(&def, World::Scorer, &plugin);
    store
        .set_task_total(task_id, store.count_contacts().await?, now)
        .await?;
    let mut after = task.cursor;
    loop {
        let now = pipeline.clock.now();
        let page = store.contacts_page(after.as_deref(), RESCORE_BATCH).await?;
        let Some(last) = page.last().map(|c| c.id.clone()) else {
            store.finish_task(job, task_id, None, now).await?;
            return Ok(());
        };
        let page_len = i64::try_from(page.len()).unwrap_or(i64::MAX);
        let mut changed = 0;
        for mut contact in page {
            if profile_score(pipeline, &plugin, &binding, &mut contact, now).await? {
                changed += 1;
                update_stage(pipeline, &contact, "profile.changed", now).await?;
            }
        }
        if !store
            .task_batch_done(job, task_id, &last, page_len, changed, 0, now)
            .await?
        {
            tracing::warn!(binding = %task.target, "lease lost; another node continues the re-score");
            return Ok(());
        }
        after = Some(last);
    }
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
