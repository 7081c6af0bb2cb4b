//! aiosmtpd on 127.0.0.1 (`tests/support/smtp_sink.py`), writing what it
//! accepts to a directory: the real SMTP server of the email tests and of
//! the latency bench's email run on request; and a small SMTP server in
//! this process, the bench's default.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;

use crate::server::free_port;

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts the server and waits until it listens.
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(&[])
    }

    /// The same, with the script's further arguments: `starttls` or `tls`
    /// (with a certificate from a test CA, see [`SmtpSink::ca_pem`]), then
    /// a login the server requires.
    pub fn start_with(arguments: &[&str]) -> SmtpSink {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (tests/run installs aiosmtpd)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut ready)
            .expect("the SMTP sink's first line");
        assert_eq!(
            ready.trim(),
            "ready",
            "the SMTP sink did not start: is aiosmtpd installed?"
        );
        SmtpSink { child, port, dir }
    }

    /// Accepted messages (or refused attempts), oldest first.
    pub fn messages(&self, refused: bool) -> Vec<Mail> {
        let mut files = self.files(refused);
        files.sort();
        files
            .iter()
            .map(|path| Mail {
                text: std::fs::read_to_string(path).expect("a message the sink wrote"),
                written: std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .expect("the file's modification time"),
            })
            .collect()
    }

    /// The certificate of the CA that signed a TLS server's certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pem")).expect("a TLS sink's CA")
    }

    /// The client port of the session each accepted message came in on,
    /// in the order accepted: as many ports as sessions the client used.
    pub fn session_ports(&self) -> Vec<u16> {
        std::fs::read_to_string(self.dir.path().join("sessions.log"))
            .unwrap_or_default()
            .lines()
            .map(|port| port.parse().expect("a port the sink wrote"))
            .collect()
    }

    /// How many messages it accepted so far.
    pub fn accepted(&self) -> usize {
        self.files(false).len()
    }

    fn files(&self, refused: bool) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .expect("the sink's directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".eml"))
            .filter(|p| p.to_string_lossy().ends_with(".refused.eml") == refused)
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw message as the SMTP server received it.
pub struct Mail {
    pub text: String,
    /// When the server wrote it, just before it answered: the file's
    /// time, which the kernel keeps to a clock tick (a few ms).
    pub written: SystemTime,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self
            .text
            .split_once("\n\n")
            .or_else(|| self.text.split_once("\r\n\r\n"))?;
        let prefix = format!("{}: ", name.to_ascii_lowercase());
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }

    /// Every base64 part, decoded (the text part first, then the HTML).
    pub fn parts(&self) -> Vec<String> {
        let body = self.text.replace("\r\n", "\n");
        body.split("Content-Transfer-Encoding: base64\n\n")
            .skip(1)
            .map(|rest| {
                let encoded: String = rest
                    .lines()
                    .take_while(|l| !l.is_empty() && !l.starts_with("--"))
                    .collect();
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .expect("a base64 part"),
                )
                .expect("a UTF-8 part")
            })
            .collect()
    }

    pub fn to(&self) -> String {
        self.header("To").unwrap_or_default()
    }
}

/// When each recipient's message was accepted.
pub type SmtpArrivals = Arc<Mutex<Vec<(String, SystemTime)>>>;

/// A small SMTP server in this process, for the latency bench. It speaks
/// as much SMTP as a client sending plain mail needs (EHLO or HELO, MAIL,
/// RCPT, DATA, RSET, NOOP, QUIT; no TLS, no AUTH) and notes when each
/// message's closing `.` arrived, by recipient, before it answers 250.
/// aiosmtpd stays the server of the email tests, the independent
/// implementation; this one keeps Python's CPU, half a core at 1,000
/// mails a second, off the two cores the bench measures.
pub struct InProcessSmtp {
    pub port: u16,
    arrivals: SmtpArrivals,
}

impl InProcessSmtp {
    /// Listens on 127.0.0.1, serving each session on a task of the
    /// current runtime.
    pub async fn start() -> InProcessSmtp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let port = listener.local_addr().expect("a bound address").port();
        let arrivals = SmtpArrivals::default();
        let log = arrivals.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(smtp_session(stream, log.clone()));
            }
        });
        InProcessSmtp { port, arrivals }
    }

    /// The recipients accepted so far, with when.
    pub fn arrivals(&self) -> Vec<(String, SystemTime)> {
        self.arrivals.lock().expect("the arrivals").clone()
    }
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    arrivals: SmtpArrivals,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    write.write_all(b"220 127.0.0.1 ESMTP\r\n").await?;
    let mut line = Vec::new();
    let mut recipients = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line);
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-127.0.0.1\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "MAIL" | "NOOP" => b"250 OK\r\n",
            "RSET" => {
                recipients.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let address = command.split(['<', '>']).nth(1).unwrap_or_default();
                recipients.push(address.to_owned());
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                loop {
                    line.clear();
                    if read.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                let at = SystemTime::now();
                arrivals
                    .lock()
                    .expect("the arrivals")
                    .extend(recipients.drain(..).map(|r| (r, at)));
                b"250 OK\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}
