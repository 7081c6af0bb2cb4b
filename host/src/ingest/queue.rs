//! Group commit for single-event requests: events that arrive while a
//! group is being stored and applied wait for the next group, which takes
//! all of them (up to [`MAX_GROUP`]) in one transaction and one batch of
//! plugin calls. Nothing waits for a timer: a lone request goes at once,
//! and the busier the node, the larger the groups. Every caller is
//! answered after its event is committed and its effects applied.
//!
//! Storing and applying are two stages: while one group's effects are
//! applied, the next group is stored. The applying stage takes the groups
//! one at a time in the order they were stored, so the events of a
//! contact are applied in order.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::model::Event;
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

/// A stored group on its way to the applying stage.
struct Stored {
    results: Vec<Result<Ingested, StoreError>>,
    fresh: Vec<Event>,
    replies: Vec<oneshot::Sender<Result<Ingested, StoreError>>>,
}

async fn work(pipeline: Pipeline, mut receiver: mpsc::Receiver<Waiting>) {
    // One stored group may wait while another is applied.
    let (applying, to_apply) = mpsc::channel(1);
    tokio::spawn(apply(pipeline.clone(), to_apply));
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (inputs, replies): (Vec<EventInput>, Vec<_>) =
            group.drain(..).map(|w| (w.input, w.reply)).unzip();
        metrics::histogram!("nachfass_ingest_group_size").record(inputs.len() as f64);
        match pipeline.store_batch(&inputs).await {
            Ok((results, fresh)) => {
                let stored = Stored {
                    results,
                    fresh,
                    replies,
                };
                if let Err(gone) = applying.send(stored).await {
                    // The applying stage is gone (the runtime shuts down):
                    // the events are stored; their backstop job applies them.
                    answer(gone.0.replies, gone.0.results);
                }
            }
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

/// The applying stage: one group at a time, in the order stored; its
/// callers are answered once its effects are applied.
async fn apply(pipeline: Pipeline, mut to_apply: mpsc::Receiver<Stored>) {
    while let Some(Stored {
        results,
        fresh,
        replies,
    }) = to_apply.recv().await
    {
        pipeline.apply_fresh(fresh).await;
        answer(replies, results);
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
