//! What recipients and providers report about a sent message: an open, a
//! click, an unsubscribe, a provider's delivery report parsed by the
//! binding's connector. Each becomes an event on the contact's timeline
//! (`email.opened`, `sms.bounced`), marked `unique` the first time for
//! that message. The HTTP edge (`api/tracking.rs`) only checks tokens and
//! answers.

use crate::model::{Callback, DeliveryStatus, Value};
use crate::pipeline::Pipeline;
use crate::runtime::World;
use crate::store::{BindingKind, EventInput, OutboxEntry, StoreError};

/// Why a provider callback was not accepted. `Refused` is the caller's
/// (the edge answers it without saying which reason, so binding names
/// cannot be probed); the reason is for the log.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback refused: {0}")]
    Refused(String),
    #[error("the connector failed: {0}")]
    Plugin(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a callback changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackOutcome {
    /// Reports about messages this server sent, recorded.
    pub accepted: u64,
    /// Reports naming no message this server knows, ignored.
    pub unknown: u64,
}

/// Stores what the recipient did (`opened`, `clicked`, …) as an event on
/// their timeline, with `unique: true` the first time for this message.
pub async fn record(
    pipeline: &Pipeline,
    entry: &OutboxEntry,
    what: &str,
    extra: &[(&str, &str)],
) -> Result<(), StoreError> {
    let now = pipeline.clock.now();
    let before = pipeline
        .store
        .message_event(&entry.id, what, extra.first().map(|(_, v)| *v), now)
        .await?;
    let mut properties = crate::journeys::props(&[
        ("message", &entry.idempotency_key),
        ("journey", &entry.journey),
        ("step", &entry.step),
    ]);
    if let Some(variant) = &entry.variant {
        properties.insert("variant".into(), Value::Text(variant.clone()));
    }
    properties.extend(crate::journeys::props(extra));
    properties.insert("unique".into(), Value::Boolean(before == 0));
    let event = EventInput {
        kind: format!("{}.{what}", entry.channel),
        contact_id: Some(entry.contact_id.clone()),
        properties,
        ..EventInput::default()
    };
    pipeline.ingest(&event).await?;
    Ok(())
}

/// A provider's report to a channel binding: the binding's connector
/// verifies and parses it, and each delivery event it names is recorded
/// for its message.
pub async fn callback(
    pipeline: &Pipeline,
    binding: &str,
    callback: &Callback,
) -> Result<CallbackOutcome, CallbackError> {
    let store = &pipeline.store;
    let def = store
        .bindings(BindingKind::Channel)
        .await?
        .into_iter()
        .find(|b| b.name == binding)
        .ok_or_else(|| CallbackError::Refused("no such channel binding".into()))?;
    let plugin = pipeline
        .registry
        .resolve(&def.plugin, def.version.as_deref())
        .ok_or_else(|| CallbackError::Refused("its plugin is not loaded".into()))?;
    let runtime_binding = crate::scoring::runtime_binding(&def, World::Channel, &plugin);
    let events = match plugin
        .parse_callback(&runtime_binding, pipeline.clock.now(), callback)
        .await
    {
        Ok(Ok(events)) => events,
        Ok(Err(declined)) => return Err(CallbackError::Refused(declined.to_string())),
        Err(failed) => return Err(CallbackError::Plugin(failed.to_string())),
    };
    let mut outcome = CallbackOutcome::default();
    for event in events {
        let Some(outbox_id) = store.outbox_by_reference(&event.message_ref).await? else {
            outcome.unknown += 1;
            continue;
        };
        let Some(entry) = store.outbox_entry(&outbox_id).await? else {
            outcome.unknown += 1;
            continue;
        };
        let detail = event.detail.clone().unwrap_or_default();
        let (what, extra): (&str, &[(&str, &str)]) = match event.status {
            DeliveryStatus::Delivered => ("delivered", &[]),
            DeliveryStatus::SoftBounce => ("bounced", &[("type", "soft"), ("detail", &detail)]),
            DeliveryStatus::HardBounce => ("bounced", &[("type", "hard"), ("detail", &detail)]),
            DeliveryStatus::Complaint => ("complained", &[]),
            DeliveryStatus::Opened => ("opened", &[]),
            DeliveryStatus::Clicked => ("clicked", &[]),
            DeliveryStatus::Unsubscribed => ("unsubscribed", &[]),
        };
        record(pipeline, &entry, what, extra).await?;
        outcome.accepted += 1;
    }
    Ok(outcome)
}
