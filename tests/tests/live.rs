//! Live scoring and segments on SQLite and PostgreSQL: real scorer and
//! segment-rule components run on every new touchpoint.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nachfass::clock::ManualClock;
use nachfass::model::Value;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::store::{BindingDef, BindingKind, EventInput};
use nachfass_tests::{DAY, guests, runtime};

fn event(kind: &str, url: Option<&str>, client_id: &str) -> EventInput {
    let mut input = EventInput {
        kind: kind.into(),
        email: Some("lena@kunde.example".into()),
        client_event_id: Some(client_id.into()),
        ..EventInput::default()
    };
    if let Some(url) = url {
        input
            .properties
            .insert("url".into(), Value::Text(url.into()));
    }
    input
}

async fn touchpoints_move_score_stage_and_segments(dialect: &'static str) {
    let registry = Arc::new(Registry::new(runtime()));
    for guest in [guests::ENGAGEMENT, guests::ATTRIBUTE_MATCH] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    let (store, temp) = nachfass_tests::store(dialect).await;
    let clock = Arc::new(ManualClock::new(200 * DAY));
    let pipeline = nachfass_tests::world::pipeline(store.clone(), registry.clone(), clock.clone());
    let scorer = BindingDef {
        name: "engagement".into(),
        kind: BindingKind::Scorer,
        plugin: "engagement".into(),
        config: Default::default(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&scorer, 0).await.unwrap();
    let engaged = BindingDef {
        name: "engaged".into(),
        kind: BindingKind::Segment,
        plugin: "attribute-match".into(),
        config: [("attribute", "contact.score"), ("op", "gt"), ("value", "5")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&engaged, 0).await.unwrap();

    let first = pipeline
        .ingest(&event("email.opened", None, "o-1"))
        .await
        .unwrap();
    let contact = first.event.contact_id.clone();
    clock.advance(1000);
    pipeline
        .ingest(&event(
            "page.visited",
            Some("https://shop.example/pricing"),
            "p-1",
        ))
        .await
        .unwrap();
    clock.advance(1000);
    // A resend is recorded once and scored once.
    pipeline
        .ingest(&event(
            "page.visited",
            Some("https://shop.example/pricing"),
            "p-1",
        ))
        .await
        .unwrap();

    let stored = store.contact(&contact).await.unwrap();
    assert_eq!(
        (stored.score, stored.stage.as_str()),
        (11, "lead"),
        "{dialect}"
    );
    let history = store.score_history(&contact).await.unwrap();
    let reasons: Vec<&str> = history
        .iter()
        .flat_map(|h| h.reasons.iter().map(String::as_str))
        .collect();
    assert_eq!(
        reasons,
        [
            "email.opened +1",
            "pricing page visit (micro conversion) +10"
        ],
        "{dialect}"
    );
    assert_eq!(
        store.memberships(&contact).await.unwrap(),
        ["engaged"],
        "{dialect}"
    );

    clock.advance(1000);
    pipeline
        .ingest(&event("email.unsubscribed", None, "u-1"))
        .await
        .unwrap();
    assert_eq!(store.contact(&contact).await.unwrap().score, 1, "{dialect}");
    assert!(
        store.memberships(&contact).await.unwrap().is_empty(),
        "{dialect}"
    );
    assert_eq!(
        store.contact(&contact).await.unwrap().stage,
        "lead",
        "stages never fall back: {dialect}"
    );

    let timeline = store.timeline(&contact, 20, None).await.unwrap();
    let kinds: Vec<&str> = timeline.iter().rev().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "email.opened",
            "page.visited",
            "stage.changed",
            "segment.entered",
            "email.unsubscribed",
            "segment.left"
        ],
        "{dialect}"
    );
    let stage_change = timeline.iter().find(|e| e.kind == "stage.changed").unwrap();
    assert_eq!(
        stage_change.properties["to"],
        Value::Text("lead".into()),
        "{dialect}"
    );
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    touchpoints_move_score_stage_and_segments
);

async fn a_failing_scorer_never_loses_the_touchpoint(dialect: &'static str) {
    let registry = Arc::new(Registry::new(runtime()));
    registry
        .install_file(&guests::GUEST_PANIC.packed(), Activation::Now)
        .await
        .unwrap();
    let (store, temp) = nachfass_tests::store(dialect).await;
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        registry.clone(),
        Arc::new(ManualClock::new(DAY)),
    );
    let def = BindingDef {
        name: "broken".into(),
        kind: BindingKind::Scorer,
        plugin: "guest-panic".into(),
        config: Default::default(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&def, 0).await.unwrap();
    let ingested = pipeline
        .ingest(&event("download", None, "d-1"))
        .await
        .unwrap();
    let timeline = store
        .timeline(&ingested.event.contact_id, 10, None)
        .await
        .unwrap();
    assert_eq!(timeline.len(), 1, "{dialect}");
    assert_eq!(
        store
            .contact(&ingested.event.contact_id)
            .await
            .unwrap()
            .score,
        0,
        "{dialect}"
    );
    let stats = registry.live("guest-panic").unwrap();
    assert!(
        stats
            .stats()
            .runtime_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "{dialect}"
    );
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_failing_scorer_never_loses_the_touchpoint
);

async fn profile_changes_replace_the_profile_score_instead_of_adding_up(dialect: &'static str) {
    let registry = Arc::new(Registry::new(runtime()));
    registry
        .install_file(&guests::B2B_FIT.packed(), Activation::Now)
        .await
        .unwrap();
    let (store, temp) = nachfass_tests::store(dialect).await;
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        registry.clone(),
        Arc::new(ManualClock::new(DAY)),
    );
    let def = BindingDef {
        name: "fit".into(),
        kind: BindingKind::Scorer,
        plugin: "b2b-fit".into(),
        config: Default::default(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&def, 0).await.unwrap();
    let profile = |attrs: &[(&str, Value)]| nachfass::store::ContactInput {
        email: Some("cto@fabrik.example".into()),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let first = pipeline
        .upsert_contact(&profile(&[("industry", Value::Text("software".into()))]))
        .await
        .unwrap();
    assert_eq!(
        (first.contact.score, first.contact.stage.as_str()),
        (20, "lead"),
        "{dialect}"
    );
    let grown = pipeline
        .upsert_contact(&profile(&[("employees", Value::Integer(320))]))
        .await
        .unwrap();
    assert_eq!(grown.contact.score, 35, "{dialect}");
    let same = pipeline
        .upsert_contact(&profile(&[("employees", Value::Integer(320))]))
        .await
        .unwrap();
    assert_eq!(
        same.contact.score, 35,
        "calling twice never counts twice: {dialect}"
    );
    let history = store.score_history(&first.contact.id).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.delta).collect::<Vec<_>>(),
        [20, 15],
        "{dialect}"
    );
    assert!(
        history[1]
            .reasons
            .contains(&"employees 250-999 +15".to_owned()),
        "{dialect}: {history:?}"
    );
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    profile_changes_replace_the_profile_score_instead_of_adding_up
);
