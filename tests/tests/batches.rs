//! The batched profile pipeline on SQLite and PostgreSQL: a batch applies
//! exactly what one event at a time would; events accepted but not applied
//! (a crash in between) are applied once by their `process_events` job;
//! a `score_at_least` trigger sees the score its own event produced; a
//! journey's `set_attribute` step re-scores and re-segments the contact;
//! scheduler lanes claim only their kinds; a committed job wakes a
//! scheduler that would otherwise sleep; journey steps run in batches of
//! one transaction, where a failing step rolls back alone.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nachfass::clock::ManualClock;
use nachfass::ingest::Pipeline;
use nachfass::journeys::Journeys;
use nachfass::model::Value;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::scoring::StageThresholds;
use nachfass::store::jobs::{KindFilter, ProfileChanged, RouteEvent};
use nachfass::store::{Applied, BindingDef, BindingKind, EventInput, ProfileEffect, Store};
use nachfass_tests::{DAY, TempStore, guests, on_both_databases, runtime};

/// Monday 2026-11-23, 10:00 in Berlin.
const NOW: i64 = 1_795_424_400_000;
const HOUR: i64 = 60 * 60 * 1000;

struct World {
    store: Store,
    clock: Arc<ManualClock>,
    journeys: Arc<Journeys>,
    temp: TempStore,
}

fn binding(name: &str, kind: BindingKind, plugin: &str, config: &[(&str, &str)]) -> BindingDef {
    BindingDef {
        name: name.into(),
        kind,
        plugin: plugin.into(),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    }
}

/// A store with the engagement scorer (at most two points of a kind a
/// day) and three segment rules: has an email, inactive for a day, and
/// the attribute `hot = yes`.
async fn world(dialect: &str) -> World {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let registry = Arc::new(Registry::new(runtime()));
    for guest in [
        guests::ENGAGEMENT,
        guests::HELLO,
        guests::INACTIVE_DAYS,
        guests::ATTRIBUTE_MATCH,
    ] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    for def in [
        binding(
            "engagement",
            BindingKind::Scorer,
            "engagement",
            &[("max_per_day", "2")],
        ),
        binding("reachable", BindingKind::Segment, "hello", &[]),
        binding(
            "dormant",
            BindingKind::Segment,
            "inactive-days",
            &[("days", "1")],
        ),
        binding(
            "hot",
            BindingKind::Segment,
            "attribute-match",
            &[("attribute", "hot"), ("op", "eq"), ("value", "yes")],
        ),
    ] {
        store.create_binding(&def, 0).await.unwrap();
    }
    let clock = Arc::new(ManualClock::new(NOW));
    let pipeline = Pipeline {
        store: store.clone(),
        registry,
        clock: clock.clone(),
        stages: StageThresholds::default(),
    };
    World {
        store,
        clock,
        journeys: Journeys::new(pipeline, Policy::default()),
        temp,
    }
}

impl World {
    fn pipeline(&self) -> &Pipeline {
        &self.journeys.pipeline
    }

    fn scheduler(&self) -> Arc<Scheduler> {
        Scheduler::new(self.journeys.clone(), SchedulerConfig::default())
    }

    /// What the store says about each contact, by email: score history
    /// (binding, delta, event kind), stage, memberships and timeline kinds.
    async fn profiles(&self, emails: &[&str]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for email in emails {
            let id = self.store.find_contact_id(email).await;
            let contact = self.store.contact(&id).await.unwrap();
            let timeline = {
                let mut t = self.store.timeline(&id, 500, None).await.unwrap();
                t.reverse();
                t
            };
            let kind_of: BTreeMap<String, String> = timeline
                .iter()
                .map(|e| (e.id.clone(), e.kind.clone()))
                .collect();
            let history: Vec<String> = self
                .store
                .score_history(&id)
                .await
                .unwrap()
                .into_iter()
                .map(|s| {
                    let kind = s.event_id.and_then(|e| kind_of.get(&e).cloned());
                    format!("{}{:+}@{}", s.binding, s.delta, kind.unwrap_or_default())
                })
                .collect();
            let memberships = self.store.memberships(&id).await.unwrap();
            // As a sorted list: events at the same instant are ordered by
            // id, and a batch stores its events before the events they cause.
            let mut kinds: Vec<String> = timeline.into_iter().map(|e| e.kind).collect();
            kinds.sort();
            out.insert(
                (*email).to_owned(),
                format!(
                    "score {} stage {} segments {memberships:?} history {history:?} timeline {kinds:?}",
                    contact.score, contact.stage
                ),
            );
        }
        out
    }

    async fn close(self) {
        self.temp.cleanup(self.store).await;
    }
}

