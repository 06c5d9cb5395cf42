//! A new authenticator and new recovery codes (CONTRACT §9): what a customer who lost the phone,
//! or used up the codes, does after logging in with a recovery code.
//!
//! - **A new authenticator**: the current password and a second factor (the old authenticator's
//!   code or a recovery code) give a new secret, kept sealed beside the old one. The old one
//!   stays valid until a first code of the new one confirms it; then the new one takes its place
//!   in one statement, which also spends that code's step. Mailed (`authenticator-replaced`).
//! - **New recovery codes**: a second factor gives ten new codes, shown once; the old ones stop
//!   working in the same transaction. Mailed (`recovery-codes-replaced`).
//!
//! A wrong password or factor is counted like any other (CONTRACT §3), charged before the
//! Argon2 work, and a full count ends the session.

use super::session::{Session, recovery_aad};
use super::totp::TotpSecret;
use super::{
    AuthError, PasswordChangeError, RECOVERY_CODES, WRONG_PASSWORD_OR_CODE, check_totp, failures,
    new_recovery_code, recovery_hash, spend_recovery_code, verify_password,
};
use crate::audit::{AuditContext, AuditEvent};
use crate::crypto::Aad;
use crate::domain::{Password, UserId};
use crate::mail::Mail;
use crate::services::Services;
use crate::store::failures::{self as failure_store, Side};
use crate::store::users::CodeCheck;
use crate::store::{sessions as session_store, users as user_store};

use super::password::Verified;

pub fn pending_aad(user_id: UserId) -> Aad {
    Aad::new("users", "totp_pending_enc", user_id)
}

/// The one message for a wrong code or recovery code when no password is asked.
pub const WRONG_CODE: &str = "That code is not right, or was already used. Enter a code from your authenticator app or an unused recovery code.";

/// Whether `otp` is a right second factor: a new code of the authenticator (its step spent), or
/// else an unused recovery code (spent, audited).
async fn second_factor(
    services: &Services,
    ctx: &AuditContext,
    user_id: UserId,
    otp: &str,
) -> Result<bool, AuthError> {
    if check_totp(services, user_id, otp, CodeCheck::Login).await? {
        return Ok(true);
    }
    spend_recovery_code(services, ctx, user_id, otp).await
}

/// Why a change was refused: which change (`what`, audited with `reason`), and the form field
/// and message the customer sees.
struct Refusal {
    what: &'static str,
    reason: &'static str,
    field: &'static str,
    message: &'static str,
}

/// A refused change: audited, counted; `TooManyFailures` when the count is now full.
async fn refused(
    services: &Services,
    ctx: &AuditContext,
    user_id: UserId,
    count: failure_store::Count,
    refusal: Refusal,
) -> PasswordChangeError {
    let Refusal {
        what,
        reason,
        field,
        message,
    } = refusal;
    let ctx = ctx.with_user(user_id);
    let event = AuditEvent::SecondFactorChangeRefused { what, reason };
    services.audit.record_best_effort(&ctx, event).await;
    let (db, outbox) = (&services.db, &services.outbox);
    match failures::lock_if_full(db, outbox, &ctx, user_id, &Side::Shared, count).await {
        Ok(true) => PasswordChangeError::TooManyFailures,
        Ok(false) => PasswordChangeError::Field {
            field,
            message: message.to_string(),
        },
        Err(error) => PasswordChangeError::Auth(error.into()),
    }
}

/// Starts replacing the authenticator: with the current password and the old authenticator's
/// code or a recovery code, a new secret is stored beside the old one (sealed) for `/2fa/setup`.
pub async fn start_authenticator_replacement(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
    current_password: &str,
    otp: &str,
) -> Result<(), PasswordChangeError> {
    let user_id = session.user_id;
    let user = user_store::auth_by_id(&services.db, user_id)
        .await?
        .ok_or(AuthError::LoginFailed)?;
    // Charged before the hash: at most FAILURES_MAX guesses are evaluated per count.
    let Some(count) = failure_store::charge_in_session(&services.db, user_id).await? else {
        return Err(PasswordChangeError::TooManyFailures);
    };
    let current = Password::parse_existing(current_password).ok();
    let stored = Some(user.password_hash.as_str());
    let reason = if verify_password(services, stored, current.as_ref()).await? == Verified::No {
        Some("wrong_password")
    } else if !second_factor(services, ctx, user_id, otp).await? {
        Some("wrong_code")
    } else {
        None
    };
    if let Some(reason) = reason {
        let refusal = Refusal {
            what: "authenticator",
            reason,
            field: "current_password",
            message: WRONG_PASSWORD_OR_CODE,
        };
        return Err(refused(services, ctx, user_id, count, refusal).await);
    }
    let secret = TotpSecret::generate();
    let sealed = services
        .keyring
        .seal(&pending_aad(user_id), secret.as_bytes());
    user_store::set_totp_pending(&services.db, user_id, &sealed).await?;
    let mut tx = services.db.begin_write().await?;
    failure_store::reset_in_session(&mut tx, user_id).await?;
    services
        .audit
        .record_in(
            &mut tx,
            &ctx.with_user(user_id),
            AuditEvent::AuthenticatorReplacementStarted,
        )
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    tx.commit().await?;
    Ok(())
}

