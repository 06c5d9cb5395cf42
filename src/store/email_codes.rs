//! SQL for codes sent by mail (CONTRACT §9): one live code per customer and purpose, stored as a
//! MAC. Policy (length, lifetime, tries, what the code is for) lives in `crate::auth::recovery`.

use super::{Db, StoreError, WriteTx};
use crate::domain::UserId;

/// Stores a new code for `user` and `purpose` in the caller's transaction, replacing the old one
/// (and its tries).
pub async fn replace_in(
    tx: &mut WriteTx,
    user: UserId,
    purpose: &str,
    code_mac: &[u8],
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO email_codes (user_id, purpose, code_mac, expires_at, tries) \
         VALUES ($1, $2, $3, $4, 0) \
         ON CONFLICT (user_id, purpose) DO UPDATE SET code_mac = $3, expires_at = $4, tries = 0",
    )
    .bind(user)
    .bind(purpose)
    .bind(code_mac)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Charges one try to the live code of `user` and `purpose` and returns its MAC; `None` when
/// there is none, it expired, or it had `tries_max` tries (burnt). Charged before the caller
/// compares, in one statement, so however many checks arrive at once at most `tries_max` are
/// compared.
pub async fn charge(
    db: &Db,
    user: UserId,
    purpose: &str,
    now: i64,
    tries_max: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut tx = db.begin_write().await?;
    let row: Option<(Vec<u8>,)> = sqlx::query_as(
        "UPDATE email_codes SET tries = tries + 1 \
         WHERE user_id = $1 AND purpose = $2 AND expires_at > $3 AND tries < $4 \
         RETURNING code_mac",
    )
    .bind(user)
    .bind(purpose)
    .bind(now)
    .bind(tries_max)
    .fetch_optional(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(row.map(|(mac,)| mac))
}

/// Spends the code whose MAC is `code_mac` in the caller's transaction: `true` only for the one
/// transaction that deletes it.
pub async fn spend_in(
    tx: &mut WriteTx,
    user: UserId,
    purpose: &str,
    code_mac: &[u8],
) -> Result<bool, StoreError> {
    let deleted = sqlx::query(
        "DELETE FROM email_codes WHERE user_id = $1 AND purpose = $2 AND code_mac = $3",
    )
    .bind(user)
    .bind(purpose)
    .bind(code_mac)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(deleted == 1)
}
