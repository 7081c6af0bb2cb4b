//! The host's records as the WIT types, lowered straight into a guest.
//!
//! A batch call used to clone every contact into the types `bindgen!`
//! generates, and wasmtime then copied each string again into the guest:
//! the host-side clone cost as much as the whole compiled-in rule. These
//! views borrow the host's strings and have the WIT records' shapes
//! (names and types are checked against the component's export when the
//! function is looked up), so a contact is copied once, into the guest.

use wasmtime::component::{ComponentType, Lower};

use crate::model;

#[derive(ComponentType, Lower)]
#[component(variant)]
pub enum ValueView<'a> {
    #[component(name = "null")]
    Null,
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "float")]
    Float(f64),
    #[component(name = "text")]
    Text(&'a str),
    #[component(name = "timestamp")]
    Timestamp(i64),
    #[component(name = "texts")]
    Texts(&'a [String]),
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct FieldView<'a> {
    key: &'a str,
    value: ValueView<'a>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ContactView<'a> {
    id: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    timezone: Option<&'a str>,
    score: i64,
    stage: &'a str,
    attributes: Vec<FieldView<'a>>,
    segments: &'a [String],
    #[component(name = "created-at")]
    created_at: i64,
    #[component(name = "last-seen-at")]
    last_seen_at: Option<i64>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct EventView<'a> {
    id: &'a str,
    #[component(name = "contact-id")]
    contact_id: &'a str,
    kind: &'a str,
    at: i64,
    properties: Vec<FieldView<'a>>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ActivityView<'a> {
    kind: &'a str,
    total: u32,
    #[component(name = "last-24-hours")]
    last_24_hours: u32,
    #[component(name = "last-30-days")]
    last_30_days: u32,
    #[component(name = "last-at")]
    last_at: Option<i64>,
}

/// `rule-input`: one contact of `matches-batch`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RuleInputView<'a> {
    contact: ContactView<'a>,
    activity: Vec<ActivityView<'a>>,
}

/// `scorer-input`: one touchpoint of `on-event-batch`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ScorerInputView<'a> {
    contact: ContactView<'a>,
    event: EventView<'a>,
    activity: Vec<ActivityView<'a>>,
}

fn value(value: &model::Value) -> ValueView<'_> {
    match value {
        model::Value::Null => ValueView::Null,
        model::Value::Boolean(b) => ValueView::Boolean(*b),
        model::Value::Integer(i) => ValueView::Integer(*i),
        model::Value::Float(f) => ValueView::Float(*f),
        model::Value::Text(s) => ValueView::Text(s),
        model::Value::Timestamp(t) => ValueView::Timestamp(*t),
        model::Value::Texts(items) => ValueView::Texts(items),
    }
}

fn fields(fields: &model::Fields) -> Vec<FieldView<'_>> {
    fields
        .iter()
        .map(|(key, v)| FieldView {
            key,
            value: value(v),
        })
        .collect()
}

pub fn contact(c: &model::Contact) -> ContactView<'_> {
    ContactView {
        id: &c.id,
        email: c.email.as_deref(),
        phone: c.phone.as_deref(),
        timezone: c.timezone.as_deref(),
        score: c.score,
        stage: &c.stage,
        attributes: fields(&c.attributes),
        segments: &c.segments,
        created_at: c.created_at,
        last_seen_at: c.last_seen_at,
    }
}

pub fn event(e: &model::Event) -> EventView<'_> {
    EventView {
        id: &e.id,
        contact_id: &e.contact_id,
        kind: &e.kind,
        at: e.at,
        properties: fields(&e.properties),
    }
}

pub fn activity(activity: &[model::ActivityCount]) -> Vec<ActivityView<'_>> {
    activity
        .iter()
        .map(|a| ActivityView {
            kind: &a.kind,
            total: a.total,
            last_24_hours: a.last_24_hours,
            last_30_days: a.last_30_days,
            last_at: a.last_at,
        })
        .collect()
}

pub fn rule_input<'a>(
    contact: &'a model::Contact,
    activity: &'a [model::ActivityCount],
) -> RuleInputView<'a> {
    RuleInputView {
        contact: self::contact(contact),
        activity: self::activity(activity),
    }
}

pub fn scorer_input<'a>(
    contact: &'a model::Contact,
    event: &'a model::Event,
    activity: &'a [model::ActivityCount],
) -> ScorerInputView<'a> {
    ScorerInputView {
        contact: self::contact(contact),
        event: self::event(event),
        activity: self::activity(activity),
    }
}

impl<'a> ScorerInputView<'a> {
    /// The arguments of `on-event` for this item.
    pub fn parts(&self) -> (&ContactView<'a>, &EventView<'a>, &[ActivityView<'a>]) {
        (&self.contact, &self.event, &self.activity)
    }
}