trait FindContact {
    async fn find_contact_id(&self, email: &str) -> String;
}

impl FindContact for Store {
    async fn find_contact_id(&self, email: &str) -> String {
        let row: (String,) = sqlx::query_as("SELECT id FROM contacts WHERE email = $1")
            .bind(email.to_owned())
            .fetch_one(self.pool())
            .await
            .unwrap();
        row.0
    }
}

fn event(email: &str, kind: &str, at: i64) -> EventInput {
    EventInput {
        kind: kind.into(),
        at: Some(at),
        email: Some(email.into()),
        properties: [("path".to_owned(), Value::Text("/pricing".into()))].into(),
        ..EventInput::default()
    }
}

/// Interleaved events of three contacts: repeated kinds (the scorer's
/// daily cap reads the activity before each event), a contact whose
/// only events are old (it turns dormant), a purchase (a customer).
fn history() -> Vec<EventInput> {
    let old = NOW - 3 * DAY;
    vec![
        event("ada@example.org", "email.opened", NOW - 3000),
        event("bob@example.org", "download", old),
        event("ada@example.org", "email.opened", NOW - 2000),
        event("cem@example.org", "page.visited", NOW - 1000),
        event("ada@example.org", "email.opened", NOW - 1000),
        event("bob@example.org", "webinar.attended", old + 1),
        event("ada@example.org", "demo.requested", NOW - 500),
        event("ada@example.org", "demo.requested", NOW - 400),
        event("cem@example.org", "purchase", NOW - 10),
        event("ada@example.org", "webinar.attended", NOW),
        event("ada@example.org", "email.opened", NOW),
    ]
}

const EMAILS: [&str; 3] = ["ada@example.org", "bob@example.org", "cem@example.org"];

async fn a_batch_applies_exactly_what_one_event_at_a_time_would(dialect: &'static str) {
    let one_by_one = world(dialect).await;
    for input in history() {
        one_by_one.pipeline().ingest(&input).await.unwrap();
    }
    let batched = world(dialect).await;
    let results = batched.pipeline().ingest_batch(&history()).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{dialect}");

    let expected = one_by_one.profiles(&EMAILS).await;
    let got = batched.profiles(&EMAILS).await;
    assert_eq!(got, expected, "{dialect}");
    // The figures the comparison rests on: the cap held, stages moved,
    // old activity made a dormant contact.
    let ada = &got["ada@example.org"];
    // 1 + 1 + (capped) + 20 + 20 + 10 + (capped)
    assert!(ada.contains("score 52 "), "{dialect}: {ada}");
    assert!(ada.contains("stage mql"), "{dialect}: {ada}");
    assert!(
        got["bob@example.org"].contains("\"dormant\""),
        "{dialect}: {got:?}"
    );
    assert!(
        got["cem@example.org"].contains("stage customer"),
        "{dialect}: {got:?}"
    );
    one_by_one.close().await;
    batched.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_batch_applies_exactly_what_one_event_at_a_time_would
);

async fn bad_items_of_a_batch_are_refused_alone(dialect: &'static str) {
    let w = world(dialect).await;
    let mut inputs = history();
    inputs.insert(1, event("ada@example.org", "Not A Kind", NOW));
    inputs.insert(
        3,
        EventInput {
            contact_id: Some("c_missing".into()),
            ..event("x@example.org", "download", NOW)
        },
    );
    let mut resend = event("cem@example.org", "download", NOW);
    resend.client_event_id = Some("shop-1".into());
    inputs.push(resend.clone());
    inputs.push(resend.clone());
    let mut taken = resend;
    taken.kind = "purchase".into();
    inputs.push(taken);
    let results = w.pipeline().ingest_batch(&inputs).await.unwrap();
    assert_eq!(results.len(), inputs.len(), "{dialect}");
    let refused: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused, [1, 3, 15], "{dialect}: {results:?}");
    let first = results[13].as_ref().unwrap();
    let again = results[14].as_ref().unwrap();
    assert!(!first.duplicate && again.duplicate, "{dialect}");
    assert_eq!(first.event.id, again.event.id, "{dialect}");

    // Stored like the clean batch, plus one download.
    let clean = world(dialect).await;
    clean.pipeline().ingest_batch(&history()).await.unwrap();
    let with_bad = w.profiles(&["ada@example.org", "bob@example.org"]).await;
    assert_eq!(
        with_bad,
        clean
            .profiles(&["ada@example.org", "bob@example.org"])
            .await,
        "{dialect}"
    );
    w.close().await;
    clean.close().await;
}
on_both_databases!(
    #[tokio::test]
    bad_items_of_a_batch_are_refused_alone
);

