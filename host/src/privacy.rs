//! Data-protection rights, enforced by the host: access (export
//! everything about a contact), erasure (personal data and events deleted,
//! a salted hash of each address kept so a re-import without new consent
//! is never mailed), objection (marketing suppressed, transactional still
//! allowed). Rectification is `PATCH /v1/contacts/{id}`. Each action is in
//! the audit log.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::ingest::Pipeline;
use crate::policy::Suppression;
use crate::store::suppressions::suppress_in;
use crate::store::tracking::audit_in;
use crate::store::{EventInput, StoreError};

/// A salted hash of a normalized address (email or phone): comparable,
/// but not reversible without the server's secret.
pub fn address_hash(secret: &[u8], address: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| {
        Hmac::<Sha256>::new_from_slice(b"nachfass").expect("a fixed key is valid")
    });
    mac.update(address.trim().to_lowercase().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Everything stored about a contact, as one JSON document.
pub async fn export(
    pipeline: &Pipeline,
    contact_id: &str,
    actor: &str,
) -> Result<Value, StoreError> {
    let store = &pipeline.store;
    let contact = store.contact(contact_id).await?;
    let events = store.all_events(contact_id).await?;
    let document = json!({
        "contact": contact,
        "events": events,
        "score_history": store.score_history(contact_id).await?,
        "consents": store.consents(contact_id).await?,
        "suppressions": store.suppressions(contact_id).await?,
        "journey_runs": store.contact_runs(contact_id).await?,
        "messages": store.contact_outbox(contact_id).await?,
        "audit_log": store.audit_entries(contact_id).await?,
    });
    store
        .audit(
            actor,
            "exported",
            Some(contact_id),
            &json!({ "events": events.len() }),
            pipeline.clock.now(),
        )
        .await?;
    Ok(document)
}

/// What an erasure removed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub contact_id: String,
    pub events: usize,
    pub addresses_remembered: usize,
}

pub async fn erase(
    pipeline: &Pipeline,
    contact_id: &str,
    actor: &str,
) -> Result<Erased, StoreError> {
    let store = &pipeline.store;
    let now = pipeline.clock.now();
    let contact = store.contact(contact_id).await?;
    let events = store.all_events(contact_id).await?.len();
    let secret = store.signing_secret();
    let addresses: Vec<&String> = [&contact.email, &contact.phone]
        .into_iter()
        .flatten()
        .collect();
    for address in &addresses {
        store
            .remember_erased(&address_hash(secret, address), now)
            .await?;
    }
    store.delete_contact(contact_id).await?;
    let erased = Erased {
        contact_id: contact_id.to_owned(),
        events,
        addresses_remembered: addresses.len(),
    };
    // The log keeps that it happened and what was removed, never the data.
    store
        .audit(actor, "erased", Some(contact_id), &json!(erased), now)
        .await?;
    Ok(erased)
}

/// Suppresses the contact for marketing at once (unsubscribe link,
/// one-click) and logs it.
pub async fn unsubscribe(
    pipeline: &Pipeline,
    contact_id: &str,
    actor: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    suppress(pipeline, contact_id, "unsubscribed", actor, detail).await
}

async fn suppress(
    pipeline: &Pipeline,
    contact_id: &str,
    reason: &str,
    actor: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    let now = pipeline.clock.now();
    let mut tx = pipeline.store.write_tx().await?;
    let suppression = Suppression {
        channel: "*".into(),
        reason: reason.into(),
        scope: "marketing".into(),
        at: now,
    };
    suppress_in(&mut tx, contact_id, &suppression).await?;
    audit_in(&mut tx, actor, reason, Some(contact_id), detail, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The contact objects to marketing: suppressed for every marketing
/// message, its marketing journeys ended (by the `objected` event).
pub async fn object(pipeline: &Pipeline, contact_id: &str, actor: &str) -> Result<(), StoreError> {
    pipeline.store.contact(contact_id).await?;
    let detail = json!({ "scope": "marketing" });
    suppress(pipeline, contact_id, "objected", actor, &detail).await?;
    let event = EventInput {
        kind: "objected".into(),
        contact_id: Some(contact_id.to_owned()),
        ..EventInput::default()
    };
    pipeline.ingest(&event).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_hashes_normalize_and_depend_on_the_secret() {
        assert_eq!(
            address_hash(b"s", " Ada@Example.com"),
            address_hash(b"s", "ada@example.com")
        );
        assert_ne!(
            address_hash(b"s", "ada@example.com"),
            address_hash(b"t", "ada@example.com")
        );
        assert_eq!(address_hash(b"s", "x").len(), 64);
    }
}
