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

/// Keys this configuration knows; anything else under the prefix is ignored by design so that
/// unrelated `ALPHABANK_*` variables (e.g. for tests) do not stop the start.
const KNOWN_KEYS: &[&str] = &[
    "data_dir",
    "database_url",
    "listen",
    "tls_cert",
    "tls_key",
    "plain_http",
    "http_redirect_listen",
    "trusted_proxies",
    "master_key_file",
    "master_key",
    "session_idle_secs",
    "session_absolute_secs",
    "rate_limit_per_min",
    "captcha",
    "pow_bits",
    "captcha_secret",
    "captcha_site_key",
    "captcha_verify_url",
    "argon2_m_kib",
    "argon2_t",
    "argon2_p",
    "log_format",
];

impl Config {
    /// Loads defaults < `file` (if named) < the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Same as [`Config::load`], with the environment given explicitly (used by tests).
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut values: BTreeMap<String, Loose> = BTreeMap::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError {
                    variable: "ALPHABANK_CONFIG".into(),
                    problem: format!("configuration file {} does not exist", path.display()),
                });
            }
            let from_file: BTreeMap<String, Loose> = Figment::from(Toml::file(path))
                .extract()
                .map_err(|e| ConfigError {
                    variable: "ALPHABANK_CONFIG".into(),
                    problem: format!(
                        "cannot read {}: {}",
                        path.display(),
                        first_line(&e.to_string())
                    ),
                })?;
            for (key, value) in from_file {
                if !KNOWN_KEYS.contains(&key.as_str()) {
                    return Err(ConfigError {
                        variable: "ALPHABANK_CONFIG".into(),
                        problem: format!("unknown key `{key}` in {}", path.display()),
                    });
                }
                values.insert(key, value);
            }
        }
        // The environment wins. Values stay text: we parse them ourselves below.
        for (name, value) in env {
            if let Some(key) = name.strip_prefix("ALPHABANK_") {
                let key = key.to_ascii_lowercase();
                if KNOWN_KEYS.contains(&key.as_str()) {
                    values.insert(key, Loose::Text(value.clone()));
                }
            }
        }
        Self::from_values(&values)
    }

    fn from_values(values: &BTreeMap<String, Loose>) -> Result<Self, ConfigError> {
        let text = |key: &str| -> Option<String> {
            values.get(key).map(Loose::text).filter(|s| !s.is_empty())
        };
        let data_dir = PathBuf::from(text("data_dir").unwrap_or_else(|| "./data".into()));
        let database_url = match text("database_url") {
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
                url
            }
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("alphabank.db").display()
            ),
        };
        let listen = parse_addr(
            &text("listen").unwrap_or_else(|| "127.0.0.1:8443".into()),
            "listen",
        )?;
        let tls_cert = text("tls_cert").map(PathBuf::from);
        let tls_key = text("tls_key").map(PathBuf::from);
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
        let plain_http = parse_bool(text("plain_http"), "plain_http", false)?;
        let http_redirect_listen = text("http_redirect_listen")
            .map(|s| parse_addr(&s, "http_redirect_listen"))
            .transpose()?;
        let trusted_proxies = match text("trusted_proxies") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
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
                .collect::<Result<_, _>>()?,
        };
        let master_key_file = text("master_key_file")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("master.key"));
        let master_key = text("master_key").map(Secret::new);
        let session_idle_secs = parse_int(
            text("session_idle_secs"),
            "session_idle_secs",
            300,
            1,
            86_400,
        )?;
        let session_absolute_secs = parse_int(
            text("session_absolute_secs"),
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
            text("rate_limit_per_min"),
            "rate_limit_per_min",
            60,
            1,
            1_000_000,
        )?;
        let captcha = match text("captcha").as_deref().unwrap_or("pow") {
            "pow" => CaptchaMode::Pow,
            "recaptcha" => CaptchaMode::Recaptcha,
            "hcaptcha" => CaptchaMode::Hcaptcha,
            "turnstile" => CaptchaMode::Turnstile,
            "off" => CaptchaMode::Off,
            other => {
                return Err(bad(
                    "captcha",
                    format!("`{other}` is not one of pow, recaptcha, hcaptcha, turnstile, off"),
                ));
            }
        };
        let pow_bits = parse_int(text("pow_bits"), "pow_bits", 18, 1, 32)?;
        let captcha_secret = text("captcha_secret").map(Secret::new);
        let captcha_site_key = text("captcha_site_key");
        let captcha_verify_url = text("captcha_verify_url");
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
        let argon2 = Argon2Cost {
            memory_kib: parse_int(
                text("argon2_m_kib"),
                "argon2_m_kib",
                ARGON2_M_KIB_MIN,
                ARGON2_M_KIB_MIN,
                4 * 1024 * 1024,
            )?,
            iterations: parse_int(text("argon2_t"), "argon2_t", ARGON2_T_MIN, ARGON2_T_MIN, 64)?,
            parallelism: parse_int(text("argon2_p"), "argon2_p", ARGON2_P_MIN, ARGON2_P_MIN, 16)?,
        };
        let log_format = match text("log_format").as_deref().unwrap_or("pretty") {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "log_format",
                    format!("`{other}` is not one of pretty, json"),
                ));
            }
        };
        Ok(Config {
            data_dir,
            database_url: Secret::new(database_url),
            listen,
            tls_cert,
            tls_key,
            plain_http,
            http_redirect_listen,
            trusted_proxies,
            master_key_file,
            master_key,
            session_idle_secs,
            session_absolute_secs,
            rate_limit_per_min,
            captcha,
            pow_bits,
            captcha_secret,
            captcha_site_key,
            captcha_verify_url,
            argon2,
            log_format,
        })
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

fn parse_bool(value: Option<String>, key: &str, default: bool) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(bad(key, format!("`{other}` is not true or false"))),
    }
}

fn parse_int<T>(
    value: Option<String>,
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
}
