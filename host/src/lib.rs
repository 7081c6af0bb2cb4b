//! nachfass: follow-up and lead-nurturing engine with WebAssembly plugins.

pub mod model;
pub mod runtime;
