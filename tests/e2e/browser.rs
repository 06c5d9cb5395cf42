//! A real headless Chromium driven through chromedriver (WebDriver), for the end-to-end tests.
//!
//! [`Browser::launch`] starts `/usr/bin/chromedriver` on a free loopback port and opens a session
//! with `/usr/lib/chromium/chromium` (the binary behind the `/usr/bin/chromium` wrapper, so that
//! the flags below are exactly the flags the browser gets) and a fresh profile directory. The
//! browser trusts the test app's self-signed certificate by its public key only
//! (`--ignore-certificate-errors-spki-list`), not every certificate. Headless Chromium makes no
//! window narrower than 500 px, so a phone-sized browser emulates the phone's screen.
//!
//! Every wait is a bounded polling loop ([`WAIT`]); nothing sleeps to paper over a race.
//! [`Browser::shot`] saves a whole-page `target/e2e/NN-page.png` and collects the browser
//! console log so far; [`Browser::finish`] fails the test on any `SEVERE` console entry or any
//! Content Security Policy report. Dropping a `Browser` (a panicking test) still ends the
//! WebDriver session and kills the process group this test started (chromedriver and any
//! Chromium it left behind); tests run on a multi-thread runtime so that the app keeps serving
//! while that happens.

use std::cell::Cell;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alphabank::auth::totp::TotpSecret;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use thirtyfour::common::command::FormatRequestData;
use thirtyfour::prelude::*;
use thirtyfour::{BrowserLogEntry, LoggingPrefsLogLevel, RequestData, SessionId};

/// What the test script (`scripts/test`) installs: Debian's `chromium` and `chromium-driver`.
pub const CHROMIUM_WRAPPER: &str = "/usr/bin/chromium";
pub const CHROMIUM_BINARY: &str = "/usr/lib/chromium/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// The label `/static/pow.js` gives submit buttons while it works.
pub const POW_WORKING_LABEL: &str = "Checking your browser\u{2026}";

pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (360, 780);
const HEADLESS_MIN_WIDTH: u32 = 500;

/// The flags every test browser gets, besides `--user-data-dir`, `--window-size` and the
/// certificate's SPKI pin.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
];

/// The chromedriver process this test started, leader of its own process group; the group is
/// killed when dropped, also on panic.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole process group this test started (chromedriver made it its own group
        // leader): chromedriver and any Chromium it launched and did not close.
        let group_killed = Command::new("/usr/bin/kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !group_killed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        for (path, what) in [
            (
                CHROMEDRIVER,
                "chromedriver (Debian package chromium-driver)",
            ),
            (CHROMIUM_WRAPPER, "chromium (Debian package chromium)"),
            (
                CHROMIUM_BINARY,
                "the chromium binary (Debian package chromium)",
            ),
        ] {
            assert!(
                Path::new(path).exists(),
                "end-to-end tests need {what} at {path}: it is missing. \
                 Run ./scripts/test (it installs it) or `apt-get install chromium chromium-driver`."
            );
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("local addr").port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {CHROMEDRIVER}: {e}"));
        let mut driver = ChromeDriver { child, port };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("status client");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = driver.child.try_wait().expect("chromedriver status") {
                panic!("{CHROMEDRIVER} exited at start: {status}");
            }
            let ready = client
                .get(format!("http://127.0.0.1:{}/status", driver.port))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if let Some(response) = ready {
                let text = response.text().await.unwrap_or_default();
                let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if body["value"]["ready"] == serde_json::Value::Bool(true) {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMEDRIVER} did not become ready on port {} within {WAIT:?}",
                driver.port
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The legacy chromedriver endpoint that drains the browser console log:
/// `POST /session/{id}/se/log` with `{"type": "browser"}`.
#[derive(Debug)]
struct BrowserLog;

impl FormatRequestData for BrowserLog {
    fn format_request(&self, session_id: &SessionId) -> RequestData {
        RequestData::new(
            reqwest::Method::POST,
            format!("session/{session_id}/se/log"),
        )
        .add_body(serde_json::json!({ "type": "browser" }))
    }
}

/// A whole-page screenshot through chromedriver's DevTools passthrough
/// (`POST /session/{id}/goog/cdp/execute`, `Page.captureScreenshot` beyond the viewport), so the
/// pictures show what is below the fold too.
#[derive(Debug)]
struct FullPageScreenshot;

impl FormatRequestData for FullPageScreenshot {
    fn format_request(&self, session_id: &SessionId) -> RequestData {
        RequestData::new(
            reqwest::Method::POST,
            format!("session/{session_id}/goog/cdp/execute"),
        )
        .add_body(serde_json::json!({
            "cmd": "Page.captureScreenshot",
            "params": { "format": "png", "captureBeyondViewport": true }
        }))
    }
}

/// Base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in a PEM file: what
/// Chromium's `--ignore-certificate-errors-spki-list` expects.
pub fn spki_pin(cert_pem: &Path) -> String {
    let cert = CertificateDer::from_pem_file(cert_pem)
        .unwrap_or_else(|e| panic!("certificate at {}: {e}", cert_pem.display()));
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki_der(&cert)))
}

