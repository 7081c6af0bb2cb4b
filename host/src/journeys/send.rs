//! A send step: the policy gate, then the rendered message into the
//! outbox with its delivery job — in the batch's writes, committed with the
//! run's move past the step, so a message is queued exactly when the run
//! moves on.

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::definition::{JourneyDef, Purpose, Step, Variant};
use super::facts::StepFacts;
use super::{Journeys, props};
use crate::model::{Contact, Message, Value};
use crate::policy::{self, Decision, SendFacts};
use crate::render::{self, JourneyContext, RenderContext};
use crate::store::StoreError;
use crate::store::outbox::{OutboxEntry, OutboxStatus, new_outbox_id};
use crate::store::runs::Run;

pub(super) enum SendOutcome {
    Queued,
    Skipped,
    Deferred(i64),
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    facts: &mut StepFacts,
    def: &JourneyDef,
    run: &Run,
    contact: &Contact,
    step: &Step,
    now: i64,
) -> Result<SendOutcome, StoreError> {
    let Step::Send {
        id: step_id,
        binding,
        template,
        variants,
        send_window,
        ..
    } = step
    else {
        return Ok(SendOutcome::Skipped);
    };
    let bindings = facts.channel_bindings(tx).await?;
    let Some(channel) = journeys.channel_kind_of(bindings, binding).await else {
        // Retried by the scheduler: the plugin may be uploaded meanwhile.
        return Err(StoreError::Invalid(format!(
            "channel binding `{binding}` has no live plugin; install it or fix the binding"
        )));
    };
    let consent = facts.consent(tx, &contact.id, &channel).await?;
    let address = match channel.as_str() {
        "email" => contact.email.clone(),
        "sms" => contact.phone.clone(),
        _ => Some(contact.email.clone().unwrap_or_else(|| contact.id.clone())),
    };
    let erased_at = match &address {
        Some(address) => {
            let secret = journeys.pipeline.store.signing_secret();
            facts.erased_at(tx, secret, address).await?
        }
        None => None,
    };
    let suppressions = facts.suppressions(tx, &contact.id).await?;
    let cap = &journeys.policy.cap;
    let recent = facts
        .recent_sends(tx, &contact.id, now - cap.per.millis)
        .await?;
    let gate = SendFacts {
        purpose: def.purpose,
        channel: &channel,
        consent: consent.as_ref().map(|(status, _)| *status),
        consent_at: consent.as_ref().map(|(_, at)| *at),
        erased_at,
        suppressions: &suppressions,
        window: send_window.as_ref().or(def.send_window.as_ref()),
        contact_timezone: contact.timezone.as_deref(),
        recent_sends: &recent,
        now,
    };
    let decision = policy::decide(&journeys.policy, &gate);
    let base = [
        ("journey", def.name.as_str()),
        ("step", step_id.as_str()),
        ("run", run.id.as_str()),
    ];
    let skip = |facts: &mut StepFacts, reason: &str| {
        let mut properties = props(&base);
        properties.extend(props(&[("reason", reason)]));
        facts
            .writes
            .event(&contact.id, "message.skipped", &properties, now)?;
        Ok(SendOutcome::Skipped)
    };
    match decision {
        Decision::Skip { reason } => return skip(facts, &reason),
        Decision::Defer { until, reason } => {
            let mut properties = props(&base);
            properties.extend(props(&[("reason", &reason)]));
            properties.insert("until".into(), Value::Timestamp(until));
            facts
                .writes
                .event(&contact.id, "message.deferred", &properties, now)?;
            return Ok(SendOutcome::Deferred(until));
        }
        Decision::Send => {}
    }
    let Some(to) = address else {
        return skip(
            facts,
            &format!("skipped: the contact has no address for {channel}"),
        );
    };
    let variant = pick_variant(variants, &def.name, step_id, &contact.id);
    let Some(template) = variant.map(|v| &v.template).or(template.as_ref()) else {
        return skip(facts, "skipped: no template");
    };
    let trigger = match run.trigger_event.as_deref() {
        Some(id) => facts.trigger(tx, id).await?,
        None => None,
    };
    let context = RenderContext {
        contact,
        event: trigger.as_ref(),
        journey: JourneyContext {
            name: &def.name,
            step: step_id,
            variant: variant.map(|v| v.name.as_str()),
        },
    };
    let rendered = match render::render(template, &context) {
        Ok(rendered) => rendered,
        Err(e) => return skip(facts, &format!("skipped: the template failed: {e}")),
    };
    let key = idempotency_key(&run.id, step_id, run.seq);
    let variant_name = variant.map(|v| v.name.clone());
    let mut metadata = props(&[
        ("contact_id", &contact.id),
        ("journey", &def.name),
        ("step", step_id),
        ("run", &run.id),
        ("purpose", def.purpose.as_str()),
    ]);
    if let Some(v) = &variant_name {
        metadata.insert("variant".into(), Value::Text(v.clone()));
    }
    let outbox_id = new_outbox_id();
    let mut message = Message {
        idempotency_key: key.clone(),
        to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        headers: Default::default(),
        metadata,
    };
    // Messages people read get tracked links and an unsubscribe link; an
    // ads audience update is no message.
    if channel != "audience" {
        let tracking = journeys.tracking();
        let origins = crate::tracking::template_origins(&[
            &template.text,
            template.html.as_deref().unwrap_or(""),
        ]);
        tracking.instrument(
            &mut message,
            &outbox_id,
            def.purpose == Purpose::Marketing,
            &origins,
        );
    }
    let entry = OutboxEntry {
        id: outbox_id,
        idempotency_key: key.clone(),
        run_id: run.id.clone(),
        journey: def.name.clone(),
        step: step_id.clone(),
        variant: variant_name.clone(),
        contact_id: contact.id.clone(),
        binding: binding.clone(),
        channel: channel.clone(),
        purpose: def.purpose,
        message: serde_json::to_string(&message).map_err(|e| StoreError::Invalid(e.to_string()))?,
        status: OutboxStatus::Pending,
        provider_id: None,
        last_error: None,
        created_at: now,
        sent_at: None,
    };
    // The key is unique: a second insert for the same step visit is the
    // same message, already queued, and then neither it nor its event is
    // written again.
    let outbox_id = entry.id.clone();
    facts.writes.message(entry);
    if def.purpose == Purpose::Marketing {
        facts.sent(&contact.id, now);
    }
    let mut properties = props(&base);
    properties.extend(props(&[
        ("binding", binding),
        ("channel", &channel),
        ("message", &key),
    ]));
    if let Some(v) = variant_name {
        properties.insert("variant".into(), Value::Text(v));
    }
    properties.insert("purpose".into(), Value::Text(def.purpose.as_str().into()));
    facts.writes.event_if_queued(
        &contact.id,
        "message.queued",
        &properties,
        now,
        Some(&outbox_id),
    )?;
    Ok(SendOutcome::Queued)
}

