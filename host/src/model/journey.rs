//! A journey as operators write it: JSON with a trigger, steps and goals.
//!
//! ```json
//! { "name": "cart-abandonment", "purpose": "marketing",
//!   "trigger": { "event": { "kind": "cart.abandoned" } },
//!   "goals": [ { "event": "purchase" } ],
//!   "steps": [
//!     { "id": "wait-1h", "type": "wait", "duration": "1h" },
//!     { "id": "reminder", "type": "send", "binding": "email",
//!       "template": { "subject": "Ihr Warenkorb", "text": "Hallo {{ contact.attributes.first_name }}" } } ] }
//! ```
//!
//! A step goes on to `next`, or to the step after it in the list; after
//! the last step the run is completed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::model::status::Purpose;
use crate::model::{Fields, Value};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JourneyDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Marketing needs consent and obeys frequency caps and unsubscribes;
    /// transactional messages (order confirmation) do not.
    #[serde(default)]
    pub purpose: Purpose,
    pub trigger: Trigger,
    #[serde(default)]
    pub re_entry: ReEntry,
    /// Events that end a run as a conversion.
    #[serde(default)]
    pub goals: Vec<Goal>,
    /// When sends may go out; a send step may set its own.
    #[serde(default)]
    pub send_window: Option<SendWindow>,
    /// How the journey is measured: response events, attribution window,
    /// cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpi: Option<KpiSettings>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KpiSettings {
    /// Events that count as a response to a message (`reply`,
    /// `meeting.booked`).
    #[serde(default)]
    pub response_events: Vec<String>,
    /// How long after a message a response or goal is credited to it, and
    /// after entry a goal counts as a conversion.
    #[serde(default = "seven_days")]
    pub attribution_window: Duration,
    /// Fixed cost of the journey (production, tools), for ROI.
    #[serde(default)]
    pub cost: f64,
    /// Cost of each message handed to a provider.
    #[serde(default)]
    pub cost_per_message: f64,
}

impl Default for KpiSettings {
    fn default() -> Self {
        KpiSettings {
            response_events: Vec::new(),
            attribution_window: seven_days(),
            cost: 0.0,
            cost_per_message: 0.0,
        }
    }
}

fn seven_days() -> Duration {
    Duration::hours(7 * 24)
}

/// What enrols a contact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A touchpoint of this kind whose properties include `where`.
    Event {
        kind: String,
        #[serde(default, rename = "where")]
        #[schema(inline)]
        filter: Fields,
    },
    /// `segment.entered` for this segment.
    SegmentEntered(String),
    /// `segment.left` for this segment.
    SegmentLeft(String),
    /// `stage.changed` to this stage.
    StageChanged(String),
    /// The contact's score is at least this after a touchpoint.
    ScoreAtLeast(i64),
    /// Only `POST /v1/journeys/{name}/enroll`.
    Manual,
    /// A recurring sweep: at each cron time, every contact matching
    /// `condition` (everyone without one) is enrolled.
    Schedule {
        /// Six fields with seconds: `0 0 8 * * Mon` is Mondays 08:00.
        cron: String,
        #[serde(default)]
        timezone: Option<String>,
        #[serde(default)]
        condition: Option<Condition>,
    },
}

