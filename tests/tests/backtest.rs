//! Replay and backtest on SQLite and PostgreSQL, one test per dialect: a
//! replay of the live version reproduces the stored score history, a
//! backtest of a candidate on a known history gives exactly the expected
//! score, stage and outcome figures, bad requests get a clear 4xx, and
//! nothing live changes.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::runtime::manifest::embed;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::EventInput;
use nachfass_tests::world::TestWorld;
use nachfass_tests::{DAY, guests, nachfass_cli};
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
    replay_of_the_live_version_equals_the_stored_history,
    backtest_of_a_candidate_gives_the_expected_figures_and_changes_nothing_live,
    bad_backtests_and_replays_are_refused_and_queue_nothing,
    a_backtest_resumes_from_its_cursor_after_a_crash,
    a_segment_rule_backtest_says_who_would_enter_and_leave,
    consequences_go_through_the_policy_gate_and_nothing_is_sent,
);

const MINUTE: i64 = 60_000;
/// Where the history starts (2026-05-28).
const START: i64 = 1_780_000_000_000;

type Setup = TestWorld;

async fn setup(dialect: &str) -> Setup {
    TestWorld::start(dialect, START).await
}

async fn call(
    s: &Setup,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    json_body: bool,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", s.admin));
    if json_body {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, Body::from);
    let response = s
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

async fn get(s: &Setup, path: &str) -> (StatusCode, Value) {
    call(s, "GET", path, None, false).await
}

async fn post(s: &Setup, path: &str, body: Value) -> (StatusCode, Value) {
    call(s, "POST", path, Some(body.to_string().into_bytes()), true).await
}

/// version-tag 1.0.0 (+1 per event) or 2.0.0 (+2 per event).
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

/// version-tag 1.0.0 live and 2.0.0 installed beside it, bound as scorer
/// `tag`; engagement live and bound as scorer `engagement` (its daily cap
/// makes the replay rebuild the activity summary exactly).
async fn install(s: &Setup) {
    let (status, body) = call(s, "POST", "/v1/plugins", Some(tag(1)), false).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(s, "POST", "/v1/plugins?activate=false", Some(tag(2)), false).await;
    assert!(status.is_success(), "{status} {body}");
    let engagement = embed(&guests::ENGAGEMENT.bytes(), &guests::ENGAGEMENT.manifest()).unwrap();
    let (status, body) = call(s, "POST", "/v1/plugins", Some(engagement), false).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (name, plugin) in [("tag", "version-tag"), ("engagement", "engagement")] {
        let (status, body) = post(
            s,
            "/v1/bindings",
            json!({ "name": name, "kind": "scorer", "plugin": plugin }),
        )
        .await;
        assert!(status.is_success(), "{status} {body}");
    }
    // The re-score tasks the new bindings queued run before any history.
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();
}

/// Ingests `count` events of `kind` for `email`, one a minute, at the
/// clock's time. Returns the time of the last.
async fn events(s: &Setup, email: &str, kind: &str, count: usize) -> i64 {
    for _ in 0..count {
        s.clock.advance(MINUTE);
        s.journeys
            .pipeline
            .ingest(&EventInput {
                kind: kind.into(),
                email: Some(email.into()),
                ..EventInput::default()
            })
            .await
            .unwrap();
    }
    s.clock_now()
}

/// Helpers on the shared world that only these tests use.
trait SetupExt {
    fn clock_now(&self) -> i64;
    async fn contact_id(&self, email: &str) -> String;
}

impl SetupExt for Setup {
    fn clock_now(&self) -> i64 {
        use nachfass::clock::Clock;
        self.clock.now()
    }

    async fn contact_id(&self, email: &str) -> String {
        let (status, page) = get(self, &format!("/v1/contacts?q={email}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["contacts"][0]["id"].as_str().unwrap().to_owned()
    }
}

/// The known history:
/// - a: 60 page visits (a minute apart), a day later `demo.booked`;
/// - b: 30 page visits;
/// - c: 5 page visits, an hour later a `purchase`.
///
/// Live, `tag` gives +1 an event, `engagement` +1 for each of the first 5
/// visits in 24 hours (its cap) and nothing for demo.booked or purchase.
async fn history(s: &Setup) -> (i64, i64) {
    let a_visits = events(s, "a@example.com", "page.visited", 60).await;
    s.clock.advance(DAY);
    let a_demo = events(s, "a@example.com", "demo.booked", 1).await;
    events(s, "b@example.com", "page.visited", 30).await;
    events(s, "c@example.com", "page.visited", 5).await;
    s.clock.advance(60 * MINUTE);
    events(s, "c@example.com", "purchase", 1).await;
    (a_visits, a_demo)
}

async fn replay_of_the_live_version_equals_the_stored_history(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    history(&s).await;
    let a = s.contact_id("a@example.com").await;

    for binding in ["tag", "engagement"] {
        let (status, replay) = get(&s, &format!("/v1/contacts/{a}/replay?binding={binding}")).await;
        assert_eq!(status, StatusCode::OK, "{dialect}: {replay}");
        assert_eq!(
            replay["matches_stored"],
            json!(true),
            "{dialect} {binding}: {replay}"
        );
        // Step by step against the stored score history of the binding.
        let stored: Vec<(String, i64, Vec<String>)> = s
            .store
            .score_history(&a)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.binding == binding)
            .map(|e| (e.event_id.unwrap(), e.delta, e.reasons))
            .collect();
        let replayed: Vec<(String, i64, Vec<String>)> = replay["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|step| step["delta"] != json!(0))
            .map(|step| {
                (
                    step["event_id"].as_str().unwrap().to_owned(),
                    step["delta"].as_i64().unwrap(),
                    serde_json::from_value(step["reasons"].clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(replayed, stored, "{dialect} {binding}");
        assert_eq!(replay["steps"].as_array().unwrap().len(), 61, "{dialect}");
        let last = replay["steps"].as_array().unwrap().last().unwrap().clone();
        let contact = s.store.contact(&a).await.unwrap();
        assert_eq!(
            (last["score"].as_i64(), last["stage"].as_str()),
            (Some(contact.score), Some(contact.stage.as_str())),
            "{dialect}"
        );
    }
    // Live: 61 from tag and 5 from engagement (capped after 5 visits a day).
    let contact = s.store.contact(&a).await.unwrap();
    assert_eq!(
        (contact.score, contact.stage.as_str()),
        (66, "mql"),
        "{dialect}"
    );

    // The other version of tag, replayed: +2 an event, SQL, unlike live.
    let (status, replay) = get(
        &s,
        &format!("/v1/contacts/{a}/replay?binding=tag&version=2.0.0"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {replay}");
    assert_eq!(replay["plugin"], json!("version-tag@2.0.0"));
    assert_eq!(replay["matches_stored"], json!(false));
    let last = replay["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["score"].as_i64(), last["stage"].as_str()),
        (Some(122 + 5), Some("sql")),
        "{dialect}: {last}"
    );
    assert_eq!(replay["steps"][0]["reasons"], json!(["2.0.0"]));
    assert_eq!(replay["steps"][0]["stored_reasons"], json!(["1.0.0"]));

    // The CLI prints each step and the verdict, and runs a backtest to its
    // report, against the server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let router = s.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    let worker = tokio::spawn(async move {
        loop {
            scheduler.run_until_idle().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let remote = ["--server", server.as_str(), "--api-key", s.admin.as_str()];
    let (result, printed) = nachfass_cli(
        &[
            &[
                "plugin",
                "replay",
                "--contact",
                a.as_str(),
                "--binding",
                "engagement",
            ][..],
            &remote[..],
        ]
        .concat(),
    )
    .await;
    result.unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1 + 61 + 1, "{dialect}: {printed}");
    assert!(lines[1].contains("page.visited\t+1\t"), "{printed}");
    assert!(
        lines[6].contains("page.visited\t+0\t[]\tscore 11\tlead"),
        "{printed}"
    );
    assert_eq!(lines[62], "equals the stored score history", "{printed}");
    let (result, printed) = nachfass_cli(
        &[
            &[
                "plugin",
                "replay",
                "--contact",
                a.as_str(),
                "--binding",
                "tag",
                "--version",
                "2.0.0",
            ][..],
            &remote[..],
        ]
        .concat(),
    )
    .await;
    result.unwrap();
    assert!(printed.contains("!= stored +1 [\"1.0.0\"]"), "{printed}");
    assert!(
        printed.ends_with("differs from the stored history (stored score 66, stage mql)\n"),
        "{printed}"
    );
    let (result, printed) = nachfass_cli(
        &[
            &[
                "plugin",
                "backtest",
                "version-tag",
                "2.0.0",
                "--from",
                &START.to_string(),
                "--wait",
            ][..],
            &remote[..],
        ]
        .concat(),
    )
    .await;
    result.unwrap();
    assert!(
        printed.contains(": 3 contacts, 97 events; 3 scores changed"),
        "{printed}"
    );
    assert!(
        printed.contains("mql: live 1, candidate 2; earlier 1, later 0, never 0, new 1"),
        "{printed}"
    );
    let (result, _) = nachfass_cli(
        &[
            &["plugin", "backtest", "version-tag", "9.9.9"][..],
            &remote[..],
        ]
        .concat(),
    )
    .await;
    assert!(result.unwrap_err().to_string().contains("404"), "{dialect}");
    worker.abort();

    let contact = s.store.contact(&a).await.unwrap();
    assert_eq!(contact.score, 66, "the replay changed nothing");
    s.temp.cleanup(s.store).await;
}

/// What is live: each contact's score, stage, score history, events and
/// segments, the plugins and their live versions, the job queue (a
/// journey run or a message would be a job).
async fn live_state(s: &Setup) -> Value {
    let mut state = Vec::new();
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let id = s.contact_id(email).await;
        let contact = s.store.contact(&id).await.unwrap();
        let history = s.store.score_history(&id).await.unwrap();
        let timeline = s.store.all_events(&id).await.unwrap().len();
        let segments = s.store.memberships(&id).await.unwrap();
        state.push(json!({
            "score": contact.score, "stage": contact.stage, "history": history,
            "events": timeline, "segments": segments,
        }));
    }
    let (_, plugins) = get(s, "/v1/plugins").await;
    let (_, scheduler) = get(s, "/v1/scheduler").await;
    let jobs = scheduler["jobs"].clone();
    assert!(jobs["failed"].is_i64(), "{scheduler}");
    json!({ "contacts": state, "plugins": plugins, "jobs": jobs })
}

async fn backtest_of_a_candidate_gives_the_expected_figures_and_changes_nothing_live(
    dialect: &str,
) {
    let s = setup(dialect).await;
    install(&s).await;
    let (a_visits, a_demo) = history(&s).await;
    let a = s.contact_id("a@example.com").await;
    let b = s.contact_id("b@example.com").await;
    let before = live_state(&s).await;

    let (status, queued) = post(
        &s,
        "/v1/plugins/version-tag/backtests",
        json!({ "version": "2.0.0", "from": START, "to": s.clock_now() + 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {queued}");
    let id = queued["id"].as_str().unwrap().to_owned();
    assert_eq!(queued["done"], json!(false));
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();

    let (status, done) = get(&s, &format!("/v1/backtests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            done["done"].as_bool(),
            done["error"].as_str(),
            done["evaluated"].as_i64(),
            done["total"].as_i64()
        ),
        (Some(true), None, Some(3), Some(3)),
        "{dialect}: {done}"
    );
    let report = &done["report"];
    assert_eq!(
        (
            report["contacts"].as_i64(),
            report["events"].as_i64(),
            report["failed_calls"].as_i64()
        ),
        (Some(3), Some(61 + 30 + 6), Some(0)),
        "{dialect}: {report}"
    );
    // Final scores, tag replayed plus engagement as stored (5 each):
    // live a 66, b 35, c 11; candidate a 127, b 65, c 17.
    let buckets: Vec<(String, i64, i64)> = report["scores"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["label"].as_str().unwrap().to_owned(),
                b["live"].as_i64().unwrap(),
                b["candidate"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64)> = [
        ("<0", 0, 0),
        ("0-9", 0, 0),
        ("10-24", 1, 1),
        ("25-49", 1, 0),
        ("50-74", 1, 1),
        ("75-99", 0, 0),
        ("100-149", 0, 1),
        ("150-199", 0, 0),
        (">=200", 0, 0),
    ]
    .iter()
    .map(|(l, a, b)| ((*l).to_owned(), *a, *b))
    .collect();
    assert_eq!(buckets, expected, "{dialect}");
    assert_eq!(report["scores"]["changed"], json!(3));
    let a_sample = report["scores"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["contact_id"] == json!(a))
        .unwrap()
        .clone();
    assert_eq!(
        a_sample,
        json!({ "contact_id": a, "live": 66, "candidate": 127, "delta": 61 })
    );

    // MQL (50): live a at visit 45 (45 + 5); candidate a and b at visit 23
    // (46 + 5). SQL (100): only the candidate's a, at visit 48 (96 + 5).
    let visit = |n: i64| a_visits - (60 - n) * MINUTE;
    let mql = &report["mql"];
    assert_eq!(
        (
            mql["live_reached"].as_i64(),
            mql["candidate_reached"].as_i64(),
            mql["earlier"].as_i64(),
            mql["later"].as_i64(),
            mql["never"].as_i64(),
            mql["new"].as_i64()
        ),
        (Some(1), Some(2), Some(1), Some(0), Some(0), Some(1)),
        "{dialect}: {mql}"
    );
    let a_mql = mql["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["contact_id"] == json!(a))
        .unwrap()
        .clone();
    assert_eq!(
        (
            a_mql["change"].as_str(),
            a_mql["live_at"].as_i64(),
            a_mql["candidate_at"].as_i64()
        ),
        (Some("earlier"), Some(visit(45)), Some(visit(23))),
        "{dialect}"
    );
    assert!(
        mql["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["contact_id"] == json!(b) && x["change"] == json!("new"))
    );
    let sql = &report["sql"];
    assert_eq!(
        (
            sql["live_reached"].as_i64(),
            sql["candidate_reached"].as_i64(),
            sql["new"].as_i64()
        ),
        (Some(0), Some(1), Some(1)),
        "{dialect}: {sql}"
    );
    assert_eq!(sql["samples"][0]["candidate_at"].as_i64(), Some(visit(48)));

    // Outcomes: a (demo.booked a day after MQL) and c (purchase, never
    // MQL) reached a goal. Live ranks a: precision 1, recall 1/2.
    // Candidate ranks a and b: precision 1/2, recall 1/2; lift 1/2.
    assert!(a_demo - visit(23) < 30 * DAY);
    let outcomes = &report["outcomes"];
    assert_eq!(outcomes["goal_contacts"], json!(2), "{dialect}: {outcomes}");
    assert_eq!(
        outcomes["live"],
        json!({ "ranked": 1, "converted": 1, "precision": 1.0, "recall": 0.5 })
    );
    assert_eq!(
        outcomes["candidate"],
        json!({ "ranked": 2, "converted": 1, "precision": 0.5, "recall": 0.5 })
    );
    assert_eq!(outcomes["lift"], json!(0.5));

    // A one-day window misses a's demo (a day and ~15 minutes after MQL).
    let (status, queued) = post(
        &s,
        "/v1/plugins/version-tag/backtests",
        json!({ "version": "2.0.0", "from": START, "window_days": 1, "goal_events": ["demo.booked"] }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {queued}");
    scheduler.run_until_idle().await.unwrap();
    let (_, second) = get(
        &s,
        &format!("/v1/backtests/{}", queued["id"].as_str().unwrap()),
    )
    .await;
    let outcomes = &second["report"]["outcomes"];
    assert_eq!(
        (
            outcomes["goal_contacts"].as_i64(),
            outcomes["live"]["converted"].as_i64(),
            outcomes["candidate"]["converted"].as_i64()
        ),
        (Some(1), Some(0), Some(0)),
        "{dialect}: {outcomes}"
    );

    // Both are listed, newest first, and nothing live changed.
    let (status, list) = get(&s, "/v1/plugins/version-tag/backtests").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["backtests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![queued["id"].as_str().unwrap(), id.as_str()]);
    assert_eq!(
        live_state(&s).await,
        before,
        "{dialect}: a backtest changed live state"
    );
    s.temp.cleanup(s.store).await;
}

async fn bad_backtests_and_replays_are_refused_and_queue_nothing(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    let rule = embed(
        &guests::INACTIVE_DAYS.bytes(),
        &guests::INACTIVE_DAYS.manifest(),
    )
    .unwrap();
    let (status, body) = call(&s, "POST", "/v1/plugins", Some(rule), false).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(
        &s,
        "/v1/bindings",
        json!({ "name": "idle", "kind": "segment", "plugin": "inactive-days" }),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    history(&s).await;
    let a = s.contact_id("a@example.com").await;
    let before = live_state(&s).await;
    let now = s.clock_now();

    let cases = [
        (
            "version-tag",
            json!({ "version": "9.9.9" }),
            StatusCode::NOT_FOUND,
            "not installed",
        ),
        (
            "no-such-plugin",
            json!({ "version": "1.0.0" }),
            StatusCode::NOT_FOUND,
            "not installed",
        ),
        (
            "inactive-days",
            json!({ "version": "0.1.0", "bindings": ["tag"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is a scorer binding; name a segment binding",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "from": now, "to": now }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "range is empty",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "from": 0, "to": 1000 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no events between",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "bindings": ["engagement"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "runs plugin `engagement`",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "bindings": ["idle"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is a segment binding; name a scorer binding",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "window_days": 0 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "window_days",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "goal_events": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "goal_events",
        ),
        (
            "version-tag",
            json!({ "version": "2.0.0", "colour": "red" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
    ];
    for (plugin, body, expected, message) in cases {
        let (status, error) =
            post(&s, &format!("/v1/plugins/{plugin}/backtests"), body.clone()).await;
        assert_eq!(status, expected, "{dialect}: {plugin} {body}: {error}");
        let text = error["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{dialect}: {body}: {text}");
    }
    let (status, list) = get(&s, "/v1/plugins/version-tag/backtests").await;
    assert_eq!(
        (status, list["backtests"].clone()),
        (StatusCode::OK, json!([]))
    );

    let replays = [
        (
            format!("/v1/contacts/{a}/replay?binding=tag&version=9.9.9"),
            StatusCode::NOT_FOUND,
            "not installed",
        ),
        (
            format!("/v1/contacts/{a}/replay?binding=idle"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is a segment binding; name a scorer binding",
        ),
        (
            format!("/v1/contacts/{a}/replay?binding=nope"),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            "/v1/contacts/c_missing/replay?binding=tag".to_owned(),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            format!("/v1/contacts/{a}/replay"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "binding",
        ),
    ];
    for (path, expected, message) in replays {
        let (status, error) = get(&s, &path).await;
        assert_eq!(status, expected, "{dialect}: {path}: {error}");
        let text = error["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{dialect}: {path}: {text}");
    }
    assert_eq!(
        live_state(&s).await,
        before,
        "{dialect}: a refused request changed live state"
    );
    s.temp.cleanup(s.store).await;
}

/// A node that dies after a page leaves its cursor and figures; after its
/// lease runs out another node adds exactly the contacts after the cursor
/// to the figures saved, instead of starting over.
async fn a_backtest_resumes_from_its_cursor_after_a_crash(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    history(&s).await;
    let mut ids = Vec::new();
    for (email, events) in [
        ("a@example.com", 61),
        ("b@example.com", 30),
        ("c@example.com", 6),
    ] {
        ids.push((s.contact_id(email).await, events));
    }
    ids.sort();
    let (status, queued) = post(
        &s,
        "/v1/plugins/version-tag/backtests",
        json!({ "version": "2.0.0", "from": START }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {queued}");
    let id = queued["id"].as_str().unwrap().to_owned();

    // A node claims the job, saves its first page (one contact, with a
    // marker in the figures) and dies.
    let now = s.clock_now();
    let claimed = s
        .store
        .claim_jobs("doomed-node", now, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{dialect}: {claimed:?}");
    let saved = json!({ "contacts": 1, "failed_calls": 1000 });
    assert!(
        s.store
            .backtest_page_done(&claimed[0], &id, &ids[0].0, 1, &saved, now)
            .await
            .unwrap()
    );
    // Its lease holds: nobody else runs the backtest yet.
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();
    let (_, progress) = get(&s, &format!("/v1/backtests/{id}")).await;
    assert_eq!(
        (progress["done"].as_bool(), progress["evaluated"].as_i64()),
        (Some(false), Some(1)),
        "{dialect}: {progress}"
    );

    s.clock.advance(61_000);
    scheduler.run_until_idle().await.unwrap();
    let (_, done) = get(&s, &format!("/v1/backtests/{id}")).await;
    let rest: i64 = ids[1..].iter().map(|(_, events)| events).sum();
    assert_eq!(
        (
            done["done"].as_bool(),
            done["evaluated"].as_i64(),
            done["report"]["contacts"].as_i64(),
            done["report"]["events"].as_i64(),
            done["report"]["failed_calls"].as_i64(),
        ),
        (Some(true), Some(3), Some(3), Some(rest), Some(1000)),
        "{dialect}: {done}"
    );
    s.temp.cleanup(s.store).await;
}

/// hello (members: contacts with an email) live and bound as segment
/// `emails`; its candidate 0.2.0 is inactive-days' code, which takes in
/// nobody while each event happens (nobody is inactive at that moment).
async fn a_segment_rule_backtest_says_who_would_enter_and_leave(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    let hello = embed(&guests::HELLO.bytes(), &guests::HELLO.manifest()).unwrap();
    let (status, body) = call(&s, "POST", "/v1/plugins", Some(hello), false).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut manifest = guests::HELLO.manifest();
    manifest.version = "0.2.0".into();
    let candidate = embed(&guests::INACTIVE_DAYS.bytes(), &manifest).unwrap();
    let (status, body) = call(
        &s,
        "POST",
        "/v1/plugins?activate=false",
        Some(candidate),
        false,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = post(
        &s,
        "/v1/bindings",
        json!({ "name": "emails", "kind": "segment", "plugin": "hello" }),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();
    history(&s).await;
    let before = live_state(&s).await;

    // A version of another world is never installed beside a rule (409),
    // so a backtest of it is refused as unknown.
    let mut scorer = guests::VERSION_TAG.manifest();
    scorer.name = "hello".into();
    scorer.version = "0.3.0".into();
    let other_world = embed(&guests::VERSION_TAG.bytes(), &scorer).unwrap();
    let (status, body) = call(
        &s,
        "POST",
        "/v1/plugins?activate=false",
        Some(other_world),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dialect}: {body}");
    let (status, error) = post(
        &s,
        "/v1/plugins/hello/backtests",
        json!({ "version": "0.3.0" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{dialect}: {error}");

    // A scorer binding is not one of a rule's bindings.
    let (status, error) = post(
        &s,
        "/v1/plugins/hello/backtests",
        json!({ "version": "0.2.0", "bindings": ["tag"] }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {error}"
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is a scorer binding; name a segment binding"),
        "{error}"
    );

    let (status, queued) = post(
        &s,
        "/v1/plugins/hello/backtests",
        json!({ "version": "0.2.0", "from": START }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {queued}");
    scheduler.run_until_idle().await.unwrap();
    let (_, done) = get(
        &s,
        &format!("/v1/backtests/{}", queued["id"].as_str().unwrap()),
    )
    .await;
    let report = &done["report"];
    assert_eq!(
        report["plan"]["world"],
        json!("segment-rule"),
        "{dialect}: {done}"
    );
    let segment = &report["segment"];
    assert_eq!(
        (
            segment["live_members"].as_i64(),
            segment["candidate_members"].as_i64(),
            segment["entered"].as_i64(),
            segment["left"].as_i64(),
            segment["samples"].as_array().map(Vec::len),
        ),
        (Some(3), Some(0), Some(0), Some(3), Some(3)),
        "{dialect}: {report}"
    );
    assert!(
        segment["samples"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["change"] == json!("left"))
    );
    // Live puts all three in at their first visit; a's demo and c's
    // purchase follow within 30 days. The candidate ranks nobody.
    let outcomes = &report["outcomes"];
    assert_eq!(
        outcomes["live"],
        json!({ "ranked": 3, "converted": 2, "precision": 2.0 / 3.0, "recall": 1.0 }),
        "{dialect}: {outcomes}"
    );
    assert_eq!(
        outcomes["candidate"],
        json!({ "ranked": 0, "converted": 0, "precision": null, "recall": 0.0 })
    );
    assert_eq!(outcomes["lift"], json!(null));
    assert_eq!(
        live_state(&s).await,
        before,
        "{dialect}: a backtest changed live state"
    );
    s.temp.cleanup(s.store).await;
}

/// Two journeys start when a contact reaches MQL, each with one send: one
/// any time, one in business hours (b reaches MQL on a Friday at 23:49
/// in Berlin, so that send waits for Monday). Live, only a reaches MQL; the candidate also takes
/// b there. a gave no consent, b did: the candidate's new enrolments of b
/// would send once and defer once; a's are skipped either way. Nothing is
/// enrolled, queued or sent for real.
async fn consequences_go_through_the_policy_gate_and_nothing_is_sent(dialect: &str) {
    let s = setup(dialect).await;
    install(&s).await;
    history(&s).await;
    let a = s.contact_id("a@example.com").await;
    let b = s.contact_id("b@example.com").await;
    let sink = nachfass_tests::HttpSink::start(200).await;
    let webhook = embed(&guests::WEBHOOK.bytes(), &guests::WEBHOOK.manifest()).unwrap();
    let (status, body) = call(&s, "POST", "/v1/plugins", Some(webhook), false).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(
        &s,
        "/v1/bindings",
        json!({ "name": "hook", "kind": "channel", "plugin": "webhook",
                "config": { "url": format!("http://{}/hook", sink.addr), "secret": "s" },
                "allow_http": [sink.addr.to_string()] }),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let consent = nachfass::store::Consent {
        channel: "webhook".into(),
        purpose: nachfass::model::status::Purpose::Marketing,
        status: nachfass::model::status::ConsentStatus::Granted,
        source: Some("test".into()),
        text_version: None,
        ip: None,
        user_agent: None,
        updated_at: 0,
    };
    s.store.set_consent(&b, &consent, START).await.unwrap();
    for (name, window) in [
        (
            "mql-any-time",
            json!({ "days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "24:00" }),
        ),
        ("mql-office-hours", json!(null)),
    ] {
        let mut def = json!({ "name": name, "trigger": { "stage_changed": "mql" },
            "steps": [ { "id": "hello", "type": "send", "binding": "hook", "template": { "text": "hello" } } ] });
        if !window.is_null() {
            def["send_window"] = window;
        }
        s.journeys.save(def.to_string().as_bytes()).await.unwrap();
    }
    let before = live_state(&s).await;

    let (status, queued) = post(
        &s,
        "/v1/plugins/version-tag/backtests",
        json!({ "version": "2.0.0", "from": START, "to": s.clock_now() + 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {queued}");
    let id = queued["id"].as_str().unwrap().to_owned();
    let scheduler = Scheduler::new(s.journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();
    let (status, done) = get(&s, &format!("/v1/backtests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["error"], json!(null), "{dialect}: {done}");
    let consequences = &done["report"]["consequences"];
    assert_eq!(
        consequences["live"],
        json!({ "enrolments": 2, "sent": 0, "deferred": 0, "skipped": 2, "no_send_known": 0 }),
        "{dialect}: {consequences}"
    );
    assert_eq!(
        consequences["candidate"],
        json!({ "enrolments": 4, "sent": 1, "deferred": 1, "skipped": 2, "no_send_known": 0 }),
        "{dialect}: {consequences}"
    );
    assert_eq!(
        (&consequences["new"], &consequences["dropped"]),
        (&json!(2), &json!(0)),
        "{consequences}"
    );
    let mut samples: Vec<Value> = consequences["samples"].as_array().unwrap().clone();
    samples.sort_by_key(|x| x["journey"].as_str().unwrap().to_owned());
    assert_eq!(samples.len(), 2, "{consequences}");
    for sample in &samples {
        assert_eq!(
            (&sample["contact_id"], &sample["change"]),
            (&json!(b), &json!("new")),
            "{sample}"
        );
    }
    assert_eq!(
        (&samples[0]["journey"], &samples[0]["decision"]),
        (&json!("mql-any-time"), &json!("send")),
        "{samples:?}"
    );
    assert_eq!(
        (&samples[1]["journey"], &samples[1]["decision"]),
        (&json!("mql-office-hours"), &json!("defer")),
        "{samples:?}"
    );
    assert!(
        samples[1]["reason"]
            .as_str()
            .unwrap()
            .contains("outside send window until Mon 08:00"),
        "{samples:?}"
    );
    // Nothing happened for real: no run, no message, no delivery.
    for contact in [&a, &b] {
        let (_, runs) = get(&s, &format!("/v1/contacts/{contact}/journeys")).await;
        assert_eq!(runs["runs"], json!([]), "{dialect}: {runs}");
        let (_, messages) = get(&s, &format!("/v1/contacts/{contact}/messages")).await;
        assert_eq!(messages["messages"], json!([]), "{dialect}: {messages}");
    }
    assert!(
        sink.received().is_empty(),
        "{dialect}: a backtest delivered"
    );
    let mut after = live_state(&s).await;
    // The backtest's own job is the only new job, done.
    after["jobs"] = before["jobs"].clone();
    assert_eq!(after, before, "{dialect}");
    s.temp.cleanup(s.store).await;
}
