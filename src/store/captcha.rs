//! SQL for the captcha replay store: one row per spent proof-of-work challenge, kept until the
//! challenge would have expired anyway, so a solved challenge is accepted at most once (the
//! primary key decides, also between instances). Policy (when to prune, how many rows) lives in
//! `crate::captcha`.

use super::group::{Param, SyncTx};
use super::{Db, Engine, StoreError, Tx, WriteTx};
use crate::domain::UserId;

macro_rules! spend_sql {
    () => {
        "INSERT INTO captcha_spent (challenge_hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    };
}
/// SQLite: the step (`$3`, customer `$4`) moves only if the challenge (`$1`) was not spent yet,
/// and (a code inside a session, `users::SPEND_TOTP_STEP_IN_SESSION`) while the shared failure
/// count is below `failures::FAILURES_MAX`; a code that counts starts that count again.
macro_rules! step_if_new_sql {
    () => {
        "UPDATE users SET totp_last_step = $3, failed_logins = 0 \
         WHERE id = $4 AND totp_last_step < $3 AND failed_logins < 5 \
         AND NOT EXISTS (SELECT 1 FROM captcha_spent WHERE challenge_hash = $1)"
    };
}
const SPEND: &str = spend_sql!();
const STEP_IF_NEW_SQLITE: &str = step_if_new_sql!();
const STEP_IF_NEW_THEN_SPEND_SQLITE: &str = concat!(step_if_new_sql!(), "; ", spend_sql!());

/// What happened to an attempt to spend a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendOutcome {
    /// The challenge was not spent before; it is now.
    Spent,
    /// A row for this challenge already exists: a replay.
    AlreadySpent,
}

