//! Email end to end: journeys send through the real `smtp-email` component
//! and the host's SMTP connection (lettre) to a real SMTP server on
//! 127.0.0.1 (aiosmtpd); opens, clicks and one-click unsubscribes come back
//! through the tracking endpoints. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use nachfass::clock::{Clock, ManualClock};
use nachfass::journeys::{Journeys, ready_made};
use nachfass::model::Value;
use nachfass::model::status::{ConsentStatus, Purpose};
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::{BindingDef, BindingKind, Consent, EventInput, Store};
use nachfass_tests::smtp::{Mail, SmtpSink};
use nachfass_tests::{DAY, TempStore, guests, runtime};

const HOUR: i64 = 60 * 60 * 1000;
/// Monday 2026-11-23, 10:00 in Berlin.
const MONDAY_10: i64 = 1_795_424_400_000;

struct World {
    store: Store,
    clock: Arc<ManualClock>,
    journeys: Arc<Journeys>,
    scheduler: Arc<Scheduler>,
    web: axum::Router,
    smtp: SmtpSink,
    temp: Option<TempStore>,
}

impl World {
    /// A world whose `mail` binding sends to `smtp` in plain text, with
    /// `config` added to (or replacing) the binding's configuration.
    async fn new(
        store: Store,
        temp: TempStore,
        registry: Arc<Registry>,
        smtp: SmtpSink,
        config: &[(&str, &str)],
    ) -> World {
        let clock = Arc::new(ManualClock::new(MONDAY_10));
        let pipeline = nachfass_tests::world::pipeline(store.clone(), registry, clock.clone());
        let mut binding_config: BTreeMap<String, String> = [
            ("from", "Beispiel Shop <news@shop.example>".to_owned()),
            ("smtp_host", "127.0.0.1".to_owned()),
            ("smtp_port", smtp.port.to_string()),
            ("smtp_tls", "none".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in config {
            binding_config.insert((*key).to_owned(), (*value).to_owned());
        }
        let binding = BindingDef {
            name: "mail".into(),
            kind: BindingKind::Channel,
            plugin: "smtp-email".into(),
            config: binding_config,
            allow_http: Vec::new(),
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        };
        store.create_binding(&binding, 0).await.unwrap();
        let journeys = Journeys::new(pipeline, Policy::default());
        journeys.set_public_url("https://t.shop.example");
        let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
        let web = nachfass::api::app(nachfass::api::AppState::with_journeys(
            journeys.clone(),
            None,
        ));
        World {
            store,
            clock,
            journeys,
            scheduler,
            web,
            smtp,
            temp: Some(temp),
        }
    }

    async fn install(&self, template: &str) {
        let def = ready_made::adapt(template, "mail", None).unwrap();
        self.journeys.save_def(&def).await.unwrap();
    }

    async fn contact(&self, email: &str, first_name: &str) -> String {
        let id = self.ingest(email, "contact.imported", &[]).await;
        let mut patch = nachfass::store::ContactInput::default();
        patch
            .attributes
            .insert("first_name".into(), Value::Text(first_name.into()));
        self.journeys
            .pipeline
            .update_contact(&id, &patch)
            .await
            .unwrap();
        let consent = Consent {
            channel: "email".into(),
            purpose: Purpose::Marketing,
            status: ConsentStatus::Granted,
            source: Some("checkout".into()),
            text_version: Some("2026-01".into()),
            ip: Some("192.0.2.1".into()),
            user_agent: None,
            updated_at: 0,
        };
        self.store
            .set_consent(&id, &consent, self.clock.now())
            .await
            .unwrap();
        id
    }

    async fn ingest(&self, email: &str, kind: &str, properties: &[(&str, &str)]) -> String {
        let input = EventInput {
            kind: kind.into(),
            email: Some(email.into()),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
                .collect(),
            ..EventInput::default()
        };
        let id = self
            .journeys
            .pipeline
            .ingest(&input)
            .await
            .unwrap()
            .event
            .contact_id;
        self.scheduler.run_until_idle().await.unwrap();
        id
    }

    async fn pass(&self, span: i64) {
        let end = self.clock.now() + span;
        while self.clock.now() < end {
            self.clock.set((self.clock.now() + HOUR).min(end));
            self.scheduler.run_until_idle().await.unwrap();
        }
    }

    fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.smtp
            .messages(false)
            .into_iter()
            .filter(|m| m.to().contains(address))
            .collect()
    }

    /// Follows a tracked URL in-process; returns the status and Location.
    async fn follow(&self, method: &str, url: &str) -> (u16, Option<String>) {
        use tower::ServiceExt;
        let path = url.strip_prefix("https://t.shop.example").unwrap();
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::from("List-Unsubscribe=One-Click"))
            .unwrap();
        let response = self.web.clone().oneshot(request).await.unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        self.scheduler.run_until_idle().await.unwrap();
        (response.status().as_u16(), location)
    }

