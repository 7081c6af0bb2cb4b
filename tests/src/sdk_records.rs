//! The host's records as the SDK's, built independently of the host's own
//! conversions: what a plugin must be given, for tests that compare, and
//! what a rule compiled into the host would take, for the runtime bench.

use nachfass::model::{ActivityCount, Contact, Event, Fields, Value};

fn value(value: &Value) -> nachfass_sdk::Value {
    match value {
        Value::Null => nachfass_sdk::Value::Null,
        Value::Boolean(b) => nachfass_sdk::Value::Boolean(*b),
        Value::Integer(i) => nachfass_sdk::Value::Integer(*i),
        Value::Float(f) => nachfass_sdk::Value::Float(*f),
        Value::Text(t) => nachfass_sdk::Value::Text(t.clone()),
        Value::Timestamp(t) => nachfass_sdk::Value::Timestamp(*t),
        Value::Texts(t) => nachfass_sdk::Value::Texts(t.clone()),
    }
}

fn fields(fields: &Fields) -> Vec<nachfass_sdk::Field> {
    fields
        .iter()
        .map(|(key, v)| nachfass_sdk::Field {
            key: key.clone(),
            value: value(v),
        })
        .collect()
}

pub fn contact(c: &Contact) -> nachfass_sdk::Contact {
    nachfass_sdk::Contact {
        id: c.id.clone(),
        email: c.email.clone(),
        phone: c.phone.clone(),
        timezone: c.timezone.clone(),
        score: c.score,
        stage: c.stage.clone(),
        attributes: fields(&c.attributes),
        segments: c.segments.clone(),
        created_at: c.created_at,
        last_seen_at: c.last_seen_at,
    }
}

pub fn event(e: &Event) -> nachfass_sdk::Event {
    nachfass_sdk::Event {
        id: e.id.clone(),
        contact_id: e.contact_id.clone(),
        kind: e.kind.clone(),
        at: e.at,
        properties: fields(&e.properties),
    }
}

pub fn activity(activity: &[ActivityCount]) -> Vec<nachfass_sdk::ActivityCount> {
    activity
        .iter()
        .map(|a| nachfass_sdk::ActivityCount {
            kind: a.kind.clone(),
            total: a.total,
            last_24_hours: a.last_24_hours,
            last_30_days: a.last_30_days,
            last_at: a.last_at,
        })
        .collect()
}