/// The replacement authenticator's secret waiting for its first code, if the customer asked for one.
pub async fn pending_secret(
    services: &Services,
    user_id: UserId,
) -> Result<Option<TotpSecret>, AuthError> {
    let Some(sealed) = user_store::totp_pending(&services.db, user_id).await? else {
        return Ok(None);
    };
    let bytes = services.keyring.open(&pending_aad(user_id), &sealed)?;
    Ok(Some(TotpSecret::from_bytes(&bytes)))
}

/// Confirms the replacement with a first code of the new secret: it takes the old one's place,
/// the session no longer asks for it, and `authenticator-replaced` is mailed. `false`: a wrong
/// or spent code, or no replacement waiting (nothing changes).
pub async fn confirm_authenticator_replacement(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
    code: &str,
) -> Result<bool, AuthError> {
    let user_id = session.user_id;
    let Some(code) = super::totp::parse_code(code) else {
        return Ok(false);
    };
    let Some(sealed) = user_store::totp_pending(&services.db, user_id).await? else {
        return Ok(false);
    };
    let secret = TotpSecret::from_bytes(&services.keyring.open(&pending_aad(user_id), &sealed)?);
    let Some(step) = secret.matching_step(&code, crate::now_millis() / 1_000) else {
        return Ok(false);
    };
    let as_current = services
        .keyring
        .seal(&super::totp_aad(user_id), secret.as_bytes());
    let ctx = ctx.with_user(user_id);
    let mut tx = services.db.begin_write().await?;
    if !user_store::replace_totp_in(&mut tx, user_id, &as_current, &sealed, step).await? {
        return Ok(false); // dropping `tx` rolls back (nothing written)
    }
    session_store::clear_login_methods_in(&mut tx, user_id).await?;
    let internal = |e: crate::audit::AuditError| AuthError::Internal(e.to_string());
    services
        .audit
        .record_in(&mut tx, &ctx, AuditEvent::AuthenticatorReplaced)
        .await
        .map_err(internal)?;
    let mail = Mail::authenticator_replaced(services.outbox.public_url(), crate::now_millis());
    services
        .outbox
        .notify_in(&mut tx, &ctx, user_id, &mail)
        .await
        .map_err(internal)?;
    tx.commit().await?;
    services.outbox.wake();
    Ok(true)
}

/// New recovery codes for a second factor (the authenticator's code or a recovery code): the
/// old codes stop working and the ten new ones wait on the session to be shown once
/// (`/2fa/recovery`). Mailed (`recovery-codes-replaced`).
pub async fn replace_recovery_codes(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
    otp: &str,
) -> Result<(), PasswordChangeError> {
    let user_id = session.user_id;
    let Some(count) = failure_store::charge_in_session(&services.db, user_id).await? else {
        return Err(PasswordChangeError::TooManyFailures);
    };
    if !second_factor(services, ctx, user_id, otp).await? {
        let refusal = Refusal {
            what: "recovery_codes",
            reason: "wrong_code",
            field: "otp",
            message: WRONG_CODE,
        };
        return Err(refused(services, ctx, user_id, count, refusal).await);
    }
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| recovery_hash(services, user_id, c))
        .collect();
    let shown = services
        .keyring
        .seal_str(&recovery_aad(&session.id_hash), &codes.join("\n"));
    let ctx = ctx.with_user(user_id);
    let internal = |e: crate::audit::AuditError| AuthError::Internal(e.to_string());
    let mut tx = services.db.begin_write().await?;
    session_store::insert_recovery_codes(&mut tx, user_id, &hashes).await?;
    session_store::set_recovery_codes_in(&mut tx, &session.id_hash, &shown).await?;
    failure_store::reset_in_session(&mut tx, user_id).await?;
    services
        .audit
        .record_in(&mut tx, &ctx, AuditEvent::RecoveryCodesReplaced)
        .await
        .map_err(internal)?;
    let mail = Mail::recovery_codes_replaced(services.outbox.public_url(), crate::now_millis());
    services
        .outbox
        .notify_in(&mut tx, &ctx, user_id, &mail)
        .await
        .map_err(internal)?;
    tx.commit().await?;
    services.outbox.wake();
    Ok(())
}