/// One DER element at the start of `der`: (tag, length of the whole element, header length).
fn der_element(der: &[u8]) -> (u8, usize, usize) {
    let tag = der[0];
    let first = der[1];
    if first < 0x80 {
        (tag, 2 + usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (tag, 2 + n + len, 2 + n)
    }
}

/// The SubjectPublicKeyInfo (whole DER element) of an X.509 certificate.
fn spki_der(cert: &[u8]) -> &[u8] {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let (tag, _, header) = der_element(cert);
    assert_eq!(tag, SEQUENCE, "certificate is a SEQUENCE");
    let tbs = &cert[header..];
    let (tag, tbs_len, tbs_header) = der_element(tbs);
    assert_eq!(tag, SEQUENCE, "tbsCertificate is a SEQUENCE");
    let mut rest = &tbs[tbs_header..tbs_len];
    if rest[0] == VERSION {
        rest = &rest[der_element(rest).1..];
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        rest = &rest[der_element(rest).1..];
    }
    let (tag, len, _) = der_element(rest);
    assert_eq!(tag, SEQUENCE, "subjectPublicKeyInfo is a SEQUENCE");
    &rest[..len]
}

/// Where screenshots go: `<target dir>/e2e/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("e2e")
}

/// Leading zero bits of a digest.
fn zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// An authenticator app for a customer enrolled through the browser: codes whose step is after
/// every step used before (the server refuses replays), within the ±1 step window.
pub struct Authenticator {
    secret: TotpSecret,
    last_step: Cell<i64>,
}

impl Authenticator {
    pub fn from_base32(text: &str) -> Authenticator {
        let bytes = data_encoding::BASE32_NOPAD
            .decode(text.trim().as_bytes())
            .unwrap_or_else(|e| panic!("the secret {text:?} is not base32: {e}"));
        Authenticator {
            secret: TotpSecret::from_bytes(&bytes),
            last_step: Cell::new(i64::MIN / 2),
        }
    }

    /// A fresh code (see [`crate::helpers::next_step`]).
    pub async fn next_code(&self) -> String {
        let step = crate::helpers::next_step(&self.last_step).await;
        format!("{:06}", self.secret.code_at_step(step))
    }
}

pub struct Browser {
    /// `None` once [`Browser::finish`] has ended the session. Declared first: dropped (and the
    /// session ended) before chromedriver is killed.
    driver: Option<WebDriver>,
    _chromedriver: ChromeDriver,
    _profile: tempfile::TempDir,
    base: String,
    next_shot: u32,
    /// Console entries so far, each with the page that was open when it was read.
    console: Vec<(String, BrowserLogEntry)>,
    page: String,
}