/// A group naming contacts every way: new and stored, by email, external
/// id and contact id, identities that grow, move or clash, bad items, an
/// older event. Each contact is found or created in item order.
fn identity_mix(old_id: &str, eight_id: &str) -> Vec<EventInput> {
    let by = |email: Option<&str>, external: Option<&str>, kind: &str, at: i64| EventInput {
        kind: kind.into(),
        at: Some(at),
        email: email.map(Into::into),
        external_id: external.map(Into::into),
        ..EventInput::default()
    };
    vec![
        by(Some("new@example.org"), None, "download", NOW - 50),
        // The same new contact, spelled otherwise.
        by(Some(" NEW@example.org"), None, "page.visited", NOW - 40),
        // A stored contact gains an external id; the next item finds it by it.
        by(Some("old@example.org"), Some("crm-1"), "download", NOW - 30),
        by(None, Some("crm-1"), "page.visited", NOW - 20),
        // crm-1 and seven@ are two contacts: refused.
        by(Some("seven@example.org"), Some("crm-1"), "download", NOW),
        by(Some("not an email"), None, "download", NOW),
        EventInput {
            contact_id: Some(old_id.to_owned()),
            ..by(None, None, "email.opened", NOW - 10)
        },
        EventInput {
            contact_id: Some("c_missing".into()),
            ..by(None, None, "email.opened", NOW)
        },
        by(Some("nine@example.org"), Some("crm-9"), "download", NOW - 5),
        // The contact created above moves to crm-10: crm-9 names nobody
        // now, so the next item creates another contact.
        by(
            Some("nine@example.org"),
            Some("crm-10"),
            "download",
            NOW - 4,
        ),
        by(None, Some("crm-9"), "download", NOW - 3),
        // A stored contact's external id moves, and crm-7 is free again.
        by(
            Some("seven@example.org"),
            Some("crm-77"),
            "download",
            NOW - 2,
        ),
        by(None, Some("crm-7"), "download", NOW - 1),
        by(Some("old@example.org"), None, "Bad Kind", NOW),
        // Older than what old@ did before: `last_seen_at` stays.
        by(Some("old@example.org"), None, "download", NOW - 10 * DAY),
        by(None, None, "download", NOW),
        // eight@ is looked at (refused: crm-1 is old@'s), then named by id.
        by(Some("eight@example.org"), Some("crm-1"), "download", NOW),
        EventInput {
            contact_id: Some(eight_id.to_owned()),
            ..by(None, None, "email.opened", NOW - 7)
        },
    ]
}