/// The same on every retry and after a crash: one step visit of one run.
pub fn idempotency_key(run_id: &str, step: &str, seq: i64) -> String {
    let digest = Sha256::digest(format!("{run_id}\n{step}\n{seq}"));
    format!("nf-{}", hex::encode(&digest[..16]))
}

/// A contact always lands in the same variant of a step.
fn pick_variant<'a>(
    variants: &'a [Variant],
    journey: &str,
    step: &str,
    contact: &str,
) -> Option<&'a Variant> {
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return None;
    }
    let digest = Sha256::digest(format!("{journey}\n{step}\n{contact}"));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let mut point = u64::from_be_bytes(bytes) % total;
    for variant in variants {
        let weight = u64::from(variant.weight);
        if point < weight {
            return Some(variant);
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::journeys::definition::Template;

    fn variant(name: &str, weight: u32) -> Variant {
        Variant {
            name: name.into(),
            weight,
            template: Template {
                subject: None,
                text: name.into(),
                html: None,
            },
        }
    }

    #[test]
    fn variants_are_stable_and_follow_their_weights() {
        let variants = [variant("a", 3), variant("b", 1), variant("off", 0)];
        let mut counts = std::collections::HashMap::new();
        for i in 0..4000 {
            let contact = format!("c_{i}");
            let first = pick_variant(&variants, "j", "s", &contact).unwrap();
            assert_eq!(first, pick_variant(&variants, "j", "s", &contact).unwrap());
            *counts.entry(first.name.clone()).or_insert(0) += 1;
        }
        assert!(!counts.contains_key("off"));
        let a = counts["a"];
        assert!((2800..3200).contains(&a), "a got {a} of 4000 at weight 3:1");
    }

    #[test]
    fn keys_name_one_step_visit() {
        assert_eq!(idempotency_key("r", "s", 1), idempotency_key("r", "s", 1));
        assert_ne!(idempotency_key("r", "s", 1), idempotency_key("r", "s", 2));
        assert_eq!(idempotency_key("r", "s", 1).len(), 35);
    }
}
