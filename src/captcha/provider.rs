//! Third-party captcha providers (reCAPTCHA, hCaptcha, Turnstile), for operators who prefer one
//! to the built-in proof of work. All three share one server-side protocol: the widget puts a
//! token in a form field, and the server POSTs `secret`, `response` and `remoteip` to the
//! provider's `siteverify` endpoint and reads `{"success": bool}`. Everything that is not a clear
//! `success: true` within the timeout refuses the form (fail closed).

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::CaptchaError;
use crate::config::Secret;

/// How long one verification call may take, connection to last byte.
pub const PROVIDER_VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest verification answer read; a real one is a few hundred bytes.
pub const PROVIDER_ANSWER_BYTES_MAX: usize = 16 * 1024;
/// Longest widget token accepted from a form (real ones are at most a few KiB).
pub const PROVIDER_RESPONSE_BYTES_MAX: usize = 8 * 1024;
/// At most this many of the provider's error codes are logged.
const PROVIDER_ERROR_CODES_LOGGED_MAX: usize = 8;

/// A third-party provider and its fixed public facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Recaptcha,
    Hcaptcha,
    Turnstile,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Recaptcha => "recaptcha",
            ProviderKind::Hcaptcha => "hcaptcha",
            ProviderKind::Turnstile => "turnstile",
        }
    }

    /// The widget's script, loaded by the form page.
    pub fn script_src(self) -> &'static str {
        match self {
            ProviderKind::Recaptcha => "https://www.google.com/recaptcha/api.js",
            ProviderKind::Hcaptcha => "https://js.hcaptcha.com/1/api.js",
            ProviderKind::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/api.js",
        }
    }

    /// The class of the element the widget renders into.
    pub fn widget_class(self) -> &'static str {
        match self {
            ProviderKind::Recaptcha => "g-recaptcha",
            ProviderKind::Hcaptcha => "h-captcha",
            ProviderKind::Turnstile => "cf-turnstile",
        }
    }

    /// The form field the widget fills with its token.
    pub fn response_field(self) -> &'static str {
        match self {
            ProviderKind::Recaptcha => "g-recaptcha-response",
            ProviderKind::Hcaptcha => "h-captcha-response",
            ProviderKind::Turnstile => "cf-turnstile-response",
        }
    }

    /// The provider's own verification endpoint.
    pub fn default_verify_url(self) -> &'static str {
        match self {
            ProviderKind::Recaptcha => "https://www.google.com/recaptcha/api/siteverify",
            ProviderKind::Hcaptcha => "https://api.hcaptcha.com/siteverify",
            ProviderKind::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        }
    }

    /// Origins the page's Content-Security-Policy must allow for the widget, as
    /// `(script-src, frame-src, style-src, connect-src)`, from each provider's CSP guidance.
    pub(crate) fn csp_origins(
        self,
    ) -> (
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    ) {
        const GOOGLE: &[&str] = &["https://www.google.com", "https://www.gstatic.com"];
        const GOOGLE_FRAMES: &[&str] = &["https://www.google.com", "https://recaptcha.google.com"];
        const HCAPTCHA: &[&str] = &["https://hcaptcha.com", "https://*.hcaptcha.com"];
        const CLOUDFLARE: &[&str] = &["https://challenges.cloudflare.com"];
        match self {
            ProviderKind::Recaptcha => (GOOGLE, GOOGLE_FRAMES, &[], &[]),
            ProviderKind::Hcaptcha => (HCAPTCHA, HCAPTCHA, HCAPTCHA, HCAPTCHA),
            ProviderKind::Turnstile => (CLOUDFLARE, CLOUDFLARE, &[], &[]),
        }
    }
}

/// Why a verification URL is not acceptable.
pub(crate) fn check_verify_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback_host(parsed.host_str().unwrap_or_default()) => Ok(parsed),
        "http" => Err(
            "must be an https:// URL (http:// is allowed only for localhost and 127.0.0.0/8, for tests)"
                .into(),
        ),
        _ => Err("must be an https:// URL".into()),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The one HTTP client for verification calls: rustls with the webpki roots, no redirects
