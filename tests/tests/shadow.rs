//! Shadow mode on SQLite and PostgreSQL, one test per dialect: a candidate
//! beside a live binding has its answers recorded and never applied, the
//! report's figures match a known history, a trapping candidate leaves the
//! live path alone, promote makes the candidate live (on a second node too,
//! on PostgreSQL), and bad requests get a clear 4xx and change nothing.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::ingest::Pipeline;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::manifest::embed;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::scoring::StageThresholds;
use nachfass::store::{Scope, ShadowQueueLimits, Store};
use nachfass_tests::server::{Server, create_admin_key, free_port, http, http_bytes};
use nachfass_tests::{Guest, TempStore, database, guests, runtime};
use serde_json::{Value, json};
use tower::ServiceExt;

macro_rules! per_dialect {
    ($($name:ident),* $(,)?) => {$(
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
    )*};
}

per_dialect!(
    shadow_answers_are_recorded_and_never_applied,
    promote_makes_the_candidate_live_and_ends_the_shadow,
    bad_shadows_are_refused_and_change_nothing,
    a_full_queue_drops_and_counts_shadow_results,
);

/// 2026-05-28.
const START: i64 = 1_780_000_000_000;

struct Setup {
    router: axum::Router,
    store: Store,
    admin: String,
    reader: String,
    journeys: Arc<Journeys>,
    temp: TempStore,
}

async fn setup(dialect: &str) -> Setup {
    setup_with(dialect, ShadowQueueLimits::default()).await
}

async fn setup_with(dialect: &str, queue: ShadowQueueLimits) -> Setup {
    let (url, temp) = database(dialect).await;
    let store = Store::connect(&url).await.unwrap().with_shadow_queue(queue);
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let (_, reader) = store
        .create_api_key("reader", &[Scope::Read], 0)
        .await
        .unwrap();
    let pipeline = Pipeline {
        store: store.clone(),
        registry: Arc::new(Registry::new(runtime())),
        clock: Arc::new(ManualClock::new(START)),
        stages: StageThresholds::default(),
    };
    let journeys = Journeys::new(pipeline, Policy::default());
    let router = app(AppState::with_journeys(journeys.clone(), None));
    Setup {
        router,
        store,
        admin,
        reader,
        journeys,
        temp,
    }
}

impl Setup {
    async fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        json_body: bool,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"));
        if json_body {
            request = request.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, Body::from);
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call_as(&self.admin, "GET", path, None, false).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let bytes = Some(body.to_string().into_bytes());
        self.call_as(&self.admin, "POST", path, bytes, true).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call_as(&self.admin, "DELETE", path, None, false).await
    }

    async fn upload(&self, bytes: Vec<u8>, activate: bool) {
        let path = format!("/v1/plugins?activate={activate}");
        let (status, body) = self
            .call_as(&self.admin, "POST", &path, Some(bytes), false)
            .await;
        assert!(status.is_success(), "{status} {body}");
    }

    async fn event(&self, who: Value, kind: &str, properties: Value) -> Value {
        let mut body = json!({ "kind": kind, "properties": properties });
        body.as_object_mut()
            .unwrap()
            .extend(who.as_object().unwrap().clone());
        let (status, ingested) = self.post("/v1/events", body).await;
        assert_eq!(status, StatusCode::CREATED, "{ingested}");
        ingested
    }

    async fn contact(&self, id: &str) -> Value {
        let (status, contact) = self.get(&format!("/v1/contacts/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{contact}");
        contact
    }

    /// Each contact's score, stage, score history, timeline length and
    /// segments; the plugins; the jobs.
    async fn live_state(&self, contacts: &[&str]) -> Value {
        let mut state = Vec::new();
        for id in contacts {
            let contact = self.store.contact(id).await.unwrap();
            state.push(json!({
                "score": contact.score,
                "stage": contact.stage,
                "history": self.store.score_history(id).await.unwrap(),
                "events": self.store.all_events(id).await.unwrap().len(),
                "segments": self.store.memberships(id).await.unwrap(),
            }));
        }
        let (_, plugins) = self.get("/v1/plugins").await;
        let (_, scheduler) = self.get("/v1/scheduler").await;
        json!({ "contacts": state, "plugins": plugins, "jobs": scheduler["jobs"] })
    }
}

