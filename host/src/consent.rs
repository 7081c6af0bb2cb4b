//! Double opt-in: a consent is asked for, a confirmation message with a
//! signed link goes out, and only the click makes the consent `granted`.
//! Unconfirmed requests get one reminder after a day and expire after a
//! week. Every step is on the contact's timeline and in the audit log, with
//! the proof (time, IP, user agent, wording version).

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::AnyConnection;

use crate::journeys::send::idempotency_key;
use crate::journeys::{Journeys, props};
use crate::model::{Contact, Message, Value};
use crate::store::Consent;
use crate::store::consents::{ConsentStatus, Purpose, write_consent_in};
use crate::store::contacts::contact_in;
use crate::store::jobs::{ClaimedJob, JobArgs, JobOutcome, JobRegistry, enqueue_in, finish_in};
use crate::store::outbox::{OutboxEntry, OutboxStatus, new_outbox_id, queue_message_in};
use crate::store::timeline::record_in;
use crate::store::tracking::audit_in;
use crate::store::{Dialect, StoreError};
use crate::tracking::TokenKind;

const HOUR: i64 = 60 * 60 * 1000;
/// An unconfirmed request gets its reminder after this long.
pub const REMIND_AFTER: i64 = 24 * HOUR;
/// An unconfirmed request expires after this long.
pub const EXPIRE_AFTER: i64 = 7 * 24 * HOUR;

/// `POST /v1/contacts/{id}/consents/request`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// The channel kind consented to (`email`, `sms`).
    pub channel: String,
    /// `marketing` (default) or `transactional`.
    #[serde(default)]
    pub purpose: Purpose,
    /// The channel binding the confirmation message goes through.
    pub binding: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub text_version: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// What became of a confirmation click.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Confirmation {
    Confirmed { contact_id: String },
    AlreadyConfirmed,
    Expired,
}

/// How [`pending_in`] reads a request: to show it, or to change it.
#[derive(Clone, Copy)]
enum Decide {
    ReadOnly,
    Locked(Dialect),
}

#[derive(sqlx::FromRow)]
struct Pending {
    contact_id: String,
    channel: String,
    purpose: Purpose,
    binding: String,
    status: String,
    source: Option<String>,
    text_version: Option<String>,
    created_at: i64,
}

