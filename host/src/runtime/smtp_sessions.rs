//! SMTP sessions to one server and login, kept open between messages.
//! lettre speaks the protocol; this file decides when a session is opened,
//! reused and closed, because lettre's own pool (0.11.23) does three things
//! a busy outbox cannot live with:
//! - its sockets keep Nagle's algorithm on. A message's body and its closing
//!   `.` are two writes, so the `.` waits for the server's delayed ACK:
//!   40 ms a message on Linux, 25 messages a second a session (fixed
//!   upstream in lettre#1159, not released yet);
//! - it bounds the idle sessions but not the ones in use: a burst of 64
//!   deliveries opened 64 sessions and closed all but 8 after one message
//!   each, and a provider's per-client connection limit refuses the rest;
//! - it sends a NOOP before every reuse, one more round trip per message.
//!
//! Here a server has a fixed number of sessions. A session idle for a moment
//! is reused as it is; one idle for longer is checked with a NOOP first, and
//! one idle past [`IDLE_TIMEOUT`] is closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long opening a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A session idle this long is closed: servers drop idle clients after a
/// minute or more, and an unused session holds one of their slots.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A session idle at most this long is reused without a NOOP first. A
/// server closes a session on its idle timeout, not within a second of an
/// answer; if it did, the send fails as a transient error and is retried.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// How long a NOOP or a QUIT may take before the session is dropped.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How the connection is encrypted.
pub enum Encryption {
    /// Plain text, for a server on the same machine.
    None,
    /// Plain text upgraded by STARTTLS before anything else is said (587).
    StartTls(TlsParameters),
    /// TLS from the first byte (465), checked against this name.
    Implicit(Arc<rustls::ClientConfig>, ServerName<'static>),
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error(transparent)]
    Smtp(#[from] SmtpError),
}

impl SessionError {
    /// Not worth retrying: the server refused for good (5xx).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Smtp(e) if e.is_permanent())
    }
}

/// One server and login, and its sessions.
pub struct SmtpServer {
    host: String,
    port: u16,
    encryption: Encryption,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// A permit for each session that may be open at once.
    in_use: Semaphore,
    /// Open sessions not in use, the most recently used last.
    idle: Mutex<Vec<IdleSession>>,
}

struct IdleSession {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl SmtpServer {
    /// A server with at most `sessions` open at once. Runs in a Tokio
    /// runtime: a task closes the sessions left idle.
    pub fn open(
        host: String,
        port: u16,
        encryption: Encryption,
        credentials: Option<Credentials>,
        sessions: usize,
    ) -> Arc<SmtpServer> {
        let server = Arc::new(SmtpServer {
            host,
            port,
            encryption,
            credentials,
            hello: ClientId::default(),
            in_use: Semaphore::new(sessions),
            idle: Mutex::default(),
        });
        tokio::spawn(close_idle_sessions(Arc::downgrade(&server)));
        server
    }

    /// Sends one message over a session of this server: a free one, or a
    /// new one when none is free and fewer than the limit are open. A
    /// session that failed is closed; any other goes back for the next.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Response, SessionError> {
        let _session = self
            .in_use
            .acquire()
            .await
            .expect("the session permits are never closed");
        let mut connection = match self.reusable().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let sent = connection.send(envelope, message).await.map_err(Into::into);
        // lettre has sent QUIT and closed a session that failed.
        if !connection.has_broken() {
            self.idle_sessions().push(IdleSession {
                connection,
                since: Instant::now(),
            });
        }
        sent
    }

    fn idle_sessions(&self) -> std::sync::MutexGuard<'_, Vec<IdleSession>> {
        // The list stays whole if a holder panicked: pushes and pops only.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle session that still answers.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let IdleSession {
                mut connection,
                since,
            } = self.idle_sessions().pop()?;
            let idle = since.elapsed();
            if idle <= TRUSTED_IDLE {
                return Some(connection);
            }
            if idle <= IDLE_TIMEOUT
                && tokio::time::timeout(CHECK_TIMEOUT, connection.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Some(connection);
            }
            let _ = tokio::time::timeout(CHECK_TIMEOUT, connection.abort()).await;
        }
    }

    /// A new session: TCP without Nagle, TLS as configured, EHLO, login.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SessionError> {
        let failed = |source| SessionError::Connect {
            host: self.host.clone(),
            port: self.port,
            source,
        };
        let tcp = within_connect_timeout(TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(failed)?;
        tcp.set_nodelay(true).map_err(failed)?;
        let mut connection = match &self.encryption {
            Encryption::None | Encryption::StartTls(_) => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
            }
            Encryption::Implicit(config, name) => {
                let tls = within_connect_timeout(
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp),
                )
                .await
                .map_err(failed)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(tls)), &self.hello)
                    .await?
            }
        };
        if let Encryption::StartTls(parameters) = &self.encryption {
            connection.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(connection)
    }
}

/// A step of opening a connection (TCP, TLS), bounded by
/// [`CONNECT_TIMEOUT`].
async fn within_connect_timeout<T>(step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(CONNECT_TIMEOUT, step)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
        .flatten()
}

/// Closes the sessions idle past [`IDLE_TIMEOUT`], until the server is gone.
async fn close_idle_sessions(server: Weak<SmtpServer>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        let expired: Vec<IdleSession> = {
            let mut idle = server.idle_sessions();
            // Oldest first: the expired ones are a prefix.
            let count = idle
                .iter()
                .take_while(|s| s.since.elapsed() > IDLE_TIMEOUT)
                .count();
            idle.drain(..count).collect()
        };
        for mut session in expired {
            let _ = tokio::time::timeout(CHECK_TIMEOUT, session.connection.abort()).await;
        }
    }
}

/// A stream in TLS from its first byte, in the form lettre takes a stream.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