/// `guest` packed as `name@version`.
fn packed(guest: Guest, name: &str, version: &str) -> Vec<u8> {
    let mut manifest = guest.manifest();
    manifest.name = name.into();
    manifest.version = version.into();
    embed(&guest.bytes(), &manifest).unwrap()
}

/// Scorer `tag`: version-tag 1.0.0 live (+1 an event, reason "1.0.0"),
/// 2.0.0 (+2, "2.0.0") and flaky-scorer as 3.0.0 (traps on `seq` > 10)
/// installed beside it. Segment `has-email`: plugin `rule`, 1.0.0 live
/// (hello: has an email), 2.0.0 installed (inactive-days: no activity for
/// 30 days). Channel `hook`: the webhook connector.
async fn install(s: &Setup) {
    s.upload(packed(guests::VERSION_TAG, "version-tag", "1.0.0"), true)
        .await;
    s.upload(
        packed(guests::VERSION_TAG_NEXT, "version-tag", "2.0.0"),
        false,
    )
    .await;
    s.upload(packed(guests::FLAKY_SCORER, "version-tag", "3.0.0"), false)
        .await;
    s.upload(packed(guests::HELLO, "rule", "1.0.0"), true).await;
    s.upload(packed(guests::INACTIVE_DAYS, "rule", "2.0.0"), false)
        .await;
    let webhook = embed(&guests::WEBHOOK.bytes(), &guests::WEBHOOK.manifest()).unwrap();
    s.upload(webhook, true).await;
    for binding in [
        json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" }),
        json!({ "name": "has-email", "kind": "segment", "plugin": "rule" }),
        json!({ "name": "hook", "kind": "channel", "plugin": "webhook",
                "config": { "url": "http://127.0.0.1:9/hook", "secret": "s" },
                "allow_http": ["127.0.0.1:9"] }),
    ] {
        let (status, body) = s.post("/v1/bindings", binding).await;
        assert!(status.is_success(), "{status} {body}");
    }
    // The rebuild and re-score tasks the bindings queued run first.
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();
}

