//! Plugins in Python and JavaScript from the same WIT, built from
//! `plugins/` with componentize-py and componentize-js (once per change of
//! their sources) and run by a live `nachfass serve` on SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nachfass::model::{Contact, Event};
use nachfass::runtime::{Binding, World};
use nachfass_tests::languages::{self, LangGuest};
use nachfass_tests::server::{Server, create_admin_key, free_port, http};
use nachfass_tests::{HttpSink, guests, runtime};
use serde_json::{Value, json};

/// One test at a time: the limits are real, and a Python call starved of
/// both cores by a neighbouring componentize run or an 18 MB compile would
/// hit its (wall-clock) CPU budget.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Compiles `file` into the shared artifact cache, so the server (whose
/// cache directory points there) loads machine code at start instead of
/// compiling an 18 MB interpreter before it listens.
async fn compiled(file: &Path) {
    runtime().load_file(file).await.unwrap();
}

/// A server directory with `plugins` in its plugins directory and the
/// shared artifact cache.
fn server_dir(plugins: &[(&str, &Path)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins.d")).unwrap();
    for (name, file) in plugins {
        std::fs::copy(file, dir.path().join("plugins.d").join(name)).unwrap();
    }
    let cache = languages::repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, dir.path().join("cache")).unwrap();
    dir
}

fn api(port: u16, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, answer) = http(port, method, path, Some(key), body.as_deref());
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer
}

per_dialect!(python_and_javascript_scorers_score_like_the_rust_one);

