//! SQL for passkeys (CONTRACT §7): one row per registered credential (sealed), and the
//! single-use marks of answered WebAuthn challenges. Policy (limits, what is sealed how) lives
//! in `crate::auth::passkey`.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::group::Param;
use super::{Db, StoreError, Tx};
use crate::domain::UserId;

/// A stored passkey, its sealed parts unopened.
#[derive(Debug, Clone)]
pub struct PasskeyRow {
    pub id: i64,
    pub user_id: UserId,
    pub credential_enc: Vec<u8>,
    pub name_enc: Vec<u8>,
    pub sign_count: i64,
    pub created_millis: i64,
    pub last_used_millis: Option<i64>,
}

impl FromRow<'_, AnyRow> for PasskeyRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(PasskeyRow {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            credential_enc: r.try_get("credential_enc")?,
            name_enc: r.try_get("name_enc")?,
            sign_count: r.try_get("sign_count")?,
            created_millis: r.try_get("created_at")?,
            last_used_millis: r.try_get("last_used_at")?,
        })
    }
}

const COLUMNS: &str = "id, user_id, credential_enc, name_enc, sign_count, created_at, last_used_at";

/// A customer's passkeys, oldest first.
pub async fn list_for_user(db: &Db, user: UserId) -> Result<Vec<PasskeyRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
    ));
    Ok(sqlx::query_as(sql).bind(user).fetch_all(db.pool()).await?)
}

/// The passkey whose credential id has the blind index `bidx`.
pub async fn by_credential(db: &Db, bidx: &[u8]) -> Result<Option<PasskeyRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM passkeys WHERE credential_bidx = $1"
    ));
    Ok(sqlx::query_as(sql)
        .bind(bidx)
        .fetch_optional(db.pool())
        .await?)
}

/// A passkey to store.
pub struct NewPasskey<'a> {
    pub id: i64,
    pub user_id: UserId,
    pub credential_bidx: &'a [u8],
    pub credential_enc: &'a [u8],
    pub name_enc: &'a [u8],
    pub sign_count: i64,
    pub now: i64,
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Added,
    /// The customer already has `max` passkeys.
    Full,
    /// That credential is registered already (to this customer or another).
    Duplicate,
}

/// Stores a passkey unless the customer has `max` already. The customer's row is locked first
/// (a no-op update), so two registrations at once cannot both pass the count.
pub async fn insert(db: &Db, new: &NewPasskey<'_>, max: i64) -> Result<Inserted, StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE users SET failed_logins = failed_logins WHERE id = $1")
        .bind(new.user_id)
        .execute(tx.conn())
        .await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM passkeys WHERE user_id = $1")
        .bind(new.user_id)
        .fetch_one(tx.conn())
        .await?;
    if count >= max {
        return Ok(Inserted::Full);
    }
    let inserted = sqlx::query(
        "INSERT INTO passkeys (id, user_id, credential_bidx, credential_enc, name_enc, \
         sign_count, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
    )
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.credential_bidx)
    .bind(new.credential_enc)
    .bind(new.name_enc)
    .bind(new.sign_count)
    .bind(new.now)
    .execute(tx.conn())
    .await
    .map_err(|e| StoreError::from_insert(e, "passkey"));
    match inserted {
        Ok(_) => {
            tx.commit().await?;
            Ok(Inserted::Added)
        }
        Err(StoreError::Conflict(_)) => Ok(Inserted::Duplicate),
        Err(error) => Err(error),
    }
}

/// Removes one of the customer's passkeys; `false` if the customer has no passkey `id`.
pub async fn remove(db: &Db, user: UserId, id: i64) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Records a verified signature with counter `counter`: `true` if the counter moved forward
/// (or the authenticator keeps none: 0 then and 0 before), in one statement, so that two
/// signatures with the same counter cannot both pass (a cloned authenticator).
pub async fn record_use(db: &Db, id: i64, counter: i64, now: i64) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query(RAISE_COUNTER)
        .bind(id)
        .bind(counter)
        .bind(now)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

const RAISE_COUNTER: &str = "UPDATE passkeys SET sign_count = $2, last_used_at = $3 \
     WHERE id = $1 AND (sign_count < $2 OR ($2 = 0 AND sign_count = 0))";

/// [`record_use`] inside the caller's write transaction (a signed payment's movement).
pub async fn record_use_in(
    tx: &mut Tx<'_>,
    id: i64,
    counter: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let n = match tx {
        Tx::Sqlx(tx) => sqlx::query(RAISE_COUNTER)
            .bind(id)
            .bind(counter)
            .bind(now)
            .execute(tx.conn())
            .await?
            .rows_affected(),
        Tx::Batch(tx) => {
            let params = [
                Param::Integer(id),
                Param::Integer(counter),
                Param::Integer(now),
            ];
            tx.execute(&[RAISE_COUNTER], &params)? as u64
        }
    };
    Ok(n == 1)
}

/// Marks a challenge answered: `false` if it was answered before.
pub async fn burn_challenge(db: &Db, hash: &[u8], expires: i64) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query(
        "INSERT INTO passkey_challenges_used (challenge_hash, expires_at) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(hash)
    .bind(expires)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Forgets the marks of challenges that expired before `now` (they are refused anyway).
pub async fn delete_expired_challenges(db: &Db, now: i64) -> Result<u64, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query("DELETE FROM passkey_challenges_used WHERE expires_at < $1")
        .bind(now)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}
