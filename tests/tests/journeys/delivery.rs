//! Delivery: the frequency cap across journeys, retries and refusals, a
//! running contact on its version, SMS and ads audiences as channels.

use nachfass::clock::Clock;
use nachfass::journeys::ready_made;
use nachfass::model::Value;
use nachfass::store::jobs::{JobOutcome, KindFilter};
use nachfass::store::{BindingDef, BindingKind};
use nachfass_tests::DAY;

use super::world::*;

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

/// Four journeys start on the same event and each sends at once: their
/// first steps run in one batch, which must count the sends its earlier
/// steps queued (the cap is 3 per week), not only those stored before.
async fn the_frequency_cap_counts_sends_of_the_same_batch(dialect: &'static str) {
    let w = world(dialect, 200).await;
    for name in ["one", "two", "three", "four"] {
        let definition = serde_json::json!({
            "name": name, "trigger": {"event": {"kind": "trial.started"}},
            "steps": [{"id": "hello", "type": "send", "binding": "mail-hook",
                       "template": {"subject": name, "text": "Hallo"}}]
        });
        w.journeys
            .save(definition.to_string().as_bytes())
            .await
            .unwrap();
    }
    let ada = w.contact("ada@b2b.example").await;
    w.ingest("ada@b2b.example", "trial.started", &[]).await;
    let queued = w.kinds(&ada).await;
    let count = |kind: &str| queued.iter().filter(|k| *k == kind).count();
    assert_eq!(count("message.queued"), 3, "{dialect}: {queued:?}");
    assert_eq!(count("message.deferred"), 1, "{dialect}: {queued:?}");
    let deferred = w.reasons(&ada, "message.deferred").await;
    assert!(
        deferred[0].starts_with("deferred: frequency cap 3 per 1w reached"),
        "{dialect}: {deferred:?}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    the_frequency_cap_counts_sends_of_the_same_batch
);

/// Deliveries run in batches: in one batch, the messages a receiver
/// takes are recorded as sent while those whose receiver is down wait for
/// a retry, each job with its own outcome.
async fn a_delivery_batch_settles_each_message_alone(dialect: &'static str) {
    let w = world(dialect, 200).await;
    // Nothing listens on port 1: every call to it fails at once.
    let down = BindingDef {
        name: "down-hook".into(),
        kind: BindingKind::Channel,
        plugin: "webhook".into(),
        config: [
            ("url".to_owned(), "http://127.0.0.1:1/hook".to_owned()),
            ("secret".to_owned(), "s3cret".to_owned()),
        ]
        .into(),
        allow_http: vec!["127.0.0.1:1".into()],
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    w.store.create_binding(&down, 0).await.unwrap();
    let definition = serde_json::json!({
        "name": "both", "trigger": {"event": {"kind": "trial.started"}},
        "steps": [
            {"id": "up", "type": "send", "binding": "mail-hook",
             "template": {"subject": "Hallo", "text": "Hallo"}},
            {"id": "down", "type": "send", "binding": "down-hook",
             "template": {"subject": "Hallo", "text": "Hallo"}}]
    });
    w.journeys
        .save(definition.to_string().as_bytes())
        .await
        .unwrap();
    let emails = ["ada@b2b.example", "bob@b2b.example", "cem@b2b.example"];
    for email in emails {
        w.contact(email).await;
        w.ingest(email, "trial.started", &[]).await;
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT binding, status FROM outbox ORDER BY binding, status")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    let count = |binding: &str, status: &str| {
        rows.iter()
            .filter(|(b, s)| b == binding && s == status)
            .count()
    };
    assert_eq!(count("mail-hook", "delivered"), 3, "{dialect}: {rows:?}");
    assert_eq!(count("down-hook", "pending"), 3, "{dialect}: {rows:?}");
    assert_eq!(w.sink.received().len(), 3, "{dialect}");
    let jobs: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("SELECT kind, attempts, last_error FROM jobs WHERE failed_at IS NULL")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    assert_eq!(jobs.len(), 3, "{dialect}: {jobs:?}");
    for (kind, attempts, error) in &jobs {
        assert_eq!((kind.as_str(), *attempts), ("deliver", 1), "{dialect}");
        assert!(error.is_some(), "{dialect}: {jobs:?}");
    }
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_delivery_batch_settles_each_message_alone
);

/// A delivery group writes the outcome of each message whose job this
/// worker still holds. When another worker took a job over meanwhile (the
/// lease ran out), that message's outcome is left to it: nothing of it is
/// written, and its job stays the other worker's. The others stand.
async fn a_delivery_with_a_lost_lease_is_left_to_its_new_worker(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let (contacts, deliveries) = three_deliveries_claimed(&w, dialect).await;
    let registry = nachfass::scheduler::job_registry();
    // Another worker takes the second one over.
    let taken = deliveries[1].clone();
    sqlx::query("UPDATE jobs SET leased_by = 'other-worker' WHERE id = $1")
        .bind(taken.id.clone())
        .execute(w.store.pool())
        .await
        .unwrap();
    let outcomes = registry.run_batch(w.journeys.clone(), deliveries).await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Ok(JobOutcome::Done))),
        "{dialect}: {outcomes:?}"
    );
    // All three went out (the plugin call comes before the write), and
    // two are recorded as sent.
    assert_eq!(w.sink.received().len(), 3, "{dialect}");
    let mut statuses = Vec::new();
    for contact in &contacts {
        let sent = w
            .kinds(contact)
            .await
            .iter()
            .filter(|k| *k == "message.sent")
            .count();
        let outbox = w.store.contact_outbox(contact).await.unwrap();
        statuses.push((outbox[0].status.as_str().to_owned(), sent));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("delivered".to_owned(), 1),
            ("delivered".to_owned(), 1),
            ("pending".to_owned(), 0)
        ],
        "{dialect}"
    );
    let left: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id, kind, leased_by FROM jobs")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    assert_eq!(
        left,
        [(
            taken.id,
            "deliver".to_owned(),
            Some("other-worker".to_owned())
        )],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_delivery_with_a_lost_lease_is_left_to_its_new_worker
);