async fn shadow_answers_are_recorded_and_never_applied(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    let (status, shadow) = s
        .post("/v1/bindings/tag/shadow", json!({ "version": "2.0.0" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}: {shadow}");
    assert_eq!(
        (&shadow["status"], &shadow["plugin"], &shadow["version"]),
        (&json!("active"), &json!("version-tag"), &json!("2.0.0")),
        "{shadow}"
    );
    let (status, rule) = s
        .post(
            "/v1/bindings/has-email/shadow",
            json!({ "version": "2.0.0" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}: {rule}");

    // The known history: contact a created with a profile, then 3 events;
    // b 2 events; x (no email) 2 events.
    let (status, created) = s
        .post("/v1/contacts", json!({ "email": "a@example.com" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let a = created["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        s.event(
            json!({ "email": "a@example.com" }),
            "page.visited",
            json!({}),
        )
        .await;
    }
    let mut b = String::new();
    for _ in 0..2 {
        let ingested = s
            .event(
                json!({ "email": "b@example.com" }),
                "page.visited",
                json!({}),
            )
            .await;
        b = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
    }
    let mut x = String::new();
    for _ in 0..2 {
        let ingested = s
            .event(json!({ "external_id": "x-1" }), "page.visited", json!({}))
            .await;
        x = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
    }
    // One more event each for b and x in one request: one batch call of
    // the segment rule for both, in shadow too.
    let (status, batch) = s
        .post(
            "/v1/events",
            json!({ "events": [
                { "kind": "page.visited", "email": "b@example.com" },
                { "kind": "page.visited", "external_id": "x-1" },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");

    // Live alone: +1 an event, reasons "1.0.0"; members are who has an
    // email. The candidate (+2, "inactive") changed none of it.
    for (id, score, segments) in [
        (&a, 3, json!(["has-email"])),
        (&b, 3, json!(["has-email"])),
        (&x, 3, json!([])),
    ] {
        let contact = s.contact(id).await;
        assert_eq!(contact["score"], json!(score), "{dialect}: {contact}");
        let members = s.store.memberships(id).await.unwrap();
        assert_eq!(json!(members), segments, "{dialect}: {contact}");
        let history = s.store.score_history(id).await.unwrap();
        assert!(
            history
                .iter()
                .all(|h| h.delta == 1 && h.reasons == ["1.0.0"]),
            "{dialect}: {history:?}"
        );
        let timeline = s.store.all_events(id).await.unwrap();
        assert!(
            !timeline.iter().any(|e| e.kind == "segment.left"),
            "{dialect}: the candidate's answer left no trace: {timeline:?}"
        );
    }

    // Scorer: 1 on-profile call (both 0: agree) and 9 on-event calls
    // (+1 against +2: disagree).
    let (status, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["calls"], &report["agreed"], &report["disagreed"]),
        (&json!(10), &json!(1), &json!(9)),
        "{dialect}: {report}"
    );
    assert_eq!(report["agreement_rate"], json!(0.1), "{report}");
    assert_eq!(
        (&report["live"]["failed"], &report["candidate"]["failed"]),
        (&json!(0), &json!(0)),
        "{report}"
    );
    for side in ["live", "candidate"] {
        let fuel = &report[side]["fuel"];
        assert!(fuel["p50"].as_i64().unwrap() > 0, "{side}: {report}");
        assert!(fuel["p99"].as_i64().unwrap() >= fuel["p50"].as_i64().unwrap());
        let latency = &report[side]["latency_micros"];
        assert!(latency["p50"].as_i64().unwrap() > 0, "{side}: {report}");
    }
    let samples = report["disagreements"].as_array().unwrap();
    assert_eq!(samples.len(), 9, "{report}");
    for sample in samples {
        assert_eq!(
            (
                &sample["call"],
                &sample["live_value"],
                &sample["candidate_value"],
                &sample["candidate_detail"],
            ),
            (&json!("on-event"), &json!(1), &json!(2), &json!("2.0.0")),
            "{sample}"
        );
        let contact = sample["contact_id"].as_str().unwrap();
        assert_eq!(sample["profile"], json!(format!("/v1/contacts/{contact}")));
        assert!(sample["event_id"].is_string(), "{sample}");
    }
    let sampled: std::collections::BTreeSet<&str> = samples
        .iter()
        .map(|d| d["contact_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        sampled,
        [a.as_str(), b.as_str(), x.as_str()].into_iter().collect(),
        "{dialect}"
    );

    // Segment: a's profile and 3 events and b's 3 (member live, inactive
    // by the candidate: no) disagree; x's 3 agree (no email, active).
    let (status, report) = s.get("/v1/bindings/has-email/shadow").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["calls"], &report["agreed"], &report["disagreed"]),
        (&json!(10), &json!(3), &json!(7)),
        "{dialect}: {report}"
    );
    assert_eq!(report["agreement_rate"], json!(0.3), "{report}");
    let sample = &report["disagreements"][0];
    assert_eq!(
        (
            &sample["call"],
            &sample["live_value"],
            &sample["candidate_value"]
        ),
        (&json!("matches"), &json!(1), &json!(0)),
        "{report}"
    );

    // A candidate that traps: the live call is untouched, the binding's
    // breaker counts nothing against it, the failure is recorded.
    let (status, discarded) = s.delete("/v1/bindings/tag/shadow").await;
    assert_eq!(status, StatusCode::OK, "{discarded}");
    assert_eq!(discarded["shadow"]["status"], json!("discarded"));
    assert_eq!(discarded["calls"], json!(10), "the report stays");
    let (status, flaky) = s
        .post("/v1/bindings/tag/shadow", json!({ "version": "3.0.0" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{flaky}");
    let before = s.live_state(&[&b, &x]).await;
    for seq in [11, 12] {
        s.event(
            json!({ "email": "a@example.com" }),
            "page.visited",
            json!({ "seq": seq }),
        )
        .await;
    }
    assert_eq!(s.contact(&a).await["score"], json!(5), "{dialect}");
    assert_eq!(s.live_state(&[&b, &x]).await, before, "{dialect}");
    let (status, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["shadow"]["version"], json!("3.0.0"));
    assert_eq!(
        (
            &report["calls"],
            &report["agreed"],
            &report["candidate"]["failed"],
            &report["live"]["failed"]
        ),
        (&json!(2), &json!(0), &json!(2), &json!(0)),
        "{dialect}: {report}"
    );
    assert_eq!(
        report["disagreements"][0]["candidate_outcome"],
        json!("failed"),
        "{report}"
    );
    let (_, bindings) = s.get("/v1/bindings").await;
    let tag = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "tag")
        .unwrap()
        .clone();
    assert!(tag.get("paused").is_none(), "{dialect}: {tag}");
    s.temp.cleanup(s.store).await;
}

async fn promote_makes_the_candidate_live_and_ends_the_shadow(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    let (status, _) = s
        .post("/v1/bindings/tag/shadow", json!({ "version": "2.0.0" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ingested = s
        .event(
            json!({ "email": "p@example.com" }),
            "page.visited",
            json!({}),
        )
        .await;
    let p = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.contact(&p).await["score"],
        json!(1),
        "shadow applies nothing"
    );

    let (status, promoted) = s.post("/v1/bindings/tag/shadow/promote", json!(null)).await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {promoted}");
    assert_eq!(promoted["shadow"]["status"], json!("promoted"));
    assert_eq!(promoted["calls"], json!(1));
    let (_, plugins) = s.get("/v1/plugins").await;
    let tag = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "version-tag")
        .unwrap()
        .clone();
    assert_eq!(
        (&tag["live"], &tag["previous"]),
        (&json!("2.0.0"), &json!("1.0.0")),
        "{tag}"
    );
    // The next call is the candidate's, applied; the shadow records no more.
    s.event(
        json!({ "email": "p@example.com" }),
        "page.visited",
        json!({}),
    )
    .await;
    let history = s.store.score_history(&p).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.delta, last.reasons.clone()),
        (2, vec!["2.0.0".to_owned()])
    );
    let (_, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(
        (&report["shadow"]["status"], &report["calls"]),
        (&json!("promoted"), &json!(1)),
        "{report}"
    );
    let (status, again) = s.post("/v1/bindings/tag/shadow/promote", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no shadow running"),
        "{again}"
    );
    s.temp.cleanup(s.store).await;
}

async fn bad_shadows_are_refused_and_change_nothing(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    let ingested = s
        .event(
            json!({ "email": "q@example.com" }),
            "page.visited",
            json!({}),
        )
        .await;
    let q = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
    let before = s.live_state(&[&q]).await;

    let cases = [
        (
            "/v1/bindings/nope/shadow",
            json!({ "version": "2.0.0" }),
            StatusCode::NOT_FOUND,
            "no binding named `nope`",
        ),
        (
            "/v1/bindings/tag/shadow",
            json!({ "version": "9.9.9" }),
            StatusCode::NOT_FOUND,
            "installed: 1.0.0, 2.0.0, 3.0.0",
        ),
        (
            "/v1/bindings/tag/shadow",
            json!({ "plugin": "rule", "version": "2.0.0" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rule@2.0.0 is a segment-rule plugin, but binding `tag` runs a scorer",
        ),
        (
            "/v1/bindings/tag/shadow",
            json!({ "plugin": "ghost", "version": "1.0.0" }),
            StatusCode::NOT_FOUND,
            "no plugin named `ghost`",
        ),
        (
            "/v1/bindings/hook/shadow",
            json!({ "version": "1.0.0" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "binding `hook` is a channel",
        ),
        (
            "/v1/bindings/tag/shadow",
            json!({ "version": "1.0.0" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "version-tag@1.0.0 serves binding `tag` already",
        ),
        (
            "/v1/bindings/tag/shadow",
            json!({ "version": "2.0.0", "speed": 9 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "speed",
        ),
    ];
    for (path, body, expected, message) in cases {
        let (status, answer) = s.post(path, body.clone()).await;
        assert_eq!(status, expected, "{dialect} {body}: {answer}");
        let text = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{dialect} {body}: {answer}");
    }
    // Without the admin scope: 403 before the body is read.
    let (status, answer) = s
        .call_as(
            &s.reader,
            "POST",
            "/v1/bindings/tag/shadow",
            Some(b"{".to_vec()),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    for binding in ["tag", "has-email", "hook"] {
        let (status, answer) = s.get(&format!("/v1/bindings/{binding}/shadow")).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{dialect} {binding}: {answer}"
        );
    }
    let (status, _) = s.post("/v1/bindings/tag/shadow/promote", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.delete("/v1/bindings/tag/shadow").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // One shadow per binding; the second is a conflict.
    let (status, _) = s
        .post("/v1/bindings/tag/shadow", json!({ "version": "2.0.0" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = s
        .post("/v1/bindings/tag/shadow", json!({ "version": "3.0.0" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (_, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(report["shadow"]["version"], json!("2.0.0"), "{report}");
    assert_eq!(report["calls"], json!(0), "{report}");
    // A pin that excludes the candidate: promoting would change nothing
    // for the binding, so it is refused and nothing goes live.
    let (status, answer) = s
        .call_as(
            &s.admin,
            "PUT",
            "/v1/bindings/tag",
            Some(json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag", "version": "1.0.0" }).to_string().into_bytes()),
            true,
        )
        .await;
    assert!(status.is_success(), "{status} {answer}");
    let (status, answer) = s.post("/v1/bindings/tag/shadow/promote", json!(null)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pins version `1.0.0`"),
        "{answer}"
    );
    let (_, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(report["shadow"]["status"], json!("active"), "{report}");
    let (_, plugins) = s.get("/v1/plugins").await;
    assert_eq!(plugins, before["plugins"], "{dialect}: nothing went live");
    let contact = s.store.contact(&q).await.unwrap();
    assert_eq!(contact.score, 1, "{dialect}");
    s.temp.cleanup(s.store).await;
}

/// A node's shadow queue holds 3 results and (within this test) is never
/// written on its own: the 4th and 5th observations are dropped and
/// counted, the live path goes on unchanged, and the report (which flushes
/// the queue) covers the 3 queued and says 2 were dropped.
async fn a_full_queue_drops_and_counts_shadow_results(dialect: &str) {
    let queue = ShadowQueueLimits {
        capacity: 3,
        batch: 500,
        interval: Duration::from_secs(3600),
    };
    let s = setup_with(dialect, queue).await;
    install(&s).await;
    let (status, shadow) = s
        .post("/v1/bindings/tag/shadow", json!({ "version": "2.0.0" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}: {shadow}");
    let mut contact = String::new();
    for _ in 0..5 {
        let ingested = s
            .event(
                json!({ "email": "q@example.com" }),
                "page.visited",
                json!({}),
            )
            .await;
        contact = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
    }
    let live = s.contact(&contact).await;
    assert_eq!(
        live["score"],
        json!(5),
        "{dialect}: every live call applied"
    );
    let (status, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["calls"], &report["disagreed"], &report["dropped"]),
        (&json!(3), &json!(3), &json!(2)),
        "{dialect}: {report}"
    );
    // The flush emptied the queue: the next observation fits again.
    s.event(
        json!({ "email": "q@example.com" }),
        "page.visited",
        json!({}),
    )
    .await;
    let (_, report) = s.get("/v1/bindings/tag/shadow").await;
    assert_eq!(
        (&report["calls"], &report["dropped"]),
        (&json!(4), &json!(2)),
        "{dialect}: {report}"
    );
    s.temp.cleanup(s.store).await;
}

/// Waits (up to a minute) until `check` holds.
#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two `nachfass serve` processes on one PostgreSQL database: a shadow
/// started at A runs at B; promoting at A makes the candidate score at B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_runs_and_is_promoted_on_every_node_postgres() {
    let (url, temp) = database("postgres").await;
    let key = create_admin_key(&url);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    // A slow periodic reconcile: what spreads the changes is LISTEN/NOTIFY.
    let flags = ["--plugins-reconcile-ms", "30000"];
    let a = Server::start(&url, dir_a.path(), port_a, &flags);
    let b = Server::start(&url, dir_b.path(), port_b, &flags);
    for (bytes, activate) in [
        (packed(guests::VERSION_TAG, "version-tag", "1.0.0"), "true"),
        (
            packed(guests::VERSION_TAG_NEXT, "version-tag", "2.0.0"),
            "false",
        ),
    ] {
        let path = format!("/v1/plugins?activate={activate}");
        let (status, body) = http_bytes(
            port_a,
            "POST",
            &path,
            Some(&key),
            "application/wasm",
            &bytes,
        );
        assert_eq!(status, 201, "{body}");
    }
    let binding = json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" });
    let (status, body) = http(
        port_a,
        "POST",
        "/v1/bindings",
        Some(&key),
        Some(&binding.to_string()),
    );
    assert_eq!(status, 201, "{body}");
    let shadow = json!({ "version": "2.0.0" }).to_string();
    let (status, body) = http(
        port_a,
        "POST",
        "/v1/bindings/tag/shadow",
        Some(&key),
        Some(&shadow),
    );
    assert_eq!(status, 201, "{body}");

    let event = json!({ "kind": "page.visited", "email": "n@example.org" }).to_string();
    // The reason B's scorer gave for a new event; none while it is not
    // scored yet: B hears of the upload at A through LISTEN/NOTIFY and
    // compiles it, and an event whose effects could not be applied with
    // its answer is scored by its job a moment later.
    let score_at_b = || {
        let (status, ingested) = http(port_b, "POST", "/v1/events", Some(&key), Some(&event));
        assert_eq!(status, 201, "{ingested}");
        let contact = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
        let (_, history) = http(
            port_b,
            "GET",
            &format!("/v1/contacts/{contact}/scores"),
            Some(&key),
            None,
        );
        history["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["event_id"] == ingested["event"]["id"])
            .map(|scored| scored["reasons"][0].as_str().unwrap().to_owned())
    };
    // A report flushes the shadow queue of the node that answers it; the
    // other node's results arrive within its queue's interval.
    let calls_at = |port: u16| {
        let (status, report) = http(port, "GET", "/v1/bindings/tag/shadow", Some(&key), None);
        assert_eq!(status, 200, "{report}");
        report["calls"].as_i64().unwrap()
    };
    wait_for("B runs the shadow started at A", || {
        let Some(reason) = score_at_b() else {
            return false;
        };
        assert_eq!(reason, "1.0.0", "B applies the live version only");
        calls_at(port_a) > 0
    });
    let (status, promoted) = http(
        port_a,
        "POST",
        "/v1/bindings/tag/shadow/promote",
        Some(&key),
        Some("null"),
    );
    assert_eq!(status, 200, "{promoted}");
    // Promoting is two changes (the activation, then the shadow's end),
    // which B may hear of one at a time: wait for both.
    wait_for(
        "B scores with the promoted version, no longer in shadow",
        || {
            if score_at_b().as_deref() != Some("2.0.0") {
                return false;
            }
            let before = calls_at(port_b);
            score_at_b();
            calls_at(port_b) == before
        },
    );
    let recorded = calls_at(port_b);
    score_at_b();
    assert_eq!(calls_at(port_b), recorded, "the shadow ended on B too");
    drop((a, b));
    let store = Store::connect(&url).await.unwrap();
    temp.cleanup(store).await;
}
