//! Live segments: after each touchpoint only the affected contact is
//! re-evaluated against every segment binding; changes are written as
//! `segment.entered` / `segment.left` events.

use crate::ingest::Pipeline;
use crate::model::ActivityCount;
use crate::runtime::World;
use crate::scoring::runtime_binding;
use crate::store::{BindingKind, StoreError};

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
        let Some(plugin) = pipeline.registry.live(&def.plugin) else {
            tracing::warn!(segment = %def.name, plugin = %def.plugin, "segment plugin not installed; skipped");
            continue;
        };
        let binding = runtime_binding(&def, World::SegmentRule);
        let member = match plugin.matches(&binding, now, &contact, activity).await {
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
    let def = pipeline
        .store
        .bindings(BindingKind::Segment)
        .await?
        .into_iter()
        .find(|b| b.name == segment)
        .ok_or_else(|| StoreError::NotFound(format!("segment {segment}")))?;
    let plugin = pipeline
        .registry
        .live(&def.plugin)
        .ok_or_else(|| StoreError::Invalid(format!("plugin `{}` is not installed", def.plugin)))?;
    let binding = runtime_binding(&def, World::SegmentRule);
    let mut progress = RebuildProgress {
        total: pipeline.store.count_contacts().await?,
        ..Default::default()
    };
    report(&progress);
    let mut after: Option<String> = None;
    loop {
        let page = pipeline
            .store
            .contacts_page(after.as_deref(), REBUILD_BATCH)
            .await?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            break;
        };
        let mut activity = pipeline
            .store
            .activity_range(&first.id, &last.id, now)
            .await?;
        after = Some(last.id.clone());
        let items: Vec<_> = page
            .into_iter()
            .map(|contact| {
                let summary = activity.remove(&contact.id).unwrap_or_default();
                (contact, summary)
            })
            .collect();
        let answers = match plugin.matches_batch(&binding, now, &items).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(declined)) => {
                progress.error = Some(format!("the rule declined: {declined}"));
                break;
            }
            Err(failed) => {
                progress.error = Some(failed.to_string());
                break;
            }
        };
        let changes: Vec<(String, bool)> = items
            .iter()
            .zip(answers)
            .filter(|((contact, _), member)| {
                contact.segments.iter().any(|s| s == segment) != *member
            })
            .map(|((contact, _), member)| (contact.id.clone(), member))
            .collect();
        let (entered, left) = pipeline
            .store
            .apply_segment_changes(segment, &changes, now)
            .await?;
        progress.entered += entered;
        progress.left += left;
        progress.evaluated += i64::try_from(items.len()).unwrap_or(i64::MAX);
        report(&progress);
    }
    progress.done = true;
    report(&progress);
    Ok(progress)
}
