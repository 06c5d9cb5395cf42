//! SQL for outgoing mail (CONTRACT §8): the outbox table. A message is inserted in its event's
//! transaction, claimed by a sender (its due time moved one lease ahead, its attempts counted),
//! and deleted once delivered or given up. Every change after the claim names the attempt it
//! belongs to, so a sender whose lease ran out (and whose message another sender claimed) changes
//! nothing. Policy (bounds, back-off, rendering) lives in `crate::mail`.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Db, Engine, StoreError, WriteTx};
use crate::domain::UserId;
use crate::limits::{OUTBOX_PENDING_MAX, OUTBOX_PENDING_PER_USER_MAX};

/// A message to write.
pub struct NewMessage<'a> {
    pub id: i64,
    pub user_id: UserId,
    pub kind: &'a str,
    pub body_enc: &'a [u8],
    pub created_at: i64,
}

/// Whether a message was written, or the outbox (or the customer's share of it) was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    Full,
}

/// A claimed message, its text still sealed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub user_id: UserId,
    pub kind: String,
    pub body_enc: Vec<u8>,
    pub created_at: i64,
    /// This claim's attempt number: what [`delivered`], [`retry_at`] and [`give_up`] fence on.
    pub attempts: i64,
}

impl FromRow<'_, AnyRow> for Claimed {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Claimed {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            kind: r.try_get("kind")?,
            body_enc: r.try_get("body_enc")?,
            created_at: r.try_get("created_at")?,
            attempts: r.try_get("attempts")?,
        })
    }
}

/// Writes `message` in the caller's transaction unless the outbox holds `OUTBOX_PENDING_MAX`
/// messages, or the customer `OUTBOX_PENDING_PER_USER_MAX`.
pub async fn insert(tx: &mut WriteTx, message: &NewMessage<'_>) -> Result<Queued, StoreError> {
    let (mine,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE user_id = $1")
        .bind(message.user_id)
        .fetch_one(tx.conn())
        .await?;
    if mine >= OUTBOX_PENDING_PER_USER_MAX {
        return Ok(Queued::Full);
    }
    let (all,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(tx.conn())
        .await?;
    if all >= OUTBOX_PENDING_MAX {
        return Ok(Queued::Full);
    }
    sqlx::query(
        "INSERT INTO outbox (id, user_id, kind, body_enc, created_at, next_attempt_at, attempts) \
         VALUES ($1, $2, $3, $4, $5, $5, 0)",
    )
    .bind(message.id)
    .bind(message.user_id)
    .bind(message.kind)
    .bind(message.body_enc)
    .bind(message.created_at)
    .execute(tx.conn())
    .await
    .map_err(|e| StoreError::from_insert(e, "outbox message id"))?;
    Ok(Queued::Yes)
}

/// Claims up to `limit` messages due at `now`: each is due again at `lease_until` (unless settled
/// before) and its attempts go up by one. On PostgreSQL rows another instance is claiming are
/// skipped, not waited for; on SQLite the write lock serialises claims.
pub async fn claim(
    db: &Db,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let skip_locked = match db.engine() {
        Engine::Postgres => "FOR UPDATE SKIP LOCKED",
        Engine::Sqlite => "",
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE outbox SET next_attempt_at = $1, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= $2 \
                      ORDER BY next_attempt_at, id LIMIT $3 {skip_locked}) \
         RETURNING id, user_id, kind, body_enc, created_at, attempts"
    ));
    let mut tx = db.begin_write().await?;
    let claimed: Vec<Claimed> = sqlx::query_as(sql)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// The message of this attempt was delivered: it leaves the outbox. `false` if the attempt was
/// no longer the message's latest (its lease ran out and another sender claimed it).
pub async fn delivered(db: &Db, message: &Claimed) -> Result<bool, StoreError> {
    settle_by_delete(db, message).await
}

/// The message of this attempt is given up: it leaves the outbox (the caller audits it).
pub async fn give_up(db: &Db, message: &Claimed) -> Result<bool, StoreError> {
    settle_by_delete(db, message).await
}

async fn settle_by_delete(db: &Db, message: &Claimed) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let done = sqlx::query("DELETE FROM outbox WHERE id = $1 AND attempts = $2")
        .bind(message.id)
        .bind(message.attempts)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(done == 1)
}

/// The attempt failed: the message is due again at `at`, with the failure remembered.
pub async fn retry_at(
    db: &Db,
    message: &Claimed,
    at: i64,
    error: &str,
) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1, last_error = $2 WHERE id = $3 AND attempts = $4",
    )
    .bind(at)
    .bind(error)
    .bind(message.id)
    .bind(message.attempts)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done == 1)
}

/// Messages waiting (for operators and tests): how many, and the oldest one's creation time.
pub async fn pending(db: &Db) -> Result<(i64, Option<i64>), StoreError> {
    let row: (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox")
        .fetch_one(db.pool())
        .await?;
    Ok(row)
}
