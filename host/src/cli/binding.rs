//! `nachfass binding list | put | delete --server URL`: a running
//! cluster's bindings, through its API. Bindings are their own resource
//! (`/v1/bindings`), not part of a plugin: one plugin serves several
//! bindings, each with its own configuration, pin and limits.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;

use super::apply::{self, Change};
use super::remote::{Remote, RemoteArgs, print_json};
use super::{CliError, fail};

#[derive(Debug, Subcommand)]
pub enum BindingCommand {
    /// List a server's bindings with the plugin version each runs.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Create a binding from a JSON file, or change it to match the file;
    /// a file that matches the server changes nothing.
    Put {
        /// `{"name", "kind", "plugin", "version"?, "config"?, "allow_http"?, "limits"?}`.
        file: PathBuf,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Delete a binding (a segment's members go with it).
    Delete {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

pub async fn run(command: BindingCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        BindingCommand::List { remote } => {
            let remote = Remote::new(&remote)?;
            let answer = remote.get(&["v1", "bindings"]).await?;
            if remote.json {
                return print_json(out, &answer.body);
            }
            let bindings = answer.body["bindings"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if bindings.is_empty() {
                return writeln!(out, "no bindings").map_err(fail);
            }
            for binding in bindings {
                let pin = binding["version"]
                    .as_str()
                    .map(|v| format!(" (pinned {v})"))
                    .unwrap_or_default();
                let paused = binding["paused"]
                    .as_str()
                    .map(|why| format!("\tpaused: {why}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}\t{}\t{}{pin}\truns {}{paused}",
                    binding["name"].as_str().unwrap_or_default(),
                    binding["kind"].as_str().unwrap_or_default(),
                    binding["plugin"].as_str().unwrap_or_default(),
                    binding["runs"]
                        .as_str()
                        .unwrap_or("nothing (no fitting version)"),
                )
                .map_err(fail)?;
            }
            Ok(())
        }
        BindingCommand::Put {
            file,
            dry_run,
            remote,
        } => {
            let remote = Remote::new(&remote)?;
            let local = apply::LocalBinding::read(&file)?;
            let server = apply::server_bindings(&remote).await?;
            let change = apply::binding(&remote, &local, &server, dry_run).await?;
            report(&remote, &[change], dry_run, out)
        }
        BindingCommand::Delete { name, remote } => {
            let remote = Remote::new(&remote)?;
            remote
                .call(Method::DELETE, &["v1", "bindings", &name])
                .await?;
            if remote.json {
                return print_json(out, &serde_json::json!({ "deleted": name }));
            }
            writeln!(out, "binding {name} deleted").map_err(fail)
        }
    }
}

fn report(
    remote: &Remote,
    changes: &[Change],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if remote.json {
        return print_json(out, &apply::changes_json(changes, dry_run, None));
    }
    for change in changes {
        change.print(dry_run, out)?;
    }
    Ok(())
}
