//! What a plugin can ask of the host during a call.

use std::fmt::Display;
use std::rc::Rc;
use std::str::FromStr;

use crate::http::{HttpError, Request, Response};
use crate::testing::TestState;
use crate::{Level, MailError, PluginError};

/// The host as seen from inside one call: the binding's configuration, the
/// evaluation time, the log and (for channels) outgoing HTTP.
///
/// In the sandbox this calls the host; in native tests it answers from a
/// [`TestHost`](crate::testing::TestHost).
pub struct Ctx {
    test: Option<Rc<TestState>>,
}

impl Ctx {
    #[doc(hidden)]
    pub fn host() -> Ctx {
        Ctx { test: None }
    }

    pub(crate) fn test(state: Rc<TestState>) -> Ctx {
        Ctx { test: Some(state) }
    }

    /// A raw value from the binding's configuration.
    pub fn config(&self, key: &str) -> Option<String> {
        match &self.test {
            Some(state) => state.config.borrow().get(key).cloned(),
            None => host::config(key),
        }
    }

    /// A configuration value parsed as `T`, or `default` when unset.
    /// A value that does not parse is a `bad-config` error naming the key.
    pub fn config_or<T>(&self, key: &str, default: T) -> Result<T, PluginError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.config_parsed(key)?.unwrap_or(default))
    }

    /// A configuration value parsed as `T`; unset is a `bad-config` error.
    pub fn config_required<T>(&self, key: &str) -> Result<T, PluginError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.config_parsed(key)?
            .ok_or_else(|| PluginError::bad_config(key, "is required but not set"))
    }

    fn config_parsed<T>(&self, key: &str) -> Result<Option<T>, PluginError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.config(key)
            .map(|raw| {
                raw.trim().parse().map_err(|e| {
                    PluginError::bad_config(key, &format!("`{raw}` does not parse: {e}"))
                })
            })
            .transpose()
    }

    /// Evaluation time, Unix epoch milliseconds; fixed for the whole call.
    pub fn now(&self) -> i64 {
        match &self.test {
            Some(state) => state.now.get(),
            None => host::now(),
        }
    }

    /// Writes to the host's log.
    pub fn log(&self, level: Level, message: &str) {
        match &self.test {
            Some(state) => state.logs.borrow_mut().push((level, message.to_owned())),
            None => host::log(level, message),
        }
    }

    /// Sends an email through the SMTP server of the binding's
    /// configuration. Only channel plugins may. `message` is the complete
    /// RFC 5322 message (CRLF line ends); `sender` and `recipients` are the
    /// SMTP envelope. Returns the server's reply.
    pub fn mail(
        &self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<String, MailError> {
        match &self.test {
            Some(state) => state.answer_mail(sender, recipients, message),
            None => {
                crate::bindings::channel::nachfass::plugin::mail::send(sender, recipients, message)
            }
        }
    }

    /// Sends an HTTP request. Only channel plugins may, and only to the
    /// hosts their binding allows; anything else fails with
    /// [`HttpError::Denied`].
    pub fn http(&self, request: &Request) -> Result<Response, HttpError> {
        match &self.test {
            Some(state) => state.answer_http(request),
            None => crate::http::send(request),
        }
    }
}

use crate::bindings::segment_rule::nachfass::plugin::host;
