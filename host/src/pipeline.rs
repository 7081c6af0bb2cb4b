//! The profile pipeline's shared parts: the store, this node's plugins,
//! the clock and the stage thresholds. Scoring, segments, the circuit
//! breaker and ingest all work on it; ingest (`ingest.rs`) drives it.

use std::sync::Arc;

use crate::clock::Clock;
use crate::runtime::Registry;
use crate::stages::StageThresholds;
use crate::store::Store;

/// Everything an event passes through after it is stored.
#[derive(Clone)]
pub struct Pipeline {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub stages: StageThresholds,
}
