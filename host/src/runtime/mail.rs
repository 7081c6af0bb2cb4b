//! The `mail` import: a channel plugin hands over a finished message and
//! its envelope; the host sends it to the SMTP server named by the
//! binding's configuration (lettre), so the plugin reaches no other server.
//! Sessions are kept per server and login (`smtp_sessions.rs`): a burst of
//! mails reuses open SMTP sessions instead of opening one (with TLS) per
//! message, and never holds more than the binding's `smtp_sessions`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;

use super::bindings::mail::{Host, MailError};
use super::bindings::since_v0_1_0::mail as mail_v0_1;
use super::sandbox::CallState;
use super::smtp_sessions::{Encryption, SmtpServer};

fn permanent(why: impl std::fmt::Display) -> MailError {
    MailError::Permanent(why.to_string())
}

fn address(text: &str) -> Result<Address, MailError> {
    text.parse()
        .map_err(|e| permanent(format!("`{text}` is not an email address: {e}")))
}

/// SMTP sessions a node holds open to one server for one login, unless
/// the binding's `smtp_sessions` says otherwise.
const DEFAULT_SESSIONS: usize = 8;

/// The most `smtp_sessions` may ask for: the deliveries lane makes at most
/// 64 calls at once.
const MAX_SESSIONS: usize = 64;

/// Servers by address, login and session count, shared by every call of
/// every binding that names them.
static SERVERS: LazyLock<Mutex<HashMap<String, Arc<SmtpServer>>>> = LazyLock::new(Mutex::default);

impl CallState {
    /// The binding's server, with its sessions.
    fn smtp_server(&self) -> Result<Arc<SmtpServer>, MailError> {
        let config = &self.binding().config;
        let key = [
            "smtp_host",
            "smtp_port",
            "smtp_tls",
            "smtp_user",
            "smtp_password",
            "smtp_sessions",
        ]
        .map(|k| config.get(k).map_or("", String::as_str))
        .join("\n");
        let mut servers = SERVERS
            .lock()
            .map_err(|_| MailError::Transient("the SMTP sessions are unavailable".into()))?;
        if let Some(server) = servers.get(&key) {
            return Ok(server.clone());
        }
        let server = self.new_smtp_server()?;
        servers.insert(key, server.clone());
        Ok(server)
    }

    fn new_smtp_server(&self) -> Result<Arc<SmtpServer>, MailError> {
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
        let sessions = match config.get("smtp_sessions") {
            None => DEFAULT_SESSIONS,
            Some(text) => text
                .parse()
                .ok()
                .filter(|n| (1..=MAX_SESSIONS).contains(n))
                .ok_or_else(|| {
                    permanent(format!(
                        "smtp_sessions `{text}` must be a number from 1 to {MAX_SESSIONS}"
                    ))
                })?,
        };
        let encryption = match tls_mode {
            "none" => Encryption::None,
            "starttls" => Encryption::StartTls(
                TlsParameters::new(host.clone())
                    .map_err(|e| permanent(format!("TLS for {host}: {e}")))?,
            ),
            "tls" => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| permanent(format!("TLS for {host}: {e}")))?;
                Encryption::Implicit(tls_config()?, name)
            }
            other => {
                return Err(permanent(format!(
                    "smtp_tls `{other}` must be starttls, tls or none"
                )));
            }
        };
        let credentials = config.get("smtp_user").map(|user| {
            let password = config.get("smtp_password").cloned().unwrap_or_default();
            Credentials::new(user.clone(), password)
        });
        Ok(SmtpServer::open(
            host.clone(),
            port,
            encryption,
            credentials,
            sessions,
        ))
    }
}

/// TLS for servers spoken to in TLS from the first byte: the public roots
/// and ring, as lettre uses for STARTTLS.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, MailError> {
    static CONFIG: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
    });
    CONFIG
        .clone()
        .map_err(|e| MailError::Transient(format!("no TLS configuration: {e}")))
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
        let server = self.smtp_server()?;
        match server.send(&envelope, &message).await {
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
