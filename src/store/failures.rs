//! Consecutive-failure counts and locks (CONTRACT §3). An account has one count for every
//! browser without its device cookie (the `users` row: `failed_logins`, `locked_until`,
//! `lockouts`) and one per known browser (its `devices` row: `failures`, `locked_until`,
//! `lockouts`). Every decision is one statement, so requests arriving at the same moment are
//! ordered by the row they update: a login charges its failure before the password is verified
//! ([`charge`]), so at most [`FAILURES_MAX`] guesses are evaluated per count and window.

use super::{Db, StoreError, Tx, WriteTx};
use crate::domain::UserId;
use crate::store::group::Param;

/// Failures on one count before it locks; `SPEND_TOTP_STEP` and the captcha store's step
/// statements refuse a code while a count holds this many (their SQL spells the number).
pub const FAILURES_MAX: i64 = 5;
/// Known browsers remembered per account; a new one beyond it replaces the least recently used.
pub const DEVICES_PER_USER_MAX: i64 = 20;

/// Which count a failure belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// Every browser without the account's device cookie.
    Shared,
    /// A browser that logged in to the account before: its device cookie's HMAC.
    Device(Vec<u8>),
}

/// A count after a failure was added to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub failures: i64,
    /// Locks of this count since its last success (the next lock lasts `2^lockouts` times the
    /// first).
    pub lockouts: i64,
}

impl Side {
    /// `(table, failure column)`.
    fn columns(&self) -> (&'static str, &'static str) {
        match self {
            Side::Shared => ("users", "failed_logins"),
            Side::Device(_) => ("devices", "failures"),
        }
    }

    /// The row's condition: `$1` is the user, the device hash (if any) is `$hash_param`.
    fn key(&self, hash_param: u8) -> String {
        match self {
            Side::Shared => "id = $1".to_string(),
            Side::Device(_) => format!("user_id = $1 AND device_hash = ${hash_param}"),
        }
    }

    /// Binds the device hash as the statement's last parameter (nothing for the shared count).
    fn bind_hash<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments> {
        match self {
            Side::Shared => query,
            Side::Device(hash) => query.bind(hash.as_slice()),
        }
    }
}

/// Before a login's password is verified: adds one failure to the count in advance, unless it is
/// locked at `now` or already holds [`FAILURES_MAX`] (then `None`: refuse without verifying). A
/// login that then passes takes it back with [`clear`]; one that fails leaves it counted.
pub async fn charge(
    db: &Db,
    user: UserId,
    side: &Side,
    now: i64,
) -> Result<Option<Count>, StoreError> {
    let (table, column) = side.columns();
    let key = side.key(3);
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {column} = {column} + 1 \
         WHERE {key} AND locked_until <= $2 AND {column} < {FAILURES_MAX} \
         RETURNING {column}, lockouts"
    ));
    let mut tx = db.begin_write().await?;
    let query = sqlx::query_as::<_, (i64, i64)>(sql).bind(user).bind(now);
    let row = side.bind_hash(query).fetch_optional(tx.conn()).await?;
    tx.commit().await?;
    Ok(row.map(|(failures, lockouts)| Count { failures, lockouts }))
}

/// After a login passed: the count starts again, unless the side was locked meanwhile (`false`:
/// no session may be created).
pub async fn clear(db: &Db, user: UserId, side: &Side, now: i64) -> Result<bool, StoreError> {
    let (table, column) = side.columns();
    let key = side.key(3);
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {column} = 0, lockouts = 0 WHERE {key} AND locked_until <= $2 \
         RETURNING 1"
    ));
    let mut tx = db.begin_write().await?;
    let query = sqlx::query_as::<_, (i64,)>(sql).bind(user).bind(now);
    let row = side.bind_hash(query).fetch_optional(tx.conn()).await?;
    tx.commit().await?;
    Ok(row.is_some())
}

