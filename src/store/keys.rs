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

/// Inserts a key; a concurrent creator of the same purpose wins and this one is ignored.
pub async fn insert_if_absent(
    db: &Db,
    id: i64,
    purpose: &str,
    state: &str,
    wrapped: &[u8],
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    let existing: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM data_keys WHERE purpose = $1 AND state = $2")
            .bind(purpose)
            .bind(state)
            .fetch_optional(tx.conn())
            .await?;
    if existing.is_none() {
        sqlx::query("INSERT INTO data_keys (id, purpose, state, wrapped, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(purpose)
            .bind(state)
            .bind(wrapped)
            .bind(crate::now_millis())
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await
}

/// Starts a rotation: the active encryption key becomes `retiring` and `new_wrapped` becomes active.
pub async fn begin_rotation(db: &Db, new_id: i64, new_wrapped: &[u8]) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE data_keys SET state = 'retiring' WHERE purpose = 'enc' AND state = 'active'",
    )
    .execute(tx.conn())
    .await?;
    sqlx::query("INSERT INTO data_keys (id, purpose, state, wrapped, created_at) VALUES ($1, 'enc', 'active', $2, $3)")
        .bind(new_id)
        .bind(new_wrapped)
        .bind(crate::now_millis())
        .execute(tx.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "key id"))?;
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
