//! SQL for customers (`users`).

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::group::Param;
use super::{Db, StoreError, Tx, WriteTx};
use crate::domain::UserId;

pub struct NewUser<'a> {
    pub id: UserId,
    pub username: &'a str,
    pub username_key: &'a str,
    pub email_enc: &'a [u8],
    pub email_bidx: &'a [u8],
    pub password_hash: &'a str,
    pub created_at_millis: i64,
}

/// Inserts a user; a taken username or email maps to [`StoreError::Conflict`] naming the field.
pub async fn insert(tx: &mut WriteTx, user: &NewUser<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, username, username_key, email_enc, email_bidx, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(user.username_key)
    .bind(user.email_enc)
    .bind(user.email_bidx)
    .bind(user.password_hash)
    .bind(user.created_at_millis)
    .execute(tx.conn())
    .await
    .map_err(|e| match e.as_database_error() {
        Some(db) if db.is_unique_violation() => {
            let message = db.message().to_ascii_lowercase();
            let constraint = db.constraint().unwrap_or_default().to_ascii_lowercase();
            if message.contains("email") || constraint.contains("email") {
                StoreError::Conflict("email")
            } else {
                StoreError::Conflict("username")
            }
        }
        _ => StoreError::Database(e),
    })?;
    Ok(())
}

pub async fn id_by_username_key(
    db: &Db,
    username_key: &str,
) -> Result<Option<(UserId, String)>, StoreError> {
    let row: Option<(UserId, String)> =
        sqlx::query_as("SELECT id, username FROM users WHERE username_key = $1")
            .bind(username_key)
            .fetch_optional(db.pool())
            .await?;
    Ok(row)
}

pub async fn username_of(db: &Db, user_id: UserId) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT username FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|(u,)| u))
}

pub async fn count(db: &Db) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(db.pool())
        .await?;
    Ok(n)
}

pub async fn id_by_username_key_in(
    conn: &mut sqlx::AnyConnection,
    username_key: &str,
) -> Result<Option<(UserId, String)>, StoreError> {
    let row: Option<(UserId, String)> =
        sqlx::query_as("SELECT id, username FROM users WHERE username_key = $1")
            .bind(username_key)
            .fetch_optional(conn)
            .await?;
    Ok(row)
}

/// What login and the second factor need to know about a customer.
#[derive(Debug, Clone)]
pub struct UserAuthRow {
    pub id: UserId,
    pub username: String,
    pub password_hash: String,
    pub totp_secret_enc: Option<Vec<u8>>,
    pub totp_confirmed: bool,
    pub totp_last_step: i64,
    pub failed_logins: i64,
    pub locked_until_millis: i64,
    pub lockouts: i64,
}

impl FromRow<'_, AnyRow> for UserAuthRow {
    /// Reads the columns of [`AUTH_COLUMNS`] by name.
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(UserAuthRow {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            password_hash: r.try_get("password_hash")?,
            totp_secret_enc: r.try_get("totp_secret_enc")?,
            totp_confirmed: r.try_get::<i64, _>("totp_confirmed")? != 0,
            totp_last_step: r.try_get("totp_last_step")?,
            failed_logins: r.try_get("failed_logins")?,
            locked_until_millis: r.try_get("locked_until")?,
            lockouts: r.try_get("lockouts")?,
        })
    }
}

const AUTH_COLUMNS: &str = "id, username, password_hash, totp_secret_enc, totp_confirmed, totp_last_step, failed_logins, locked_until, lockouts";

pub async fn auth_by_email_bidx(
    db: &Db,
    email_bidx: &[u8],
) -> Result<Option<UserAuthRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {AUTH_COLUMNS} FROM users WHERE email_bidx = $1"
    ));
    let row: Option<UserAuthRow> = sqlx::query_as(sql)
        .bind(email_bidx)
        .fetch_optional(db.pool())
        .await?;
    Ok(row)
}

pub async fn auth_by_id(db: &Db, user_id: UserId) -> Result<Option<UserAuthRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {AUTH_COLUMNS} FROM users WHERE id = $1"));
    let row: Option<UserAuthRow> = sqlx::query_as(sql)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row)
}

pub async fn email_enc(db: &Db, user_id: UserId) -> Result<Option<Vec<u8>>, StoreError> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT email_enc FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|(e,)| e))
}

pub async fn set_totp_secret(
    db: &Db,
    user_id: UserId,
    secret_enc: &[u8],
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE users SET totp_secret_enc = $1 WHERE id = $2 AND totp_confirmed = 0")
        .bind(secret_enc)
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    tx.commit().await
}

