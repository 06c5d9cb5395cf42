//! Account recovery (CONTRACT §9): a forgotten password is replaced with an emailed code *and*
//! a second factor (the authenticator's code or a recovery code), so neither a stolen mailbox
//! nor a stolen phone alone takes the account.
//!
//! - `request_code`: any address gets the same answer; an enrolled account's address gets a
//!   `recovery-code` message, at most `RECOVERY_MAILS_PER_WINDOW` an hour. Each client address
//!   may make `RECOVERY_REQUESTS_PER_IP` requests and resets an hour together.
//! - `reset`: every part is checked whatever failed before it, and any wrong part gives the one
//!   answer [`ResetError::Wrong`]. The code is charged a try before it is compared (5 tries burn
//!   it), a failure is counted on the account like a failed log-in (CONTRACT §3), and a reset
//!   ends every session of the customer and mails `password-changed`.

use super::{AuthError, check_totp, failures, spend_recovery_code, user_by_email};
use crate::audit::{AuditContext, AuditEvent};
use crate::domain::{Email, Password, UserId};
use crate::limits::{
    EMAIL_CODE_TRIES_MAX, EMAIL_CODE_TTL, RECOVERY_MAILS_PER_WINDOW, RECOVERY_REQUESTS_PER_IP,
    RECOVERY_WINDOW,
};
use crate::mail::Mail;
use crate::services::Services;
use crate::store::failures::{self as failure_store, Side};
use crate::store::users::CodeCheck;
use crate::store::{email_codes, sessions as session_store, users as user_store};

const PURPOSE: &str = "recover";

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An 8-digit code (CONTRACT §8: `Code: ` and 8 digits).
fn new_code() -> String {
    let n = u64::from_be_bytes(crate::crypto::random_bytes::<8>()) % 100_000_000;
    format!("{n:08}")
}

/// What a typed code is compared by: its MAC, bound to the customer and the purpose.
fn code_mac(services: &Services, user: UserId, code: &str) -> Vec<u8> {
    services
        .keyring
        .mac(&[
            b"email-code",
            PURPOSE.as_bytes(),
            &user.to_be_bytes(),
            code.as_bytes(),
        ])
        .to_vec()
}

/// The code as typed: 8 digits, spaces ignored.
fn parse_code(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Counts one recovery request or reset from the client's address; `false`: over the window's
/// share (audited by the caller's answer, 429).
async fn client_allowed(services: &Services, ctx: &AuditContext) -> Result<bool, AuthError> {
    let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let key = format!("recover-ip|{ip}");
    let (now, window) = (crate::now_millis(), millis(RECOVERY_WINDOW));
    Ok(
        session_store::charge_window(&services.db, &key, now, window, RECOVERY_REQUESTS_PER_IP)
            .await?,
    )
}

/// `POST /recover`: mails a code to `email` if it is an enrolled account's (at most
/// `RECOVERY_MAILS_PER_WINDOW` an hour); says nothing about whether it is. `Throttled`: the
/// client address made too many requests.
pub async fn request_code(
    services: &Services,
    ctx: &AuditContext,
    email: &Email,
) -> Result<(), AuthError> {
    if !client_allowed(services, ctx).await? {
        return Err(AuthError::Throttled);
    }
    let Some(user) = user_by_email(services, email.as_str()).await? else {
        return Ok(());
    };
    if !user.totp_confirmed {
        return Ok(()); // an unfinished enrolment has nothing to recover
    }
    let ctx = ctx.with_user(user.id);
    let now = crate::now_millis();
    let key = format!("recover-mail|{}", user.id);
    let window = millis(RECOVERY_WINDOW);
    let db = &services.db;
    if !session_store::charge_window(db, &key, now, window, RECOVERY_MAILS_PER_WINDOW).await? {
        let event = AuditEvent::RecoveryRefused {
            reason: "mail_throttled",
        };
        services.audit.record_best_effort(&ctx, event).await;
        return Ok(());
    }
    let code = new_code();
    let expires = now.saturating_add(millis(EMAIL_CODE_TTL));
    let internal = |e: crate::audit::AuditError| AuthError::Internal(e.to_string());
    let mut tx = db.begin_write().await?;
    email_codes::replace_in(
        &mut tx,
        user.id,
        PURPOSE,
        &code_mac(services, user.id, &code),
        expires,
    )
    .await?;
    services
        .audit
        .record_in(&mut tx, &ctx, AuditEvent::RecoveryCodeSent)
        .await
        .map_err(internal)?;
    let mail = Mail::recovery_code(services.outbox.public_url(), &code, EMAIL_CODE_TTL);
    services
        .outbox
        .notify_in(&mut tx, &ctx, user.id, &mail)
        .await
        .map_err(internal)?;
    tx.commit().await?;
    services.outbox.wake();
    Ok(())
}

/// What `POST /recover/reset` carries, as typed.
pub struct Reset<'a> {
    pub email: &'a str,
    pub code: &'a str,
    pub otp: &'a str,
    pub new_password: &'a str,
    pub new_password_confirm: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The address, the code or the second factor is wrong (or the code expired or was burnt,
    /// or the account is locked): one answer for all.
    #[error(
        "The address, the emailed code or the authenticator code is not right, or the code has expired. Check them, or ask for a new code."
    )]
    Wrong,
    /// The new password breaks a rule (says nothing about the account).
    #[error("{0}")]
    Password(String),
    #[error("The two new passwords are not the same.")]
    Mismatch,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<crate::store::StoreError> for ResetError {
    fn from(error: crate::store::StoreError) -> Self {
        ResetError::Auth(error.into())
    }
}

