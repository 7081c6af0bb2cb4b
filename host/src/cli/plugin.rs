//! `nachfass plugin new | build | check | test | embed-manifest | wit` (and,
//! from `bundle`, `keygen | pack | verify | push | pull`; from `server`,
//! `upload | activate | rollback | list` against a running server).

mod backtest;
mod js;
mod python;
pub(super) mod server;
mod wit;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{CliError, fail};
use crate::model;
use crate::pack;
use crate::runtime::manifest::{self, Manifest};
use crate::runtime::sandbox::LogSink;
use crate::runtime::{Binding, Plugin, Runtime, RuntimeConfig, World};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WorldArg {
    SegmentRule,
    Scorer,
    Channel,
}

impl From<WorldArg> for World {
    fn from(w: WorldArg) -> World {
        match w {
            WorldArg::SegmentRule => World::SegmentRule,
            WorldArg::Scorer => World::Scorer,
            WorldArg::Channel => World::Channel,
        }
    }
}

/// The language of a new plugin project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A crate on nachfass-sdk.
    Rust,
    /// A componentize-py project (manifest in pyproject.toml).
    Python,
    /// An ES module built with componentize-js (manifest in package.json).
    Js,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a plugin project that builds, with a test of its logic.
    New {
        world: WorldArg,
        /// Plugin name: lower-case letters, digits and `-`.
        name: String,
        /// Directory to create the project in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Rust: depend on the nachfass-sdk checkout (or unpacked crate) at
        /// PATH instead of `nachfass-sdk = "0.1"` from crates.io.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin project into one component file with its manifest:
    /// a Rust crate (Cargo.toml), a Python project (pyproject.toml, with
    /// componentize-py) or a JavaScript project (package.json, with
    /// componentize-js).
    Build {
        /// The plugin project's directory.
        dir: PathBuf,
        /// Output file; defaults to `<name>-<version>.wasm` in the project's directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cargo target directory, to share compiled dependencies between plugins.
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Embed a manifest (JSON) into a component built by any toolchain, as
    /// the custom section `nachfass:manifest`.
    EmbedManifest {
        /// The component.
        file: PathBuf,
        /// The manifest JSON; defaults to `<file>.manifest.json`.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Output file; defaults to rewriting `file`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the WIT package this nachfass speaks into DIR, for toolchains
    /// of other languages.
    Wit { dir: PathBuf },
    /// Print a plugin's world, imports, exports and manifest, or why it is unusable.
    Check { file: PathBuf },
    /// Run a plugin once in the real sandbox and print its answer as JSON.
    Test {
        file: PathBuf,
        /// Contact JSON (segment rules and scorers).
        #[arg(long)]
        contact: Option<PathBuf>,
        /// Event JSON: scorers then score this touchpoint (on-event).
        #[arg(long)]
        event: Option<PathBuf>,
        /// Activity summary JSON: a list of {kind, total, last_24_hours, last_30_days, last_at}.
        #[arg(long)]
        activity: Option<PathBuf>,
        /// Message JSON: channels then deliver it.
        #[arg(long)]
        message: Option<PathBuf>,
        /// Binding configuration, `key=value`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Allow outgoing HTTP to `host[:port]`; repeatable.
        #[arg(long = "allow-http", value_name = "HOST[:PORT]")]
        allow_http: Vec<String>,
        /// Evaluation time, Unix epoch milliseconds; defaults to now.
        #[arg(long)]
        now: Option<i64>,
        /// Instruction budget (wasmtime fuel) for the call; defaults to the
        /// world's default, as a binding without limits gets.
        #[arg(long)]
        fuel: Option<u64>,
        /// Add the plugin's log lines to the answer as `"logs"`.
        #[arg(long)]
        logs: bool,
    },
    #[command(flatten)]
    Bundle(super::bundle::BundleCommand),
    #[command(flatten)]
    Server(server::ServerCommand),
}

pub async fn run(
    command: PluginCommand,
    cache_dir: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        PluginCommand::Bundle(command) => super::bundle::run(command, out).await,
        PluginCommand::Server(command) => server::run(command, out).await,
        PluginCommand::New {
            world,
            name,
            dir,
            lang,
            sdk,
        } => new(world.into(), &name, &dir, lang, sdk.as_deref(), out),
        PluginCommand::Build {
            dir,
            out: target,
            target_dir,
        } => build_any(&dir, target, target_dir, out),
        PluginCommand::EmbedManifest {
            file,
            manifest,
            out: target,
        } => embed_manifest(&file, manifest, target, out),
        PluginCommand::Wit { dir } => {
            wit::write(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
            writeln!(
                out,
                "wrote the WIT packages nachfass:plugin@{} to {} (since_v<version>/, each with its deps/; build new plugins against since_v{})",
                manifest::API_VERSIONS.join(", @"),
                dir.display(),
                manifest::API_VERSION
            )
            .map_err(fail)
        }
        PluginCommand::Check { file } => check(&runtime(cache_dir)?, &file, out).await,
        PluginCommand::Test {
            file,
            contact,
            event,
            activity,
            message,
            config,
            allow_http,
            now,
            fuel,
            logs,
        } => {
            let plugin = runtime(cache_dir)?
                .load_file(&file)
                .await
                .map_err(|e| fail(format!("{}: {e}", file.display())))?;
            let mut binding = Binding::new("cli", plugin.manifest().world);
            for pair in config {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| fail(format!("--config `{pair}` is not KEY=VALUE")))?;
                binding.config.insert(key.to_owned(), value.to_owned());
            }
            binding.allow_http = allow_http;
            if let Some(fuel) = fuel {
                binding.limits.fuel = fuel;
            }
            let sink = logs.then(LogSink::default);
            binding.log_sink = sink.clone();
            let inputs = TestInputs {
                contact: contact.map(|p| read_json(&p)).transpose()?,
                event: event.map(|p| read_json(&p)).transpose()?,
                activity: activity
                    .map(|p| read_json(&p))
                    .transpose()?
                    .unwrap_or_default(),
                message: message.map(|p| read_json(&p)).transpose()?,
            };
            let now = now.unwrap_or_else(now_millis);
            test(&plugin, Arc::new(binding), now, inputs, sink, out).await
        }
    }
}

fn runtime(cache_dir: Option<PathBuf>) -> Result<Runtime, CliError> {
    Runtime::new(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    })
    .map_err(|e| fail(format!("cannot start the plugin runtime: {e:#}")))
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))
}

