//! Deploying from CI: the CLI against a real `nachfass serve` over HTTP —
//! `plugin upload | activate | rollback | list`, `binding …` and `apply`
//! of a repository's plugins, bindings and journeys, which changes nothing
//! the second time. Refusals (a wrong or missing key, a server that is
//! down, a broken file) are clear and exit non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nachfass::runtime::Manifest;
use nachfass::runtime::manifest::embed;
use nachfass_tests::server::{Server, binary, create_admin_key, free_port, http};
use nachfass_tests::{guests, nachfass_cli, runtime};
use serde_json::{Value, json};

/// One test per dialect: `name::sqlite` and `name::postgres`.
macro_rules! per_dialect {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name("sqlite").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name("postgres").await;
            }
        }
    };
}

/// A server on `dialect` with the shared artifact cache (components the
/// test compiled first load as machine code) and an admin key.
struct Deployed {
    server: Server,
    key: String,
    dir: tempfile::TempDir,
    _temp: nachfass_tests::TempStore,
}

impl Deployed {
    async fn start(dialect: &str) -> Deployed {
        let dir = tempfile::tempdir().unwrap();
        let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        std::fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(&cache, dir.path().join("cache")).unwrap();
        let (database, temp) = nachfass_tests::database(dialect).await;
        let key = create_admin_key(&database);
        let server = Server::start(&database, dir.path(), free_port(), &[]);
        Deployed {
            server,
            key,
            dir,
            _temp: temp,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// `nachfass <args> --server URL --api-key KEY`, in-process.
    async fn cli(&self, args: &[&str]) -> (Result<(), nachfass::cli::CliError>, String) {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--server", &url, "--api-key", &self.key]);
        nachfass_cli(&all).await
    }

    /// Runs a command that must succeed; its output.
    async fn ok(&self, args: &[&str]) -> String {
        let (result, out) = self.cli(args).await;
        assert!(result.is_ok(), "{args:?}: {result:?}\n{out}");
        out
    }

    /// Runs a command that must fail; its error message.
    async fn refused(&self, args: &[&str]) -> String {
        let (result, out) = self.cli(args).await;
        let error = result.expect_err(&format!("{args:?} should fail: {out}"));
        assert_eq!(error.exit_code(), 1, "{error}");
        error.to_string()
    }

    /// GET straight from the API, to check what the CLI claims.
    fn get(&self, path: &str) -> Value {
        let (status, body) = http(self.server.port, "GET", path, Some(&self.key), None);
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

/// Writes `manifest` into a copy of the component at `target` and compiles
/// it into the shared cache, as the server will see it.
async fn plugin_file(wasm: &str, manifest: &Manifest, target: &Path) {
    let bytes = embed(&std::fs::read(wasm).unwrap(), manifest).unwrap();
    std::fs::write(target, &bytes).unwrap();
    runtime().load(bytes, manifest.clone()).await.unwrap();
}

fn engagement(version: &str) -> Manifest {
    let mut manifest = guests::ENGAGEMENT.manifest();
    manifest.version = version.to_owned();
    manifest
}

per_dialect!(plugins_and_bindings_through_the_cli);

async fn plugins_and_bindings_through_the_cli(dialect: &str) {
    let deployed = Deployed::start(dialect).await;
    let files = deployed.dir.path();
    let v1 = files.join("engagement-1.wasm");
    plugin_file(guests::ENGAGEMENT.wasm, &engagement("1.0.0"), &v1).await;
    // Version 2 as a raw component with its manifest beside it, as other
    // toolchains build them: the CLI embeds the manifest.
    let v2 = files.join("engagement-2.wasm");
    std::fs::copy(guests::ENGAGEMENT.wasm, &v2).unwrap();
    std::fs::write(
        files.join("engagement-2.wasm.manifest.json"),
        serde_json::to_vec(&engagement("2.0.0")).unwrap(),
    )
    .unwrap();
    plugin_file(
        guests::ENGAGEMENT.wasm,
        &engagement("2.0.0"),
        &files.join("compiled-2.wasm"),
    )
    .await;
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());

    assert_eq!(
        deployed.ok(&["plugin", "list"]).await.trim(),
        "no plugins installed"
    );
    let out = deployed.ok(&["plugin", "upload", v1]).await;
    assert_eq!(out.trim(), "engagement@1.0.0 created, live");
    let out = deployed.ok(&["plugin", "upload", v1]).await;
    assert_eq!(out.trim(), "engagement@1.0.0 unchanged, live");
    let out = deployed
        .ok(&["plugin", "upload", v2, "--no-activate"])
        .await;
    assert!(
        out.starts_with("engagement@2.0.0 created, not live"),
        "{out}"
    );

    let listed: Value =
        serde_json::from_str(&deployed.ok(&["plugin", "list", "--json"]).await).unwrap();
    let plugin = &listed["plugins"][0];
    assert_eq!(plugin["live"], "1.0.0", "{listed}");
    assert_eq!(plugin["versions"], json!(["1.0.0", "2.0.0"]), "{listed}");
    assert_eq!(
        plugin["sha256"]["1.0.0"].as_str().unwrap().len(),
        64,
        "{listed}"
    );
    let text = deployed.ok(&["plugin", "list"]).await;
    assert!(
        text.contains("engagement\tscorer\tlive 1.0.0\tinstalled 1.0.0, 2.0.0"),
        "{text}"
    );

    let out = deployed
        .ok(&["plugin", "activate", "engagement", "2.0.0"])
        .await;
    assert_eq!(out.trim(), "engagement@2.0.0 is live");
    assert_eq!(deployed.get("/v1/plugins")["plugins"][0]["live"], "2.0.0");
    let out = deployed.ok(&["plugin", "rollback", "engagement"]).await;
    assert_eq!(out.trim(), "engagement@1.0.0 is live");
    assert_eq!(deployed.get("/v1/plugins")["plugins"][0]["live"], "1.0.0");

    // The server's own message, and a non-zero exit.
    let error = deployed
        .refused(&["plugin", "activate", "engagement", "9.9.9"])
        .await;
    assert!(
        error.contains("the server refused (404 not_found)"),
        "{error}"
    );
    assert!(error.contains("9.9.9"), "{error}");

    // Bindings: put creates, the same file again changes nothing, a changed
    // file updates; list and delete.
    let binding = files.join("score.json");
    let write_binding = |max: &str| {
        std::fs::write(
            &binding,
            json!({ "name": "score", "kind": "scorer", "plugin": "engagement", "config": { "max_per_day": max } })
                .to_string(),
        )
        .unwrap();
    };
    write_binding("3");
    let binding_path = binding.to_str().unwrap();
    let out = deployed.ok(&["binding", "put", binding_path]).await;
    assert!(out.starts_with("created      binding  score"), "{out}");
    let tasks = deployed.get("/v1/plugin-tasks")["tasks"]
        .as_array()
        .unwrap()
        .len();
    let out = deployed.ok(&["binding", "put", binding_path]).await;
    assert_eq!(out.trim(), "unchanged    binding  score");
    assert_eq!(
        deployed.get("/v1/plugin-tasks")["tasks"]
            .as_array()
            .unwrap()
            .len(),
        tasks,
        "an equal binding is not rewritten, so nothing is re-scored"
    );
    write_binding("4");
    let out = deployed
        .ok(&["binding", "put", binding_path, "--dry-run"])
        .await;
    assert_eq!(out.trim(), "would update binding  score");
    assert_eq!(
        deployed.get("/v1/bindings")["bindings"][0]["config"]["max_per_day"],
        "3"
    );
    let out = deployed.ok(&["binding", "put", binding_path]).await;
    assert!(out.starts_with("updated      binding  score"), "{out}");
    assert_eq!(
        deployed.get("/v1/bindings")["bindings"][0]["config"]["max_per_day"],
        "4"
    );
    let segment = files.join("score-as-segment.json");
    std::fs::write(
        &segment,
        json!({ "name": "score", "kind": "segment", "plugin": "engagement" }).to_string(),
    )
    .unwrap();
    let error = deployed
        .refused(&["binding", "put", segment.to_str().unwrap()])
        .await;
    assert!(
        error.contains("binding score is a scorer on the server and a segment in the file"),
        "{error}"
    );
    let out = deployed.ok(&["binding", "list"]).await;
    assert_eq!(
        out.trim(),
        "score\tscorer\tengagement\truns engagement@1.0.0"
    );
    let out = deployed.ok(&["binding", "delete", "score"]).await;
    assert_eq!(out.trim(), "binding score deleted");
    assert_eq!(deployed.get("/v1/bindings")["bindings"], json!([]));
    let error = deployed.refused(&["binding", "delete", "score"]).await;
    assert!(error.contains("404 not_found"), "{error}");
}

/// A repository as a CI pipeline keeps it.
fn repository(root: &Path) -> PathBuf {
    let repo = root.join("deploy");
    for folder in ["plugins", "bindings", "journeys"] {
        std::fs::create_dir_all(repo.join(folder)).unwrap();
    }
    write_vip(&repo, "pro");
    write_welcome(&repo, "1d");
    repo
}

fn write_vip(repo: &Path, plan: &str) {
    std::fs::write(
        repo.join("bindings/vip.json"),
        serde_json::to_vec_pretty(&json!({
            "name": "vip", "kind": "segment", "plugin": "attribute-match",
            "config": { "attribute": "plan", "op": "eq", "value": plan }
        }))
        .unwrap(),
    )
    .unwrap();
}

fn write_welcome(repo: &Path, wait: &str) {
    std::fs::write(
        repo.join("journeys/welcome.json"),
        serde_json::to_vec_pretty(&json!({
            "name": "welcome",
            "trigger": { "segment_entered": "vip" },
            "steps": [ { "id": "pause", "type": "wait", "duration": wait } ]
        }))
        .unwrap(),
    )
    .unwrap();
}

per_dialect!(apply_twice_changes_nothing);

async fn apply_twice_changes_nothing(dialect: &str) {
    let deployed = Deployed::start(dialect).await;
    let repo = repository(deployed.dir.path());
    plugin_file(
        guests::ATTRIBUTE_MATCH.wasm,
        &guests::ATTRIBUTE_MATCH.manifest(),
        &repo.join("plugins/attribute-match.wasm"),
    )
    .await;
    let repo_path = repo.to_str().unwrap();
    let plugin_id = guests::ATTRIBUTE_MATCH.manifest().id();

    let out = deployed.ok(&["apply", repo_path, "--dry-run"]).await;
    assert_eq!(
        out,
        format!(
            "would create plugin   {plugin_id}\nwould create binding  vip\nwould create journey  welcome\n3 to create, 0 to update, 0 unchanged\n"
        )
    );
    assert_eq!(deployed.get("/v1/plugins")["plugins"], json!([]));
    assert_eq!(deployed.get("/v1/bindings")["bindings"], json!([]));

    let out = deployed.ok(&["apply", repo_path]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("created      plugin   {plugin_id}"),
        "{out}"
    );
    assert!(lines[1].starts_with("created      binding  vip"), "{out}");
    assert_eq!(
        lines[2], "created      journey  welcome (version 1)",
        "{out}"
    );
    assert_eq!(lines[3], "3 created, 0 updated, 0 unchanged", "{out}");
    let journey = deployed.get("/v1/journeys/welcome");
    assert_eq!(journey["versions"].as_array().unwrap().len(), 1);
    assert_eq!(
        deployed.get("/v1/bindings")["bindings"][0]["config"]["value"],
        "pro"
    );

    // An operator stops the journey; applying the same files again changes
    // nothing: no upload, no binding rewrite (no new rebuild task, no audit
    // entry), no journey version, and the stop stands.
    let (status, _) = http(
        deployed.server.port,
        "POST",
        "/v1/journeys/welcome/stop",
        Some(&deployed.key),
        None,
    );
    assert_eq!(status, 200);
    let task_ids = || -> Vec<Value> {
        let tasks = deployed.get("/v1/plugin-tasks");
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect()
    };
    let audit_entries = || {
        deployed.get("/v1/plugin-audit")["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    let (tasks, audit) = (task_ids(), audit_entries());
    assert!(
        !tasks.is_empty() && audit > 0,
        "the first apply queued a rebuild and was audited"
    );
    let answer: Value =
        serde_json::from_str(&deployed.ok(&["apply", repo_path, "--json"]).await).unwrap();
    assert_eq!(answer["unchanged"], 3, "{answer}");
    assert_eq!(answer["created"], 0, "{answer}");
    assert_eq!(answer["updated"], 0, "{answer}");
    assert_eq!(answer["error"], Value::Null, "{answer}");
    assert!(
        answer["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["result"] == "unchanged"),
        "{answer}"
    );
    assert_eq!(task_ids(), tasks);
    assert_eq!(audit_entries(), audit);
    let journey = deployed.get("/v1/journeys/welcome");
    assert_eq!(
        journey["versions"].as_array().unwrap().len(),
        1,
        "{journey}"
    );
    assert_eq!(journey["active"], false, "{journey}");

    // Changed files are updated, the rest stays.
    write_vip(&repo, "enterprise");
    write_welcome(&repo, "2d");
    let out = deployed.ok(&["apply", repo_path, "--dry-run"]).await;
    assert!(out.contains("would update binding  vip"), "{out}");
    assert!(
        out.contains("would update journey  welcome (after version 1)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("unchanged    plugin   {plugin_id}")),
        "{out}"
    );
    let out = deployed.ok(&["apply", repo_path]).await;
    assert!(out.contains("updated      binding  vip"), "{out}");
    assert!(
        out.contains("updated      journey  welcome (version 2)"),
        "{out}"
    );
    assert!(
        out.ends_with("0 created, 2 updated, 1 unchanged\n"),
        "{out}"
    );
    assert_eq!(
        deployed.get("/v1/bindings")["bindings"][0]["config"]["value"],
        "enterprise"
    );
    let journey = deployed.get("/v1/journeys/welcome");
    assert_eq!(journey["version"], 2, "{journey}");
    assert_eq!(journey["definition"]["steps"][0]["duration"], "2d");

    // Single files work too, by their folder.
    let file = repo.join("journeys/welcome.json");
    let out = deployed.ok(&["apply", file.to_str().unwrap()]).await;
    assert!(
        out.starts_with("unchanged    journey  welcome (version 2)"),
        "{out}"
    );
}

per_dialect!(refusals_are_clear);

async fn refusals_are_clear(dialect: &str) {
    let deployed = Deployed::start(dialect).await;
    let url = deployed.url();
    let nachfass = |key: Option<&str>, args: &[&str]| {
        let mut command = Command::new(binary());
        command.args(args).env("NACHFASS_SERVER", &url);
        match key {
            Some(key) => command.env("NACHFASS_API_KEY", key),
            None => command.env_remove("NACHFASS_API_KEY"),
        };
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };

    // The key from the environment, the server from NACHFASS_SERVER.
    let (code, out, _) = nachfass(Some(&deployed.key), &["plugin", "list"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "no plugins installed");
    let (code, _, err) = nachfass(None, &["plugin", "list"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("NACHFASS_API_KEY is not set"), "{err}");
    let (code, _, err) = nachfass(Some("nf_wrong"), &["binding", "list"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the server refused (401 unauthorized)"),
        "{err}"
    );
    assert!(err.contains("Check NACHFASS_API_KEY"), "{err}");

    // Nothing listens on a fresh port.
    let down = format!("http://127.0.0.1:{}", free_port());
    let (result, _) = nachfass_cli(&[
        "plugin",
        "list",
        "--server",
        &down,
        "--api-key",
        &deployed.key,
    ])
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains(&format!("cannot reach {down}")), "{error}");
    assert!(error.contains("is the server running"), "{error}");
    let (result, _) = nachfass_cli(&[
        "plugin",
        "list",
        "--server",
        "not a url",
        "--api-key",
        &deployed.key,
    ])
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("is not a URL"), "{error}");

    // A broken file changes nothing, not even what comes before it.
    let repo = repository(deployed.dir.path());
    plugin_file(
        guests::ATTRIBUTE_MATCH.wasm,
        &guests::ATTRIBUTE_MATCH.manifest(),
        &repo.join("plugins/attribute-match.wasm"),
    )
    .await;
    std::fs::write(repo.join("journeys/broken.json"), b"{ \"name\": ").unwrap();
    let error = deployed.refused(&["apply", repo.to_str().unwrap()]).await;
    assert!(
        error.contains("broken.json: not a journey definition"),
        "{error}"
    );
    assert_eq!(deployed.get("/v1/plugins")["plugins"], json!([]));
    std::fs::remove_file(repo.join("journeys/broken.json")).unwrap();

    // The server refuses a journey on a segment no binding makes: its
    // message names the problem and the file; what came before stays.
    std::fs::write(
        repo.join("journeys/orphan.json"),
        json!({ "name": "orphan", "trigger": { "segment_entered": "nobody" },
                "steps": [ { "id": "pause", "type": "wait", "duration": "1d" } ] })
        .to_string(),
    )
    .unwrap();
    let (result, out) = deployed.cli(&["apply", repo.to_str().unwrap()]).await;
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("orphan.json: the server refused (422 invalid)"),
        "{error}"
    );
    assert!(error.contains("nobody"), "{error}");
    assert!(out.contains("created      binding  vip"), "{out}");
    assert_eq!(deployed.get("/v1/bindings")["bindings"][0]["name"], "vip");

    // A base URL that is not the API's: a 404 for a wrong route is an
    // error, not a journey that does not exist yet.
    let wrong = format!("{url}/nachfass");
    let (result, _) = nachfass_cli(&[
        "apply",
        repo.join("journeys/welcome.json").to_str().unwrap(),
        "--dry-run",
        "--server",
        &wrong,
        "--api-key",
        &deployed.key,
    ])
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("404 no_route"), "{error}");

    // A directory without the layout is refused before anything is sent.
    let error = deployed
        .refused(&["apply", deployed.dir.path().join("cache").to_str().unwrap()])
        .await;
    assert!(
        error.contains("no plugins/, bindings/ or journeys/"),
        "{error}"
    );
}