/// A request as stored. `Decide::Locked` (a confirmation, reminder or
/// expiry about to change it) keeps its row locked until the transaction
/// ends on PostgreSQL (on SQLite the write transaction is the lock): a
/// click and the expiry at the same moment take turns, the second seeing
/// what the first decided. Read unlocked, the expiry could mark expired a
/// request confirmed meanwhile, beside the consent it granted.
async fn pending_in(
    conn: &mut AnyConnection,
    id: &str,
    decide: Decide,
) -> Result<Option<Pending>, StoreError> {
    const READ: &str = "SELECT contact_id, channel, purpose, binding, status, source, \
         text_version, created_at FROM consent_requests WHERE id = $1";
    let sql = match decide {
        Decide::Locked(Dialect::Postgres) => format!("{READ} FOR UPDATE"),
        Decide::Locked(Dialect::Sqlite) | Decide::ReadOnly => READ.to_owned(),
    };
    let pending = sqlx::query_as::<_, Pending>(sqlx::AssertSqlSafe(sql))
        .bind(id.to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(pending)
}

/// Asks for consent: the consent is `pending` and the confirmation message
/// is queued. Returns the request's id.
pub async fn request(
    journeys: &Journeys,
    contact_id: &str,
    asked: &ConsentRequest,
    actor: &str,
) -> Result<String, StoreError> {
    let store = &journeys.pipeline.store;
    let now = journeys.pipeline.clock.now();
    let id = crate::store::runs::new_run_id().replacen("r_", "cr_", 1);
    let mut tx = store.write_tx().await?;
    let contact = contact_in(&mut tx, contact_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("contact {contact_id}")))?;
    let channel = journeys
        .channel_kind_in(&mut tx, &asked.binding)
        .await?
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "channel binding `{}` does not exist or has no live plugin",
                asked.binding
            ))
        })?;
    if channel != asked.channel {
        return Err(StoreError::Invalid(format!(
            "binding `{}` sends {channel}, but the consent is for {}",
            asked.binding, asked.channel
        )));
    }
    sqlx::query(
        "INSERT INTO consent_requests (id, contact_id, channel, purpose, binding, status, source, text_version, ip, user_agent, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10)",
    )
    .bind(id.clone())
    .bind(contact_id.to_owned())
    .bind(asked.channel.clone())
    .bind(asked.purpose)
    .bind(asked.binding.clone())
    .bind(asked.source.clone())
    .bind(asked.text_version.clone())
    .bind(asked.ip.clone())
    .bind(asked.user_agent.clone())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let pending = Consent {
        channel: asked.channel.clone(),
        purpose: asked.purpose,
        status: ConsentStatus::Pending,
        source: asked.source.clone(),
        text_version: asked.text_version.clone(),
        ip: asked.ip.clone(),
        user_agent: asked.user_agent.clone(),
        updated_at: now,
    };
    write_consent_in(&mut tx, contact_id, &pending, now).await?;
    queue_confirmation(
        journeys,
        &mut tx,
        &id,
        &contact,
        &asked.binding,
        &channel,
        "confirm",
        now,
    )
    .await?;
    let request = id.clone();
    enqueue_in(
        &mut tx,
        &ConsentReminder {
            request_id: request.clone(),
        },
        now + REMIND_AFTER,
        now,
    )
    .await?;
    enqueue_in(
        &mut tx,
        &ConsentExpiry {
            request_id: request,
        },
        now + EXPIRE_AFTER,
        now,
    )
    .await?;
    record_in(
        &mut tx,
        contact_id,
        "consent.requested",
        props(&[
            ("channel", &asked.channel),
            ("purpose", asked.purpose.as_str()),
            ("request", &id),
        ]),
        now,
    )
    .await?;
    let detail = json!({ "request": id, "channel": asked.channel, "purpose": asked.purpose,
                         "source": asked.source, "text_version": asked.text_version, "ip": asked.ip });
    audit_in(
        &mut tx,
        actor,
        "consent.requested",
        Some(contact_id),
        &detail,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The confirmation (or reminder) message with its signed link, as a
/// transactional message: it needs no consent, it asks for one.
#[allow(clippy::too_many_arguments)]
async fn queue_confirmation(
    journeys: &Journeys,
    tx: &mut AnyConnection,
    request_id: &str,
    contact: &Contact,
    binding: &str,
    channel: &str,
    step: &str,
    now: i64,
) -> Result<(), StoreError> {
    let to = match channel {
        "sms" => contact.phone.clone(),
        _ => contact.email.clone(),
    }
    .ok_or_else(|| StoreError::Invalid(format!("the contact has no address for {channel}")))?;
    let tracking = journeys.tracking();
    let link = tracking.url(TokenKind::Confirm, request_id);
    let name = match contact.attributes.get("first_name") {
        Some(Value::Text(name)) => format!(" {name}"),
        _ => String::new(),
    };
    let subject = match step {
        "reminder" => "Erinnerung: Bitte bestätigen Sie Ihre Anmeldung",
        _ => "Bitte bestätigen Sie Ihre Anmeldung",
    };
    let run_id = format!("consent:{request_id}");
    let key = idempotency_key(&run_id, step, 0);
    let message = Message {
        idempotency_key: key.clone(),
        to,
        subject: Some(subject.to_owned()),
        text: format!(
            "Hallo{name},\n\nbitte bestätigen Sie, dass Sie Nachrichten von uns erhalten möchten:\n{link}\n\n\
             Ohne Ihre Bestätigung schicken wir Ihnen nichts. Der Link gilt 7 Tage.\n"
        ),
        html: None,
        headers: Default::default(),
        metadata: props(&[("contact_id", &contact.id), ("consent_request", request_id)]),
    };
    let entry = OutboxEntry {
        id: new_outbox_id(),
        idempotency_key: key,
        run_id,
        journey: "double-opt-in".to_owned(),
        step: step.to_owned(),
        variant: None,
        contact_id: contact.id.clone(),
        binding: binding.to_owned(),
        channel: channel.to_owned(),
        purpose: Purpose::Transactional,
        message: serde_json::to_string(&message).map_err(|e| StoreError::Invalid(e.to_string()))?,
        status: OutboxStatus::Pending,
        provider_id: None,
        last_error: None,
        created_at: now,
        sent_at: None,
    };
    queue_message_in(tx, journeys.pipeline.store.dialect(), &entry, now).await?;
    Ok(())
}

/// What the confirmation page shows for a token, without changing
/// anything: a link scanner that fetches the page confirms nothing.
/// `None` for a forged token or an unknown request.
pub async fn confirmation_state(
    journeys: &Journeys,
    token: &str,
) -> Result<Option<ConfirmationState>, StoreError> {
    let tracking = journeys.tracking();
    let Some((TokenKind::Confirm, request_id)) = tracking.verify(token) else {
        return Ok(None);
    };
    let now = journeys.pipeline.clock.now();
    let mut conn = journeys.pipeline.store.pool().acquire().await?;
    let Some(pending) = pending_in(&mut conn, &request_id, Decide::ReadOnly).await? else {
        return Ok(None);
    };
    Ok(Some(match pending.status.as_str() {
        "confirmed" => ConfirmationState::Confirmed,
        "pending" if now < pending.created_at + EXPIRE_AFTER => ConfirmationState::Waiting,
        _ => ConfirmationState::Expired,
    }))
}

/// A confirmation request as its page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfirmationState {
    Waiting,
    Confirmed,
    Expired,
}

