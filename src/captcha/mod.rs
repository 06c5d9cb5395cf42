//! The captcha in front of sign-up, login, transfers and ATM deposits (CONTRACT §1, §4).
//!
//! It exists to make scripted use of those forms cost something. The original AlphaBank design
//! depended on Google's reCAPTCHA; the default here is a built-in proof of work ([`pow`]) so the
//! bank needs no third party and loads nothing from another origin. Operators may still choose
//! reCAPTCHA, hCaptcha or Turnstile ([`provider`]), or turn the captcha off (logged at start).
//!
//! The web layer renders [`Captcha::form_fields`] with `templates/captcha.html`, fills a
//! [`CaptchaSubmission`] from the posted form and calls [`Captcha::verify`]; it adds
//! [`Captcha::csp_sources`] to its Content-Security-Policy. See `docs/captcha.md`.

pub mod pow;
pub mod provider;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use provider::{PROVIDER_VERIFY_TIMEOUT, ProviderKind};

use crate::config::{CaptchaMode, Config, ConfigError};
use crate::crypto::Keyring;
use crate::domain::UserId;
use crate::store::captcha::{self as captcha_store, SpendOutcome};
use crate::store::{Db, StoreError, Tx};

/// Most spent challenges kept in the replay store (a 32-byte hash and a time per row: roughly
/// 100–150 MB with the indexes). When this many unexpired rows exist, new solutions are refused
/// ("try again in a few minutes", [`CaptchaError::Overloaded`]) rather than letting the table
/// grow: filling it takes a million solved challenges within ten minutes, each through the rate
/// limit.
pub const CAPTCHA_REPLAY_ROWS_MAX: i64 = 1_000_000;
/// Expired rows are pruned at most this often (and the row count refreshed), per instance.
pub const CAPTCHA_PRUNE_INTERVAL_MILLIS: i64 = 60_000;
/// Rows deleted per pruning transaction, so a prune never holds the write lock for long.
pub const CAPTCHA_PRUNE_BATCH_ROWS: i64 = 10_000;
/// Pruning transactions per prune (bounds the work one request can be asked to do).
pub const CAPTCHA_PRUNE_BATCHES_MAX: u32 = 200;
/// A spent challenge is remembered this long after it expires, so instances whose clocks differ
/// by less than this cannot be played against each other.
pub const CAPTCHA_REPLAY_CLOCK_SKEW_MILLIS: i64 = 60_000;

/// What a form must render for the configured captcha (`templates/captcha.html`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptchaFields {
    /// Captcha off: render nothing.
    None,
    /// The built-in proof of work: a fresh challenge and its difficulty in leading zero bits.
    Pow { challenge: String, bits: u8 },
    /// A third-party widget.
    Provider {
        provider: &'static str,
        site_key: String,
        script_src: &'static str,
        widget_class: &'static str,
    },
}

/// The captcha part of a posted form. The web layer fills `provider_response` from the field
/// named by [`provider_response_field`] (`g-recaptcha-response`, `h-captcha-response` or
/// `cf-turnstile-response`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptchaSubmission {
    pub pow_challenge: Option<String>,
    pub pow_nonce: Option<String>,
    pub provider_response: Option<String>,
}

/// Origins to add to the Content-Security-Policy for a third-party widget (empty otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CspSources {
    pub script: Vec<&'static str>,
    pub frame: Vec<&'static str>,
    /// hCaptcha's guidance also asks for `style-src`.
    pub style: Vec<&'static str>,
    pub connect: Vec<&'static str>,
}

impl CspSources {
    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
            && self.frame.is_empty()
            && self.style.is_empty()
            && self.connect.is_empty()
    }
}

/// A proof-of-work solution that passed every check but the replay mark (see
/// [`Captcha::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSpend {
    key: [u8; 32],
    keep_until_millis: i64,
}

impl PendingSpend {
    /// The replay mark's key (hex) and how long it is kept, to carry in a sealed token.
    pub fn to_parts(&self) -> (String, i64) {
        (hex::encode(self.key), self.keep_until_millis)
    }