async fn a_group_finds_and_creates_contacts_as_one_event_at_a_time_would(dialect: &'static str) {
    async fn run(dialect: &str, grouped: bool) -> (Vec<String>, Vec<String>, i64) {
        let (store, temp) = nachfass_tests::store(dialect).await;
        let earlier = NOW - DAY;
        let old = store
            .upsert_contact(
                &nachfass::store::ContactInput {
                    email: Some("old@example.org".into()),
                    ..Default::default()
                },
                earlier,
            )
            .await
            .unwrap()
            .contact
            .id;
        store
            .upsert_contact(
                &nachfass::store::ContactInput {
                    email: Some("seven@example.org".into()),
                    external_id: Some("crm-7".into()),
                    ..Default::default()
                },
                earlier,
            )
            .await
            .unwrap();
        let eight = store
            .upsert_contact(
                &nachfass::store::ContactInput {
                    email: Some("eight@example.org".into()),
                    ..Default::default()
                },
                earlier,
            )
            .await
            .unwrap()
            .contact
            .id;
        store
            .ingest_event(&event("old@example.org", "download", NOW - 100), earlier)
            .await
            .unwrap();
        let inputs = identity_mix(&old, &eight);
        let results = if grouped {
            store.ingest_events(&inputs, NOW).await.unwrap()
        } else {
            let mut results = Vec::new();
            for input in &inputs {
                results.push(store.ingest_event(input, NOW).await);
            }
            results
        };
        let mut answers = Vec::new();
        for result in results {
            answers.push(match result {
                Ok(ingested) => {
                    let contact = store.contact(&ingested.event.contact_id).await.unwrap();
                    format!(
                        "{} for {:?}/{:?} created {}",
                        ingested.event.kind,
                        contact.email,
                        contact.external_id,
                        ingested.contact_created
                    )
                }
                // Messages name contact ids, which differ between the runs.
                Err(e) => format!("{e}").split(':').next().unwrap().to_owned(),
            });
        }
        type Row = (Option<String>, Option<String>, Option<i64>, i64, i64);
        let contacts: Vec<Row> = sqlx::query_as(
            "SELECT email, external_id, last_seen_at, created_at, updated_at FROM contacts \
                 ORDER BY email, external_id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let contacts = contacts.iter().map(|c| format!("{c:?}")).collect();
        let (jobs,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE kind = 'process_events'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        temp.cleanup(store).await;
        (answers, contacts, jobs)
    }
    let (answers, contacts, jobs) = run(dialect, true).await;
    let (expected_answers, expected_contacts, _) = run(dialect, false).await;
    assert_eq!(answers, expected_answers, "{dialect}");
    assert_eq!(contacts, expected_contacts, "{dialect}");
    // The figures the comparison rests on.
    let refused: Vec<&str> = [4, 5, 7, 13, 15]
        .iter()
        .map(|&i| answers[i].as_str())
        .collect();
    assert_eq!(
        refused,
        [
            "conflict",
            "invalid input",
            "not found",
            "invalid input",
            "invalid input"
        ],
        "{dialect}: {answers:#?}"
    );
    assert!(
        answers[0].ends_with("created true"),
        "{dialect}: {answers:#?}"
    );
    assert!(
        answers[1].ends_with("created false"),
        "{dialect}: {answers:#?}"
    );
    assert!(
        answers[3].contains("Some(\"old@example.org\")/Some(\"crm-1\")"),
        "{dialect}: {answers:#?}"
    );
    assert!(
        answers[10].contains("None/Some(\"crm-9\") created true"),
        "{dialect}: {answers:#?}"
    );
    assert_eq!(contacts.len(), 7, "{dialect}: {contacts:#?}");
    assert!(
        contacts.iter().any(|c| c.starts_with(&format!(
            "(Some(\"eight@example.org\"), None, Some({}),",
            NOW - 7
        ))),
        "{dialect}: {contacts:#?}"
    );
    // One transaction for the group (its one backstop job), not one per item.
    assert_eq!(
        jobs, 2,
        "{dialect}: the earlier event's job and the group's"
    );
}
on_both_databases!(
    #[tokio::test]
    a_group_finds_and_creates_contacts_as_one_event_at_a_time_would
);

/// Membership changes of one batch are written as one insert or delete
/// at a time would: a change the stored row already shows (a concurrent
/// writer made it) causes no timeline event, each later one does.
async fn membership_changes_of_a_batch_land_like_one_write_at_a_time(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let stored = store
        .ingest_events(&[event("ada@example.org", "download", NOW)], NOW)
        .await
        .unwrap();
    let event = stored[0].as_ref().unwrap().event.clone();
    let ada = event.contact_id.clone();
    // Another writer put ada in `hot` meanwhile.
    sqlx::query("INSERT INTO segment_members (segment, contact_id, since) VALUES ('hot', $1, $2)")
        .bind(ada.clone())
        .bind(NOW)
        .execute(store.pool())
        .await
        .unwrap();
    let change = |segment: &str, member: bool| ProfileEffect::Membership {
        segment: segment.into(),
        contact_id: ada.clone(),
        member,
    };
    let effects = [
        change("hot", true),
        change("hot", false),
        change("hot", true),
        change("cold", true),
        change("cold", false),
        change("new", true),
    ];
    let applied = store
        .apply_profile_effects(std::slice::from_ref(&event.id), &effects, None, NOW)
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done, "{dialect}");
    assert_eq!(
        store.memberships(&ada).await.unwrap(),
        ["hot", "new"],
        "{dialect}"
    );
    let mut timeline: Vec<String> = store
        .timeline(&ada, 100, None)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .filter(|e| e.kind.starts_with("segment."))
        .map(|e| format!("{} {:?}", e.kind, e.properties.get("segment")))
        .collect();
    timeline.sort();
    let mut expected: Vec<String> = [
        ("segment.left", "hot"),
        ("segment.entered", "hot"),
        ("segment.entered", "cold"),
        ("segment.left", "cold"),
        ("segment.entered", "new"),
    ]
    .iter()
    .map(|(kind, segment)| format!("{kind} {:?}", Some(&Value::Text((*segment).to_owned()))))
    .collect();
    expected.sort();
    assert_eq!(timeline, expected, "{dialect}");
    // Applied once: a second worker finds the event taken.
    assert_eq!(
        store
            .apply_profile_effects(&[event.id], &effects, None, NOW)
            .await
            .unwrap(),
        Applied::Raced,
        "{dialect}"
    );
    temp.cleanup(store).await;
}
on_both_databases!(
    #[tokio::test]
    membership_changes_of_a_batch_land_like_one_write_at_a_time
);

async fn accepted_events_are_applied_once_after_a_crash(dialect: &'static str) {
    let w = world(dialect).await;
    w.journeys
        .save(
            br#"{"name":"hot-leads","trigger":{"score_at_least":20},"re_entry":"never",
                 "steps":[{"id":"tag","type":"set_attribute","name":"hot","value":"yes"}]}"#,
        )
        .await
        .unwrap();
    // Stored, then the node dies before applying them.
    let accepted = w.store.ingest_events(&history(), NOW).await.unwrap();
    let ids: Vec<String> = accepted
        .iter()
        .map(|r| r.as_ref().unwrap().event.id.clone())
        .collect();
    let ada = w.store.find_contact_id("ada@example.org").await;
    assert_eq!(w.store.contact(&ada).await.unwrap().score, 0, "{dialect}");

    // Nothing is due until the grace time has passed: no route job either,
    // since an event is routed once its score is known.
    let scheduler = w.scheduler();
    assert_eq!(scheduler.run_until_idle().await.unwrap(), 0, "{dialect}");
    w.clock.set(NOW + 31_000);
    scheduler.run_until_idle().await.unwrap();
    let once = w.profiles(&EMAILS).await;
    assert!(
        once["ada@example.org"].contains("score 52 "),
        "{dialect}: {once:?}"
    );

    // The trigger saw the score the events produced, and the journey's
    // attribute step re-segmented the contact.
    let runs = w.store.contact_runs(&ada).await.unwrap();
    assert_eq!(runs.len(), 1, "{dialect}: {runs:?}");
    assert_eq!(runs[0].status, "completed", "{dialect}");
    let contact = w.store.contact(&ada).await.unwrap();
    assert_eq!(
        contact.attributes.get("hot"),
        Some(&Value::Text("yes".into())),
        "{dialect}"
    );
    assert!(
        w.store
            .memberships(&ada)
            .await
            .unwrap()
            .contains(&"hot".to_owned()),
        "{dialect}"
    );
    let bob = w.store.find_contact_id("bob@example.org").await;
    assert!(
        w.store.contact_runs(&bob).await.unwrap().is_empty(),
        "{dialect}"
    );
    // Every event is applied now, the journey's own (`journey.completed`)
    // included: those are born applied.
    let (unapplied,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE processed_at IS NULL")
            .fetch_one(w.store.pool())
            .await
            .unwrap();
    assert_eq!(unapplied, 0, "{dialect}");
    assert!(
        w.store
            .timeline(&ada, 500, None)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "journey.completed"),
        "{dialect}"
    );

    // Applying again changes nothing: each event is applied once.
    let before = w.profiles(&EMAILS).await;
    w.pipeline().process_events(&ids).await.unwrap();
    assert_eq!(w.profiles(&EMAILS).await, before, "{dialect}");
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    accepted_events_are_applied_once_after_a_crash
);

