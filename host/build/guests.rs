//! The one guest build, shared by `host/build.rs` (which embeds the demo's
//! plugins) and `tests/build.rs` (which names every component for the
//! tests): both run the same command into the same `target/guest`, so
//! whichever runs second finds everything fresh.

use std::path::Path;
use std::process::Command;

/// Builds every crate of the `plugins/` workspace under `root` for
/// wasm32-wasip2 (release) into `root/target/guest`, and returns cargo's
/// JSON messages. Panics with what to do when the build fails.
pub fn build_guests(root: &Path) -> String {
    for watched in ["plugins", "sdk/src", "sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .current_dir(root.join("plugins"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(root.join("target/guest"));
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
            "building the guest crates in plugins/ for wasm32-wasip2 failed (is `rustup target add wasm32-wasip2` done?)"
        };
        panic!("{hint}\n{stderr}");
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}
