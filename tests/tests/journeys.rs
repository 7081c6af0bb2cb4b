//! The ready-made journeys walked with an injected clock through their
//! branches, goals, send windows, frequency cap and unsubscribes, on
//! SQLite and PostgreSQL. Messages go through the real webhook component
//! to a real HTTP receiver on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nachfass::clock::{Clock, ManualClock};
use nachfass::ingest::Pipeline;
use nachfass::journeys::{Journeys, ready_made};
use nachfass::model::status::{ConsentStatus, Purpose};
use nachfass::model::{Event, Value};
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::scoring::StageThresholds;
use nachfass::store::{BindingDef, BindingKind, Consent, EventInput, Store};
use nachfass_tests::{DAY, HttpSink, TempStore, guests, runtime};

const HOUR: i64 = 60 * 60 * 1000;
/// Monday 2026-11-23, 10:00 in Berlin.
const MONDAY_10: i64 = 1_795_424_400_000;

struct World {
    store: Store,
    clock: Arc<ManualClock>,
    journeys: Arc<Journeys>,
    scheduler: Arc<Scheduler>,
    sink: HttpSink,
    temp: Option<TempStore>,
}

async fn registry() -> Arc<Registry> {
    let registry = Arc::new(Registry::new(runtime()));
    for guest in [
        guests::WEBHOOK,
        guests::SMS_HTTP,
        guests::AUDIENCE_SYNC,
        guests::ATTRIBUTE_MATCH,
    ] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    registry
}

impl World {
    async fn new(
        store: Store,
        temp: TempStore,
        registry: Arc<Registry>,
        sink_status: u16,
    ) -> World {
        let sink = HttpSink::start(sink_status).await;
        let clock = Arc::new(ManualClock::new(MONDAY_10));
        let pipeline = Pipeline {
            store: store.clone(),
            registry,
            clock: clock.clone(),
            stages: StageThresholds::default(),
        };
        let hook = BindingDef {
            name: "mail-hook".into(),
            kind: BindingKind::Channel,
            plugin: "webhook".into(),
            config: [
                ("url".to_owned(), format!("http://{}/hook", sink.addr)),
                ("secret".to_owned(), "s3cret".to_owned()),
            ]
            .into(),
            allow_http: vec![sink.addr.to_string()],
            limits: Default::default(),
            paused: None,
            version: None,
        };
        store.create_binding(&hook, 0).await.unwrap();
        let journeys = Journeys::new(pipeline, Policy::default());
        let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
        World {
            store,
            clock,
            journeys,
            scheduler,
            sink,
            temp: Some(temp),
        }
    }

    async fn install(&self, template: &str) {
        let def = ready_made::adapt(template, "mail-hook", None).unwrap();
        self.journeys.save_def(&def).await.unwrap();
    }

    /// A contact with marketing consent for the webhook channel.
    async fn contact(&self, email: &str) -> String {
        let id = self.ingest(email, "contact.imported", &[]).await.contact_id;
        let consent = Consent {
            channel: "webhook".into(),
            purpose: Purpose::Marketing,
            status: ConsentStatus::Granted,
            source: Some("test".into()),
            text_version: None,
            ip: None,
            user_agent: None,
            updated_at: 0,
        };
        self.store
            .set_consent(&id, &consent, self.clock.now())
            .await
            .unwrap();
        id
    }

    async fn ingest(&self, email: &str, kind: &str, properties: &[(&str, &str)]) -> Event {
        let input = EventInput {
            kind: kind.into(),
            email: Some(email.into()),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
                .collect(),
            ..EventInput::default()
        };
        let event = self.journeys.pipeline.ingest(&input).await.unwrap().event;
        self.run().await;
        event
    }

    async fn run(&self) {
        self.scheduler.run_until_idle().await.unwrap();
    }

    /// Moves time forward in steps of at most an hour, running what falls due.
    async fn pass(&self, span: i64) {
        let end = self.clock.now() + span;
        while self.clock.now() < end {
            self.clock.set((self.clock.now() + HOUR).min(end));
            self.run().await;
        }
    }