    /// Why the deliveries waiting for a retry failed last.
    async fn delivery_errors(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT last_error FROM jobs WHERE kind = 'deliver' AND last_error IS NOT NULL",
        )
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }

    async fn close(mut self) {
        if let Some(temp) = self.temp.take() {
            temp.cleanup(self.store.clone()).await;
        }
    }
}

/// A world on one database with the SMTP connector installed.
async fn world(dialect: &'static str) -> World {
    world_with(dialect, SmtpSink::start(), &[]).await
}

/// The same, sending to `smtp` with `config` added to the binding's.
async fn world_with(dialect: &'static str, smtp: SmtpSink, config: &[(&str, &str)]) -> World {
    let registry = Arc::new(Registry::new(runtime()));
    registry
        .install_file(&guests::SMTP_EMAIL.packed(), Activation::Now)
        .await
        .unwrap();
    let (store, temp) = nachfass_tests::store(dialect).await;
    World::new(store, temp, registry, smtp, config).await
}

fn link(html: &str, marker: &str) -> String {
    html.split(marker)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

async fn cart_abandonment_mails_are_personal_multipart_and_tracked(dialect: &'static str) {
    let w = world(dialect).await;
    w.install("cart-abandonment").await;
    let joerg = w.contact("joerg@kunde.example", "Jörg").await;
    w.ingest(
        "joerg@kunde.example",
        "cart.abandoned",
        &[
            ("total", "129.00"),
            ("cart_url", "https://shop.example/cart/77"),
        ],
    )
    .await;
    w.pass(HOUR).await;
    let mails = w.mails_to("joerg@kunde.example");
    assert_eq!(mails.len(), 1, "{dialect}");
    let mail = &mails[0];
    let key = w.store.contact_outbox(&joerg).await.unwrap()[0]
        .idempotency_key
        .clone();
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{key}@shop.example>")),
        "{dialect}"
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click"),
        "{dialect}"
    );
    assert!(
        mail.header("List-Unsubscribe")
            .unwrap()
            .starts_with("<https://t.shop.example/u/"),
        "{dialect}"
    );
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{dialect}"
    );
    let parts = mail.parts();
    assert!(
        parts[0].starts_with("Hallo Jörg,"),
        "{dialect}: {}",
        parts[0]
    );
    assert!(parts[0].contains("über 129.00 €"), "{dialect}");
    assert!(
        !parts[1].contains("shop.example/cart/77"),
        "{dialect}: the link is tracked"
    );

    // Open twice, click once: unique vs total, and the click lands on the cart.
    let pixel = link(&parts[1], "<img src=\"");
    let click = link(&parts[1], "<a href=\"");
    assert_eq!(w.follow("GET", &pixel).await.0, 200, "{dialect}");
    assert_eq!(w.follow("GET", &pixel).await.0, 200, "{dialect}");
    let (status, location) = w.follow("GET", &click).await;
    assert_eq!(
        (status, location.as_deref()),
        (302, Some("https://shop.example/cart/77")),
        "{dialect}"
    );
    let events = w.store.timeline(&joerg, 200, None).await.unwrap();
    let count = |kind: &str, unique: Option<bool>| {
        events
            .iter()
            .filter(|e| {
                e.kind == kind
                    && unique.is_none_or(|u| e.properties.get("unique") == Some(&Value::Boolean(u)))
            })
            .count()
    };
    assert_eq!(
        (
            count("email.opened", None),
            count("email.opened", Some(true))
        ),
        (2, 1),
        "{dialect}"
    );
    assert_eq!(count("email.clicked", None), 1, "{dialect}");

    // A purchase ends it: no second reminder.
    w.ingest("joerg@kunde.example", "purchase", &[]).await;
    w.pass(24 * HOUR).await;
    assert_eq!(w.mails_to("joerg@kunde.example").len(), 1, "{dialect}");
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    cart_abandonment_mails_are_personal_multipart_and_tracked
);

