//! nachfass: follow-up and lead-nurturing engine with WebAssembly plugins.

pub mod api;
pub mod cli;
pub mod clock;
pub mod ingest;
pub mod model;
pub mod pack;
pub mod runtime;
pub mod scoring;
pub mod segments;
pub mod store;
