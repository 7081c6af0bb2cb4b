//! Bindings over HTTP, one test per dialect: configuration checked against
//! the plugin's manifest, limits within the server's maxima, and a new
//! scorer re-scoring every existing contact as a durable task that resumes
//! from its cursor after a crash.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::clock::Clock;
use nachfass::model::Value as Attr;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::ContactInput;
use nachfass_tests::world::TestWorld;
use nachfass_tests::{DAY, guests};
use serde_json::{Value, json};
use tower::ServiceExt;

type Setup = TestWorld;

async fn setup(dialect: &str) -> Setup {
    TestWorld::start(dialect, 10 * DAY).await
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: &str,
    body: Body,
) -> (StatusCode, Value) {
    nachfass_tests::client::request(
        router,
        method,
        path,
        Some(key),
        Some("application/json"),
        body,
    )
    .await
}

async fn upload(s: &Setup, guest: nachfass_tests::Guest) {
    let bytes = std::fs::read(guest.packed()).unwrap();
    let (status, answer) = call(
        &s.router,
        "POST",
        "/v1/plugins",
        &s.admin,
        Body::from(bytes),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

async fn bind(s: &Setup, binding: Value) -> (StatusCode, Value) {
    call(
        &s.router,
        "POST",
        "/v1/bindings",
        &s.admin,
        Body::from(binding.to_string()),
    )
    .await
}

fn message(answer: &Value) -> &str {
    answer["error"]["message"].as_str().unwrap_or_default()
}

async fn configuration_is_checked_against_the_manifest(dialect: &str) {
    let s = setup(dialect).await;
    upload(&s, guests::ENGAGEMENT).await;
    upload(&s, guests::ATTRIBUTE_MATCH).await;

    let (status, refused) = bind(
        &s,
        json!({ "name": "eng", "kind": "scorer", "plugin": "engagement", "config": { "pricing_point": 15 } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        message(&refused),
        "binding `eng`: unknown configuration key `pricing_point` for plugin `engagement`; known keys: points, pricing_points, pricing_path, max_per_day",
        "{dialect}"
    );
    let (status, refused) = bind(
        &s,
        json!({ "name": "eng", "kind": "scorer", "plugin": "engagement", "config": { "points": { "a": 1 } } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        message(&refused).contains("`points` must be a string, number or boolean"),
        "{refused}"
    );
    let (status, refused) = bind(
        &s,
        json!({ "name": "eng", "kind": "scorer", "plugin": "engagement", "limits": { "fuel": 1u64 << 60 } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        message(&refused).contains("fuel 1152921504606846976 is over the server's maximum"),
        "{refused}"
    );
    let (status, refused) = bind(
        &s,
        json!({ "name": "eng", "kind": "scorer", "plugin": "engagement", "limits": { "cpu_time": 5 } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (status, listed) = call(&s.router, "GET", "/v1/bindings", &s.admin, Body::empty()).await;
    assert_eq!(
        (status, listed["bindings"].as_array().unwrap().len()),
        (StatusCode::OK, 0),
        "refusals change nothing"
    );

    // Numbers and booleans are taken, as the text plugins read.
    let (status, bound) = bind(
        &s,
        json!({ "name": "eng", "kind": "scorer", "plugin": "engagement",
                "config": { "pricing_points": 15 }, "limits": { "fuel": 20_000_000 } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let (status, bound) = bind(
        &s,
        json!({ "name": "trial", "kind": "segment", "plugin": "attribute-match",
                "config": { "attribute": "trial", "op": "eq", "value": true } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let (_, listed) = call(&s.router, "GET", "/v1/bindings", &s.admin, Body::empty()).await;
    let by_name = |name: &str| {
        listed["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_name("eng")["config"]["pricing_points"],
        "15",
        "{dialect}"
    );
    assert_eq!(by_name("eng")["limits"]["fuel"], 20_000_000, "{dialect}");
    assert_eq!(by_name("trial")["config"]["value"], "true", "{dialect}");

    // The stored configuration reaches the plugin: a pricing visit scores 15.
    let (status, ingested) = call(
        &s.router,
        "POST",
        "/v1/events",
        &s.admin,
        Body::from(json!({ "kind": "page.visited", "email": "p@example.org", "properties": { "url": "/pricing" } }).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ingested}");
    let contact = s
        .store
        .contact(ingested["event"]["contact_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(contact.score, 15, "{dialect}");
    s.temp.cleanup(s.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_is_checked_against_the_manifest_sqlite() {
    configuration_is_checked_against_the_manifest("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_is_checked_against_the_manifest_postgres() {
    configuration_is_checked_against_the_manifest("postgres").await;
}

/// A new scorer binding scores every existing profile, as a durable task.
/// A node that dies half-way leaves its cursor; after its lease runs out
/// another node resumes there instead of starting over.
async fn a_new_scorer_rescores_existing_contacts_and_resumes_after_a_crash(dialect: &str) {
    let s = setup(dialect).await;
    let count = 30;
    let mut ids = Vec::new();
    for i in 0..count {
        let input = ContactInput {
            email: Some(format!("fit{i}@firma.example")),
            attributes: [
                ("industry".to_owned(), Attr::Text("software".into())),
                ("employees".to_owned(), Attr::Integer(120)),
            ]
            .into(),
            ..ContactInput::default()
        };
        ids.push(s.store.upsert_contact(&input, 0).await.unwrap().contact.id);
    }
    ids.sort();
    upload(&s, guests::B2B_FIT).await;
    let (status, bound) = bind(
        &s,
        json!({ "name": "fit", "kind": "scorer", "plugin": "b2b-fit" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let task = bound["task"].as_str().unwrap().to_owned();

    // A node claims the task's job, gets through the first ten contacts'
    // page (recorded as done) and dies.
    let now = s.clock.now();
    let claimed = s
        .store
        .claim_jobs("doomed-node", now, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{dialect}: {claimed:?}");
    let held = s
        .store
        .task_batch_done(&claimed[0], &task, &ids[9], 10, 0, 0, now)
        .await
        .unwrap();
    assert!(held);
    let (_, progress) = call(
        &s.router,
        "GET",
        &format!("/v1/plugin-tasks/{task}"),
        &s.admin,
        Body::empty(),
    )
    .await;
    assert_eq!(
        (progress["evaluated"].as_i64(), progress["done"].as_bool()),
        (Some(10), Some(false)),
        "{progress}"
    );

    // Its lease runs out; another node's scheduler takes over.
    s.clock.advance(61_000);
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();

    let (status, progress) = call(
        &s.router,
        "GET",
        &format!("/v1/plugin-tasks/{task}"),
        &s.admin,
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            progress["done"].as_bool(),
            progress["evaluated"].as_i64(),
            progress["entered"].as_i64(),
            progress["total"].as_i64(),
            progress["error"].clone()
        ),
        (
            Some(true),
            Some(count),
            Some(count - 10),
            Some(count),
            Value::Null
        ),
        "{dialect}: {progress}"
    );
    let mut scores = Vec::new();
    for id in &ids {
        scores.push(s.store.contact(id).await.unwrap().score);
    }
    // The first ten were "done" by the dead node (which never scored
    // them): resumed from the cursor, not started over.
    assert!(
        scores[..10].iter().all(|&p| p == 0),
        "{dialect}: {scores:?}"
    );
    assert!(scores[10].is_positive(), "{dialect}: {scores:?}");
    assert!(
        scores[10..].iter().all(|&p| p == scores[10]),
        "{dialect}: {scores:?}"
    );
    let history = s.store.score_history(&ids[20]).await.unwrap();
    assert_eq!(history.len(), 1, "scored once: {history:?}");
    assert_eq!(history[0].binding, "fit");

    // The task is listed for every node to see.
    let (_, tasks) = call(
        &s.router,
        "GET",
        "/v1/plugin-tasks",
        &s.admin,
        Body::empty(),
    )
    .await;
    assert_eq!(tasks["tasks"][0]["id"], task.as_str(), "{tasks}");
    assert_eq!(tasks["tasks"][0]["kind"], "rescore");
    s.temp.cleanup(s.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_scorer_rescores_existing_contacts_and_resumes_after_a_crash_sqlite() {
    a_new_scorer_rescores_existing_contacts_and_resumes_after_a_crash("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_scorer_rescores_existing_contacts_and_resumes_after_a_crash_postgres() {
    a_new_scorer_rescores_existing_contacts_and_resumes_after_a_crash("postgres").await;
}

/// A version that starts trapping, with no version to roll back to: the
/// breaker pauses the binding (no more score from it, the touchpoints are
/// still stored), writes the audit log and a metric; an operator resumes.
async fn the_breaker_pauses_a_binding_without_a_previous_version(dialect: &str) {
    let s = setup(dialect).await;
    upload(&s, guests::FLAKY_SCORER).await;
    let (status, bound) = bind(
        &s,
        json!({ "name": "flaky", "kind": "scorer", "plugin": "flaky-scorer" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let mut statuses = Vec::new();
    for seq in 1..=30 {
        let event = json!({ "kind": "page.visited", "email": "f@example.org", "properties": { "seq": seq } });
        statuses.push(
            call(
                &s.router,
                "POST",
                "/v1/events",
                &s.admin,
                Body::from(event.to_string()),
            )
            .await
            .0,
        );
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "no touchpoint lost: {statuses:?}"
    );
    let (_, listed) = call(&s.router, "GET", "/v1/bindings", &s.admin, Body::empty()).await;
    let paused = listed["bindings"][0]["paused"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        paused.contains("10 of 20 calls of flaky-scorer@2.0.0"),
        "{dialect}: {listed}"
    );
    let contact = s
        .store
        .upsert_contact(
            &ContactInput {
                email: Some("f@example.org".into()),
                ..ContactInput::default()
            },
            0,
        )
        .await
        .unwrap()
        .contact;
    assert_eq!(
        contact.score, 10,
        "{dialect}: ten healthy calls scored, nothing after the pause"
    );

    let (_, audit) = call(
        &s.router,
        "GET",
        "/v1/plugin-audit",
        &s.admin,
        Body::empty(),
    )
    .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"plugin.breaker_tripped") && actions.contains(&"binding.paused"),
        "{dialect}: {actions:?}"
    );
    let (_, metrics) = {
        let request = Request::builder()
            .uri("/metrics")
            .header("authorization", format!("Bearer {}", s.admin))
            .body(Body::empty())
            .unwrap();
        let response = s.router.clone().oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        ((), String::from_utf8_lossy(&bytes).into_owned())
    };
    assert!(
        metrics.contains("nachfass_plugin_breaker_trips_total{binding=\"flaky\",plugin=\"flaky-scorer\",version=\"2.0.0\"}"),
        "{metrics}"
    );
    // Plugin calls per version and outcome, and their latency as a
    // histogram with buckets.
    for expected in [
        "nachfass_plugin_calls_total{plugin=\"flaky-scorer\",version=\"2.0.0\",outcome=\"trap\"}",
        "# TYPE nachfass_plugin_call_duration_seconds histogram",
        // Live events reach a scorer in batches.
        "nachfass_plugin_call_duration_seconds_bucket{plugin=\"flaky-scorer\",version=\"2.0.0\",function=\"on-event-batch\",le=\"0.001\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }

    // Resumed, healthy events score again.
    let (status, resumed) = call(
        &s.router,
        "POST",
        "/v1/bindings/flaky/resume",
        &s.admin,
        Body::empty(),
    )
    .await;
    assert_eq!(
        (status, resumed["resumed"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{resumed}"
    );
    let event =
        json!({ "kind": "page.visited", "email": "f@example.org", "properties": { "seq": 1 } });
    call(
        &s.router,
        "POST",
        "/v1/events",
        &s.admin,
        Body::from(event.to_string()),
    )
    .await;
    let contact = s.store.contact(&contact.id).await.unwrap();
    assert_eq!(contact.score, 11, "{dialect}");
    s.temp.cleanup(s.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_pauses_a_binding_without_a_previous_version_sqlite() {
    the_breaker_pauses_a_binding_without_a_previous_version("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_pauses_a_binding_without_a_previous_version_postgres() {
    the_breaker_pauses_a_binding_without_a_previous_version("postgres").await;
}

/// A resume holds on every node. Each node counts its own calls; when
/// one node trips and pauses a binding, another may still hold failures
/// from before the pause. It forgets them once it learns of the pause
/// (its periodic reconcile), so after the operator's resume it counts
/// afresh there too, where two good calls used to trip it again.
async fn a_resume_counts_afresh_on_every_node(dialect: &str) {
    use nachfass::plugins::Plugins;
    use nachfass::runtime::Registry;
    use nachfass::store::{BindingDef, BindingKind};
    let (store, temp) = nachfass_tests::store(dialect).await;
    let def = BindingDef {
        name: "flaky".into(),
        kind: BindingKind::Scorer,
        plugin: "flaky-scorer".into(),
        config: Default::default(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&def, 0).await.unwrap();
    // This node: 18 calls, 12 failed; not yet enough calls to trip.
    let registry = std::sync::Arc::new(Registry::new(nachfass_tests::runtime()));
    let breakers = registry.breakers();
    for call in 0..18 {
        let failed = call % 3 != 0;
        assert_eq!(
            breakers.record("flaky", "flaky-scorer@2.0.0", failed),
            None,
            "{dialect}"
        );
    }
    // Another node tripped and paused the binding; this node reconciles.
    assert!(
        store
            .pause_binding("flaky", "circuit breaker", 1)
            .await
            .unwrap(),
        "{dialect}"
    );
    let clock = std::sync::Arc::new(nachfass::clock::ManualClock::new(1));
    Plugins::new(store.clone(), registry.clone(), clock)
        .reconcile()
        .await
        .unwrap();
    assert!(store.resume_binding("flaky", 2).await.unwrap(), "{dialect}");
    for _ in 0..2 {
        assert_eq!(
            breakers.record("flaky", "flaky-scorer@2.0.0", false),
            None,
            "{dialect}"
        );
    }
    temp.cleanup(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_counts_afresh_on_every_node_sqlite() {
    a_resume_counts_afresh_on_every_node("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_counts_afresh_on_every_node_postgres() {
    a_resume_counts_afresh_on_every_node("postgres").await;
}

/// version-tag built as 1.0.0 or 2.0.0, packed under one name.
fn tag(version: u8) -> Vec<u8> {
    let guest = if version == 1 {
        guests::VERSION_TAG
    } else {
        guests::VERSION_TAG_NEXT
    };
    let mut manifest = guest.manifest();
    manifest.name = "version-tag".into();
    nachfass::runtime::manifest::embed(&guest.bytes(), &manifest).unwrap()
}

/// A binding follows the live version or pins a version or a range; the
/// API says which version each binding runs; a change re-scores.
async fn bindings_follow_live_or_pin_a_version(dialect: &str) {
    let s = setup(dialect).await;
    for version in [1, 2] {
        let (status, answer) = call(
            &s.router,
            "POST",
            "/v1/plugins",
            &s.admin,
            Body::from(tag(version)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let (status, refused) = bind(
        &s,
        json!({ "name": "pinned", "kind": "scorer", "plugin": "version-tag", "version": "^3" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&refused),
        "no installed version of `version-tag` fits `^3`; installed: 1.0.0, 2.0.0"
    );
    let (status, refused) = bind(
        &s,
        json!({ "name": "pinned", "kind": "scorer", "plugin": "version-tag", "version": "one" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (status, _) = bind(
        &s,
        json!({ "name": "pinned", "kind": "scorer", "plugin": "version-tag", "version": "1.0.0" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = bind(
        &s,
        json!({ "name": "follows", "kind": "scorer", "plugin": "version-tag" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let runs = |listed: &Value, name: &str| {
        listed["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()["runs"]
            .clone()
    };
    let (_, listed) = call(&s.router, "GET", "/v1/bindings", &s.admin, Body::empty()).await;
    assert_eq!(
        runs(&listed, "pinned"),
        "version-tag@1.0.0",
        "{dialect}: {listed}"
    );
    assert_eq!(
        runs(&listed, "follows"),
        "version-tag@2.0.0",
        "{dialect}: {listed}"
    );
    let event = json!({ "kind": "page.visited", "email": "pin@example.org" });
    let (_, ingested) = call(
        &s.router,
        "POST",
        "/v1/events",
        &s.admin,
        Body::from(event.to_string()),
    )
    .await;
    let contact = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
    let mut scored: Vec<(String, String)> = s
        .store
        .score_history(&contact)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.binding, h.reasons[0].clone()))
        .collect();
    scored.sort();
    assert_eq!(
        scored,
        [
            ("follows".to_owned(), "2.0.0".to_owned()),
            ("pinned".to_owned(), "1.0.0".to_owned())
        ],
        "{dialect}"
    );

    // A change: the pin moves to a range; the binding is re-scored.
    let change =
        json!({ "name": "pinned", "kind": "scorer", "plugin": "version-tag", "version": "^2" });
    let (status, changed) = call(
        &s.router,
        "PUT",
        "/v1/bindings/pinned",
        &s.admin,
        Body::from(change.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert!(changed["task"].is_string(), "{changed}");
    let (_, listed) = call(&s.router, "GET", "/v1/bindings", &s.admin, Body::empty()).await;
    assert_eq!(
        runs(&listed, "pinned"),
        "version-tag@2.0.0",
        "{dialect}: {listed}"
    );
    let renamed = json!({ "name": "other", "kind": "scorer", "plugin": "version-tag" });
    let (status, _) = call(
        &s.router,
        "PUT",
        "/v1/bindings/pinned",
        &s.admin,
        Body::from(renamed.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, audit) = call(
        &s.router,
        "GET",
        "/v1/plugin-audit",
        &s.admin,
        Body::empty(),
    )
    .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"binding.created") && actions.contains(&"binding.changed"),
        "{actions:?}"
    );
    s.temp.cleanup(s.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_follow_live_or_pin_a_version_sqlite() {
    bindings_follow_live_or_pin_a_version("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_follow_live_or_pin_a_version_postgres() {
    bindings_follow_live_or_pin_a_version("postgres").await;
}

/// A channel binding's delivery rate: shown as given, changed with PUT,
/// and every bad one refused with the field named, changing nothing.
async fn a_rate_is_checked_and_shown(dialect: &str) {
    let s = setup(dialect).await;
    upload(&s, guests::WEBHOOK).await;
    upload(&s, guests::ENGAGEMENT).await;
    let hook = |rate: Value| {
        json!({ "name": "sms", "kind": "channel", "plugin": "webhook",
                "config": { "url": "http://127.0.0.1:9/hook", "secret": "s3cret" },
                "allow_http": ["127.0.0.1:9"], "rate": rate })
    };
    let listed = || async {
        let (status, listed) =
            call(&s.router, "GET", "/v1/bindings", &s.admin, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        listed["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "sms")
            .cloned()
    };
    let bad = [
        (
            json!({ "per_second": -1 }),
            "rate.per_second must be a positive number",
        ),
        (
            json!({ "per_second": 0 }),
            "rate.per_second must be a positive number",
        ),
        (json!({ "per_second": "NaN" }), "per_second"),
        (json!({ "per_second": 1e9 }), "more than the most allowed"),
        (
            json!({ "per_minute": 0.001 }),
            "slower than the slowest allowed",
        ),
        (
            json!({ "per_second": 10, "burst": 0 }),
            "rate.burst must be between 1",
        ),
        (json!({ "per_second": 10, "per_minute": 600 }), "not both"),
        (json!({ "burst": 5 }), "needs per_second or per_minute"),
        (
            json!({ "per_second": 10, "bursts": 5 }),
            "unknown field `bursts`",
        ),
    ];
    for (rate, why) in &bad {
        let (status, refused) = bind(&s, hook(rate.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{rate}: {refused}"
        );
        assert!(message(&refused).contains(why), "{rate}: {refused}");
        assert!(listed().await.is_none(), "{rate}: nothing was stored");
    }
    let (status, refused) = bind(
        &s,
        json!({ "name": "eng", "kind": "scorer", "plugin": "engagement", "rate": { "per_second": 10 } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        message(&refused).contains("only channel bindings send messages and may have a rate"),
        "{refused}"
    );

    let (status, created) = bind(&s, hook(json!({ "per_second": 10, "burst": 20 }))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let shown = listed().await.unwrap();
    assert_eq!(shown["rate"], json!({ "per_second": 10.0, "burst": 20 }));
    let put = |body: Value| {
        call(
            &s.router,
            "PUT",
            "/v1/bindings/sms",
            &s.admin,
            Body::from(body.to_string()),
        )
    };
    for (rate, why) in &bad {
        let (status, refused) = put(hook(rate.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{rate}: {refused}"
        );
        assert!(message(&refused).contains(why), "{rate}: {refused}");
    }
    assert_eq!(listed().await.unwrap()["rate"], shown["rate"], "unchanged");
    let (status, changed) = put(hook(json!({ "per_minute": 30 }))).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        listed().await.unwrap()["rate"],
        json!({ "per_minute": 30.0 })
    );
    let mut unlimited = hook(Value::Null);
    unlimited.as_object_mut().unwrap().remove("rate");
    let (status, changed) = put(unlimited).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert!(listed().await.unwrap().get("rate").is_none());
    s.temp.cleanup(s.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_is_checked_and_shown_sqlite() {
    a_rate_is_checked_and_shown("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_is_checked_and_shown_postgres() {
    a_rate_is_checked_and_shown("postgres").await;
}
