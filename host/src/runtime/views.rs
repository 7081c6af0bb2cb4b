//! The host's records as the WIT types, lowered straight into a guest.
//!
//! A batch call used to clone every contact into the types `bindgen!`
//! generates, and wasmtime then copied each string again into the guest:
//! the host-side clone cost as much as the whole compiled-in rule. These
//! views borrow the host's strings and have the WIT records' shapes
//! (names and types are checked against the component's export when the
//! function is looked up), so a contact is copied once, into the guest.
//!
//! The items of a batch go further: [`RuleInput`] and [`ScorerInput`] hold
//! only references to the host's records and are written into the guest by
//! hand (`views/lowering.rs`), one record at a time; the views serve single
//! calls and give the batch items their type.
//!
//! Every view shows a plugin only the parts of a contact its manifest
//! `reads` ([`ContactParts`]): the others are written empty.

use wasmtime::component::{ComponentType, Lower};

mod lowering;

use super::manifest::ContactParts;
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

/// `rule-input` as the component declares it: the type and layout that
/// [`RuleInput`] is checked against and written in.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RuleInputRecord<'a> {
    contact: ContactView<'a>,
    activity: Vec<ActivityView<'a>>,
}

/// `scorer-input` as the component declares it, for [`ScorerInput`].
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ScorerInputRecord<'a> {
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

/// The parts of `c` a plugin that reads `parts` is shown, the others
/// empty: the one place that decides, for single calls (`convert.rs`),
/// views and batch items (`views/lowering.rs`) alike.
pub(super) struct Shown<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub attributes: &'a model::Fields,
    pub segments: &'a [String],
}

static NO_FIELDS: model::Fields = model::Fields::new();

pub(super) fn shown(c: &model::Contact, parts: ContactParts) -> Shown<'_> {
    let contact_points = parts.contact_points;
    Shown {
        email: c.email.as_deref().filter(|_| contact_points),
        phone: c.phone.as_deref().filter(|_| contact_points),
        attributes: if parts.attributes {
            &c.attributes
        } else {
            &NO_FIELDS
        },
        segments: if parts.segments { &c.segments } else { &[] },
    }
}

/// `c` as a plugin that reads `parts` is shown it.
pub fn contact(c: &model::Contact, parts: ContactParts) -> ContactView<'_> {
    let shown = shown(c, parts);
    ContactView {
        id: &c.id,
        email: shown.email,
        phone: shown.phone,
        timezone: c.timezone.as_deref(),
        score: c.score,
        stage: &c.stage,
        attributes: fields(shown.attributes),
        segments: shown.segments,
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

/// One contact of `matches-batch`: a `rule-input` lowered straight from
/// the host's records (`views/lowering.rs`), showing `parts`.
#[derive(Clone, Copy)]
pub struct RuleInput<'a> {
    pub contact: &'a model::Contact,
    pub activity: &'a [model::ActivityCount],
    pub parts: ContactParts,
}

/// One touchpoint to score in a batch: the contact and its activity as
/// they were before this event.
#[derive(Clone, Copy, Debug)]
pub struct ScorerInput<'a> {
    pub contact: &'a model::Contact,
    pub event: &'a model::Event,
    pub activity: &'a [model::ActivityCount],
}

/// A [`ScorerInput`] as a scorer that reads `parts` is shown it: a
/// `scorer-input` of `on-event-batch`, lowered straight from the host's
/// records.
#[derive(Clone, Copy)]
pub struct ScorerItem<'a> {
    pub input: ScorerInput<'a>,
    pub parts: ContactParts,
}

impl RuleInput<'_> {
    fn record(&self) -> RuleInputRecord<'_> {
        RuleInputRecord {
            contact: contact(self.contact, self.parts),
            activity: activity(self.parts.activity(self.activity)),
        }
    }
}

impl ScorerItem<'_> {
    fn record(&self) -> ScorerInputRecord<'_> {
        ScorerInputRecord {
            contact: contact(self.input.contact, self.parts),
            event: event(self.input.event),
            activity: activity(self.parts.activity(self.input.activity)),
        }
    }
}
