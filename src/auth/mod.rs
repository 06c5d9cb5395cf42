//! Authentication: sign-up, authenticator enrollment, login with a second factor, brute-force
//! lockout, password change. Every login failure looks the same to the client: same status, same
//! words, and about the same time (a dummy hash is verified for unknown emails).

pub mod failures;
pub mod passkey;
pub mod password;
pub mod recovery;
pub mod renewal;
pub mod session;
pub mod totp;
pub mod webauthn;

use crate::audit::{AuditContext, AuditEvent};
use crate::crypto::{Aad, CryptoError};
use crate::domain::{Email, Password, UserId};
use crate::mail::Mail;
use crate::startup::Services;
use crate::store::failures::{self as failure_store, Count, Side};
use crate::store::users::CodeCheck;
use crate::store::{StoreError, sessions as session_store, users as user_store};

use self::password::{HashError, Verified};
use self::session::{NewSession, Session, Stage};
use self::totp::TotpSecret;

pub use self::failures::{FAILURES_MAX, LOCKOUT_SECS, LOCKOUT_SECS_MAX};
/// Failed logins one client address may make per window before it is throttled.
pub const LOGIN_FAILURES_PER_IP_MAX: i64 = 100;
pub const LOGIN_THROTTLE_WINDOW_MILLIS: i64 = 15 * 60 * 1_000;
/// Recovery codes issued at enrollment.
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Email, password or code is incorrect.")]
    LoginFailed,
    #[error("Too many failed logins from your network. Wait a few minutes and try again.")]
    Throttled,
    #[error("The bank is busy. Please try again in a moment.")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Internal(String),
}

impl From<HashError> for AuthError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => AuthError::Busy,
            HashError::Internal(message) => AuthError::Internal(message),
        }
    }
}

pub fn totp_aad(user_id: UserId) -> Aad {
    Aad::new("users", "totp_secret_enc", user_id)
}

fn recovery_hash(services: &Services, user_id: UserId, code: &str) -> Vec<u8> {
    let normalised: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    services
        .keyring
        .blind_index("recovery", &format!("{user_id}:{normalised}"))
}

fn new_recovery_code() -> String {
    let raw = data_encoding::BASE32_NOPAD
        .encode(&crate::crypto::random_bytes::<7>())
        .to_ascii_lowercase();
    let chars: String = raw.chars().take(10).collect();
    format!(
        "{}-{}",
        chars.get(..5).unwrap_or_default(),
        chars.get(5..).unwrap_or_default()
    )
}

/// The customer's TOTP secret, created on first need (enrollment page).
pub async fn totp_secret(services: &Services, user_id: UserId) -> Result<TotpSecret, AuthError> {
    let user = user_store::auth_by_id(&services.db, user_id)
        .await?
        .ok_or(AuthError::LoginFailed)?;
    if let Some(sealed) = user.totp_secret_enc {
        let bytes = services.keyring.open(&totp_aad(user_id), &sealed)?;
        return Ok(TotpSecret::from_bytes(&bytes));
    }
    let secret = TotpSecret::generate();
    user_store::set_totp_secret(
        &services.db,
        user_id,
        &services.keyring.seal(&totp_aad(user_id), secret.as_bytes()),
    )
    .await?;
    // Read back: a concurrent request may have stored its own secret first.
    let user = user_store::auth_by_id(&services.db, user_id)
        .await?
        .ok_or(AuthError::LoginFailed)?;
    let sealed = user.totp_secret_enc.ok_or(AuthError::LoginFailed)?;
    Ok(TotpSecret::from_bytes(
        &services.keyring.open(&totp_aad(user_id), &sealed)?,
    ))
}

/// Checks a six-digit code and spends its step (no replay). A correct code is spent once checked.
pub async fn check_totp(
    services: &Services,
    user_id: UserId,
    code: &str,
    check: CodeCheck,
) -> Result<bool, AuthError> {
    match totp_candidate_step(services, user_id, code).await? {
        Some(step) => Ok(user_store::spend_totp_step(&services.db, user_id, step, check).await?),
        None => Ok(false),
    }
}

