//! The store on SQLite and PostgreSQL: identity, dedupe, idempotent
//! ingestion, timeline and activity summaries.

#![allow(clippy::unwrap_used)]

use nachfass::model::Value;
use nachfass::store::{ContactInput, EventInput, StoreError};
use nachfass_tests::DAY;

fn event(kind: &str, email: &str, at: i64) -> EventInput {
    EventInput {
        kind: kind.into(),
        at: Some(at),
        email: Some(email.into()),
        ..EventInput::default()
    }
}

async fn known_identities_update_instead_of_duplicating(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let first = store
        .upsert_contact(
            &ContactInput {
                email: Some("  Ada@Acme.Example ".into()),
                attributes: [("industry".to_owned(), Value::Text("software".into()))].into(),
                ..ContactInput::default()
            },
            1,
        )
        .await
        .unwrap();
    assert!(first.created, "{dialect}");
    assert_eq!(
        first.contact.email.as_deref(),
        Some("ada@acme.example"),
        "{dialect}"
    );

    let again = store
        .upsert_contact(
            &ContactInput {
                email: Some("ADA@acme.example".into()),
                external_id: Some("crm-7".into()),
                attributes: [("employees".to_owned(), Value::Integer(250))].into(),
                ..ContactInput::default()
            },
            2,
        )
        .await
        .unwrap();
    assert!(!again.created, "{dialect}");
    assert_eq!(again.contact.id, first.contact.id, "{dialect}");
    let stored = store.contact(&first.contact.id).await.unwrap();
    assert_eq!(stored.external_id.as_deref(), Some("crm-7"), "{dialect}");
    assert_eq!(stored.attributes.len(), 2, "attributes merge: {dialect}");

    // The external id alone finds the same contact.
    let by_external = store
        .upsert_contact(
            &ContactInput {
                external_id: Some("crm-7".into()),
                ..ContactInput::default()
            },
            3,
        )
        .await
        .unwrap();
    assert_eq!(by_external.contact.id, first.contact.id, "{dialect}");

    // Identities of two different contacts: a conflict, nothing changes.
    let other = store
        .upsert_contact(
            &ContactInput {
                email: Some("bob@acme.example".into()),
                ..ContactInput::default()
            },
            4,
        )
        .await
        .unwrap();
    let clash = store
        .upsert_contact(
            &ContactInput {
                email: Some("bob@acme.example".into()),
                external_id: Some("crm-7".into()),
                ..ContactInput::default()
            },
            5,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(clash, StoreError::Conflict(ref m) if m.contains("merge")),
        "{dialect}: {clash}"
    );
    assert_eq!(
        store.contact(&other.contact.id).await.unwrap().external_id,
        None,
        "{dialect}"
    );

    let invalid = store
        .upsert_contact(
            &ContactInput {
                email: Some("not an address".into()),
                ..ContactInput::default()
            },
            6,
        )
        .await
        .unwrap_err();
    assert!(matches!(invalid, StoreError::Invalid(_)), "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    known_identities_update_instead_of_duplicating
);

async fn events_are_idempotent_create_contacts_and_fill_the_timeline(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let now = 100 * DAY;
    let mut download = event("download", "eve@example.org", now - 2 * DAY);
    download.client_event_id = Some("form-123".into());
    download
        .properties
        .insert("asset".into(), Value::Text("whitepaper.pdf".into()));
    let first = store.ingest_event(&download, now).await.unwrap();
    assert!(first.contact_created && !first.duplicate, "{dialect}");
    let resend = store.ingest_event(&download, now + 5).await.unwrap();
    assert!(resend.duplicate, "{dialect}");
    assert_eq!(resend.event, first.event, "{dialect}");

    let contact_id = first.event.contact_id.clone();
    for (kind, days_ago) in [
        ("email.opened", 40),
        ("email.opened", 10),
        ("email.opened", 0),
        ("page.visited", 1),
    ] {
        let ingested = store
            .ingest_event(
                &event(kind, "EVE@example.org", now - days_ago * DAY - 1),
                now,
            )
            .await
            .unwrap();
        assert_eq!(ingested.event.contact_id, contact_id, "{dialect}");
        assert!(!ingested.contact_created, "{dialect}");
    }

    let timeline = store.timeline(&contact_id, 10, None).await.unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "email.opened",
            "page.visited",
            "download",
            "email.opened",
            "email.opened"
        ],
        "{dialect}"
    );
    assert_eq!(
        timeline[2].properties["asset"],
        Value::Text("whitepaper.pdf".into()),
        "{dialect}"
    );
    let page = store
        .timeline(&contact_id, 2, Some(timeline[1].at))
        .await
        .unwrap();
    assert_eq!(page.len(), 2, "{dialect}");
    assert_eq!(page[0].kind, "download", "{dialect}");

    let activity = store.activity(&contact_id, now).await.unwrap();
    let opened = activity.iter().find(|a| a.kind == "email.opened").unwrap();
    assert_eq!(
        (opened.total, opened.last_30_days, opened.last_24_hours),
        (3, 2, 1),
        "{dialect}"
    );
    assert_eq!(opened.last_at, Some(now - 1), "{dialect}");
    assert_eq!(
        store.contact(&contact_id).await.unwrap().last_seen_at,
        Some(now - 1),
        "{dialect}"
    );

    let bad = store
        .ingest_event(&event("Page Visited", "eve@example.org", now), now)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("event kind"), "{dialect}: {bad}");
    let orphan = EventInput {
        kind: "x".into(),
        contact_id: Some("c_missing".into()),
        ..EventInput::default()
    };
    assert!(
        matches!(
            store.ingest_event(&orphan, now).await,
            Err(StoreError::NotFound(_))
        ),
        "{dialect}"
    );

    assert!(
        store.delete_contact(&contact_id).await.unwrap(),
        "{dialect}"
    );
    assert!(
        store
            .timeline(&contact_id, 10, None)
            .await
            .unwrap()
            .is_empty(),
        "events go with the contact: {dialect}"
    );
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    events_are_idempotent_create_contacts_and_fill_the_timeline
);

