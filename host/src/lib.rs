//! nachfass: follow-up and lead-nurturing engine with WebAssembly plugins.

pub mod cli;
pub mod model;
pub mod pack;
pub mod runtime;
pub mod store;
