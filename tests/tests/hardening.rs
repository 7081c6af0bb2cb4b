//! Hardening (issue 11): bad input at the edge, consent proof, merges that
//! keep mail working, one error shape. In-process (`app(state)` +
//! `oneshot`), each test once per dialect.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::api::{AppState, app};
use nachfass::clock::{Clock, ManualClock};
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::store::{BindingDef, BindingKind, Scope, Store};
use nachfass::tracking::TokenKind;
use nachfass_tests::{DAY, TempStore, guests};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Stamps `name::sqlite` and `name::postgres` from `async fn name(dialect)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name("sqlite").await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name("postgres").await
            }
        }
    )*};
}

on_both!(
    nul_characters_are_refused_naming_the_field,
    event_times_outside_the_range_are_refused,
    time_zones_must_be_iana_names,
    a_reused_client_event_id_conflicts_without_data,
    the_batch_wrapper_is_strict_and_scope_comes_first,
    members_of_an_unknown_segment_are_404,
    every_error_has_the_json_shape,
    a_confirmation_needs_a_post_and_proves_the_socket_address,
    message_tokens_are_redacted_for_keys_without_admin,
    a_merge_keeps_messages_consents_and_suppressions,
    health_and_readiness_answer_without_a_key,
    an_unknown_callback_binding_answers_like_a_bad_signature,
    only_links_written_in_the_template_are_tracked,
);

/// 2026-11-02T10:00:00Z.
const NOW: i64 = 1_793_613_600_000;

struct Api {
    router: axum::Router,
    store: Store,
    journeys: Arc<Journeys>,
    clock: Arc<ManualClock>,
    admin: String,
    reader: String,
    ingest: String,
    temp: TempStore,
}

impl Api {
    async fn new(dialect: &str) -> Api {
        Api::with(dialect, |_| {}).await
    }

    async fn with(dialect: &str, configure: impl FnOnce(&mut AppState)) -> Api {
        let (store, temp) = nachfass_tests::store(dialect).await;
        let registry = Arc::new(Registry::new(nachfass_tests::runtime()));
        registry
            .install_file(&guests::WEBHOOK.packed(), Activation::Now)
            .await
            .unwrap();
        let hook = BindingDef {
            name: "mail-hook".into(),
            kind: BindingKind::Channel,
            plugin: "webhook".into(),
            config: [
                ("url".to_owned(), "http://127.0.0.1:9/hook".to_owned()),
                ("secret".to_owned(), "s3cret".to_owned()),
            ]
            .into(),
            allow_http: vec!["127.0.0.1:9".into()],
            version: None,
            limits: Default::default(),
            paused: None,
            rate: None,
        };
        store.create_binding(&hook, 0).await.unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let pipeline = nachfass_tests::world::pipeline(store.clone(), registry, clock.clone());
        let journeys = Journeys::new(pipeline, Policy::default());
        let mut state = AppState::with_journeys(journeys.clone(), None);
        configure(&mut state);
        let key = |name: &'static str, scope: Scope| {
            let store = store.clone();
            async move { store.create_api_key(name, &[scope], 0).await.unwrap().1 }
        };
        Api {
            router: app(state),
            admin: key("admin", Scope::Admin).await,
            reader: key("reader", Scope::Read).await,
            ingest: key("site", Scope::Ingest).await,
            store,
            journeys,
            clock,
            temp,
        }
    }

    async fn close(self) {
        self.temp.cleanup(self.store).await;
    }

    /// Any request; `raw` is the body as bytes (JSON or not).
    async fn raw(
        &self,
        request: axum::http::request::Builder,
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = request.body(Body::from(body)).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, json)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let (status, _, json) = self
            .raw(request, body.unwrap_or("").as_bytes().to_vec())
            .await;
        (status, json)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(key), Some(&body.to_string()))
            .await
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send("GET", path, Some(key), None).await
    }

    async fn contact(&self, email: &str) -> String {
        let (status, created) = self
            .post("/v1/contacts", &self.admin, json!({ "email": email }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    async fn events(&self, contact: &str) -> Vec<Value> {
        let (_, timeline) = self
            .get(&format!("/v1/contacts/{contact}/timeline"), &self.admin)
            .await;
        timeline["events"].as_array().unwrap().clone()
    }

    /// The `/c/…` link of the contact's newest confirmation message, as an
    /// admin sees it.
    async fn confirmation_path(&self, contact: &str) -> String {
        let (_, messages) = self
            .get(&format!("/v1/contacts/{contact}/messages"), &self.admin)
            .await;
        let text = messages["messages"][0]["message"]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        let start = text.find("/c/").unwrap();
        let end = text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |e| start + e);
        text[start..end].to_owned()
    }

    async fn request_consent(&self, contact: &str) {
        let (status, answer) = self
            .post(
                &format!("/v1/contacts/{contact}/consents/request"),
                &self.admin,
                json!({ "channel": "webhook", "binding": "mail-hook", "source": "form" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
}

fn message(error: &Value) -> String {
    error["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn nul_characters_are_refused_naming_the_field(dialect: &str) {
    let api = Api::new(dialect).await;
    for (field, body) in [
        (
            "external_id",
            json!({ "email": "a@x.example", "external_id": "crm\u{0}1" }),
        ),
        (
            "phone",
            json!({ "email": "a@x.example", "phone": "+49\u{0}" }),
        ),
        (
            "timezone",
            json!({ "email": "a@x.example", "timezone": "Europe/Berlin\u{0}" }),
        ),
        (
            "attributes.city",
            json!({ "email": "a@x.example", "attributes": { "city": "K\u{0}ln" } }),
        ),
    ] {
        let (status, error) = api.post("/v1/contacts", &api.admin, body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{dialect} {field}"
        );
        assert!(
            message(&error).contains(&format!("`{field}`")) && message(&error).contains("NUL"),
            "{dialect}: {error}"
        );
    }
    assert_eq!(api.store.count_contacts().await.unwrap(), 0, "{dialect}");

    let (status, error) = api
        .post(
            "/v1/events",
            &api.ingest,
            json!({ "kind": "x", "email": "a@x.example", "client_event_id": "v\u{0}1" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(message(&error).contains("`client_event_id`"), "{error}");

    for (path, name) in [
        ("/v1/contacts?q=a%00b", "q"),
        ("/v1/contacts?segment=%00", "segment"),
        ("/v1/contacts?after=c%00", "after"),
        ("/v1/segments/hot%00/members?after=x", "name"),
        ("/v1/contacts/c_%00/timeline", "id"),
    ] {
        let (status, error) = api.get(path, &api.admin).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{dialect} {path}: {error}"
        );
        assert!(
            message(&error).contains(&format!("`{name}`")),
            "{dialect} {path}: {error}"
        );
    }

    // A batch reports the bad item by index and keeps the others; a retry
    // of the same batch answers the same way instead of failing.
    let batch = json!({ "events": [
        { "kind": "signup", "email": "b@x.example", "client_event_id": "b-1" },
        { "kind": "signup", "email": "c@x.example", "external_id": "e\u{0}" },
        { "kind": "signup", "email": "d@x.example", "client_event_id": "b-3" },
    ] });
    for attempt in 0..2 {
        let (status, answer) = api.post("/v1/events", &api.ingest, batch.clone()).await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{dialect}: {answer}");
        assert_eq!(answer["accepted"], 2, "{dialect}");
        assert_eq!(answer["results"][1]["index"], 1);
        assert!(
            answer["results"][1]["error"]
                .as_str()
                .unwrap()
                .contains("`external_id`"),
            "{answer}"
        );
        assert_eq!(answer["results"][2]["duplicate"], attempt == 1, "{answer}");
    }
    assert_eq!(api.store.count_contacts().await.unwrap(), 2, "{dialect}");
    api.close().await;
}

async fn event_times_outside_the_range_are_refused(dialect: &str) {
    let api = Api::new(dialect).await;
    let id = api.contact("ada@x.example").await;
    for at in [i64::MAX, i64::MIN, 0, 1_700_000_000, NOW + 2 * DAY] {
        let (status, error) = api
            .post(
                "/v1/events",
                &api.ingest,
                json!({ "kind": "page.visited", "contact_id": id, "at": at }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{dialect} {at}: {error}"
        );
        assert!(message(&error).contains("`at`"), "{error}");
    }
    let (status, _) = api
        .post(
            "/v1/events",
            &api.ingest,
            json!({ "kind": "page.visited", "contact_id": id, "at": NOW - DAY }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    let contact = api.store.contact(&id).await.unwrap();
    assert_eq!(contact.last_seen_at, Some(NOW - DAY), "{dialect}");
    assert_eq!(api.events(&id).await.len(), 1, "{dialect}");
    api.close().await;

    // The range is configurable.
    let api = Api::with(dialect, |state| state.event_times.oldest = 0).await;
    let (status, answer) = api
        .post(
            "/v1/events",
            &api.ingest,
            json!({ "kind": "import", "email": "old@x.example", "at": 1_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}: {answer}");
    api.close().await;
}

async fn time_zones_must_be_iana_names(dialect: &str) {
    let api = Api::new(dialect).await;
    let (status, error) = api
        .post(
            "/v1/contacts",
            &api.admin,
            json!({ "email": "m@x.example", "timezone": "Mars/Olympus" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(message(&error).contains("IANA"), "{error}");
    let id = api.contact("ada@x.example").await;
    let (status, _) = api
        .send(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(&api.admin),
            Some(r#"{"timezone": "Europe/Berlln"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    let (status, contact) = api
        .send(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(&api.admin),
            Some(r#"{"timezone": "Europe/Berlin"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    assert_eq!(contact["timezone"], "Europe/Berlin");
    api.close().await;
}

async fn a_reused_client_event_id_conflicts_without_data(dialect: &str) {
    let api = Api::new(dialect).await;
    let first = json!({ "kind": "purchase", "email": "ada@x.example", "client_event_id": "o-1",
        "properties": { "total": 120 } });
    let (status, _) = api.post("/v1/events", &api.ingest, first.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    let (status, resent) = api.post("/v1/events", &api.ingest, first.clone()).await;
    assert_eq!(
        (status, resent["duplicate"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{dialect}"
    );
    for other in [
        json!({ "kind": "purchase", "email": "eve@x.example", "client_event_id": "o-1" }),
        json!({ "kind": "refund", "email": "ada@x.example", "client_event_id": "o-1",
            "properties": { "total": 120 } }),
        json!({ "kind": "purchase", "email": "ada@x.example", "client_event_id": "o-1",
            "properties": { "total": 1 } }),
    ] {
        let (status, answer) = api.post("/v1/events", &api.ingest, other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{dialect}: {answer}");
        let text = answer.to_string();
        assert!(
            !text.contains("c_") && !text.contains("120") && answer.get("event").is_none(),
            "{dialect}: nothing of the stored event: {text}"
        );
    }
    let (_, list) = api.get("/v1/contacts", &api.admin).await;
    let ada = list["contacts"][0]["id"].as_str().unwrap().to_owned();
    let purchases = api.events(&ada).await;
    let kinds: Vec<&str> = purchases
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| ["purchase", "refund"].contains(k))
            .count(),
        1,
        "{dialect}: {kinds:?}"
    );
    api.close().await;
}

async fn the_batch_wrapper_is_strict_and_scope_comes_first(dialect: &str) {
    let api = Api::new(dialect).await;
    let (status, error) = api
        .post(
            "/v1/events",
            &api.ingest,
            json!({ "events": [], "kind": "x", "email": "a@x.example" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        message(&error).contains("unknown field") && message(&error).contains("`events`"),
        "{error}"
    );
    assert_eq!(api.store.count_contacts().await.unwrap(), 0, "{dialect}");
    let (status, error) = api
        .send("POST", "/v1/events", Some(&api.reader), Some("{broken"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{dialect}: {error}");
    // Everywhere: the scope is checked before the body is read.
    for (method, path) in [
        ("POST", "/v1/contacts"),
        ("PUT", "/v1/journeys/x"),
        ("POST", "/v1/bindings"),
        ("POST", "/v1/contacts/c_1/consents/request"),
    ] {
        let (status, error) = api
            .send(method, path, Some(&api.ingest), Some("{broken"))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{dialect} {path}: {error}");
        let (status, _) = api.send(method, path, None, Some("{broken")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{dialect} {path}");
    }
    api.close().await;
}

async fn members_of_an_unknown_segment_are_404(dialect: &str) {
    let api = Api::new(dialect).await;
    for path in ["/v1/segments/nope", "/v1/segments/nope/members"] {
        let (status, error) = api.get(path, &api.reader).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{dialect} {path}");
        assert_eq!(error["error"]["code"], "not_found");
    }
    api.close().await;
}

async fn every_error_has_the_json_shape(dialect: &str) {
    let api = Api::new(dialect).await;
    let get = |uri: &str| Request::builder().method("GET").uri(uri.to_owned());
    let long = format!("/v1/contacts?q={}", "a".repeat(9000));
    let mut many = get("/healthz");
    for n in 0..120 {
        many = many.header(format!("x-h{n}"), "v");
    }
    let cases = [
        (get("/nope"), Vec::new(), StatusCode::NOT_FOUND),
        (
            Request::builder().method("DELETE").uri("/v1/events"),
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Request::builder()
                .method("POST")
                .uri("/v1/contacts")
                .header("authorization", format!("Bearer {}", api.admin))
                .header("content-type", "application/json"),
            vec![b' '; 5 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Request::builder()
                .method("POST")
                .uri("/v1/callbacks/mail-hook")
                .header("content-length", (20 << 20).to_string()),
            vec![b'x'; 20 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (get(&long), Vec::new(), StatusCode::URI_TOO_LONG),
        (
            get("/healthz").header("x-big", "v".repeat(40 << 10)),
            Vec::new(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (
            many,
            Vec::new(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (
            get("/v1/contacts/%FF%FE").header("authorization", format!("Bearer {}", api.admin)),
            Vec::new(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (request, body, expected) in cases {
        let (status, headers, error) = api.raw(request, body).await;
        assert_eq!(status, expected, "{dialect}: {error}");
        assert!(
            headers[axum::http::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{dialect} {expected}"
        );
        assert!(
            error["error"]["code"].is_string() && !message(&error).is_empty(),
            "{dialect} {expected}: {error}"
        );
    }
    api.close().await;
}

async fn a_confirmation_needs_a_post_and_proves_the_socket_address(dialect: &str) {
    for trusted in [false, true] {
        let api = Api::with(dialect, |state| {
            if trusted {
                state.trusted_proxies = Arc::new(vec!["192.0.2.7".parse().unwrap()]);
            }
        })
        .await;
        let id = api.contact("ada@x.example").await;
        api.request_consent(&id).await;
        let path = api.confirmation_path(&id).await;

        // A mail filter's link scanner fetches the page: nothing happens.
        let (status, _, page) = api.raw(Request::builder().uri(&path), Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{dialect}");
        let page = page.as_str().unwrap().to_owned();
        assert!(page.contains("method=\"post\""), "{page}");
        let consents = api.store.consents(&id).await.unwrap();
        assert_eq!(consents[0].status, "pending", "{dialect}");

        let request = Request::builder()
            .method("POST")
            .uri(&path)
            .header("x-forwarded-for", "203.0.113.66")
            .header("user-agent", "Firefox");
        let (status, headers, _) = api.raw(request, Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{dialect}");
        assert!(
            headers
                .get("content-security-policy")
                .is_some_and(|v| v.to_str().unwrap().contains("frame-ancestors 'none'")),
            "{dialect}"
        );
        let consent = &api.store.consents(&id).await.unwrap()[0];
        assert_eq!(consent.status, "granted", "{dialect}");
        let expected = if trusted { "203.0.113.66" } else { "192.0.2.7" };
        assert_eq!(consent.ip.as_deref(), Some(expected), "{dialect} {trusted}");
        api.close().await;
    }
}

async fn message_tokens_are_redacted_for_keys_without_admin(dialect: &str) {
    let api = Api::new(dialect).await;
    let id = api.contact("ada@x.example").await;
    api.request_consent(&id).await;
    let (status, seen) = api
        .get(&format!("/v1/contacts/{id}/messages"), &api.reader)
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let text = seen["messages"][0]["message"]["text"].as_str().unwrap();
    assert!(text.contains("/c/redacted"), "{dialect}: {text}");
    let path = api.confirmation_path(&id).await;
    assert!(!path.contains("redacted"), "{dialect}: admins see it whole");
    let (status, _) = api.send("POST", "/c/redacted", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{dialect}");
    api.close().await;
}

async fn a_merge_keeps_messages_consents_and_suppressions(dialect: &str) {
    let api = Api::new(dialect).await;
    let ada = api.contact("ada@x.example").await;
    let alt = api.contact("ada.alt@x.example").await;
    let put = |contact: &str, body: Value| {
        let path = format!("/v1/contacts/{contact}/consents");
        let key = api.admin.clone();
        let api = &api;
        async move {
            let (status, answer) = api
                .send("PUT", &path, Some(&key), Some(&body.to_string()))
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    put(&ada, json!({ "channel": "webhook", "status": "withdrawn" })).await;
    put(
        &alt,
        json!({ "channel": "sms", "status": "granted", "source": "shop" }),
    )
    .await;
    // The merged contact's confirmation message (its consent: pending).
    api.request_consent(&alt).await;
    let outbox = api.store.contact_outbox(&alt).await.unwrap();
    assert_eq!(outbox.len(), 1);
    let unsubscribe = api
        .journeys
        .tracking()
        .token(TokenKind::Unsubscribe, &outbox[0].id);
    nachfass::privacy::unsubscribe(&api.journeys.pipeline, &alt, "test", &json!({}))
        .await
        .unwrap();

    let (status, report) = api
        .post(
            &format!("/v1/contacts/{ada}/merge"),
            &api.admin,
            json!({ "from": alt }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {report}");
    assert_eq!(report["messages_moved"], 1, "{dialect}");

    let (_, messages) = api
        .get(&format!("/v1/contacts/{ada}/messages"), &api.admin)
        .await;
    assert_eq!(
        messages["messages"].as_array().unwrap().len(),
        1,
        "{dialect}"
    );
    let consents = api.store.consents(&ada).await.unwrap();
    let status_of = |channel: &str| {
        consents
            .iter()
            .find(|c| c.channel == channel)
            .map(|c| c.status.as_str())
    };
    assert_eq!(
        status_of("webhook"),
        Some("withdrawn"),
        "{dialect}: the stricter one"
    );
    assert_eq!(status_of("sms"), Some("granted"), "{dialect}: moved");
    assert!(
        !api.store.suppressions(&ada).await.unwrap().is_empty(),
        "{dialect}: the suppression moved"
    );

    // The links in mail sent to the merged contact still work.
    let (status, _) = api
        .send("POST", &format!("/u/{unsubscribe}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let path = api.confirmation_path(&ada).await;
    let (status, _) = api.send("GET", &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    api.close().await;
}

async fn health_and_readiness_answer_without_a_key(dialect: &str) {
    let api = Api::new(dialect).await;
    let (status, health) = api.send("GET", "/healthz", None, None).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, ready) = api.send("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {ready}");
    // A binding whose plugin is not loaded: not ready.
    let missing = BindingDef {
        name: "crm".into(),
        kind: BindingKind::Channel,
        plugin: "not-installed".into(),
        config: Default::default(),
        allow_http: Vec::new(),
        version: None,
        limits: Default::default(),
        paused: None,
        rate: None,
    };
    api.store.create_binding(&missing, 0).await.unwrap();
    let (status, ready) = api.send("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{dialect}");
    assert!(
        ready["problems"][0]
            .as_str()
            .unwrap()
            .contains("not-installed"),
        "{ready}"
    );

    let (status, headers, _) = api
        .raw(Request::builder().uri("/dashboard"), Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(
            headers.contains_key(name),
            "{dialect}: dashboard lacks {name}"
        );
    }
    api.close().await;
}

async fn an_unknown_callback_binding_answers_like_a_bad_signature(dialect: &str) {
    let api = Api::new(dialect).await;
    let body = br#"{"events": []}"#.to_vec();
    let callback = |binding: &str| {
        Request::builder()
            .method("POST")
            .uri(format!("/v1/callbacks/{binding}"))
            .header("x-nachfass-timestamp", "1700000000")
            .header("x-nachfass-signature", "sha256=00")
    };
    let (known_status, _, known) = api.raw(callback("mail-hook"), body.clone()).await;
    let (unknown_status, _, unknown) = api.raw(callback("no-such-hook"), body).await;
    assert_eq!(
        known_status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {known}"
    );
    assert_eq!(
        (unknown_status, unknown),
        (known_status, known),
        "{dialect}"
    );
    let _ = api.clock.now();
    api.close().await;
}

async fn only_links_written_in_the_template_are_tracked(dialect: &str) {
    let api = Api::new(dialect).await;
    let journey = json!({ "name": "welcome", "purpose": "transactional",
        "trigger": { "event": { "kind": "signup" } },
        "steps": [ { "id": "hello", "type": "send", "binding": "mail-hook", "template": {
            "subject": "Hallo",
            "text": "Shop: https://shop.example/start Ihre Seite: {{ contact.attributes.site }}",
            "html": "<a href=\"https://shop.example/start\">Shop</a> <a href=\"{{ contact.attributes.site }}\">Seite</a>" } } ] });
    let (status, answer) = api
        .send(
            "PUT",
            "/v1/journeys/welcome",
            Some(&api.admin),
            Some(&journey.to_string()),
        )
        .await;
    assert!(status.is_success(), "{dialect}: {answer}");
    let (status, created) = api
        .post(
            "/v1/contacts",
            &api.admin,
            json!({ "email": "eve@x.example", "attributes": { "site": "https://evil.example/x" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .post(
            "/v1/events",
            &api.ingest,
            json!({ "kind": "signup", "contact_id": id }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let scheduler = nachfass::scheduler::Scheduler::new(
        api.journeys.clone(),
        nachfass::scheduler::SchedulerConfig::default(),
    );
    scheduler.run_until_idle().await.unwrap();
    let (_, messages) = api
        .get(&format!("/v1/contacts/{id}/messages"), &api.admin)
        .await;
    let message = &messages["messages"][0]["message"];
    let text = message["text"].as_str().unwrap();
    assert!(
        text.contains("/t/c/") && !text.contains("shop.example"),
        "{dialect}: the template's link is tracked: {text}"
    );
    assert!(
        text.contains("Ihre Seite: https://evil.example/x"),
        "{dialect}: the data's URL stays text: {text}"
    );
    let html = message["html"].as_str().unwrap();
    assert!(
        html.contains("href=\"https:&#x2f;&#x2f;evil.example&#x2f;x\"")
            || html.contains("href=\"https://evil.example/x\""),
        "{dialect}: {html}"
    );
    assert_eq!(
        message["metadata"]["links"],
        json!(["https://shop.example/start"]),
        "{dialect}"
    );
    api.close().await;
}