/// Two stores on one database (two nodes) taking tokens of one bucket at
/// once never get more than it holds; the clock refills it.
async fn a_rate_bucket_is_shared_by_concurrent_takers(dialect: &'static str) {
    use nachfass::store::{Rate, Store};
    let (url, temp) = nachfass_tests::database(dialect).await;
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let rate = Rate {
        per_second: Some(1.0),
        per_minute: None,
        burst: Some(5),
    };
    let now = 1_000_000;
    let takes = (0..16).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { store.take_tokens("sms", &rate, 1, now).await.unwrap() })
    });
    let mut granted = 0;
    let mut deferred = Vec::new();
    for take in takes {
        let grant = take.await.unwrap();
        granted += grant.granted;
        deferred.extend(grant.deferred_to);
    }
    assert_eq!(granted, 5, "{dialect}: the burst, no more");
    deferred.sort_unstable();
    // One token a second, each deferred message its own.
    let expected: Vec<i64> = (1..=11).map(|s| now + s * 1000).collect();
    assert_eq!(deferred, expected, "{dialect}");
    // Three seconds later the clock has added three tokens, for whoever
    // takes first: deferred messages take theirs when they come due, like
    // any other.
    let later = b.take_tokens("sms", &rate, 10, now + 3000).await.unwrap();
    assert_eq!(later.granted, 3, "{dialect}");
    b.pool().close().await;
    temp.cleanup(a).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_rate_bucket_is_shared_by_concurrent_takers
);

/// The signing secret (tracking links, hashes of erased addresses) is the
/// database's: made by the first node's connect and committed by the
/// time it has connected, so nothing can sign with a secret that a
/// rolled-back batch took with it; every later node reads the same.
async fn nodes_share_one_committed_signing_secret(dialect: &'static str) {
    use nachfass::store::Store;
    let (url, temp) = nachfass_tests::database(dialect).await;
    let a = Store::connect(&url).await.unwrap();
    assert_eq!(a.signing_secret().len(), 32, "{dialect}");
    let stored: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'signing_secret'")
            .fetch_one(a.pool())
            .await
            .unwrap();
    let hex: String = a
        .signing_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, hex, "{dialect}");
    let (b, c) = tokio::join!(Store::connect(&url), Store::connect(&url));
    let (b, c) = (b.unwrap(), c.unwrap());
    assert_eq!(b.signing_secret(), a.signing_secret(), "{dialect}");
    assert_eq!(c.signing_secret(), a.signing_secret(), "{dialect}");
    b.pool().close().await;
    c.pool().close().await;
    temp.cleanup(a).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    nodes_share_one_committed_signing_secret
);

