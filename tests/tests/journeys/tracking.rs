//! Opens, clicks, unsubscribes and signed provider callbacks come back as
//! events and suppressions.

use nachfass::model::Value;
use nachfass_tests::DAY;

use super::world::*;

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
