//! Printing replays and backtests for `nachfass plugin replay | backtest`.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::cli::remote::{Remote, print_json};
use crate::cli::{CliError, fail};

/// One line per replayed event; a `!=` line where live stored otherwise.
pub fn print_replay(remote: &Remote, replay: &Value, out: &mut dyn Write) -> Result<(), CliError> {
    if remote.json {
        return print_json(out, replay);
    }
    writeln!(
        out,
        "{} replayed with {} for contact {}",
        replay["binding"].as_str().unwrap_or("?"),
        replay["plugin"].as_str().unwrap_or("?"),
        replay["contact_id"].as_str().unwrap_or("?"),
    )
    .map_err(fail)?;
    for step in replay["steps"].as_array().into_iter().flatten() {
        let reasons: Vec<&str> = step["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        writeln!(
            out,
            "{}\t{}\t{:+}\t[{}]\tscore {}\t{}",
            step["at"],
            step["kind"].as_str().unwrap_or("?"),
            step["delta"].as_i64().unwrap_or(0),
            reasons.join("; "),
            step["score"],
            step["stage"].as_str().unwrap_or("?"),
        )
        .map_err(fail)?;
        if let Some(error) = step["error"].as_str() {
            writeln!(out, "\t! {error}").map_err(fail)?;
        }
        if step["matches"] == Value::Bool(false) {
            writeln!(
                out,
                "\t!= stored {:+} {}",
                step["stored_delta"].as_i64().unwrap_or(0),
                step["stored_reasons"]
            )
            .map_err(fail)?;
        }
    }
    let verdict = if replay["matches_stored"] == Value::Bool(true) {
        "equals the stored score history".to_owned()
    } else {
        format!(
            "differs from the stored history (stored score {}, stage {})",
            replay["stored_score"],
            replay["stored_stage"].as_str().unwrap_or("?")
        )
    };
    writeln!(out, "{verdict}").map_err(fail)
}

/// Prints the queued backtest, or with `wait` polls until it is done and
/// prints its report.
pub async fn follow(
    remote: &Remote,
    mut backtest: Value,
    wait: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id = backtest["id"].as_str().unwrap_or_default().to_owned();
    while wait && backtest["done"] != Value::Bool(true) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        backtest = remote.get(&["v1", "backtests", &id]).await?.body;
    }
    if remote.json {
        return print_json(out, &backtest);
    }
    if !wait {
        return writeln!(
            out,
            "backtest {id} queued; follow it with GET /v1/backtests/{id} (or --wait)"
        )
        .map_err(fail);
    }
    if let Some(error) = backtest["error"].as_str() {
        return Err(fail(format!("backtest {id} could not run: {error}")));
    }
    let report = &backtest["report"];
    writeln!(
        out,
        "backtest {id}: {} contacts, {} events; {} scores changed",
        report["contacts"], report["events"], report["scores"]["changed"]
    )
    .map_err(fail)?;
    writeln!(out, "score\tlive\tcandidate").map_err(fail)?;
    for bucket in report["scores"]["buckets"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{}\t{}\t{}",
            bucket["label"].as_str().unwrap_or("?"),
            bucket["live"],
            bucket["candidate"]
        )
        .map_err(fail)?;
    }
    for stage in ["mql", "sql"] {
        let s = &report[stage];
        writeln!(
            out,
            "{stage}: live {}, candidate {}; earlier {}, later {}, never {}, new {}",
            s["live_reached"],
            s["candidate_reached"],
            s["earlier"],
            s["later"],
            s["never"],
            s["new"]
        )
        .map_err(fail)?;
    }
    let o = &report["outcomes"];
    for side in ["live", "candidate"] {
        writeln!(
            out,
            "{side}: {} ranked, {} reached a goal; precision {}, recall {}",
            o[side]["ranked"], o[side]["converted"], o[side]["precision"], o[side]["recall"]
        )
        .map_err(fail)?;
    }
    writeln!(out, "lift (candidate precision / live): {}", o["lift"]).map_err(fail)
}
