//! Erasure and objection: what they forget, suppress and stop.

use nachfass::clock::Clock;
use nachfass::model::status::{ConsentStatus, Purpose};
use nachfass::store::Consent;
use nachfass_tests::DAY;

use super::world::*;

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
