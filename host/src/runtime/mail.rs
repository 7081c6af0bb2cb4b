//! The `mail` import: a channel plugin hands over a finished message and
//! its envelope; the host sends it to the SMTP server named by the
//! binding's configuration (lettre), so the plugin reaches no other server.
//! Sessions are kept per server and login (`smtp_sessions.rs`): a burst of
//! mails reuses open SMTP sessions instead of opening one (with TLS) per
//! message, and never holds more than the binding's `smtp_sessions`.
//! TLS trusts the public roots, and a private CA given as `smtp_ca`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

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
            "smtp_ca",
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
        let extra_roots = match config.get("smtp_ca") {
            Some(pem) => certificates(pem)?,
            None => Vec::new(),
        };
        let tls_error = |e: &dyn std::fmt::Display| permanent(format!("TLS for {host}: {e}"));
        let encryption = match tls_mode {
            "none" => Encryption::None,
            "starttls" => {
                let mut parameters = TlsParameters::builder(host.clone());
                for root in &extra_roots {
                    let ca = Certificate::from_der(root.to_vec()).map_err(|e| tls_error(&e))?;
                    parameters = parameters.add_root_certificate(ca);
                }
                Encryption::StartTls(parameters.build_rustls().map_err(|e| tls_error(&e))?)
            }
            "tls" => {
                let name = ServerName::try_from(host.clone()).map_err(|e| tls_error(&e))?;
                Encryption::Implicit(tls_config(extra_roots).map_err(|e| tls_error(&e))?, name)
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

/// The certificates of `smtp_ca`: a private CA trusted besides the public
/// roots, for a relay inside the company.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, MailError> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| permanent(format!("smtp_ca is not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(permanent(
            "smtp_ca holds no certificate: give the CA's certificate in PEM (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certificates)
}

/// TLS from the first byte: the public roots and `smtp_ca`, with ring, as
/// lettre does for STARTTLS.
fn tls_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
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
            Err(e) => {
                let mut why = e.to_string();
                if why.contains("invalid peer certificate") {
                    why.push_str(
                        " (for a server whose CA is not public, give the CA's certificate as smtp_ca)",
                    );
                }
                Err(MailError::Transient(why))
            }
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