fn print(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(fail)?;
    writeln!(out, "{text}").map_err(fail)
}

struct TestInputs {
    contact: Option<model::Contact>,
    event: Option<model::Event>,
    activity: Vec<model::ActivityCount>,
    message: Option<model::Message>,
}

async fn test(
    plugin: &Plugin,
    binding: Arc<Binding>,
    now: i64,
    inputs: TestInputs,
    logs: Option<LogSink>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let need_contact = || {
        inputs.contact.clone().ok_or_else(|| {
            fail(format!(
                "{} is a {}: pass --contact c.json",
                plugin.id(),
                plugin.manifest().world
            ))
        })
    };
    let (function, answer) = match plugin.manifest().world {
        World::SegmentRule => {
            let contact = need_contact()?;
            let answer = plugin
                .matches(&binding, now, &contact, &inputs.activity)
                .await;
            (
                "matches",
                answer.map(|r| r.map(|b| json!(b)).map_err(|e| json!(e))),
            )
        }
        World::Scorer => {
            let contact = need_contact()?;
            match &inputs.event {
                Some(event) => {
                    let answer = plugin
                        .on_event(&binding, now, &contact, event, &inputs.activity)
                        .await;
                    (
                        "on-event",
                        answer.map(|r| r.map(|c| json!(c)).map_err(|e| json!(e))),
                    )
                }
                None => {
                    let answer = plugin.on_profile(&binding, now, &contact).await;
                    (
                        "on-profile",
                        answer.map(|r| r.map(|c| json!(c)).map_err(|e| json!(e))),
                    )
                }
            }
        }
        World::Channel => match &inputs.message {
            Some(message) => {
                let answer = plugin.deliver(&binding, now, message).await;
                (
                    "deliver",
                    answer.map(|r| r.map(|d| json!(d)).map_err(|e| json!(e))),
                )
            }
            None => {
                let answer = plugin.describe(&binding, now).await;
                ("describe", answer.map(|info| Ok(json!(info))))
            }
        },
    };
    let logs = logs.map(|sink| {
        sink.lines()
            .into_iter()
            .map(|(level, message)| json!({ "level": level, "message": message }))
            .collect::<Vec<_>>()
    });
    let answer = match answer {
        Ok(answer) => answer,
        // A trap or a limit: the log lines before it help most.
        Err(e) => {
            if let Some(logs) = &logs {
                print(
                    out,
                    &json!({ "plugin": plugin.id(), "function": function, "logs": logs }),
                )?;
            }
            return Err(fail(e));
        }
    };
    let declined = answer.is_err();
    let result = match answer {
        Ok(value) => json!({ "ok": value }),
        Err(error) => json!({ "error": error }),
    };
    // One call ran: the last call's fuel is this call's.
    let fuel = plugin.stats().last_fuel.load(Ordering::Relaxed);
    let mut report =
        json!({ "plugin": plugin.id(), "function": function, "result": result, "fuel": fuel });
    if let Some(logs) = logs {
        report["logs"] = json!(logs);
    }
    print(out, &report)?;
    if declined {
        Err(CliError::PluginDeclined)
    } else {
        Ok(())
    }
}

