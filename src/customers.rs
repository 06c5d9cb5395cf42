//! Creating a customer: the user row (email sealed, found through its blind index) and the
//! ledger account, in one transaction, with the `signup` audit event.

use crate::audit::{AuditContext, AuditEvent};
use crate::crypto::{Aad, random_row_id};
use crate::domain::UserId;
use crate::domain::{Email, Username};
use crate::ledger::LedgerError;
use crate::services::Services;
use crate::store::{StoreError, users as user_store};

#[derive(Debug, thiserror::Error)]
pub enum CreateCustomerError {
    #[error("This username is taken.")]
    UsernameTaken,
    #[error("An account with this email already exists.")]
    EmailTaken,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CreateCustomerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict("email") => CreateCustomerError::EmailTaken,
            StoreError::Conflict("username") => CreateCustomerError::UsernameTaken,
            other => CreateCustomerError::Store(other),
        }
    }
}

/// Sign-ups one client address may start per window, counted before the password is hashed.
pub const SIGNUPS_PER_IP_MAX: i64 = 20;
pub const SIGNUP_THROTTLE_WINDOW_MILLIS: i64 = 60 * 60 * 1_000;

/// Whether a sign-up may go on to hash its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupGate {
    Open,
    UsernameTaken,
    /// The client address started [`SIGNUPS_PER_IP_MAX`] sign-ups in the window (audited).
    Throttled,
}

/// The checks of a sign-up that cost no Argon2 work: the username is free (checked again by the
/// insert's unique index), and the client address is under its sign-ups for the window (counted
/// in one statement, so sign-ups at the same moment cannot pass it together).
pub async fn signup_allowed(
    services: &Services,
    ctx: &AuditContext,
    username: &Username,
) -> Result<SignupGate, StoreError> {
    if user_store::id_by_username_key(&services.db, &username.lookup_key())
        .await?
        .is_some()
    {
        return Ok(SignupGate::UsernameTaken);
    }
    let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let now = crate::now_millis();
    let window = SIGNUP_THROTTLE_WINDOW_MILLIS;
    let db = &services.db;
    if crate::store::sessions::charge_window(db, &ip, now, window, SIGNUPS_PER_IP_MAX).await? {
        return Ok(SignupGate::Open);
    }
    let event = AuditEvent::SignupThrottled;
    services.audit.record_best_effort(ctx, event).await;
    Ok(SignupGate::Throttled)
}

pub fn email_aad(user_id: UserId) -> Aad {
    Aad::new("users", "email_enc", user_id)
}

/// Creates a customer whose password is already hashed (PHC string). Returns the user id.
pub async fn create(
    services: &Services,
    ctx: &AuditContext,
    username: &Username,
    email: &Email,
    password_hash: &str,
) -> Result<UserId, CreateCustomerError> {
    let id = UserId::new(random_row_id());
    let email_enc = services.keyring.seal_str(&email_aad(id), email.as_str());
    let email_bidx = services.keyring.blind_index("email", &email.lookup_key());
    let mut tx = services.db.begin_write().await?;
    user_store::insert(
        &mut tx,
        &user_store::NewUser {
            id,
            username: username.as_str(),
            username_key: &username.lookup_key(),
            email_enc: &email_enc,
            email_bidx: &email_bidx,
            password_hash,
            created_at_millis: crate::now_millis(),
        },
    )
    .await?;
    services.ledger.open_customer_account(&mut tx, id).await?;
    services
        .audit
        .record_in(&mut tx, &ctx.with_user(id), AuditEvent::Signup)
        .await
        .map_err(|e| CreateCustomerError::Ledger(LedgerError::Audit(e)))?;
    tx.commit().await?;
    Ok(id)
}