impl Browser {
    /// A fresh browser for the app at `base` (`https://localhost:PORT`) whose certificate is
    /// `cert_pem`. Screenshots are numbered from `first_shot`.
    pub async fn launch(
        base: &str,
        cert_pem: &Path,
        first_shot: u32,
        (width, height): (u32, u32),
    ) -> Browser {
        let chromedriver = ChromeDriver::start().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM_BINARY).expect("binary");
        for flag in CHROMIUM_FLAGS {
            caps.add_arg(flag).expect("flag");
        }
        caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
            .expect("profile flag");
        caps.add_arg(&format!("--window-size={width},{height}"))
            .expect("size flag");
        caps.add_arg(&format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_pin(cert_pem)
        ))
        .expect("spki flag");
        if width < HEADLESS_MIN_WIDTH {
            // Headless Chromium makes no window narrower than 500 px: emulate the phone's screen.
            caps.add_experimental_option(
                "mobileEmulation",
                serde_json::json!({
                    "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 }
                }),
            )
            .expect("mobile emulation");
        }
        caps.set_browser_log_level(LoggingPrefsLogLevel::All)
            .expect("logging prefs");
        let driver = WebDriver::new(format!("http://127.0.0.1:{}", chromedriver.port), caps)
            .await
            .unwrap_or_else(|e| panic!("could not open a Chromium session: {e}"));
        // The console log channel works: a probe written now is read back.
        driver
            .execute("console.warn('alphabank-e2e-log-probe');", Vec::new())
            .await
            .expect("console probe");
        let probe: Vec<BrowserLogEntry> = driver
            .cmd(BrowserLog)
            .await
            .and_then(|r| r.value())
            .unwrap_or_else(|e| panic!("read the browser log: {e}"));
        assert!(
            probe
                .iter()
                .any(|e| e.message.contains("alphabank-e2e-log-probe")),
            "the browser console log cannot be read through chromedriver: {probe:?}"
        );
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create target/e2e");
        Browser {
            driver: Some(driver),
            _chromedriver: chromedriver,
            _profile: profile,
            base: base.to_string(),
            next_shot: first_shot,
            console: Vec::new(),
            page: "(start)".into(),
        }
    }

    pub fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("session open")
    }

    pub async fn open(&mut self, path: &str) {
        self.page = path.to_string();
        self.driver()
            .goto(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    }

    /// The width of the current page's layout viewport, in CSS pixels.
    pub async fn viewport_width(&self) -> u64 {
        self.driver()
            .execute("return window.innerWidth;", Vec::new())
            .await
            .expect("window.innerWidth")
            .json()
            .as_u64()
            .expect("a width")
    }

    /// Path and query of the current page.
    pub async fn location(&self) -> String {
        let url = self.driver().current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits until the current page is `path_and_query`.
    pub async fn wait_for_location(&mut self, path_and_query: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let here = self.location().await;
            if here == path_and_query {
                self.page = here;
                return;
            }
            if Instant::now() >= deadline {
                let text = self.body_text().await;
                panic!(
                    "expected to be on {path_and_query} within {WAIT:?}, still on {here}:\n{text}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the browser has left `path_and_query` (an accepted form redirects).
    pub async fn wait_to_leave(&mut self, path_and_query: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let here = self.location().await;
            if here != path_and_query {
                self.page = here;
                self.wait_for("main").await;
                return;
            }
            if Instant::now() >= deadline {
                let text = self.body_text().await;
                panic!("still on {path_and_query} after {WAIT:?} (form refused?):\n{text}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn body_text(&self) -> String {
        match self.driver().find(By::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    /// Waits until an element matches `css`, and returns the first one.
    pub async fn wait_for(&self, css: &str) -> WebElement {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(found) = self.driver().find(By::Css(css)).await {
                return found;
            }
            if Instant::now() >= deadline {
                let here = self.location().await;
                let text = self.body_text().await;
                panic!("no element matches {css:?} on {here} within {WAIT:?}:\n{text}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn all(&self, css: &str) -> Vec<WebElement> {
        self.driver()
            .find_all(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css:?}: {e}"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.expect("text")
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.wait_for(css)
            .await
            .attr(name)
            .await
            .expect("attribute")
    }

    /// Types `text` into the (empty) input matching `css`, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.wait_for(css).await;
        input.clear().await.expect("clear");
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Waits until the built-in captcha of `form_css` (if it has one) is solved by the page's
    /// own script: a nonce that really does the work (checked here, independently), and the
    /// submit button enabled with its own label back. Returns whether the form had a captcha.
    pub async fn wait_for_captcha(&self, form_css: &str) -> bool {
        let challenge_css = format!("{form_css} input[name=\"pow_challenge\"]");
        let Ok(challenge) = self.driver().find(By::Css(&challenge_css)).await else {
            return false;
        };
        let challenge_text = challenge
            .value()
            .await
            .expect("challenge")
            .unwrap_or_default();
        let bits: u32 = challenge
            .attr("data-bits")
            .await
            .expect("data-bits")
            .and_then(|b| b.parse().ok())
            .expect("pow_challenge carries data-bits");
        let nonce_input = self
            .wait_for(&format!("{form_css} input[name=\"pow_nonce\"]"))
            .await;
        let button = self
            .wait_for(&format!("{form_css} button[type=\"submit\"]"))
            .await;
        let deadline = Instant::now() + WAIT;
        loop {
            let nonce = nonce_input
                .value()
                .await
                .expect("nonce")
                .unwrap_or_default();
            let enabled = button.is_enabled().await.expect("enabled");
            let label = button.text().await.expect("label");
            if !nonce.is_empty() && enabled && label != POW_WORKING_LABEL {
                let digest = Sha256::digest(format!("{challenge_text}:{nonce}").as_bytes());
                assert!(
                    zero_bits(&digest) >= bits,
                    "the page's nonce {nonce} does not do {bits} bits of work"
                );
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the captcha of {form_css} was not solved within {WAIT:?} \
                 (nonce {nonce:?}, button enabled: {enabled}, label {label:?})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the submit button of `form_css` once its captcha (if any) is solved.
    pub async fn submit(&self, form_css: &str) {
        self.wait_for_captcha(form_css).await;
        self.click(&format!("{form_css} button[type=\"submit\"]"))
            .await;
    }

    /// Saves `target/e2e/NN-page.png` and collects the console log so far.
    pub async fn shot(&mut self, page: &str) {
        let data: serde_json::Value = self
            .driver()
            .cmd(FullPageScreenshot)
            .await
            .and_then(|r| r.value())
            .unwrap_or_else(|e| panic!("screenshot of {page}: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        let path = screenshot_dir().join(format!("{:02}-{page}.png", self.next_shot));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.next_shot += 1;
        self.collect_console().await;
    }

    pub async fn collect_console(&mut self) {
        let entries: Vec<BrowserLogEntry> = self
            .driver()
            .cmd(BrowserLog)
            .await
            .and_then(|r| r.value())
            .unwrap_or_else(|e| panic!("read the browser log: {e}"));
        let page = self.page.clone();
        self.console
            .extend(entries.into_iter().map(|e| (page.clone(), e)));
    }

    /// Asserts that no alert dialog is open.
    pub async fn assert_no_alert(&self) {
        if let Ok(text) = self.driver().get_alert_text().await {
            panic!("an alert dialog is open: {text:?}");
        }
    }

    /// Ends the session; fails on any SEVERE console entry or Content Security Policy report.
    pub async fn finish(mut self) {
        self.collect_console().await;
        if let Some(driver) = self.driver.take() {
            driver.quit().await.expect("end the WebDriver session");
        }
        let bad: Vec<String> = self
            .console
            .iter()
            .filter(|(_, e)| {
                e.level.eq_ignore_ascii_case("SEVERE")
                    || e.message.contains("Content Security Policy")
            })
            .map(|(page, e)| format!("[{page}] {} {}", e.level, e.message))
            .collect();
        assert!(
            bad.is_empty(),
            "browser console errors or CSP violations:\n{}",
            bad.join("\n")
        );
    }
}
