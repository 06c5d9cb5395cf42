//! Typed, layered configuration: defaults < TOML file < environment, validated once at start.
//!
//! Every value is read as loose text/number first and then parsed here, so a bad value stops the
//! start with exactly one line naming the variable and what is wrong (CONTRACT §1).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use ipnet::IpNet;
use serde::Deserialize;

/// A secret configuration value: never printed, not even by `Debug`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptchaMode {
    Pow,
    Recaptcha,
    Hcaptcha,
    Turnstile,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Argon2id cost. The defaults are OWASP's minimum; lower values are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

pub const ARGON2_M_KIB_MIN: u32 = 19_456;
pub const ARGON2_T_MIN: u32 = 2;
pub const ARGON2_P_MIN: u32 = 1;

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub plain_http: bool,
    pub http_redirect_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    pub master_key_file: PathBuf,
    pub master_key: Option<Secret>,
    pub session_idle_secs: u64,
    pub session_absolute_secs: u64,
    pub rate_limit_per_min: u32,
    pub captcha: CaptchaMode,
    pub pow_bits: u8,
    pub captcha_secret: Option<Secret>,
    pub captcha_site_key: Option<String>,
    pub captcha_verify_url: Option<String>,
    pub argon2: Argon2Cost,
    pub log_format: LogFormat,
    /// The origin customers use (CONTRACT §1): the WebAuthn origin; its host is the RP id.
    pub public_url: url::Url,
    /// Where mail goes (`ALPHABANK_SMTP_URL`); `None`: into `<data dir>/outbox/` as files.
    pub smtp: Option<SmtpSettings>,
    /// The sender of every message (`ALPHABANK_MAIL_FROM`).
    pub mail_from: lettre::message::Mailbox,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
    /// `smtp://` to any host but a loopback one: STARTTLS, and no mail without it.
    StartTlsRequired,
    /// `smtp://` to a loopback host: STARTTLS if the server offers it.
    StartTlsIfOffered,
}

/// `ALPHABANK_SMTP_URL`, checked.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// User name and password, percent-decoded.
    pub credentials: Option<(String, Secret)>,
}

/// One configuration problem, shown as a single line: `ALPHABANK_X: what is wrong`.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: format!("ALPHABANK_{}", key.to_ascii_uppercase()),
        problem: problem.into(),
    }
}

/// A loosely typed value as TOML or the environment gives it.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum Loose {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Loose {
    fn text(&self) -> String {
        match self {
            Loose::Bool(b) => b.to_string(),
            Loose::Int(i) => i.to_string(),
            Loose::Float(f) => f.to_string(),
            Loose::Text(s) => s.trim().to_string(),
        }
    }
}

/// The configuration as gathered from defaults < TOML file < environment, before any checking:
/// each known key's text, trimmed. An empty value counts as unset (and unsets a lower layer's).
#[derive(Default)]
struct RawConfig {
    data_dir: Option<String>,
    database_url: Option<String>,
    listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    plain_http: Option<String>,
    http_redirect_listen: Option<String>,
    trusted_proxies: Option<String>,
    master_key_file: Option<String>,
    master_key: Option<String>,
    session_idle_secs: Option<String>,
    session_absolute_secs: Option<String>,
    rate_limit_per_min: Option<String>,
    captcha: Option<String>,
    pow_bits: Option<String>,
    captcha_secret: Option<String>,
    captcha_site_key: Option<String>,
    captcha_verify_url: Option<String>,
    argon2_m_kib: Option<String>,
    argon2_t: Option<String>,
    argon2_p: Option<String>,
    log_format: Option<String>,
    public_url: Option<String>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
}

impl RawConfig {
    /// Reads `file` (if named), then `env` over it.
    fn gather(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::default();
        if let Some(path) = file {
            for (key, value) in read_file(path)? {
                let Some(slot) = raw.slot(&key) else {
                    return Err(file_error(format!(
                        "unknown key `{key}` in {}",
                        path.display()
                    )));
                };
                *slot = non_empty(value.text());
            }
        }
        // The environment wins. Values stay text: the sections below parse them.
        for (name, value) in env {
            if let Some(key) = name.strip_prefix("ALPHABANK_")
                && let Some(slot) = raw.slot(&key.to_ascii_lowercase())
            {
                *slot = non_empty(value.trim().to_string());
            }
        }
        Ok(raw)
    }