/// The step a code matches if it is newer than the customer's last accepted step (reads only).
/// The code counts only once that step is spent with `store::users::spend_totp_step_in` (or
/// [`check_totp`]), which also settles a race between two requests with the same code.
pub async fn totp_candidate_step(
    services: &Services,
    user_id: UserId,
    code: &str,
) -> Result<Option<i64>, AuthError> {
    if totp::parse_code(code).is_none() {
        return Ok(None);
    }
    let user = user_store::auth_by_id(&services.db, user_id)
        .await?
        .ok_or(AuthError::LoginFailed)?;
    totp_step_with(
        &services.keyring,
        user_id,
        code,
        user.totp_secret_enc.as_deref(),
        user.totp_last_step,
    )
}

/// [`totp_candidate_step`] from the customer's sealed secret and last step, already read.
pub fn totp_step_with(
    keyring: &crate::crypto::Keyring,
    user_id: UserId,
    code: &str,
    sealed_secret: Option<&[u8]>,
    last_step: i64,
) -> Result<Option<i64>, AuthError> {
    let (Some(code), Some(sealed)) = (totp::parse_code(code), sealed_secret) else {
        return Ok(None);
    };
    let secret = TotpSecret::from_bytes(&keyring.open(&totp_aad(user_id), sealed)?);
    let now_secs = crate::now_millis() / 1_000;
    Ok(secret
        .matching_step(&code, now_secs)
        .filter(|step| *step > last_step))
}

/// Confirms enrollment with a first code: the account becomes usable, ten recovery codes are
/// issued (stored hashed), and the pending session is replaced by a new full session.
pub async fn confirm_enrollment(
    services: &Services,
    ctx: &AuditContext,
    pending: &Session,
    code: &str,
    user_agent: Option<&str>,
) -> Result<Option<NewSession>, AuthError> {
    if !check_totp(services, pending.user_id, code, CodeCheck::Login).await? {
        return Ok(None);
    }
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| recovery_hash(services, pending.user_id, c))
        .collect();
    let mut tx = services.db.begin_write().await?;
    user_store::confirm_totp(&mut tx, pending.user_id).await?;
    session_store::insert_recovery_codes(&mut tx, pending.user_id, &hashes).await?;
    session_store::delete_in(&mut tx, &pending.id_hash).await?;
    let ctx = ctx.with_user(pending.user_id);
    let new = session::create_in(
        services,
        &mut tx,
        pending.user_id,
        Stage::Full,
        &ctx,
        user_agent,
        Some(&codes),
    )
    .await?;
    services
        .audit
        .record_in(&mut tx, &ctx, AuditEvent::TwoFactorEnrolled)
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    tx.commit().await?;
    Ok(Some(new))
}

/// The recovery codes to show once after enrollment (then forgotten).
pub async fn take_recovery_codes(
    services: &Services,
    session: &Session,
) -> Result<Option<Vec<String>>, AuthError> {
    let Some(sealed) = session_store::take_recovery_codes(&services.db, &session.id_hash).await?
    else {
        return Ok(None);
    };
    let text = services
        .keyring
        .open_string(&session::recovery_aad(&session.id_hash), &sealed)?;
    Ok(Some(text.lines().map(str::to_string).collect()))
}

/// What a login attempt carries, as typed, and the browser's device cookie.
pub struct LoginAttempt<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub otp: &'a str,
    pub device_cookie: Option<&'a str>,
}

/// A login that passed: the new session, and the device cookie the browser is to keep.
pub struct LoggedIn {
    pub session: NewSession,
    pub device_cookie: String,
}

