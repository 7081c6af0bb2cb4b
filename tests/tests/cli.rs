//! The `nachfass plugin` commands, run in-process on real files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nachfass_tests::{guests, nachfass_cli};

fn write(dir: &Path, name: &str, json: serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn check_prints_world_imports_exports_and_manifest() {
    let file = guests::ENGAGEMENT.packed();
    let (result, out) = nachfass_cli(&["plugin", "check", file.to_str().unwrap()]).await;
    result.unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["plugin"], "engagement@0.1.0");
    assert_eq!(report["world"], "scorer");
    assert_eq!(report["api"], "0.2.0");
    // Built with the SDK, against the newest WIT: the batch export too.
    assert_eq!(
        report["exports"],
        serde_json::json!(["on-event", "on-event-batch", "on-profile"])
    );
    assert!(
        report["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "nachfass:plugin/host@0.2.0")
    );
    assert_eq!(report["manifest"]["config"][0]["key"], "points");
}

#[tokio::test]
async fn check_says_precisely_why_a_file_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.wasm");
    std::fs::copy(guests::HELLO.wasm, &raw).unwrap();
    let (result, _) = nachfass_cli(&["plugin", "check", raw.to_str().unwrap()]).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("no manifest") && message.contains("nachfass plugin build"),
        "{message}"
    );
    assert!(
        message.contains("no `raw.wasm.manifest.json` beside it"),
        "the exact sidecar name: {message}"
    );

    let corrupt = dir.path().join("corrupt.wasm");
    let mut bytes = std::fs::read(guests::HELLO.packed()).unwrap();
    bytes[200..400].fill(0xff);
    std::fs::write(&corrupt, bytes).unwrap();
    let (result, _) = nachfass_cli(&["plugin", "check", corrupt.to_str().unwrap()]).await;
    let error = result.unwrap_err();
    assert_eq!(error.exit_code(), 1);
    assert!(error.to_string().contains("is unusable"), "{error}");
}

#[tokio::test]
async fn test_runs_once_in_the_sandbox_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let contact = write(
        dir.path(),
        "c.json",
        serde_json::json!({ "id": "c1", "email": "ada@acme.example" }),
    );
    let event = write(
        dir.path(),
        "e.json",
        serde_json::json!({ "id": "e1", "contact_id": "c1", "kind": "page.visited", "at": 1, "properties": { "url": "/pricing" } }),
    );
    let file = guests::ENGAGEMENT.packed();
    let args = [
        "plugin",
        "test",
        file.to_str().unwrap(),
        "--contact",
        &contact,
        "--event",
        &event,
        "--config",
        "pricing_points=15",
    ];
    let (result, out) = nachfass_cli(&args).await;
    result.unwrap();
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["function"], "on-event");
    assert_eq!(answer["result"]["ok"]["delta"], 15);
    // The instructions the call used, well inside the default budget.
    let fuel = answer["fuel"].as_u64().unwrap();
    assert!(fuel > 0 && fuel < 11_000_000, "{answer}");

    // The plugin's own error: printed, exit code 2.
    let rule = guests::ATTRIBUTE_MATCH.packed();
    let (result, out) = nachfass_cli(&[
        "plugin",
        "test",
        rule.to_str().unwrap(),
        "--contact",
        &contact,
        "--config",
        "op=eq",
    ])
    .await;
    assert_eq!(result.unwrap_err().exit_code(), 2);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["result"]["error"]["code"], "bad-config");

    // A trap: no JSON, exit code 1 and the limit in the message.
    let looping = guests::ENDLESS_LOOP.packed();
    let (result, out) = nachfass_cli(&[
        "plugin",
        "test",
        looping.to_str().unwrap(),
        "--contact",
        &contact,
        "--event",
        &event,
    ])
    .await;
    let error = result.unwrap_err();
    assert_eq!((error.exit_code(), out.as_str()), (1, ""));
    assert!(
        error
            .to_string()
            .contains("endless-loop@0.1.0: CPU budget of 11000000 instructions exceeded"),
        "{error}"
    );

    // Bad input files say which file and what is wrong.
    let bad = write(
        dir.path(),
        "bad.json",
        serde_json::json!({ "id": "c", "mail": "x" }),
    );
    let (result, _) =
        nachfass_cli(&["plugin", "test", file.to_str().unwrap(), "--contact", &bad]).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("bad.json") && message.contains("unknown field `mail`"),
        "{message}"
    );
}

/// `cargo package -p nachfass-sdk`, unpacked into `dir`: the crate as
/// crates.io would serve it.
fn packaged_sdk(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = dir.join("package-target");
    let packaged = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "package",
            "-p",
            "nachfass-sdk",
            "--no-verify",
            "--allow-dirty",
        ])
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        packaged.status.success(),
        "{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    let name = format!("nachfass-sdk-{}", env!("CARGO_PKG_VERSION"));
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(target.join(format!("package/{name}.crate")))
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(unpacked.success());
    dir.join(name)
}

/// Every file under `dir`, relative to it, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                all.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    all.sort();
    all
}

