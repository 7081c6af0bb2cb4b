//! Follow-up latency under load: purchases arrive over HTTP at a steady
//! rate (default 1,000 events/s for 10 s, from 32 clients) while a
//! transactional journey answers each with a receipt through the real
//! webhook component to a receiver on 127.0.0.1, the scheduler running as
//! `serve` runs it. Prints p50/p99/max of event accepted → journey step
//! scheduled (the run started, from the database) and of event sent →
//! message received, on SQLite and PostgreSQL.
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench latency`
//! Rate and length: NACHFASS_BENCH_RATE (events/s), NACHFASS_BENCH_SECONDS.
//! `NACHFASS_BENCH_CHANNEL=email` sends each receipt as an email through
//! the real `smtp-email` component and the host's SMTP sessions to an SMTP
//! server on 127.0.0.1, and measures event sent → email accepted by it.
//! The server is a small one in this process, as the webhook's receiver
//! is; `NACHFASS_BENCH_SMTP=aiosmtpd` uses the email tests' aiosmtpd
//! instead, which takes half a core of its own at 1,000 mails a second.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nachfass::api::{AppState, app};
use nachfass::clock::SystemClock;
use nachfass::ingest::Pipeline;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::scoring::StageThresholds;
use nachfass::store::{BindingDef, BindingKind, Scope};
use nachfass_tests::smtp::{InProcessSmtp, SmtpSink};
use nachfass_tests::{guests, runtime};
use sqlx::Row;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When each recipient's message arrived, in µs since the bench began.
type Arrivals = Arc<Mutex<HashMap<String, u64>>>;

/// Where the receipts go: the webhook component's receiver, or an SMTP
/// server through the email component: aiosmtpd or the one in this process.
enum Receiver {
    Hook(Arrivals),
    Smtp(SmtpSink, SystemTime),
    InProcessSmtp(InProcessSmtp, SystemTime),
}

impl Receiver {
    /// How many receipts have arrived so far.
    fn count(&self) -> usize {
        match self {
            Receiver::Hook(arrivals) => arrivals.lock().unwrap().len(),
            Receiver::Smtp(sink, _) => sink.accepted(),
            Receiver::InProcessSmtp(server, _) => server.arrivals().len(),
        }
    }

    /// When each recipient's receipt arrived, in µs since the bench
    /// began: for an email, when the SMTP server wrote it, just before it
    /// answered that it accepted it.
    fn arrivals(&self) -> HashMap<String, u64> {
        let (accepted, began) = match self {
            Receiver::Hook(arrivals) => return arrivals.lock().unwrap().clone(),
            Receiver::Smtp(sink, began) => (
                sink.messages(false)
                    .into_iter()
                    .map(|mail| (mail.to().trim_matches(['<', '>']).to_owned(), mail.written))
                    .collect(),
                began,
            ),
            Receiver::InProcessSmtp(server, began) => (server.arrivals(), began),
        };
        accepted
            .into_iter()
            .filter_map(|(to, at)| Some((to, at.duration_since(*began).ok()?.as_micros() as u64)))
            .collect()
    }

    /// What an arrival is.
    fn arrival(&self) -> &'static str {
        match self {
            Receiver::Hook(_) => "received",
            Receiver::Smtp(..) => "accepted by aiosmtpd",
            Receiver::InProcessSmtp(..) => "accepted by the SMTP server",
        }
    }
}

async fn receiver(epoch: Instant) -> (u16, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let at = epoch.elapsed().as_micros() as u64;
                if let Ok(message) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Some(to) = message["to"].as_str()
                {
                    log.lock().unwrap().entry(to.to_owned()).or_insert(at);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, arrivals)
}

fn percentiles(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

async fn bench(dialect: &str, registry: Arc<Registry>, email: bool) {
    let epoch = Instant::now();
    let began = SystemTime::now();
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, key) = store
        .create_api_key("bench", &[Scope::Admin], 0)
        .await
        .unwrap();
    let (receiver, channel) = if email {
        let (receiver, port) =
            if std::env::var("NACHFASS_BENCH_SMTP").is_ok_and(|s| s == "aiosmtpd") {
                let sink = SmtpSink::start();
                let port = sink.port;
                (Receiver::Smtp(sink, began), port)
            } else {
                let server = InProcessSmtp::start().await;
                let port = server.port;
                (Receiver::InProcessSmtp(server, began), port)
            };
        let config = [
            ("from".to_owned(), "Shop <shop@latency.example>".to_owned()),
            ("smtp_host".to_owned(), "127.0.0.1".to_owned()),
            ("smtp_port".to_owned(), port.to_string()),
            ("smtp_tls".to_owned(), "none".to_owned()),
        ];
        let channel = ("smtp-email", config.into(), Vec::new());
        (receiver, channel)
    } else {
        let (hook_port, arrivals) = receiver(epoch).await;
        let config = [
            (
                "url".to_owned(),
                format!("http://127.0.0.1:{hook_port}/hook"),
            ),
            ("secret".to_owned(), "s".to_owned()),
        ];
        let allow = vec![format!("127.0.0.1:{hook_port}")];
        (Receiver::Hook(arrivals), ("webhook", config.into(), allow))
    };
    let (plugin, config, allow_http) = channel;
    let bindings = [
        BindingDef {
            name: "receipts".into(),
            kind: BindingKind::Channel,
            plugin: plugin.into(),
            config,
            allow_http,
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        },
        BindingDef {
            name: "engagement".into(),
            kind: BindingKind::Scorer,
            plugin: "engagement".into(),
            config: Default::default(),
            allow_http: Vec::new(),
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        },
    ];
    for def in &bindings {
        store.create_binding(def, 0).await.unwrap();
    }
    let pipeline = Pipeline {
        store: store.clone(),
        registry,
        clock: Arc::new(SystemClock),
        stages: StageThresholds::default(),
    };
    let journeys = Journeys::new(pipeline, Policy::default());
    journeys
        .save(
            br#"{"name":"receipt","purpose":"transactional","trigger":{"event":{"kind":"purchase"}},
                 "steps":[{"id":"receipt","type":"send","binding":"receipts",
                           "template":{"subject":"Danke","text":"Danke fuer Ihren Einkauf"}}]}"#,
        )
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(
        Scheduler::new(journeys.clone(), SchedulerConfig::default()).run_forever(stopped),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        axum::serve(listener, app(AppState::with_journeys(journeys, None))).into_future(),
    );

    let rate = env("NACHFASS_BENCH_RATE", 1000);
    let seconds = env("NACHFASS_BENCH_SECONDS", 10);
    let clients = 32;
    let total = rate * seconds;
    let sent: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (key, sent) = (key.clone(), sent.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut connection = nachfass_tests::client::KeepAlive::open(port);
            let mut failed = 0;
            // Event i is due at i / rate seconds: a steady arrival rate.
            for i in (client..total).step_by(clients) {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(epoch.elapsed()) {
                    std::thread::sleep(wait);
                }
                let email = format!("buyer{i}@latency.example");
                let body = format!(r#"{{"kind":"purchase","email":"{email}"}}"#);
                let at = epoch.elapsed().as_micros() as u64;
                sent.lock().unwrap().insert(email, at);
                if connection.post(&key, &body) != 201 {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap();
    }
    let offered = epoch.elapsed();
    // Wait for the last receipts (bounded).
    let waiting = Instant::now();
    while receiver.count() < total - failed && waiting.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered: Vec<f64> = {
        let sent = sent.lock().unwrap();
        let arrivals = receiver.arrivals();
        sent.iter()
            .filter_map(|(email, at)| Some((*arrivals.get(email)? as f64 - *at as f64) / 1000.0))
            .collect()
    };
    let scheduled: Vec<f64> = sqlx::query(
        "SELECT r.started_at - e.received_at AS lag FROM journey_runs r JOIN events e ON e.id = r.trigger_event",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<i64, _>("lag").unwrap() as f64)
    .collect();
    // Where the time between goes: the send step queued the message (its
    // outbox row), then the delivery sent it.
    let stages: Vec<(f64, f64)> = sqlx::query(
        "SELECT o.created_at - e.received_at AS queued, o.sent_at - o.created_at AS sending \
         FROM outbox o JOIN journey_runs r ON r.id = o.run_id JOIN events e ON e.id = r.trigger_event \
         WHERE o.sent_at IS NOT NULL",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| {
        (
            row.try_get::<i64, _>("queued").unwrap() as f64,
            row.try_get::<i64, _>("sending").unwrap() as f64,
        )
    })
    .collect();
    println!(
        "{dialect}: {total} purchases at {rate}/s ({:.1} s offered, {failed} failed), 1 scorer, journey → {plugin}:",
        offered.as_secs_f64()
    );
    println!(
        "{dialect}:   event accepted → journey step scheduled ({} runs): {}",
        scheduled.len(),
        percentiles(scheduled)
    );
    println!(
        "{dialect}:   event accepted → message queued: {}",
        percentiles(stages.iter().map(|s| s.0).collect())
    );
    println!(
        "{dialect}:   message queued → sent: {}",
        percentiles(stages.iter().map(|s| s.1).collect())
    );
    println!(
        "{dialect}:   event sent → receipt {} ({} of {total}): {}",
        receiver.arrival(),
        delivered.len(),
        percentiles(delivered)
    );
    stop.send(true).unwrap();
    scheduler.await.unwrap();
    server.abort();
    temp.cleanup(store).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = Arc::new(Registry::new(runtime()));
    let email = std::env::var("NACHFASS_BENCH_CHANNEL").is_ok_and(|c| c == "email");
    for guest in [guests::WEBHOOK, guests::SMTP_EMAIL, guests::ENGAGEMENT] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    bench("sqlite", registry.clone(), email).await;
    if std::env::var("NACHFASS_TEST_POSTGRES_URL").is_ok() {
        bench("postgres", registry, email).await;
    } else {
        println!(
            "postgres: skipped; set NACHFASS_TEST_POSTGRES_URL (tests/support/postgres.sh prints one)"
        );
    }
}