async fn check(runtime: &Runtime, file: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let plugin = runtime
        .load_file(file)
        .await
        .map_err(|e| fail(format!("{} is unusable: {e}", file.display())))?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or_default();
    print(
        out,
        &json!({
            "plugin": plugin.id(),
            "world": plugin.manifest().world,
            "api": plugin.api(),
            "sha256": plugin.hash(),
            "bytes": size,
            "imports": plugin.imports(),
            "exports": plugin.exports(),
            "manifest": plugin.manifest(),
        }),
    )
}

/// `plugin build`: by the project file in `dir`, a Rust crate, a Python
/// or a JavaScript project.
fn build_any(
    dir: &Path,
    target: Option<PathBuf>,
    target_dir: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let built = if dir.join("Cargo.toml").is_file() {
        return build(dir, target, target_dir, out);
    } else if dir.join("pyproject.toml").is_file() {
        python::build(dir, target)?
    } else if dir.join("package.json").is_file() {
        js::build(dir, target)?
    } else {
        return Err(fail(format!(
            "{} has no Cargo.toml, pyproject.toml or package.json: not a plugin project",
            dir.display()
        )));
    };
    writeln!(out, "{} → {}", built.0, built.1.display()).map_err(fail)
}

/// `nachfass:plugin/<world>@<api>`, the world's full WIT name in the
/// version componentize-py and componentize-js build against (the first:
/// their plugins implement `on-event` only, and the host batches them on
/// one instance all the same).
fn world_id(world: World) -> String {
    format!("nachfass:plugin/{world}@{}", manifest::API_VERSION_0_1)
}

fn embed_manifest(
    file: &Path,
    manifest_file: Option<PathBuf>,
    target: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let manifest_file = manifest_file.unwrap_or_else(|| manifest::sidecar_path(file));
    let json = std::fs::read(&manifest_file)
        .map_err(|e| fail(format!("{}: {e}", manifest_file.display())))?;
    let manifest = Manifest::from_json(&json)
        .map_err(|e| fail(format!("{}: {e}", manifest_file.display())))?;
    let target = target.unwrap_or_else(|| file.to_path_buf());
    pack::pack(file, &manifest, &target).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    writeln!(out, "{} → {}", manifest.id(), target.display()).map_err(fail)
}

fn build(
    dir: &Path,
    target: Option<PathBuf>,
    target_dir: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let manifest = pack::manifest_from_crate(dir).map_err(fail)?;
    let mut cargo = Process::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .stderr(std::process::Stdio::inherit());
    if let Some(target_dir) = target_dir {
        cargo.arg("--target-dir").arg(target_dir);
    }
    let output = cargo
        .output()
        .map_err(|e| fail(format!("cannot run cargo: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "cargo build failed for {}; is the target installed? `rustup target add wasm32-wasip2`",
            dir.display()
        )));
    }
    let component = component_artifact(&output.stdout, &manifest.name).ok_or_else(|| {
        fail(format!(
            "cargo built no .wasm for `{}`; is its crate-type cdylib?",
            manifest.name
        ))
    })?;
    let target =
        target.unwrap_or_else(|| dir.join(format!("{}-{}.wasm", manifest.name, manifest.version)));
    pack::pack(&component, &manifest, &target).map_err(fail)?;
    writeln!(out, "{} → {}", manifest.id(), target.display()).map_err(fail)
}

/// The `.wasm` cargo reported for package `name` in its JSON messages.
fn component_artifact(messages: &[u8], name: &str) -> Option<PathBuf> {
    let lib_name = name.replace('-', "_");
    String::from_utf8_lossy(messages)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == lib_name.as_str())
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}