/// Logs a customer in. Every failure is [`AuthError::LoginFailed`] (or `Throttled`/`Busy`, which
/// say nothing about the account). The failure is charged to its count before the password is
/// verified (see [`failures`]); the same Argon2 work is done whatever is wrong.
pub async fn login(
    services: &Services,
    ctx: &AuditContext,
    attempt: &LoginAttempt<'_>,
    user_agent: Option<&str>,
) -> Result<LoggedIn, AuthError> {
    let now = crate::now_millis();
    let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    refuse_throttled_address(services, ctx, &ip, now).await?;
    let password = Password::parse_existing(attempt.password).ok();
    let user = user_by_email(services, attempt.email).await?;
    let gate = gate(services, user, attempt.device_cookie, now).await?;
    let stored = match &gate {
        Gate::Open(charged) => Some(charged.user.password_hash.as_str()),
        Gate::NoAccount | Gate::Locked(_) => None,
    };
    let verified = verify_password(services, stored, password.as_ref()).await?;
    let refuse = |reason, user_id| Refusal { reason, user_id };
    let charged = match gate {
        Gate::NoAccount => {
            return refused(services, ctx, &ip, now, refuse("unknown_email", None)).await;
        }
        Gate::Locked(id) => {
            return refused(services, ctx, &ip, now, refuse("locked", Some(id))).await;
        }
        Gate::Open(charged) => charged,
    };
    let user_id = charged.user.id;
    let method = match check_factors(services, ctx, &charged, verified, attempt.otp).await? {
        Ok(method) => method,
        Err(reason) => {
            let (side, count) = (&charged.side, charged.count);
            failures::lock_if_full(&services.db, &services.outbox, ctx, user_id, side, count)
                .await?;
            return refused(services, ctx, &ip, now, refuse(reason, Some(user_id))).await;
        }
    };
    // The lock re-checked as the count starts again: no session while the count is locked.
    if !failure_store::clear(&services.db, user_id, &charged.side, crate::now_millis()).await? {
        return refused(services, ctx, &ip, now, refuse("locked", Some(user_id))).await;
    }
    let rehash = password
        .as_ref()
        .filter(|_| verified == Verified::YesRehash);
    let session = complete_login(services, ctx, user_id, rehash, method, user_agent).await?;
    let seen = DeviceSeen::LoggedIn { ctx, user_agent };
    let device_cookie = remember_device(services, user_id, attempt.device_cookie, seen).await?;
    Ok(LoggedIn {
        session,
        device_cookie,
    })
}

/// Refuses (audited) a client address that made too many failed logins in the window.
async fn refuse_throttled_address(
    services: &Services,
    ctx: &AuditContext,
    ip: &str,
    now: i64,
) -> Result<(), AuthError> {
    let failures =
        session_store::ip_login_failures(&services.db, ip, now, LOGIN_THROTTLE_WINDOW_MILLIS)
            .await?;
    if failures < LOGIN_FAILURES_PER_IP_MAX {
        return Ok(());
    }
    services
        .audit
        .record_best_effort(
            ctx,
            AuditEvent::LoginFailed {
                reason: "ip_throttled",
            },
        )
        .await;
    Err(AuthError::Throttled)
}

/// The account a typed email names, if it parses and is known.
async fn user_by_email(
    services: &Services,
    email: &str,
) -> Result<Option<user_store::UserAuthRow>, AuthError> {
    let Ok(email) = Email::parse(email) else {
        return Ok(None);
    };
    let bidx = services.keyring.blind_index("email", &email.lookup_key());
    Ok(user_store::auth_by_email_bidx(&services.db, &bidx).await?)
}

/// Verifies a typed password against `stored` with the same Argon2 work whatever is wrong (no
/// account: the dummy hash; a password that does not parse: a dummy password), so timing tells
/// nothing. A password that does not parse is [`Verified::No`].
async fn verify_password(
    services: &Services,
    stored: Option<&str>,
    typed: Option<&Password>,
) -> Result<Verified, AuthError> {
    let dummy = Password::parse_existing("not-a-real-password-0000")
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    let verified = services
        .hasher
        .verify(stored, typed.unwrap_or(&dummy))
        .await?;
    Ok(if typed.is_some() {
        verified
    } else {
        Verified::No
    })
}

/// A login refused: the reason audited, and the account it names, if any.
struct Refusal {
    reason: &'static str,
    user_id: Option<UserId>,
}

/// Whether a login's password may be verified against an account.
enum Gate {
    /// No account with a confirmed authenticator has that email.
    NoAccount,
    /// The count this browser's failures go to is locked, or full with failures in flight.
    Locked(UserId),
    /// The failure is charged in advance.
    Open(Charged),
}

