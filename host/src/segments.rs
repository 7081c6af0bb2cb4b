//! Live segments: after each touchpoint only the affected contact is
//! re-evaluated against every segment binding; changes are written as
//! `segment.entered` / `segment.left` events.

use std::sync::Arc;

use crate::model::ActivityCount;
use crate::pipeline::Pipeline;
use crate::runtime::{Binding, Plugin, World};
use crate::scoring::runtime_binding;
use crate::store::{BindingDef, BindingKind, ClaimedJob, StoreError};

pub(crate) async fn evaluate_contact(
    pipeline: &Pipeline,
    contact_id: &str,
    activity: &[ActivityCount],
    now: i64,
) -> Result<(), StoreError> {
    let bindings = pipeline.store.bindings(BindingKind::Segment).await?;
    if bindings.is_empty() {
        return Ok(());
    }
    let mut contact = pipeline.store.contact(contact_id).await?;
    contact.segments = pipeline.store.memberships(contact_id).await?;
    for def in bindings {
        // Paused by the circuit breaker: memberships stay as they are.
        if def.paused.is_some() {
            continue;
        }
        let Some(plugin) = pipeline
            .registry
            .resolve(&def.plugin, def.version.as_deref())
        else {
            tracing::warn!(segment = %def.name, plugin = %def.plugin, "segment plugin not installed; skipped");
            continue;
        };
        let binding = runtime_binding(&def, World::SegmentRule, &plugin);
        let answer = plugin.matches(&binding, now, &contact, activity).await;
        crate::shadow::observe(
            pipeline,
            &binding,
            &plugin,
            now,
            crate::shadow::Call::Matches {
                contact: &contact,
                activity,
                answer: &answer,
            },
        )
        .await;
        crate::breaker::observe(pipeline, &def.name, &plugin, !matches!(answer, Ok(Ok(_)))).await;
        let member = match answer {
            Ok(Ok(member)) => member,
            // Keep the membership as it is when the rule cannot decide.
            Ok(Err(declined)) => {
                tracing::warn!(segment = %def.name, error = %declined, "segment rule declined");
                continue;
            }
            Err(failed) => {
                tracing::warn!(segment = %def.name, error = %failed, "segment rule failed");
                continue;
            }
        };
        let was = contact.segments.contains(&def.name);
        if was != member
            && pipeline
                .store
                .set_membership(&def.name, contact_id, member, now)
                .await?
        {
            let kind = if member {
                "segment.entered"
            } else {
                "segment.left"
            };
            pipeline
                .record(contact_id, kind, &[("segment", &def.name)], now)
                .await?;
        }
    }
    Ok(())
}

/// Progress of a segment rebuild, visible through the API.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RebuildProgress {
    pub total: i64,
    pub evaluated: i64,
    pub entered: i64,
    pub left: i64,
    pub done: bool,
    pub error: Option<String>,
}

/// Contacts per batch call into the rule.
pub const REBUILD_BATCH: u32 = 500;

