//! nachfass: follow-up and lead-nurturing engine with WebAssembly plugins.

pub mod ab;
pub mod api;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod consent;
pub mod ingest;
pub mod journeys;
pub mod kpis;
pub mod mailbox;
pub mod metrics;
pub mod model;
pub mod oci;
pub mod outbox;
pub mod pack;
pub mod plugins;
pub mod policy;
pub mod privacy;
pub mod render;
pub mod runtime;
pub mod scheduler;
pub mod scoring;
pub mod segments;
pub mod store;
pub mod tracking;
