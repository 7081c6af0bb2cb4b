//! Plugins as cluster state, with real `nachfass serve` processes: a
//! version uploaded, activated or rolled back at one node serves the next
//! call at every node, and survives restarts; the plugins directory only
//! imports into the database.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use nachfass::runtime::manifest::embed;
use nachfass_tests::server::{Server, create_admin_key, free_port, http, http_bytes};
use nachfass_tests::{database, guests};
use serde_json::{Value, json};

/// version-tag built as 1.0.0 or 2.0.0, packed under one name.
fn tag(version: u8) -> Vec<u8> {
    let guest = if version == 1 {
        guests::VERSION_TAG
    } else {
        guests::VERSION_TAG_NEXT
    };
    let mut manifest = guest.manifest();
    manifest.name = "version-tag".into();
    embed(&guest.bytes(), &manifest).unwrap()
}

fn upload(port: u16, key: &str, bytes: &[u8]) -> (u16, Value) {
    http_bytes(
        port,
        "POST",
        "/v1/plugins",
        Some(key),
        "application/wasm",
        bytes,
    )
}

fn post(port: u16, key: &str, path: &str, body: Value) -> (u16, Value) {
    http(port, "POST", path, Some(key), Some(&body.to_string()))
}

/// `version-tag`'s live version as `port` lists it.
fn live_on(port: u16, key: &str) -> Option<String> {
    let (status, listed) = http(port, "GET", "/v1/plugins", Some(key), None);
    assert_eq!(status, 200, "{listed}");
    listed["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "version-tag")
        .and_then(|p| p["live"].as_str().map(str::to_owned))
}

/// Ingests a touchpoint at `port` and returns the version of `version-tag`
/// that scored it (the fixture answers with its own version).
fn scored_by(port: u16, key: &str) -> String {
    let (status, ingested) = post(
        port,
        key,
        "/v1/events",
        json!({ "kind": "page.visited", "email": "cluster@example.org" }),
    );
    assert_eq!(status, 201, "{ingested}");
    let event = ingested["event"]["id"].as_str().unwrap();
    let contact = ingested["event"]["contact_id"].as_str().unwrap();
    let (status, scores) = http(
        port,
        "GET",
        &format!("/v1/contacts/{contact}/scores"),
        Some(key),
        None,
    );
    assert_eq!(status, 200, "{scores}");
    scores["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event_id"] == event)
        .map(|h| h["reasons"][0].as_str().unwrap().to_owned())
        .unwrap_or_else(|| "not scored".into())
}