/// Nodes that start together on a new database (a `serve` and a CLI
/// command, two replicas) migrate it once between them: every one
/// connects, and the schema is whole. PostgreSQL serialises the runs with
/// sqlx's advisory lock; SQLite has none, so the store holds its write
/// lock around the whole run.
async fn nodes_connecting_at_once_migrate_a_new_database_once(dialect: &'static str) {
    use nachfass::store::Store;
    let (url, temp) = nachfass_tests::database(dialect).await;
    let (a, b, c, d) = tokio::join!(
        Store::connect(&url),
        Store::connect(&url),
        Store::connect(&url),
        Store::connect(&url)
    );
    let nodes: Vec<Store> = [a, b, c, d]
        .into_iter()
        .map(|node| node.unwrap_or_else(|e| panic!("{dialect}: a node failed to connect: {e}")))
        .collect();
    for node in &nodes {
        assert_eq!(node.migrations_pending().await.unwrap(), 0, "{dialect}");
        assert_eq!(
            node.signing_secret(),
            nodes[0].signing_secret(),
            "{dialect}"
        );
    }
    // Every node writes through the schema it found.
    for (i, node) in nodes.iter().enumerate() {
        let input = ContactInput {
            email: Some(format!("node{i}@migrate.example")),
            ..ContactInput::default()
        };
        node.upsert_contact(&input, 1).await.unwrap();
    }
    let contacts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
        .fetch_one(nodes[0].pool())
        .await
        .unwrap();
    assert_eq!(contacts, 4, "{dialect}");
    let mut nodes = nodes.into_iter();
    let first = nodes.next().unwrap();
    for node in nodes {
        node.pool().close().await;
    }
    temp.cleanup(first).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    nodes_connecting_at_once_migrate_a_new_database_once
);

/// A database left at an older schema (here: migrations up to 0009) is
/// upgraded in place by the next connect, its rows kept and carried into
/// the new columns (a queued job's kind, read from its payload since
/// 0015).
async fn an_older_database_is_upgraded_in_place(dialect: &'static str) {
    use nachfass::store::Store;
    sqlx::any::install_default_drivers();
    let (url, temp) = nachfass_tests::database(dialect).await;
    let old = match dialect {
        "sqlite" => {
            let pool = sqlx::AnyPool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            sqlx::migrate!("../host/migrations/sqlite")
                .run_to(9, &pool)
                .await
                .unwrap();
            pool
        }
        _ => {
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            sqlx::migrate!("../host/migrations/postgres")
                .run_to(9, &pool)
                .await
                .unwrap();
            pool
        }
    };
    for statement in [
        "INSERT INTO contacts (id, email, created_at, updated_at) VALUES ('c1', 'old@upgrade.example', 1, 1)",
        "INSERT INTO jobs (id, unique_key, payload, due_at, created_at) \
         VALUES ('j1', 'k1', '{\"job\":\"deliver\",\"outbox_id\":\"o1\"}', 5, 1)",
    ] {
        sqlx::query(statement).execute(&old).await.unwrap();
    }
    old.close().await;

    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.migrations_pending().await.unwrap(), 0, "{dialect}");
    let contact = store.contact("c1").await.unwrap();
    assert_eq!(
        contact.email.as_deref(),
        Some("old@upgrade.example"),
        "{dialect}"
    );
    let kind: String = sqlx::query_scalar("SELECT kind FROM jobs WHERE id = 'j1'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(kind, "deliver", "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_older_database_is_upgraded_in_place
);