#[tokio::test]
async fn the_packaged_sdk_carries_the_wit_and_builds_a_scaffold_outside_the_repository() {
    // A temp dir, not under the repository: nothing can reach ../wit.
    let dir = tempfile::tempdir().unwrap();
    let sdk = packaged_sdk(dir.path());
    let repo_wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    assert_eq!(
        files(&sdk.join("wit")),
        files(&repo_wit),
        "the packaged WIT differs from wit/"
    );

    // By default the scaffold names the published SDK, never a path.
    let (result, _) = nachfass_cli(&[
        "plugin",
        "new",
        "scorer",
        "published",
        "--dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    result.unwrap();
    let cargo_toml = std::fs::read_to_string(dir.path().join("published/Cargo.toml")).unwrap();
    assert!(
        cargo_toml.contains("nachfass-sdk = \"0.1\"") && !cargo_toml.contains("path ="),
        "{cargo_toml}"
    );

    let (result, _) = nachfass_cli(&[
        "plugin",
        "new",
        "scorer",
        "download-points",
        "--dir",
        dir.path().to_str().unwrap(),
        "--sdk",
        sdk.to_str().unwrap(),
    ])
    .await;
    result.unwrap();
    let crate_dir = dir.path().join("download-points");
    let out_file = dir.path().join("dp.wasm");
    // Shares compiled dependencies with the test suite's guest build.
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest");
    let (result, out) = nachfass_cli(&[
        "plugin",
        "build",
        crate_dir.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
        "--target-dir",
        target_dir.to_str().unwrap(),
    ])
    .await;
    result.unwrap();
    assert!(out.starts_with("download-points@0.1.0 → "), "{out}");

    let contact = write(dir.path(), "c.json", serde_json::json!({ "id": "c1" }));
    let event = write(
        dir.path(),
        "e.json",
        serde_json::json!({ "id": "e-9", "contact_id": "c1", "kind": "download", "at": 1 }),
    );
    let (result, out) = nachfass_cli(&[
        "plugin",
        "test",
        out_file.to_str().unwrap(),
        "--contact",
        &contact,
        "--event",
        &event,
        "--config",
        "points=7",
        "--logs",
    ])
    .await;
    result.unwrap();
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["plugin"], "download-points@0.1.0");
    assert_eq!(answer["result"]["ok"]["delta"], 7);
    assert_eq!(
        answer["logs"],
        serde_json::json!([{ "level": "debug", "message": "e-9 scored 7" }])
    );

    let (again, _) = nachfass_cli(&[
        "plugin",
        "new",
        "scorer",
        "download-points",
        "--dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(again.unwrap_err().to_string().contains("already exists"));
    let (bad, _) = nachfass_cli(&[
        "plugin",
        "new",
        "scorer",
        "Bad Name",
        "--dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("not a valid plugin name")
    );
    let (bad, _) = nachfass_cli(&[
        "plugin",
        "new",
        "scorer",
        "nowhere",
        "--dir",
        dir.path().to_str().unwrap(),
        "--sdk",
        dir.path().join("missing").to_str().unwrap(),
    ])
    .await;
    assert!(bad.unwrap_err().to_string().contains("--sdk"));
    assert!(!dir.path().join("nowhere").exists());
}

#[tokio::test]
async fn embed_manifest_makes_a_component_of_any_toolchain_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    std::fs::copy(guests::HELLO.wasm, &file).unwrap();
    let sidecar = dir.path().join("hello.wasm.manifest.json");

    // A broken manifest is refused with the reason; the file stays as it was.
    std::fs::write(
        &sidecar,
        r#"{"name": "hello", "version": "one", "world": "segment-rule"}"#,
    )
    .unwrap();
    let (result, _) = nachfass_cli(&["plugin", "embed-manifest", file.to_str().unwrap()]).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("hello.wasm.manifest.json") && message.contains("semantic version"),
        "{message}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), guests::HELLO.bytes());

    std::fs::write(
        &sidecar,
        serde_json::to_vec(&guests::HELLO.manifest()).unwrap(),
    )
    .unwrap();
    let (result, out) = nachfass_cli(&["plugin", "embed-manifest", file.to_str().unwrap()]).await;
    result.unwrap();
    assert!(out.starts_with("hello@0.1.0 → "), "{out}");
    // The sidecar is no longer needed: the manifest travels inside.
    std::fs::remove_file(&sidecar).unwrap();
    let (result, out) = nachfass_cli(&["plugin", "check", file.to_str().unwrap()]).await;
    result.unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["plugin"], "hello@0.1.0");
    assert_eq!(report["world"], "segment-rule");
}

#[tokio::test]
async fn wit_writes_the_package_this_binary_speaks() {
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = nachfass_cli(&["plugin", "wit", dir.path().to_str().unwrap()]).await;
    result.unwrap();
    let repo_wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    assert_eq!(files(dir.path()), files(&repo_wit));
}

#[tokio::test]
async fn demo_loads_contacts_with_scores_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let plugins = dir.path().join("plugins.d");
    let (result, out) = nachfass_cli(&[
        "demo",
        "--contacts",
        "40",
        "--days",
        "10",
        "--database",
        &database,
        "--plugins-dir",
        plugins.to_str().unwrap(),
        "--no-serve",
    ])
    .await;
    result.unwrap();
    assert!(out.contains("40 contacts"), "{out}");
    assert!(out.contains("demo data loaded into"), "{out}");
    let store = nachfass::store::Store::connect(&database).await.unwrap();
    let contacts = store
        .list_contacts(&nachfass::store::ContactFilter {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(contacts.len(), 40);
    assert!(
        contacts.iter().filter(|c| c.score > 0).count() > 20,
        "most contacts have a score"
    );
    assert!(
        contacts.iter().any(|c| c.stage != "subscriber"),
        "some moved on in the funnel"
    );
    assert!(store.segment_size("software").await.unwrap() > 0);
    assert!(
        std::fs::read_dir(&plugins).unwrap().count() >= 5,
        "the example plugins are kept for `serve`"
    );
}