/// Re-evaluates every contact against one segment, in batches, writing
/// `segment.entered` / `segment.left` for each change. `report` sees the
/// progress after every batch.
pub async fn rebuild(
    pipeline: &Pipeline,
    segment: &str,
    now: i64,
    mut report: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, StoreError> {
    let (def, plugin) = segment_plugin(pipeline, segment).await?;
    let binding = runtime_binding(&def, World::SegmentRule, &plugin);
    let mut progress = RebuildProgress {
        total: pipeline.store.count_contacts().await?,
        ..Default::default()
    };
    report(&progress);
    let mut after: Option<String> = None;
    loop {
        match rebuild_batch(pipeline, &plugin, &binding, after.as_deref(), now).await? {
            Batch::Done => break,
            Batch::Failed(error) => {
                progress.error = Some(error);
                break;
            }
            Batch::Evaluated {
                last,
                evaluated,
                entered,
                left,
            } => {
                after = Some(last);
                progress.entered += entered;
                progress.left += left;
                progress.evaluated += evaluated;
                report(&progress);
            }
        }
    }
    progress.done = true;
    report(&progress);
    Ok(progress)
}

async fn segment_plugin(
    pipeline: &Pipeline,
    segment: &str,
) -> Result<(BindingDef, Arc<Plugin>), StoreError> {
    let def = pipeline
        .store
        .bindings(BindingKind::Segment)
        .await?
        .into_iter()
        .find(|b| b.name == segment)
        .ok_or_else(|| StoreError::NotFound(format!("segment {segment}")))?;
    let plugin = pipeline
        .registry
        .resolve(&def.plugin, def.version.as_deref())
        .ok_or_else(|| StoreError::Invalid(format!("plugin `{}` is not installed", def.plugin)))?;
    Ok((def, plugin))
}

/// What one batch of a rebuild did.
enum Batch {
    /// No contacts after the cursor.
    Done,
    /// The rule failed on the batch; the rebuild stops there.
    Failed(String),
    Evaluated {
        last: String,
        evaluated: i64,
        entered: i64,
        left: i64,
    },
}

/// Evaluates the contacts after `after` (one batch) and applies the
/// changes. Applying is idempotent: a batch evaluated again after a crash
/// finds the memberships already changed and changes nothing.
async fn rebuild_batch(
    pipeline: &Pipeline,
    plugin: &Plugin,
    binding: &Arc<Binding>,
    after: Option<&str>,
    now: i64,
) -> Result<Batch, StoreError> {
    let segment = binding.name.as_str();
    let page = pipeline.store.contacts_page(after, REBUILD_BATCH).await?;
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return Ok(Batch::Done);
    };
    let last = last.id.clone();
    let mut activity = pipeline.store.activity_range(&first.id, &last, now).await?;
    let items: Vec<_> = page
        .into_iter()
        .map(|contact| {
            let summary = activity.remove(&contact.id).unwrap_or_default();
            (contact, summary)
        })
        .collect();
    let answers = match plugin.matches_batch(binding, now, &items).await {
        Ok(Ok(answers)) => answers,
        Ok(Err(declined)) => return Ok(Batch::Failed(format!("the rule declined: {declined}"))),
        Err(failed) => return Ok(Batch::Failed(failed.to_string())),
    };
    let changes: Vec<(String, bool)> = items
        .iter()
        .zip(answers)
        .filter(|((contact, _), member)| contact.segments.iter().any(|s| s == segment) != *member)
        .map(|((contact, _), member)| (contact.id.clone(), member))
        .collect();
    let (entered, left) = pipeline
        .store
        .apply_segment_changes(segment, &changes, now)
        .await?;
    Ok(Batch::Evaluated {
        last,
        evaluated: i64::try_from(items.len()).unwrap_or(i64::MAX),
        entered,
        left,
    })
}

/// Runs a segment-rebuild task from its cursor, recording progress and
/// extending the job's lease after every batch; finishes the task and its
/// job together. Stops quietly when another node took the job over.
pub async fn run_rebuild_task(
    pipeline: &Pipeline,
    job: &ClaimedJob,
    task_id: &str,
) -> Result<(), StoreError> {
    let store = &pipeline.store;
    let task = store.task(task_id).await?;
    let now = pipeline.clock.now();
    let (def, plugin) = match segment_plugin(pipeline, &task.target).await {
        Ok(found) => found,
        // The segment was deleted meanwhile: nothing left to do.
        Err(StoreError::NotFound(what)) => {
            let why = format!("{what} does not exist any more");
            store.finish_task(job, task_id, Some(&why), now).await?;
            return Ok(());
        }
        // Not loaded on this node yet: retried, by any node.
        Err(e) => return Err(e),
    };
    if let Some(paused) = &def.paused {
        let why = format!("segment {} is paused: {paused}", def.name);
        store.finish_task(job, task_id, Some(&why), now).await?;
        return Ok(());
    }
    let binding = runtime_binding(&def, World::SegmentRule, &plugin);
    store
        .set_task_total(task_id, store.count_contacts().await?, now)
        .await?;
    let mut after = task.cursor;
    loop {
        let now = pipeline.clock.now();
        match rebuild_batch(pipeline, &plugin, &binding, after.as_deref(), now).await? {
            Batch::Done => {
                store.finish_task(job, task_id, None, now).await?;
                return Ok(());
            }
            Batch::Failed(error) => {
                tracing::warn!(segment = %task.target, %error, "segment rebuild stopped");
                store.finish_task(job, task_id, Some(&error), now).await?;
                return Ok(());
            }
            Batch::Evaluated {
                last,
                evaluated,
                entered,
                left,
            } => {
                let held = store
                    .task_batch_done(job, task_id, &last, evaluated, entered, left, now)
                    .await?;
                if !held {
                    tracing::warn!(segment = %task.target, "lease lost; another node continues the rebuild");
                    return Ok(());
                }
                after = Some(last);
            }
        }
    }
}
