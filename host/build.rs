//! Builds the guest crates in `plugins/` for wasm32-wasip2 and embeds the
//! example plugins `nachfass demo` needs into the binary, so the demo runs
//! from the binary alone: no source tree, no cargo.
//!
//! The build is the same command `tests/build.rs` runs, into the same
//! target directory (`target/guest`), so whichever runs second finds
//! everything fresh and the guests are compiled once per change.

#[path = "build/guests.rs"]
mod guests;

use std::fmt::Write as _;
use std::path::PathBuf;

/// The plugins the demo installs, by crate directory under `plugins/`.
const EMBEDDED: [&str; 5] = [
    "scoring/engagement",
    "scoring/b2b-fit",
    "rules/attribute-match",
    "rules/inactive-days",
    "channels/demo-mailbox",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ lies in the workspace")
        .to_path_buf();
    guests::build_guests(&root);
    // `sqlx::migrate!` embeds the migrations, but on stable Rust a new
    // migration file alone would not make cargo build the host again.
    println!("cargo:rerun-if-changed=migrations");
    let plugins = root.join("plugins");
    let target_dir = root.join("target/guest");

    let release = target_dir.join("wasm32-wasip2/release");
    let mut embedded = String::from("&[\n");
    for dir in EMBEDDED {
        let crate_dir = plugins.join(dir);
        let name = dir.rsplit('/').next().expect("has a name");
        let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            wasm.exists(),
            "cargo built no {} for plugins/{dir}",
            wasm.display()
        );
        writeln!(
            embedded,
            "    EmbeddedPlugin {{ crate_dir: {dir:?}, component: include_bytes!({:?}), cargo_toml: include_str!({:?}) }},",
            wasm.display().to_string(),
            crate_dir.join("Cargo.toml").display().to_string(),
        )
        .expect("writing to a String");
    }
    embedded.push(']');
    let generated = format!(
        "/// The example plugins, built from plugins/ with the host.\npub const EMBEDDED: &[EmbeddedPlugin] = {embedded};\n/// `plugins/Cargo.toml`, for the values the crates inherit.\npub const WORKSPACE_TOML: &str = include_str!({:?});\n",
        plugins.join("Cargo.toml").display().to_string()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("embedded.rs");
    std::fs::write(out, generated).expect("OUT_DIR is writable");
}