/// A page of contacts as rules see it carries each contact exactly as it
/// is read alone: attributes of every type, segments, and the activity
/// summary as of `now` (later events left out).
async fn a_page_of_contacts_is_each_contact_as_read_alone(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let now = 100 * DAY;
    let attributes = [
        ("plan".to_owned(), Value::Text("pro \"team\" ü".into())),
        ("seats".to_owned(), Value::Integer(-12)),
        ("ratio".to_owned(), Value::Float(0.1 + 0.2)),
        ("trial".to_owned(), Value::Boolean(true)),
        ("churned".to_owned(), Value::Null),
        ("renews".to_owned(), Value::Timestamp(now + 7 * DAY)),
        (
            "tags".to_owned(),
            Value::Texts(vec!["b2b".into(), "eu".into()]),
        ),
    ];
    let mut ids = Vec::new();
    for (i, email) in ["a@page.example", "b@page.example", "c@page.example"]
        .into_iter()
        .enumerate()
    {
        let input = ContactInput {
            email: (i != 1).then(|| email.to_owned()),
            external_id: (i == 1).then(|| "crm-1".to_owned()),
            timezone: (i == 2).then(|| "Europe/Berlin".to_owned()),
            attributes: attributes[..i * 3].iter().cloned().collect(),
            ..ContactInput::default()
        };
        ids.push(
            store
                .upsert_contact(&input, i as i64)
                .await
                .unwrap()
                .contact
                .id,
        );
    }
    for (segment, contact) in [("vip", 0), ("eu", 0), ("eu", 2)] {
        store
            .set_membership(segment, &ids[contact], true, 1)
            .await
            .unwrap();
    }
    for (kind, contact, at) in [
        ("page.visited", 0, now - 40 * DAY),
        ("page.visited", 0, now - 2 * DAY),
        ("page.visited", 0, now - 1000),
        ("email.opened", 0, now),
        ("email.opened", 0, now + 1),
        ("download", 2, now - 3 * DAY),
    ] {
        let input = EventInput {
            kind: kind.into(),
            at: Some(at),
            contact_id: Some(ids[contact].clone()),
            ..EventInput::default()
        };
        store.ingest_event(&input, now).await.unwrap();
    }
    ids.sort();

    let first = store.contacts_with_activity(None, 2, now).await.unwrap();
    let rest = store
        .contacts_with_activity(Some(&first[1].0.id), 2, now)
        .await
        .unwrap();
    assert_eq!((first.len(), rest.len()), (2, 1), "{dialect}");
    let page: Vec<_> = first.into_iter().chain(rest).collect();
    for ((contact, activity), id) in page.iter().zip(&ids) {
        let mut alone = store.contact(id).await.unwrap();
        alone.segments = store.memberships(id).await.unwrap();
        assert_eq!(contact, &alone, "{dialect}");
        let mut expected = store.activity(id, now).await.unwrap();
        expected.sort_by(|a, b| a.kind.cmp(&b.kind));
        assert_eq!(activity, &expected, "{dialect}: {id}");
    }
    let busy = page.iter().find(|(c, _)| c.segments.len() == 2).unwrap();
    assert_eq!(busy.0.segments, ["eu", "vip"], "{dialect}");
    let visits = busy.1.iter().find(|a| a.kind == "page.visited").unwrap();
    assert_eq!(
        (visits.total, visits.last_30_days, visits.last_24_hours),
        (3, 2, 1),
        "{dialect}"
    );
    assert_eq!(
        busy.1
            .iter()
            .find(|a| a.kind == "email.opened")
            .unwrap()
            .total,
        1,
        "{dialect}: an event after now is not counted"
    );
    let rich = page.iter().find(|(c, _)| c.attributes.len() == 6).unwrap();
    assert_eq!(
        rich.0.attributes["ratio"],
        Value::Float(0.1 + 0.2),
        "{dialect}"
    );

    let plain = store.contacts_page(None, 10).await.unwrap();
    let with_activity: Vec<_> = page.into_iter().map(|(c, _)| c).collect();
    assert_eq!(plain, with_activity, "{dialect}");
    assert!(
        store
            .contacts_page(Some(&ids[2]), 10)
            .await
            .unwrap()
            .is_empty()
    );
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_page_of_contacts_is_each_contact_as_read_alone
);