    /// The value of a key this configuration knows; `None` for any other key, which is an error
    /// in the file and ignored in the environment by design, so that unrelated `ALPHABANK_*`
    /// variables (e.g. for tests) do not stop the start.
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        let slot = match key {
            "data_dir" => &mut self.data_dir,
            "database_url" => &mut self.database_url,
            "listen" => &mut self.listen,
            "tls_cert" => &mut self.tls_cert,
            "tls_key" => &mut self.tls_key,
            "plain_http" => &mut self.plain_http,
            "http_redirect_listen" => &mut self.http_redirect_listen,
            "trusted_proxies" => &mut self.trusted_proxies,
            "master_key_file" => &mut self.master_key_file,
            "master_key" => &mut self.master_key,
            "session_idle_secs" => &mut self.session_idle_secs,
            "session_absolute_secs" => &mut self.session_absolute_secs,
            "rate_limit_per_min" => &mut self.rate_limit_per_min,
            "captcha" => &mut self.captcha,
            "pow_bits" => &mut self.pow_bits,
            "captcha_secret" => &mut self.captcha_secret,
            "captcha_site_key" => &mut self.captcha_site_key,
            "captcha_verify_url" => &mut self.captcha_verify_url,
            "argon2_m_kib" => &mut self.argon2_m_kib,
            "argon2_t" => &mut self.argon2_t,
            "argon2_p" => &mut self.argon2_p,
            "log_format" => &mut self.log_format,
            "public_url" => &mut self.public_url,
            "smtp_url" => &mut self.smtp_url,
            "mail_from" => &mut self.mail_from,
            _ => return None,
        };
        Some(slot)
    }
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|s| !s.is_empty())
}

fn file_error(problem: String) -> ConfigError {
    ConfigError {
        variable: "ALPHABANK_CONFIG".into(),
        problem,
    }
}

/// The TOML file's keys and values, unchecked.
fn read_file(path: &Path) -> Result<BTreeMap<String, Loose>, ConfigError> {
    if !path.is_file() {
        return Err(file_error(format!(
            "configuration file {} does not exist",
            path.display()
        )));
    }
    Figment::from(Toml::file(path)).extract().map_err(|e| {
        file_error(format!(
            "cannot read {}: {}",
            path.display(),
            first_line(&e.to_string())
        ))
    })
}

/// Where the data lives.
struct Storage {
    data_dir: PathBuf,
    database_url: Secret,
}

impl Storage {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or("./data"));
        let database_url = match &raw.database_url {
            Some(url) => {
                if !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    return Err(bad(
                        "database_url",
                        "must start with sqlite:// or postgres://",
                    ));
                }
                url.clone()
            }
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("alphabank.db").display()
            ),
        };
        Ok(Storage {
            data_dir,
            database_url: Secret::new(database_url),
        })
    }
}

/// Listeners, TLS and the proxies whose forwarding headers are believed.
struct Network {
    listen: SocketAddr,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    plain_http: bool,
    http_redirect_listen: Option<SocketAddr>,
    trusted_proxies: Vec<IpNet>,
    public_url: url::Url,
}

impl Network {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let listen = parse_addr(raw.listen.as_deref().unwrap_or("127.0.0.1:8443"), "listen")?;
        let (tls_cert, tls_key) = tls_files(raw)?;
        let plain_http = parse_bool(raw.plain_http.as_deref(), "plain_http", false)?;
        let http_redirect_listen = raw
            .http_redirect_listen
            .as_deref()
            .map(|s| parse_addr(s, "http_redirect_listen"))
            .transpose()?;
        let trusted_proxies = match &raw.trusted_proxies {
            None => Vec::new(),
            Some(list) => parse_proxies(list)?,
        };
        let public_url = parse_public_url(raw.public_url.as_deref(), listen.port())?;
        Ok(Network {
            listen,
            tls_cert,
            tls_key,
            plain_http,
            http_redirect_listen,
            trusted_proxies,
            public_url,
        })
    }
}

