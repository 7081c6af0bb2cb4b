//! `nachfass apply DIR… --server URL`: makes a server hold the plugins,
//! bindings and journeys kept as files in a repository, so a CI pipeline
//! deploys with one command. The layout:
//!
//! ```text
//! plugins/*.wasm      components (manifest embedded or `<file>.manifest.json`)
//! bindings/*.json     one binding each, as POST /v1/bindings takes it
//! journeys/*.json     one journey definition each, as PUT /v1/journeys/{name} takes it
//! ```
//!
//! Applied in that order (a binding needs its plugin, a journey its
//! channel bindings and segments). Everything is read and checked before
//! the first request, so a broken file changes nothing. Each item is
//! `created`, `updated` or `unchanged`; applying the same files again
//! changes nothing: no upload of an installed build, no rewrite of an
//! equal binding (which would rebuild its segment), no new journey
//! version, and a journey an operator stopped stays stopped. Apply never
//! deletes what the files do not name, and never changes which version of
//! an installed plugin is live, so an operator's rollback stays.

mod files;
mod report;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub use files::LocalBinding;
use files::{Desired, LocalJourney};
pub use report::{Change, Outcome, changes_json};

use super::plugin::server::{LocalPlugin, upload};
use super::remote::{Remote, RemoteArgs, print_json};
use super::{CliError, fail};
use crate::journeys::JourneyDef;
use crate::store::{BindingDef, BindingKind};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Directories holding `plugins/`, `bindings/` and `journeys/`, or
    /// single files inside such folders.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Install new plugin versions without making them live.
    #[arg(long)]
    pub no_activate: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub async fn run(args: ApplyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let desired = Desired::read(&args.paths)?;
    let remote = Remote::new(&args.remote)?;
    let mut changes = Vec::new();
    let result = apply(
        &remote,
        &desired,
        args.dry_run,
        !args.no_activate,
        &mut changes,
        out,
    )
    .await;
    if remote.json {
        print_json(
            out,
            &changes_json(&changes, args.dry_run, result.as_ref().err()),
        )?;
    } else if result.is_ok() {
        let count = |o: Outcome| changes.iter().filter(|c| c.outcome == o).count();
        let (created, updated) = if args.dry_run {
            ("to create", "to update")
        } else {
            ("created", "updated")
        };
        writeln!(
            out,
            "{} {created}, {} {updated}, {} unchanged",
            count(Outcome::Created),
            count(Outcome::Updated),
            count(Outcome::Unchanged)
        )
        .map_err(fail)?;
    }
    result
}

/// Applies plugins, then bindings, then journeys; stops at the first
/// failure (what was applied until then stays applied).
async fn apply(
    remote: &Remote,
    desired: &Desired,
    dry_run: bool,
    activate: bool,
    changes: &mut Vec<Change>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut done = |change: Change, out: &mut dyn Write| {
        if !remote.json {
            change.print(dry_run, out)?;
        }
        changes.push(change);
        Ok::<(), CliError>(())
    };
    if !desired.plugins.is_empty() {
        let installed = server_plugin_hashes(remote).await?;
        for plugin in &desired.plugins {
            done(
                plugin_change(remote, plugin, &installed, dry_run, activate).await?,
                out,
            )?;
        }
    }
    if !desired.bindings.is_empty() {
        let server = server_bindings(remote).await?;
        for local in &desired.bindings {
            done(binding(remote, local, &server, dry_run).await?, out)?;
        }
    }
    for journey in &desired.journeys {
        done(journey_change(remote, journey, dry_run).await?, out)?;
    }
    Ok(())
}

/// Each installed plugin version's component hash: `name` → `version` →
/// sha256 (`None` from a server that does not list hashes).
type Installed = BTreeMap<String, BTreeMap<String, Option<String>>>;

async fn server_plugin_hashes(remote: &Remote) -> Result<Installed, CliError> {
    let answer = remote.get(&["v1", "plugins"]).await?;
    let mut installed = Installed::new();
    for plugin in answer.body["plugins"].as_array().into_iter().flatten() {
        let name = plugin["name"].as_str().unwrap_or_default().to_owned();
        let versions = plugin["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|v| {
                let hash = plugin["sha256"][v].as_str().map(str::to_owned);
                (v.to_owned(), hash)
            })
            .collect();
        installed.insert(name, versions);
    }
    Ok(installed)
}

async fn plugin_change(
    remote: &Remote,
    plugin: &LocalPlugin,
    installed: &Installed,
    dry_run: bool,
    activate: bool,
) -> Result<Change, CliError> {
    let manifest = &plugin.manifest;
    let change = |outcome, note: Option<String>| Change {
        kind: "plugin",
        name: manifest.id(),
        file: plugin.file.clone(),
        outcome,
        note,
    };
    match installed
        .get(&manifest.name)
        .and_then(|versions| versions.get(&manifest.version))
    {
        Some(Some(hash)) if *hash == plugin.sha256 => return Ok(change(Outcome::Unchanged, None)),
        Some(Some(_)) => {
            return Err(fail(format!(
                "{}: {} is installed on the server with different content; a new build needs a new version in its manifest",
                plugin.file.display(),
                manifest.id()
            )));
        }
        // A server that does not list hashes: the upload itself tells.
        Some(None) if dry_run => {
            return Ok(change(
                Outcome::Unchanged,
                Some("installed; content not compared".into()),
            ));
        }
        Some(None) | None => {}
    }
    if dry_run {
        return Ok(change(Outcome::Created, None));
    }
    let answer = upload(remote, plugin, activate).await?;
    let outcome = if answer["result"] == json!("created") {
        Outcome::Created
    } else {
        Outcome::Unchanged
    };
    let note = (outcome == Outcome::Created && answer["live"] != json!(true))
        .then(|| "not live".to_owned());
    Ok(change(outcome, note))
}

