//! The example plugins, built as components and run in the real sandbox.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use nachfass::model::{ActivityCount, Contact, Event, Value};
use nachfass::runtime::{Binding, Limits, Plugin, World};
use nachfass_tests::{DAY, guests, runtime};

fn relaxed(world: World) -> Limits {
    // Functional tests are not about limits; a loaded CI machine must not
    // turn a slow instantiation into a failure.
    Limits {
        wall_time: Duration::from_secs(5),
        ..Limits::for_world(world)
    }
}

fn binding(world: World, config: &[(&str, &str)]) -> Arc<Binding> {
    let mut binding = Binding::new("test", world).with_limits(relaxed(world));
    for (key, value) in config {
        binding = binding.with_config(key, value);
    }
    Arc::new(binding)
}

async fn load(guest: nachfass_tests::Guest) -> Plugin {
    runtime()
        .load_file(&guest.packed())
        .await
        .expect("example plugins load")
}

fn contact(id: &str) -> Contact {
    serde_json::from_value(serde_json::json!({ "id": id })).unwrap()
}

#[tokio::test]
async fn hello_matches_contacts_with_email() {
    let plugin = load(guests::HELLO).await;
    let b = binding(World::SegmentRule, &[]);
    let mut with_email = contact("c1");
    with_email.email = Some("ada@acme.example".into());
    assert!(
        plugin
            .matches(&b, 0, &with_email, &[])
            .await
            .unwrap()
            .unwrap()
    );
    assert!(
        !plugin
            .matches(&b, 0, &contact("c2"), &[])
            .await
            .unwrap()
            .unwrap()
    );
}

#[tokio::test]
async fn attribute_match_as_component_single_and_batch() {
    let plugin = load(guests::ATTRIBUTE_MATCH).await;
    let b = binding(
        World::SegmentRule,
        &[("attribute", "employees"), ("op", "gt"), ("value", "100")],
    );
    let mut big = contact("big");
    big.attributes
        .insert("employees".into(), Value::Integer(250));
    let mut small = contact("small");
    small
        .attributes
        .insert("employees".into(), Value::Text("12".into()));
    assert!(plugin.matches(&b, 0, &big, &[]).await.unwrap().unwrap());
    let items = vec![(big, vec![]), (small, vec![]), (contact("none"), vec![])];
    assert_eq!(
        plugin.matches_batch(&b, 0, &items).await.unwrap().unwrap(),
        vec![true, false, false]
    );

    let bad = binding(
        World::SegmentRule,
        &[("attribute", "x"), ("op", "like"), ("value", "1")],
    );
    let declined = plugin
        .matches(&bad, 0, &contact("c"), &[])
        .await
        .expect("the runtime is fine");
    assert_eq!(declined.unwrap_err().code, "bad-config");
}

#[tokio::test]
async fn inactive_days_uses_host_time_and_activity() {
    let plugin = load(guests::INACTIVE_DAYS).await;
    let b = binding(World::SegmentRule, &[("days", "60")]);
    let now = 1_000 * DAY;
    let visit = |days_ago: i64| ActivityCount {
        kind: "page.visited".into(),
        total: 4,
        last_24_hours: 0,
        last_30_days: 0,
        last_at: Some(now - days_ago * DAY),
    };
    assert!(
        plugin
            .matches(&b, now, &contact("c"), &[visit(61)])
            .await
            .unwrap()
            .unwrap()
    );
    assert!(
        !plugin
            .matches(&b, now, &contact("c"), &[visit(3)])
            .await
            .unwrap()
            .unwrap()
    );
}

#[tokio::test]
async fn b2b_fit_scores_the_profile_with_reasons() {
    let plugin = load(guests::B2B_FIT).await;
    let b = binding(World::Scorer, &[("industry_points", "software:25")]);
    let mut c = contact("c");
    c.attributes
        .insert("industry".into(), Value::Text("Software".into()));
    c.attributes.insert("employees".into(), Value::Integer(40));
    let change = plugin.on_profile(&b, 0, &c).await.unwrap().unwrap();
    assert_eq!(change.delta, 25 + 5);
    assert_eq!(
        change.reasons,
        ["industry software +25", "employees 10-49 +5"]
    );
}

#[tokio::test]
async fn engagement_scores_events_and_caps_per_day() {
    let plugin = load(guests::ENGAGEMENT).await;
    let b = binding(World::Scorer, &[("max_per_day", "3")]);
    let event: Event = serde_json::from_value(serde_json::json!({
        "id": "e1", "contact_id": "c", "kind": "email.clicked", "at": 5
    }))
    .unwrap();
    let today = |n| ActivityCount {
        kind: "email.clicked".into(),
        total: n,
        last_24_hours: n,
        last_30_days: n,
        last_at: Some(1),
    };
    let change = plugin
        .on_event(&b, 10, &contact("c"), &event, &[today(0)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (change.delta, change.reasons),
        (3, vec!["email.clicked +3".to_owned()])
    );
    let capped = plugin
        .on_event(&b, 10, &contact("c"), &event, &[today(3)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(capped.delta, 0);
}

#[tokio::test]
async fn a_plugin_called_as_the_wrong_world_is_refused() {
    let plugin = load(guests::ENGAGEMENT).await;
    let b = binding(World::SegmentRule, &[]);
    let err = plugin.matches(&b, 0, &contact("c"), &[]).await.unwrap_err();
    assert!(
        err.to_string().contains("is a scorer, not a segment-rule"),
        "{err}"
    );
}

#[tokio::test]
async fn a_probe_instantiates_without_calling() {
    let plugin = load(guests::B2B_FIT).await;
    plugin.probe(&binding(World::Scorer, &[]), 0).await.unwrap();
    assert_eq!(
        plugin
            .stats()
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_manifest_may_ship_beside_the_component() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hello.wasm");
    std::fs::copy(guests::HELLO.wasm, &wasm).unwrap();
    let sidecar = nachfass::runtime::manifest::sidecar_path(&wasm);
    std::fs::write(
        &sidecar,
        serde_json::to_vec(&guests::HELLO.manifest()).unwrap(),
    )
    .unwrap();
    let plugin = runtime().load_file(&wasm).await.unwrap();
    assert_eq!(plugin.id(), "hello@0.1.0");

    std::fs::write(
        &sidecar,
        br#"{"name":"hello","version":"1","world":"segment-rule"}"#,
    )
    .unwrap();
    let err = runtime().load_file(&wasm).await.unwrap_err();
    assert!(err.to_string().contains("not a semantic version"), "{err}");
}