/// `ALPHABANK_PUBLIC_URL`: an origin (no path, query, fragment or credentials), `https://`, or
/// `http://` for a loopback host only (browsers treat those as secure contexts); by default
/// `https://localhost:<listen port>`.
fn parse_public_url(value: Option<&str>, listen_port: u16) -> Result<url::Url, ConfigError> {
    let default = format!("https://localhost:{listen_port}");
    let text = value.unwrap_or(&default);
    let problem = |p: &str| bad("public_url", format!("`{text}` {p}"));
    let url = url::Url::parse(text).map_err(|_| problem("is not a URL"))?;
    if value.is_some() && url.port() == Some(0) {
        return Err(problem("names port 0"));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(problem(
                "must be https:// (http:// only for a loopback host)",
            ));
        }
    }
    if host.is_empty()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(problem(
            "must be an origin only, like https://bank.example (no path, query or credentials)",
        ));
    }
    Ok(url)
}

/// Where mail goes and who sends it.
struct MailSettings {
    smtp: Option<SmtpSettings>,
    mail_from: lettre::message::Mailbox,
}

impl MailSettings {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let smtp = raw.smtp_url.as_deref().map(parse_smtp_url).transpose()?;
        let from = raw
            .mail_from
            .as_deref()
            .unwrap_or("AlphaBank <no-reply@localhost>");
        let mail_from = from.parse().map_err(|_| {
            bad(
                "mail_from",
                format!("`{from}` is not an address like `AlphaBank <no-reply@bank.example>`"),
            )
        })?;
        Ok(MailSettings { smtp, mail_from })
    }
}

/// `smtp://[user:password@]host[:port]` (port 587, STARTTLS) or `smtps://…` (port 465, TLS).
fn parse_smtp_url(text: &str) -> Result<SmtpSettings, ConfigError> {
    // The URL may carry a password: it is never repeated in the error.
    let problem = |p: &str| bad("smtp_url", p.to_string());
    let url = url::Url::parse(text).map_err(|_| problem("is not a URL"))?;
    let (default_port, tls) = match url.scheme() {
        "smtp" => (587, false),
        "smtps" => (465, true),
        _ => return Err(problem("must start with smtp:// or smtps://")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| problem("names no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    if !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(problem(
            "must be smtp[s]://[user:password@]host[:port], nothing after it",
        ));
    }
    let port = url.port().unwrap_or(default_port);
    if port == 0 {
        return Err(problem("names port 0"));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|d| d.into_owned())
            .map_err(|_| problem("has a user name or password that is not UTF-8"))
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(password)) if !user.is_empty() => {
            Some((decode(user)?, Secret::new(decode(password)?)))
        }
        _ => {
            return Err(problem(
                "must give both a user name and a password, or neither",
            ));
        }
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let security = match (tls, loopback) {
        (true, _) => SmtpSecurity::ImplicitTls,
        (false, true) => SmtpSecurity::StartTlsIfOffered,
        (false, false) => SmtpSecurity::StartTlsRequired,
    };
    Ok(SmtpSettings {
        host,
        port,
        security,
        credentials,
    })
}

/// The certificate and private key files: both or neither, and existing when named.
fn tls_files(raw: &RawConfig) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let tls_cert = raw.tls_cert.as_deref().map(PathBuf::from);
    let tls_key = raw.tls_key.as_deref().map(PathBuf::from);
    match (&tls_cert, &tls_key) {
        (Some(_), None) => {
            return Err(bad("tls_key", "must be set when ALPHABANK_TLS_CERT is set"));
        }
        (None, Some(_)) => {
            return Err(bad("tls_cert", "must be set when ALPHABANK_TLS_KEY is set"));
        }
        (Some(cert), Some(key)) => {
            if !cert.is_file() {
                return Err(bad(
                    "tls_cert",
                    format!("file {} does not exist", cert.display()),
                ));
            }
            if !key.is_file() {
                return Err(bad(
                    "tls_key",
                    format!("file {} does not exist", key.display()),
                ));
            }
        }
        (None, None) => {}
    }
    Ok((tls_cert, tls_key))
}

/// A comma-separated list of IP addresses and CIDR networks.
fn parse_proxies(list: &str) -> Result<Vec<IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    bad(
                        "trusted_proxies",
                        format!("`{s}` is not an IP address or CIDR"),
                    )
                })
        })
        .collect()
}

/// Where the master key comes from (checked when it is loaded, not here).
struct MasterKeySettings {
    master_key_file: PathBuf,
    master_key: Option<Secret>,
}

