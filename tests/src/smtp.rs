//! aiosmtpd on 127.0.0.1 (`tests/support/smtp_sink.py`), writing what it
//! accepts to a directory: the real SMTP server of the email tests and of
//! the latency bench's email run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