fn new(
    world: World,
    name: &str,
    dir: &Path,
    lang: Lang,
    sdk: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        return Err(fail(format!(
            "`{name}` is not a valid plugin name: use lower-case letters, digits and `-`"
        )));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(fail(format!("{} already exists", root.display())));
    }
    if sdk.is_some() && lang != Lang::Rust {
        return Err(fail("--sdk is for Rust plugins only"));
    }
    let next = |out: &mut dyn Write, extra: &str| {
        writeln!(
            out,
            "created {}\nnext: {extra}nachfass plugin build {}",
            root.display(),
            root.display()
        )
        .map_err(fail)
    };
    match lang {
        Lang::Rust => {}
        Lang::Python => {
            python::scaffold(world, name, &root)?;
            return next(out, "");
        }
        Lang::Js => {
            js::scaffold(world, name, &root)?;
            return next(out, &format!("(cd {} && npm install) && ", root.display()));
        }
    }
    // The published SDK by default, so the crate builds anywhere; a path
    // only when asked for (a checkout, or before the SDK is published).
    let sdk_dep = match sdk {
        Some(path) => {
            let path = path
                .canonicalize()
                .map_err(|e| fail(format!("--sdk {}: {e}", path.display())))?;
            if !path.join("Cargo.toml").is_file() {
                return Err(fail(format!(
                    "--sdk {}: no Cargo.toml there; point it at the nachfass-sdk crate",
                    path.display()
                )));
            }
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => {
            let version = semver::Version::parse(env!("CARGO_PKG_VERSION"))
                .map(|v| format!("{}.{}", v.major, v.minor))
                .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_owned());
            format!("\"{version}\"")
        }
    };
    std::fs::create_dir_all(root.join("src")).map_err(fail)?;
    let reads_hint = match world {
        World::Channel => "",
        World::SegmentRule | World::Scorer => {
            "# The parts of a contact it reads (contact-points, attributes, segments,\n\
             # activity): the host hands it nothing else. Without `reads`, all of them.\n\
             # reads = [\"contact-points\"]\n"
        }
    };
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A nachfass {world}"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
nachfass-sdk = {sdk_dep}

[package.metadata.nachfass]
world = "{world}"
config = []
{reads_hint}
# Built on its own, not as part of an enclosing workspace.
[workspace]
"#
    );
    let type_name = type_name(name);
    let body = match world {
        World::SegmentRule => format!(
            r#"use nachfass_sdk::*;

pub struct {type_name};

impl SegmentRule for {type_name} {{
    fn matches(_ctx: &Ctx, contact: &Contact, _activity: &[ActivityCount]) -> Result<bool, PluginError> {{
        Ok(contact.email.is_some())
    }}
}}

export_segment_rule!({type_name});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {{
    use super::*;
    use nachfass_sdk::testing::TestHost;

    #[test]
    fn contacts_with_email_match() {{
        let ctx = TestHost::new().ctx();
        assert!({type_name}::matches(&ctx, &Contact::new("c").with_email("a@b.example"), &[]).unwrap());
        assert!(!{type_name}::matches(&ctx, &Contact::new("c"), &[]).unwrap());
    }}
}}
"#
        ),
        World::Scorer => format!(
            r#"use nachfass_sdk::*;

pub struct {type_name};

impl Scorer for {type_name} {{
    fn on_event(ctx: &Ctx, _contact: &Contact, event: &Event, _activity: &[ActivityCount]) -> Result<ScoreChange, PluginError> {{
        let points: i64 = ctx.config_or("points", 5)?;
        let mut change = ScoreChange::none();
        if event.kind == "download" {{
            change.add(points, format!("download {{points:+}}"));
            ctx.log(Level::Debug, &format!("{{}} scored {{points}}", event.id));
        }}
        Ok(change)
    }}
}}

export_scorer!({type_name});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {{
    use super::*;
    use nachfass_sdk::testing::TestHost;

    #[test]
    fn downloads_score() {{
        let ctx = TestHost::new().config("points", "7").ctx();
        let change = {type_name}::on_event(&ctx, &Contact::new("c"), &Event::new("download", 0), &[]).unwrap();
        assert_eq!(change.delta, 7);
    }}
}}
"#
        ),
        World::Channel => format!(
            r#"use nachfass_sdk::http::Request;
use nachfass_sdk::*;

pub struct {type_name};

impl Channel for {type_name} {{
    fn describe() -> ChannelInfo {{
        ChannelInfo {{ kind: ChannelKind::Webhook, provider: "{name}".to_owned() }}
    }}

    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError> {{
        let url: String = ctx.config_required("url").map_err(|e| SendError::Permanent(e.message))?;
        let request = Request::post(&url)
            .header("Idempotency-Key", &message.idempotency_key)
            .body(message.text.clone());
        match ctx.http(&request) {{
            Ok(response) if response.status < 300 => Ok(Delivery {{ provider_id: None }}),
            Ok(response) => Err(SendError::Transient(format!("answered {{}}", response.status))),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }}
    }}
}}

export_channel!({type_name});
"#
        ),
    };
    std::fs::write(root.join("Cargo.toml"), cargo_toml).map_err(fail)?;
    std::fs::write(root.join("src/lib.rs"), body).map_err(fail)?;
    next(out, "")
}

/// `download-points` → `DownloadPoints`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}
