//! The durable scheduler: leases due jobs in batches, runs them, and gives
//! failed ones back with exponential backoff and jitter. Several nodes on
//! one PostgreSQL database share the queue; a node that dies leaves leases
//! that run out and are claimed again.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::journeys::{JobOutcome, Journeys};
use crate::store::jobs::ClaimedJob;
use crate::store::{Dialect, StoreError};

/// Attempts before a job that keeps failing is marked failed.
pub const MAX_ATTEMPTS: i64 = 12;

/// Delay before attempt `attempts + 1`: 10 s doubling up to an hour, with
/// ±20 % jitter drawn from `seed`, so retries of many jobs spread out.
pub fn backoff(attempts: i64, seed: &str) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let base = 10_000_i64.saturating_mul(1 << exponent).min(3_600_000);
    let digest = Sha256::digest(format!("{seed}\n{attempts}"));
    let spread = i64::from(u16::from_be_bytes([digest[0], digest[1]])) % 401 - 200;
    base + base * spread / 1000
}

/// The job's kind (`advance`, `deliver`) from its payload, for metrics.
fn job_kind(payload: &str) -> &'static str {
    const KINDS: [&str; 9] = [
        "route",
        "advance",
        "timeout",
        "deliver",
        "consent_reminder",
        "consent_expiry",
        "sweep",
        "segment_rebuild",
        "rescore",
    ];
    KINDS
        .into_iter()
        .find(|k| payload.contains(&format!("\"job\":\"{k}\"")))
        .unwrap_or("other")
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How long a claimed job belongs to this node.
    pub lease_ms: i64,
    /// Jobs claimed (and run at once) per round.
    pub batch: u32,
    /// Pause when nothing is due.
    pub idle: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_ms: 60_000,
            batch: 64,
            idle: Duration::from_millis(200),
        }
    }
}

pub struct Scheduler {
    journeys: Arc<Journeys>,
    config: SchedulerConfig,
    /// This node's name on its leases.
    worker: String,
}

impl Scheduler {
    pub fn new(journeys: Arc<Journeys>, config: SchedulerConfig) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            journeys,
            config,
            worker: format!("node-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Claims one batch of due jobs and runs them. Returns how many.
    pub async fn tick(self: &Arc<Self>) -> Result<usize, StoreError> {
        let store = &self.journeys.pipeline.store;
        let now = self.journeys.pipeline.clock.now();
        let jobs = store
            .claim_jobs(&self.worker, now, self.config.lease_ms, self.config.batch)
            .await?;
        let claimed = jobs.len();
        // SQLite has one writer and 8 pooled connections: more than 4 jobs
        // at once would only queue for the lock while holding connections
        // the API needs. PostgreSQL runs the whole batch at once.
        let at_once = match store.dialect() {
            Dialect::Sqlite => 4,
            Dialect::Postgres => claimed.max(1),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(at_once));
        let mut running = JoinSet::new();
        for job in jobs {
            let this = self.clone();
            let permits = permits.clone();
            let span = tracing::debug_span!("job", id = %job.id, attempt = job.attempts);
            running.spawn(
                async move {
                    // The semaphore is never closed, so a permit always comes.
                    let _permit = permits.acquire_owned().await;
                    this.run(job).await
                }
                .instrument(span),
            );
        }
        while running.join_next().await.is_some() {}
        Ok(claimed)
    }

    async fn run(&self, job: ClaimedJob) {
        let store = &self.journeys.pipeline.store;
        let kind = job_kind(&job.payload);
        let started = self.journeys.pipeline.clock.now();
        metrics::histogram!("nachfass_job_lag_seconds", "kind" => kind)
            .record((started - job.due_at).max(0) as f64 / 1000.0);
        let outcome = match self.journeys.run_job(&job).await {
            Ok(outcome) => outcome,
            Err(e) if job.attempts >= MAX_ATTEMPTS => JobOutcome::Failed {
                error: e.to_string(),
            },
            Err(e) => JobOutcome::Retry {
                after_ms: backoff(job.attempts, &job.id),
                error: e.to_string(),
            },
        };
        let now = self.journeys.pipeline.clock.now();
        let label = match &outcome {
            JobOutcome::Done => "done",
            JobOutcome::Retry { .. } => "retry",
            JobOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("nachfass_jobs_total", "kind" => kind, "outcome" => label).increment(1);
        let written = match &outcome {
            JobOutcome::Done => Ok(()),
            JobOutcome::Retry { after_ms, error } => {
                tracing::info!(job = %job.id, attempt = job.attempts, error, "job will be retried");
                store.retry_job(&job, now + after_ms, error).await
            }
            JobOutcome::Failed { error } => {
                tracing::warn!(job = %job.id, attempt = job.attempts, error, "job failed for good");
                store.fail_job(&job, error, now).await
            }
        };
        // The lease runs out and the job comes back: nothing is lost.
        if let Err(e) = written {
            tracing::warn!(job = %job.id, error = %e, "could not record the job's outcome");
        }
    }

    /// Runs rounds until nothing is due at the clock's present time (tests
    /// and the CLI use this with an injected clock). Returns the jobs run.
    pub async fn run_until_idle(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            match self.tick().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// The node's loop, until `shutdown` turns true.
    pub async fn run_forever(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let store = self.journeys.pipeline.store.clone();
        let mut refreshed = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            let pause = match self.tick().await {
                Ok(0) => self.config.idle,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler round failed");
                    Duration::from_secs(1)
                }
            };
            // Journeys saved on another node start routing events here too.
            if refreshed.elapsed() > Duration::from_secs(5) {
                refreshed = tokio::time::Instant::now();
                if let Err(e) = store.refresh_routing().await {
                    tracing::warn!(error = %e, "could not refresh journey routing");
                }
            }
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        for attempt in 1..6 {
            let base = 10_000 * (1 << (attempt - 1));
            let delay = backoff(attempt, "job");
            assert!(
                delay >= base * 8 / 10 && delay <= base * 12 / 10,
                "{attempt}: {delay}"
            );
        }
        assert!(backoff(40, "job") <= 3_600_000 * 12 / 10);
        let spread: std::collections::HashSet<i64> =
            (0..50).map(|i| backoff(3, &format!("job{i}"))).collect();
        assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
    }
}