    /// Subjects the receiver got for `email`, in order.
    fn subjects(&self, email: &str) -> Vec<String> {
        self.sink
            .received()
            .iter()
            .filter_map(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                (body["to"] == email).then(|| body["subject"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    async fn kinds(&self, contact: &str) -> Vec<String> {
        let mut events = self.store.timeline(contact, 500, None).await.unwrap();
        events.reverse();
        events.into_iter().map(|e| e.kind).collect()
    }

    async fn reasons(&self, contact: &str, kind: &str) -> Vec<String> {
        let events = self.store.timeline(contact, 500, None).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.kind == kind)
            .filter_map(|e| match e.properties.get("reason") {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    async fn run_status(&self, contact: &str, journey: &str) -> Vec<String> {
        let runs = self.store.contact_runs(contact).await.unwrap();
        runs.into_iter()
            .filter(|r| r.journey == journey)
            .map(|r| r.status.to_string())
            .collect()
    }

    async fn close(mut self) {
        if let Some(temp) = self.temp.take() {
            temp.cleanup(self.store.clone()).await;
        }
    }
}

/// A world on one database whose webhook receiver answers `sink_status`.
async fn world(dialect: &'static str, sink_status: u16) -> World {
    let (store, temp) = nachfass_tests::store(dialect).await;
    World::new(store, temp, registry().await, sink_status).await
}

async fn cart_abandonment_reminds_twice_and_stops_on_purchase_or_unsubscribe(
    dialect: &'static str,
) {
    let w = world(dialect, 200).await;
    w.install("cart-abandonment").await;
    let ada = w.contact("ada@shop.example").await;
    let bob = w.contact("bob@shop.example").await;
    let cem = w.contact("cem@shop.example").await;
    for email in ["ada@shop.example", "bob@shop.example", "cem@shop.example"] {
        w.ingest(email, "cart.abandoned", &[("total", "89.90")])
            .await;
    }
    assert!(
        w.sink.received().is_empty(),
        "{dialect}: nothing before an hour"
    );
    w.pass(HOUR).await;
    assert_eq!(
        w.subjects("ada@shop.example"),
        ["Sie haben etwas vergessen"],
        "{dialect}"
    );
    let first = &w.sink.received()[0];
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert!(
        body["text"].as_str().unwrap().contains("über 89.90 €"),
        "{dialect}: {body}"
    );
    assert_eq!(
        first.header("Idempotency-Key"),
        body["idempotency_key"].as_str()
    );

    // Bob buys, Cem unsubscribes; only Ada gets the second reminder.
    w.ingest("bob@shop.example", "purchase", &[]).await;
    w.ingest("cem@shop.example", "unsubscribed", &[]).await;
    w.pass(23 * HOUR).await;
    assert_eq!(w.subjects("ada@shop.example").len(), 2, "{dialect}");
    assert_eq!(w.subjects("bob@shop.example").len(), 1, "{dialect}");
    assert_eq!(w.subjects("cem@shop.example").len(), 1, "{dialect}");
    assert_eq!(
        w.run_status(&ada, "cart-abandonment").await,
        ["completed"],
        "{dialect}"
    );
    assert_eq!(
        w.run_status(&bob, "cart-abandonment").await,
        ["converted"],
        "{dialect}"
    );
    assert_eq!(
        w.run_status(&cem, "cart-abandonment").await,
        ["exited"],
        "{dialect}"
    );
    let kinds = w.kinds(&bob).await;
    assert!(
        kinds.contains(&"journey.converted".to_owned()),
        "{dialect}: {kinds:?}"
    );
    let suppressions = w.store.suppressions(&cem).await.unwrap();
    assert_eq!(suppressions[0].reason, "unsubscribed", "{dialect}");

    // An unsubscribed contact abandoning again gets no reminder.
    w.ingest("cem@shop.example", "cart.abandoned", &[]).await;
    w.pass(25 * HOUR).await;
    assert_eq!(w.subjects("cem@shop.example").len(), 1, "{dialect}");
    let skipped = w.reasons(&cem, "message.skipped").await;
    assert!(
        skipped
            .iter()
            .any(|r| r.contains("suppressed (unsubscribed)")),
        "{dialect}: {skipped:?}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    cart_abandonment_reminds_twice_and_stops_on_purchase_or_unsubscribe
);

async fn night_sends_wait_for_the_window_and_say_why(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("cart-abandonment").await;
    let ada = w.contact("ada@shop.example").await;
    // Monday 21:30 in Berlin: the reminder at 22:30 is outside 08–21.
    w.clock.set(MONDAY_10 + 11 * HOUR + 30 * 60_000);
    w.ingest("ada@shop.example", "cart.abandoned", &[]).await;
    w.pass(HOUR).await;
    assert!(w.subjects("ada@shop.example").is_empty(), "{dialect}");
    let deferred = w.reasons(&ada, "message.deferred").await;
    assert_eq!(
        deferred,
        ["deferred: outside send window until Tue 08:00 Europe/Berlin"],
        "{dialect}"
    );
    w.pass(9 * HOUR + 30 * 60_000).await;
    assert_eq!(
        w.subjects("ada@shop.example").len(),
        1,
        "{dialect}: sent at 08:00"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    night_sends_wait_for_the_window_and_say_why
);

async fn welcome_nurture_branches_on_engagement_and_ends_on_a_goal(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("welcome-nurture").await;
    let mut ids = Vec::new();
    for email in ["ada@b2b.example", "bob@b2b.example", "cem@b2b.example"] {
        ids.push(w.contact(email).await);
        w.ingest(email, "signup", &[]).await;
    }
    let bob = ids[1].clone();
    for email in ["ada@b2b.example", "bob@b2b.example", "cem@b2b.example"] {
        assert_eq!(
            w.subjects(email).len(),
            1,
            "{dialect}: welcome at once to {email}"
        );
    }
    w.ingest("cem@b2b.example", "demo.booked", &[]).await;
    w.pass(2 * DAY).await;
    w.ingest("ada@b2b.example", "email.clicked", &[]).await;
    // Three days later is Saturday: the branch's send waits for Monday.
    w.pass(3 * DAY).await;
    assert_eq!(
        w.subjects("ada@b2b.example").len(),
        2,
        "{dialect}: nothing on the weekend"
    );
    w.pass(2 * DAY).await;
    assert_eq!(
        w.subjects("ada@b2b.example")[2],
        "Wie andere Teams es machen",
        "{dialect}: the clicker gets the case study"
    );
    assert_eq!(
        w.subjects("bob@b2b.example")[2],
        "Ihr Einstieg in fünf Minuten",
        "{dialect}"
    );
    assert_eq!(
        w.subjects("cem@b2b.example").len(),
        1,
        "{dialect}: demo booked ends it"
    );
    let deferred = w.reasons(&bob, "message.deferred").await;
    assert_eq!(
        deferred,
        ["deferred: outside send window until Mon 08:00 Europe/Berlin"],
        "{dialect}"
    );
    assert_eq!(
        w.run_status(&bob, "welcome-nurture").await,
        ["exited"],
        "{dialect}: exit step"
    );
    // `re_entry: never`: a second signup does not start it again.
    w.ingest("bob@b2b.example", "signup", &[]).await;
    assert_eq!(
        w.run_status(&bob, "welcome-nurture").await.len(),
        1,
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    welcome_nurture_branches_on_engagement_and_ends_on_a_goal
);

async fn content_and_webinar_follow_ups_personalize_and_wait_for_events(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("content-follow-up").await;
    w.install("webinar-follow-up").await;
    w.contact("ada@b2b.example").await;
    w.contact("bob@b2b.example").await;
    w.ingest(
        "ada@b2b.example",
        "download",
        &[("title", "Whitepaper KI im Vertrieb")],
    )
    .await;
    assert_eq!(
        w.subjects("ada@b2b.example"),
        ["Ihr Download: Whitepaper KI im Vertrieb"],
        "{dialect}"
    );
    let body: serde_json::Value = serde_json::from_slice(&w.sink.received()[0].body).unwrap();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Sie haben sich für Whitepaper KI im Vertrieb angemeldet"),
        "{dialect}: {body}"
    );
    // A second download within 7 days does not re-enter.
    w.ingest("ada@b2b.example", "download", &[("title", "Checkliste")])
        .await;
    w.pass(2 * DAY).await;
    assert_eq!(
        w.subjects("ada@b2b.example").len(),
        2,
        "{dialect}: thanks and offer only"
    );

    for email in ["ada@b2b.example", "bob@b2b.example"] {
        w.ingest(
            email,
            "webinar.attended",
            &[("title", "Follow-up mit System")],
        )
        .await;
    }
    w.pass(HOUR).await;
    w.ingest("ada@b2b.example", "page.visited", &[("page", "recording")])
        .await;
    // The timeout falls on Saturday: the summary goes out on Monday.
    w.pass(5 * DAY).await;
    let ada = w.subjects("ada@b2b.example");
    let bob = w.subjects("bob@b2b.example");
    assert_eq!(
        ada.last().unwrap(),
        "Die Aufzeichnung: Follow-up mit System",
        "{dialect}: {ada:?}"
    );
    assert_eq!(
        bob,
        [
            "Die Aufzeichnung: Follow-up mit System",
            "Das Wichtigste in fünf Punkten"
        ],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    content_and_webinar_follow_ups_personalize_and_wait_for_events
);

async fn transactional_journeys_need_no_consent_and_ignore_the_night(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("post-purchase-thank-you").await;
    w.install("support-follow-up").await;
    w.install("review-request").await;
    // Sunday 03:00, and no consent recorded at all.
    w.clock.set(MONDAY_10 + 6 * DAY - 7 * HOUR);
    let order = w
        .ingest("eva@shop.example", "purchase", &[("order_id", "A-1001")])
        .await;
    assert_eq!(
        w.subjects("eva@shop.example"),
        ["Danke für Ihre Bestellung A-1001"],
        "{dialect}"
    );
    // Review requests are marketing: without consent they are skipped.
    w.ingest("eva@shop.example", "order.delivered", &[]).await;
    w.pass(14 * DAY).await;
    assert_eq!(w.subjects("eva@shop.example").len(), 1, "{dialect}");
    let skipped = w.reasons(&order.contact_id, "message.skipped").await;
    assert_eq!(
        skipped,
        ["skipped: no marketing consent for webhook (none recorded)"],
        "{dialect}"
    );

    w.ingest("eva@shop.example", "ticket.closed", &[("ticket", "T-7")])
        .await;
    w.pass(DAY).await;
    assert_eq!(
        w.subjects("eva@shop.example")[1],
        "Ist Ihr Anliegen gelöst? (Ticket T-7)",
        "{dialect}"
    );
    // A ticket reopened before the day is over ends the follow-up.
    w.ingest("eva@shop.example", "ticket.closed", &[("ticket", "T-8")])
        .await;
    w.ingest("eva@shop.example", "ticket.reopened", &[]).await;
    w.pass(DAY).await;
    assert_eq!(w.subjects("eva@shop.example").len(), 2, "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    transactional_journeys_need_no_consent_and_ignore_the_night
);

async fn review_requests_wait_two_weeks_unless_a_review_came(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("review-request").await;
    w.contact("ada@shop.example").await;
    w.contact("bob@shop.example").await;
    w.ingest("ada@shop.example", "order.delivered", &[]).await;
    w.ingest("bob@shop.example", "order.delivered", &[]).await;
    w.pass(13 * DAY).await;
    w.ingest("bob@shop.example", "review.submitted", &[]).await;
    assert!(w.sink.received().is_empty(), "{dialect}");
    w.pass(DAY).await;
    assert_eq!(
        w.subjects("ada@shop.example"),
        ["Wie zufrieden sind Sie?"],
        "{dialect}"
    );
    assert!(w.subjects("bob@shop.example").is_empty(), "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    review_requests_wait_two_weeks_unless_a_review_came
);

async fn scheduled_sweeps_wake_up_inactive_contacts_and_win_back_customers(dialect: &'static str) {
    let w = world(dialect, 200).await;
    // Contacts seen long ago: Ada 70 days (lead), Bob 70 days (customer
    // for 200 days), Cem yesterday.
    w.clock.set(MONDAY_10 - 200 * DAY);
    w.contact("bob@shop.example").await;
    w.ingest("bob@shop.example", "purchase", &[]).await;
    w.clock.set(MONDAY_10 - 70 * DAY);
    w.contact("ada@shop.example").await;
    w.clock.set(MONDAY_10 - DAY);
    w.contact("cem@shop.example").await;
    w.clock.set(MONDAY_10 - 2 * HOUR);
    w.install("wake-up-nurture").await;
    w.install("reactivation").await;
    w.pass(2 * HOUR).await;
    // 09:00 sweep: Ada only (Bob is a customer, Cem is active).
    assert_eq!(
        w.subjects("ada@shop.example"),
        ["Was es Neues gibt"],
        "{dialect}"
    );
    assert!(w.subjects("cem@shop.example").is_empty(), "{dialect}");
    // 10:00 Monday sweep: Bob, a customer without activity for 200 days.
    let bob = w.subjects("bob@shop.example");
    assert_eq!(bob.len(), 1, "{dialect}: {bob:?}");
    assert!(
        bob[0].starts_with("Wir vermissen Sie"),
        "{dialect}: {bob:?}"
    );
    // Next morning's sweep does not enrol Ada twice.
    w.pass(DAY).await;
    assert_eq!(w.subjects("ada@shop.example").len(), 1, "{dialect}");
    w.pass(7 * DAY).await;
    assert_eq!(
        w.subjects("ada@shop.example")[1],
        "Sollen wir Ihnen weiter schreiben?",
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    scheduled_sweeps_wake_up_inactive_contacts_and_win_back_customers
);

async fn the_frequency_cap_spans_journeys(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("content-follow-up").await;
    w.install("webinar-follow-up").await;
    w.install("welcome-nurture").await;
    w.install("cart-abandonment").await;
    let ada = w.contact("ada@b2b.example").await;
    w.ingest("ada@b2b.example", "signup", &[]).await;
    w.ingest("ada@b2b.example", "download", &[]).await;
    w.ingest("ada@b2b.example", "webinar.attended", &[]).await;
    w.ingest("ada@b2b.example", "cart.abandoned", &[]).await;
    w.pass(2 * HOUR).await;
    assert_eq!(
        w.subjects("ada@b2b.example").len(),
        3,
        "{dialect}: at most 3 in 7 days"
    );
    let deferred = w.reasons(&ada, "message.deferred").await;
    assert!(
        deferred
            .iter()
            .any(|r| r.starts_with("deferred: frequency cap 3 per 1w reached until Mon")),
        "{dialect}: {deferred:?}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    the_frequency_cap_spans_journeys
);

async fn failing_receivers_are_retried_with_backoff_then_given_up(dialect: &'static str) {
    let w = world(dialect, 503).await;
    w.install("post-purchase-thank-you").await;
    let event = w.ingest("eva@shop.example", "purchase", &[]).await;
    assert_eq!(w.sink.received().len(), 1, "{dialect}");
    let messages = w.store.contact_outbox(&event.contact_id).await.unwrap();
    assert_eq!(messages[0].status, "pending", "{dialect}");
    w.pass(10 * HOUR).await;
    let attempts = w.sink.received();
    assert_eq!(attempts.len(), 8, "{dialect}: eight attempts");
    let keys: std::collections::BTreeSet<_> = attempts
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 1, "{dialect}: the same key on every retry");
    let messages = w.store.contact_outbox(&event.contact_id).await.unwrap();
    assert_eq!(messages[0].status, "failed", "{dialect}");
    let failed = w.reasons(&event.contact_id, "message.failed").await;
    assert!(
        failed[0].contains("gave up after 8 attempts: transient: receiver answered 503"),
        "{dialect}: {failed:?}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    failing_receivers_are_retried_with_backoff_then_given_up
);

async fn a_permanent_refusal_fails_the_message_at_once(dialect: &'static str) {
    let w = world(dialect, 400).await;
    w.install("post-purchase-thank-you").await;
    let event = w.ingest("eva@shop.example", "purchase", &[]).await;
    w.pass(2 * HOUR).await;
    assert_eq!(w.sink.received().len(), 1, "{dialect}");
    let failed = w.reasons(&event.contact_id, "message.failed").await;
    assert_eq!(failed, ["permanent: receiver answered 400"], "{dialect}");
    assert_eq!(
        w.run_status(&event.contact_id, "post-purchase-thank-you")
            .await,
        ["completed"],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_permanent_refusal_fails_the_message_at_once
);

async fn a_running_contact_stays_on_its_version(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("review-request").await;
    w.contact("ada@shop.example").await;
    w.ingest("ada@shop.example", "order.delivered", &[]).await;
    let mut changed = ready_made::adapt("review-request", "mail-hook", None).unwrap();
    if let nachfass::journeys::definition::Step::Send { template, .. } = &mut changed.steps[1] {
        template.as_mut().unwrap().subject = Some("Version 2".into());
    }
    let saved = w.journeys.save_def(&changed).await.unwrap();
    assert_eq!((saved.version, saved.created), (2, true), "{dialect}");
    let again = w.journeys.save_def(&changed).await.unwrap();
    assert!(
        !again.created,
        "{dialect}: the same definition is no new version"
    );
    w.contact("bob@shop.example").await;
    w.ingest("bob@shop.example", "order.delivered", &[]).await;
    w.pass(14 * DAY).await;
    assert_eq!(
        w.subjects("ada@shop.example"),
        ["Wie zufrieden sind Sie?"],
        "{dialect}"
    );
    assert_eq!(w.subjects("bob@shop.example"), ["Version 2"], "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_running_contact_stays_on_its_version
);

/// The API in-process, for the public tracking endpoints.
struct Web(axum::Router);

impl Web {
    fn new(w: &World) -> Web {
        Web(nachfass::api::app(nachfass::api::AppState::with_journeys(
            w.journeys.clone(),
            None,
        )))
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let response = self
            .0
            .clone()
            .oneshot(request.body(axum::body::Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, bytes)
    }

    async fn get(&self, uri: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.send("GET", uri, Vec::new(), &[]).await
    }
}

fn path_of(url: &str) -> String {
    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn offer_journey(w: &World) {
    let def = serde_json::json!({ "name": "offer", "trigger": { "event": { "kind": "signup" } },
        "steps": [
            { "id": "offer", "type": "send", "binding": "mail-hook", "template": {
                "subject": "Ihr Angebot", "text": "Hier entlang: https://shop.example/angebot",
                "html": "<html><body><a href=\"https://shop.example/angebot\">Angebot</a></body></html>" } },
            { "id": "pause", "type": "wait", "duration": "2d" },
            { "id": "again", "type": "send", "binding": "mail-hook", "template": { "subject": "Noch einmal", "text": "…" } } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
}

async fn opens_clicks_and_one_click_unsubscribe_come_back_as_events(dialect: &'static str) {
    let w = world(dialect, 200).await;
    offer_journey(&w).await;
    let web = Web::new(&w);
    let ada = w.contact("ada@b2b.example").await;
    w.ingest("ada@b2b.example", "signup", &[]).await;
    let body: serde_json::Value = serde_json::from_slice(&w.sink.received()[0].body).unwrap();
    let html = body["html"].as_str().unwrap();
    assert!(
        !html.contains("https://shop.example"),
        "{dialect}: the link is tracked: {html}"
    );
    let pixel = html
        .split("<img src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let click = html
        .split("<a href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let unsubscribe = body["headers"]["List-Unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>']);
    assert_eq!(
        body["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click",
        "{dialect}"
    );

    for _ in 0..2 {
        let (status, headers, _) = web.get(&path_of(pixel)).await;
        assert_eq!(
            (status, header(&headers, "content-type")),
            (200, Some("image/gif")),
            "{dialect}"
        );
    }
    // The redirect goes where the message pointed, whatever the request adds.
    let (status, headers, _) = web
        .get(&format!("{}?url=https://evil.example", path_of(click)))
        .await;
    assert_eq!(
        (status, header(&headers, "location")),
        (302, Some("https://shop.example/angebot")),
        "{dialect}"
    );
    let events = w.store.timeline(&ada, 100, None).await.unwrap();
    let opens: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "webhook.opened")
        .collect();
    assert_eq!(opens.len(), 2, "{dialect}: total opens");
    assert_eq!(
        opens
            .iter()
            .filter(|e| e.properties["unique"] == Value::Boolean(true))
            .count(),
        1,
        "{dialect}: unique opens"
    );
    let clicks: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "webhook.clicked")
        .collect();
    assert_eq!(
        clicks[0].properties["url"],
        Value::Text("https://shop.example/angebot".into()),
        "{dialect}"
    );

    // Forged and altered tokens are refused.
    let click_path = path_of(click);
    let forged = format!("{}0", &click_path[..click_path.len() - 1]);
    let forged = if forged == click_path {
        format!("{}1", &click_path[..click_path.len() - 1])
    } else {
        forged
    };
    assert_eq!(web.get(&forged).await.0, 404, "{dialect}");
    assert_eq!(
        web.get(&click_path.replacen(".0.", ".1.", 1)).await.0,
        404,
        "{dialect}"
    );
    assert_eq!(
        web.get(&path_of(pixel).replace("/t/o/o.", "/t/o/u."))
            .await
            .0,
        404,
        "{dialect}"
    );

    // The unsubscribe page asks; the one-click POST unsubscribes and
    // ends the running journey before its second message.
    let (status, _, page) = web.get(&path_of(unsubscribe)).await;
    assert!(
        status == 200 && String::from_utf8_lossy(&page).contains("<form method=\"post\""),
        "{dialect}"
    );
    let headers = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let (status, _, _) = web
        .send(
            "POST",
            &path_of(unsubscribe),
            b"List-Unsubscribe=One-Click".to_vec(),
            &headers,
        )
        .await;
    assert_eq!(status, 200, "{dialect}");
    w.run().await;
    assert_eq!(w.run_status(&ada, "offer").await, ["exited"], "{dialect}");
    w.pass(3 * DAY).await;
    assert_eq!(w.subjects("ada@b2b.example"), ["Ihr Angebot"], "{dialect}");
    let audit = w.store.audit_entries(&ada).await.unwrap();
    assert_eq!(audit[0].action, "unsubscribed", "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    opens_clicks_and_one_click_unsubscribe_come_back_as_events
);

async fn a_signed_hard_bounce_callback_suppresses_the_address(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.install("post-purchase-thank-you").await;
    let web = Web::new(&w);
    let first = w.ingest("eva@shop.example", "purchase", &[]).await;
    let key = w.sink.received()[0]
        .header("Idempotency-Key")
        .unwrap()
        .to_owned();
    let body = serde_json::json!({ "events": [ { "message_ref": key, "status": "hard_bounce", "detail": "550 no such user" } ] }).to_string();
    let timestamp = "1700000000".to_owned();
    let signature = webhook::sign("s3cret", &timestamp, body.as_bytes());
    let forged = [
        ("X-Nachfass-Timestamp", timestamp.clone()),
        ("X-Nachfass-Signature", "sha256=00".to_owned()),
    ];
    let (status, _, _) = web
        .send(
            "POST",
            "/v1/callbacks/mail-hook",
            body.clone().into_bytes(),
            &forged,
        )
        .await;
    assert_eq!(status, 422, "{dialect}: a forged callback is refused");
    let signed = [
        ("X-Nachfass-Timestamp", timestamp),
        ("X-Nachfass-Signature", signature),
    ];
    let (status, _, answer) = web
        .send(
            "POST",
            "/v1/callbacks/mail-hook",
            body.into_bytes(),
            &signed,
        )
        .await;
    assert_eq!(
        status,
        200,
        "{dialect}: {}",
        String::from_utf8_lossy(&answer)
    );
    w.run().await;
    let suppressions = w.store.suppressions(&first.contact_id).await.unwrap();
    assert_eq!(
        (
            suppressions[0].reason.as_str(),
            suppressions[0].scope.as_str()
        ),
        ("hard_bounced", "all"),
        "{dialect}"
    );
    // Even a transactional message is not sent to a dead address.
    w.ingest("eva@shop.example", "purchase", &[]).await;
    assert_eq!(w.sink.received().len(), 1, "{dialect}");
    let skipped = w.reasons(&first.contact_id, "message.skipped").await;
    assert_eq!(
        skipped,
        ["skipped: contact is suppressed (hard_bounced)"],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_signed_hard_bounce_callback_suppresses_the_address
);

async fn erasure_forgets_the_contact_and_a_reimport_needs_new_consent(dialect: &'static str) {
    let w = world(dialect, 200).await;
    offer_journey(&w).await;
    w.install("post-purchase-thank-you").await;
    let ada = w.contact("ada@b2b.example").await;
    w.ingest("ada@b2b.example", "signup", &[]).await;
    let export = nachfass::privacy::export(&w.journeys.pipeline, &ada, "k_admin")
        .await
        .unwrap();
    assert_eq!(export["contact"]["email"], "ada@b2b.example", "{dialect}");
    assert!(
        export["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "signup"),
        "{dialect}"
    );
    assert_eq!(export["consents"][0]["status"], "granted", "{dialect}");
    assert_eq!(export["messages"].as_array().unwrap().len(), 1, "{dialect}");

    let erased = nachfass::privacy::erase(&w.journeys.pipeline, &ada, "k_admin")
        .await
        .unwrap();
    assert_eq!(erased.addresses_remembered, 1, "{dialect}");
    assert!(w.store.contact(&ada).await.is_err(), "{dialect}: gone");
    let audit = w.store.audit_entries(&ada).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["exported", "erased"], "{dialect}");
    assert!(
        !audit[1].detail.to_string().contains("ada@"),
        "{dialect}: no personal data in the log"
    );
    w.run().await;

    // Re-imported without consent: nothing, not even a transactional mail.
    let again = w.ingest("ada@b2b.example", "signup", &[]).await;
    w.ingest("ada@b2b.example", "purchase", &[]).await;
    w.pass(3 * DAY).await;
    assert_eq!(w.subjects("ada@b2b.example").len(), 1, "{dialect}");
    let skipped = w.reasons(&again.contact_id, "message.skipped").await;
    assert!(
        skipped.iter().all(|r| r.contains("erased")) && skipped.len() == 3,
        "{dialect}: {skipped:?}"
    );
    // New consent lifts it.
    let consent = Consent {
        channel: "webhook".into(),
        purpose: Purpose::Marketing,
        status: ConsentStatus::Granted,
        source: Some("new signup form".into()),
        text_version: Some("v2".into()),
        ip: None,
        user_agent: None,
        updated_at: 0,
    };
    w.clock.advance(1000);
    w.store
        .set_consent(&again.contact_id, &consent, w.clock.now())
        .await
        .unwrap();
    w.ingest("ada@b2b.example", "purchase", &[]).await;
    assert_eq!(w.subjects("ada@b2b.example").len(), 2, "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    erasure_forgets_the_contact_and_a_reimport_needs_new_consent
);

async fn an_objection_stops_marketing_but_not_transactional_mail(dialect: &'static str) {
    let w = world(dialect, 200).await;
    offer_journey(&w).await;
    w.install("post-purchase-thank-you").await;
    let ada = w.contact("ada@b2b.example").await;
    w.ingest("ada@b2b.example", "signup", &[]).await;
    nachfass::privacy::object(&w.journeys.pipeline, &ada, "k_admin")
        .await
        .unwrap();
    w.run().await;
    assert_eq!(w.run_status(&ada, "offer").await, ["exited"], "{dialect}");
    w.ingest("ada@b2b.example", "signup", &[]).await;
    w.ingest("ada@b2b.example", "purchase", &[]).await;
    let subjects = w.subjects("ada@b2b.example");
    assert_eq!(
        subjects,
        ["Ihr Angebot", "Danke für Ihre Bestellung"],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    an_objection_stops_marketing_but_not_transactional_mail
);

impl World {
    /// Another channel binding of `plugin`, sending to the receiver.
    async fn bind(&self, name: &str, plugin: &str, config: &[(&str, &str)]) {
        let def = BindingDef {
            name: name.into(),
            kind: BindingKind::Channel,
            plugin: plugin.into(),
            config: config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            allow_http: vec![self.sink.addr.to_string()],
            limits: Default::default(),
            paused: None,
            version: None,
        };
        self.store.create_binding(&def, 0).await.unwrap();
    }

    async fn grant(&self, contact: &str, channel: &str) {
        let consent = Consent {
            channel: channel.into(),
            purpose: Purpose::Marketing,
            status: ConsentStatus::Granted,
            source: Some("test".into()),
            text_version: None,
            ip: None,
            user_agent: None,
            updated_at: 0,
        };
        self.store
            .set_consent(contact, &consent, self.clock.now())
            .await
            .unwrap();
    }
}

async fn sms_go_out_as_a_gateway_form_post(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let url = format!("http://{}/Messages.json", w.sink.addr);
    w.bind(
        "sms",
        "sms-http",
        &[
            ("url", &url),
            ("from", "Shop"),
            ("account", "AC1"),
            ("token", "t"),
        ],
    )
    .await;
    let def = serde_json::json!({ "name": "pickup", "purpose": "transactional",
        "trigger": { "event": { "kind": "order.ready" } },
        "steps": [ { "id": "sms", "type": "send", "binding": "sms",
                     "template": { "text": "Ihre Bestellung {{ event.properties.order }} liegt bereit." } } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    let input = nachfass::store::ContactInput {
        email: Some("eva@shop.example".into()),
        phone: Some("+49 151 2345678".into()),
        ..Default::default()
    };
    w.journeys.pipeline.upsert_contact(&input).await.unwrap();
    w.ingest("eva@shop.example", "order.ready", &[("order", "A-9")])
        .await;
    let sent = &w.sink.received()[0];
    assert_eq!(sent.path, "/Messages.json", "{dialect}");
    let body = String::from_utf8(sent.body.clone()).unwrap();
    assert_eq!(
        body, "To=%2B49+151+2345678&From=Shop&Body=Ihre+Bestellung+A-9+liegt+bereit.",
        "{dialect}"
    );
    assert!(
        sent.header("Authorization").unwrap().starts_with("Basic "),
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    sms_go_out_as_a_gateway_form_post
);

async fn a_retargeting_audience_follows_its_segment(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let url = format!("http://{}/v1/audiences/7/members", w.sink.addr);
    w.bind("ads", "audience-sync", &[("url", &url), ("token", "tok")])
        .await;
    let segment = BindingDef {
        name: "pro-plan".into(),
        kind: BindingKind::Segment,
        plugin: "attribute-match".into(),
        config: [("attribute", "plan"), ("op", "eq"), ("value", "pro")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        version: None,
    };
    w.store.create_binding(&segment, 0).await.unwrap();
    for (name, trigger, op) in [
        ("audience-add", "segment_entered", "add"),
        ("audience-remove", "segment_left", "remove"),
    ] {
        let def = serde_json::json!({ "name": name, "trigger": { trigger: "pro-plan" }, "send_window": { "days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "24:00" },
            "steps": [ { "id": "sync", "type": "send", "binding": "ads", "template": { "text": op } } ] });
        w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    }
    let ada = w.contact("ada@b2b.example").await;
    w.grant(&ada, "audience").await;
    let mut patch = nachfass::store::ContactInput::default();
    patch
        .attributes
        .insert("plan".into(), Value::Text("pro".into()));
    w.journeys
        .pipeline
        .update_contact(&ada, &patch)
        .await
        .unwrap();
    w.run().await;
    patch
        .attributes
        .insert("plan".into(), Value::Text("free".into()));
    w.journeys
        .pipeline
        .update_contact(&ada, &patch)
        .await
        .unwrap();
    w.run().await;
    let paths: Vec<String> = w.sink.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/audiences/7/members:add",
            "/v1/audiences/7/members:remove"
        ],
        "{dialect}"
    );
    let body = String::from_utf8(w.sink.received()[0].body.clone()).unwrap();
    assert!(
        body.contains(&sha256_hex("ada@b2b.example")) && !body.contains("ada@"),
        "{dialect}: {body}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_retargeting_audience_follows_its_segment
);

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sink's message body for one recipient.
fn body_for(w: &World, email: &str) -> serde_json::Value {
    w.sink
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .find(|b| b["to"] == email)
        .unwrap()
}

async fn callback(w: &World, web: &Web, key: &str, status: &str) {
    let body =
        serde_json::json!({ "events": [ { "message_ref": key, "status": status } ] }).to_string();
    let timestamp = "1".to_owned();
    let signature = webhook::sign("s3cret", &timestamp, body.as_bytes());
    let headers = [
        ("X-Nachfass-Timestamp", timestamp),
        ("X-Nachfass-Signature", signature),
    ];
    let (status, _, _) = web
        .send(
            "POST",
            "/v1/callbacks/mail-hook",
            body.into_bytes(),
            &headers,
        )
        .await;
    assert_eq!(status, 200);
    w.run().await;
}

async fn kpis_count_unique_and_total_and_respect_the_attribution_window(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let def = serde_json::json!({ "name": "offer", "trigger": { "event": { "kind": "signup" } },
        "goals": [ { "event": "purchase" } ],
        "kpi": { "response_events": ["reply"], "attribution_window": "2d", "cost": 100.0, "cost_per_message": 0.5 },
        "steps": [
            { "id": "offer", "type": "send", "binding": "mail-hook", "template": {
                "subject": "Angebot", "text": "https://shop.example/a",
                "html": "<a href=\"https://shop.example/a\">Angebot</a>" } },
            { "id": "pause", "type": "wait", "duration": "5d" } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    let web = Web::new(&w);
    let t0 = w.clock.now();
    let emails: Vec<String> = (0..10).map(|i| format!("c{i}@kpi.example")).collect();
    for email in &emails {
        w.contact(email).await;
        w.ingest(email, "signup", &[]).await;
    }
    let html = |i: usize| {
        body_for(&w, &emails[i])["html"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let pixel = |i: usize| {
        path_of(
            html(i)
                .split("<img src=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap(),
        )
    };
    let click = |i: usize| {
        path_of(
            html(i)
                .split("<a href=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap(),
        )
    };
    let key = |i: usize| {
        body_for(&w, &emails[i])["idempotency_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for i in [0, 0, 1, 2] {
        assert_eq!(web.get(&pixel(i)).await.0, 200);
    }
    for i in [0, 0, 1] {
        assert_eq!(web.get(&click(i)).await.0, 302);
    }
    callback(&w, &web, &key(9), "hard_bounce").await;
    callback(&w, &web, &key(8), "soft_bounce").await;
    callback(&w, &web, &key(6), "complaint").await;
    let unsubscribe = body_for(&w, &emails[7])["headers"]["List-Unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    assert_eq!(
        web.send("POST", &path_of(&unsubscribe), Vec::new(), &[])
            .await
            .0,
        200
    );
    w.run().await;

    // Replies and purchases around the 2-day window.
    w.clock.set(t0 + DAY);
    w.ingest(&emails[0], "reply", &[]).await;
    w.ingest(&emails[0], "purchase", &[("value", "120")]).await;
    w.clock.set(t0 + 2 * DAY);
    w.ingest(&emails[1], "purchase", &[("value", "80")]).await;
    w.clock.set(t0 + 2 * DAY + 1);
    w.ingest(&emails[2], "purchase", &[("value", "999")]).await;
    w.clock.set(t0 + 3 * DAY);
    w.ingest(&emails[1], "reply", &[]).await;

    let def = w.journeys.definition("offer", 1).await.unwrap();
    let k = nachfass::kpis::journey_kpis(&w.store, &def, 0, w.clock.now() + 1)
        .await
        .unwrap();
    let m = &k.messages;
    assert_eq!((m.queued, m.sent, m.failed), (10, 10, 0), "{dialect}");
    assert_eq!(
        (m.bounced_hard, m.bounced_soft, m.delivered),
        (1, 1, 8),
        "{dialect}"
    );
    assert_eq!((m.opened_unique, m.opened_total), (3, 4), "{dialect}");
    assert_eq!((m.clicked_unique, m.clicked_total), (2, 3), "{dialect}");
    assert_eq!((m.unsubscribed, m.complained), (1, 1), "{dialect}");
    assert_eq!(
        (m.responded, m.converted),
        (1, 2),
        "{dialect}: c1's reply came after the window; c2 bought 1 ms too late"
    );
    let r = &m.rates;
    assert_eq!(r.bounce, Some(0.2), "{dialect}");
    assert_eq!(
        (r.open, r.click),
        (Some(3.0 / 8.0), Some(2.0 / 8.0)),
        "{dialect}"
    );
    assert_eq!(
        (r.click_to_open, r.open_factor, r.click_factor),
        (Some(2.0 / 3.0), Some(4.0 / 3.0), Some(1.5)),
        "{dialect}"
    );
    assert_eq!(
        (r.unsubscribe, r.complaint, r.response, r.conversion),
        (Some(0.125), Some(0.125), Some(0.125), Some(0.25)),
        "{dialect}"
    );
    assert_eq!(
        (k.entered, k.converted, k.conversion_rate),
        (10, 2, Some(0.2)),
        "{dialect}"
    );
    assert_eq!(
        (k.time_to_goal_median_ms, k.time_to_goal_p90_ms),
        (Some(DAY), Some(2 * DAY)),
        "{dialect}"
    );
    assert_eq!((k.revenue, k.cost), (200.0, 105.0), "{dialect}");
    assert_eq!(k.roi, Some(95.0 / 105.0), "{dialect}");
    // A range that starts after the sends has no messages.
    let later = nachfass::kpis::journey_kpis(&w.store, &def, t0 + 1, w.clock.now() + 1)
        .await
        .unwrap();
    assert_eq!((later.messages.sent, later.entered), (0, 0), "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    kpis_count_unique_and_total_and_respect_the_attribution_window
);

async fn a_significant_ab_winner_is_promoted_with_its_figures(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let def = serde_json::json!({ "name": "subject-test", "trigger": { "event": { "kind": "signup" } },
        "steps": [ { "id": "hello", "type": "send", "binding": "mail-hook",
            "ab_test": { "metric": "clicked", "min_sample": 8, "auto_promote": true },
            "variants": [
                { "name": "plain", "template": { "subject": "Hallo", "html": "<a href=\"https://x.example\">x</a>", "text": "x" } },
                { "name": "emoji", "template": { "subject": "Hallo!", "html": "<a href=\"https://x.example\">x</a>", "text": "x" } } ] } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    let web = Web::new(&w);
    let emails: Vec<String> = (0..40).map(|i| format!("ab{i}@kpi.example")).collect();
    for email in &emails {
        w.contact(email).await;
        w.ingest(email, "signup", &[]).await;
    }
    // Everyone who got "plain" clicks, nobody who got "emoji" does.
    let mut plain = 0;
    for email in &emails {
        let body = body_for(&w, email);
        if body["subject"] == "Hallo" {
            plain += 1;
            let html = body["html"].as_str().unwrap();
            let link = path_of(
                html.split("<a href=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap(),
            );
            assert_eq!(web.get(&link).await.0, 302);
        }
    }
    assert!(
        (8..=32).contains(&plain),
        "{dialect}: both variants got enough sends ({plain} plain)"
    );
    let def_v1 = w.journeys.definition("subject-test", 1).await.unwrap();
    let kpis = nachfass::kpis::journey_kpis(&w.store, &def_v1, 0, w.clock.now() + 1)
        .await
        .unwrap();
    let results = nachfass::ab::results(&def_v1, &kpis.by_step);
    let (result, may_promote) = &results[0];
    assert!(*may_promote && result.significant, "{dialect}: {result:?}");
    assert_eq!(result.leader.as_deref(), Some("plain"), "{dialect}");
    let promoted = nachfass::ab::promote_winners(&w.journeys, "subject-test", "k_admin")
        .await
        .unwrap();
    assert_eq!(
        promoted,
        [("hello".to_owned(), "plain".to_owned())],
        "{dialect}"
    );
    let entries = w.store.audit_by_action("ab.promoted", 5).await.unwrap();
    assert_eq!(entries[0].detail["result"]["leader"], "plain", "{dialect}");
    assert!(
        entries[0].detail["result"]["p_value"].as_f64().unwrap() < 0.05,
        "{dialect}"
    );
    // From now on, everyone gets the winner.
    for i in 0..6 {
        let email = format!("late{i}@kpi.example");
        w.contact(&email).await;
        w.ingest(&email, "signup", &[]).await;
        assert_eq!(body_for(&w, &email)["subject"], "Hallo", "{dialect}");
    }
    // A second promotion finds nothing left to promote.
    assert!(
        nachfass::ab::promote_winners(&w.journeys, "subject-test", "k_admin")
            .await
            .unwrap()
            .is_empty(),
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_significant_ab_winner_is_promoted_with_its_figures
);
