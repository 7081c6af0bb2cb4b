//! Conveniences on the WIT types: constructors, builders and accessors.

use crate::{
    ActivityCount, Callback, Contact, Event, Field, Message, PluginError, RuleInput, ScoreChange,
    ScorerInput, Value,
};

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Integers and floats as `f64`; numeric text (`"250"`) too, since
    /// imported data often carries numbers as strings.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Timestamp(t) => Some(*t as f64),
            Value::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_texts(&self) -> Option<&[String]> {
        match self {
            Value::Texts(items) => Some(items),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}
impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Self {
        Value::Texts(items)
    }
}
impl From<&[&str]> for Value {
    fn from(items: &[&str]) -> Self {
        Value::Texts(items.iter().map(|s| (*s).to_owned()).collect())
    }
}

fn lookup<'a>(fields: &'a [Field], key: &str) -> Option<&'a Value> {
    fields.iter().find(|f| f.key == key).map(|f| &f.value)
}

fn set(fields: &mut Vec<Field>, key: &str, value: Value) {
    match fields.iter_mut().find(|f| f.key == key) {
        Some(field) => field.value = value,
        None => fields.push(Field {
            key: key.to_owned(),
            value,
        }),
    }
}

impl Contact {
    /// A contact with only an id: stage `subscriber`, score 0.
    pub fn new(id: &str) -> Contact {
        Contact {
            id: id.to_owned(),
            email: None,
            phone: None,
            timezone: None,
            score: 0,
            stage: "subscriber".to_owned(),
            attributes: Vec::new(),
            segments: Vec::new(),
            created_at: 0,
            last_seen_at: None,
        }
    }

    /// The custom attribute `key`, if set.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        lookup(&self.attributes, key)
    }

    pub fn in_segment(&self, segment: &str) -> bool {
        self.segments.iter().any(|s| s == segment)
    }

    pub fn with_attr(mut self, key: &str, value: impl Into<Value>) -> Contact {
        set(&mut self.attributes, key, value.into());
        self
    }
    pub fn with_email(mut self, email: &str) -> Contact {
        self.email = Some(email.to_owned());
        self
    }
    pub fn with_score(mut self, score: i64) -> Contact {
        self.score = score;
        self
    }
    pub fn with_stage(mut self, stage: &str) -> Contact {
        self.stage = stage.to_owned();
        self
    }
    pub fn with_segment(mut self, segment: &str) -> Contact {
        self.segments.push(segment.to_owned());
        self
    }
    pub fn with_created_at(mut self, at: i64) -> Contact {
        self.created_at = at;
        self
    }
    pub fn with_last_seen_at(mut self, at: i64) -> Contact {
        self.last_seen_at = Some(at);
        self
    }
}

impl Event {
    pub fn new(kind: &str, at: i64) -> Event {
        Event {
            id: String::new(),
            contact_id: String::new(),
            kind: kind.to_owned(),
            at,
            properties: Vec::new(),
        }
    }

    /// The property `key`, if set.
    pub fn prop(&self, key: &str) -> Option<&Value> {
        lookup(&self.properties, key)
    }

    pub fn with_prop(mut self, key: &str, value: impl Into<Value>) -> Event {
        set(&mut self.properties, key, value.into());
        self
    }
}

impl ActivityCount {
    /// `kind` seen `total` times, the newest at `last_at`; the 24-hour and
    /// 30-day windows start empty (set them with the `with_` methods).
    pub fn new(kind: &str, total: u32, last_at: Option<i64>) -> ActivityCount {
        ActivityCount {
            kind: kind.to_owned(),
            total,
            last_24_hours: 0,
            last_30_days: 0,
            last_at,
        }
    }

    pub fn with_last_24_hours(mut self, count: u32) -> ActivityCount {
        self.last_24_hours = count;
        self
    }

    pub fn with_last_30_days(mut self, count: u32) -> ActivityCount {
        self.last_30_days = count;
        self
    }
}

impl RuleInput {
    pub fn new(contact: Contact, activity: Vec<ActivityCount>) -> RuleInput {
        RuleInput { contact, activity }
    }
}

impl ScorerInput {
    pub fn new(contact: Contact, event: Event, activity: Vec<ActivityCount>) -> ScorerInput {
        ScorerInput {
            contact,
            event,
            activity,
        }
    }
}

impl Message {
    /// The metadata entry `key` (contact id, journey, step, variant).
    pub fn meta(&self, key: &str) -> Option<&Value> {
        lookup(&self.metadata, key)
    }
}

impl Callback {
    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl PluginError {
    pub fn new(code: &str, message: impl Into<String>) -> PluginError {
        PluginError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A configuration value is missing or wrong.
    pub fn bad_config(key: &str, why: &str) -> PluginError {
        PluginError::new("bad-config", format!("configuration `{key}` {why}"))
    }
}

impl ScoreChange {
    /// No change.
    pub fn none() -> ScoreChange {
        ScoreChange {
            delta: 0,
            reasons: Vec::new(),
        }
    }

    /// Adds `delta` points with a reason; zero adds nothing.
    pub fn add(&mut self, delta: i64, reason: impl Into<String>) {
        if delta != 0 {
            self.delta = self.delta.saturating_add(delta);
            self.reasons.push(reason.into());
        }
    }
}
