//! The `mail` import: a channel plugin hands over a finished message and
//! its envelope; the host sends it to the SMTP server named by the
//! binding's configuration (lettre), so the plugin reaches no other server.

use lettre::address::Envelope;
use lettre::transport::smtp::AsyncSmtpTransport;
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

impl CallState {
    fn smtp_transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
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
            .timeout(Some(std::time::Duration::from_secs(10)));
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