/// An account whose login failure was charged to `side`, leaving `count`.
struct Charged {
    user: user_store::UserAuthRow,
    side: Side,
    count: Count,
}

async fn gate(
    services: &Services,
    user: Option<user_store::UserAuthRow>,
    device_cookie: Option<&str>,
    now: i64,
) -> Result<Gate, AuthError> {
    let Some(user) = user.filter(|u| u.totp_confirmed) else {
        return Ok(Gate::NoAccount);
    };
    let side = failures::side_of(&services.db, &services.keyring, user.id, device_cookie).await?;
    Ok(
        match failure_store::charge(&services.db, user.id, &side, now).await? {
            Some(count) => Gate::Open(Charged { user, side, count }),
            None => Gate::Locked(user.id),
        },
    )
}

/// The password, then the second factor: `Ok(the second factor's method)` or `Err(the reason)`.
async fn check_factors(
    services: &Services,
    ctx: &AuditContext,
    charged: &Charged,
    verified: Verified,
    otp: &str,
) -> Result<Result<&'static str, &'static str>, AuthError> {
    if verified == Verified::No {
        return Ok(Err("wrong_password"));
    }
    Ok(second_factor(services, ctx, charged.user.id, otp)
        .await?
        .ok_or("wrong_code"))
}

/// The method of a right second factor: a six-digit TOTP code, or else a recovery code (spent).
async fn second_factor(
    services: &Services,
    ctx: &AuditContext,
    user_id: UserId,
    otp: &str,
) -> Result<Option<&'static str>, AuthError> {
    Ok(if totp::parse_code(otp).is_some() {
        check_totp(services, user_id, otp, CodeCheck::Login)
            .await?
            .then_some("totp")
    } else {
        spend_recovery_code(services, ctx, user_id, otp)
            .await?
            .then_some("recovery_code")
    })
}

/// Counts a refused login against the client address, audits it, and answers the one failure.
async fn refused<T>(
    services: &Services,
    ctx: &AuditContext,
    ip: &str,
    now: i64,
    refusal: Refusal,
) -> Result<T, AuthError> {
    session_store::record_ip_login_failure(&services.db, ip, now, LOGIN_THROTTLE_WINDOW_MILLIS)
        .await?;
    let ctx = AuditContext {
        user_id: refusal.user_id,
        ..ctx.clone()
    };
    let event = AuditEvent::LoginFailed {
        reason: refusal.reason,
    };
    services.audit.record_best_effort(&ctx, event).await;
    Err(AuthError::LoginFailed)
}

/// A login that passed: an outdated hash replaced by `rehash`'s, and a new full session
/// (audited).
async fn complete_login(
    services: &Services,
    ctx: &AuditContext,
    user_id: UserId,
    rehash: Option<&Password>,
    method: &'static str,
    user_agent: Option<&str>,
) -> Result<NewSession, AuthError> {
    if let Some(password) = rehash {
        let hash = services.hasher.hash(password).await?;
        let mut tx = services.db.begin_write().await?;
        user_store::set_password_hash(&mut tx, user_id, &hash).await?;
        tx.commit().await?;
    }
    let ctx = ctx.with_user(user_id);
    let mut new = session::create(services, user_id, Stage::Full, &ctx, user_agent).await?;
    if method == "recovery_code" {
        // The home page then says how many codes are left and offers a new authenticator.
        session_store::set_login_method(&services.db, &new.session.id_hash, method).await?;
        new.session.via_recovery_code = true;
    }
    services
        .audit
        .record_best_effort(&ctx, AuditEvent::LoginSucceeded { method })
        .await;
    Ok(new)
}

/// How a browser came to be remembered: finishing enrolment (the account's first browser,
/// nothing to tell) or logging in (a browser new to the account is mailed about).
pub enum DeviceSeen<'a> {
    Enrolled,
    LoggedIn {
        ctx: &'a AuditContext,
        user_agent: Option<&'a str>,
    },
}

