//! Prometheus metrics at `/metrics`: counters the server keeps (HTTP
//! requests, ingested events, jobs run) and figures read when scraped
//! (scheduler queue and lag, messages per channel and outcome, plugin calls,
//! errors, traps and time per plugin version).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row;

use crate::ingest::Pipeline;
use crate::store::StoreError;

/// Labelled counters, in one process-wide registry.
#[derive(Default)]
pub struct Counters {
    values: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Sum of request durations in microseconds, per route label set.
    http_micros: Mutex<BTreeMap<String, (u64, u64)>>,
}

static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
static EVENTS: AtomicU64 = AtomicU64::new(0);

pub fn counters() -> &'static Counters {
    COUNTERS.get_or_init(Counters::default)
}

/// Escapes a label value for the text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Counters {
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], by: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect::<Vec<_>>()
            .join(",");
        *self
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name, labels))
            .or_default() += by;
    }

    /// One HTTP request: its route (the pattern, not the path), method,
    /// status and duration.
    pub fn http(&self, method: &str, route: &str, status: u16, micros: u64) {
        let status = status.to_string();
        self.add(
            "nachfass_http_requests_total",
            &[("method", method), ("route", route), ("status", &status)],
            1,
        );
        let key = format!("method=\"{}\",route=\"{}\"", label(method), label(route));
        let mut durations = self.http_micros.lock().unwrap_or_else(|e| e.into_inner());
        let entry = durations.entry(key).or_default();
        entry.0 += micros;
        entry.1 += 1;
    }
}

pub fn event_ingested() {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// The whole exposition, text format 0.0.4.
pub async fn render(pipeline: &Pipeline) -> Result<String, StoreError> {
    let mut out = String::new();
    let counters = counters();
    let values = counters
        .values
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut last = "";
    for ((name, labels), value) in &values {
        if *name != last {
            help(
                &mut out,
                name,
                "counter",
                match *name {
                    "nachfass_http_requests_total" => "HTTP requests by route, method and status",
                    "nachfass_jobs_total" => "Scheduler jobs run, by kind and outcome",
                    _ => "count",
                },
            );
            last = name;
        }
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
    help(
        &mut out,
        "nachfass_http_request_duration_seconds",
        "summary",
        "Time to answer HTTP requests",
    );
    for (labels, (micros, count)) in counters
        .http_micros
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "nachfass_http_request_duration_seconds_sum{{{labels}}} {}",
            *micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "nachfass_http_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    help(
        &mut out,
        "nachfass_events_ingested_total",
        "counter",
        "Touchpoints ingested by this process",
    );
    let _ = writeln!(
        out,
        "nachfass_events_ingested_total {}",
        EVENTS.load(Ordering::Relaxed)
    );

    let now = pipeline.clock.now();
    let store = &pipeline.store;
    let queue = store.queue_counts(now).await?;
    help(
        &mut out,
        "nachfass_scheduler_jobs",
        "gauge",
        "Jobs by state: due (ready, unclaimed), scheduled, leased, failed",
    );
    for (state, n) in [
        ("due", queue.due),
        ("scheduled", queue.scheduled),
        ("leased", queue.leased),
        ("failed", queue.failed),
    ] {
        let _ = writeln!(out, "nachfass_scheduler_jobs{{state=\"{state}\"}} {n}");
    }
    let lag = match store.next_due().await? {
        Some(due) if due < now => now - due,
        _ => 0,
    };
    help(
        &mut out,
        "nachfass_scheduler_lag_seconds",
        "gauge",
        "How long the oldest due job has waited",
    );
    let _ = writeln!(
        out,
        "nachfass_scheduler_lag_seconds {}",
        lag as f64 / 1000.0
    );

    let rows = sqlx::query("SELECT channel, status, COUNT(*) AS n FROM outbox GROUP BY channel, status ORDER BY channel, status")
        .fetch_all(store.pool())
        .await?;
    help(
        &mut out,
        "nachfass_messages",
        "gauge",
        "Messages in the outbox by channel and outcome (pending, delivered, failed, cancelled)",
    );
    for row in rows {
        let (channel, status, n): (String, String, i64) = (
            row.try_get("channel")?,
            row.try_get("status")?,
            row.try_get("n")?,
        );
        let _ = writeln!(
            out,
            "nachfass_messages{{channel=\"{}\",status=\"{}\"}} {n}",
            label(&channel),
            label(&status)
        );
    }

    let plugins = pipeline.registry.all_versions();
    for (name, kind, text) in [
        (
            "nachfass_plugin_calls_total",
            "counter",
            "Plugin calls per plugin version",
        ),
        (
            "nachfass_plugin_errors_total",
            "counter",
            "Calls the plugin answered with its own error",
        ),
        (
            "nachfass_plugin_traps_total",
            "counter",
            "Calls that trapped or hit a limit",
        ),
        (
            "nachfass_plugin_busy_seconds_total",
            "counter",
            "Time spent in plugin calls",
        ),
        (
            "nachfass_plugin_fuel_total",
            "counter",
            "Wasm instructions (fuel) used by plugin calls",
        ),
    ] {
        help(&mut out, name, kind, text);
        for plugin in &plugins {
            let stats = plugin.stats();
            let manifest = plugin.manifest();
            let labels = format!(
                "plugin=\"{}\",version=\"{}\"",
                label(&manifest.name),
                label(&manifest.version)
            );
            let value = match name {
                "nachfass_plugin_calls_total" => stats.calls.load(Ordering::Relaxed) as f64,
                "nachfass_plugin_errors_total" => {
                    stats.plugin_errors.load(Ordering::Relaxed) as f64
                }
                "nachfass_plugin_traps_total" => {
                    stats.runtime_errors.load(Ordering::Relaxed) as f64
                }
                "nachfass_plugin_fuel_total" => stats.fuel_used.load(Ordering::Relaxed) as f64,
                _ => stats.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
            };
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
    Ok(out)
}
