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
//! To run the built component in the real sandbox instead, use
//! `nachfass plugin test <file.wasm> --contact c.json`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::http::{HttpError, Request, Response};
use crate::{Ctx, Level, MailError};

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

impl TestHost {
    pub fn new() -> TestHost {
        TestHost(Rc::new(TestState {
            config: RefCell::new(BTreeMap::new()),
            now: Cell::new(0),
            logs: RefCell::new(Vec::new()),
            requests: RefCell::new(Vec::new()),
            responder: RefCell::new(None),
            mails: RefCell::new(Vec::new()),
            mail_responder: RefCell::new(None),
        }))
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