/// Waits (up to a minute: a loaded debug build is slow, not wrong) until
/// `check` holds, and returns how long that took.
#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn start(database: &str, dir: &Path, port: u16) -> Server {
    // The periodic reconcile stays slow here, so on PostgreSQL what is
    // measured is the LISTEN/NOTIFY path.
    Server::start(
        database,
        dir,
        port,
        &["--plugins-scan-ms", "200", "--plugins-reconcile-ms", "5000"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_uploads_activations_and_rollbacks_postgres() {
    let (url, temp) = database("postgres").await;
    let key = create_admin_key(&url);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let a = start(&url, dir_a.path(), port_a);
    let b = start(&url, dir_b.path(), port_b);

    let (status, uploaded) = upload(port_a, &key, &tag(1));
    assert_eq!(status, 201, "{uploaded}");
    wait_for("B lists the plugin uploaded at A", || {
        live_on(port_b, &key).as_deref() == Some("1.0.0")
    });
    let (status, bound) = post(
        port_a,
        &key,
        "/v1/bindings",
        json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" }),
    );
    assert_eq!(status, 201, "{bound}");
    assert_eq!(scored_by(port_b, &key), "1.0.0", "B scores with A's upload");

    let (status, _) = upload(port_a, &key, &tag(2));
    assert_eq!(status, 201);
    wait_for("B scores with 2.0.0", || scored_by(port_b, &key) == "2.0.0");
    let (status, rolled) = post(
        port_a,
        &key,
        "/v1/plugins/version-tag/rollback",
        json!(null),
    );
    assert_eq!(
        (status, rolled["live"].as_str()),
        (200, Some("version-tag@1.0.0"))
    );
    wait_for("B follows the rollback", || {
        scored_by(port_b, &key) == "1.0.0"
    });

    // From an activation at A to the first call at B with that version.
    let mut delays = Vec::new();
    for round in 0..50 {
        let version = if round % 2 == 0 { "2.0.0" } else { "1.0.0" };
        let (status, _) = post(
            port_a,
            &key,
            "/v1/plugins/version-tag/activate",
            json!({ "version": version }),
        );
        assert_eq!(status, 200);
        delays.push(wait_for("B calls the activated version", || {
            scored_by(port_b, &key) == version
        }));
    }
    delays.sort();
    eprintln!(
        "activation at A -> first call at B: p50 {:?}, p99 {:?}, max {:?} over {} rounds",
        delays[delays.len() / 2],
        delays[(delays.len() * 99 / 100).min(delays.len() - 1)],
        delays[delays.len() - 1],
        delays.len()
    );

    // Live is 1.0.0 after an even number of rounds; make 2.0.0 live, roll
    // back, and tempt the restart with the newer file in A's directory.
    post(
        port_a,
        &key,
        "/v1/plugins/version-tag/activate",
        json!({ "version": "2.0.0" }),
    );
    let (status, _) = post(
        port_a,
        &key,
        "/v1/plugins/version-tag/rollback",
        json!(null),
    );
    assert_eq!(status, 200);
    std::fs::create_dir_all(dir_a.path().join("plugins.d")).unwrap();
    std::fs::write(
        dir_a.path().join("plugins.d/version-tag-2.0.0.wasm"),
        tag(2),
    )
    .unwrap();
    a.kill();
    b.kill();
    let a = start(&url, dir_a.path(), port_a);
    let b = start(&url, dir_b.path(), port_b);
    for port in [port_a, port_b] {
        assert_eq!(
            live_on(port, &key).as_deref(),
            Some("1.0.0"),
            "after restart"
        );
        assert_eq!(scored_by(port, &key), "1.0.0", "after restart");
    }
    let (_, listed) = http(port_b, "GET", "/v1/plugins", Some(&key), None);
    assert_eq!(listed["plugins"][0]["previous"], "2.0.0", "{listed}");
    drop((a, b));
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let audit = store.plugin_audit().await.unwrap();
    assert!(
        audit.iter().any(|e| e.action == "plugin.rolled_back"),
        "{audit:?}"
    );
    temp.cleanup(store).await;
}

/// One node: the plugins directory imports into the database; a rollback
/// survives a restart although the newer file is still in the directory.
async fn directory_imports_and_rollback_survives_restart(dialect: &str) {
    let (url, temp) = database(dialect).await;
    let key = create_admin_key(&url);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("version-tag-1.0.0.wasm"), tag(1)).unwrap();
    std::fs::write(plugins.join("version-tag-2.0.0.wasm"), tag(2)).unwrap();
    let port = free_port();
    let server = start(&url, dir.path(), port);
    assert_eq!(live_on(port, &key).as_deref(), Some("2.0.0"), "{dialect}");
    let (status, _) = post(
        port,
        &key,
        "/v1/bindings",
        json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" }),
    );
    assert_eq!(status, 201);
    assert_eq!(scored_by(port, &key), "2.0.0");
    let (status, _) = post(port, &key, "/v1/plugins/version-tag/rollback", json!(null));
    assert_eq!(status, 200);
    assert_eq!(scored_by(port, &key), "1.0.0");
    server.kill();

    let server = start(&url, dir.path(), port);
    assert_eq!(live_on(port, &key).as_deref(), Some("1.0.0"), "{dialect}");
    assert_eq!(scored_by(port, &key), "1.0.0", "{dialect}");
    drop(server);
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let mut stored: Vec<String> = store
        .plugin_versions()
        .await
        .unwrap()
        .iter()
        .map(|v| v.manifest.id())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        ["version-tag@1.0.0", "version-tag@2.0.0"],
        "{dialect}"
    );
    temp.cleanup(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_imports_and_rollback_survives_restart_sqlite() {
    directory_imports_and_rollback_survives_restart("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_imports_and_rollback_survives_restart_postgres() {
    directory_imports_and_rollback_survives_restart("postgres").await;
}

/// A version that starts trapping trips the breaker at A; the cluster rolls
/// back to the previous version, so B serves it too; all in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_rolls_back_on_every_node_postgres() {
    let (url, temp) = database("postgres").await;
    let key = create_admin_key(&url);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start(&url, dir_a.path(), port_a);
    let _b = start(&url, dir_b.path(), port_b);

    // 1.0.0 is healthy (version-tag under the fixture's name), 2.0.0 traps
    // from the eleventh event on.
    let mut healthy = guests::VERSION_TAG.manifest();
    healthy.name = "flaky-scorer".into();
    let healthy = embed(&guests::VERSION_TAG.bytes(), &healthy).unwrap();
    assert_eq!(upload(port_a, &key, &healthy).0, 201);
    let flaky = std::fs::read(guests::FLAKY_SCORER.packed()).unwrap();
    // It reads a configuration key the healthy one does not: an admin
    // approves that before it goes live.
    let (status, held) = upload(port_a, &key, &flaky);
    assert_eq!(status, 202, "{held}");
    let (status, approved) = post(
        port_a,
        &key,
        &format!(
            "/v1/plugins/flaky-scorer/versions/{}/approve",
            held["review"]["version"].as_str().unwrap()
        ),
        held["review"]["needs_approval"].clone(),
    );
    assert_eq!(status, 200, "{approved}");
    let (status, bound) = post(
        port_a,
        &key,
        "/v1/bindings",
        json!({ "name": "flaky", "kind": "scorer", "plugin": "flaky-scorer" }),
    );
    assert_eq!(status, 201, "{bound}");
    let live = |port: u16| {
        let (_, listed) = http(port, "GET", "/v1/plugins", Some(&key), None);
        listed["plugins"][0]["live"].as_str().map(str::to_owned)
    };
    wait_for("B has 2.0.0 live", || {
        live(port_b).as_deref() == Some("2.0.0")
    });

    for seq in 1..=40 {
        let (status, _) = post(
            port_a,
            &key,
            "/v1/events",
            json!({ "kind": "page.visited", "email": "flaky@example.org", "properties": { "seq": seq } }),
        );
        assert_eq!(status, 201, "a failing scorer never loses the touchpoint");
    }
    assert_eq!(live(port_a).as_deref(), Some("1.0.0"), "A rolled back");
    wait_for("B follows the breaker's rollback", || {
        live(port_b).as_deref() == Some("1.0.0")
    });
    let (status, ingested) = post(
        port_b,
        &key,
        "/v1/events",
        json!({ "kind": "page.visited", "email": "flaky@example.org", "properties": { "seq": 99 } }),
    );
    assert_eq!(status, 201);
    let contact = ingested["event"]["contact_id"].as_str().unwrap();
    let (_, scores) = http(
        port_b,
        "GET",
        &format!("/v1/contacts/{contact}/scores"),
        Some(&key),
        None,
    );
    assert_eq!(scores["history"][0]["reasons"][0], "1.0.0", "{scores}");

    let (_, audit) = http(port_b, "GET", "/v1/plugin-audit", Some(&key), None);
    let by_breaker: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "breaker")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_breaker,
        ["plugin.breaker_tripped", "plugin.rolled_back"],
        "{audit}"
    );
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    temp.cleanup(store).await;
}