/// Single requests arriving together go through the queue's groups (a
/// contact's events in one group, stored and applied in one transaction
/// on PostgreSQL, in two on SQLite) and end as the same events one at a
/// time would.
async fn single_requests_arriving_together_end_as_one_at_a_time(dialect: &'static str) {
    let inputs: Vec<EventInput> = (0..48)
        .map(|i| {
            let kind = ["download", "email.opened", "page.visited"][i % 3];
            event(
                &format!("p{}@example.org", i % 6),
                kind,
                NOW - 100 + i as i64,
            )
        })
        .collect();
    let emails: Vec<String> = (0..6).map(|i| format!("p{i}@example.org")).collect();
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    let summary = |w: &World| {
        let emails = emails.clone();
        let store = w.store.clone();
        async move {
            let mut out = Vec::new();
            for email in emails {
                let id = store.find_contact_id(email).await;
                let contact = store.contact(&id).await.unwrap();
                let memberships = store.memberships(&id).await.unwrap();
                out.push(format!(
                    "{email} score {} stage {} {memberships:?}",
                    contact.score, contact.stage
                ));
            }
            out
        }
    };

    let one_by_one = world(dialect).await;
    for input in &inputs {
        one_by_one.pipeline().ingest(input).await.unwrap();
    }
    let together = world(dialect).await;
    let queue = nachfass::ingest::IngestQueue::new(together.pipeline().clone());
    let sent: Vec<_> = inputs
        .iter()
        .map(|input| {
            let (queue, input) = (queue.clone(), input.clone());
            tokio::spawn(async move { queue.submit(input).await })
        })
        .collect();
    for answer in sent {
        assert!(!answer.await.unwrap().unwrap().duplicate, "{dialect}");
    }
    let expected = summary(&one_by_one).await;
    assert_eq!(summary(&together).await, expected, "{dialect}");
    // The figures the comparison rests on: each contact scored (the daily
    // caps hold in any order of a contact's events).
    assert!(
        expected.iter().all(|line| !line.contains(" score 0 ")),
        "{expected:#?}"
    );
    let (unapplied, backstops): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM events WHERE processed_at IS NULL), \
                (SELECT COUNT(*) FROM jobs WHERE kind = 'process_events')",
    )
    .fetch_one(together.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (unapplied, backstops),
        (0, 0),
        "{dialect}: every group applied, every backstop gone"
    );
    // The dashboard's day counters count the same events either way (a
    // group in one transaction counts its own and the caused events at
    // its end).
    let days = one_by_one.store.events_per_day(0).await.unwrap();
    assert!(
        days.iter().map(|(_, n)| n).sum::<i64>() >= 48,
        "{dialect}: {days:?}"
    );
    assert_eq!(
        together.store.events_per_day(0).await.unwrap(),
        days,
        "{dialect}"
    );
    one_by_one.close().await;
    together.close().await;
}
on_both_databases!(
    #[tokio::test]
    single_requests_arriving_together_end_as_one_at_a_time
);

