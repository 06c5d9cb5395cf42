//! Mail as a customer's mailbox sees it: a real SMTP server on loopback (`tests/smtp_sink.py`, on
//! aiosmtpd, which `scripts/test` installs), or the `.eml` files of the outbox directory, and
//! the messages in them parsed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for mail the bank should deliver (its first retry comes after 5 s).
pub const MAIL_WAIT: Duration = Duration::from_secs(40);

/// The Python that has aiosmtpd: `ALPHABANK_TEST_PYTHON` (set by `scripts/test`), else `python3`.
fn python() -> String {
    std::env::var("ALPHABANK_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One running SMTP server on 127.0.0.1, storing what it accepts in its own directory.
pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn_sink(dir.path(), 0);
        SmtpSink {
            child: Some(child),
            port,
            dir,
        }
    }

    /// `ALPHABANK_SMTP_URL` for it (loopback: no TLS needed).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The server goes away (SIGKILL): connections to its port are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The server comes back on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = spawn_sink(self.dir.path(), self.port);
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    /// Every message is refused with `reply` (e.g. "451 4.3.0 Try again later") until
    /// [`SmtpSink::accept`].
    pub fn refuse(&self, reply: &str) {
        std::fs::write(self.dir.path().join("refuse"), reply).unwrap();
    }

    pub fn accept(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("refuse"));
    }

    pub fn messages(&self) -> Vec<Mail> {
        read_messages(self.dir.path())
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_sink(dir: &Path, port: u16) -> (Child, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py");
    let mut child = Command::new(python())
        .arg(script)
        .args([
            "--dir",
            &dir.display().to_string(),
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (scripts/test installs aiosmtpd)",
                python()
            )
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!(
            "the SMTP sink did not start (is aiosmtpd installed for {}?)",
            python()
        )
    });
    (child, port)
}

/// The messages stored as `*.eml` in `dir`, oldest name first.
pub fn read_messages(dir: &Path) -> Vec<Mail> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    paths
        .iter()
        .map(|p| Mail::parse(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// Polls `read` until `done` holds for what it returns, up to [`MAIL_WAIT`] (mail is
/// delivered by a background task); returns the last reading.
pub async fn wait_for<T>(mut read: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let value = read();
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One message: its headers (unfolded) and its text part, decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Mail {
    pub fn parse(raw: &str) -> Mail {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let mut mail = Mail {
            headers,
            body: String::new(),
        };
        mail.body = match mail
            .header("Content-Transfer-Encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase()
            .as_str()
        {
            "quoted-printable" => decode_quoted_printable(body),
            "base64" => {
                let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                String::from_utf8(data_encoding::BASE64.decode(compact.as_bytes()).unwrap())
                    .unwrap()
            }
            _ => body.to_string(),
        };
        mail
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn event(&self) -> &str {
        self.header("X-AlphaBank-Event").unwrap_or_default()
    }

    pub fn to(&self) -> &str {
        self.header("To").unwrap_or_default()
    }

    /// The text as one line (wrapping undone), for phrases that may span lines.
    pub fn text(&self) -> String {
        self.body.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