async fn welcome_nurture_branches_on_real_clicks_and_one_click_unsubscribe_ends_it(
    dialect: &'static str,
) {
    let w = world(dialect).await;
    w.install("welcome-nurture").await;
    let ada = w.contact("ada@b2b.example", "Ada").await;
    let bob = w.contact("bob@b2b.example", "Bob").await;
    for email in ["ada@b2b.example", "bob@b2b.example"] {
        w.ingest(email, "signup", &[]).await;
    }
    w.pass(2 * DAY).await;
    // The tips mail: Ada clicks through, Bob unsubscribes with one click.
    let tips = &w.mails_to("ada@b2b.example")[1];
    let click = link(&tips.parts()[1], "<a href=\"");
    assert_eq!(
        w.follow("GET", &click).await.1.as_deref(),
        Some("https://beispiel.example/tipps"),
        "{dialect}"
    );
    let bobs = w.mails_to("bob@b2b.example");
    let unsubscribe = bobs[1]
        .header("List-Unsubscribe")
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    assert_eq!(w.follow("POST", &unsubscribe).await.0, 200, "{dialect}");
    w.pass(5 * DAY).await;
    let subjects: Vec<String> = w
        .mails_to("ada@b2b.example")
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(subjects.len(), 3, "{dialect}: {subjects:?}");
    assert_eq!(
        subjects[2], "Wie andere Teams es machen",
        "{dialect}: the clicker gets the case study"
    );
    assert_eq!(
        w.mails_to("bob@b2b.example").len(),
        2,
        "{dialect}: nothing after the unsubscribe"
    );
    let runs = w.store.contact_runs(&bob).await.unwrap();
    assert_eq!(
        (runs[0].status.as_str(), runs[0].exit_reason.as_deref()),
        ("exited", Some("email.unsubscribed")),
        "{dialect}"
    );
    assert_eq!(
        w.store.contact_runs(&ada).await.unwrap()[0].status,
        "exited",
        "{dialect}: finished by its exit step"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    welcome_nurture_branches_on_real_clicks_and_one_click_unsubscribe_ends_it
);

async fn a_refused_mail_is_retried_with_the_same_message_id(dialect: &'static str) {
    let w = world(dialect).await;
    w.install("post-purchase-thank-you").await;
    w.ingest("eva+retry@shop.example", "purchase", &[("order_id", "A-7")])
        .await;
    assert_eq!(
        w.smtp.messages(true).len(),
        1,
        "{dialect}: the first attempt got 451"
    );
    assert!(w.mails_to("eva+retry@shop.example").is_empty(), "{dialect}");
    w.pass(HOUR).await;
    let accepted = w.mails_to("eva+retry@shop.example");
    assert_eq!(accepted.len(), 1, "{dialect}");
    let refused = w.smtp.messages(true).remove(0);
    assert_eq!(
        accepted[0].header("Message-ID"),
        refused.header("Message-ID"),
        "{dialect}"
    );
    assert!(
        accepted[0].header("List-Unsubscribe").is_none(),
        "{dialect}: transactional mail has none"
    );
    assert_eq!(
        accepted[0].parts()[0].lines().next(),
        Some("Guten Tag,"),
        "{dialect}: a missing name gets a neutral greeting"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_refused_mail_is_retried_with_the_same_message_id
);

async fn double_opt_in_grants_consent_only_after_the_click(dialect: &'static str) {
    let w = world(dialect).await;
    w.install("content-follow-up").await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for email in ["ada@b2b.example", "bob@b2b.example"] {
            ids.push(w.ingest(email, "contact.imported", &[]).await);
        }
        ids
    };
    for id in &ids {
        let asked = nachfass::consent::ConsentRequest {
            channel: "email".into(),
            purpose: Purpose::Marketing,
            binding: "mail".into(),
            source: Some("newsletter form".into()),
            text_version: Some("2026-11".into()),
            ip: Some("192.0.2.10".into()),
            user_agent: Some("Firefox".into()),
        };
        nachfass::consent::request(&w.journeys, id, &asked, "k_site")
            .await
            .unwrap();
    }
    w.scheduler.run_until_idle().await.unwrap();
    let confirmation = &w.mails_to("ada@b2b.example")[0];
    let link = confirmation.parts()[0]
        .lines()
        .find(|l| l.starts_with("https://t.shop.example/c/"))
        .unwrap()
        .to_owned();
    assert!(
        confirmation.header("List-Unsubscribe").is_none(),
        "{dialect}"
    );

    // Pending consent is no consent: the download follow-up is skipped.
    w.ingest("ada@b2b.example", "download", &[("title", "Leitfaden")])
        .await;
    assert_eq!(w.mails_to("ada@b2b.example").len(), 1, "{dialect}");
    let forged = format!("{}0", &link[..link.len() - 1]);
    let forged = if forged == link {
        format!("{}1", &link[..link.len() - 1])
    } else {
        forged
    };
    assert_eq!(w.follow("GET", &forged).await.0, 404, "{dialect}");
    assert_eq!(w.follow("POST", &forged).await.0, 404, "{dialect}");
    // The link shows a page (a mail filter's scanner may fetch it);
    // only its button, a POST, confirms.
    assert_eq!(w.follow("GET", &link).await.0, 200, "{dialect}");
    assert_eq!(
        w.store.consents(&ids[0]).await.unwrap()[0].status,
        "pending",
        "{dialect}"
    );
    assert_eq!(w.follow("POST", &link).await.0, 200, "{dialect}");
    let consents = w.store.consents(&ids[0]).await.unwrap();
    assert_eq!(consents[0].status, "granted", "{dialect}");
    assert!(
        consents[0]
            .source
            .as_deref()
            .unwrap()
            .contains("double opt-in confirmed"),
        "{dialect}"
    );
    w.pass(7 * DAY).await;
    w.ingest("ada@b2b.example", "download", &[("title", "Checkliste")])
        .await;
    let subjects: Vec<String> = w
        .mails_to("ada@b2b.example")
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(
        subjects.last().unwrap(),
        "Ihr Download: Checkliste",
        "{dialect}: {subjects:?}"
    );

    // Bob never clicks: one reminder after a day, expiry after a week.
    let bobs = w.mails_to("bob@b2b.example");
    assert_eq!(bobs.len(), 2, "{dialect}: confirmation and one reminder");
    let bob_link = bobs[0].parts()[0]
        .lines()
        .find(|l| l.starts_with("https://t.shop.example/c/"))
        .unwrap()
        .to_owned();
    assert_eq!(
        w.follow("GET", &bob_link).await.0,
        410,
        "{dialect}: expired"
    );
    assert_eq!(
        w.store.consents(&ids[1]).await.unwrap()[0].status,
        "expired",
        "{dialect}"
    );
    let audit = w.store.audit_entries(&ids[0]).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        ["consent.requested", "consent.confirmed"],
        "{dialect}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    double_opt_in_grants_consent_only_after_the_click
);

/// A confirmation and the request's expiry at the same moment take turns
/// (PostgreSQL; on SQLite the write transaction is the lock): an expiry
/// that starts while a confirmation holds the request waits for it, then
/// leaves the confirmed request alone. Before, it read "pending" unlocked
/// and marked the request expired beside the consent it had granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_racing_a_confirmation_leaves_it_confirmed_postgres() {
    let w = world("postgres").await;
    w.install("content-follow-up").await;
    let id = w.ingest("ada@b2b.example", "contact.imported", &[]).await;
    let asked = nachfass::consent::ConsentRequest {
        channel: "email".into(),
        purpose: Purpose::Marketing,
        binding: "mail".into(),
        source: Some("newsletter form".into()),
        text_version: None,
        ip: None,
        user_agent: None,
    };
    let request = nachfass::consent::request(&w.journeys, &id, &asked, "k_site")
        .await
        .unwrap();
    w.scheduler.run_until_idle().await.unwrap();
    // A week later the expiry is due, and the click comes: its
    // transaction holds the request.
    w.clock.advance(8 * DAY);
    let mut confirming = w.store.pool().begin().await.unwrap();
    sqlx::query("SELECT status FROM consent_requests WHERE id = $1 FOR UPDATE")
        .bind(request.clone())
        .execute(&mut *confirming)
        .await
        .unwrap();
    let expiry = tokio::spawn({
        let scheduler = w.scheduler.clone();
        async move { scheduler.run_until_idle().await }
    });
    // Time for the expiry to read the request (a wait, not a measurement).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("UPDATE consent_requests SET status = 'confirmed', decided_at = 1 WHERE id = $1")
        .bind(request.clone())
        .execute(&mut *confirming)
        .await
        .unwrap();
    sqlx::query("UPDATE consents SET status = 'granted' WHERE contact_id = $1")
        .bind(id.clone())
        .execute(&mut *confirming)
        .await
        .unwrap();
    confirming.commit().await.unwrap();
    expiry.await.unwrap().unwrap();

    let status: String = sqlx::query_scalar("SELECT status FROM consent_requests WHERE id = $1")
        .bind(request)
        .fetch_one(w.store.pool())
        .await
        .unwrap();
    assert_eq!(status, "confirmed");
    assert_eq!(w.store.consents(&id).await.unwrap()[0].status, "granted");
    w.close().await;
}