/// (a redirect could leave https), a connection timeout, no cookies.
pub(crate) fn build_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(PROVIDER_VERIFY_TIMEOUT)
        .user_agent(concat!("AlphaBank/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct VerifyAnswer {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// One configured provider, ready to verify.
#[derive(Clone)]
pub(crate) struct Verifier {
    pub kind: ProviderKind,
    pub secret: Secret,
    pub url: reqwest::Url,
    pub client: reqwest::Client,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kind", &self.kind)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Asks the provider whether `response` (the widget's token) is genuine.
    pub async fn verify(
        &self,
        response: &str,
        client_ip: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<(), CaptchaError> {
        let answer = match tokio::time::timeout(timeout, self.ask(response, client_ip)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(problem)) => {
                tracing::warn!(provider = self.kind.name(), %problem, "captcha verification unavailable");
                return Err(CaptchaError::ProviderUnavailable);
            }
            Err(_) => {
                tracing::warn!(
                    provider = self.kind.name(),
                    timeout_millis = timeout.as_millis() as u64,
                    "captcha verification timed out"
                );
                return Err(CaptchaError::ProviderUnavailable);
            }
        };
        if answer.success {
            Ok(())
        } else {
            Err(self.refused(&answer))
        }
    }

    /// One verification call: the form POSTed and the answer read and parsed. The error says
    /// what failed, for the log.
    async fn ask(&self, response: &str, client_ip: Option<IpAddr>) -> Result<VerifyAnswer, String> {
        let remote_ip = client_ip.map(|ip| ip.to_string());
        let mut form: Vec<(&str, &str)> =
            vec![("secret", self.secret.expose()), ("response", response)];
        if let Some(ip) = remote_ip.as_deref() {
            form.push(("remoteip", ip));
        }
        let answer = self
            .client
            .post(self.url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("request failed: {}", describe(e)))?;
        if answer.status() != reqwest::StatusCode::OK {
            return Err(format!("answered HTTP {}", answer.status().as_u16()));
        }
        let body = read_answer(answer).await?;
        serde_json::from_slice::<VerifyAnswer>(&body)
            .map_err(|_| "answer is not the expected JSON".to_string())
    }

    /// Logs a refusal with the provider's first error codes (and, loudly, a refused secret).
    fn refused(&self, answer: &VerifyAnswer) -> CaptchaError {
        let codes: Vec<&str> = answer
            .error_codes
            .iter()
            .take(PROVIDER_ERROR_CODES_LOGGED_MAX)
            .map(|code| code.get(..64).unwrap_or(code))
            .collect();
        tracing::info!(provider = self.kind.name(), error_codes = ?codes, "captcha refused by provider");
        if codes.iter().any(|code| code.contains("secret")) {
            tracing::error!(
                provider = self.kind.name(),
                "the provider refuses ALPHABANK_CAPTCHA_SECRET: every captcha will fail"
            );
        }
        CaptchaError::ProviderRejected
    }
}

/// The answer's body, refused once it is larger than [`PROVIDER_ANSWER_BYTES_MAX`] (by its
/// announced length, or as it arrives).
async fn read_answer(mut answer: reqwest::Response) -> Result<Vec<u8>, String> {
    if answer
        .content_length()
        .is_some_and(|length| length > PROVIDER_ANSWER_BYTES_MAX as u64)
    {
        return Err("answer too large".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| format!("reading the answer failed: {}", describe(e)))?
    {
        if body.len() + chunk.len() > PROVIDER_ANSWER_BYTES_MAX {
            return Err("answer too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error's kind and text, without its URL (configuration; it keeps logs short).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "other"
    };
    format!("{kind} ({})", error.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_urls_must_be_https_unless_loopback() {
        for ok in [
            "https://www.google.com/recaptcha/api/siteverify",
            "http://127.0.0.1:9999/verify",
            "http://127.5.6.7/verify",
            "http://localhost:1/x",
            "http://[::1]:8080/x",
        ] {
            assert!(check_verify_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/verify",
            "http://10.0.0.1/verify",
            "http://localhost.evil.com/x",
            "ftp://127.0.0.1/x",
            "https://user:pw@example.com/x",
            "not a url",
        ] {
            assert!(check_verify_url(bad).is_err(), "{bad}");
        }
    }
}
