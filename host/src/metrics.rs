//! Prometheus metrics at `/metrics`, through the `metrics` facade: every
//! layer records what it sees where it sees it (the runtime its plugin
//! calls, the scheduler its jobs, the HTTP layer its requests) without
//! importing this module, and the Prometheus exporter renders them.
//! Figures that live in the database (queue, lag, outbox) are read and set
//! as gauges when scraped.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::Row;

use crate::ingest::Pipeline;
use crate::store::StoreError;

/// Request latency, 1 ms to 10 s.
const HTTP_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Plugin call latency, 20 µs (a reused Rust instance) to 10 s (a channel
/// waiting on its provider).
const PLUGIN_SECONDS: &[f64] = &[
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0, 10.0,
];
/// How late a job starts after it was due, 10 ms to an hour.
const LAG_SECONDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls are free). Until
/// then, recorded figures go nowhere. Returns `None` when another recorder
/// was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("nachfass_http_request_duration_seconds".into()),
                    HTTP_SECONDS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("nachfass_plugin_call_duration_seconds".into()),
                        PLUGIN_SECONDS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("nachfass_job_lag_seconds".into()),
                        LAG_SECONDS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder);
            match handle {
                Ok(handle) => {
                    describe();
                    // Histogram samples wait in buffers until drained: drain
                    // them even when nobody scrapes.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start metrics upkeep; histograms drain when scraped");
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "nachfass_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "nachfass_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer HTTP requests, by route and method"
    );
    describe_counter!(
        "nachfass_events_ingested_total",
        "Touchpoints ingested by this process"
    );
    describe_counter!(
        "nachfass_jobs_total",
        "Scheduler jobs run, by kind and outcome"
    );
    describe_counter!(
        "nachfass_job_claims_total",
        "Claims of due jobs by the scheduler's lanes, by lane and whether they found any"
    );
    describe_histogram!(
        "nachfass_job_lag_seconds",
        Unit::Seconds,
        "How long after its due time a job started, by kind"
    );
    describe_counter!(
        "nachfass_plugin_calls_total",
        "Plugin calls per plugin version and outcome (ok, plugin_error, trap)"
    );
    describe_histogram!(
        "nachfass_plugin_call_duration_seconds",
        Unit::Seconds,
        "Plugin call latency per plugin version, sandbox set-up included"
    );
    describe_counter!(
        "nachfass_plugin_fuel_total",
        "Wasm instructions (fuel) used by plugin calls, per plugin version"
    );
    describe_counter!(
        "nachfass_deliveries_deferred_total",
        "Messages held back by their channel binding's rate limit, per binding"
    );
    describe_counter!(
        "nachfass_deliveries_given_back_total",
        "Messages given back unsent because this node could not extend their leases in time (a stalled node or database)"
    );
    describe_counter!(
        "nachfass_plugin_breaker_trips_total",
        "Bindings the circuit breaker paused"
    );
    describe_counter!(
        "nachfass_shadow_results_dropped_total",
        "Shadow observations not recorded: this node's shadow queue was full, or its write failed"
    );
    describe_gauge!(
        "nachfass_scheduler_jobs",
        "Jobs by state: due (ready, unclaimed), scheduled, leased, failed"
    );
    describe_gauge!(
        "nachfass_scheduler_lag_seconds",
        Unit::Seconds,
        "How long the oldest due job has waited"
    );
    describe_gauge!(
        "nachfass_messages",
        "Messages in the outbox by channel and outcome (pending, delivered, failed, cancelled)"
    );
}

/// One HTTP request: its route (the pattern, not the path), method, status
/// and duration.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    metrics::counter!(
        "nachfass_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "nachfass_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(elapsed.as_secs_f64());
}

/// The whole exposition, text format 0.0.4, with the database's figures
/// read now.
pub async fn render(pipeline: &Pipeline) -> Result<String, StoreError> {
    let Some(handle) = install() else {
        return Ok(String::new());
    };
    let now = pipeline.clock.now();
    let store = &pipeline.store;
    let queue = store.queue_counts(now).await?;
    for (state, n) in [
        ("due", queue.due),
        ("scheduled", queue.scheduled),
        ("leased", queue.leased),
        ("failed", queue.failed),
    ] {
        metrics::gauge!("nachfass_scheduler_jobs", "state" => state).set(n as f64);
    }
    let lag = match store.next_due().await? {
        Some(due) if due < now => now - due,
        _ => 0,
    };
    metrics::gauge!("nachfass_scheduler_lag_seconds").set(lag as f64 / 1000.0);
    let rows = sqlx::query(
        "SELECT channel, status, COUNT(*) AS n FROM outbox GROUP BY channel, status ORDER BY channel, status",
    )
    .fetch_all(store.pool())
    .await?;
    for row in rows {
        let (channel, status, n): (String, String, i64) = (
            row.try_get("channel")?,
            row.try_get("status")?,
            row.try_get("n")?,
        );
        metrics::gauge!("nachfass_messages", "channel" => channel, "status" => status)
            .set(n as f64);
    }
    handle.run_upkeep();
    Ok(handle.render())
}
