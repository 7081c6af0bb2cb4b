//! Lifecycle stages and the score thresholds that earn them.

use serde::{Deserialize, Serialize};

/// Score thresholds of the lifecycle stages. `customer` is reached by a
/// `purchase`, never by points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageThresholds {
    pub lead: i64,
    pub mql: i64,
    pub sql: i64,
}

impl Default for StageThresholds {
    fn default() -> Self {
        StageThresholds {
            lead: 10,
            mql: 50,
            sql: 100,
        }
    }
}

/// The lifecycle stages, in order.
pub const STAGES: [&str; 5] = ["subscriber", "lead", "mql", "sql", "customer"];

impl StageThresholds {
    /// The stage a score earns. Stages only move forward here: a falling
    /// score does not demote, that is a decision for people.
    pub fn stage_for(&self, current: &str, score: i64, event_kind: &str) -> String {
        let earned = if event_kind == "purchase" {
            "customer"
        } else if score >= self.sql {
            "sql"
        } else if score >= self.mql {
            "mql"
        } else if score >= self.lead {
            "lead"
        } else {
            "subscriber"
        };
        let rank = |s: &str| STAGES.iter().position(|o| *o == s).unwrap_or(0);
        if rank(earned) > rank(current) {
            earned.to_owned()
        } else {
            current.to_owned()
        }
    }
}
