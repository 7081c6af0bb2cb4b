//! The demo mailbox: where the demo's channel plugin (`channels/demo-mailbox`)
//! delivers, so `nachfass demo` shows follow-ups without an SMTP server. It
//! keeps the newest messages in memory, exactly as a recipient would get
//! them (tracked links, open pixel, unsubscribe headers), and what the
//! demo's simulated recipients did with each.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Messages kept; older ones drop out.
const KEPT: usize = 500;

/// A message as the connector delivers it.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    pub idempotency_key: String,
    pub to: String,
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A delivered message in the mailbox.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxMessage {
    pub id: u64,
    /// When it arrived, Unix ms.
    pub at: i64,
    #[serde(flatten)]
    pub message: Delivered,
    /// What the recipient did: `opened`, `clicked`, `purchased`, `unsubscribed`.
    pub actions: Vec<String>,
}

impl MailboxMessage {
    /// Tracked URLs in the message whose path starts with `prefix`
    /// (`/t/o/`, `/t/c/`, `/u/`), in order of appearance.
    pub fn links(&self, prefix: &str) -> Vec<String> {
        let mut found = Vec::new();
        let parts = [Some(&self.message.text), self.message.html.as_ref()];
        for part in parts.into_iter().flatten() {
            let mut rest = part.as_str();
            while let Some(start) = rest.find("http") {
                let candidate = &rest[start..];
                let end = candidate
                    .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '\''))
                    .unwrap_or(candidate.len());
                let url = &candidate[..end];
                let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}"));
                if path.is_some_and(|p| p.starts_with(prefix)) && !found.iter().any(|f| f == url) {
                    found.push(url.to_owned());
                }
                rest = &candidate[end.max(1)..];
            }
        }
        found
    }
}

/// The mailbox of one demo process.
#[derive(Debug)]
pub struct Mailbox {
    token: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    messages: VecDeque<MailboxMessage>,
}

impl Mailbox {
    /// A mailbox that takes deliveries carrying `token`.
    pub fn new(token: impl Into<String>) -> Mailbox {
        Mailbox {
            token: token.into(),
            state: Mutex::default(),
        }
    }

    pub fn accepts(&self, token: &str) -> bool {
        // Not a secret worth a constant-time compare: it only guards a
        // demo mailbox on 127.0.0.1 against stray posts.
        token == self.token
    }

    /// Stores a delivery; a retry of the same message (same idempotency
    /// key) is stored once. Returns the message's id.
    pub fn deliver(&self, message: Delivered, at: i64) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = state
            .messages
            .iter()
            .find(|m| m.message.idempotency_key == message.idempotency_key)
        {
            return existing.id;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.messages.push_back(MailboxMessage {
            id,
            at,
            message,
            actions: Vec::new(),
        });
        if state.messages.len() > KEPT {
            state.messages.pop_front();
        }
        id
    }

    /// Messages newer than `after` (by id), oldest first.
    pub fn since(&self, after: u64) -> Vec<MailboxMessage> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .messages
            .iter()
            .filter(|m| m.id > after)
            .cloned()
            .collect()
    }

    /// The newest `limit` messages, newest first.
    pub fn newest(&self, limit: usize) -> Vec<MailboxMessage> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.messages.iter().rev().take(limit).cloned().collect()
    }

    /// Records what the recipient did with message `id`.
    pub fn note(&self, id: u64, action: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(message) = state.messages.iter_mut().find(|m| m.id == id) {
            message.actions.push(action.to_owned());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn delivered(key: &str) -> Delivered {
        Delivered {
            idempotency_key: key.into(),
            to: "ada@example.com".into(),
            subject: Some("Hallo".into()),
            text: "Los: http://127.0.0.1:8080/t/c/abc.1 und http://x.example/t/c/no\nAbmelden: http://127.0.0.1:8080/u/tok".into(),
            html: Some("<a href=\"http://127.0.0.1:8080/t/c/abc.1\">x</a><img src=\"http://127.0.0.1:8080/t/o/px\">".into()),
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn keeps_one_copy_per_message_and_finds_tracked_links() {
        let mailbox = Mailbox::new("t");
        assert!(mailbox.accepts("t") && !mailbox.accepts("u"));
        let id = mailbox.deliver(delivered("k1"), 1);
        assert_eq!(
            mailbox.deliver(delivered("k1"), 2),
            id,
            "a retry is one message"
        );
        mailbox.deliver(delivered("k2"), 3);
        assert_eq!(mailbox.since(0).len(), 2);
        assert_eq!(mailbox.since(id).len(), 1);
        mailbox.note(id, "opened");
        let first = &mailbox.newest(10)[1];
        assert_eq!(first.actions, ["opened"]);
        assert_eq!(
            first.links("/t/c/"),
            ["http://127.0.0.1:8080/t/c/abc.1", "http://x.example/t/c/no"]
        );
        assert_eq!(first.links("/t/o/"), ["http://127.0.0.1:8080/t/o/px"]);
        assert_eq!(first.links("/u/"), ["http://127.0.0.1:8080/u/tok"]);
    }

    #[test]
    fn keeps_only_the_newest() {
        let mailbox = Mailbox::new("t");
        for i in 0..(KEPT + 5) {
            mailbox.deliver(delivered(&format!("k{i}")), 0);
        }
        let all = mailbox.since(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].id, 6);
    }
}