    /// A checked challenge carried by a token whose MAC the caller verified (a transfer's
    /// confirmation): it is spent in the movement's transaction like any other.
    pub fn from_parts(key_hex: &str, keep_until_millis: i64) -> Option<PendingSpend> {
        let key = <[u8; 32]>::try_from(hex::decode(key_hex).ok()?).ok()?;
        Some(PendingSpend {
            key,
            keep_until_millis,
        })
    }
}

/// Why a captcha was refused. The `Display` text of every variant but [`CaptchaError::Store`] is
/// safe to show to the user; [`CaptchaError::user_message`] is safe for all of them.
///
/// Suggested answers: `Store` is an operating error (500, generic page, logged); every other
/// variant re-shows the form with its message (422), with a fresh challenge.
#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    #[error("Please complete the security check.")]
    Missing,
    #[error("The security check was not valid. Please try again.")]
    Forged,
    #[error("The security check expired. Please try again.")]
    Expired,
    #[error("This security check was already used. Please try again.")]
    Reused,
    #[error("The security check was not completed. Please try again.")]
    InsufficientWork,
    #[error("The security check failed. Please try again.")]
    ProviderRejected,
    #[error("The security check could not be completed right now. Please try again in a moment.")]
    ProviderUnavailable,
    #[error("Too many security checks right now. Please try again in a few minutes.")]
    Overloaded,
    #[error("captcha replay store: {0}")]
    Store(#[from] StoreError),
}

impl CaptchaError {
    /// Not the user's fault: the database failed.
    pub fn is_operating_error(&self) -> bool {
        matches!(self, CaptchaError::Store(_))
    }

    /// A message that can be shown to the user for any variant.
    pub fn user_message(&self) -> String {
        match self {
            CaptchaError::Store(_) => "Something went wrong on our side. Please try again.".into(),
            other => other.to_string(),
        }
    }

    /// A short stable name for logs and audit details.
    pub fn kind(&self) -> &'static str {
        match self {
            CaptchaError::Missing => "missing",
            CaptchaError::Forged => "forged",
            CaptchaError::Expired => "expired",
            CaptchaError::Reused => "reused",
            CaptchaError::InsufficientWork => "insufficient_work",
            CaptchaError::ProviderRejected => "provider_rejected",
            CaptchaError::ProviderUnavailable => "provider_unavailable",
            CaptchaError::Overloaded => "overloaded",
            CaptchaError::Store(_) => "store",
        }
    }
}

/// The third-party provider of a mode, if any.
pub fn provider_kind(mode: CaptchaMode) -> Option<ProviderKind> {
    match mode {
        CaptchaMode::Recaptcha => Some(ProviderKind::Recaptcha),
        CaptchaMode::Hcaptcha => Some(ProviderKind::Hcaptcha),
        CaptchaMode::Turnstile => Some(ProviderKind::Turnstile),
        CaptchaMode::Pow | CaptchaMode::Off => None,
    }
}

/// The form field a third-party widget posts its token in (`None` for pow and off).
pub fn provider_response_field(mode: CaptchaMode) -> Option<&'static str> {
    provider_kind(mode).map(ProviderKind::response_field)
}

/// A configured third-party provider; `verifier` is `None` when its configuration is unusable,
/// in which case every verification fails closed.
#[derive(Debug)]
struct ProviderSetup {
    kind: ProviderKind,
    site_key: String,
    verifier: Option<provider::Verifier>,
}

/// Replay-store bookkeeping shared by the clones of one [`Captcha`].
#[derive(Debug, Default)]
struct ReplayState {
    last_prune_millis: AtomicI64,
    /// Rows counted at the last prune plus the rows this instance inserted since.
    rows: AtomicI64,
}

#[derive(Debug)]
struct Inner {
    mode: CaptchaMode,
    pow_bits: u8,
    db: Db,
    keyring: Keyring,
    provider: Option<ProviderSetup>,
    replay: ReplayState,
}

/// The captcha service. Cheap to clone; clones share the HTTP client and the replay bookkeeping.
#[derive(Debug, Clone)]
pub struct Captcha {
    inner: Arc<Inner>,
    provider_timeout: Duration,
    replay_rows_max: i64,
}

fn now_secs() -> i64 {
    crate::now_millis() / 1000
}