async fn a_lane_claims_only_its_kinds(dialect: &'static str) {
    let w = world(dialect).await;
    for i in 0..5 {
        let job = RouteEvent {
            event_id: format!("e{i}"),
        };
        w.store.enqueue(&job, NOW, NOW).await.unwrap();
    }
    let deliveries = w
        .store
        .claim_jobs_of(KindFilter::Only(&["deliver"]), "n1", NOW, 60_000, 10)
        .await
        .unwrap();
    assert!(deliveries.is_empty(), "{dialect}");
    let work = w
        .store
        .claim_jobs_of(KindFilter::Except(&["deliver"]), "n1", NOW, 60_000, 3)
        .await
        .unwrap();
    assert_eq!(work.len(), 3, "{dialect}");
    assert!(work.iter().all(|j| j.kind == "route"), "{dialect}");
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_lane_claims_only_its_kinds
);

/// A scheduler running `run_forever` that polls once a minute, with its
/// stop signal and its task.
fn sleepy_scheduler(
    w: &World,
) -> (
    Arc<Scheduler>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let config = SchedulerConfig {
        idle: Duration::from_secs(60),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(w.journeys.clone(), config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(scheduler.clone().run_forever(stopped));
    (scheduler, stop, running)
}

async fn a_committed_job_wakes_a_sleeping_scheduler(dialect: &'static str) {
    let w = world(dialect).await;
    w.journeys
        .save(
            br#"{"name":"welcome","trigger":{"event":{"kind":"signup"}},
                 "steps":[{"id":"tag","type":"set_attribute","name":"welcomed","value":"yes"}]}"#,
        )
        .await
        .unwrap();
    w.clock.set(NOW);
    // Polls once a minute: only a wake can make it run the route job soon.
    let (_, stop, running) = sleepy_scheduler(&w);
    // Let the lanes reach their first sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ada = w
        .pipeline()
        .ingest(&event("ada@example.org", "signup", NOW))
        .await
        .unwrap()
        .event
        .contact_id;
    let mut status = Vec::new();
    for _ in 0..200 {
        status = w
            .store
            .contact_runs(&ada)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.status)
            .collect();
        if status == ["completed"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, ["completed"], "{dialect}: woken, not polled");
    stop.send(true).unwrap();
    running.await.unwrap();
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_committed_job_wakes_a_sleeping_scheduler
);

/// A scheduler with nothing due sleeps until a commit wakes it or its poll
/// comes round: no lane claims again and again in the meantime.
async fn an_idle_scheduler_leaves_the_database_alone(dialect: &'static str) {
    let w = world(dialect).await;
    w.clock.set(NOW);
    let (scheduler, stop, running) = sleepy_scheduler(&w);
    // The lanes' first claims, and on PostgreSQL the one after LISTEN.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = scheduler.claims_made();
    assert!(before > 0, "{dialect}: the lanes started");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let claims = scheduler.claims_made() - before;
    assert!(
        claims <= 3,
        "{dialect}: {claims} claims in an idle second; the poll is once a minute"
    );
    stop.send(true).unwrap();
    running.await.unwrap();
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    an_idle_scheduler_leaves_the_database_alone
);

/// Journey steps run in batches, one transaction for all: a step that
/// fails takes back its own writes (nothing it wrote stays) and is
/// retried, while the other steps of the batch commit.
async fn a_failing_step_rolls_back_alone(dialect: &'static str) {
    let w = world(dialect).await;
    // Its plugin is not installed: a send through it fails.
    let mail = binding("mail", BindingKind::Channel, "not-installed", &[]);
    w.store.create_binding(&mail, 0).await.unwrap();
    w.journeys
        .save(
            br#"{"name":"welcome","trigger":{"event":{"kind":"signup"}},
                 "steps":[{"id":"tag","type":"set_attribute","name":"welcomed","value":"yes"}]}"#,
        )
        .await
        .unwrap();
    w.journeys
        .save(
            br#"{"name":"trial","trigger":{"event":{"kind":"trial.started"}},
                 "steps":[{"id":"tag","type":"set_attribute","name":"tried","value":"yes"},
                          {"id":"mail","type":"send","binding":"mail",
                           "template":{"subject":"Hallo","text":"Hallo {{ contact.email }}"}}]}"#,
        )
        .await
        .unwrap();
    for (email, kind) in [
        ("ada@example.org", "signup"),
        ("cem@example.org", "trial.started"),
        ("bob@example.org", "signup"),
    ] {
        w.pipeline().ingest(&event(email, kind, NOW)).await.unwrap();
    }
    let scheduler = w.scheduler();
    scheduler.run_until_idle().await.unwrap();

    for email in ["ada@example.org", "bob@example.org"] {
        let id = w.store.find_contact_id(email).await;
        let runs = w.store.contact_runs(&id).await.unwrap();
        assert_eq!(runs.len(), 1, "{dialect}: {runs:?}");
        assert_eq!(runs[0].status, "completed", "{dialect}: {email}");
        let contact = w.store.contact(&id).await.unwrap();
        assert_eq!(
            contact.attributes.get("welcomed"),
            Some(&Value::Text("yes".into())),
            "{dialect}: {email}"
        );
    }
    // The failed step left nothing behind: no attribute, the run where it
    // was, and its job waiting for a retry with the reason.
    let cem = w.store.find_contact_id("cem@example.org").await;
    let contact = w.store.contact(&cem).await.unwrap();
    assert_eq!(contact.attributes.get("tried"), None, "{dialect}");
    let runs = w.store.contact_runs(&cem).await.unwrap();
    assert_eq!(runs.len(), 1, "{dialect}: {runs:?}");
    assert_eq!(runs[0].status, "active", "{dialect}");
    assert_eq!(runs[0].step.as_deref(), Some("tag"), "{dialect}");
    let jobs: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("SELECT kind, attempts, last_error FROM jobs WHERE failed_at IS NULL")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    assert_eq!(jobs.len(), 1, "{dialect}: {jobs:?}");
    assert_eq!((jobs[0].0.as_str(), jobs[0].1), ("advance", 1), "{dialect}");
    let error = jobs[0].2.clone().unwrap_or_default();
    assert!(
        error.contains("`mail` has no live plugin"),
        "{dialect}: {error}"
    );
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_failing_step_rolls_back_alone
);

