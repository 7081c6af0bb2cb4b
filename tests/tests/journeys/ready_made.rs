//! The ready-made journeys walked through their branches, goals, send
//! windows, waits for events and scheduled sweeps.

use nachfass_tests::DAY;

use super::world::*;

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

/// A scheduled journey stopped over one of its sweeps sweeps again once
/// resumed: the sweep that fell due while it was stopped enrolled nobody
/// and ended its chain of sweeps, and resuming queues the next one.
async fn a_resumed_scheduled_journey_sweeps_again(dialect: &'static str) {
    let w = world(dialect, 200).await;
    w.contact("ada@sweep.example").await;
    let def = serde_json::json!({ "name": "daily",
        "trigger": { "schedule": { "cron": "0 0 11 * * *", "timezone": "Europe/Berlin" } },
        "steps": [ { "id": "hello", "type": "send", "binding": "mail-hook",
                     "template": { "subject": "Guten Morgen", "text": "…" } } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
    assert!(
        w.journeys.set_active("daily", false).await.unwrap(),
        "{dialect}"
    );
    // Monday 11:00 falls due while it is stopped.
    w.pass(2 * HOUR).await;
    assert!(w.subjects("ada@sweep.example").is_empty(), "{dialect}");
    assert!(
        w.journeys.set_active("daily", true).await.unwrap(),
        "{dialect}"
    );
    // Tuesday 11:00.
    w.pass(DAY).await;
    assert_eq!(
        w.subjects("ada@sweep.example"),
        ["Guten Morgen"],
        "{dialect}"
    );
    // Stopped and resumed before the next sweep: still one sweep a day.
    assert!(
        w.journeys.set_active("daily", false).await.unwrap(),
        "{dialect}"
    );
    assert!(
        w.journeys.set_active("daily", true).await.unwrap(),
        "{dialect}"
    );
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'sweep'")
        .fetch_one(w.store.pool())
        .await
        .unwrap();
    assert_eq!(queued, 1, "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_resumed_scheduled_journey_sweeps_again
);
