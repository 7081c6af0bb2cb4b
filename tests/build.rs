//! Builds every guest crate in `plugins/` (example plugins and hostile
//! fixtures) once for wasm32-wasip2, and tells the tests where each
//! component and crate lives. Fails the build when a fixture has no test.

#[path = "../host/build/guests.rs"]
mod guests;

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf();
    let stdout = guests::build_guests(&root);

    let mut constants = String::new();
    let mut names = Vec::new();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(wasm) = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"))
        else {
            continue;
        };
        let crate_dir = Path::new(message["manifest_path"].as_str().expect("cargo says"))
            .parent()
            .expect("has a dir");
        let name = message["target"]["name"]
            .as_str()
            .expect("cargo says")
            .to_uppercase()
            .replace('-', "_");
        constants.push_str(&format!(
            "pub const {name}: Guest = Guest {{ wasm: {wasm:?}, crate_dir: {:?} }};\n",
            crate_dir.display().to_string()
        ));
        names.push(name);
    }
    names.sort();
    constants.push_str(&format!(
        "pub const ALL: &[Guest] = &[{}];\n",
        names.join(", ")
    ));

    // Every fixture must be used by a test, or it rots unnoticed. A test
    // may be a directory of files (`tests/journeys/`).
    let mut tests = String::new();
    let mut dirs = vec![manifest_dir.join("tests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("tests/tests exists")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                tests.push_str(&text);
            }
        }
    }
    for name in &names {
        if !tests.contains(&format!("guests::{name}")) {
            panic!("guest `{name}` is built but no test in tests/tests uses `guests::{name}`");
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, constants).expect("OUT_DIR is writable");
}