/// Spends a one-time-code step: succeeds only if `step` is greater than the last accepted step
/// (atomic: of two concurrent requests with the same code, one wins).
pub async fn spend_totp_step(
    db: &Db,
    user_id: UserId,
    step: i64,
    check: CodeCheck,
) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let spent = spend_totp_step_in(&mut Tx::Sqlx(&mut tx), user_id, step, check).await?;
    tx.commit().await?;
    Ok(spent)
}

/// Where a one-time code is checked: at login (whose failures are charged before the check,
/// `store::failures::charge`), or inside a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Login,
    /// Refused while the shared failure count is full; a code that counts starts it again.
    Session,
}

/// Records `step` as the customer's last accepted one-time-code step if it is newer than the
/// last; `false` when it is not (a replay, or a concurrent request with the same code won, or
/// in a session the failure count is full).
pub async fn spend_totp_step_in(
    tx: &mut Tx<'_>,
    user_id: UserId,
    step: i64,
    check: CodeCheck,
) -> Result<bool, StoreError> {
    let sql = match check {
        CodeCheck::Login => SPEND_TOTP_STEP,
        CodeCheck::Session => SPEND_TOTP_STEP_IN_SESSION,
    };
    let updated = match tx {
        Tx::Sqlx(tx) => sqlx::query(sql)
            .bind(step)
            .bind(user_id)
            .execute(tx.conn())
            .await?
            .rows_affected(),
        Tx::Batch(tx) => {
            let params = [Param::Integer(step), Param::Integer(user_id.get())];
            tx.execute(&[sql], &params)? as u64
        }
    };
    Ok(updated == 1)
}

/// A passkey signature inside a session (CONTRACT §3): `false` while the shared failure count is
/// full; otherwise the count starts again, as with a right code.
pub async fn passkey_signature_counts_in(
    tx: &mut Tx<'_>,
    user_id: UserId,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE users SET failed_logins = 0 WHERE id = $1 AND failed_logins < 5";
    let updated = match tx {
        Tx::Sqlx(tx) => sqlx::query(SQL)
            .bind(user_id)
            .execute(tx.conn())
            .await?
            .rows_affected(),
        Tx::Batch(tx) => tx.execute(&[SQL], &[Param::Integer(user_id.get())])? as u64,
    };
    Ok(updated == 1)
}

const SPEND_TOTP_STEP: &str =
    "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1";
/// `failed_logins < 5`: `failures::FAILURES_MAX` (asserted below).
const SPEND_TOTP_STEP_IN_SESSION: &str = "UPDATE users SET totp_last_step = $1, failed_logins = 0 \
     WHERE id = $2 AND totp_last_step < $1 AND failed_logins < 5";
const _: () = assert!(super::failures::FAILURES_MAX == 5);

pub async fn confirm_totp(tx: &mut WriteTx, user_id: UserId) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET totp_confirmed = 1 WHERE id = $1")
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

pub async fn set_password_hash(
    tx: &mut WriteTx,
    user_id: UserId,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Stores the sealed secret of a replacement authenticator (replacing any earlier one that was
/// never confirmed).
pub async fn set_totp_pending(
    db: &Db,
    user_id: UserId,
    secret_enc: &[u8],
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE users SET totp_pending_enc = $1 WHERE id = $2 AND totp_confirmed = 1")
        .bind(secret_enc)
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    tx.commit().await
}

/// The sealed secret of the replacement authenticator waiting for its first code, if any.
pub async fn totp_pending(db: &Db, user_id: UserId) -> Result<Option<Vec<u8>>, StoreError> {
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT totp_pending_enc FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.and_then(|(pending,)| pending))
}

/// Puts the replacement authenticator in place of the old one, in `tx`: its secret (sealed as the
/// account's secret) becomes the secret and `step` the last accepted step, only if the pending
/// secret is still `pending_was` and `step` is newer than the last (atomic: one confirmation
/// wins, a code is never accepted twice). Returns whether it did.
pub async fn replace_totp_in(
    tx: &mut WriteTx,
    user_id: UserId,
    secret_enc: &[u8],
    pending_was: &[u8],
    step: i64,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE users SET totp_secret_enc = $1, totp_pending_enc = NULL, totp_last_step = $2 \
         WHERE id = $3 AND totp_pending_enc = $4 AND totp_last_step < $2",
    )
    .bind(secret_enc)
    .bind(step)
    .bind(user_id)
    .bind(pending_was)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(changed == 1)
}