impl Captcha {
    /// Builds the service. A third-party configuration that cannot work (missing secret or site
    /// key, a plain-http verify URL to another host) is logged and fails closed: every form is
    /// refused. Prefer [`Captcha::try_new`] at start-up, which stops the start instead.
    pub fn new(config: &Config, db: Db, keyring: Keyring) -> Captcha {
        let (captcha, problem) = Self::build(config, db, keyring);
        if let Some(problem) = problem {
            tracing::error!(%problem, "captcha misconfigured: every captcha will be refused");
        }
        captcha
    }

    /// Like [`Captcha::new`], but a configuration that cannot work is an error naming the
    /// variable (CONTRACT §1: a bad configuration value stops the start).
    pub fn try_new(config: &Config, db: Db, keyring: Keyring) -> Result<Captcha, ConfigError> {
        match Self::build(config, db, keyring) {
            (captcha, None) => Ok(captcha),
            (_, Some(problem)) => Err(problem),
        }
    }

    fn build(config: &Config, db: Db, keyring: Keyring) -> (Captcha, Option<ConfigError>) {
        let mut problem = None;
        let pow_bits = config.pow_bits.clamp(pow::POW_BITS_MIN, pow::POW_BITS_MAX);
        if pow_bits != config.pow_bits {
            problem = Some(ConfigError {
                variable: "ALPHABANK_POW_BITS".into(),
                problem: format!(
                    "{} is outside the allowed range {}..={}",
                    config.pow_bits,
                    pow::POW_BITS_MIN,
                    pow::POW_BITS_MAX
                ),
            });
        }
        let provider = provider_kind(config.captcha).map(|kind| {
            let (verifier, trouble) = Self::verifier(config, kind);
            if trouble.is_some() {
                problem = trouble;
            }
            ProviderSetup {
                kind,
                site_key: config.captcha_site_key.clone().unwrap_or_default(),
                verifier,
            }
        });
        let captcha = Captcha {
            inner: Arc::new(Inner {
                mode: config.captcha,
                pow_bits,
                db,
                keyring,
                provider,
                replay: ReplayState::default(),
            }),
            provider_timeout: PROVIDER_VERIFY_TIMEOUT,
            replay_rows_max: CAPTCHA_REPLAY_ROWS_MAX,
        };
        (captcha, problem)
    }

