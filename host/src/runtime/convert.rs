//! Conversions between the host's model and the WIT types at the plugin
//! boundary.

use super::bindings::types as wit;
use super::manifest::ContactParts;
use crate::model;

fn value(value: &model::Value) -> wit::Value {
    match value {
        model::Value::Null => wit::Value::Null,
        model::Value::Boolean(b) => wit::Value::Boolean(*b),
        model::Value::Integer(i) => wit::Value::Integer(*i),
        model::Value::Float(f) => wit::Value::Float(*f),
        model::Value::Text(s) => wit::Value::Text(s.clone()),
        model::Value::Timestamp(t) => wit::Value::Timestamp(*t),
        model::Value::Texts(items) => wit::Value::Texts(items.clone()),
    }
}

fn fields(fields: &model::Fields) -> Vec<wit::Field> {
    fields
        .iter()
        .map(|(key, v)| wit::Field {
            key: key.clone(),
            value: value(v),
        })
        .collect()
}

/// The whole contact.
impl From<&model::Contact> for wit::Contact {
    fn from(c: &model::Contact) -> Self {
        contact(c, ContactParts::ALL)
    }
}

/// `c` as a plugin that reads `parts` is shown it: the other parts empty.
pub fn contact(c: &model::Contact, parts: ContactParts) -> wit::Contact {
    let shown = super::views::shown(c, parts);
    wit::Contact {
        id: c.id.clone(),
        email: shown.email.map(str::to_owned),
        phone: shown.phone.map(str::to_owned),
        timezone: c.timezone.clone(),
        score: c.score,
        stage: c.stage.clone(),
        attributes: fields(shown.attributes),
        segments: shown.segments.to_vec(),
        created_at: c.created_at,
        last_seen_at: c.last_seen_at,
    }
}

impl From<&model::Event> for wit::Event {
    fn from(e: &model::Event) -> Self {
        wit::Event {
            id: e.id.clone(),
            contact_id: e.contact_id.clone(),
            kind: e.kind.clone(),
            at: e.at,
            properties: fields(&e.properties),
        }
    }
}

impl From<&model::ActivityCount> for wit::ActivityCount {
    fn from(a: &model::ActivityCount) -> Self {
        wit::ActivityCount {
            kind: a.kind.clone(),
            total: a.total,
            last_24_hours: a.last_24_hours,
            last_30_days: a.last_30_days,
            last_at: a.last_at,
        }
    }
}

pub fn activity(activity: &[model::ActivityCount]) -> Vec<wit::ActivityCount> {
    activity.iter().map(Into::into).collect()
}

impl From<&model::Message> for wit::Message {
    fn from(m: &model::Message) -> Self {
        wit::Message {
            idempotency_key: m.idempotency_key.clone(),
            to: m.to.clone(),
            subject: m.subject.clone(),
            text: m.text.clone(),
            html: m.html.clone(),
            headers: fields(&m.headers),
            metadata: fields(&m.metadata),
        }
    }
}

impl From<&model::Callback> for wit::Callback {
    fn from(c: &model::Callback) -> Self {
        wit::Callback {
            method: c.method.clone(),
            path: c.path.clone(),
            headers: c.headers.clone(),
            body: c.body.clone(),
        }
    }
}

impl From<wit::PluginError> for model::PluginError {
    fn from(e: wit::PluginError) -> Self {
        model::PluginError {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<wit::ScoreChange> for model::ScoreChange {
    fn from(c: wit::ScoreChange) -> Self {
        model::ScoreChange {
            delta: c.delta,
            reasons: c.reasons,
        }
    }
}

impl From<wit::ChannelInfo> for model::ChannelInfo {
    fn from(i: wit::ChannelInfo) -> Self {
        model::ChannelInfo {
            kind: match i.kind {
                wit::ChannelKind::Email => model::ChannelKind::Email,
                wit::ChannelKind::Sms => model::ChannelKind::Sms,
                wit::ChannelKind::Webhook => model::ChannelKind::Webhook,
                wit::ChannelKind::Audience => model::ChannelKind::Audience,
            },
            provider: i.provider,
        }
    }
}

impl From<wit::Delivery> for model::Delivery {
    fn from(d: wit::Delivery) -> Self {
        model::Delivery {
            provider_id: d.provider_id,
        }
    }
}

impl From<wit::SendError> for model::SendError {
    fn from(e: wit::SendError) -> Self {
        match e {
            wit::SendError::Transient(why) => model::SendError::Transient(why),
            wit::SendError::Permanent(why) => model::SendError::Permanent(why),
            wit::SendError::RateLimited(seconds) => model::SendError::RateLimited(seconds),
        }
    }
}

impl From<wit::DeliveryEvent> for model::DeliveryEvent {
    fn from(e: wit::DeliveryEvent) -> Self {
        model::DeliveryEvent {
            message_ref: e.message_ref,
            status: match e.status {
                wit::DeliveryStatus::Delivered => model::DeliveryStatus::Delivered,
                wit::DeliveryStatus::SoftBounce => model::DeliveryStatus::SoftBounce,
                wit::DeliveryStatus::HardBounce => model::DeliveryStatus::HardBounce,
                wit::DeliveryStatus::Complaint => model::DeliveryStatus::Complaint,
                wit::DeliveryStatus::Opened => model::DeliveryStatus::Opened,
                wit::DeliveryStatus::Clicked => model::DeliveryStatus::Clicked,
                wit::DeliveryStatus::Unsubscribed => model::DeliveryStatus::Unsubscribed,
            },
            at: e.at,
            detail: e.detail,
        }
    }
}