/// Remembers the browser that logged in (or finished enrolling): its device cookie if it sent a
/// well-formed one, else a new one. Returns the cookie's value (sent again, so its year starts
/// again). A log-in from a browser the account did not know writes `new-device-login` in the
/// same transaction.
pub async fn remember_device(
    services: &Services,
    user_id: UserId,
    sent: Option<&str>,
    seen: DeviceSeen<'_>,
) -> Result<String, AuthError> {
    let cookie = sent
        .filter(|c| failures::device_hash(&services.keyring, c).is_some())
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(failures::new_device_cookie);
    if let Some(hash) = failures::device_hash(&services.keyring, &cookie) {
        let now = crate::now_millis();
        let mut tx = services.db.begin_write().await?;
        let new = failure_store::remember_device(&mut tx, user_id, &hash, now).await?;
        let mut mailed = false;
        if new && let DeviceSeen::LoggedIn { ctx, user_agent } = seen {
            let outbox = &services.outbox;
            let mail = Mail::new_device_login(outbox.public_url(), now, ctx.client_ip, user_agent);
            outbox
                .notify_in(&mut tx, ctx, user_id, &mail)
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))?;
            mailed = true;
        }
        tx.commit().await?;
        if mailed {
            services.outbox.wake();
        }
    }
    Ok(cookie)
}

async fn spend_recovery_code(
    services: &Services,
    ctx: &AuditContext,
    user_id: UserId,
    code: &str,
) -> Result<bool, AuthError> {
    let trimmed = code.trim();
    if trimmed.is_empty() || trimmed.len() > 32 {
        return Ok(false);
    }
    let spent = session_store::spend_recovery_code(
        &services.db,
        user_id,
        &recovery_hash(services, user_id, trimmed),
        crate::now_millis(),
    )
    .await?;
    if spent {
        let remaining = session_store::recovery_codes_left(&services.db, user_id).await?;
        services
            .audit
            .record_best_effort(
                &ctx.with_user(user_id),
                AuditEvent::RecoveryCodeUsed { remaining },
            )
            .await;
    }
    Ok(spent)
}

/// A one-time code checked inside a session, its failure counted (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeVerdict {
    /// Right, and spent.
    Right,
    /// Wrong (or spent before), and counted.
    Wrong,
    /// Wrong, and the count is full: the session must end.
    TooManyFailures,
}

/// Checks a code (TOTP only: recovery codes do not confirm actions) for an action inside a
/// session; a wrong one counts toward the account's failures.
pub async fn check_code_counted(
    services: &Services,
    ctx: &AuditContext,
    user_id: UserId,
    otp: &str,
) -> Result<CodeVerdict, AuthError> {
    if check_totp(services, user_id, otp, CodeCheck::Session).await? {
        return Ok(CodeVerdict::Right);
    }
    let Some(count) = failure_store::charge_in_session(&services.db, user_id).await? else {
        return Ok(CodeVerdict::TooManyFailures);
    };
    let (db, outbox) = (&services.db, &services.outbox);
    let ctx = ctx.with_user(user_id);
    Ok(
        if failures::lock_if_full(db, outbox, &ctx, user_id, &Side::Shared, count).await? {
            CodeVerdict::TooManyFailures
        } else {
            CodeVerdict::Wrong
        },
    )
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    #[error("{message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// The failure filled the account's count: the session must end (CONTRACT §3).
    #[error("Too many wrong passwords or codes.")]
    TooManyFailures,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<StoreError> for PasswordChangeError {
    fn from(error: StoreError) -> Self {
        PasswordChangeError::Auth(error.into())
    }
}

/// The one message for a wrong current password or a wrong code (no oracle for either).
pub const WRONG_PASSWORD_OR_CODE: &str =
    "Your current password or the code is not correct (a code can be used once). Try again.";

pub struct PasswordChange<'a> {
    pub current: &'a str,
    pub new: &'a str,
    pub confirm: &'a str,
    pub otp: &'a str,
}

