//! SQL for customers (`users`).

use super::{Db, StoreError, WriteTx};

pub struct NewUser<'a> {
    pub id: i64,
    pub username: &'a str,
    pub username_key: &'a str,
    pub email_enc: &'a [u8],
    pub email_bidx: &'a [u8],
    pub password_hash: &'a str,
    pub created_at: i64,
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
    .bind(user.created_at)
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
) -> Result<Option<(i64, String)>, StoreError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, username FROM users WHERE username_key = $1")
            .bind(username_key)
            .fetch_optional(db.pool())
            .await?;
    Ok(row)
}

pub async fn username_of(db: &Db, user_id: i64) -> Result<Option<String>, StoreError> {
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
) -> Result<Option<(i64, String)>, StoreError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, username FROM users WHERE username_key = $1")
            .bind(username_key)
            .fetch_optional(conn)
            .await?;
    Ok(row)
}