impl MasterKeySettings {
    fn from_raw(raw: &RawConfig, data_dir: &Path) -> Self {
        MasterKeySettings {
            master_key_file: raw
                .master_key_file
                .as_deref()
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("master.key")),
            master_key: raw.master_key.clone().map(Secret::new),
        }
    }
}

/// Session lifetimes and the per-client request rate.
struct SessionLimits {
    session_idle_secs: u64,
    session_absolute_secs: u64,
    rate_limit_per_min: u32,
}

impl SessionLimits {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let session_idle_secs = parse_int(
            raw.session_idle_secs.as_deref(),
            "session_idle_secs",
            300,
            1,
            86_400,
        )?;
        let session_absolute_secs = parse_int(
            raw.session_absolute_secs.as_deref(),
            "session_absolute_secs",
            43_200,
            1,
            30 * 86_400,
        )?;
        if session_absolute_secs < session_idle_secs {
            return Err(bad(
                "session_absolute_secs",
                "must not be shorter than ALPHABANK_SESSION_IDLE_SECS",
            ));
        }
        let rate_limit_per_min = parse_int(
            raw.rate_limit_per_min.as_deref(),
            "rate_limit_per_min",
            60,
            1,
            1_000_000,
        )?;
        Ok(SessionLimits {
            session_idle_secs,
            session_absolute_secs,
            rate_limit_per_min,
        })
    }
}

/// The captcha provider and what it needs.
struct CaptchaSettings {
    captcha: CaptchaMode,
    pow_bits: u8,
    captcha_secret: Option<Secret>,
    captcha_site_key: Option<String>,
    captcha_verify_url: Option<String>,
}

impl CaptchaSettings {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let captcha = CaptchaMode::from_raw(raw)?;
        let pow_bits = parse_int(raw.pow_bits.as_deref(), "pow_bits", 18, 1, 32)?;
        let captcha_secret = raw.captcha_secret.clone().map(Secret::new);
        let captcha_site_key = raw.captcha_site_key.clone();
        let captcha_verify_url = raw.captcha_verify_url.clone();
        if let Some(url) = &captcha_verify_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(bad(
                "captcha_verify_url",
                "must be an http:// or https:// URL",
            ));
        }
        if matches!(
            captcha,
            CaptchaMode::Recaptcha | CaptchaMode::Hcaptcha | CaptchaMode::Turnstile
        ) {
            if captcha_secret.is_none() {
                return Err(bad(
                    "captcha_secret",
                    "is required for a third-party captcha provider",
                ));
            }
            if captcha_site_key.is_none() {
                return Err(bad(
                    "captcha_site_key",
                    "is required for a third-party captcha provider",
                ));
            }
        }
        Ok(CaptchaSettings {
            captcha,
            pow_bits,
            captcha_secret,
            captcha_site_key,
            captcha_verify_url,
        })
    }
}

impl CaptchaMode {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        match raw.captcha.as_deref().unwrap_or("pow") {
            "pow" => Ok(CaptchaMode::Pow),
            "recaptcha" => Ok(CaptchaMode::Recaptcha),
            "hcaptcha" => Ok(CaptchaMode::Hcaptcha),
            "turnstile" => Ok(CaptchaMode::Turnstile),
            "off" => Ok(CaptchaMode::Off),
            other => Err(bad(
                "captcha",
                format!("`{other}` is not one of pow, recaptcha, hcaptcha, turnstile, off"),
            )),
        }
    }
}

impl Argon2Cost {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        Ok(Argon2Cost {
            memory_kib: parse_int(
                raw.argon2_m_kib.as_deref(),
                "argon2_m_kib",
                ARGON2_M_KIB_MIN,
                ARGON2_M_KIB_MIN,
                4 * 1024 * 1024,
            )?,
            iterations: parse_int(
                raw.argon2_t.as_deref(),
                "argon2_t",
                ARGON2_T_MIN,
                ARGON2_T_MIN,
                64,
            )?,
            parallelism: parse_int(
                raw.argon2_p.as_deref(),
                "argon2_p",
                ARGON2_P_MIN,
                ARGON2_P_MIN,
                16,
            )?,
        })
    }
}

impl LogFormat {
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        match raw.log_format.as_deref().unwrap_or("pretty") {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(bad(
                "log_format",
                format!("`{other}` is not one of pretty, json"),
            )),
        }
    }
}

