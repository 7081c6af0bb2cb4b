//! The closed sets of states nachfass stores as text: a run's status, an
//! outbox entry's status, a consent's status and a message's purpose. Each
//! is an enum in Rust and the same lowercase word in JSON and in the
//! database, so the columns and the API keep the strings they always had.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word that is not one of an enum's values; the message names the
/// allowed ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` must be {expected}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Declares a text enum: serde, `ToSchema`, `FromStr`, `Display` and the
/// sqlx `Any` encoding, all as the variant's word. sqlx's own derive has no
/// `Any` support for text enums, hence the hand-written three impls.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal, $expected:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        what: $what,
                        value: s.to_owned(),
                        expected: $expected,
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // By hand: the derive does not see serde's renames through the
        // macro's literals and would document the variant names.
        impl utoipa::__dev::ComposeSchema for $name {
            fn compose(
                _generics: Vec<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
            ) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some($name::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl sqlx::Type<sqlx::Any> for $name {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $name {
            fn decode(
                value: sqlx::any::AnyValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

text_enum! {
    /// Where a contact's run of a journey stands.
    RunStatus ("run status", "active, waiting, completed, converted or exited") {
        /// Moving on to its next step.
        Active = "active",
        /// In a wait step, for a time or an event.
        Waiting = "waiting",
        /// Past its last step.
        Completed = "completed",
        /// Ended by a goal event.
        Converted = "converted",
        /// Ended early (unsubscribed, contact deleted, a failed step).
        Exited = "exited",
    }
}

text_enum! {
    /// Where a queued message stands.
    OutboxStatus ("outbox status", "pending, delivered, failed or cancelled") {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// A consent's state for one channel and purpose.
    ConsentStatus ("consent status", "granted, pending or withdrawn") {
        Granted = "granted",
        /// Awaiting the contact's confirmation (double opt-in).
        Pending = "pending",
        Withdrawn = "withdrawn",
        /// A double opt-in nobody confirmed in time; only nachfass sets
        /// it, an operator cannot.
        Expired = "expired",
    }
}

text_enum! {
    /// Why a message is sent. Marketing needs consent and obeys frequency
    /// caps and unsubscribes; transactional messages (an order
    /// confirmation) do not.
    #[derive(Default)]
    Purpose ("consent purpose", "marketing or transactional") {
        #[default]
        Marketing = "marketing",
        Transactional = "transactional",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_serde_and_from_str() {
        for status in RunStatus::ALL {
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), *status);
        }
        assert_eq!(
            serde_json::from_str::<OutboxStatus>("\"cancelled\"").unwrap(),
            OutboxStatus::Cancelled
        );
        assert_eq!(Purpose::default(), Purpose::Marketing);
    }

    #[test]
    fn the_api_document_lists_the_words() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Purpose::schema()).unwrap();
        assert_eq!(
            schema["enum"],
            serde_json::json!(["marketing", "transactional"])
        );
    }

    #[test]
    fn an_unknown_word_names_the_allowed_ones() {
        let err = "maybe".parse::<ConsentStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "consent status `maybe` must be granted, pending or withdrawn"
        );
    }
}
