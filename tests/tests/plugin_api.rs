//! Plugin management over HTTP on SQLite and PostgreSQL: upload, bind,
//! swap and roll back while events keep coming in.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::plugins::Plugins;
use nachfass::runtime::Registry;
use nachfass::runtime::manifest::embed;
use nachfass::store::Scope;
use nachfass_tests::{DAY, database, guests, runtime};
use serde_json::{Value, json};

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: &str,
    body: Body,
    json_body: bool,
) -> (StatusCode, Value) {
    let content_type = json_body.then_some("application/json");
    nachfass_tests::client::request(router, method, path, Some(key), content_type, body).await
}

async fn post_json(
    router: &axum::Router,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(
        router,
        "POST",
        path,
        key,
        Body::from(body.to_string()),
        true,
    )
    .await
}

async fn upload(router: &axum::Router, key: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    call(router, "POST", "/v1/plugins", key, Body::from(bytes), false).await
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
    embed(&guest.bytes(), &manifest).unwrap()
}

async fn upload_bind_and_swap_while_ingesting_without_a_failed_request(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(ManualClock::new(10 * DAY)),
    );
    let router = app(AppState::new(pipeline, Some(dir.path().to_owned())));

    // Bad uploads say why and install nothing.
    let (status, error) = upload(&router, &admin, b"not wasm".to_vec()).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {error}"
    );
    let (status, error) = upload(&router, &admin, guests::ENGAGEMENT.bytes()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no manifest"),
        "{error}"
    );
    let mut wrong_world = guests::ENGAGEMENT.manifest();
    wrong_world.world = nachfass::runtime::World::Channel;
    // A channel is handed no contact: `reads` alone would be refused.
    wrong_world.reads = None;
    let (status, error) = upload(
        &router,
        &admin,
        embed(&guests::ENGAGEMENT.bytes(), &wrong_world).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not fit"),
        "{error}"
    );

    let (status, installed) = upload(&router, &admin, tag(1)).await;
    assert_eq!(
        (status, installed["plugin"].as_str()),
        (StatusCode::CREATED, Some("version-tag@1.0.0")),
        "{dialect}"
    );
    let stored = store.plugin_versions().await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|v| (v.manifest.id(), v.sha256.as_str()))
            .collect::<Vec<_>>(),
        [(
            "version-tag@1.0.0".to_owned(),
            installed["sha256"].as_str().unwrap()
        )],
        "{dialect}: kept in the database for every node and for restarts"
    );
    let (status, _) = upload(
        &router,
        &admin,
        std::fs::read(guests::ATTRIBUTE_MATCH.packed()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, error) = post_json(
        &router,
        "/v1/bindings",
        &admin,
        json!({ "name": "fit", "kind": "scorer", "plugin": "attribute-match" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is a segment-rule"),
        "{error}"
    );
    let (status, error) = post_json(
        &router,
        "/v1/bindings",
        &admin,
        json!({ "name": "big", "kind": "segment", "plugin": "attribute-match" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attribute, op"),
        "{error}"
    );
    let (status, _) = post_json(
        &router,
        "/v1/bindings",
        &admin,
        json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");

    let ingesting = {
        let router = router.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..60 {
                let event = json!({ "kind": "page.visited", "email": "swap@example.org", "client_event_id": format!("s-{i}") });
                statuses.push(post_json(&router, "/v1/events", &admin, event).await.0);
            }
            statuses
        })
    };
    let (status, _) = upload(&router, &admin, tag(2)).await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    let (status, _) = post_json(
        &router,
        "/v1/plugins/version-tag/rollback",
        &admin,
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dialect}");
    let (status, live) = post_json(
        &router,
        "/v1/plugins/version-tag/activate",
        &admin,
        json!({ "version": "2.0.0" }),
    )
    .await;
    assert_eq!(
        (status, live["live"].as_str()),
        (StatusCode::OK, Some("version-tag@2.0.0")),
        "{dialect}"
    );
    let statuses = ingesting.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{dialect}: {statuses:?}"
    );

    let contact = store
        .upsert_contact(
            &nachfass::store::ContactInput {
                email: Some("swap@example.org".into()),
                ..Default::default()
            },
            0,
        )
        .await
        .unwrap()
        .contact;
    let history = store.score_history(&contact.id).await.unwrap();
    assert_eq!(history.len(), 60, "every event scored once: {dialect}");
    assert!(
        history
            .iter()
            .all(|h| (h.delta, h.reasons[0].as_str()) == (1, "1.0.0")
                || (h.delta, h.reasons[0].as_str()) == (2, "2.0.0"))
    );
    assert_eq!(
        contact.score,
        history.iter().map(|h| h.delta).sum::<i64>(),
        "{dialect}"
    );

    let (status, listed) = call(&router, "GET", "/v1/plugins", &admin, Body::empty(), false).await;
    assert_eq!(status, StatusCode::OK);
    let tag_entry = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "version-tag")
        .unwrap()
        .clone();
    assert_eq!(
        (
            tag_entry["live"].as_str(),
            tag_entry["versions"].as_array().unwrap().len()
        ),
        (Some("2.0.0"), 2)
    );
    let (status, _) = call(
        &router,
        "DELETE",
        "/v1/bindings/tag",
        &admin,
        Body::empty(),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    upload_bind_and_swap_while_ingesting_without_a_failed_request
);

/// The webhook connector as plugin `hook@version`, declaring `hosts`, with
/// `extra` configuration keys and an instruction budget it asks for. The
/// manifest is embedded, so every variant has its own bytes.
fn hook(version: &str, hosts: &[&str], extra: &[&str], fuel: Option<u64>) -> Vec<u8> {
    let mut manifest = guests::WEBHOOK.manifest();
    manifest.name = "hook".into();
    manifest.version = version.into();
    manifest.http_hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
    for key in extra {
        manifest
            .config
            .push(nachfass::runtime::manifest::ConfigKey {
                key: (*key).to_owned(),
                description: String::new(),
                required: false,
            });
    }
    manifest.limits.fuel = fuel;
    embed(&guests::WEBHOOK.bytes(), &manifest).unwrap()
}

/// `hook`'s live version and its pending reviews as `router`'s node lists
/// them.
async fn hook_on(router: &axum::Router, key: &str) -> (String, Value) {
    let (status, listed) = call(router, "GET", "/v1/plugins", key, Body::empty(), false).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let hook = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hook")
        .cloned()
        .unwrap_or(Value::Null);
    (
        hook["live"].as_str().unwrap_or("none").to_owned(),
        hook["reviews"].clone(),
    )
}

/// A node: a router with its own registry on `url`'s database, following
/// the cluster (LISTEN/NOTIFY on PostgreSQL, with a slow reconcile so that
/// is what is tested; a fast reconcile on SQLite).
async fn node(url: &str, dialect: &str) -> (axum::Router, Arc<Registry>) {
    let store = nachfass::store::Store::connect(url).await.unwrap();
    let registry = Arc::new(Registry::new(runtime()));
    let clock = Arc::new(ManualClock::new(10 * DAY));
    let (interval, listen) = if dialect == "postgres" {
        (std::time::Duration::from_secs(60), Some(url.to_owned()))
    } else {
        (std::time::Duration::from_millis(100), None)
    };
    Plugins::new(store.clone(), registry.clone(), clock.clone()).spawn_sync(interval, listen);
    let pipeline = nachfass_tests::world::pipeline(store, registry.clone(), clock);
    (app(AppState::new(pipeline, None)), registry)
}

/// Capability review on upgrade: a version asking for more than the live
/// one (a new HTTP host, configuration key, import or higher limit) is
/// installed but not live until an admin approves exactly that; then it
/// goes live on every node. A version asking for nothing new goes live at
/// once; a rollback needs no review; a world change is refused outright.
async fn upgrades_asking_for_more_wait_for_approval(dialect: &str) {
    let (url, temp) = database(dialect).await;
    let (a, _registry_a) = node(&url, dialect).await;
    let (b, _registry_b) = node(&url, dialect).await;
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let (admin_key, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();

    // The first version needs no review.
    let (status, first) = upload(&a, &admin, hook("1.0.0", &["a.example"], &[], None)).await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}: {first}");
    assert_eq!(
        (first["live"].clone(), first["review"].clone()),
        (json!(true), Value::Null)
    );

    // A new host: installed, held.
    let wider = hook("1.1.0", &["a.example", "b.example"], &[], None);
    let (status, held) = upload(&a, &admin, wider).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {held}");
    assert_eq!(held["live"], false, "{held}");
    let asked = json!({ "imports": [], "config": [], "http_hosts": ["b.example"], "limits": {} });
    assert_eq!(
        held["review"],
        json!({ "version": "1.1.0", "against": "1.0.0", "needs_approval": asked }),
        "{dialect}"
    );
    assert!(
        held["message"].as_str().unwrap().contains("b.example"),
        "{held}"
    );
    let (live, reviews) = hook_on(&a, &admin).await;
    assert_eq!(live, "1.0.0", "{dialect}");
    assert_eq!(reviews[0]["needs_approval"], asked, "{dialect}: listed");
    let (status, refused) = post_json(
        &a,
        "/v1/plugins/hook/activate",
        &admin,
        json!({ "version": "1.1.0" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dialect}: {refused}");
    assert_eq!(refused["error"]["code"], "needs_approval");
    assert_eq!(refused["error"]["details"]["needs_approval"], asked);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http_hosts b.example"),
        "{refused}"
    );

    // Approving something else (another host, or nothing) changes nothing.
    for wrong in [
        json!({ "http_hosts": ["c.example"] }),
        json!({}),
        json!({ "http_hosts": ["b.example", "c.example"] }),
    ] {
        let (status, refused) = post_json(
            &a,
            "/v1/plugins/hook/versions/1.1.0/approve",
            &admin,
            wrong.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{dialect}: {wrong} {refused}");
        assert_eq!(refused["error"]["code"], "approval_mismatch", "{refused}");
        assert_eq!(
            refused["error"]["details"]["review"]["needs_approval"],
            asked
        );
    }
    let (status, refused) = post_json(
        &a,
        "/v1/plugins/hook/versions/1.1.0/approve",
        &admin,
        json!({ "http_hostz": ["b.example"] }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {refused}"
    );
    assert_eq!(hook_on(&a, &admin).await.0, "1.0.0", "{dialect}");

    // The exact diff: approved, audited, live here and on the other node.
    let (status, approved) = post_json(
        &a,
        "/v1/plugins/hook/versions/1.1.0/approve",
        &admin,
        json!({ "http_hosts": ["b.example"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {approved}");
    assert_eq!(approved["live"], "hook@1.1.0");
    assert_eq!(hook_on(&a, &admin).await, ("1.1.0".to_owned(), json!([])));
    let started = std::time::Instant::now();
    while hook_on(&b, &admin).await.0 != "1.1.0" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{dialect}: the other node never made the approved version live"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let audit = store.plugin_audit().await.unwrap();
    let entry = audit
        .iter()
        .find(|e| e.action == "plugin.approved")
        .unwrap_or_else(|| panic!("{dialect}: no approval in {audit:?}"));
    assert_eq!(entry.actor, admin_key.id, "{dialect}");
    assert_eq!(entry.detail["approved"]["http_hosts"], json!(["b.example"]));
    assert_eq!(entry.detail["version"], "1.1.0");

    // Nothing new (the same hosts, fewer even): live at once.
    let (status, same) = upload(&a, &admin, hook("1.1.1", &["b.example"], &[], None)).await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}: {same}");
    assert_eq!(
        (same["live"].clone(), same["review"].clone()),
        (json!(true), Value::Null)
    );

    // A new configuration key and a higher instruction budget are detected
    // and approved together.
    let (status, held) = upload(
        &a,
        &admin,
        hook("1.2.0", &["b.example"], &["region"], Some(600_000_000)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {held}");
    let asked = json!({ "imports": [], "config": ["region"], "http_hosts": [], "limits": { "fuel": 600_000_000 } });
    assert_eq!(held["review"]["needs_approval"], asked, "{dialect}");
    assert_eq!(held["review"]["against"], "1.1.1");
    let (status, approved) =
        post_json(&a, "/v1/plugins/hook/versions/1.2.0/approve", &admin, asked).await;
    assert_eq!(status, StatusCode::OK, "{dialect}: {approved}");

    // A rollback returns to a version that was live: no review.
    let (status, rolled) = post_json(&a, "/v1/plugins/hook/rollback", &admin, json!(null)).await;
    assert_eq!(
        (status, rolled["live"].as_str()),
        (StatusCode::OK, Some("hook@1.1.1")),
        "{dialect}: {rolled}"
    );
    // Nor does any version that was live before: 1.0.0 may reach a.example
    // and 1.2.0 reads `region`, which the live 1.1.1 does not, yet both
    // were granted that once.
    assert_eq!(
        hook_on(&a, &admin).await,
        ("1.1.1".to_owned(), json!([])),
        "{dialect}"
    );
    for version in ["1.0.0", "1.2.0"] {
        let (status, again) = post_json(
            &a,
            "/v1/plugins/hook/activate",
            &admin,
            json!({ "version": version }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{dialect}: {again}");
    }

    // Another world is refused before any review.
    let mut scorer = guests::ENGAGEMENT.manifest();
    scorer.name = "hook".into();
    scorer.version = "3.0.0".into();
    let (status, refused) = upload(
        &a,
        &admin,
        embed(&guests::ENGAGEMENT.bytes(), &scorer).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dialect}: {refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is a channel; a new version cannot change it to a scorer"),
        "{refused}"
    );

    // New imports: a mail connector that becomes an HTTP one asks for
    // outgoing HTTP, to any host its bindings allow (it declares none).
    let mut mail = guests::SMTP_EMAIL.manifest();
    mail.name = "notify".into();
    mail.version = "1.0.0".into();
    let (status, _) = upload(
        &a,
        &admin,
        embed(&guests::SMTP_EMAIL.bytes(), &mail).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    let mut http = guests::WEBHOOK.manifest();
    http.name = "notify".into();
    http.version = "1.1.0".into();
    let (status, held) = upload(&a, &admin, embed(&guests::WEBHOOK.bytes(), &http).unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {held}");
    let needs = &held["review"]["needs_approval"];
    assert!(
        needs["imports"]
            .as_array()
            .unwrap()
            .contains(&json!("wasi:http/outgoing-handler@0.2")),
        "{dialect}: {needs}"
    );
    assert_eq!(needs["http_hosts"], json!(["*"]), "{needs}");

    // The plugins directory imports the same way: installed, held.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hook-1.3.0.wasm");
    std::fs::write(
        &file,
        hook("1.3.0", &["b.example", "*.sms.example"], &[], None),
    )
    .unwrap();
    let importer = Plugins::new(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(ManualClock::new(10 * DAY)),
    );
    let said = nachfass::runtime::watch::Import::import(&importer, &file)
        .await
        .unwrap();
    assert!(
        said.contains("not live") && said.contains("http_hosts *.sms.example"),
        "{dialect}: {said}"
    );
    assert_eq!(hook_on(&a, &admin).await.0, "1.2.0", "{dialect}");

    drop((a, b));
    temp.cleanup(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_asking_for_more_wait_for_approval_sqlite() {
    upgrades_asking_for_more_wait_for_approval("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_asking_for_more_wait_for_approval_postgres() {
    upgrades_asking_for_more_wait_for_approval("postgres").await;
}

/// `reads` is a capability: a scorer version that would be handed more of
/// a contact than the live one (its email and phone, say) waits for an
/// admin like a new HTTP host; one that reads less goes live at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_reading_more_of_a_contact_waits_for_approval() {
    use nachfass::runtime::ContactPart;
    let (url, temp) = database("sqlite").await;
    let (node, _registry) = node(&url, "sqlite").await;
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let scorer = |version: &str, reads: &[ContactPart]| {
        let mut manifest = guests::ENGAGEMENT.manifest();
        manifest.version = version.into();
        manifest.reads = Some(reads.to_vec());
        embed(&guests::ENGAGEMENT.bytes(), &manifest).unwrap()
    };
    let (status, first) = upload(&node, &admin, scorer("1.0.0", &[ContactPart::Activity])).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");

    let wider = scorer(
        "1.1.0",
        &[ContactPart::Activity, ContactPart::ContactPoints],
    );
    let (status, held) = upload(&node, &admin, wider).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    let asked = json!({ "imports": [], "config": [], "http_hosts": [], "limits": {}, "reads": ["contact-points"] });
    assert_eq!(held["review"]["needs_approval"], asked, "{held}");
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("reads contact-points"),
        "{held}"
    );
    let (status, approved) = post_json(
        &node,
        "/v1/plugins/engagement/versions/1.1.0/approve",
        &admin,
        json!({ "reads": ["contact-points"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["live"], "engagement@1.1.0");
    // Operators see what the live version is handed.
    let (_, listed) = call(&node, "GET", "/v1/plugins", &admin, Body::empty(), false).await;
    let engagement = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "engagement")
        .cloned()
        .unwrap();
    assert_eq!(engagement["reads"], json!(["contact-points", "activity"]));

    let (status, narrower) = upload(&node, &admin, scorer("1.2.0", &[ContactPart::Activity])).await;
    assert_eq!(
        (status, narrower["review"].clone()),
        (StatusCode::CREATED, Value::Null),
        "{narrower}"
    );
    drop(node);
    temp.cleanup(store).await;
}
