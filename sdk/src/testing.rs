//! Run a plugin natively in a unit test, with a host you control.
//!
//! ```
//! use nachfass_sdk::testing::{DAY, TestHost};
//! use nachfass_sdk::*;
//!
//! struct Dormant;
//! impl SegmentRule for Dormant {
//!     fn matches(ctx: &Ctx, contact: &Contact, _: &[ActivityCount]) -> Result<bool, PluginError> {
//!         let days: i64 = ctx.config_or("days", 30)?;
//!         Ok(contact.last_seen_at.is_some_and(|seen| ctx.now() - seen >= days * DAY))
//!     }
//! }
//!
//! let host = TestHost::new().config("days", "30").now(DAY * 100);
//! let contact = Contact::new("c1").with_last_seen_at(DAY * 10);
//! assert!(Dormant::matches(&host.ctx(), &contact, &[]).unwrap());
//! assert!(!Dormant::matches(&host.ctx(), &Contact::new("c2").with_last_seen_at(DAY * 90), &[]).unwrap());
//! ```
//!
//! The server hands a segment rule or scorer only the parts of a contact
//! its manifest `reads`. `TestHost::new()` reads them from the Cargo.toml
//! of the crate under test, and its call helpers ([`TestHost::matches`],
//! [`TestHost::on_event`], ...) hand the plugin the same, so a test that
//! passes reads only what the server would give:
//!
//! ```
//! use nachfass_sdk::testing::TestHost;
//! use nachfass_sdk::*;
//!
//! struct HasEmail;
//! impl SegmentRule for HasEmail {
//!     fn matches(_: &Ctx, contact: &Contact, _: &[ActivityCount]) -> Result<bool, PluginError> {
//!         Ok(contact.email.is_some())
//!     }
//! }
//!
//! let contact = Contact::new("c1").with_email("ada@acme.example");
//! assert!(TestHost::new().reads(&["contact-points"]).matches::<HasEmail>(&contact, &[]).unwrap());
//! // Declared without `contact-points`, the rule never sees the email.
//! assert!(!TestHost::new().reads(&["attributes"]).matches::<HasEmail>(&contact, &[]).unwrap());
//! ```
//!
//! To run the built component in the real sandbox instead, use
//! `nachfass plugin test <file.wasm> --contact c.json`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

#[cfg(test)]
use crate::Value;
use crate::http::{HttpError, Request, Response};
use crate::{
    ActivityCount, Contact, Ctx, Event, Level, MailError, PluginError, RuleInput, ScoreChange,
    Scorer, ScorerInput, SegmentRule,
};

/// One day in milliseconds, for building timestamps in tests.
pub const DAY: i64 = 24 * 60 * 60 * 1000;

type Responder = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;
type MailResponder = Box<dyn FnMut(&SentMail) -> Result<String, MailError>>;

/// A message a plugin handed to `Ctx::mail` in a test.
#[derive(Clone, Debug, PartialEq)]
pub struct SentMail {
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

impl SentMail {
    /// The message as text (it is 7-bit or UTF-8 in practice).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }
}

pub(crate) struct TestState {
    pub(crate) config: RefCell<BTreeMap<String, String>>,
    pub(crate) now: Cell<i64>,
    pub(crate) logs: RefCell<Vec<(Level, String)>>,
    requests: RefCell<Vec<Request>>,
    responder: RefCell<Option<Responder>>,
    mails: RefCell<Vec<SentMail>>,
    mail_responder: RefCell<Option<MailResponder>>,
    /// The parts of a contact handed to the plugin; `None` is all of them.
    reads: RefCell<Option<Vec<String>>>,
}

impl TestState {
    pub(crate) fn answer_mail(
        &self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<String, MailError> {
        let mail = SentMail {
            sender: sender.to_owned(),
            recipients: recipients.to_vec(),
            message: message.to_vec(),
        };
        self.mails.borrow_mut().push(mail.clone());
        match self.mail_responder.borrow_mut().as_mut() {
            Some(respond) => respond(&mail),
            None => Ok("250 OK (TestHost)".to_owned()),
        }
    }

    pub(crate) fn answer_http(&self, request: &Request) -> Result<Response, HttpError> {
        self.requests.borrow_mut().push(request.clone());
        match self.responder.borrow_mut().as_mut() {
            Some(respond) => respond(request),
            None => Err(HttpError::Denied(
                "this TestHost has no HTTP responder".into(),
            )),
        }
    }
}

/// A host for native tests: configuration, a fixed clock, a captured log
/// and an HTTP responder. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct TestHost(Rc<TestState>);

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

/// The parts of a contact a manifest's `reads` may name.
const PARTS: [&str; 4] = ["contact-points", "attributes", "segments", "activity"];

/// The `reads` of `[package.metadata.nachfass]` in the Cargo.toml of the
/// crate under test (cargo sets `CARGO_MANIFEST_DIR` for its tests); `None`
/// without one, as the server hands such a plugin the whole contact.
#[cfg(not(target_family = "wasm"))]
fn reads_of_this_crate() -> Option<Vec<String>> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let path = std::path::Path::new(&dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).ok()?;
    let manifest: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()));
    let reads = manifest
        .get("package")?
        .get("metadata")?
        .get("nachfass")?
        .get("reads")?;
    let parts: Vec<String> = reads
        .as_array()
        .and_then(|parts| {
            parts
                .iter()
                .map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| panic!("`reads` in {} must be a list of names", path.display()));
    Some(checked(parts))
}

