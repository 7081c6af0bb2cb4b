//! Host bindings, one set per WIT version the host speaks, generated from
//! the versions kept side by side in `wit/since_v*` (Zed's pattern): a
//! component built against any of them loads, and which one it is shows
//! in what it imports (`nachfass:plugin/host@0.1.0` or `@0.2.0`) and
//! exports (`on-event-batch` since 0.2.0).
//!
//! [`latest`] owns the data types; older versions reuse them through
//! `with`, which works because a version only ever adds records (wasmtime
//! checks a component's types by structure, not by package). Each version
//! keeps its own `host` and `mail` interfaces, since the linker offers them
//! under their versioned names. Exports are async so a call can be cut off
//! by the epoch deadline and the wall-clock timeout while the host keeps
//! serving.

/// `nachfass:plugin@0.2.0`: adds `scorer-input` and the scorer's
/// `on-event-batch`.
pub mod since_v0_2_0 {
    pub mod segment_rule {
        wasmtime::component::bindgen!({
            path: "../wit/since_v0.2.0",
            world: "nachfass:plugin/segment-rule",
            exports: { default: async },
        });
    }

    pub mod scorer {
        wasmtime::component::bindgen!({
            path: "../wit/since_v0.2.0",
            world: "nachfass:plugin/scorer",
            exports: { default: async },
            with: {
                "nachfass:plugin/types": super::segment_rule::nachfass::plugin::types,
                "nachfass:plugin/host": super::segment_rule::nachfass::plugin::host,
            },
        });
    }

    pub mod channel {
        wasmtime::component::bindgen!({
            path: "../wit/since_v0.2.0",
            world: "nachfass:plugin/channel",
            exports: { default: async },
            // Sending mail waits on the network: the call's timeout still holds.
            imports: { "nachfass:plugin/mail.send": async },
            with: {
                "nachfass:plugin/types": super::segment_rule::nachfass::plugin::types,
                "nachfass:plugin/host": super::segment_rule::nachfass::plugin::host,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            },
        });
    }
}

/// `nachfass:plugin@0.1.0`, the first version: components built against it
/// (componentize-py and componentize-js plugins among them) keep working.
pub mod since_v0_1_0 {
    pub mod segment_rule {
        wasmtime::component::bindgen!({
            path: "../wit/since_v0.1.0",
            world: "nachfass:plugin/segment-rule",
            exports: { default: async },
            with: {
                "nachfass:plugin/types": crate::runtime::bindings::latest::types,
            },
        });
    }

    pub mod scorer {
        wasmtime::component::bindgen!({
            path: "../wit/since_v0.1.0",
            world: "nachfass:plugin/scorer",
            exports: { default: async },
            with: {
                "nachfass:plugin/types": crate::runtime::bindings::latest::types,
                "nachfass:plugin/host": super::segment_rule::nachfass::plugin::host,
            },
        });
    }

    pub mod channel {
        wasmtime::component::bindgen!({
            path: "../wit/since_v0.1.0",
            world: "nachfass:plugin/channel",
            exports: { default: async },
            imports: { "nachfass:plugin/mail.send": async },
            with: {
                "nachfass:plugin/types": crate::runtime::bindings::latest::types,
                "nachfass:plugin/host": super::segment_rule::nachfass::plugin::host,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            },
        });
    }

    pub use channel::nachfass::plugin::mail;
    pub use segment_rule::nachfass::plugin::host;
}

/// The newest version: its types are the ones the host converts to and
/// from, its worlds the ones the SDK builds.
pub mod latest {
    pub use super::since_v0_2_0::channel::nachfass::plugin::mail;
    pub use super::since_v0_2_0::segment_rule::nachfass::plugin::host;
    pub use super::since_v0_2_0::segment_rule::nachfass::plugin::types;
    pub use super::since_v0_2_0::{channel, scorer, segment_rule};
}

pub use latest::{channel, host, mail, scorer, segment_rule, types};