impl Config {
    /// Loads defaults < `file` (if named) < the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Same as [`Config::load`], with the environment given explicitly (used by tests).
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        Self::from_raw(&RawConfig::gather(file, env)?)
    }

    /// Checks section by section, in this order: the first problem found is the one reported.
    fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let storage = Storage::from_raw(raw)?;
        let network = Network::from_raw(raw)?;
        let keys = MasterKeySettings::from_raw(raw, &storage.data_dir);
        let limits = SessionLimits::from_raw(raw)?;
        let captcha = CaptchaSettings::from_raw(raw)?;
        let argon2 = Argon2Cost::from_raw(raw)?;
        let log_format = LogFormat::from_raw(raw)?;
        let mail = MailSettings::from_raw(raw)?;
        Ok(Config {
            data_dir: storage.data_dir,
            database_url: storage.database_url,
            listen: network.listen,
            tls_cert: network.tls_cert,
            tls_key: network.tls_key,
            plain_http: network.plain_http,
            http_redirect_listen: network.http_redirect_listen,
            trusted_proxies: network.trusted_proxies,
            master_key_file: keys.master_key_file,
            master_key: keys.master_key,
            session_idle_secs: limits.session_idle_secs,
            session_absolute_secs: limits.session_absolute_secs,
            rate_limit_per_min: limits.rate_limit_per_min,
            captcha: captcha.captcha,
            pow_bits: captcha.pow_bits,
            captcha_secret: captcha.captcha_secret,
            captcha_site_key: captcha.captcha_site_key,
            captcha_verify_url: captcha.captcha_verify_url,
            argon2,
            log_format,
            public_url: network.public_url,
            smtp: mail.smtp,
            mail_from: mail.mail_from,
        })
    }
    /// The configuration once the HTTPS listener is bound to `port`: a default public URL made
    /// for `ALPHABANK_LISTEN` port 0 names that port.
    pub fn with_bound_port(mut self, port: u16) -> Self {
        if self.public_url.port() == Some(0) {
            // Cannot fail: an https URL with a host takes any port.
            let _ = self.public_url.set_port(Some(port));
        }
        self
    }

    /// Whether the database is the embedded SQLite file.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn parse_addr(s: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        bad(
            key,
            format!("`{s}` is not an IP address with a port, like 127.0.0.1:8443"),
        )
    })
}

fn parse_bool(value: Option<&str>, key: &str, default: bool) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(bad(key, format!("`{other}` is not true or false"))),
    }
}