/// A wrong part of a reset: audited, counted on the account's shared side.
async fn wrong(
    services: &Services,
    ctx: &AuditContext,
    user: UserId,
    count: failure_store::Count,
    reason: &'static str,
) -> ResetError {
    let ctx = ctx.with_user(user);
    let event = AuditEvent::RecoveryRefused { reason };
    services.audit.record_best_effort(&ctx, event).await;
    let (db, outbox) = (&services.db, &services.outbox);
    if let Err(error) = failures::lock_if_full(db, outbox, &ctx, user, &Side::Shared, count).await {
        return ResetError::Auth(error.into());
    }
    ResetError::Wrong
}

/// `POST /recover/reset`: with the emailed code and a second factor, the password is replaced,
/// every session of the customer ends and `password-changed` is mailed.
pub async fn reset(
    services: &Services,
    ctx: &AuditContext,
    form: &Reset<'_>,
) -> Result<(), ResetError> {
    if !client_allowed(services, ctx).await? {
        return Err(AuthError::Throttled.into());
    }
    if form.new_password != form.new_password_confirm {
        return Err(ResetError::Mismatch);
    }
    // The rules checked against the typed address only: nothing here depends on the account.
    Password::parse_new(form.new_password, "", form.email)
        .map_err(|e| ResetError::Password(e.to_string()))?;
    let Some(user) = user_by_email(services, form.email).await? else {
        return Err(ResetError::Wrong);
    };
    if !user.totp_confirmed {
        return Err(ResetError::Wrong);
    }
    // Charged before anything is compared: at most FAILURES_MAX guesses per count.
    let Some(count) = failure_store::charge_in_session(&services.db, user.id).await? else {
        return Err(ResetError::Wrong);
    };
    let now = crate::now_millis();
    let typed = parse_code(form.code).map(|code| code_mac(services, user.id, &code));
    let stored =
        email_codes::charge(&services.db, user.id, PURPOSE, now, EMAIL_CODE_TRIES_MAX).await?;
    let code_right =
        matches!((&typed, &stored), (Some(t), Some(s)) if crate::crypto::constant_time_eq(t, s));
    if !code_right {
        return Err(wrong(services, ctx, user.id, count, "wrong_code").await);
    }
    let second = check_totp(services, user.id, form.otp, CodeCheck::Login).await?
        || spend_recovery_code(services, ctx, user.id, form.otp).await?;
    if !second {
        return Err(wrong(services, ctx, user.id, count, "wrong_second_factor").await);
    }
    // The account's own words (its username) are checked now, for its owner only.
    let new = Password::parse_new(form.new_password, &user.username, form.email)
        .map_err(|e| ResetError::Password(e.to_string()))?;
    let hash = services.hasher.hash(&new).await.map_err(AuthError::from)?;
    let ctx = ctx.with_user(user.id);
    let internal = |e: crate::audit::AuditError| AuthError::Internal(e.to_string());
    let Some(mac) = typed else {
        return Err(ResetError::Wrong);
    };
    let mut tx = services.db.begin_write().await?;
    if !email_codes::spend_in(&mut tx, user.id, PURPOSE, &mac).await? {
        return Err(ResetError::Wrong); // another reset spent it first; nothing written
    }
    user_store::set_password_hash(&mut tx, user.id, &hash).await?;
    failure_store::reset_in_session(&mut tx, user.id).await?;
    let ended = session_store::delete_others(&mut tx, user.id, "").await?;
    services
        .audit
        .record_in(
            &mut tx,
            &ctx,
            AuditEvent::PasswordReset {
                sessions_ended: ended,
            },
        )
        .await
        .map_err(internal)?;
    let mail = Mail::password_changed(services.outbox.public_url(), now);
    services
        .outbox
        .notify_in(&mut tx, &ctx, user.id, &mail)
        .await
        .map_err(internal)?;
    tx.commit().await?;
    services.outbox.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_digits_and_typed_ones_may_carry_spaces() {
        for _ in 0..100 {
            let code = new_code();
            assert_eq!(parse_code(&code).as_deref(), Some(code.as_str()));
        }
        assert_eq!(parse_code(" 1234 5678 ").as_deref(), Some("12345678"));
        for bad in ["1234567", "123456789", "1234567a", "", "１２３４５６７８"] {
            assert_eq!(parse_code(bad), None, "{bad}");
        }
    }
}
