//! Counted failures and device-aware lockout (CONTRACT §3).
//!
//! - **Which count.** A browser that completed a login to an account holds the device cookie
//!   [`DEVICE_COOKIE`] (random; only its HMAC is stored, `devices`). Login failures from a
//!   browser with that account's device cookie go to that device's count; those from every other
//!   browser share the account's count. Failures inside a session (a wrong code on a transfer
//!   confirmation or an ATM deposit, a wrong password or code on a password change) go to the
//!   shared count: the account locks for browsers without its device cookie, and the owner's
//!   known browsers can still log in.
//! - **At most [`FAILURES_MAX`] evaluated.** A login charges its failure before the password is
//!   verified, in one statement that also refuses a locked or full count
//!   (`store::failures::charge`); a passing login takes it back and re-checks the lock in one
//!   statement before its session is created (`store::failures::clear`). A code inside a session
//!   is refused by the statement that spends its step while the shared count is full, and a
//!   wrong one is counted in the same transaction as its refusal.
//! - **Lock.** At [`FAILURES_MAX`] the count locks for [`LOCKOUT_SECS`], doubling with each lock
//!   since the count's last success (up to [`LOCKOUT_SECS_MAX`]), with the same message as any
//!   other failure. A failure inside a session that fills the count also ends that session (the
//!   caller ends it); sessions on other devices stay open.
//! - **Reset.** A login that passes resets its count; a code that counts inside a session resets
//!   the shared count (in the statement that spends its step).

use crate::audit::{AuditContext, AuditEvent};
use crate::crypto::Keyring;
use crate::domain::UserId;
use crate::mail::{Mail, Outbox};
use crate::store::failures::{self as failure_store, Count, Side};
use crate::store::{Db, StoreError};

pub use crate::store::failures::FAILURES_MAX;

/// The first lock; each further lock of the same count doubles it, up to the maximum.
pub const LOCKOUT_SECS: i64 = 15 * 60;
pub const LOCKOUT_SECS_MAX: i64 = 24 * 60 * 60;
/// The cookie naming a browser that logged in before.
pub const DEVICE_COOKIE: &str = "__Host-alphabank-device";
pub const DEVICE_COOKIE_MAX_AGE_SECS: i64 = 365 * 24 * 60 * 60;
/// A device cookie's value: 32 random bytes, hex.
const DEVICE_COOKIE_CHARS: usize = 64;

/// The HMAC stored for a device cookie's value, if the value is well-formed.
pub fn device_hash(keyring: &Keyring, cookie: &str) -> Option<Vec<u8>> {
    let ok = cookie.len() == DEVICE_COOKIE_CHARS && cookie.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| keyring.blind_index("device", &cookie.to_ascii_lowercase()))
}

/// A new device cookie's value.
pub fn new_device_cookie() -> String {
    hex::encode(crate::crypto::random_bytes::<32>())
}

/// `Set-Cookie` for the device cookie: `__Host-`, Secure, HttpOnly, SameSite=Strict, one year.
pub fn device_cookie_header(value: &str) -> String {
    format!(
        "{DEVICE_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={DEVICE_COOKIE_MAX_AGE_SECS}"
    )
}

/// The count a login to `user` from a browser with `device_cookie` goes to.
pub async fn side_of(
    db: &Db,
    keyring: &Keyring,
    user: UserId,
    device_cookie: Option<&str>,
) -> Result<Side, StoreError> {
    let Some(hash) = device_cookie.and_then(|c| device_hash(keyring, c)) else {
        return Ok(Side::Shared);
    };
    if failure_store::is_known_device(db, user, &hash).await? {
        Ok(Side::Device(hash))
    } else {
        Ok(Side::Shared)
    }
}

/// How long the next lock of a count that was locked `lockouts` times lasts.
pub fn lock_secs(lockouts: i64) -> i64 {
    let factor = 1i64 << lockouts.clamp(0, 20);
    LOCKOUT_SECS.saturating_mul(factor).min(LOCKOUT_SECS_MAX)
}

/// After a failure left `count` on `side`: locks it when full (audited `account_locked`).
/// Returns whether the count is full (a session the failure happened in must end), also when a
/// concurrent request locked it first.
pub async fn lock_if_full(
    db: &Db,
    outbox: &Outbox,
    ctx: &AuditContext,
    user: UserId,
    side: &Side,
    count: Count,
) -> Result<bool, StoreError> {
    if count.failures < FAILURES_MAX {
        return Ok(false);
    }
    let now = crate::now_millis();
    let locked_for_secs = lock_secs(count.lockouts);
    let until = now.saturating_add(locked_for_secs.saturating_mul(1_000));
    if let Some(lockouts) = failure_store::lock(db, user, side, now, until).await? {
        let scope = match side {
            Side::Shared => "shared",
            Side::Device(_) => "device",
        };
        let event = AuditEvent::AccountLocked {
            locked_for_secs,
            lockouts,
            scope,
        };
        let mail = Mail::account_locked(outbox.public_url(), now, locked_for_secs);
        outbox.record_and_notify(ctx, event, user, &mail).await;
    }
    Ok(true)
}