/// The server's bindings by name, as the definitions it stores.
pub async fn server_bindings(remote: &Remote) -> Result<BTreeMap<String, BindingDef>, CliError> {
    let answer = remote.get(&["v1", "bindings"]).await?;
    let mut bindings = BTreeMap::new();
    for listed in answer.body["bindings"].as_array().into_iter().flatten() {
        // The listing adds what the server knows beyond the definition.
        let mut def = listed.clone();
        if let Some(fields) = def.as_object_mut() {
            fields.remove("runs");
            fields.remove("paused");
        }
        let def: BindingDef = serde_json::from_value(def).map_err(|e| {
            fail(format!(
                "the server listed a binding this CLI cannot read ({e}); is the CLI as new as the server?"
            ))
        })?;
        bindings.insert(def.name.clone(), def);
    }
    Ok(bindings)
}

/// Creates a binding, changes it to match the file, or leaves it: an
/// equal binding is never rewritten, since a rewrite rebuilds a segment
/// or re-scores every contact.
pub async fn binding(
    remote: &Remote,
    local: &LocalBinding,
    server: &BTreeMap<String, BindingDef>,
    dry_run: bool,
) -> Result<Change, CliError> {
    let def = &local.def;
    let at = |e: CliError| fail(format!("{}: {e}", local.file.display()));
    let outcome = match server.get(&def.name) {
        Some(current) if current.kind != def.kind => {
            return Err(fail(format!(
                "{}: binding {} is a {} on the server and a {} in the file; a binding's kind cannot change: delete it first (`nachfass binding delete {}`)",
                local.file.display(),
                def.name,
                kind_name(current.kind),
                kind_name(def.kind),
                def.name
            )));
        }
        Some(current) if current == def => Outcome::Unchanged,
        Some(_) => Outcome::Updated,
        None => Outcome::Created,
    };
    let body = json!(def);
    let mut note = None;
    if !dry_run {
        let answer = match outcome {
            Outcome::Unchanged => None,
            Outcome::Updated => Some(
                remote
                    .send_json(Method::PUT, &["v1", "bindings", &def.name], &body)
                    .await
                    .map_err(at)?,
            ),
            Outcome::Created => Some(
                remote
                    .send_json(Method::POST, &["v1", "bindings"], &body)
                    .await
                    .map_err(at)?,
            ),
        };
        note = answer.and_then(|a| a.body["task"].as_str().map(|t| format!("task {t}")));
    }
    Ok(Change {
        kind: "binding",
        name: def.name.clone(),
        file: local.file.clone(),
        outcome,
        note,
    })
}

/// `scorer`, `segment`, `channel`: as the JSON spells it.
fn kind_name(kind: BindingKind) -> String {
    json!(kind).as_str().unwrap_or_default().to_owned()
}

/// Saves a journey whose definition differs from the server's latest
/// version. An equal one is not sent at all: saving activates the journey,
/// and apply must not restart one an operator stopped.
async fn journey_change(
    remote: &Remote,
    journey: &LocalJourney,
    dry_run: bool,
) -> Result<Change, CliError> {
    let name = &journey.def.name;
    let change = |outcome, note| Change {
        kind: "journey",
        name: name.clone(),
        file: journey.file.clone(),
        outcome,
        note,
    };
    let current = remote.get_optional(&["v1", "journeys", name]).await?;
    if let Some(current) = &current {
        let latest: Option<JourneyDef> = serde_json::from_value(current["definition"].clone()).ok();
        let version = current["version"].as_i64().unwrap_or_default();
        if latest.as_ref() == Some(&journey.def) {
            return Ok(change(
                Outcome::Unchanged,
                Some(format!("version {version}")),
            ));
        }
        if dry_run {
            return Ok(change(
                Outcome::Updated,
                Some(format!("after version {version}")),
            ));
        }
    } else if dry_run {
        return Ok(change(Outcome::Created, None));
    }
    let answer = remote
        .send_bytes(
            Method::PUT,
            &["v1", "journeys", name],
            &[],
            "application/json",
            journey.bytes.clone(),
        )
        .await
        .map_err(|e| fail(format!("{}: {e}", journey.file.display())))?;
    let version = answer.body["version"].as_i64().unwrap_or_default();
    // The server compares too: 201 is a new version, 200 an equal one.
    let outcome = match (answer.status, &current) {
        (StatusCode::CREATED, None) => Outcome::Created,
        (StatusCode::CREATED, Some(_)) => Outcome::Updated,
        _ => Outcome::Unchanged,
    };
    Ok(change(outcome, Some(format!("version {version}"))))
}
