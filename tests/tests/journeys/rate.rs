//! A channel binding's delivery rate limit: the bucket's burst goes out,
//! the rest wait (no attempt counted) until the clock has refilled it, and
//! two nodes on one database share the bucket.

use std::collections::BTreeSet;
use std::sync::Arc;

use nachfass::clock::Clock;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::{BindingKind, EventInput, Rate, Store};

use super::world::*;

/// `mail-hook` limited to one message a minute, after a burst of `burst`.
async fn limit(w: &World, burst: u32) {
    let mut hook = w
        .store
        .bindings(BindingKind::Channel)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.name == "mail-hook")
        .unwrap();
    hook.rate = Some(Rate {
        per_second: None,
        per_minute: Some(1.0),
        burst: Some(burst),
    });
    w.store.update_binding(&hook).await.unwrap();
}

async fn hello_journey(w: &World) {
    let definition = serde_json::json!({
        "name": "hello", "trigger": {"event": {"kind": "trial.started"}},
        "steps": [{"id": "hello", "type": "send", "binding": "mail-hook",
                   "template": {"subject": "Hallo", "text": "Hallo"}}]
    });
    w.journeys
        .save(definition.to_string().as_bytes())
        .await
        .unwrap();
}

/// Contacts with consent, each with a `trial.started` stored but not yet
/// run: their messages fall due together.
async fn started(w: &World, prefix: &str, count: usize) {
    let emails: Vec<String> = (0..count)
        .map(|i| format!("{prefix}{i}@b2b.example"))
        .collect();
    for email in &emails {
        w.contact(email).await;
    }
    for email in &emails {
        let input = EventInput {
            kind: "trial.started".into(),
            email: Some(email.clone()),
            ..EventInput::default()
        };
        w.journeys.pipeline.ingest(&input).await.unwrap();
    }
}

async fn outbox(store: &Store, status: &str) -> usize {
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE status = $1")
        .bind(status)
        .fetch_one(store.pool())
        .await
        .unwrap();
    usize::try_from(count).unwrap()
}

/// The deliver jobs still queued: (attempts, due_at, last_error).
async fn queued(store: &Store) -> Vec<(i64, i64, Option<String>)> {
    sqlx::query_as(
        "SELECT attempts, due_at, last_error FROM jobs WHERE kind = 'deliver' AND failed_at IS NULL",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Idempotency keys the receiver got, each once.
fn keys(w: &World) -> Vec<String> {
    w.sink
        .received()
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap_or_default().to_owned())
        .collect()
}

#[track_caller]
fn assert_none_twice(w: &World, dialect: &str) {
    let keys = keys(w);
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "{dialect}: {keys:?}");
}

async fn the_burst_goes_out_and_the_rest_waits_for_tokens(dialect: &'static str) {
    let w = world(dialect, 200).await;
    limit(&w, 3).await;
    hello_journey(&w).await;
    started(&w, "c", 5).await;
    w.run().await;

    assert_eq!(w.sink.received().len(), 3, "{dialect}: the burst");
    assert_eq!(outbox(&w.store, "delivered").await, 3, "{dialect}");
    assert_eq!(outbox(&w.store, "pending").await, 2, "{dialect}");
    let now = w.clock.now();
    let waiting = queued(&w.store).await;
    assert_eq!(waiting.len(), 2, "{dialect}: {waiting:?}");
    for (attempts, due_at, error) in &waiting {
        assert_eq!(*attempts, 0, "{dialect}: no attempt counted");
        assert!(error.is_none(), "{dialect}: not a failure: {error:?}");
        // One token a minute: the first comes in a minute, the next a
        // minute later.
        assert!(
            *due_at > now && *due_at <= now + 2 * 60_000 + 1,
            "{dialect}: {due_at} vs {now}"
        );
    }
    let dues: BTreeSet<i64> = waiting.iter().map(|(_, due, _)| *due).collect();
    assert_eq!(dues.len(), 2, "{dialect}: spread one token apart");

    // Before the first token nothing more goes out.
    w.clock.set(now + 30_000);
    w.run().await;
    assert_eq!(w.sink.received().len(), 3, "{dialect}");

    w.clock.set(now + 10 * 60_000);
    w.run().await;
    assert_eq!(w.sink.received().len(), 5, "{dialect}");
    assert_eq!(outbox(&w.store, "delivered").await, 5, "{dialect}");
    assert!(queued(&w.store).await.is_empty(), "{dialect}");
    assert_none_twice(&w, dialect);
    let failed: Vec<(String,)> = sqlx::query_as("SELECT id FROM jobs WHERE failed_at IS NOT NULL")
        .fetch_all(w.store.pool())
        .await
        .unwrap();
    assert!(failed.is_empty(), "{dialect}: {failed:?}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    the_burst_goes_out_and_the_rest_waits_for_tokens
);

/// A second node on the same database: its own store, registry and
/// scheduler, with the first node's clock.
async fn second_node(w: &World, url: &str) -> (Store, Arc<Scheduler>) {
    let store = Store::connect(url).await.unwrap();
    let pipeline =
        nachfass_tests::world::pipeline(store.clone(), registry().await, w.clock.clone());
    let journeys = Journeys::new(pipeline, Policy::default());
    (store, Scheduler::new(journeys, SchedulerConfig::default()))
}

async fn two_nodes_share_one_bucket(dialect: &'static str) {
    let (url, temp) = nachfass_tests::database(dialect).await;
    let store = Store::connect(&url).await.unwrap();
    let w = World::new(store, temp, registry().await, 200).await;
    let (b_store, b) = second_node(&w, &url).await;
    limit(&w, 4).await;
    hello_journey(&w).await;

    // Node A sends 3 of the bucket's 4; node B then finds 1 left.
    started(&w, "a", 3).await;
    w.run().await;
    assert_eq!(w.sink.received().len(), 3, "{dialect}: node A");
    started(&w, "b", 3).await;
    b.run_until_idle().await.unwrap();
    assert_eq!(
        w.sink.received().len(),
        4,
        "{dialect}: node B took the last token"
    );
    assert_eq!(queued(&w.store).await.len(), 2, "{dialect}");

    // Refilled to the burst; both nodes run the waiting and new messages
    // at once, and together send no more than the burst.
    started(&w, "c", 8).await;
    w.clock.set(w.clock.now() + 60 * 60_000);
    let (a_ran, b_ran) = tokio::join!(w.scheduler.run_until_idle(), b.run_until_idle());
    a_ran.unwrap();
    b_ran.unwrap();
    assert_eq!(
        w.sink.received().len(),
        8,
        "{dialect}: the burst again, no more"
    );
    assert_eq!(outbox(&w.store, "delivered").await, 8, "{dialect}");
    assert_eq!(outbox(&w.store, "pending").await, 6, "{dialect}");
    let waiting = queued(&w.store).await;
    assert_eq!(waiting.len(), 6, "{dialect}: {waiting:?}");
    assert!(
        waiting.iter().all(|(attempts, _, _)| *attempts == 0),
        "{dialect}: {waiting:?}"
    );
    assert_none_twice(&w, dialect);
    b_store.pool().close().await;
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    two_nodes_share_one_bucket
);
