//! Journey KPIs and A/B tests: unique and total counts, the attribution
//! window, a significant winner promoted.

use nachfass::clock::Clock;
use nachfass_tests::DAY;

use super::world::*;

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
