//! nachfass: follow-up and lead-nurturing engine with WebAssembly plugins.

pub mod ab;
pub mod api;
pub mod backtest;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod consent;
pub mod feedback;
pub mod ingest;
pub mod journeys;
pub mod kpis;
pub mod mailbox;
pub mod metrics;
pub mod model;
pub mod oci;
pub mod outbox;
pub mod pack;
pub mod pipeline;
pub mod plugins;
pub mod policy;
pub mod privacy;
pub mod render;
pub mod replay;
pub mod runtime;
pub mod scheduler;
pub mod scoring;
pub mod segments;
pub mod shadow;
pub mod stages;
pub mod store;
pub mod tracking;

/// Every binary built on this crate (the server and CLI, the tests, the
/// benches) allocates through mimalloc; with its `override` feature the C
/// code linked in (SQLite) does too. The host allocates per row, record
/// and request, many small blocks freed on another thread than the one
/// that made them, which glibc's allocator serves slowly: under `perf` it
/// was the largest single cost of the host's side of a plugin batch.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