/// The press of the confirmation page's button (a POST). `ip` and
/// `user_agent` are the proof of who confirmed.
pub async fn confirm(
    journeys: &Journeys,
    token: &str,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Result<Option<Confirmation>, StoreError> {
    let tracking = journeys.tracking();
    let Some((TokenKind::Confirm, request_id)) = tracking.verify(token) else {
        return Ok(None);
    };
    let now = journeys.pipeline.clock.now();
    let store = &journeys.pipeline.store;
    let mut tx = store.write_tx().await?;
    let Some(pending) = pending_in(&mut tx, &request_id, Decide::Locked(store.dialect())).await?
    else {
        return Ok(None);
    };
    let outcome = match pending.status.as_str() {
        "confirmed" => Confirmation::AlreadyConfirmed,
        "pending" if now < pending.created_at + EXPIRE_AFTER => {
            sqlx::query(
                "UPDATE consent_requests SET status = 'confirmed', decided_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(request_id.clone())
            .execute(&mut *tx)
            .await?;
            let source = format!(
                "{} (double opt-in confirmed)",
                pending.source.as_deref().unwrap_or("consent request")
            );
            let granted = Consent {
                channel: pending.channel.clone(),
                purpose: pending.purpose,
                status: ConsentStatus::Granted,
                source: Some(source),
                text_version: pending.text_version.clone(),
                ip: ip.map(str::to_owned),
                user_agent: user_agent.map(str::to_owned),
                updated_at: now,
            };
            write_consent_in(&mut tx, &pending.contact_id, &granted, now).await?;
            record_in(
                &mut tx,
                &pending.contact_id,
                "consent.confirmed",
                props(&[
                    ("channel", &pending.channel),
                    ("purpose", pending.purpose.as_str()),
                    ("request", &request_id),
                ]),
                now,
            )
            .await?;
            let detail = json!({ "request": request_id, "ip": ip, "user_agent": user_agent });
            audit_in(
                &mut tx,
                "recipient",
                "consent.confirmed",
                Some(&pending.contact_id),
                &detail,
                now,
            )
            .await?;
            Confirmation::Confirmed {
                contact_id: pending.contact_id.clone(),
            }
        }
        _ => Confirmation::Expired,
    };
    tx.commit().await?;
    Ok(Some(outcome))
}

/// Reminds a contact of an unconfirmed double opt-in request.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConsentReminder {
    pub request_id: String,
}

impl JobArgs for ConsentReminder {
    const KIND: &'static str = "consent_reminder";
    fn unique_key(&self) -> String {
        format!("consent-reminder:{}", self.request_id)
    }
}

/// An unconfirmed double opt-in request runs out.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConsentExpiry {
    pub request_id: String,
}

