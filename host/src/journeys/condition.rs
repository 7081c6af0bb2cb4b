//! Conditions on a contact, for branches and scheduled sweeps.

use std::collections::BTreeMap;

use super::definition::Condition;
use crate::model::{Contact, Value};
use crate::scoring::STAGES;

/// What a condition can look at.
pub struct Facts<'a> {
    pub contact: &'a Contact,
    /// When the contact last had each event kind the condition names.
    pub last_events: &'a BTreeMap<String, i64>,
    pub now: i64,
}

pub fn holds(condition: &Condition, facts: &Facts<'_>) -> bool {
    let contact = facts.contact;
    match condition {
        Condition::InSegment(segment) => contact.segments.iter().any(|s| s == segment),
        Condition::ScoreAtLeast(points) => contact.score >= *points,
        Condition::StageAtLeast(stage) => {
            let rank = |s: &str| STAGES.iter().position(|o| *o == s);
            rank(&contact.stage) >= rank(stage)
        }
        Condition::Attribute { name, equals } => match (contact.attributes.get(name), equals) {
            (None | Some(Value::Null), _) => false,
            (Some(_), None) => true,
            (Some(value), Some(wanted)) => value == wanted,
        },
        Condition::HadEvent { kind, within } => facts
            .last_events
            .get(kind)
            .is_some_and(|at| *at > facts.now - within.millis),
        Condition::InactiveFor(span) => {
            facts.now - contact.last_seen_at.unwrap_or(contact.created_at) >= span.millis
        }
        Condition::All(all) => all.iter().all(|c| holds(c, facts)),
        Condition::Any(any) => any.iter().any(|c| holds(c, facts)),
        Condition::Not(c) => !holds(c, facts),
    }
}

/// The event kinds a condition asks about, to look up beforehand.
pub fn event_kinds(condition: &Condition) -> Vec<String> {
    match condition {
        Condition::HadEvent { kind, .. } => vec![kind.clone()],
        Condition::All(all) | Condition::Any(all) => all.iter().flat_map(event_kinds).collect(),
        Condition::Not(c) => event_kinds(c),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_the_contact() {
        let mut contact: Contact = serde_json::from_str(
            r#"{"id":"c","score":60,"stage":"mql","segments":["b2b"],"attributes":{"plan":"pro"},"created_at":0,"last_seen_at":1000}"#,
        )
        .unwrap();
        let last_events = BTreeMap::from([("email.clicked".to_owned(), 5_000)]);
        let facts = Facts {
            contact: &contact,
            last_events: &last_events,
            now: 10_000,
        };
        let check = |json: &str| holds(&serde_json::from_str(json).unwrap(), &facts);
        assert!(check(r#"{"in_segment":"b2b"}"#));
        assert!(!check(r#"{"in_segment":"b2c"}"#));
        assert!(check(r#"{"score_at_least":60}"#));
        assert!(check(r#"{"stage_at_least":"lead"}"#));
        assert!(!check(r#"{"stage_at_least":"sql"}"#));
        assert!(check(r#"{"attribute":{"name":"plan","equals":"pro"}}"#));
        assert!(!check(r#"{"attribute":{"name":"company"}}"#));
        assert!(check(
            r#"{"had_event":{"kind":"email.clicked","within":"10s"}}"#
        ));
        assert!(!check(
            r#"{"had_event":{"kind":"email.clicked","within":"4s"}}"#
        ));
        assert!(check(
            r#"{"all":[{"inactive_for":"9s"},{"not":{"in_segment":"b2c"}}]}"#
        ));
        contact.last_seen_at = Some(2_000);
        let facts = Facts {
            contact: &contact,
            last_events: &last_events,
            now: 10_000,
        };
        assert!(!holds(
            &serde_json::from_str(r#"{"inactive_for":"9s"}"#).unwrap(),
            &facts
        ));
    }
}