/// A batch of steps holds its writes until its end and removes its jobs
/// only if it still holds every lease: when another worker took one of
/// them over meanwhile, nothing of the batch is kept, the jobs still held
/// run again together, and the taken-over job is left to the worker that
/// holds it.
async fn a_batch_with_a_lost_lease_keeps_nothing_of_that_job(dialect: &'static str) {
    let w = world(dialect).await;
    w.journeys
        .save(
            br#"{"name":"welcome","trigger":{"event":{"kind":"signup"}},
                 "steps":[{"id":"later","type":"wait","duration":"1h"},
                          {"id":"tag","type":"set_attribute","name":"welcomed","value":"yes"}]}"#,
        )
        .await
        .unwrap();
    for email in ["ada@example.org", "bob@example.org", "cem@example.org"] {
        w.pipeline()
            .ingest(&event(email, "signup", NOW))
            .await
            .unwrap();
    }
    w.scheduler().run_until_idle().await.unwrap();
    // The three runs wait an hour; claim their steps as this worker would.
    w.clock.set(NOW + HOUR);
    let claimed: Vec<_> = w
        .store
        .claim_jobs("this-worker", NOW + HOUR, 60_000, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|job| job.kind == "advance")
        .collect();
    assert_eq!(claimed.len(), 3, "{dialect}: {claimed:?}");
    // Another worker takes one of them over (this one's lease ran out).
    let taken = claimed[1].clone();
    sqlx::query("UPDATE jobs SET leased_by = 'other-worker' WHERE id = $1")
        .bind(taken.id.clone())
        .execute(w.store.pool())
        .await
        .unwrap();
    let registry = nachfass::scheduler::job_registry();
    let outcomes = registry
        .run_batch(w.journeys.clone(), claimed.clone())
        .await;
    assert_eq!(outcomes.len(), 3, "{dialect}");
    assert!(
        outcomes.iter().all(|o| o.is_ok()),
        "{dialect}: {outcomes:?}"
    );

    let mut tagged = 0;
    for email in ["ada@example.org", "bob@example.org", "cem@example.org"] {
        let id = w.store.find_contact_id(email).await;
        let runs = w.store.contact_runs(&id).await.unwrap();
        let contact = w.store.contact(&id).await.unwrap();
        let welcomed = contact.attributes.contains_key("welcomed");
        if welcomed {
            tagged += 1;
            assert_eq!(runs[0].status, "completed", "{dialect}: {email}");
        } else {
            // The taken-over step: its run is where the wait left it,
            // due to go on at `tag`.
            assert_eq!(runs[0].status, "active", "{dialect}: {email}");
            assert_eq!(runs[0].step.as_deref(), Some("tag"), "{dialect}: {email}");
        }
    }
    assert_eq!(tagged, 2, "{dialect}");
    // Only the taken-over job is left, still the other worker's.
    let left: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, leased_by FROM jobs WHERE kind = 'advance'")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![(taken.id.clone(), Some("other-worker".to_owned()))],
        "{dialect}"
    );
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_batch_with_a_lost_lease_keeps_nothing_of_that_job
);

