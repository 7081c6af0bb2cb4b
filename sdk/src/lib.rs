//! Write nachfass plugins: segment rules, scorers and channel connectors.
//!
//! A plugin is a struct, one trait implementation and one export macro:
//!
//! ```
//! use nachfass_sdk::*;
//!
//! struct HasEmail;
//!
//! impl SegmentRule for HasEmail {
//!     fn matches(_: &Ctx, contact: &Contact, _: &[ActivityCount]) -> Result<bool, PluginError> {
//!         Ok(contact.email.is_some())
//!     }
//! }
//!
//! export_segment_rule!(HasEmail);
//! # fn main() {}
//! ```
//!
//! Build it for `wasm32-wasip2` with `nachfass plugin build`. Test it natively
//! with the helpers in [`testing`], or in the real sandbox with
//! `nachfass plugin test`.

// Lets the generated code name this crate by its public path from inside.
extern crate self as nachfass_sdk;

#[doc(hidden)]
pub mod bindings;
mod ctx;
pub mod http;
mod traits;
mod values;

pub mod testing;

pub use bindings::channel::nachfass::plugin::mail::MailError;
pub use bindings::segment_rule::nachfass::plugin::host::Level;
pub use bindings::segment_rule::nachfass::plugin::types::{
    ActivityCount, Callback, ChannelInfo, ChannelKind, Contact, Delivery, DeliveryEvent,
    DeliveryStatus, Event, Field, Message, PluginError, RuleInput, ScoreChange, ScorerInput,
    SendError, Value,
};
pub use ctx::Ctx;
pub use traits::{Channel, Scorer, SegmentRule};

/// Internals the export macros expand to. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use wit_bindgen;

    /// Lets a batch's inputs go without freeing them one by one. The host
    /// runs every call on a fresh instance and drops its linear memory
    /// afterwards, so each string's `free` would be work thrown away: it
    /// was about a tenth of a batch's cost. Only the guest build skips it.
    pub fn discard_inputs<T>(items: Vec<T>) {
        if cfg!(target_family = "wasm") {
            std::mem::forget(items);
        }
    }
}

/// Exports a [`SegmentRule`] implementation as the plugin's entry point.
#[macro_export]
macro_rules! export_segment_rule {
    ($rule:ty) => {
        const _: () = {
            struct NachfassExport;
            impl $crate::__private::bindings::segment_rule::Guest for NachfassExport {
                fn matches(
                    contact: $crate::Contact,
                    activity: ::std::vec::Vec<$crate::ActivityCount>,
                ) -> ::std::result::Result<bool, $crate::PluginError> {
                    <$rule as $crate::SegmentRule>::matches(
                        &$crate::Ctx::host(),
                        &contact,
                        &activity,
                    )
                }
                fn matches_batch(
                    items: ::std::vec::Vec<$crate::RuleInput>,
                ) -> ::std::result::Result<::std::vec::Vec<bool>, $crate::PluginError> {
                    let answers =
                        <$rule as $crate::SegmentRule>::matches_batch(&$crate::Ctx::host(), &items);
                    $crate::__private::discard_inputs(items);
                    answers
                }
            }
            $crate::__private::bindings::segment_rule::__export_segment_rule!(
                NachfassExport with_types_in $crate::__private::bindings::segment_rule
            );
        };
    };
}

/// Exports a [`Scorer`] implementation as the plugin's entry point.
#[macro_export]
macro_rules! export_scorer {
    ($scorer:ty) => {
        const _: () = {
            struct NachfassExport;
            impl $crate::__private::bindings::scorer::Guest for NachfassExport {
                fn on_event(
                    contact: $crate::Contact,
                    event: $crate::Event,
                    activity: ::std::vec::Vec<$crate::ActivityCount>,
                ) -> ::std::result::Result<$crate::ScoreChange, $crate::PluginError> {
                    <$scorer as $crate::Scorer>::on_event(
                        &$crate::Ctx::host(),
                        &contact,
                        &event,
                        &activity,
                    )
                }
                fn on_event_batch(
                    items: ::std::vec::Vec<$crate::ScorerInput>,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<
                        ::std::result::Result<$crate::ScoreChange, $crate::PluginError>,
                    >,
                    $crate::PluginError,
                > {
                    let answers =
                        <$scorer as $crate::Scorer>::on_event_batch(&$crate::Ctx::host(), &items);
                    $crate::__private::discard_inputs(items);
                    answers
                }
                fn on_profile(
                    contact: $crate::Contact,
                ) -> ::std::result::Result<$crate::ScoreChange, $crate::PluginError> {
                    <$scorer as $crate::Scorer>::on_profile(&$crate::Ctx::host(), &contact)
                }
            }
            $crate::__private::bindings::scorer::__export_scorer!(
                NachfassExport with_types_in $crate::__private::bindings::scorer
            );
        };
    };
}

/// Exports a [`Channel`] implementation as the plugin's entry point.
#[macro_export]
macro_rules! export_channel {
    ($channel:ty) => {
        const _: () = {
            struct NachfassExport;
            impl $crate::__private::bindings::channel::Guest for NachfassExport {
                fn describe() -> $crate::ChannelInfo {
                    <$channel as $crate::Channel>::describe()
                }
                fn deliver(
                    message: $crate::Message,
                ) -> ::std::result::Result<$crate::Delivery, $crate::SendError> {
                    <$channel as $crate::Channel>::deliver(&$crate::Ctx::host(), &message)
                }
                fn parse_callback(
                    request: $crate::Callback,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::DeliveryEvent>,
                    $crate::PluginError,
                > {
                    <$channel as $crate::Channel>::parse_callback(&$crate::Ctx::host(), &request)
                }
            }
            $crate::__private::bindings::channel::__export_channel!(
                NachfassExport with_types_in $crate::__private::bindings::channel
            );
        };
    };
}
