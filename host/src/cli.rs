//! The `nachfass` command line.

mod apply;
mod binding;
mod bundle;
mod demo;
mod plugin;
mod remote;
mod serve;
mod trust;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use plugin::PluginCommand;
pub use serve::{CreateKeyArgs, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "nachfass",
    version,
    about = "Follow-up and lead nurturing with WebAssembly plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where compiled plugins are cached.
    #[arg(long, global = true, env = "NACHFASS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: REST API, plugin runtime, watched plugins directory.
    Serve(ServeArgs),
    /// Load a realistic demo data set: example plugins, contacts, weeks of touchpoints.
    Demo(demo::DemoArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write, build, inspect and try plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Publisher keys whose signed plugins this cluster accepts.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// A running server's bindings (`--server`, key in NACHFASS_API_KEY).
    #[command(subcommand)]
    Binding(binding::BindingCommand),
    /// Make a server hold the plugins, bindings and journeys kept as files
    /// (`plugins/*.wasm`, `bindings/*.json`, `journeys/*.json`); applying
    /// the same files twice changes nothing.
    Apply(apply::ApplyArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown only this once).
    Create(CreateKeyArgs),
}

/// How a command failed; the exit code tells scripts which.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input or a broken plugin: exit 1.
    #[error("{0}")]
    Failed(String),
    /// The plugin ran and answered with its own error: exit 2.
    #[error("the plugin answered with an error")]
    PluginDeclined,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::PluginDeclined => 2,
        }
    }
}

/// Runs a parsed command, writing its results to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Plugin(command) => plugin::run(command, cli.cache_dir, out).await,
        Command::Serve(args) => serve::serve(args, cli.cache_dir).await,
        Command::Demo(args) => demo::demo(args, cli.cache_dir, out).await,
        Command::Keys(KeysCommand::Create(args)) => serve::create_key(args, out).await,
        Command::Trust(command) => trust::run(command, out).await,
        Command::Binding(command) => binding::run(command, out).await,
        Command::Apply(args) => apply::run(args, out).await,
    }
}

fn fail(message: impl std::fmt::Display) -> CliError {
    CliError::Failed(message.to_string())
}
