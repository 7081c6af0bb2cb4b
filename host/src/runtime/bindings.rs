//! Host bindings generated from the one copy of the WIT in `wit/`.
//!
//! The `types` and `host` interfaces are generated once, with the
//! segment-rule world, and shared by the other two worlds through `with`.
//! Exports are async so a call can be cut off by the epoch deadline and the
//! wall-clock timeout while the host keeps serving.

pub mod segment_rule {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "nachfass:plugin/segment-rule",
        exports: { default: async },
    });
}

pub mod scorer {
    wasmtime::component::bindgen!({
        path: "../wit",
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
        path: "../wit",
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

pub use channel::nachfass::plugin::mail;
pub use segment_rule::nachfass::plugin::host;
pub use segment_rule::nachfass::plugin::types;
