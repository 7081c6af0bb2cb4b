//! The host's own types for what plugins see: contacts, events, values.
//!
//! These are the JSON shapes of the API and the CLI; the runtime converts
//! them to the WIT types at the plugin boundary.

pub mod journey;
pub mod status;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A typed attribute or property value.
///
/// In JSON: `null`, a boolean, an integer, a float, a string, a list of
/// strings, or `{"timestamp": <unix ms>}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    Timestamp(i64),
    Texts(Vec<String>),
}

impl TryFrom<serde_json::Value> for Value {
    type Error = String;

    fn try_from(json: serde_json::Value) -> Result<Self, Self::Error> {
        use serde_json::Value as J;
        Ok(match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Boolean(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Float(n.as_f64().ok_or("number out of range")?),
            },
            J::String(s) => Value::Text(s),
            J::Array(items) => Value::Texts(
                items
                    .into_iter()
                    .map(|item| match item {
                        J::String(s) => Ok(s),
                        other => Err(format!("lists may only hold strings, found {other}")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(map) => match (map.len(), map.get("timestamp")) {
                (1, Some(J::Number(n))) if n.is_i64() => {
                    Value::Timestamp(n.as_i64().ok_or("timestamp out of range")?)
                }
                _ => {
                    return Err(
                        "objects are not values; use {\"timestamp\": <unix ms>} for a time".into(),
                    );
                }
            },
        })
    }
}

impl From<Value> for serde_json::Value {
    fn from(value: Value) -> Self {
        use serde_json::Value as J;
        match value {
            Value::Null => J::Null,
            Value::Boolean(b) => J::Bool(b),
            Value::Integer(i) => J::from(i),
            Value::Float(f) => J::from(f),
            Value::Text(s) => J::String(s),
            Value::Timestamp(t) => serde_json::json!({ "timestamp": t }),
            Value::Texts(items) => J::from(items),
        }
    }
}

/// The schema of [`Value`] in the OpenAPI document: any of its JSON forms.
/// Written by hand because serde reads it through `serde_json::Value`;
/// `ComposeSchema` is what utoipa's derives use for a field's type (and
/// gives `PartialSchema`). Fields of type [`Fields`] say `#[schema(inline)]`:
/// an alias has no schema name of its own.
impl utoipa::__dev::ComposeSchema for Value {
    fn compose(
        _generics: Vec<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
    ) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder,
            SchemaFormat, Type,
        };
        let of = |kind: Type| ObjectBuilder::new().schema_type(kind);
        let int64 =
            || of(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
        AnyOfBuilder::new()
            .item(of(Type::Null))
            .item(of(Type::Boolean))
            .item(int64())
            .item(of(Type::Number))
            .item(of(Type::String))
            .item(ArrayBuilder::new().items(of(Type::String)))
            .item(
                of(Type::Object)
                    .property("timestamp", int64().description(Some("Unix ms")))
                    .required("timestamp")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            )
            .description(Some(
                "null, a boolean, an integer, a float, a string, a list of strings, or {\"timestamp\": <unix ms>}",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Value {
    fn name() -> std::borrow::Cow<'static, str> {
        "FieldValue".into()
    }
}

pub type Fields = BTreeMap<String, Value>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id in another system (CRM, shop), unique like the email.
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub score: i64,
    #[serde(default = "default_stage")]
    pub stage: String,
    #[serde(default)]
    #[schema(inline)]
    pub attributes: Fields,
    #[serde(default)]
    pub segments: Vec<String>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub last_seen_at: Option<i64>,
}

fn default_stage() -> String {
    "subscriber".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub id: String,
    pub contact_id: String,
    pub kind: String,
    pub at: i64,
    #[serde(default)]
    #[schema(inline)]
    pub properties: Fields,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityCount {
    pub kind: String,
    pub total: u32,
    #[serde(default)]
    pub last_24_hours: u32,
    #[serde(default)]
    pub last_30_days: u32,
    #[serde(default)]
    pub last_at: Option<i64>,
}

/// A rendered message handed to a channel connector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub idempotency_key: String,
    pub to: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    #[schema(inline)]
    pub headers: Fields,
    #[serde(default)]
    #[schema(inline)]
    pub metadata: Fields,
}

/// A plugin's own answer when it declines: bad configuration, missing data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PluginError {
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreChange {
    pub delta: i64,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Email,
    Sms,
    Webhook,
    Audience,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub kind: ChannelKind,
    pub provider: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub provider_id: Option<String>,
}

/// Why a connector could not deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum SendError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
    #[error("rate limited: retry after {0} s")]
    RateLimited(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Delivered,
    SoftBounce,
    HardBounce,
    Complaint,
    Opened,
    Clicked,
    Unsubscribed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryEvent {
    pub message_ref: String,
    pub status: DeliveryStatus,
    pub at: i64,
    pub detail: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_read_and_write_plain_json() {
        let json = r#"{"a":null,"b":true,"c":3,"d":2.5,"e":"x","f":{"timestamp":5},"g":["p","q"]}"#;
        let fields: Fields = serde_json::from_str(json).unwrap();
        assert_eq!(fields["c"], Value::Integer(3));
        assert_eq!(fields["d"], Value::Float(2.5));
        assert_eq!(fields["f"], Value::Timestamp(5));
        assert_eq!(fields["g"], Value::Texts(vec!["p".into(), "q".into()]));
        assert_eq!(serde_json::to_string(&fields).unwrap(), json);
    }

    #[test]
    fn bad_values_say_why() {
        let err = serde_json::from_str::<Fields>(r#"{"a":[1]}"#).unwrap_err();
        assert!(err.to_string().contains("only hold strings"), "{err}");
        let err = serde_json::from_str::<Fields>(r#"{"a":{"x":1}}"#).unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
        let err = serde_json::from_str::<Contact>(r#"{"id":"c","mail":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `mail`"), "{err}");
    }
}