    fn verifier(
        config: &Config,
        kind: ProviderKind,
    ) -> (Option<provider::Verifier>, Option<ConfigError>) {
        let fail = |variable: &str, problem: String| {
            (
                None,
                Some(ConfigError {
                    variable: variable.into(),
                    problem,
                }),
            )
        };
        let Some(secret) = config
            .captcha_secret
            .clone()
            .filter(|s| !s.expose().is_empty())
        else {
            return fail(
                "ALPHABANK_CAPTCHA_SECRET",
                "is required for a third-party captcha provider".into(),
            );
        };
        if config
            .captcha_site_key
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return fail(
                "ALPHABANK_CAPTCHA_SITE_KEY",
                "is required for a third-party captcha provider".into(),
            );
        }
        let url_text = config
            .captcha_verify_url
            .as_deref()
            .unwrap_or(kind.default_verify_url());
        let url = match provider::check_verify_url(url_text) {
            Ok(url) => url,
            Err(problem) => return fail("ALPHABANK_CAPTCHA_VERIFY_URL", problem),
        };
        let client = match provider::build_client() {
            Ok(client) => client,
            Err(problem) => {
                return fail(
                    "ALPHABANK_CAPTCHA",
                    format!("cannot build the HTTPS client for the provider: {problem}"),
                );
            }
        };
        (
            Some(provider::Verifier {
                kind,
                secret,
                url,
                client,
            }),
            None,
        )
    }

    /// Sets how long a provider verification may take (default [`PROVIDER_VERIFY_TIMEOUT`]).
    pub fn with_provider_timeout(mut self, timeout: Duration) -> Captcha {
        self.provider_timeout = timeout;
        self
    }

    /// Sets the replay-store bound (default [`CAPTCHA_REPLAY_ROWS_MAX`]); for tests.
    pub fn with_replay_rows_max(mut self, rows: i64) -> Captcha {
        self.replay_rows_max = rows;
        self
    }

    pub fn mode(&self) -> CaptchaMode {
        self.inner.mode
    }

    /// The fields a form renders; for the proof of work, a fresh challenge each call.
    pub fn form_fields(&self) -> CaptchaFields {
        match (self.inner.mode, &self.inner.provider) {
            (CaptchaMode::Pow, _) => CaptchaFields::Pow {
                challenge: self.issue_at(now_secs()),
                bits: self.inner.pow_bits,
            },
            (_, Some(setup)) => CaptchaFields::Provider {
                provider: setup.kind.name(),
                site_key: setup.site_key.clone(),
                script_src: setup.kind.script_src(),
                widget_class: setup.kind.widget_class(),
            },
            _ => CaptchaFields::None,
        }
    }

    /// Mints a proof-of-work challenge at the configured difficulty as if the time were
    /// `now_secs` (Unix seconds). Only ever mints what the server would mint anyway; tests use
    /// it to make expired challenges.
    pub fn issue_at(&self, now_secs: i64) -> String {
        pow::mint(&self.inner.keyring, self.inner.pow_bits, now_secs)
    }

    /// Origins the Content-Security-Policy must allow; empty unless a provider is configured.
    pub fn csp_sources(&self) -> CspSources {
        match provider_kind(self.inner.mode) {
            None => CspSources::default(),
            Some(kind) => {
                let (script, frame, style, connect) = kind.csp_origins();
                CspSources {
                    script: script.to_vec(),
                    frame: frame.to_vec(),
                    style: style.to_vec(),
                    connect: connect.to_vec(),
                }
            }
        }
    }

    /// Checks a posted captcha and records it as spent (its own transaction).
    /// `client_ip` is passed on to a third-party provider.
    pub async fn verify(
        &self,
        submission: &CaptchaSubmission,
        client_ip: Option<IpAddr>,
    ) -> Result<(), CaptchaError> {
        match self.check(submission, client_ip).await? {
            Some(pending) => self.spend(pending).await,
            None => Ok(()),
        }
    }

    /// Spends a checked challenge's replay mark in a transaction of its own.
    pub async fn spend(&self, pending: PendingSpend) -> Result<(), CaptchaError> {
        let mut tx = self.inner.db.begin_write().await?;
        self.spend_in(&mut Tx::Sqlx(&mut tx), pending).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Everything [`Captcha::verify`] checks except the replay mark, which needs no database
    /// write yet: `Some(pending)` must then be passed to [`Captcha::spend_in`] inside the form's
    /// write transaction before the form counts as verified. A third-party provider's verify call
    /// happens here, never while a write transaction is open.
    pub async fn check(
        &self,
        submission: &CaptchaSubmission,
        client_ip: Option<IpAddr>,
    ) -> Result<Option<PendingSpend>, CaptchaError> {
        let result = match self.inner.mode {
            CaptchaMode::Off => Ok(None),
            CaptchaMode::Pow => self.check_pow(submission).await.map(Some),
            CaptchaMode::Recaptcha | CaptchaMode::Hcaptcha | CaptchaMode::Turnstile => self
                .verify_provider(submission, client_ip)
                .await
                .map(|()| None),
        };
        if let Err(error) = &result {
            tracing::debug!(kind = error.kind(), "captcha refused");
        }
        result
    }

    async fn check_pow(
        &self,
        submission: &CaptchaSubmission,
    ) -> Result<PendingSpend, CaptchaError> {
        let present = |field: &Option<String>| field.clone().filter(|value| !value.is_empty());
        let challenge = present(&submission.pow_challenge).ok_or(CaptchaError::Missing)?;
        let nonce = present(&submission.pow_nonce).ok_or(CaptchaError::Missing)?;
        let parsed = pow::parse(&challenge).ok_or(CaptchaError::Forged)?;
        if !pow::nonce_is_well_formed(&nonce) {
            return Err(CaptchaError::Forged);
        }
        if !parsed.signed_by(&self.inner.keyring) {
            return Err(CaptchaError::Forged);
        }
        if now_secs() >= parsed.expires_at_secs {
            return Err(CaptchaError::Expired);
        }
        if parsed.bits < self.inner.pow_bits {
            return Err(CaptchaError::InsufficientWork);
        }
        if pow::work_bits(&challenge, &nonce) < u32::from(parsed.bits) {
            return Err(CaptchaError::InsufficientWork);
        }
        let now_millis = crate::now_millis();
        self.prune_if_due(now_millis).await?;
        let replay = &self.inner.replay;
        if replay.rows.load(Ordering::Relaxed) >= self.replay_rows_max {
            tracing::warn!(
                rows_max = self.replay_rows_max,
                "captcha replay store is full of unexpired challenges: refusing new solutions"
            );
            return Err(CaptchaError::Overloaded);
        }
        Ok(PendingSpend {
            key: pow::spent_key(&challenge),
            keep_until_millis: parsed
                .expires_at_secs
                .saturating_mul(1000)
                .saturating_add(CAPTCHA_REPLAY_CLOCK_SKEW_MILLIS),
        })
    }

    /// Records a solved challenge as spent inside the caller's write transaction; a second
    /// spend of the same challenge (here or on another instance) is `Reused`.
    pub async fn spend_in(
        &self,
        tx: &mut Tx<'_>,
        pending: PendingSpend,
    ) -> Result<(), CaptchaError> {
        let outcome = captcha_store::spend_in(tx, &pending.key, pending.keep_until_millis).await?;
        self.counted(outcome)
    }

    /// [`Captcha::spend_in`] and the customer's one-time-code `step` (on SQLite in one call; see
    /// `store::captcha::spend_with_step_in`): a replayed challenge spends no step.
    /// `Ok(whether the step was spent)`.
    pub async fn spend_with_step_in(
        &self,
        tx: &mut Tx<'_>,
        pending: PendingSpend,
        user_id: UserId,
        step: i64,
    ) -> Result<bool, CaptchaError> {
        let (outcome, step_spent) = captcha_store::spend_with_step_in(
            tx,
            &pending.key,
            pending.keep_until_millis,
            user_id,
            step,
        )
        .await?;
        self.counted(outcome)?;
        Ok(step_spent)
    }

    fn counted(&self, outcome: SpendOutcome) -> Result<(), CaptchaError> {
        match outcome {
            SpendOutcome::Spent => {
                // Counted before the commit: at worst a rolled-back spend is counted until the
                // next prune recounts the rows.
                self.inner.replay.rows.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            SpendOutcome::AlreadySpent => Err(CaptchaError::Reused),
        }
    }

    /// Deletes expired rows and recounts, at most once per `CAPTCHA_PRUNE_INTERVAL_MILLIS`
    /// (one request does it; concurrent ones go on).
    async fn prune_if_due(&self, now_millis: i64) -> Result<(), CaptchaError> {
        let replay = &self.inner.replay;
        let last = replay.last_prune_millis.load(Ordering::Relaxed);
        if now_millis.saturating_sub(last) < CAPTCHA_PRUNE_INTERVAL_MILLIS
            || replay
                .last_prune_millis
                .compare_exchange(last, now_millis, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        let db = &self.inner.db;
        for _ in 0..CAPTCHA_PRUNE_BATCHES_MAX {
            let deleted =
                captcha_store::prune_expired(db, now_millis, CAPTCHA_PRUNE_BATCH_ROWS).await?;
            if deleted < CAPTCHA_PRUNE_BATCH_ROWS as u64 {
                break;
            }
        }
        let rows = captcha_store::count(db).await?;
        replay.rows.store(rows, Ordering::Relaxed);
        Ok(())
    }

    async fn verify_provider(
        &self,
        submission: &CaptchaSubmission,
        client_ip: Option<IpAddr>,
    ) -> Result<(), CaptchaError> {
        let response = submission
            .provider_response
            .as_deref()
            .filter(|value| !value.is_empty())
            .ok_or(CaptchaError::Missing)?;
        if response.len() > provider::PROVIDER_RESPONSE_BYTES_MAX {
            return Err(CaptchaError::Forged);
        }
        let Some(verifier) = self
            .inner
            .provider
            .as_ref()
            .and_then(|setup| setup.verifier.as_ref())
        else {
            tracing::error!("captcha provider misconfigured: refusing");
            return Err(CaptchaError::ProviderUnavailable);
        };
        verifier
            .verify(response, client_ip, self.provider_timeout)
            .await
    }
}