/// Tests run natively; a component has no crate to read.
#[cfg(target_family = "wasm")]
fn reads_of_this_crate() -> Option<Vec<String>> {
    None
}

#[track_caller]
fn checked(parts: Vec<String>) -> Vec<String> {
    if let Some(unknown) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        panic!(
            "`reads` names `{unknown}`, which is not a part of a contact; the parts are {}",
            PARTS.join(", ")
        );
    }
    parts
}

impl TestHost {
    /// A host without configuration, at time 0, that hands plugins the
    /// parts of a contact the crate under test `reads` (from its
    /// Cargo.toml; the whole contact if it names none).
    pub fn new() -> TestHost {
        TestHost(Rc::new(TestState {
            config: RefCell::new(BTreeMap::new()),
            now: Cell::new(0),
            logs: RefCell::new(Vec::new()),
            requests: RefCell::new(Vec::new()),
            responder: RefCell::new(None),
            mails: RefCell::new(Vec::new()),
            mail_responder: RefCell::new(None),
            reads: RefCell::new(reads_of_this_crate()),
        }))
    }

    /// Hands plugins only these parts of a contact (`contact-points`,
    /// `attributes`, `segments`, `activity`), as the server does for a
    /// manifest with this `reads`, whatever the crate's Cargo.toml says.
    #[track_caller]
    pub fn reads(self, parts: &[&str]) -> TestHost {
        let parts = parts.iter().map(|p| (*p).to_owned()).collect();
        *self.0.reads.borrow_mut() = Some(checked(parts));
        self
    }

    fn hands(&self, part: &str) -> bool {
        self.0
            .reads
            .borrow()
            .as_ref()
            .is_none_or(|parts| parts.iter().any(|p| p == part))
    }

    /// `contact` as the server hands it to the plugin: the parts it does
    /// not read are empty.
    pub fn handed(&self, contact: &Contact) -> Contact {
        let mut handed = contact.clone();
        if !self.hands("contact-points") {
            (handed.email, handed.phone) = (None, None);
        }
        if !self.hands("attributes") {
            handed.attributes.clear();
        }
        if !self.hands("segments") {
            handed.segments.clear();
        }
        handed
    }

    /// `activity` as the server hands it: none unless the plugin reads it.
    pub fn handed_activity(&self, activity: &[ActivityCount]) -> Vec<ActivityCount> {
        if self.hands("activity") {
            activity.to_vec()
        } else {
            Vec::new()
        }
    }

    /// [`SegmentRule::matches`] with what the server would hand `R`.
    pub fn matches<R: SegmentRule>(
        &self,
        contact: &Contact,
        activity: &[ActivityCount],
    ) -> Result<bool, PluginError> {
        R::matches(
            &self.ctx(),
            &self.handed(contact),
            &self.handed_activity(activity),
        )
    }