async fn python_and_javascript_scorers_score_like_the_rust_one(dialect: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let python = languages::ENGAGEMENT_PY.built();
    compiled(&python).await;
    let javascript = languages::ENGAGEMENT_JS.built();
    compiled(&javascript).await;
    let rust = guests::ENGAGEMENT.packed();
    let dir = server_dir(&[
        ("engagement-py.wasm", &python),
        ("engagement-js.wasm", &javascript),
        ("engagement.wasm", &rust),
    ]);
    let (database, temp) = nachfass_tests::database(dialect).await;
    let key = create_admin_key(&database);
    let server = Server::start(&database, dir.path(), free_port(), &[]);
    let port = server.port;

    // Both bindings with the same configuration, so every rule is used:
    // configured points, the pricing page, the daily cap, penalties.
    let config = json!({ "points": "download:7, demo.booked:30", "pricing_points": "12", "max_per_day": "2" });
    for (name, plugin) in [
        ("rust", "engagement"),
        ("python", "engagement-py"),
        ("javascript", "engagement-js"),
    ] {
        api(
            port,
            &key,
            "POST",
            "/v1/bindings",
            Some(json!({ "name": name, "kind": "scorer", "plugin": plugin, "config": config })),
        );
    }
    let touchpoints = [
        ("email.opened", None),
        ("email.opened", None),
        ("email.opened", None),
        (
            "page.visited",
            Some("https://shop.example/Pricing?plan=pro"),
        ),
        ("page.visited", Some("/blog/follow-up")),
        ("download", None),
        ("demo.booked", None),
        ("email.bounced", None),
        ("something.else", None),
    ];
    let mut contact = String::new();
    for (kind, url) in touchpoints {
        let mut event = json!({ "kind": kind, "email": "lena@kunde.example" });
        if let Some(url) = url {
            event["properties"] = json!({ "url": url });
        }
        let answer = api(port, &key, "POST", "/v1/events", Some(event));
        contact = answer["event"]["contact_id"].as_str().unwrap().to_owned();
    }

    let history = api(
        port,
        &key,
        "GET",
        &format!("/v1/contacts/{contact}/scores"),
        None,
    );
    let of = |binding: &str| -> Vec<(i64, Value)> {
        history["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["binding"] == binding)
            .map(|e| (e["delta"].as_i64().unwrap(), e["reasons"].clone()))
            .collect()
    };
    let (rust, python, javascript) = (of("rust"), of("python"), of("javascript"));
    // opened +1 twice (the third is capped), pricing +12, blog +1,
    // download +7, demo +30, bounce -5.
    assert_eq!(
        rust.iter().map(|(d, _)| *d).sum::<i64>(),
        1 + 1 + 12 + 1 + 7 + 30 - 5,
        "{history}"
    );
    let failures: String = std::fs::read_to_string(dir.path().join(format!("serve-{port}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("plugin call failed"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(python, rust, "{history}\n{failures}");
    assert_eq!(javascript, rust, "{history}\n{failures}");
    let stored = api(port, &key, "GET", &format!("/v1/contacts/{contact}"), None);
    assert_eq!(stored["score"], 3 * 47);

    drop(server);
    let store = nachfass::store::Store::connect(&database).await.unwrap();
    temp.cleanup(store).await;
}

per_dialect!(javascript_connector_delivers_only_to_allowed_hosts);

async fn javascript_connector_delivers_only_to_allowed_hosts(dialect: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let connector = languages::CHAT_WEBHOOK_JS.built();
    compiled(&connector).await;
    let dir = server_dir(&[("chat-webhook-js.wasm", &connector)]);
    let sink = HttpSink::start(200).await;
    let (database, temp) = nachfass_tests::database(dialect).await;
    let key = create_admin_key(&database);
    let server = Server::start(&database, dir.path(), free_port(), &[]);
    let port = server.port;

    let url = format!("http://{}/hooks/sales-team", sink.addr);
    for (name, allowed) in [
        ("chat", sink.addr.to_string()),
        // The same receiver, but the binding only allows Slack.
        ("chat-slack-only", "hooks.slack.com".to_owned()),
    ] {
        api(
            port,
            &key,
            "POST",
            "/v1/bindings",
            Some(
                json!({ "name": name, "kind": "channel", "plugin": "chat-webhook-js",
                         "config": { "url": url }, "allow_http": [allowed] }),
            ),
        );
        api(
            port,
            &key,
            "PUT",
            &format!("/v1/journeys/{name}"),
            Some(json!({ "name": name, "purpose": "transactional",
                         "trigger": { "event": { "kind": format!("{name}.hello") } },
                         "steps": [ { "id": "tell", "type": "send", "binding": name,
                                      "template": { "subject": "Neuer Lead", "text": "{{ contact.email }} hat die Preise angesehen." } } ] })),
        );
    }
    api(
        port,
        &key,
        "POST",
        "/v1/events",
        Some(json!({ "kind": "chat.hello", "email": "ada@acme.example" })),
    );

    let started = Instant::now();
    while sink.received().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let received = sink.received();
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(
        body,
        json!({ "text": "*Neuer Lead*\nada@acme.example hat die Preise angesehen." })
    );
    assert!(received[0].header("idempotency-key").is_some());

    // Off the allow-list: the host refuses before connecting; the message
    // waits for a retry and the receiver never hears of it.
    api(
        port,
        &key,
        "POST",
        "/v1/events",
        Some(json!({ "kind": "chat-slack-only.hello", "email": "bob@acme.example" })),
    );
    let log = dir.path().join(format!("serve-{port}.log"));
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("outgoing HTTP denied: not on the binding's allow-list") {
            assert!(text.contains("127.0.0.1"), "{text}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no refusal logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bob_messages = {
        let contacts = api(port, &key, "GET", "/v1/contacts?limit=10", None);
        let bob = contacts["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["email"] == "bob@acme.example")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        api(
            port,
            &key,
            "GET",
            &format!("/v1/contacts/{bob}/messages"),
            None,
        )
    };
    assert_ne!(
        bob_messages["messages"][0]["status"], "delivered",
        "{bob_messages}"
    );
    assert_eq!(sink.received().len(), 1);

    drop(server);
    let store = nachfass::store::Store::connect(&database).await.unwrap();
    temp.cleanup(store).await;
}

/// The CPU budget holds for an interpreter as for compiled code.
#[tokio::test]
async fn a_python_plugin_that_loops_forever_is_stopped_by_its_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let looping = runtime()
        .load_file(&languages::ENDLESS_LOOP_PY.built())
        .await
        .unwrap();
    let binding = std::sync::Arc::new(Binding::new("loop", World::Scorer));
    let contact: Contact = serde_json::from_value(json!({ "id": "c1" })).unwrap();
    let event: Event =
        serde_json::from_value(json!({ "id": "e1", "contact_id": "c1", "kind": "x", "at": 0 }))
            .unwrap();
    let error = looping
        .on_event(&binding, 0, &contact, &event, &[])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("endless-loop-py@0.1.0: CPU budget of 11000000 instructions exceeded"),
        "{error}"
    );
    // The store was dropped: the next call starts clean and is stopped again.
    assert!(
        looping
            .on_event(&binding, 0, &contact, &event, &[])
            .await
            .is_err()
    );
}

/// `plugin new --lang python|js`: a project whose own tests pass and that
/// builds into a component with its manifest.
#[tokio::test]
async fn new_python_and_javascript_projects_test_and_build() {
    let _alone = ONE_AT_A_TIME.lock().await;
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let nachfass = async |args: &[&str]| {
        let cli = nachfass::cli::Cli::try_parse_from(
            std::iter::once("nachfass").chain(args.iter().copied()),
        )
        .unwrap();
        let mut out = Vec::new();
        nachfass::cli::run(cli, &mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let root = dir.path().to_str().unwrap();
    nachfass(&[
        "plugin",
        "new",
        "scorer",
        "py-points",
        "--lang",
        "python",
        "--dir",
        root,
    ])
    .await;
    nachfass(&[
        "plugin", "new", "channel", "js-hook", "--lang", "js", "--dir", root,
    ])
    .await;
    let py = dir.path().join("py-points");
    let js = dir.path().join("js-hook");
    assert!(
        py.join("bindings/wit_world/__init__.py").exists(),
        "typed stubs"
    );
    let pyproject = std::fs::read_to_string(py.join("pyproject.toml")).unwrap();
    assert!(
        pyproject.contains("[tool.nachfass]\nworld = \"scorer\""),
        "{pyproject}"
    );

    let pytest = std::process::Command::new("python3")
        .args(["-m", "pytest", "-q"])
        .current_dir(&py)
        .output()
        .unwrap();
    assert!(
        pytest.status.success(),
        "{}",
        String::from_utf8_lossy(&pytest.stdout)
    );
    let node = std::process::Command::new("node")
        .arg("--test")
        .current_dir(&js)
        .output()
        .unwrap();
    assert!(
        node.status.success(),
        "{}",
        String::from_utf8_lossy(&node.stdout)
    );

    // componentize-js comes from the example's node_modules (tests/run
    // installs it there), not from a second download.
    std::os::unix::fs::symlink(CHAT.project().join("node_modules"), js.join("node_modules"))
        .unwrap();
    for (project, id) in [(&py, "py-points@0.1.0"), (&js, "js-hook@0.1.0")] {
        let out = dir.path().join(format!("{id}.wasm"));
        let said = nachfass(&[
            "plugin",
            "build",
            project.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
        assert!(said.starts_with(&format!("{id} → ")), "{said}");
        let bytes = std::fs::read(&out).unwrap();
        let json = nachfass::runtime::manifest::read_section(
            &bytes,
            nachfass::runtime::manifest::SECTION_NAME,
        )
        .unwrap()
        .unwrap();
        let manifest = nachfass::runtime::Manifest::from_json(json).unwrap();
        assert_eq!(manifest.id(), id);
    }
}

const CHAT: LangGuest = languages::CHAT_WEBHOOK_JS;