async fn a_burst_of_mails_shares_a_few_smtp_sessions(dialect: &'static str) {
    let w = world_with(dialect, SmtpSink::start(), &[("smtp_sessions", "2")]).await;
    w.install("cart-abandonment").await;
    let count = 24;
    for i in 0..count {
        let email = format!("kunde{i}@kunde.example");
        w.contact(&email, "Kim").await;
        w.ingest(&email, "cart.abandoned", &[("total", "19.00")])
            .await;
    }
    // All reminders fall due at once: the deliveries lane calls the
    // connector for all of them side by side.
    w.pass(HOUR).await;
    assert_eq!(w.smtp.accepted(), count, "{dialect}");
    let ports = w.smtp.session_ports();
    assert_eq!(ports.len(), count, "{dialect}");
    let sessions: HashSet<u16> = ports.into_iter().collect();
    assert!(
        (1..=2).contains(&sessions.len()),
        "{dialect}: {count} mails came over {} sessions; the binding allows 2",
        sessions.len()
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_burst_of_mails_shares_a_few_smtp_sessions
);

async fn a_bad_session_count_fails_the_message_and_says_why(dialect: &'static str) {
    let w = world_with(dialect, SmtpSink::start(), &[("smtp_sessions", "0")]).await;
    w.install("post-purchase-thank-you").await;
    let eva = w
        .ingest("eva@shop.example", "purchase", &[("order_id", "A-8")])
        .await;
    assert_eq!(w.smtp.accepted(), 0, "{dialect}");
    let entry = w.store.contact_outbox(&eva).await.unwrap().remove(0);
    assert_eq!(
        entry.status,
        nachfass::model::status::OutboxStatus::Failed,
        "{dialect}: a configuration error is not retried"
    );
    let why = entry.last_error.unwrap_or_default();
    assert!(
        why.contains("smtp_sessions `0` must be a number from 1 to 64"),
        "{dialect}: {why}"
    );
    w.close().await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_bad_session_count_fails_the_message_and_says_why
);

/// The TLS tests need no second database: the store plays no part in how
/// the host speaks to the SMTP server.
#[tokio::test]
async fn tls_and_starttls_with_a_login_reach_a_server_of_a_private_ca() {
    for mode in ["tls", "starttls"] {
        let smtp = SmtpSink::start_with(&[mode, "versand", "geheim"]);
        let ca = smtp.ca_pem();
        let w = world_with(
            "sqlite",
            smtp,
            &[
                ("smtp_tls", mode),
                ("smtp_ca", &ca),
                ("smtp_user", "versand"),
                ("smtp_password", "geheim"),
            ],
        )
        .await;
        w.install("post-purchase-thank-you").await;
        w.ingest("eva@shop.example", "purchase", &[("order_id", "A-9")])
            .await;
        let mails = w.mails_to("eva@shop.example");
        assert_eq!(mails.len(), 1, "{mode}: {:?}", w.delivery_errors().await);
        assert_eq!(
            mails[0].parts()[0].lines().next(),
            Some("Guten Tag,"),
            "{mode}"
        );
        w.close().await;
    }
}

/// Nothing is sent to a server the host cannot verify, or in plain text
/// when the binding asks for STARTTLS; the message waits for a retry and
/// the outbox says why.
#[tokio::test]
async fn no_mail_goes_to_an_unverified_server_or_in_plain_text() {
    let cases = [
        (
            "tls",
            SmtpSink::start_with(&["tls"]),
            "give the CA's certificate as smtp_ca",
        ),
        (
            "starttls",
            SmtpSink::start_with(&["starttls"]),
            "give the CA's certificate as smtp_ca",
        ),
        ("starttls", SmtpSink::start(), "STARTTLS is not supported"),
    ];
    for (mode, smtp, why) in cases {
        let w = world_with("sqlite", smtp, &[("smtp_tls", mode)]).await;
        w.install("post-purchase-thank-you").await;
        let eva = w
            .ingest("eva@shop.example", "purchase", &[("order_id", "A-10")])
            .await;
        assert_eq!(w.smtp.accepted(), 0, "{mode}");
        let entry = w.store.contact_outbox(&eva).await.unwrap().remove(0);
        assert_eq!(
            entry.status,
            nachfass::model::status::OutboxStatus::Pending,
            "{mode}: retried later, as when a server is down"
        );
        let errors = w.delivery_errors().await;
        assert_eq!(errors.len(), 1, "{mode}: {errors:?}");
        assert!(errors[0].contains(why), "{mode}: {errors:?}");
        w.close().await;
    }
}