    /// [`SegmentRule::matches_batch`] with what the server would hand `R`.
    pub fn matches_batch<R: SegmentRule>(
        &self,
        items: &[RuleInput],
    ) -> Result<Vec<bool>, PluginError> {
        let handed: Vec<RuleInput> = items
            .iter()
            .map(|i| RuleInput::new(self.handed(&i.contact), self.handed_activity(&i.activity)))
            .collect();
        R::matches_batch(&self.ctx(), &handed)
    }

    /// [`Scorer::on_event`] with what the server would hand `S`.
    pub fn on_event<S: Scorer>(
        &self,
        contact: &Contact,
        event: &Event,
        activity: &[ActivityCount],
    ) -> Result<ScoreChange, PluginError> {
        S::on_event(
            &self.ctx(),
            &self.handed(contact),
            event,
            &self.handed_activity(activity),
        )
    }

    /// [`Scorer::on_event_batch`] with what the server would hand `S`.
    pub fn on_event_batch<S: Scorer>(
        &self,
        items: &[ScorerInput],
    ) -> Result<Vec<Result<ScoreChange, PluginError>>, PluginError> {
        let handed: Vec<ScorerInput> = items
            .iter()
            .map(|i| {
                ScorerInput::new(
                    self.handed(&i.contact),
                    i.event.clone(),
                    self.handed_activity(&i.activity),
                )
            })
            .collect();
        S::on_event_batch(&self.ctx(), &handed)
    }

    /// [`Scorer::on_profile`] with what the server would hand `S`.
    pub fn on_profile<S: Scorer>(&self, contact: &Contact) -> Result<ScoreChange, PluginError> {
        S::on_profile(&self.ctx(), &self.handed(contact))
    }

    /// Sets a configuration value, as a binding would.
    pub fn config(self, key: &str, value: &str) -> TestHost {
        self.0
            .config
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the evaluation time (Unix epoch milliseconds).
    pub fn now(self, at: i64) -> TestHost {
        self.0.now.set(at);
        self
    }

    /// Answers the plugin's HTTP requests with `respond`.
    pub fn http(
        self,
        respond: impl FnMut(&Request) -> Result<Response, HttpError> + 'static,
    ) -> TestHost {
        *self.0.responder.borrow_mut() = Some(Box::new(respond));
        self
    }

    /// Answers the plugin's mails with `respond` (by default each is
    /// accepted with `250 OK`).
    pub fn mail(
        self,
        respond: impl FnMut(&SentMail) -> Result<String, MailError> + 'static,
    ) -> TestHost {
        *self.0.mail_responder.borrow_mut() = Some(Box::new(respond));
        self
    }

    /// Every mail the plugin sent so far.
    pub fn mails(&self) -> Vec<SentMail> {
        self.0.mails.borrow().clone()
    }

    /// The context to pass to the plugin's trait methods.
    pub fn ctx(&self) -> Ctx {
        Ctx::test(self.0.clone())
    }

    /// Everything the plugin logged so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.0.logs.borrow().clone()
    }

    /// Every HTTP request the plugin sent so far.
    pub fn requests(&self) -> Vec<Request> {
        self.0.requests.borrow().clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn contact() -> Contact {
        Contact::new("c1")
            .with_email("ada@acme.example")
            .with_attr("industry", "software")
            .with_segment("a-list")
    }

    #[test]
    fn hands_only_the_parts_read() {
        // This crate's Cargo.toml names no `reads`: the whole contact.
        let whole = TestHost::new();
        assert_eq!(whole.handed(&contact()), contact());
        let activity = [ActivityCount::new("email.opened", 2, Some(5))];
        assert_eq!(whole.handed_activity(&activity), activity);

        let activity_only = TestHost::new().reads(&["activity"]);
        let handed = activity_only.handed(&contact());
        assert_eq!((handed.email, handed.phone), (None, None));
        assert!(handed.attributes.is_empty() && handed.segments.is_empty());
        assert_eq!(handed.id, "c1");
        assert_eq!(activity_only.handed_activity(&activity), activity);

        let attributes = TestHost::new().reads(&["attributes"]);
        assert_eq!(
            attributes.handed(&contact()).attr("industry"),
            Some(&Value::from("software"))
        );
        assert!(attributes.handed_activity(&activity).is_empty());
    }

    #[test]
    #[should_panic(expected = "`emails`, which is not a part of a contact")]
    fn an_unknown_part_is_named() {
        let _ = TestHost::new().reads(&["emails"]);
    }
}
