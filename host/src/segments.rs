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
        if pipeline
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
