//! `nachfass plugin upload | activate | rollback | list --server URL`: the
//! plugins of a running cluster, through its API.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::remote::{Remote, RemoteArgs, print_json};
use crate::cli::{CliError, fail};
use crate::runtime::cache::content_hash;
use crate::runtime::manifest::{self, Manifest};

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Upload a plugin to a server: compiled, type-checked, stored for
    /// every node and (unless --no-activate) made live. Uploading the same
    /// build again changes nothing.
    Upload {
        /// A component with its manifest embedded, a signed bundle, or a
        /// component with `<file>.manifest.json` beside it.
        file: PathBuf,
        /// The manifest JSON, if neither embedded nor beside the file.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Install the version but leave the live one live.
        #[arg(long)]
        no_activate: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Make an installed version of a plugin live on every node.
    Activate {
        name: String,
        version: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Make the previous live version of a plugin live again.
    Rollback {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List a server's plugins: live, previous and installed versions.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Replay one contact's stored events through a scorer binding (its
    /// live version, or --version) and print each step: event, change,
    /// reasons, score and stage after, and whether it equals what live
    /// scoring stored.
    Replay {
        #[arg(long)]
        contact: String,
        #[arg(long)]
        binding: String,
        /// An installed version of the binding's plugin.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Backtest an installed version of a scorer plugin against the stored
    /// history beside the live one; nothing live changes.
    Backtest {
        name: String,
        version: String,
        /// A scorer binding of the plugin (repeatable); default all.
        #[arg(long = "binding")]
        bindings: Vec<String>,
        /// Unix epoch milliseconds, inclusive; default 90 days before --to.
        #[arg(long)]
        from: Option<i64>,
        /// Unix epoch milliseconds, exclusive; default now.
        #[arg(long)]
        to: Option<i64>,
        /// An event kind that counts as an outcome (repeatable); default
        /// purchase and demo.booked.
        #[arg(long = "goal")]
        goals: Vec<String>,
        /// Days after reaching MQL within which a goal counts.
        #[arg(long)]
        window_days: Option<u32>,
        /// Wait for the report and print it.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

pub async fn run(command: ServerCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ServerCommand::Upload {
            file,
            manifest,
            no_activate,
            remote,
        } => {
            let remote = Remote::new(&remote)?;
            let local = LocalPlugin::read(&file, manifest.as_deref())?;
            let answer = upload(&remote, &local, !no_activate).await?;
            if remote.json {
                return print_json(out, &answer);
            }
            let result = answer["result"].as_str().unwrap_or_default();
            let live = if answer["live"] == json!(true) {
                "live".to_owned()
            } else {
                format!(
                    "not live (make it live with `nachfass plugin activate {} {}`)",
                    local.manifest.name, local.manifest.version
                )
            };
            writeln!(out, "{} {result}, {live}", local.manifest.id()).map_err(fail)
        }
        ServerCommand::Activate {
            name,
            version,
            remote,
        } => {
            let remote = Remote::new(&remote)?;
            let answer = remote
                .send_json(
                    Method::POST,
                    &["v1", "plugins", &name, "activate"],
                    &json!({ "version": version }),
                )
                .await?;
            print_live(&remote, &answer.body, out)
        }
        ServerCommand::Rollback { name, remote } => {
            let remote = Remote::new(&remote)?;
            let answer = remote
                .call(Method::POST, &["v1", "plugins", &name, "rollback"])
                .await?;
            print_live(&remote, &answer.body, out)
        }
        ServerCommand::Replay {
            contact,
            binding,
            version,
            remote,
        } => {
            let remote = Remote::new(&remote)?;
            let mut query = vec![("binding", binding.as_str())];
            if let Some(version) = &version {
                query.push(("version", version.as_str()));
            }
            let answer = remote
                .get_query(&["v1", "contacts", &contact, "replay"], &query)
                .await?;
            super::backtest::print_replay(&remote, &answer.body, out)
        }
        ServerCommand::Backtest {
            name,
            version,
            bindings,
            from,
            to,
            goals,
            window_days,
            wait,
            remote,
        } => {
            let remote = Remote::new(&remote)?;
            let mut body =
                json!({ "version": version, "from": from, "to": to, "window_days": window_days });
            if !bindings.is_empty() {
                body["bindings"] = json!(bindings);
            }
            if !goals.is_empty() {
                body["goal_events"] = json!(goals);
            }
            if let Some(map) = body.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            let answer = remote
                .send_json(Method::POST, &["v1", "plugins", &name, "backtests"], &body)
                .await?;
            super::backtest::follow(&remote, answer.body, wait, out).await
        }
        ServerCommand::List { remote } => {
            let remote = Remote::new(&remote)?;
            let answer = remote.get(&["v1", "plugins"]).await?;
            if remote.json {
                return print_json(out, &answer.body);
            }
            let plugins = answer.body["plugins"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if plugins.is_empty() {
                return writeln!(out, "no plugins installed").map_err(fail);
            }
            for plugin in plugins {
                let versions: Vec<&str> = plugin["versions"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let previous = plugin["previous"]
                    .as_str()
                    .map(|p| format!(", previous {p}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}\t{}\tlive {}{previous}\tinstalled {}",
                    plugin["name"].as_str().unwrap_or_default(),
                    plugin["world"].as_str().unwrap_or_default(),
                    plugin["live"].as_str().unwrap_or_default(),
                    versions.join(", "),
                )
                .map_err(fail)?;
            }
            Ok(())
        }
    }
}

fn print_live(remote: &Remote, answer: &Value, out: &mut dyn Write) -> Result<(), CliError> {
    if remote.json {
        return print_json(out, answer);
    }
    writeln!(out, "{} is live", answer["live"].as_str().unwrap_or("?")).map_err(fail)
}

/// A plugin file ready to upload: one component with its manifest
/// embedded, so the server stores exactly what was hashed here.
pub struct LocalPlugin {
    pub file: PathBuf,
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl LocalPlugin {
    /// Reads a plugin file; a manifest given (or beside the file) is
    /// embedded, replacing one inside. A signed bundle is sent as it is.
    pub fn read(file: &Path, manifest_file: Option<&Path>) -> Result<LocalPlugin, CliError> {
        let at = |e: &dyn std::fmt::Display| fail(format!("{}: {e}", file.display()));
        let bytes = std::fs::read(file).map_err(|e| at(&e))?;
        let embedded = manifest::read_section(&bytes, manifest::SECTION_NAME)
            .map_err(|e| at(&e))?
            .is_some();
        let (manifest, bytes) = match manifest_file {
            None if embedded => {
                let manifest = Manifest::for_file(file, &bytes).map_err(|e| at(&e))?;
                (manifest, bytes)
            }
            given => {
                let path = given.map_or_else(|| manifest::sidecar_path(file), Path::to_path_buf);
                let json = std::fs::read(&path).map_err(|e| {
                    fail(format!(
                        "{}: no embedded manifest, and {}: {e}; pass --manifest, or build with `nachfass plugin build`",
                        file.display(),
                        path.display()
                    ))
                })?;
                let manifest = Manifest::from_json(&json)
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                let bytes = manifest::embed(&bytes, &manifest).map_err(|e| at(&e))?;
                (manifest, bytes)
            }
        };
        Ok(LocalPlugin {
            file: file.to_path_buf(),
            sha256: content_hash(&bytes),
            manifest,
            bytes,
        })
    }
}

/// Uploads a plugin; the server's answer with `"result"`: `created` for a
/// new version, `unchanged` when this build was installed already.
pub async fn upload(
    remote: &Remote,
    plugin: &LocalPlugin,
    activate: bool,
) -> Result<Value, CliError> {
    let activate = if activate { "true" } else { "false" };
    let answer = remote
        .send_bytes(
            Method::POST,
            &["v1", "plugins"],
            &[("activate", activate)],
            "application/wasm",
            plugin.bytes.clone(),
        )
        .await
        .map_err(|e| fail(format!("{}: {e}", plugin.file.display())))?;
    let mut body = answer.body;
    body["result"] = json!(if answer.status == StatusCode::CREATED {
        "created"
    } else {
        "unchanged"
    });
    Ok(body)
}
