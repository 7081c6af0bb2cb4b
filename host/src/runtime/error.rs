//! Errors of the plugin runtime: loading a component, and calling one.

use super::manifest::{ManifestError, World};

/// Why a component cannot go live. Nothing changes in the registry when
/// loading fails.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("component is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] super::signature::SignatureError),
    #[error("not a valid component: {0}")]
    Invalid(String),
    #[error(
        "the manifest says world `{claimed}`, but the component does not fit it: {detail}. Build it against the `{claimed}` world of nachfass:plugin@{api}",
        api = super::manifest::API_VERSION
    )]
    WrongWorld { claimed: World, detail: String },
    #[error("the component imports what the `{world}` world does not grant: {detail}")]
    ForbiddenImport { world: World, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A call failed in the runtime, not in the plugin's own logic: a trap, a
/// limit, an invalid answer. The plugin's own errors are the inner tier of
/// [`CallResult`](super::CallResult).
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin}: {kind}")]
pub struct RuntimeError {
    /// `name@version` of the plugin that failed.
    pub plugin: String,
    pub kind: RuntimeErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeErrorKind {
    #[error("CPU time limit of {limit_ms} ms exceeded")]
    CpuTime { limit_ms: u128 },
    #[error("wall-clock limit of {limit_ms} ms exceeded")]
    WallTime { limit_ms: u128 },
    #[error("memory limit of {limit_bytes} bytes exceeded")]
    Memory { limit_bytes: usize },
    #[error("stack overflow (recursion too deep)")]
    StackOverflow,
    #[error("panicked: {message}")]
    Panicked { message: String },
    #[error("trapped: {message}")]
    Trapped { message: String },
    #[error("output too large: {detail}")]
    OutputTooLarge { detail: String },
    #[error("invalid output: {detail}")]
    InvalidOutput { detail: String },
    #[error("no free instance slot: {detail}")]
    Exhausted { detail: String },
    #[error("host failure: {detail}")]
    Host { detail: String },
}

impl RuntimeErrorKind {
    /// A short machine-readable name for metrics and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeErrorKind::CpuTime { .. } => "cpu-time",
            RuntimeErrorKind::WallTime { .. } => "wall-time",
            RuntimeErrorKind::Memory { .. } => "memory",
            RuntimeErrorKind::StackOverflow => "stack-overflow",
            RuntimeErrorKind::Panicked { .. } => "panic",
            RuntimeErrorKind::Trapped { .. } => "trap",
            RuntimeErrorKind::OutputTooLarge { .. } => "output-too-large",
            RuntimeErrorKind::InvalidOutput { .. } => "invalid-output",
            RuntimeErrorKind::Exhausted { .. } => "exhausted",
            RuntimeErrorKind::Host { .. } => "host",
        }
    }
}