/// May a contact enter again?
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReEntry {
    /// Once per contact, ever.
    Never,
    /// Again once the previous run has ended.
    #[default]
    AfterExit,
    /// Again once this long has passed since the previous run started.
    After(Duration),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub event: String,
    #[serde(default, rename = "where")]
    #[schema(inline)]
    pub filter: Fields,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Renders a template and hands it to a channel binding, after the
    /// policy gate (consent, suppression, send window, frequency cap).
    Send {
        id: String,
        binding: String,
        #[serde(default)]
        template: Option<Template>,
        /// A/B variants; a contact always gets the same one.
        #[serde(default)]
        variants: Vec<Variant>,
        #[serde(default)]
        send_window: Option<SendWindow>,
        /// Compare the variants and, if asked, promote a significant winner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ab_test: Option<AbTest>,
        #[serde(default)]
        next: Option<String>,
    },
    Wait {
        id: String,
        duration: Duration,
        #[serde(default)]
        next: Option<String>,
    },
    /// Waits for an event of `event` kind (with `where` properties) up to
    /// `timeout`, then goes on to `on_event` or `on_timeout`.
    WaitUntil {
        id: String,
        event: String,
        #[serde(default, rename = "where")]
        #[schema(inline)]
        filter: Fields,
        timeout: Duration,
        #[serde(default)]
        on_event: Option<String>,
        #[serde(default)]
        on_timeout: Option<String>,
    },
    Branch {
        id: String,
        condition: Condition,
        then: String,
        #[serde(rename = "else")]
        otherwise: String,
    },
    SetAttribute {
        id: String,
        name: String,
        value: Value,
        #[serde(default)]
        next: Option<String>,
    },
    Exit {
        id: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

impl Step {
    pub fn id(&self) -> &str {
        match self {
            Step::Send { id, .. }
            | Step::Wait { id, .. }
            | Step::WaitUntil { id, .. }
            | Step::Branch { id, .. }
            | Step::SetAttribute { id, .. }
            | Step::Exit { id, .. } => id,
        }
    }

    /// The steps this one can go on to; `None` is "the step after me".
    pub fn targets(&self) -> Vec<Option<&str>> {
        match self {
            Step::Send { next, .. } | Step::Wait { next, .. } | Step::SetAttribute { next, .. } => {
                vec![next.as_deref()]
            }
            Step::WaitUntil {
                on_event,
                on_timeout,
                ..
            } => vec![on_event.as_deref(), on_timeout.as_deref()],
            Step::Branch {
                then, otherwise, ..
            } => vec![Some(then), Some(otherwise)],
            Step::Exit { .. } => vec![],
        }
    }

    /// Whether the run pauses here, so a loop through this step is not
    /// endless.
    pub fn waits(&self) -> bool {
        matches!(self, Step::Wait { .. } | Step::WaitUntil { .. })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
// `Template` in the document is a ready-made journey (`api::journeys`).
#[schema(as = MessageTemplate)]
pub struct Template {
    #[serde(default)]
    pub subject: Option<String>,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Relative share of contacts; 0 stops a variant.
    #[serde(default = "one")]
    pub weight: u32,
    pub template: Template,
}

fn one() -> u32 {
    1
}

/// A test on the contact, for branches and sweeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    InSegment(String),
    ScoreAtLeast(i64),
    /// The stage is this one or later (subscriber → lead → mql → sql → customer).
    StageAtLeast(String),
    Attribute {
        name: String,
        /// Equal to this value; without it, the attribute merely exists.
        #[serde(default)]
        equals: Option<Value>,
    },
    /// An event of this kind within the last `within`.
    HadEvent {
        kind: String,
        within: Duration,
    },
    /// No touchpoint of the contact's own for at least this long.
    InactiveFor(Duration),
    #[schema(no_recursion)]
    All(Vec<Condition>),
    #[schema(no_recursion)]
    Any(Vec<Condition>),
    #[schema(no_recursion)]
    Not(Box<Condition>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendWindow {
    #[serde(default = "weekdays")]
    pub days: Vec<Weekday>,
    /// Local time `HH:MM` the window opens.
    #[serde(default = "eight")]
    pub start: LocalTime,
    /// Local time `HH:MM` the window closes.
    #[serde(default = "eighteen")]
    pub end: LocalTime,
    /// For contacts without a time zone of their own.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub outside: WhenBlocked,
}

impl Default for SendWindow {
    /// Business hours: Monday to Friday, 08:00 to 18:00.
    fn default() -> Self {
        SendWindow {
            days: weekdays(),
            start: eight(),
            end: eighteen(),
            timezone: None,
            outside: WhenBlocked::Defer,
        }
    }
}

fn weekdays() -> Vec<Weekday> {
    use Weekday::*;
    vec![Mon, Tue, Wed, Thu, Fri]
}

fn eight() -> LocalTime {
    LocalTime(8 * 60)
}

fn eighteen() -> LocalTime {
    LocalTime(18 * 60)
}

/// Defer the send until allowed, or skip it and go on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenBlocked {
    #[default]
    Defer,
    Skip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub fn from_chrono(day: chrono::Weekday) -> Weekday {
        use chrono::Weekday as C;
        match day {
            C::Mon => Weekday::Mon,
            C::Tue => Weekday::Tue,
            C::Wed => Weekday::Wed,
            C::Thu => Weekday::Thu,
            C::Fri => Weekday::Fri,
            C::Sat => Weekday::Sat,
            C::Sun => Weekday::Sun,
        }
    }
}

/// Minutes after local midnight, written `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalTime(pub u32);

impl TryFrom<String> for LocalTime {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = || format!("`{text}` is not a time of day; write HH:MM, e.g. 08:00");
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 24 || m > 59 || (h == 24 && m > 0) {
            return Err(bad());
        }
        Ok(LocalTime(h * 60 + m))
    }
}

impl From<LocalTime> for String {
    fn from(time: LocalTime) -> String {
        time.to_string()
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A span of time written `90s`, `30m`, `1h`, `14d` or `2w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    pub millis: i64,
}

impl Duration {
    pub const fn hours(h: i64) -> Duration {
        Duration {
            millis: h * 3_600_000,
        }
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("`{text}` is not a duration; write a number and s, m, h, d or w, e.g. 24h");
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        if number == 0 || number > 10 * 366 * 86_400_000 / unit_ms {
            return Err(format!(
                "`{text}` must be more than zero and at most ten years"
            ));
        }
        Ok(Duration {
            millis: number * unit_ms,
        })
    }
}

impl TryFrom<String> for Duration {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Duration> for String {
    fn from(duration: Duration) -> String {
        duration.to_string()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (7 * 86_400_000, "w"),
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
        ];
        for (size, unit) in units {
            if self.millis % size == 0 {
                return write!(f, "{}{unit}", self.millis / size);
            }
        }
        write!(f, "{}s", self.millis / 1_000)
    }
}

/// Whether `properties` hold every key of `filter` with the same value.
/// A type written as a string in JSON, for the OpenAPI document: the
/// derive would describe the struct, not the text serde reads and writes.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $pattern:literal, $description:literal) => {
        impl utoipa::__dev::ComposeSchema for $ty {
            fn compose(
                _generics: Vec<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
            ) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some($pattern))
                    .description(Some($description))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {
            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
        }
    };
}

string_schema!(
    Duration,
    "Duration",
    "^[0-9]+[smhdw]$",
    "A number and a unit: s, m, h, d or w (`90s`, `24h`, `2w`); more than zero, at most ten years"
);
string_schema!(
    LocalTime,
    "LocalTime",
    "^[0-9]{1,2}:[0-9]{2}$",
    "A time of day, HH:MM (`08:00`)"
);

pub fn properties_match(filter: &Fields, properties: &Fields) -> bool {
    filter
        .iter()
        .all(|(key, value)| properties.get(key) == Some(value))
}

impl JourneyDef {
    /// Parses a definition; the error names the field that is wrong
    /// (`steps[2].duration: ...`).
    pub fn from_json(json: &[u8]) -> Result<JourneyDef, String> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
    }

    pub fn step(&self, id: &str) -> Option<(usize, &Step)> {
        self.steps.iter().enumerate().find(|(_, s)| s.id() == id)
    }

    /// Where a step goes when `target` is `None`: the next in the list,
    /// or the end of the run.
    pub fn resolve(&self, index: usize, target: Option<&str>) -> Option<String> {
        match target {
            Some(target) => Some(target.to_owned()),
            None => self.steps.get(index + 1).map(|s| s.id().to_owned()),
        }
    }
}

/// What counts as success; the denominator is always the variant's
/// delivered messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AbMetric {
    Opened,
    #[default]
    Clicked,
    Responded,
    Converted,
}

/// `"ab_test"` on a send step with variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbTest {
    #[serde(default)]
    pub metric: AbMetric,
    /// Delivered messages each compared variant needs first.
    #[serde(default = "hundred")]
    pub min_sample: i64,
    /// 0.95: significant when p < 0.05 (two-sided).
    #[serde(default = "ninety_five")]
    pub confidence: f64,
    /// Send only the winner from then on (a new journey version).
    #[serde(default)]
    pub auto_promote: bool,
}

fn hundred() -> i64 {
    100
}

fn ninety_five() -> f64 {
    0.95
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write() {
        assert_eq!("90s".parse::<Duration>().unwrap().millis, 90_000);
        assert_eq!("24h".parse::<Duration>().unwrap().to_string(), "1d");
        assert_eq!("14d".parse::<Duration>().unwrap().to_string(), "2w");
        for bad in ["", "h", "1", "1y", "-1h", "0m", "99999w"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_definition_error_names_the_field() {
        let json = br#"{"name":"x","trigger":"manual","steps":[
            {"id":"a","type":"wait","duration":"1h"},
            {"id":"b","type":"wait","duration":"soon"}]}"#;
        let err = JourneyDef::from_json(json).unwrap_err();
        // Internally tagged steps report the step, not the field.
        assert!(err.starts_with("steps[1]:"), "{err}");
        assert!(err.contains("not a duration"), "{err}");
        let json = br#"{"name":"x","trigger":"manual","steps":[{"id":"a","type":"wait","duration":"1h","nxt":"a"}]}"#;
        let err = JourneyDef::from_json(json).unwrap_err();
        assert!(err.contains("unknown field `nxt`"), "{err}");
        let json =
            br#"{"name":"x","trigger":{"event":{"kind":"signup"}},"steps":[],"color":"red"}"#;
        let err = JourneyDef::from_json(json).unwrap_err();
        assert!(err.contains("unknown field `color`"), "{err}");
    }

    #[test]
    fn send_windows_default_to_business_hours() {
        let window: SendWindow = serde_json::from_str("{}").unwrap();
        assert_eq!(window, SendWindow::default());
        assert_eq!(window.start.to_string(), "08:00");
        let err = serde_json::from_str::<SendWindow>(r#"{"start":"25:00"}"#).unwrap_err();
        assert!(err.to_string().contains("HH:MM"), "{err}");
    }
}