/// Steps of one batch see the timeline events earlier steps of the batch
/// wrote, though those are written only when the batch ends: a branch on
/// `journey.completed` sees the run that completed a moment before it.
async fn a_branch_sees_events_written_earlier_in_its_batch(dialect: &'static str) {
    let w = world(dialect).await;
    w.journeys
        .save(
            br#"{"name":"first","trigger":{"event":{"kind":"signup"}},
                 "steps":[{"id":"pause","type":"wait","duration":"59m"}]}"#,
        )
        .await
        .unwrap();
    w.journeys
        .save(
            br#"{"name":"second","trigger":{"event":{"kind":"signup"}},
                 "steps":[{"id":"pause","type":"wait","duration":"1h"},
                          {"id":"check","type":"branch",
                           "condition":{"had_event":{"kind":"journey.completed","within":"1h"}},
                           "then":"seen","else":"unseen"},
                          {"id":"seen","type":"set_attribute","name":"saw","value":"yes","next":"end"},
                          {"id":"unseen","type":"set_attribute","name":"saw","value":"no"},
                          {"id":"end","type":"exit"}]}"#,
        )
        .await
        .unwrap();
    w.pipeline()
        .ingest(&event("ada@example.org", "signup", NOW))
        .await
        .unwrap();
    let scheduler = w.scheduler();
    scheduler.run_until_idle().await.unwrap();
    // Both waits are over: one batch runs the end of `first` (oldest due
    // first), then the branch of `second`.
    w.clock.set(NOW + HOUR);
    scheduler.run_until_idle().await.unwrap();
    let id = w.store.find_contact_id("ada@example.org").await;
    let contact = w.store.contact(&id).await.unwrap();
    assert_eq!(
        contact.attributes.get("saw"),
        Some(&Value::Text("yes".into())),
        "{dialect}"
    );
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_branch_sees_events_written_earlier_in_its_batch
);

/// A running server claims only the kinds it runs, named (a claim of
/// "every kind but these" would walk all due steps): a job of a kind this
/// node does not know waits untouched for a node that does, while a known
/// kind runs.
async fn a_server_leaves_unknown_kinds_alone(dialect: &'static str) {
    let w = world(dialect).await;
    let known = ProfileChanged {
        contact_id: "c_gone".into(),
        change: "test".into(),
    };
    w.store.enqueue(&known, NOW, NOW).await.unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, kind, unique_key, payload, due_at, created_at) \
         VALUES ('j_newer', 'from_a_newer_node', 'newer:1', '{}', $1, $1)",
    )
    .bind(NOW)
    .execute(w.store.pool())
    .await
    .unwrap();
    let config = SchedulerConfig {
        idle: Duration::from_millis(20),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(w.journeys.clone(), config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(scheduler.run_forever(stopped));
    let count = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs")
            .fetch_one(w.store.pool())
            .await
            .unwrap();
        n
    };
    for _ in 0..200 {
        if count().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more rounds of every lane.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    running.await.unwrap();
    let left: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("SELECT kind, attempts, leased_by FROM jobs")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![("from_a_newer_node".to_owned(), 0, None)],
        "{dialect}"
    );
    w.close().await;
}
on_both_databases!(
    #[tokio::test]
    a_server_leaves_unknown_kinds_alone
);