/// Changes the password (current password and a code required) and ends every other session.
pub async fn change_password(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
    change: &PasswordChange<'_>,
) -> Result<(), PasswordChangeError> {
    let field =
        |field: &'static str, message: String| PasswordChangeError::Field { field, message };
    let (user, email) = user_and_email(services, session.user_id).await?;
    let new = Password::parse_new(change.new, &user.username, &email)
        .map_err(|e| field("new_password", e.to_string()))?;
    if change.new != change.confirm {
        return Err(field(
            "new_password_confirm",
            "The two new passwords are not the same.".into(),
        ));
    }
    // Charged before the hash: at most FAILURES_MAX guesses are evaluated per count.
    let Some(count) = failure_store::charge_in_session(&services.db, user.id).await? else {
        return Err(PasswordChangeError::TooManyFailures);
    };
    let current = Password::parse_existing(change.current).ok();
    let stored = Some(user.password_hash.as_str());
    let reason = if verify_password(services, stored, current.as_ref()).await? == Verified::No {
        Some("wrong_password")
    } else if !check_totp(services, user.id, change.otp, CodeCheck::Login).await? {
        Some("wrong_code")
    } else {
        None
    };
    if let Some(reason) = reason {
        let ctx = ctx.with_user(user.id);
        let event = AuditEvent::PasswordChangeRefused { reason };
        services.audit.record_best_effort(&ctx, event).await;
        let (db, outbox) = (&services.db, &services.outbox);
        if failures::lock_if_full(db, outbox, &ctx, user.id, &Side::Shared, count).await? {
            return Err(PasswordChangeError::TooManyFailures);
        }
        return Err(field("current_password", WRONG_PASSWORD_OR_CODE.into()));
    }
    store_new_password(services, ctx, session, user.id, &new).await?;
    Ok(())
}

/// The signed-in customer's account and email address.
async fn user_and_email(
    services: &Services,
    user_id: UserId,
) -> Result<(user_store::UserAuthRow, String), AuthError> {
    let user = user_store::auth_by_id(&services.db, user_id)
        .await?
        .ok_or(AuthError::LoginFailed)?;
    let email_enc = user_store::email_enc(&services.db, user.id)
        .await?
        .unwrap_or_default();
    let email = services
        .keyring
        .open_string(&crate::customers::email_aad(user.id), &email_enc)?;
    Ok((user, email))
}

/// In one transaction: the new password's hash stored and every other session ended, both
/// audited.
async fn store_new_password(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
    user_id: UserId,
    new: &Password,
) -> Result<(), AuthError> {
    let hash = services.hasher.hash(new).await?;
    let mut tx = services.db.begin_write().await?;
    user_store::set_password_hash(&mut tx, user_id, &hash).await?;
    failure_store::reset_in_session(&mut tx, user_id).await?;
    let ended = session_store::delete_others(&mut tx, user_id, &session.id_hash).await?;
    let ctx = ctx.with_user(user_id);
    services
        .audit
        .record_in(&mut tx, &ctx, AuditEvent::PasswordChanged)
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    let mail = Mail::password_changed(services.outbox.public_url(), crate::now_millis());
    services
        .outbox
        .notify_in(&mut tx, &ctx, user_id, &mail)
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    if ended > 0 {
        services
            .audit
            .record_in(&mut tx, &ctx, AuditEvent::SessionsRevoked { count: ended })
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
    }
    tx.commit().await?;
    services.outbox.wake();
    Ok(())
}

/// Ends every other session of the customer; returns how many ended.
pub async fn revoke_other_sessions(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
) -> Result<u64, AuthError> {
    let mut tx = services.db.begin_write().await?;
    let ended = session_store::delete_others(&mut tx, session.user_id, &session.id_hash).await?;
    services
        .audit
        .record_in(
            &mut tx,
            &ctx.with_user(session.user_id),
            AuditEvent::SessionsRevoked { count: ended },
        )
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    tx.commit().await?;
    Ok(ended)
}

/// Ends the session (logout).
pub async fn logout(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
) -> Result<(), AuthError> {
    session_store::delete(&services.db, &session.id_hash).await?;
    services
        .audit
        .record_best_effort(&ctx.with_user(session.user_id), AuditEvent::Logout)
        .await;
    Ok(())
}
