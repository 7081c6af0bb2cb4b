//! Group commit for single-event requests: events that arrive while a
//! group is being stored and applied wait for the next group, which takes
//! all of them (up to [`MAX_GROUP`]) as one batch request would
//! ([`Pipeline::ingest_batch`]: one batch of plugin calls, and on
//! PostgreSQL one transaction). Nothing waits for a timer: a lone request
//! goes at once, and the busier the node, the larger the groups. Every
//! caller is answered after its event is committed and its effects
//! applied.
//!
//! One group at a time, stored and then applied, so the events of a
//! contact are applied in the order they were stored. Storing the next
//! group while one is applied was tried and was slower (PostgreSQL
//! 1,190-1,353 against 1,584-1,805 events/s, SQLite 2,525-3,427 against
//! 3,460-4,254, in the ingest bench's single requests): a caller waits
//! for both anyway, so two stages only split the waiting callers into
//! smaller groups, and each group costs the same statements.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::pipeline::Pipeline;
use crate::store::{EventInput, Ingested, StoreError};

/// Most events in one group (the size of a batch request).
pub const MAX_GROUP: usize = 1000;

/// Requests waiting beyond this many are turned away by the channel's
/// back pressure (the caller waits for room).
const WAITING: usize = 10 * MAX_GROUP;

struct Waiting {
    input: EventInput,
    reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

/// This node's queue of single events. Cheap to clone; the worker that
/// stores the groups starts with the first event.
#[derive(Clone)]
pub struct IngestQueue {
    pipeline: Pipeline,
    sender: Arc<OnceLock<mpsc::Sender<Waiting>>>,
}

impl IngestQueue {
    pub fn new(pipeline: Pipeline) -> IngestQueue {
        IngestQueue {
            pipeline,
            sender: Arc::default(),
        }
    }

    /// Stores `input` with whatever else is waiting, then applies it;
    /// answers like [`Pipeline::ingest`].
    pub async fn submit(&self, input: EventInput) -> Result<Ingested, StoreError> {
        let sender = self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(WAITING);
            tokio::spawn(work(self.pipeline.clone(), receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = sender.send(Waiting { input, reply }).await {
            // The worker is gone (the runtime shuts down): store alone.
            return self.pipeline.ingest(&refused.0.input).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Conflict(
                "the event's group was interrupted; send it again (with its client_event_id it is stored once)"
                    .into(),
            ))
        })
    }
}

async fn work(pipeline: Pipeline, mut receiver: mpsc::Receiver<Waiting>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (inputs, replies): (Vec<EventInput>, Vec<_>) =
            group.drain(..).map(|w| (w.input, w.reply)).unzip();
        metrics::histogram!("nachfass_ingest_group_size").record(inputs.len() as f64);
        match pipeline.ingest_batch(&inputs).await {
            Ok(results) => answer(replies, results),
            Err(e) => {
                tracing::warn!(error = %e, events = inputs.len(), "storing a group of events failed");
                let detail = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Database(sqlx::Error::Protocol(
                        detail.clone(),
                    ))));
                }
            }
        }
    }
}

fn answer(
    replies: Vec<oneshot::Sender<Result<Ingested, StoreError>>>,
    results: Vec<Result<Ingested, StoreError>>,
) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller may have gone; its event is stored anyway.
        let _ = reply.send(result);
    }
}
