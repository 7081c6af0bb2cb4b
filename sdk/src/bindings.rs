//! Bindings generated from the one copy of the WIT: `sdk/wit` is a symlink
//! to the repository's `wit/`, and `cargo package` stores the files it
//! points to, so the published crate builds on its own. The SDK builds
//! against the newest version, `wit/since_v0.2.0`; the host still loads
//! plugins built against older ones.
//!
//! Each world gets its own module; the `types` and `host` interfaces are
//! generated once (with the segment-rule world) and shared by the other two
//! through `with`. The export macros are public so that `export_*!` in a
//! plugin crate can expand them; plugin crates never name anything here.

#![allow(missing_docs, unsafe_code, clippy::all)]

pub mod segment_rule {
    wit_bindgen::generate!({
        path: "wit/since_v0.2.0",
        world: "nachfass:plugin/segment-rule@0.2.0",
        runtime_path: "::nachfass_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_segment_rule",
        default_bindings_module: "::nachfass_sdk::__private::bindings::segment_rule",
        additional_derives: [PartialEq],
        generate_unused_types: true,
    });
}

pub mod scorer {
    wit_bindgen::generate!({
        path: "wit/since_v0.2.0",
        world: "nachfass:plugin/scorer@0.2.0",
        runtime_path: "::nachfass_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_scorer",
        default_bindings_module: "::nachfass_sdk::__private::bindings::scorer",
        with: {
            "nachfass:plugin/types@0.2.0": super::segment_rule::nachfass::plugin::types,
            "nachfass:plugin/host@0.2.0": super::segment_rule::nachfass::plugin::host,
        },
    });
}

pub mod channel {
    wit_bindgen::generate!({
        path: "wit/since_v0.2.0",
        world: "nachfass:plugin/channel@0.2.0",
        runtime_path: "::nachfass_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_channel",
        default_bindings_module: "::nachfass_sdk::__private::bindings::channel",
        with: {
            "nachfass:plugin/types@0.2.0": super::segment_rule::nachfass::plugin::types,
            "nachfass:plugin/host@0.2.0": super::segment_rule::nachfass::plugin::host,
        },
        generate_all,
    });
}