/// A worker that cannot confirm a delivery's lease for half of its length
/// (its extensions stall) does not hand the message to its provider: the
/// lease could run out during the call, and the worker that took the job
/// over would send it again. The job is given back unsent, and goes out
/// once, from the next claim. A job whose lease was extended meanwhile is
/// sent as usual.
async fn a_delivery_whose_lease_is_in_doubt_goes_back_unsent(dialect: &'static str) {
    nachfass::metrics::install().expect("the metrics recorder");
    let w = world(dialect, 200).await;
    let (contacts, deliveries) = three_deliveries_claimed(&w, dialect).await;
    let registry = nachfass::scheduler::job_registry();
    // 31 s of the 60 s lease pass without an extension, except for the
    // second job's.
    w.clock.set(w.clock.now() + 31_000);
    let lost = w
        .store
        .extend_leases(&deliveries[1..2], w.clock.now() + 60_000)
        .await
        .unwrap();
    assert_eq!(lost, 0, "{dialect}");
    let outcomes = registry
        .run_batch(w.journeys.clone(), deliveries.clone())
        .await;
    let now = w.clock.now();
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                Ok(JobOutcome::Defer { until: a }),
                Ok(JobOutcome::Done),
                Ok(JobOutcome::Defer { until: c })
            ] if *a == now && *c == now
        ),
        "{dialect}: {outcomes:?}"
    );
    assert_eq!(
        w.sink.received().len(),
        1,
        "{dialect}: only the confirmed one went out"
    );
    // Operators see it (both databases' cases count into this process's
    // one counter, so at least this case's two).
    let given_back = nachfass_tests::counter("nachfass_deliveries_given_back_total");
    assert!(given_back >= 2.0, "{dialect}: {given_back}");
    // The scheduler gives the two back; the next claim sends them.
    for job in [&deliveries[0], &deliveries[2]] {
        w.store.defer_job(job, now).await.unwrap();
    }
    let again = claim_all(&w, "deliver").await;
    assert_eq!(again.len(), 2, "{dialect}: {again:?}");
    registry.run_batch(w.journeys.clone(), again).await;
    let mut keys: Vec<String> = w
        .sink
        .received()
        .iter()
        .map(|request| {
            request
                .header("idempotency-key")
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    keys.sort();
    let received = keys.len();
    keys.dedup();
    assert_eq!(
        (received, keys.len()),
        (3, 3),
        "{dialect}: each message once"
    );
    for contact in &contacts {
        let outbox = w.store.contact_outbox(contact).await.unwrap();
        assert_eq!(outbox[0].status.as_str(), "delivered", "{dialect}");
    }
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_delivery_whose_lease_is_in_doubt_goes_back_unsent
);

/// A send step that runs again (a retry after a crash between the step's
/// writes and its job's end) queues nothing new: its message's
/// idempotency key is queued already, so neither a second message nor a
/// second delivery job nor a second `message.queued` event is written,
/// while the batch's other writes stand.
async fn a_send_that_runs_again_queues_nothing_twice(dialect: &'static str) {
    let w = world(dialect, 200).await;
    let contacts = send_in_an_hour(&w, &["ada@b2b.example", "bob@b2b.example"]).await;
    w.clock.set(w.clock.now() + HOUR);
    // Bob's run and step job as they are before the send.
    let run = w.store.contact_runs(&contacts[1]).await.unwrap().remove(0);
    let (kind, unique_key, payload, due_at): (String, String, String, i64) =
        sqlx::query_as("SELECT kind, unique_key, payload, due_at FROM jobs WHERE payload LIKE $1")
            .bind(format!("%{}%", run.id))
            .fetch_one(w.store.pool())
            .await
            .unwrap();
    let registry = nachfass::scheduler::job_registry();
    let steps = claim_all(&w, "advance").await;
    assert_eq!(steps.len(), 2, "{dialect}: {steps:?}");
    registry.run_batch(w.journeys.clone(), steps).await;
    // Bob's send runs again, as if its first run's job had not ended.
    sqlx::query(
        "UPDATE journey_runs SET status = $1, step = $2, seq = $3, ended_at = NULL, \
         exit_reason = NULL WHERE id = $4",
    )
    .bind(run.status)
    .bind(run.step.clone())
    .bind(run.seq)
    .bind(run.id.clone())
    .execute(w.store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, kind, unique_key, payload, due_at, created_at) \
         VALUES ('again', $1, $2, $3, $4, $4)",
    )
    .bind(kind)
    .bind(unique_key)
    .bind(payload)
    .bind(due_at)
    .execute(w.store.pool())
    .await
    .unwrap();
    let again = claim_all(&w, "advance").await;
    assert_eq!(again.len(), 1, "{dialect}: {again:?}");
    let outcomes = registry.run_batch(w.journeys.clone(), again).await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Ok(JobOutcome::Done))),
        "{dialect}: {outcomes:?}"
    );
    // The step ran again: its run completed a second time...
    let runs = w.store.contact_runs(&contacts[1]).await.unwrap();
    assert_eq!(runs[0].status, "completed", "{dialect}");
    // ...and each contact still has one message, one delivery job and one
    // `message.queued` event.
    for contact in &contacts {
        let outbox = w.store.contact_outbox(contact).await.unwrap();
        assert_eq!(outbox.len(), 1, "{dialect}: {outbox:?}");
        let queued = w
            .kinds(contact)
            .await
            .iter()
            .filter(|k| *k == "message.queued")
            .count();
        assert_eq!(queued, 1, "{dialect}");
    }
    let deliveries = claim_all(&w, "deliver").await;
    assert_eq!(deliveries.len(), 2, "{dialect}: {deliveries:?}");
    registry.run_batch(w.journeys.clone(), deliveries).await;
    assert_eq!(w.sink.received().len(), 2, "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_send_that_runs_again_queues_nothing_twice
);

