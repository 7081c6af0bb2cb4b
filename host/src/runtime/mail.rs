//! The `mail` import: a channel plugin hands over a finished message and
//! its envelope; the host sends it to the SMTP server named by the
//! binding's configuration (lettre), so the plugin reaches no other server.
//! Connections are pooled per server and login: a burst of mails reuses
//! open SMTP sessions instead of opening one (with TLS) per message.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncTransport, Tokio1Executor};

use super::bindings::mail::{Host, MailError};
use super::bindings::since_v0_1_0::mail as mail_v0_1;
use super::sandbox::CallState;

fn permanent(why: impl std::fmt::Display) -> MailError {
    MailError::Permanent(why.to_string())
}

fn address(text: &str) -> Result<Address, MailError> {
    text.parse()
        .map_err(|e| permanent(format!("`{text}` is not an email address: {e}")))
}

/// Open SMTP sessions a server may hold for one login.
const SESSIONS_PER_SERVER: u32 = 8;

/// Transports by server and login, shared by every call of every binding
/// that names them; each keeps its pool of sessions.
static TRANSPORTS: LazyLock<Mutex<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>> =
    LazyLock::new(Mutex::default);

impl CallState {
    /// The pooled transport for the binding's server and login.
    fn smtp_transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
        let config = &self.binding().config;
        let key = [
            "smtp_host",
            "smtp_port",
            "smtp_tls",
            "smtp_user",
            "smtp_password",
        ]
        .map(|k| config.get(k).map_or("", String::as_str))
        .join("\n");
        let mut transports = TRANSPORTS
            .lock()
            .map_err(|_| MailError::Transient("the SMTP pool is unavailable".into()))?;
        if let Some(transport) = transports.get(&key) {
            return Ok(transport.clone());
        }
        let transport = self.new_smtp_transport()?;
        transports.insert(key, transport.clone());
        Ok(transport)
    }

    fn new_smtp_transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
        let config = &self.binding().config;
        let host = config
            .get("smtp_host")
            .ok_or_else(|| permanent("the binding has no smtp_host: set smtp_host (and smtp_port, smtp_tls, smtp_user, smtp_password)"))?;
        let tls_mode = config.get("smtp_tls").map_or("starttls", String::as_str);
        let default_port = match tls_mode {
            "tls" => 465,
            "none" => 25,
            _ => 587,
        };
        let port = match config.get("smtp_port") {
            Some(port) => port
                .parse()
                .map_err(|_| permanent(format!("smtp_port `{port}` is not a port number")))?,
            None => default_port,
        };
        let parameters = || {
            TlsParameters::new(host.clone()).map_err(|e| permanent(format!("TLS for {host}: {e}")))
        };
        let tls = match tls_mode {
            "none" => Tls::None,
            "tls" => Tls::Wrapper(parameters()?),
            "starttls" => Tls::Required(parameters()?),
            other => {
                return Err(permanent(format!(
                    "smtp_tls `{other}` must be starttls, tls or none"
                )));
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)))
            .pool_config(
                PoolConfig::new()
                    .max_size(SESSIONS_PER_SERVER)
                    .idle_timeout(Duration::from_secs(30)),
            );
        if let Some(user) = config.get("smtp_user") {
            let password = config.get("smtp_password").cloned().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }
}

impl Host for CallState {
    async fn send(
        &mut self,
        sender: String,
        recipients: Vec<String>,
        message: Vec<u8>,
    ) -> Result<String, MailError> {
        let to = recipients
            .iter()
            .map(|r| address(r))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(Some(address(&sender)?), to).map_err(permanent)?;
        let transport = self.smtp_transport()?;
        match transport.send_raw(&envelope, &message).await {
            Ok(response) => {
                let text: Vec<&str> = response.message().collect();
                Ok(format!("{} {}", response.code(), text.join(" ")))
            }
            Err(e) if e.is_permanent() => Err(MailError::Permanent(e.to_string())),
            Err(e) => Err(MailError::Transient(e.to_string())),
        }
    }
}

/// `mail@0.1.0` is `mail@0.2.0` under its old name.
impl mail_v0_1::Host for CallState {
    async fn send(
        &mut self,
        sender: String,
        recipients: Vec<String>,
        message: Vec<u8>,
    ) -> Result<String, mail_v0_1::MailError> {
        Host::send(self, sender, recipients, message)
            .await
            .map_err(|e| match e {
                MailError::Transient(why) => mail_v0_1::MailError::Transient(why),
                MailError::Permanent(why) => mail_v0_1::MailError::Permanent(why),
            })
    }
}
