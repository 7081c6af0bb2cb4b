//! This node's queue of shadow results on their way to `shadow_results`.
//!
//! A shadow result is an observation, never applied, so the live path
//! must not wait for it to be written: it puts the results in a bounded
//! in-memory queue and goes on, and one background task per node writes
//! the queue in batches (multi-row inserts, one transaction per batch) a
//! short interval after the first result arrives, or at once when a batch
//! is full. When the queue is full, further results are dropped and
//! counted (the `nachfass_shadow_results_dropped_total` metric, and the
//! shadow's `dropped` column, which its report shows). Results still in
//! the queue when the process dies are lost; a clean shutdown and every
//! report flush them first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::shadows::ShadowResult;
use super::{Store, StoreError};

/// How large the queue may grow and how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowQueueLimits {
    /// Results waiting at most; more are dropped and counted.
    pub capacity: usize,
    /// Rows per insert (and per transaction); a full batch is written at
    /// once.
    pub batch: usize,
    /// How long the first result of a batch waits for others.
    pub interval: Duration,
}

impl Default for ShadowQueueLimits {
    fn default() -> Self {
        Self {
            // A few megabytes at most, and at ingest rates of thousands of
            // calls a second several intervals' worth.
            capacity: 20_000,
            // 500 rows of 17 columns stay well below both dialects' limit
            // on bound parameters (SQLite 32,766; PostgreSQL 65,535).
            batch: 500,
            interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    results: Vec<ShadowResult>,
    /// Results dropped since the last write, per shadow.
    dropped: HashMap<String, i64>,
}

#[derive(Debug, Default)]
pub(super) struct ShadowQueue {
    limits: ShadowQueueLimits,
    pending: Mutex<Pending>,
    /// Something is pending (a permit stays when nobody waits yet).
    wake: tokio::sync::Notify,
    /// A batch is full.
    full: tokio::sync::Notify,
    /// Held while a batch is taken and written, so a flush also waits for
    /// a write in flight.
    writing: tokio::sync::Mutex<()>,
    writer_started: AtomicBool,
}

impl ShadowQueue {
    pub(super) fn new(limits: ShadowQueueLimits) -> Self {
        Self {
            limits: ShadowQueueLimits {
                capacity: limits.capacity.max(1),
                batch: limits.batch.max(1),
                interval: limits.interval,
            },
            ..Self::default()
        }
    }

    fn take(&self) -> Pending {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pending)
    }
}

impl Store {
    /// This store with its own shadow queue of these limits (tests use a
    /// small one to see results dropped).
    #[must_use]
    pub fn with_shadow_queue(mut self, limits: ShadowQueueLimits) -> Store {
        self.shadow_queue = std::sync::Arc::new(ShadowQueue::new(limits));
        self
    }

    /// Queues results for the background writer and returns at once; what
    /// does not fit is dropped and counted.
    pub(crate) fn queue_shadow_results(&self, results: Vec<ShadowResult>) {
        if results.is_empty() {
            return;
        }
        let queue = &self.shadow_queue;
        let (was_empty, now_full, dropped) = {
            let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = pending.results.is_empty();
            let mut dropped = 0u64;
            for result in results {
                if pending.results.len() < queue.limits.capacity {
                    pending.results.push(result);
                } else {
                    *pending.dropped.entry(result.shadow_id).or_default() += 1;
                    dropped += 1;
                }
            }
            (
                was_empty,
                pending.results.len() >= queue.limits.batch,
                dropped,
            )
        };
        if dropped > 0 {
            metrics::counter!("nachfass_shadow_results_dropped_total").increment(dropped);
            tracing::debug!(dropped, "shadow queue full: results dropped");
        }
        if !queue.writer_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().write_shadow_queue_forever());
        }
        if was_empty {
            queue.wake.notify_one();
        }
        if now_full {
            queue.full.notify_one();
        }
    }

    /// The background writer: waits for a first result, gives the batch
    /// the interval to fill (or less, when it fills), writes it.
    async fn write_shadow_queue_forever(self) {
        let queue = self.shadow_queue.clone();
        loop {
            queue.wake.notified().await;
            let _ = tokio::time::timeout(queue.limits.interval, queue.full.notified()).await;
            if let Err(e) = self.flush_shadow_results().await {
                tracing::warn!(error = %e, "shadow results not recorded");
            }
        }
    }

    /// Writes every result queued on this node so far (and waits for a
    /// write in flight): what a report and a shutdown call first.
    pub async fn flush_shadow_results(&self) -> Result<(), StoreError> {
        let queue = &self.shadow_queue;
        let _writing = queue.writing.lock().await;
        let Pending { results, dropped } = queue.take();
        let mut dropped: Vec<(String, i64)> = dropped.into_iter().collect();
        let mut chunks = results.chunks(queue.limits.batch).peekable();
        if chunks.peek().is_none() && !dropped.is_empty() {
            return self.record_shadow_results(&[], &dropped).await;
        }
        let mut written = 0;
        for chunk in chunks {
            // Drop counts go with the first batch.
            let counts = std::mem::take(&mut dropped);
            if let Err(e) = self.record_shadow_results(chunk, &counts).await {
                let lost = results.len() - written;
                metrics::counter!("nachfass_shadow_results_dropped_total")
                    .increment(u64::try_from(lost).unwrap_or(u64::MAX));
                tracing::warn!(lost, "shadow results lost: the write failed");
                return Err(e);
            }
            written += chunk.len();
        }
        Ok(())
    }
}