fn parse_int<T>(
    value: Option<&str>,
    key: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(text) = value else {
        return Ok(default);
    };
    let parsed: T = text
        .parse()
        .map_err(|_| bad(key, format!("`{text}` is not a whole number")))?;
    if parsed < min || parsed > max {
        return Err(bad(
            key,
            format!("{parsed} is outside the allowed range {min}..={max}"),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_public_url_is_an_origin() {
        let c = Config::load_from(None, &env(&[("ALPHABANK_LISTEN", "127.0.0.1:9000")])).unwrap();
        assert_eq!(c.public_url.as_str(), "https://localhost:9000/");
        let bound = Config::load_from(None, &env(&[("ALPHABANK_LISTEN", "127.0.0.1:0")]))
            .unwrap()
            .with_bound_port(4321);
        assert_eq!(bound.public_url.as_str(), "https://localhost:4321/");
        let ok = [
            ("https://bank.example", "https://bank.example/"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ];
        for (given, origin) in ok {
            let c = Config::load_from(None, &env(&[("ALPHABANK_PUBLIC_URL", given)])).unwrap();
            assert_eq!(c.public_url.as_str(), origin);
        }
        for bad in [
            "bank.example",
            "http://bank.example",
            "https://bank.example/app",
            "https://bank.example/?x=1",
            "https://user:pw@bank.example",
            "https://bank.example:0",
            "ftp://bank.example",
        ] {
            let error =
                Config::load_from(None, &env(&[("ALPHABANK_PUBLIC_URL", bad)])).unwrap_err();
            assert_eq!(error.variable, "ALPHABANK_PUBLIC_URL", "{bad}");
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.session_idle_secs, 300);
        assert_eq!(c.session_absolute_secs, 43_200);
        assert_eq!(c.rate_limit_per_min, 60);
        assert_eq!(c.captcha, CaptchaMode::Pow);
        assert_eq!(c.pow_bits, 18);
        assert_eq!(
            c.argon2,
            Argon2Cost {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
        assert!(c.database_url.expose().contains("data/alphabank.db"));
        assert_eq!(c.master_key_file, PathBuf::from("./data/master.key"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("ALPHABANK_SESSION_IDLE_SECS", "soon"),
            ("ALPHABANK_LISTEN", "nowhere"),
            ("ALPHABANK_CAPTCHA", "google"),
            ("ALPHABANK_ARGON2_M_KIB", "1024"),
            ("ALPHABANK_ARGON2_T", "1"),
            ("ALPHABANK_PLAIN_HTTP", "maybe"),
            ("ALPHABANK_TRUSTED_PROXIES", "10.0.0.0/8,banana"),
            ("ALPHABANK_DATABASE_URL", "mysql://x"),
            ("ALPHABANK_LOG_FORMAT", "xml"),
            ("ALPHABANK_POW_BITS", "99"),
        ] {
            let err = Config::load_from(None, &env(&[(var, value)])).unwrap_err();
            assert_eq!(err.variable, var, "{err}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "session_idle_secs = 120\nrate_limit_per_min = 10\n").unwrap();
        let c = Config::load_from(Some(&file), &env(&[("ALPHABANK_RATE_LIMIT_PER_MIN", "20")]))
            .unwrap();
        assert_eq!(c.session_idle_secs, 120);
        assert_eq!(c.rate_limit_per_min, 20);
    }

    #[test]
    fn secrets_are_not_printed() {
        let c =
            Config::load_from(None, &env(&[("ALPHABANK_MASTER_KEY", "c2VjcmV0c2VjcmV0")])).unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0c2VjcmV0"));
    }

    #[test]
    fn the_smtp_url_says_how_mail_is_secured() {
        let load = |url: &str| Config::load_from(None, &env(&[("ALPHABANK_SMTP_URL", url)]));
        assert!(load("").unwrap().smtp.is_none(), "empty is unset: files");
        let relay = load("smtp://mailer:p%40ss@mail.example")
            .unwrap()
            .smtp
            .unwrap();
        assert_eq!((relay.host.as_str(), relay.port), ("mail.example", 587));
        assert_eq!(relay.security, SmtpSecurity::StartTlsRequired);
        let (user, password) = relay.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose()), ("mailer", "p@ss"));
        let tls = load("smtps://mail.example").unwrap().smtp.unwrap();
        assert_eq!((tls.port, tls.security), (465, SmtpSecurity::ImplicitTls));
        for local in [
            "smtp://127.0.0.1:2525",
            "smtp://localhost:25",
            "smtp://[::1]:2525",
        ] {
            let s = load(local).unwrap().smtp.unwrap();
            assert_eq!(s.security, SmtpSecurity::StartTlsIfOffered, "{local}");
        }
        for bad in [
            "mail.example",
            "http://mail.example",
            "smtp://",
            "smtp://mail.example/path",
            "smtp://mail.example?tls=no",
            "smtp://user@mail.example",
            "smtp://mail.example:0",
        ] {
            let error = load(bad).unwrap_err();
            assert_eq!(error.variable, "ALPHABANK_SMTP_URL", "{bad}");
        }
        let error = load("smtp://u:secret-pw@mail.example/x").unwrap_err();
        assert!(!error.to_string().contains("secret-pw"), "{error}");
        assert!(!format!("{:?}", load("smtp://u:secret-pw@h").unwrap()).contains("secret-pw"));
    }

    #[test]
    fn the_mail_sender_is_an_address() {
        let c = Config::load_from(None, &env(&[])).unwrap();
        assert_eq!(c.mail_from.email.to_string(), "no-reply@localhost");
        let set = env(&[("ALPHABANK_MAIL_FROM", "Bank <post@bank.example>")]);
        assert_eq!(
            Config::load_from(None, &set)
                .unwrap()
                .mail_from
                .email
                .to_string(),
            "post@bank.example"
        );
        let bad = env(&[("ALPHABANK_MAIL_FROM", "not an address")]);
        assert_eq!(
            Config::load_from(None, &bad).unwrap_err().variable,
            "ALPHABANK_MAIL_FROM"
        );
    }
}
