//! The REST API in-process (`app(state)` + `oneshot`) on SQLite and
//! PostgreSQL: authorization, errors, dedupe, batch ingestion, timeline.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::runtime::Registry;
use nachfass::store::{Scope, Store};
use nachfass_tests::DAY;
use serde_json::{Value, json};

struct Client {
    router: axum::Router,
}

impl Client {
    fn new(store: Store) -> Client {
        let pipeline = nachfass_tests::world::pipeline(
            store,
            Arc::new(Registry::new(nachfass_tests::runtime())),
            Arc::new(ManualClock::new(100 * DAY)),
        );
        let mut state = AppState::new(pipeline, None);
        // This clock stands in 1970: accept the small event times these
        // tests send (the range itself is tested in hardening.rs).
        state.event_times.oldest = 0;
        Client { router: app(state) }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let content_type = body.is_some().then_some("application/json");
        let body = body.map_or_else(Body::empty, Body::from);
        nachfass_tests::client::request(&self.router, method, path, key, content_type, body).await
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(key), Some(body.to_string()))
            .await
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send("GET", path, Some(key), None).await
    }
}

async fn every_route_checks_the_key_and_its_scope(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let (_, reader) = store
        .create_api_key("reader", &[Scope::Read], 0)
        .await
        .unwrap();
    let (_, ingest) = store
        .create_api_key("site", &[Scope::Ingest], 0)
        .await
        .unwrap();
    let client = Client::new(store.clone());
    let (_, created) = client
        .post(
            "/v1/contacts",
            &admin,
            json!({ "email": "ada@acme.example" }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let routes = [
        (
            "POST",
            "/v1/contacts".to_owned(),
            Some(json!({ "email": "x@acme.example" })),
            Scope::Write,
        ),
        ("GET", format!("/v1/contacts/{id}"), None, Scope::Read),
        (
            "GET",
            format!("/v1/contacts/{id}/timeline"),
            None,
            Scope::Read,
        ),
        ("DELETE", format!("/v1/contacts/{id}"), None, Scope::Write),
        (
            "POST",
            "/v1/events".to_owned(),
            Some(json!({ "kind": "x", "email": "y@acme.example" })),
            Scope::Ingest,
        ),
    ];
    for (method, path, body, scope) in routes {
        let body = body.map(|b| b.to_string());
        let (status, error) = client.send(method, &path, None, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{dialect} {method} {path}"
        );
        assert_eq!(error["error"]["code"], "unauthorized");
        let (status, _) = client
            .send(method, &path, Some("nf_forged"), body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{dialect} {method} {path}"
        );
        let wrong = if scope == Scope::Read {
            &ingest
        } else {
            &reader
        };
        let (status, error) = client.send(method, &path, Some(wrong), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{dialect} {method} {path}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("scope"),
            "{error}"
        );
    }
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    every_route_checks_the_key_and_its_scope
);

async fn contacts_dedupe_and_bad_input_changes_nothing(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, key) = store
        .create_api_key("writer", &[Scope::Write, Scope::Read], 0)
        .await
        .unwrap();
    let client = Client::new(store.clone());
    let (status, first) = client
        .post(
            "/v1/contacts",
            &key,
            json!({ "email": " Ada@ACME.example", "attributes": { "industry": "software" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    let (status, second) = client
        .post(
            "/v1/contacts",
            &key,
            json!({ "email": "ada@acme.example", "attributes": { "employees": 250 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        second["attributes"],
        json!({ "industry": "software", "employees": 250 })
    );

    let (status, error) = client
        .post("/v1/contacts", &key, json!({ "mail": "x@acme.example" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `mail`"),
        "{error}"
    );
    let (status, error) = client
        .send(
            "POST",
            "/v1/contacts",
            Some(&key),
            Some("{\"email\": ".into()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {error}"
    );
    let (status, _) = client
        .post("/v1/contacts", &key, json!({ "email": "nope" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    let (status, error) = client.get("/v1/contacts/c_missing", &key).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let huge =
        json!({ "email": "big@acme.example", "attributes": { "blob": "x".repeat(5 << 20) } });
    let (status, _) = client.post("/v1/contacts", &key, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    contacts_dedupe_and_bad_input_changes_nothing
);

async fn batches_keep_valid_items_and_resends_are_idempotent(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, site) = store
        .create_api_key("site", &[Scope::Ingest], 0)
        .await
        .unwrap();
    let (_, reader) = store
        .create_api_key("reader", &[Scope::Read], 0)
        .await
        .unwrap();
    let client = Client::new(store.clone());
    let batch = json!({ "events": [
        { "kind": "page.visited", "email": "eve@example.org", "at": 10, "client_event_id": "v-1" },
        { "kind": "Bad Kind", "email": "eve@example.org" },
        { "kind": "download", "email": "eve@example.org", "at": 20, "properties": { "asset": "wp.pdf" } },
        { "kind": "download", "oops": true },
        { "kind": "download" }
    ]});
    let (status, report) = client.post("/v1/events", &site, batch).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{dialect}: {report}");
    assert_eq!(
        (report["accepted"].as_i64(), report["rejected"].as_i64()),
        (Some(2), Some(3))
    );
    assert!(
        report["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("event kind"),
        "{report}"
    );
    assert!(
        report["results"][3]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `oops`"),
        "{report}"
    );

    let resend = json!({ "kind": "page.visited", "email": "eve@example.org", "at": 10, "client_event_id": "v-1" });
    let (status, again) = client.post("/v1/events", &site, resend).await;
    assert_eq!(
        (status, again["duplicate"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{dialect}"
    );
    let contact_id = again["event"]["contact_id"].as_str().unwrap().to_owned();

    let (status, timeline) = client
        .get(&format!("/v1/contacts/{contact_id}/timeline"), &reader)
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["download", "page.visited"],
        "newest first, the resend recorded once: {dialect}"
    );

    let too_many = json!({ "events": vec![json!({ "kind": "x", "email": "a@b.example" }); 1001] });
    let (status, _) = client.post("/v1/events", &site, too_many).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    batches_keep_valid_items_and_resends_are_idempotent
);

/// The path with every parameter filled in with something that exists nowhere.
fn concrete(path: &str) -> String {
    path.replace("{id}", "c_none")
        .replace("{name}", "none")
        .replace("{template}", "none")
        .replace("{binding}", "none")
        .replace("{token}", "none")
        .replace("{key}", "none")
        .replace("{version}", "1")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The router and the document come from the same `routes!` lists; this
/// checks it from outside: every documented operation is served (no 405,
/// no "no route"), every other method on a documented path is refused
/// with 405, nothing in `api.rs` adds a route around the lists, and every
/// operation's documented scope is the one enforced.
async fn the_openapi_document_matches_the_routes(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let mut keys = std::collections::HashMap::new();
    for scope in [Scope::Admin, Scope::Write, Scope::Read, Scope::Ingest] {
        let (_, key) = store
            .create_api_key(scope.as_str(), &[scope], 0)
            .await
            .unwrap();
        keys.insert(scope.as_str(), key);
    }
    let admin = keys["admin"].clone();
    let client = Client::new(store.clone());
    let (status, document) = client.send("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() > 50, "{} paths", paths.len());
    for (path, methods) in paths {
        let concrete = concrete(path);
        let methods = methods.as_object().unwrap();
        for method in METHODS {
            let body = (method != "get" && method != "delete").then(|| "{}".to_owned());
            let (status, answer) = client
                .send(
                    &method.to_uppercase(),
                    &concrete,
                    Some(&admin),
                    body.clone(),
                )
                .await;
            let Some(operation) = methods.get(method) else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
                continue;
            };
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                status != StatusCode::NOT_FOUND || answer["error"]["code"] == "not_found",
                "{method} {path} has no route"
            );
            assert!(
                operation["responses"].as_object().is_some_and(|r| r
                    .keys()
                    .any(|code| code.starts_with('2') || code.starts_with('3'))),
                "{method} {path} documents no success answer"
            );
            assert_eq!(
                operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{method} {path} documents the error shape"
            );
            let Some(security) = operation.get("security") else {
                continue;
            };
            let scopes = security[0]["apiKey"].as_array().unwrap();
            assert_eq!(scopes.len(), 1, "{method} {path}: one scope");
            let needed = scopes[0].as_str().unwrap();
            let (status, _) = client
                .send(&method.to_uppercase(), &concrete, None, None)
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} is documented as needing a key"
            );
            let (status, answer) = client
                .send(
                    &method.to_uppercase(),
                    &concrete,
                    Some(&keys[needed]),
                    body.clone(),
                )
                .await;
            assert_ne!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path}: a key with the documented scope `{needed}` is refused: {answer}"
            );
            // Events also take `write`; every other operation only its
            // scope (or admin).
            for (scope, key) in &keys {
                if *scope == needed
                    || *scope == "admin"
                    || (needed == "ingest" && *scope == "write")
                {
                    continue;
                }
                let (status, _) = client
                    .send(&method.to_uppercase(), &concrete, Some(key), body.clone())
                    .await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} needs `{needed}`, a `{scope}` key gets through"
                );
            }
        }
    }
    // Routes only come from `routes!` lists, which document them.
    let source = include_str!("../../host/src/api.rs");
    for around in [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".merge(",
        ".fallback",
    ] {
        assert!(
            !source.contains(around),
            "host/src/api.rs adds a route with `{around}`, outside the documented `routes!` lists"
        );
    }
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    the_openapi_document_matches_the_routes
);

/// The served document is valid OpenAPI 3.x, as a real validator
/// (`openapi-spec-validator` from PyPI; `tests/run` installs it) reads it.
#[tokio::test]
async fn the_openapi_document_is_valid() {
    let (store, temp) = nachfass_tests::store("sqlite").await;
    let client = Client::new(store.clone());
    let (status, document) = client.send("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let check = |file: &std::path::Path| {
        std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("python3 cannot run ({e}): run `tests/run`"))
    };
    let run = check(&file);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !report.contains("No module named"),
        "openapi-spec-validator is missing: run `tests/run`, which installs it from PyPI\n{report}"
    );
    assert!(run.status.success(), "the document is not valid:\n{report}");
    // The validator can fail: a broken document is refused.
    let mut broken = document.clone();
    broken["paths"]["/v1/contacts"]["get"]["responses"] = json!("none");
    std::fs::write(&file, serde_json::to_vec(&broken).unwrap()).unwrap();
    assert!(!check(&file).status.success(), "a broken document passes");
    temp.cleanup(store).await;
}

async fn contacts_list_with_filters_and_merge_moves_everything(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, key) = store
        .create_api_key("writer", &[Scope::Write, Scope::Read, Scope::Ingest], 0)
        .await
        .unwrap();
    let client = Client::new(store.clone());
    for i in 0..5 {
        client
            .post(
                "/v1/contacts",
                &key,
                json!({ "email": format!("p{i}@liste.example") }),
            )
            .await;
    }
    let (_, first) = client
        .post(
            "/v1/events",
            &key,
            json!({ "kind": "signup", "email": "ada@liste.example", "at": 1 }),
        )
        .await;
    let ada = first["event"]["contact_id"].as_str().unwrap().to_owned();
    let (_, second) = client
        .post(
            "/v1/events",
            &key,
            json!({ "kind": "download", "external_id": "crm-2", "at": 2 }),
        )
        .await;
    let dup = second["event"]["contact_id"].as_str().unwrap().to_owned();
    client
        .post(
            "/v1/contacts",
            &key,
            json!({ "external_id": "crm-2", "attributes": { "company": "Fabrik AG" } }),
        )
        .await;
    let change = nachfass::model::ScoreChange {
        delta: 5,
        reasons: vec!["test".into()],
    };
    store
        .apply_score(&dup, "manual", &change, None, 3)
        .await
        .unwrap();

    let (status, page) = client.get("/v1/contacts?limit=4", &key).await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    assert_eq!(page["contacts"].as_array().unwrap().len(), 4, "{dialect}");
    let after = page["next_after"].as_str().unwrap();
    let (_, rest) = client
        .get(&format!("/v1/contacts?limit=4&after={after}"), &key)
        .await;
    assert_eq!(
        rest["contacts"].as_array().unwrap().len(),
        3,
        "7 contacts in all: {dialect}"
    );
    let (_, scored) = client.get("/v1/contacts?min_score=1", &key).await;
    assert_eq!(scored["contacts"].as_array().unwrap().len(), 1, "{dialect}");
    let (status, _) = client.get("/v1/contacts?colour=blue", &key).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown filters are refused: {dialect}"
    );

    let (status, report) = client
        .post(
            &format!("/v1/contacts/{ada}/merge"),
            &key,
            json!({ "from": dup }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {report}");
    assert_eq!(
        (
            report["events_moved"].as_u64(),
            report["score_added"].as_i64()
        ),
        (Some(1), Some(5)),
        "{dialect}"
    );
    let (_, merged) = client.get(&format!("/v1/contacts/{ada}"), &key).await;
    assert_eq!(merged["external_id"], "crm-2", "{dialect}");
    assert_eq!(merged["attributes"]["company"], "Fabrik AG", "{dialect}");
    assert_eq!(merged["score"], 5, "{dialect}");
    let (status, _) = client.get(&format!("/v1/contacts/{dup}"), &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{dialect}");
    let (_, timeline) = client
        .get(&format!("/v1/contacts/{ada}/timeline"), &key)
        .await;
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["contact.merged", "download", "signup"], "{dialect}");
    let (status, _) = client
        .post(
            &format!("/v1/contacts/{ada}/merge"),
            &key,
            json!({ "from": ada }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    contacts_list_with_filters_and_merge_moves_everything
);

async fn concurrent_clients_never_see_a_failed_ingest(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, key) = store
        .create_api_key("site", &[Scope::Ingest], 0)
        .await
        .unwrap();
    let client = Arc::new(Client::new(store.clone()));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (client, key) = (client.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..15 {
                // The same few new identities from every worker at once.
                let event = json!({ "kind": "page.visited", "email": format!("race{}@example.org", i % 3),
                                    "client_event_id": format!("w{worker}-{i}") });
                statuses.push(client.post("/v1/events", &key, event).await);
            }
            statuses
        }));
    }
    for task in tasks {
        for (status, body) in task.await.unwrap() {
            assert_eq!(status, StatusCode::CREATED, "{dialect}: {body}");
        }
    }
    let contacts = store.list_contacts(&Default::default()).await.unwrap();
    assert_eq!(contacts.len(), 3, "one contact per identity: {dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_clients_never_see_a_failed_ingest
);

async fn journeys_are_validated_versioned_and_enrolled_over_http(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let (_, reader) = store
        .create_api_key("reader", &[Scope::Read], 0)
        .await
        .unwrap();
    let hook = nachfass::store::BindingDef {
        name: "mail-hook".into(),
        kind: nachfass::store::BindingKind::Channel,
        plugin: "webhook".into(),
        config: Default::default(),
        allow_http: vec!["127.0.0.1:9".into()],
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&hook, 0).await.unwrap();
    let client = Client::new(store.clone());
    let put = |body: String, key: String| {
        let client = &client;
        async move {
            client
                .send("PUT", "/v1/journeys/nurture", Some(&key), Some(body))
                .await
        }
    };

    let (status, answer) = put("{\"name\": ".into(), admin.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("EOF"),
        "{dialect}: {answer}"
    );

    let broken = json!({ "name": "nurture", "trigger": { "segment_entered": "nope" }, "steps": [
        { "id": "a", "type": "send", "binding": "sms", "template": { "text": "{{ x" }, "next": "ghost" },
        { "id": "b", "type": "branch", "condition": { "score_at_least": 1 }, "then": "b", "else": "a" } ] });
    let (status, answer) = put(broken.to_string(), admin.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    let problems = answer["error"]["details"]["problems"].to_string();
    for expected in [
        "unknown segment `nope`",
        "missing binding `sms`",
        "unknown step target `ghost`",
        "does not parse",
    ] {
        assert!(
            problems.contains(expected),
            "{dialect}: {expected} in {problems}"
        );
    }
    assert_eq!(
        store.latest_journeys().await.unwrap().len(),
        0,
        "{dialect}: nothing saved"
    );

    let mut good = json!({ "name": "nurture", "trigger": "manual", "steps": [
        { "id": "hello", "type": "send", "binding": "mail-hook", "template": { "subject": "Hallo", "text": "Hallo {{ contact.email }}" } } ] });
    let (status, _) = put(good.to_string(), reader.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{dialect}");
    let (status, saved) = put(good.to_string(), admin.clone()).await;
    assert_eq!(
        (status, saved["version"].as_i64()),
        (StatusCode::CREATED, Some(1)),
        "{dialect}"
    );
    let (status, saved) = put(good.to_string(), admin.clone()).await;
    assert_eq!(
        (status, saved["created"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{dialect}"
    );
    good["steps"][0]["template"]["subject"] = json!("Guten Tag");
    let (_, saved) = put(good.to_string(), admin.clone()).await;
    assert_eq!(saved["version"], 2, "{dialect}");
    let (_, v1) = client.get("/v1/journeys/nurture/versions/1", &reader).await;
    assert_eq!(
        v1["definition"]["steps"][0]["template"]["subject"], "Hallo",
        "{dialect}"
    );

    let (status, contact) = client
        .post(
            "/v1/contacts",
            &admin,
            json!({ "email": "ada@b2b.example" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    let id = contact["id"].as_str().unwrap().to_owned();
    let enroll = json!({ "contact_id": id });
    let (status, first) = client
        .post("/v1/journeys/nurture/enroll", &admin, enroll.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    assert!(
        first["run_id"].as_str().unwrap().starts_with("r_"),
        "{dialect}"
    );
    let (status, second) = client
        .post("/v1/journeys/nurture/enroll", &admin, enroll)
        .await;
    assert_eq!(
        (status, &second["run_id"]),
        (StatusCode::OK, &Value::Null),
        "{dialect}: one open run"
    );
    let (status, preview) = client
        .post(
            "/v1/journeys/nurture/preview",
            &admin,
            json!({ "contact_id": id, "step": "hello" }),
        )
        .await;
    assert_eq!(
        (status, preview["text"].as_str()),
        (StatusCode::OK, Some("Hallo ada@b2b.example")),
        "{dialect}"
    );
    assert_eq!(
        preview["subject"], "Guten Tag",
        "{dialect}: the latest version"
    );
    let (status, _) = client
        .post(
            "/v1/journeys/nurture/preview",
            &admin,
            json!({ "contact_id": id, "step": "nope" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    let (_, runs) = client
        .get(&format!("/v1/contacts/{id}/journeys"), &reader)
        .await;
    assert_eq!(runs["runs"][0]["version"], 2, "{dialect}");
    let (_, queue) = client.get("/v1/scheduler", &reader).await;
    assert_eq!(
        queue["jobs"]["due"], 1,
        "{dialect}: the run's first step waits for the scheduler"
    );

    let (status, _) = client
        .send(
            "PUT",
            &format!("/v1/contacts/{id}/consents"),
            Some(&admin),
            Some(json!({ "channel": "email", "status": "maybe" }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    let consent = json!({ "channel": "email", "status": "granted", "source": "signup form", "ip": "192.0.2.7" });
    let (status, answer) = client
        .send(
            "PUT",
            &format!("/v1/contacts/{id}/consents"),
            Some(&admin),
            Some(consent.to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    assert_eq!(answer["consents"][0]["purpose"], "marketing", "{dialect}");

    let (status, _) = client
        .send(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(&admin),
            Some(json!({ "attributes": { "first_name": "Ada" } }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let (status, _) = client
        .post(&format!("/v1/contacts/{id}/object"), &admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let (status, _) = client
        .get(&format!("/v1/contacts/{id}/export"), &reader)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{dialect}: an export needs admin"
    );
    let (status, export) = client
        .get(&format!("/v1/contacts/{id}/export"), &admin)
        .await;
    assert_eq!(
        (status, &export["contact"]["attributes"]["first_name"]),
        (StatusCode::OK, &json!("Ada")),
        "{dialect}"
    );
    assert_eq!(export["suppressions"][0]["reason"], "objected", "{dialect}");
    let (_, audit) = client
        .get(&format!("/v1/contacts/{id}/audit"), &admin)
        .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["consent.granted", "rectified", "objected", "exported"],
        "{dialect}"
    );
    assert_eq!(
        audit["entries"][1]["detail"]["fields"],
        json!(["first_name"]),
        "{dialect}"
    );
    let (status, metrics) = client.get("/metrics", &reader).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert_eq!(status, StatusCode::OK, "{dialect}");
    for expected in [
        "nachfass_http_requests_total{method=\"PUT\",route=\"/v1/journeys/{name}\",status=\"201\"}",
        "nachfass_scheduler_jobs{state=\"due\"} ",
        "nachfass_scheduler_lag_seconds ",
        "nachfass_events_ingested_total ",
        // Latency as real histograms with buckets, not a summary.
        "# TYPE nachfass_http_request_duration_seconds histogram",
        "nachfass_http_request_duration_seconds_bucket{method=\"PUT\",route=\"/v1/journeys/{name}\",le=\"0.005\"}",
    ] {
        assert!(
            metrics.contains(expected),
            "{dialect}: {expected} in\n{metrics}"
        );
    }
    let (_, templates) = client.get("/v1/journey-templates", &reader).await;
    assert_eq!(
        templates["templates"].as_array().unwrap().len(),
        9,
        "{dialect}"
    );
    let (status, _) = client
        .post(
            "/v1/journey-templates/cart-abandonment/install",
            &admin,
            json!({ "binding": "nope" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: the binding must exist"
    );
    let (status, installed) = client
        .post(
            "/v1/journey-templates/cart-abandonment/install",
            &admin,
            json!({ "binding": "mail-hook", "name": "warenkorb" }),
        )
        .await;
    assert_eq!(
        (status, &installed["name"]),
        (StatusCode::CREATED, &json!("warenkorb")),
        "{dialect}"
    );
    let (_, list) = client.get("/v1/journeys", &reader).await;
    let names: Vec<&str> = list["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nurture", "warenkorb"], "{dialect}");
    let (status, _) = client
        .post("/v1/journeys/warenkorb/stop", &admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let (_, shown) = client.get("/v1/journeys/warenkorb", &reader).await;
    assert_eq!(shown["active"], false, "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    journeys_are_validated_versioned_and_enrolled_over_http
);
