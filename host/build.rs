//! Builds the guest crates in `plugins/` for wasm32-wasip2 and embeds the
//! example plugins `nachfass demo` needs into the binary, so the demo runs
//! from the binary alone: no source tree, no cargo.
//!
//! The build is the same command `tests/build.rs` runs, into the same
//! target directory (`target/guest`), so whichever runs second finds
//! everything fresh and the guests are compiled once per change.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

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
    let guests = root.join("plugins");
    for watched in ["plugins", "sdk/src", "sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let target_dir = root.join("target/guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .current_dir(&guests)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    let output = match build.output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run `{cargo}` to build the plugins in plugins/: {e}"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("wasm32-wasip2")
            && stderr.contains("target may not be installed")
        {
            "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`, then build again"
        } else {
            "building the example plugins in plugins/ for wasm32-wasip2 failed (is `rustup target add wasm32-wasip2` done?)"
        };
        panic!("{hint}\n{stderr}");
    }

    let release = target_dir.join("wasm32-wasip2/release");
    let mut embedded = String::from("&[\n");
    for dir in EMBEDDED {
        let crate_dir = guests.join(dir);
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
        guests.join("Cargo.toml").display().to_string()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("embedded.rs");
    std::fs::write(out, generated).expect("OUT_DIR is writable");
}