/// Records `challenge_hash` as spent until `expires_at` (Unix milliseconds), in its own transaction.
pub async fn spend(
    db: &Db,
    challenge_hash: &[u8],
    expires_at: i64,
) -> Result<SpendOutcome, StoreError> {
    let mut tx = db.begin_write().await?;
    let outcome = spend_in(&mut Tx::Sqlx(&mut tx), challenge_hash, expires_at).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// [`spend`] inside the caller's write transaction (a money form's one transaction). A
/// concurrent spend of the same challenge waits for this transaction and then finds the row.
pub async fn spend_in(
    tx: &mut Tx<'_>,
    challenge_hash: &[u8],
    expires_at: i64,
) -> Result<SpendOutcome, StoreError> {
    match tx {
        Tx::Sqlx(tx) => spend_sqlx(tx, challenge_hash, expires_at).await,
        Tx::Batch(tx) => spend_batch(tx, challenge_hash, expires_at),
    }
}

async fn spend_sqlx(
    tx: &mut WriteTx,
    challenge_hash: &[u8],
    expires_at: i64,
) -> Result<SpendOutcome, StoreError> {
    let inserted = sqlx::query(SPEND)
        .bind(challenge_hash)
        .bind(expires_at)
        .execute(tx.conn())
        .await;
    match inserted {
        Ok(result) if result.rows_affected() == 1 => Ok(SpendOutcome::Spent),
        Ok(_) => Ok(SpendOutcome::AlreadySpent),
        Err(error) => already_spent_or(error),
    }
}

/// An insert of a spent challenge that failed: a conflict on the challenge is a replay (its row
/// exists), anything else an operating error.
fn already_spent_or(error: sqlx::Error) -> Result<SpendOutcome, StoreError> {
    match StoreError::from_insert(error, "captcha challenge") {
        StoreError::Conflict(_) => Ok(SpendOutcome::AlreadySpent),
        other => Err(other),
    }
}

/// [`spend_in`] and, only when the challenge was not spent before, the customer's one-time-code
/// step (as `users::spend_totp_step_in`): a money form's first two writes. Returns the captcha's
/// outcome and whether the step was spent. On SQLite they are the statements of one call (one
/// trip to the writer's connection thread; within its one write transaction nothing can come
/// between the check and the mark); on PostgreSQL, one data-modifying `WITH` statement.
pub async fn spend_with_step_in(
    tx: &mut Tx<'_>,
    challenge_hash: &[u8],
    expires_at: i64,
    user_id: UserId,
    step: i64,
) -> Result<(SpendOutcome, bool), StoreError> {
    match tx {
        Tx::Sqlx(tx) => spend_with_step_sqlx(tx, challenge_hash, expires_at, user_id, step).await,
        Tx::Batch(tx) => spend_with_step_batch(tx, challenge_hash, expires_at, user_id, step),
    }
}

async fn spend_with_step_sqlx(
    tx: &mut WriteTx,
    challenge_hash: &[u8],
    expires_at: i64,
    user_id: UserId,
    step: i64,
) -> Result<(SpendOutcome, bool), StoreError> {
    if tx.engine() == Engine::Postgres {
        // One statement: the step's update sees the mark's `RETURNING` rows, so it runs only
        // when the mark was inserted. A concurrent spend of the same challenge makes the insert
        // wait for that transaction and then do nothing; a concurrent code of the same customer
        // makes the update wait for its row and re-check `totp_last_step` on the new version.
        let counts: Result<(i64, i64), _> = sqlx::query_as(
            "WITH c AS (INSERT INTO captcha_spent (challenge_hash, expires_at) VALUES ($1, $2) \
                        ON CONFLICT DO NOTHING RETURNING 1), \
                  u AS (UPDATE users SET totp_last_step = $3, failed_logins = 0 \
                        WHERE id = $4 AND totp_last_step < $3 AND failed_logins < 5 \
                        AND EXISTS (SELECT 1 FROM c) RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM c), (SELECT COUNT(*) FROM u)",
        )
        .bind(challenge_hash)
        .bind(expires_at)
        .bind(step)
        .bind(user_id)
        .fetch_one(tx.conn())
        .await;
        let (marked, stepped) = match counts {
            Ok(counts) => counts,
            Err(error) => return already_spent_or(error).map(|outcome| (outcome, false)),
        };
        let outcome = if marked == 1 {
            SpendOutcome::Spent
        } else {
            SpendOutcome::AlreadySpent
        };
        return Ok((outcome, stepped == 1));
    }
    let written = sqlx::query(STEP_IF_NEW_THEN_SPEND_SQLITE)
        .bind(challenge_hash)
        .bind(expires_at)
        .bind(step)
        .bind(user_id)
        .execute(tx.conn())
        .await;
    // Any error is an operating error here (the caller rolls back): the update may have run
    // before the insert failed, so this is no replay to keep.
    let changed = written
        .map_err(|e| StoreError::from_insert(e, "captcha challenge"))?
        .rows_affected();
    spend_with_step_outcome(changed)
}

/// [`spend_in`] on the group-commit writer's connection.
fn spend_batch(
    tx: &SyncTx<'_>,
    challenge_hash: &[u8],
    expires_at: i64,
) -> Result<SpendOutcome, StoreError> {
    let params = [Param::Blob(challenge_hash), Param::Integer(expires_at)];
    Ok(match tx.execute(&[SPEND], &params)? {
        1 => SpendOutcome::Spent,
        _ => SpendOutcome::AlreadySpent,
    })
}

/// [`spend_with_step_in`] on the group-commit writer's connection (SQLite).
fn spend_with_step_batch(
    tx: &SyncTx<'_>,
    challenge_hash: &[u8],
    expires_at: i64,
    user_id: UserId,
    step: i64,
) -> Result<(SpendOutcome, bool), StoreError> {
    let params = [
        Param::Blob(challenge_hash),
        Param::Integer(expires_at),
        Param::Integer(step),
        Param::Integer(user_id.get()),
    ];
    spend_with_step_outcome(tx.execute(&[STEP_IF_NEW_SQLITE, SPEND], &params)?)
}

/// What SQLite's step-then-mark statements did, from the rows they changed.
fn spend_with_step_outcome(changed: impl TryInto<u64>) -> Result<(SpendOutcome, bool), StoreError> {
    // The step changes only when the challenge is new, and the mark only then: 0, 1 or 2 rows.
    match changed.try_into().unwrap_or(u64::MAX) {
        0 => Ok((SpendOutcome::AlreadySpent, false)),
        1 => Ok((SpendOutcome::Spent, false)),
        2 => Ok((SpendOutcome::Spent, true)),
        n => Err(StoreError::Corrupt(format!(
            "spending a captcha and a code step changed {n} rows"
        ))),
    }
}

/// Deletes at most `limit` rows that expired before `now` (Unix milliseconds), in one short write
/// transaction; returns how many were deleted. Call again while it returns `limit`.
pub async fn prune_expired(db: &Db, now: i64, limit: i64) -> Result<u64, StoreError> {
    let mut tx = db.begin_write().await?;
    let deleted = sqlx::query(
        "DELETE FROM captcha_spent WHERE challenge_hash IN \
         (SELECT challenge_hash FROM captcha_spent WHERE expires_at < $1 LIMIT $2)",
    )
    .bind(now)
    .bind(limit)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// How many spent challenges are stored (expired or not).
pub async fn count(db: &Db) -> Result<i64, StoreError> {
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM captcha_spent")
        .fetch_one(db.pool())
        .await?;
    Ok(rows)
}
