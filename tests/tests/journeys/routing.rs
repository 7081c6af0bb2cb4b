//! Events routed together: a batch of route jobs reads its contacts' runs
//! once and routes each event against the runs as the events before it
//! left them, so an event sees the run an earlier event of its batch
//! started, converted or ended.

use nachfass::journeys::AdvanceRun;
use nachfass::store::jobs::{JobArgs, RouteEvent};
use sqlx::Row;

use super::world::*;

/// Stores a touchpoint for the next scheduler round, a millisecond after
/// the one before: the route jobs are due in arrival order.
async fn stored(w: &World, email: &str, kind: &str, properties: &[(&str, &str)]) {
    w.stored(email, kind, properties).await;
    w.clock.advance(1);
}

async fn events_routed_in_one_batch_see_each_others_runs(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let def = serde_json::json!({ "name": "offer", "trigger": { "event": { "kind": "signup" } },
        "goals": [ { "event": "purchase" } ],
        "steps": [
            { "id": "offer", "type": "send", "binding": "mail-hook",
              "template": { "subject": "Angebot", "text": "…" } },
            { "id": "pause", "type": "wait", "duration": "5d" } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    let [buyer, leaver, twice, earlier] =
        ["buyer", "leaver", "twice", "earlier"].map(|name| format!("{name}@routing.example"));
    let ids = w.contacts(&[&buyer, &leaver, &twice, &earlier]).await;
    // A run from before the batch, in its pause.
    w.ingest(&earlier, "signup", &[]).await;
    assert_eq!(
        w.run_status(&ids[3], "offer").await,
        vec!["active"],
        "{dialect}"
    );

    stored(&w, &buyer, "signup", &[]).await;
    stored(&w, &leaver, "signup", &[]).await;
    stored(&w, &twice, "signup", &[]).await;
    stored(&w, &buyer, "purchase", &[("value", "50")]).await;
    stored(&w, &leaver, "email.unsubscribed", &[]).await;
    stored(&w, &twice, "signup", &[]).await;
    stored(&w, &earlier, "purchase", &[("value", "20")]).await;
    let due: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = $1")
        .bind(RouteEvent::KIND)
        .fetch_one(w.store.pool())
        .await
        .unwrap();
    assert!(
        due >= 7,
        "{dialect}: {due} route jobs wait, one per stored event and those their effects caused"
    );
    w.run().await;

    assert_eq!(
        w.run_status(&ids[0], "offer").await,
        vec!["converted"],
        "{dialect}"
    );
    assert_eq!(
        w.run_status(&ids[1], "offer").await,
        vec!["exited"],
        "{dialect}"
    );
    assert_eq!(
        w.reasons(&ids[1], "journey.exited").await,
        vec!["email.unsubscribed"],
        "{dialect}"
    );
    assert_eq!(
        w.run_status(&ids[2], "offer").await.len(),
        1,
        "{dialect}: the second signup finds the run the first started"
    );
    assert_eq!(
        w.run_status(&ids[3], "offer").await,
        vec!["converted"],
        "{dialect}"
    );
    let kinds = w.kinds(&ids[0]).await;
    let entered = kinds.iter().position(|k| k == "journey.entered");
    let converted = kinds.iter().position(|k| k == "journey.converted");
    assert!(
        entered.is_some() && entered < converted,
        "{dialect}: {kinds:?}"
    );
    // The runs that ended before their first step sent nothing.
    assert!(w.subjects(&buyer).is_empty(), "{dialect}");
    assert!(w.subjects(&leaver).is_empty(), "{dialect}");
    assert_eq!(w.subjects(&twice), vec!["Angebot"], "{dialect}");
    let values: Vec<(String, f64)> = sqlx::query(
        "SELECT contact_id, conversion_value FROM journey_runs \
         WHERE conversion_value IS NOT NULL ORDER BY conversion_value",
    )
    .fetch_all(w.store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    assert_eq!(
        values,
        vec![(ids[3].clone(), 20.0), (ids[0].clone(), 50.0)],
        "{dialect}: a run started in the batch takes its goal's value too"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    events_routed_in_one_batch_see_each_others_runs
);

async fn a_trigger_queues_its_first_message_in_the_routing_batch(dialect: &'static str) {
    let w = world(dialect, 200).await;
    offer_journey(&w).await;
    let id = w.contact("first@routing.example").await;
    stored(&w, "first@routing.example", "signup", &[]).await;
    // One round: it claims the event's route job; the run's first step (a
    // send) runs in the same transaction, with no job of its own between.
    assert!(w.scheduler.tick().await.unwrap() >= 1, "{dialect}");
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE contact_id = $1")
        .bind(id.clone())
        .fetch_one(w.store.pool())
        .await
        .unwrap();
    assert_eq!(
        queued, 1,
        "{dialect}: the message is queued after one round"
    );
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = $1")
        .bind(AdvanceRun::KIND)
        .fetch_one(w.store.pool())
        .await
        .unwrap();
    assert_eq!(waiting, 1, "{dialect}: only the pause's job waits");
    w.run().await;
    assert_eq!(
        w.subjects("first@routing.example"),
        vec!["Ihr Angebot"],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_trigger_queues_its_first_message_in_the_routing_batch
);

/// Stopping a journey stops new entries; its running runs go on, and so
/// they still convert on their goal and end on a stop event, even when
/// no journey takes new entries any more.
async fn a_stopped_journeys_runs_still_meet_goals_and_stops(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let def = serde_json::json!({ "name": "offer", "trigger": { "event": { "kind": "signup" } },
        "goals": [ { "event": "purchase" } ],
        "steps": [
            { "id": "offer", "type": "send", "binding": "mail-hook",
              "template": { "subject": "Angebot", "text": "…" } },
            { "id": "pause", "type": "wait", "duration": "5d" },
            { "id": "again", "type": "send", "binding": "mail-hook",
              "template": { "subject": "Noch einmal", "text": "…" } } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    let [buyer, leaver, late] = ["buyer", "leaver", "late"].map(|n| format!("{n}@stopped.example"));
    let ids = w.contacts(&[&buyer, &leaver, &late]).await;
    w.ingest(&buyer, "signup", &[]).await;
    w.ingest(&leaver, "signup", &[]).await;
    assert!(
        w.journeys.set_active("offer", false).await.unwrap(),
        "{dialect}"
    );

    w.ingest(&buyer, "purchase", &[]).await;
    w.ingest(&leaver, "email.complained", &[]).await;
    w.ingest(&late, "signup", &[]).await;
    assert_eq!(
        w.run_status(&ids[0], "offer").await,
        vec!["converted"],
        "{dialect}"
    );
    assert_eq!(
        w.run_status(&ids[1], "offer").await,
        vec!["exited"],
        "{dialect}"
    );
    assert_eq!(
        w.store.suppressions(&ids[1]).await.unwrap()[0].reason,
        "complained",
        "{dialect}"
    );
    assert!(
        w.run_status(&ids[2], "offer").await.is_empty(),
        "{dialect}: a stopped journey takes no new entries"
    );
    w.pass(6 * 24 * HOUR).await;
    assert_eq!(w.subjects(&buyer), vec!["Angebot"], "{dialect}");
    assert_eq!(w.subjects(&leaver), vec!["Angebot"], "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_stopped_journeys_runs_still_meet_goals_and_stops
);

/// A stop event suppresses its contact even before any journey exists:
/// an unsubscribe or hard bounce imported (or reported by a provider) on
/// day one keeps the first campaign away from that address.
async fn stop_events_suppress_before_any_journey_exists(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let [gone, bounced, kept] = ["gone", "bounced", "kept"].map(|n| format!("{n}@before.example"));
    let ids = w.contacts(&[&gone, &bounced, &kept]).await;
    w.ingest(&gone, "email.unsubscribed", &[]).await;
    // The journey's messages go out through the webhook channel.
    w.ingest(&bounced, "webhook.bounced", &[("type", "hard")])
        .await;
    w.ingest(&kept, "webhook.bounced", &[("type", "soft")])
        .await;
    let reasons = |s: Vec<nachfass::store::suppressions::Suppression>| -> Vec<String> {
        s.into_iter()
            .map(|s| format!("{} {}", s.reason, s.scope))
            .collect()
    };
    assert_eq!(
        reasons(w.store.suppressions(&ids[0]).await.unwrap()),
        ["unsubscribed marketing"],
        "{dialect}"
    );
    assert_eq!(
        reasons(w.store.suppressions(&ids[1]).await.unwrap()),
        ["hard_bounced all"],
        "{dialect}"
    );
    assert!(
        w.store.suppressions(&ids[2]).await.unwrap().is_empty(),
        "{dialect}"
    );

    offer_journey(&w).await;
    for email in [&gone, &bounced, &kept] {
        w.ingest(email, "signup", &[]).await;
    }
    assert!(w.subjects(&gone).is_empty(), "{dialect}");
    assert!(w.subjects(&bounced).is_empty(), "{dialect}");
    assert_eq!(w.subjects(&kept), vec!["Ihr Angebot"], "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    stop_events_suppress_before_any_journey_exists
);

/// A node that connected before the first journey was saved (on another
/// node) routes the events it stores from then on, scheduler or not: the
/// node does not wait to hear of the journey.
async fn a_node_routes_events_once_another_node_saved_a_journey(dialect: &'static str) {
    let (url, temp) = nachfass_tests::database(dialect).await;
    let a = nachfass::store::Store::connect(&url).await.unwrap();
    let b = nachfass::store::Store::connect(&url).await.unwrap();
    let w = World::new(a, temp, registry().await, 200).await;
    let at_b = nachfass_tests::world::pipeline(b.clone(), registry().await, w.clock.clone());
    let id = w.contact("b@nodes.example").await;
    offer_journey(&w).await;

    let signup = nachfass::store::EventInput {
        kind: "signup".into(),
        contact_id: Some(id.clone()),
        ..Default::default()
    };
    at_b.ingest(&signup).await.unwrap();
    w.run().await;
    assert_eq!(w.run_status(&id, "offer").await.len(), 1, "{dialect}");
    assert_eq!(
        w.subjects("b@nodes.example"),
        vec!["Ihr Angebot"],
        "{dialect}"
    );
    b.pool().close().await;
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_node_routes_events_once_another_node_saved_a_journey
);