/// Two nodes changing a plugin's live version at once take turns: a
/// breaker's rollback of 2.0.0 that starts while another node activates
/// a hotfix 3.0.0 waits for it and finds 2.0.0 no longer live, where
/// before it read 2.0.0 unlocked and then set 1.0.0 over the hotfix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_rollback_does_not_undo_a_concurrent_activation_postgres() {
    use nachfass::store::plugins::BreakerRollback;
    let (store, temp) = nachfass_tests::store("postgres").await;
    sqlx::query(
        "INSERT INTO plugins (name, world, live, previous, updated_at) \
         VALUES ('scorer', 'scorer', '2.0.0', '1.0.0', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // The other node's activation, not yet committed.
    let mut activation = store.pool().begin().await.unwrap();
    sqlx::query("SELECT live FROM plugins WHERE name = 'scorer' FOR UPDATE")
        .execute(&mut *activation)
        .await
        .unwrap();
    let rollback = tokio::spawn({
        let store = store.clone();
        async move { store.breaker_rollback("scorer", "2.0.0", "trips", 1).await }
    });
    // Time for the rollback to read the row (a wait, not a measurement).
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("UPDATE plugins SET live = '3.0.0', previous = '2.0.0' WHERE name = 'scorer'")
        .execute(&mut *activation)
        .await
        .unwrap();
    activation.commit().await.unwrap();

    assert_eq!(rollback.await.unwrap().unwrap(), BreakerRollback::NotLive);
    let live: (String, Option<String>) =
        sqlx::query_as("SELECT live, previous FROM plugins WHERE name = 'scorer'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(live, ("3.0.0".to_owned(), Some("2.0.0".to_owned())));
    temp.cleanup(store).await;
}