impl JobArgs for ConsentExpiry {
    const KIND: &'static str = "consent_expiry";
    fn unique_key(&self) -> String {
        format!("consent-expiry:{}", self.request_id)
    }
}

pub fn register_jobs(registry: &mut JobRegistry<Journeys>) {
    registry
        .register(|journeys, job, args: ConsentReminder| async move {
            remind(&journeys, &job, &args.request_id).await
        })
        .register(|journeys, job, args: ConsentExpiry| async move {
            expire(&journeys, &job, &args.request_id).await
        });
}

/// One reminder for a request still waiting after a day.
pub(crate) async fn remind(
    journeys: &Journeys,
    job: &ClaimedJob,
    request_id: &str,
) -> Result<JobOutcome, StoreError> {
    let now = journeys.pipeline.clock.now();
    let store = &journeys.pipeline.store;
    let mut tx = store.write_tx().await?;
    if let Some(pending) = pending_in(&mut tx, request_id, Decide::Locked(store.dialect()))
        .await?
        .filter(|p| p.status == "pending")
        && let Some(contact) = contact_in(&mut tx, &pending.contact_id).await?
    {
        queue_confirmation(
            journeys,
            &mut tx,
            request_id,
            &contact,
            &pending.binding,
            &pending.channel,
            "reminder",
            now,
        )
        .await?;
        sqlx::query("UPDATE consent_requests SET reminded_at = $1 WHERE id = $2")
            .bind(now)
            .bind(request_id.to_owned())
            .execute(&mut *tx)
            .await?;
    }
    if finish_in(&mut tx, job).await? {
        tx.commit().await?;
    }
    Ok(JobOutcome::Done)
}

/// An unconfirmed request expires: the consent stays unusable.
pub(crate) async fn expire(
    journeys: &Journeys,
    job: &ClaimedJob,
    request_id: &str,
) -> Result<JobOutcome, StoreError> {
    let now = journeys.pipeline.clock.now();
    let store = &journeys.pipeline.store;
    let mut tx = store.write_tx().await?;
    if let Some(pending) = pending_in(&mut tx, request_id, Decide::Locked(store.dialect()))
        .await?
        .filter(|p| p.status == "pending")
    {
        sqlx::query(
            "UPDATE consent_requests SET status = 'expired', decided_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(request_id.to_owned())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE consents SET status = $1, updated_at = $2 \
             WHERE contact_id = $3 AND channel = $4 AND purpose = $5 AND status = $6",
        )
        .bind(ConsentStatus::Expired)
        .bind(now)
        .bind(pending.contact_id.clone())
        .bind(pending.channel.clone())
        .bind(pending.purpose)
        .bind(ConsentStatus::Pending)
        .execute(&mut *tx)
        .await?;
        record_in(
            &mut tx,
            &pending.contact_id,
            "consent.expired",
            props(&[("channel", &pending.channel), ("request", request_id)]),
            now,
        )
        .await?;
    }
    if finish_in(&mut tx, job).await? {
        tx.commit().await?;
    }
    Ok(JobOutcome::Done)
}