/// Before a password inside a session is verified (a password change): adds one failure to the
/// shared count in advance unless it is full (`None`: refuse without verifying). Unlike
/// [`charge`], a lock of the shared count (made by failed logins from other browsers) does not
/// refuse: it must not stop the owner's own session.
pub async fn charge_in_session(db: &Db, user: UserId) -> Result<Option<Count>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE users SET failed_logins = failed_logins + 1 \
         WHERE id = $1 AND failed_logins < {FAILURES_MAX} RETURNING failed_logins, lockouts"
    ));
    let mut tx = db.begin_write().await?;
    let row = sqlx::query_as::<_, (i64, i64)>(sql)
        .bind(user)
        .fetch_optional(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(row.map(|(failures, lockouts)| Count { failures, lockouts }))
}

/// A success inside a session: the shared count starts again (its locks are still counted).
pub async fn reset_in_session(tx: &mut WriteTx, user: UserId) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET failed_logins = 0 WHERE id = $1")
        .bind(user)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// A failure inside a session (a wrong code or password): counted on the shared count, in the
/// caller's transaction.
pub async fn count_in(tx: &mut Tx<'_>, user: UserId) -> Result<Count, StoreError> {
    const SQL: &str = "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 \
                       RETURNING failed_logins, lockouts";
    let row = match tx {
        Tx::Sqlx(tx) => {
            sqlx::query_as::<_, (i64, i64)>(SQL)
                .bind(user)
                .fetch_optional(tx.conn())
                .await?
        }
        Tx::Batch(tx) => tx
            .query(SQL, &[Param::Integer(user.get())], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?
            .into_iter()
            .next(),
    };
    let (failures, lockouts) = row.ok_or_else(|| StoreError::Corrupt("no such user".into()))?;
    Ok(Count { failures, lockouts })
}

/// Locks the count until `until` if it holds [`FAILURES_MAX`] and is not locked at `now`, and
/// starts it again; `Some(lockouts)` with the new number of locks, `None` when another request
/// locked it first.
pub async fn lock(
    db: &Db,
    user: UserId,
    side: &Side,
    now: i64,
    until: i64,
) -> Result<Option<i64>, StoreError> {
    let (table, column) = side.columns();
    let key = side.key(4);
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET locked_until = $3, {column} = 0, lockouts = lockouts + 1 \
         WHERE {key} AND locked_until <= $2 AND {column} >= {FAILURES_MAX} RETURNING lockouts"
    ));
    let mut tx = db.begin_write().await?;
    let query = sqlx::query_as::<_, (i64,)>(sql)
        .bind(user)
        .bind(now)
        .bind(until);
    let row = side.bind_hash(query).fetch_optional(tx.conn()).await?;
    tx.commit().await?;
    Ok(row.map(|(lockouts,)| lockouts))
}

/// Whether `hash` is a known browser of the account.
pub async fn is_known_device(db: &Db, user: UserId, hash: &[u8]) -> Result<bool, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM devices WHERE user_id = $1 AND device_hash = $2")
            .bind(user)
            .bind(hash)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.is_some())
}

/// Remembers a browser's device cookie for `user` (its last log-in now), in the caller's
/// transaction, keeping the newest `DEVICES_PER_USER_MAX`. Returns whether the browser was new
/// to the account.
pub async fn remember_device(
    tx: &mut WriteTx,
    user: UserId,
    hash: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let known: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM devices WHERE user_id = $1 AND device_hash = $2")
            .bind(user)
            .bind(hash)
            .fetch_optional(tx.conn())
            .await?;
    sqlx::query(
        "INSERT INTO devices (user_id, device_hash, created_at, last_login_at) \
         VALUES ($1, $2, $3, $3) \
         ON CONFLICT (user_id, device_hash) DO UPDATE SET last_login_at = $3",
    )
    .bind(user)
    .bind(hash)
    .bind(now)
    .execute(tx.conn())
    .await?;
    // Every row past the newest DEVICES_PER_USER_MAX ("LIMIT -1" is SQLite's "no limit").
    let no_limit = match tx.engine() {
        super::Engine::Sqlite => "LIMIT -1",
        super::Engine::Postgres => "LIMIT ALL",
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "DELETE FROM devices WHERE user_id = $1 AND device_hash IN \
         (SELECT device_hash FROM devices WHERE user_id = $1 \
          ORDER BY last_login_at DESC, created_at DESC {no_limit} OFFSET {DEVICES_PER_USER_MAX})"
    ));
    sqlx::query(sql).bind(user).execute(tx.conn()).await?;
    Ok(known.is_none())
}
