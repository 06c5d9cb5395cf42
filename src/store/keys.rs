//! Wrapped data keys (`data_keys`). Only wrapped bytes pass through here; see `crypto`.

use super::{Db, StoreError};

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub id: i64,
    pub purpose: String,
    pub state: String,
    pub wrapped: Vec<u8>,
}

pub async fn list(db: &Db) -> Result<Vec<StoredKey>, StoreError> {
    let rows: Vec<(i64, String, String, Vec<u8>)> =
        sqlx::query_as("SELECT id, purpose, state, wrapped FROM data_keys ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, purpose, state, wrapped)| StoredKey {
            id,
            purpose,
            state,
            wrapped,
        })
        .collect())
}

pub async fn next_id(db: &Db) -> Result<i64, StoreError> {
    let (max,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM data_keys")
        .fetch_one(db.pool())
        .await?;
    Ok(max.unwrap_or(0) + 1)
}

/// Creates the first keys of a new database — one active key per purpose, ids 1, 2, 3 — in one
/// transaction, unless keys already exist (then nothing happens and `false` is returned).
/// Several instances starting together on an empty database are serialised (`BEGIN IMMEDIATE`
/// on SQLite, a transaction-scoped advisory lock on PostgreSQL), so exactly one set is created
/// and every instance loads that one. `wrap(id, purpose)` returns the wrapped new key.
pub async fn create_initial(
    db: &Db,
    purposes: &[&str],
    wrap: impl Fn(i64, &str) -> Vec<u8>,
) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    if db.engine() == super::Engine::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7263554902)")
            .execute(tx.conn())
            .await?;
    }
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_keys")
        .fetch_one(tx.conn())
        .await?;
    if count > 0 {
        tx.commit().await?;
        return Ok(false);
    }
    for (id, purpose) in (1i64..).zip(purposes) {
        sqlx::query("INSERT INTO data_keys (id, purpose, state, wrapped, created_at) VALUES ($1, $2, 'active', $3, $4)")
            .bind(id)
            .bind(*purpose)
            .bind(wrap(id, purpose))
            .bind(crate::now_millis())
            .execute(tx.conn())
            .await
            .map_err(|e| StoreError::from_insert(e, "key id"))?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Announces the next encryption key: stored in state `retired`, so every instance loads it at
/// its next keyring refresh and can open values sealed under it, but nobody seals with it yet.
/// An announced key is recognisable as an `enc` key in state `retired` whose id is greater than
/// the active key's (ids only grow, and every other retired key was active once).
pub async fn announce_key(db: &Db, new_id: i64, new_wrapped: &[u8]) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("INSERT INTO data_keys (id, purpose, state, wrapped, created_at) VALUES ($1, 'enc', 'retired', $2, $3)")
        .bind(new_id)
        .bind(new_wrapped)
        .bind(crate::now_millis())
        .execute(tx.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "key id"))?;
    tx.commit().await
}

/// Starts a rotation: the active encryption key becomes `retiring` and the announced key
/// `new_id` becomes active, in one transaction.
pub async fn begin_rotation(db: &Db, new_id: i64) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE data_keys SET state = 'retiring' WHERE purpose = 'enc' AND state = 'active'",
    )
    .execute(tx.conn())
    .await?;
    let promoted = sqlx::query(
        "UPDATE data_keys SET state = 'active' WHERE id = $1 AND purpose = 'enc' AND state = 'retired'",
    )
    .bind(new_id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if promoted != 1 {
        return Err(StoreError::Corrupt(format!(
            "announced data key {new_id} is missing or not in state retired"
        )));
    }
    tx.commit().await
}

/// Ends a rotation: `retiring` keys become `retired` (kept readable for backups, never used to seal).
pub async fn finish_rotation(db: &Db) -> Result<u64, StoreError> {
    let mut tx = db.begin_write().await?;
    let done = sqlx::query(
        "UPDATE data_keys SET state = 'retired' WHERE purpose = 'enc' AND state = 'retiring'",
    )
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done)
}
