//! What `apply` did, item by item: for people (one line each) and for
//! machines (`--json`).

use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cli::{CliError, fail};

/// What applying one item did (or, in a dry run, would do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Outcome {
    fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Outcome::Created, false) => "created",
            (Outcome::Updated, false) => "updated",
            (Outcome::Created, true) => "would create",
            (Outcome::Updated, true) => "would update",
            (Outcome::Unchanged, _) => "unchanged",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// One applied item.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub file: PathBuf,
    pub outcome: Outcome,
    /// What else there is to say: a journey's version, a plugin not live.
    pub note: Option<String>,
}

impl Change {
    pub fn print(&self, dry_run: bool, out: &mut dyn Write) -> Result<(), CliError> {
        let note = self
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        writeln!(
            out,
            "{:<12} {:<8} {}{note}",
            self.outcome.word(dry_run),
            self.kind,
            self.name
        )
        .map_err(fail)
    }

    fn json(&self) -> Value {
        json!({
            "kind": self.kind,
            "name": self.name,
            "file": self.file.display().to_string(),
            "result": self.outcome.key(),
            "note": self.note,
        })
    }
}

/// The machine-readable report: every change, counts per outcome, and the
/// error that stopped the run, if one did.
pub fn changes_json(changes: &[Change], dry_run: bool, error: Option<&CliError>) -> Value {
    let count = |o: Outcome| changes.iter().filter(|c| c.outcome == o).count();
    json!({
        "dry_run": dry_run,
        "changes": changes.iter().map(Change::json).collect::<Vec<_>>(),
        "created": count(Outcome::Created),
        "updated": count(Outcome::Updated),
        "unchanged": count(Outcome::Unchanged),
        "error": error.map(ToString::to_string),
    })
}