/// Starts, for each of `emails`, a journey that sends an hour later;
/// answers their contact ids.
async fn send_in_an_hour(w: &World, emails: &[&str]) -> Vec<String> {
    let definition = serde_json::json!({
        "name": "later", "trigger": {"event": {"kind": "trial.started"}},
        "steps": [
            {"id": "pause", "type": "wait", "duration": "1h"},
            {"id": "hello", "type": "send", "binding": "mail-hook",
             "template": {"subject": "Hallo", "text": "Hallo"}}]
    });
    w.journeys
        .save(definition.to_string().as_bytes())
        .await
        .unwrap();
    let mut contacts = Vec::new();
    for email in emails {
        contacts.push(w.contact(email).await);
        w.ingest(email, "trial.started", &[]).await;
    }
    contacts
}

/// Three contacts whose sends came due an hour later: their steps have
/// run, their deliveries are claimed by this worker and not yet run.
/// Answers the contacts and the deliveries.
async fn three_deliveries_claimed(
    w: &World,
    dialect: &str,
) -> (Vec<String>, Vec<nachfass::store::ClaimedJob>) {
    let contacts = send_in_an_hour(
        w,
        &["ada@b2b.example", "bob@b2b.example", "cem@b2b.example"],
    )
    .await;
    w.clock.set(w.clock.now() + HOUR);
    let steps = claim_all(w, "advance").await;
    assert_eq!(steps.len(), 3, "{dialect}: {steps:?}");
    nachfass::scheduler::job_registry()
        .run_batch(w.journeys.clone(), steps)
        .await;
    let deliveries = claim_all(w, "deliver").await;
    assert_eq!(deliveries.len(), 3, "{dialect}: {deliveries:?}");
    (contacts, deliveries)
}

/// Claims this worker's due jobs of `kind`, ten at most.
async fn claim_all(w: &World, kind: &str) -> Vec<nachfass::store::ClaimedJob> {
    w.store
        .claim_jobs_of(
            KindFilter::Only(&[kind]),
            "this-worker",
            w.clock.now(),
            60_000,
            10,
        )
        .await
        .unwrap()
}

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
        rate: None,
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
