//! Wrapped data keys (`data_keys`, and `data_key_wraps` while a master-key rotation is pending).
//! Only wrapped bytes and non-secret master-key ids pass through here; see `crypto`.
//!
//! Every change to the *set* of data keys or their wrappings (first keys, an announced key, the
//! start and the end of a master-key rotation) runs in a write transaction that first takes one
//! lock ([`lock_key_set`]), so a new data key can never slip in beside a master-key rotation and
//! be left wrapped under one master key only.

use sqlx::AnyConnection;

use super::{Db, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub id: i64,
    pub purpose: String,
    pub state: String,
    pub wrapped: Vec<u8>,
    /// While a master-key rotation is pending: this key wrapped under the master key whose id the
    /// list was read for ([`list_for_master`]), from `data_key_wraps`. `None` otherwise.
    pub pending_wrap: Option<Vec<u8>>,
}

type KeyRow = (i64, String, String, Vec<u8>, Option<Vec<u8>>);

fn stored(rows: Vec<KeyRow>) -> Vec<StoredKey> {
    rows.into_iter()
        .map(|(id, purpose, state, wrapped, pending_wrap)| StoredKey {
            id,
            purpose,
            state,
            wrapped,
            pending_wrap,
        })
        .collect()
}

pub async fn list(db: &Db) -> Result<Vec<StoredKey>, StoreError> {
    let rows: Vec<(i64, String, String, Vec<u8>)> =
        sqlx::query_as("SELECT id, purpose, state, wrapped FROM data_keys ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    Ok(stored(
        rows.into_iter()
            .map(|(id, purpose, state, wrapped)| (id, purpose, state, wrapped, None))
            .collect(),
    ))
}

/// One statement (one consistent snapshot, even while `--finish` commits): every data key with,
/// if a master-key rotation is pending, its wrapping under the master key `master_id`.
const LIST_FOR_MASTER: &str = "SELECT d.id, d.purpose, d.state, d.wrapped, w.wrapped FROM data_keys d \
     LEFT JOIN data_key_wraps w ON w.key_id = d.id AND w.master_id = $1 ORDER BY d.id";

/// The data keys as seen by the holder of the master key `master_id` (see [`StoredKey::pending_wrap`]).
pub async fn list_for_master(db: &Db, master_id: &[u8]) -> Result<Vec<StoredKey>, StoreError> {
    let rows: Vec<KeyRow> = sqlx::query_as(LIST_FOR_MASTER)
        .bind(master_id)
        .fetch_all(db.pool())
        .await?;
    Ok(stored(rows))
}

async fn list_for_master_in(
    conn: &mut AnyConnection,
    master_id: &[u8],
) -> Result<Vec<StoredKey>, StoreError> {
    let rows: Vec<KeyRow> = sqlx::query_as(LIST_FOR_MASTER)
        .bind(master_id)
        .fetch_all(conn)
        .await?;
    Ok(stored(rows))
}

/// Serialises changes to the set of data keys and their wrappings: a transaction-scoped advisory
/// lock on PostgreSQL; on SQLite the write transaction (`BEGIN IMMEDIATE`) already excludes others.
async fn lock_key_set(db: &Db, tx: &mut WriteTx) -> Result<(), StoreError> {
    if db.engine() == super::Engine::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7263554902)")
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

async fn pending_master_ids_in(conn: &mut AnyConnection) -> Result<Vec<Vec<u8>>, StoreError> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT DISTINCT master_id FROM data_key_wraps ORDER BY master_id")
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The ids of the new master keys of a pending master-key rotation (empty: none is pending).
pub async fn pending_master_ids(db: &Db) -> Result<Vec<Vec<u8>>, StoreError> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT DISTINCT master_id FROM data_key_wraps ORDER BY master_id")
            .fetch_all(db.pool())
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// What [`add_master_wraps`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddWraps {
    /// Every data key (`keys` of them) now has a wrapping under the new master key; `added` were
    /// written by this call (0: that rotation was already pending).
    Added { keys: u64, added: u64 },
    /// A rotation to another master key (this id) is pending; nothing was written.
    OtherPending(Vec<u8>),
}

/// Starts (or completes the start of) a master-key rotation, in one transaction: every data key
/// gets a wrapping under the new master key `new_master_id`. `wrap(key)` returns that wrapping;
/// `key.pending_wrap` is the key's wrapping under `current_master_id`, if any.
pub async fn add_master_wraps<E: From<StoreError>>(
    db: &Db,
    current_master_id: &[u8],
    new_master_id: &[u8],
    wrap: impl Fn(&StoredKey) -> Result<Vec<u8>, E>,
) -> Result<AddWraps, E> {
    let mut tx = db.begin_write().await?;
    lock_key_set(db, &mut tx).await?;
    let pending = pending_master_ids_in(tx.conn()).await?;
    if let Some(other) = pending
        .into_iter()
        .find(|id| id.as_slice() != new_master_id)
    {
        return Ok(AddWraps::OtherPending(other)); // dropping `tx` rolls back (nothing written)
    }
    let keys = list_for_master_in(tx.conn(), current_master_id).await?;
    let existing: Vec<(i64,)> =
        sqlx::query_as("SELECT key_id FROM data_key_wraps WHERE master_id = $1")
            .bind(new_master_id)
            .fetch_all(tx.conn())
            .await
            .map_err(StoreError::from)?;
    let mut added = 0u64;
    for key in &keys {
        if existing.iter().any(|(id,)| *id == key.id) {
            continue;
        }
        let wrapped = wrap(key)?;
        sqlx::query(
            "INSERT INTO data_key_wraps (key_id, master_id, wrapped, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key.id)
        .bind(new_master_id)
        .bind(wrapped)
        .bind(crate::now_millis())
        .execute(tx.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "data key wrapping"))?;
        added += 1;
    }
    tx.commit().await?;
    Ok(AddWraps::Added {
        keys: keys.len() as u64,
        added,
    })
}

/// What [`finish_master_rotation`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishWraps {
    /// `keys` data keys are now wrapped only under the new master key; no rotation is pending.
    Finished { keys: u64 },
    /// No master-key rotation is pending; nothing changed.
    NotPending,
    /// A rotation is pending, but to another master key than `master_id`; nothing changed.
    NotTheNewKey,
}

/// Ends a master-key rotation, in one transaction: `data_keys.wrapped` becomes each key's wrapping
/// under the new master key `master_id` (after `check(key, wrapping)` accepts it), and every
/// `data_key_wraps` row is deleted.
pub async fn finish_master_rotation<E: From<StoreError>>(
    db: &Db,
    master_id: &[u8],
    check: impl Fn(&StoredKey, &[u8]) -> Result<(), E>,
) -> Result<FinishWraps, E> {
    let mut tx = db.begin_write().await?;
    lock_key_set(db, &mut tx).await?;
    let pending = pending_master_ids_in(tx.conn()).await?;
    if pending.is_empty() {
        return Ok(FinishWraps::NotPending);
    }
    if !pending.iter().any(|id| id.as_slice() == master_id) {
        return Ok(FinishWraps::NotTheNewKey);
    }
    let keys = list_for_master_in(tx.conn(), master_id).await?;
    for key in &keys {
        let Some(wrapped) = key.pending_wrap.as_deref() else {
            return Err(StoreError::Corrupt(format!(
                "data key {} has no wrapping under the new master key; run `alphabank keys rotate-master --new-key-file` with the new key file again",
                key.id
            ))
            .into());
        };
        check(key, wrapped)?;
        sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE id = $2")
            .bind(wrapped)
            .bind(key.id)
            .execute(tx.conn())
            .await
            .map_err(StoreError::from)?;
    }
    sqlx::query("DELETE FROM data_key_wraps")
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    tx.commit().await?;
    Ok(FinishWraps::Finished {
        keys: keys.len() as u64,
    })
}

/// Stores one new data key, created now; an id that exists already is a conflict.
async fn insert_key(
    conn: &mut AnyConnection,
    id: i64,
    purpose: &str,
    state: &str,
    wrapped: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO data_keys (id, purpose, state, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(purpose)
    .bind(state)
    .bind(wrapped)
    .bind(crate::now_millis())
    .execute(conn)
    .await
    .map_err(|e| StoreError::from_insert(e, "key id"))?;
    Ok(())
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
    lock_key_set(db, &mut tx).await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_keys")
        .fetch_one(tx.conn())
        .await?;
    if count > 0 {
        tx.commit().await?;
        return Ok(false);
    }
    for (id, purpose) in (1i64..).zip(purposes) {
        insert_key(tx.conn(), id, purpose, "active", &wrap(id, purpose)).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Announces the next encryption key: stored in state `retired`, so every instance loads it at
/// its next keyring refresh and can open values sealed under it, but nobody seals with it yet.
/// An announced key is recognisable as an `enc` key in state `retired` whose id is greater than
/// the active key's (ids only grow, and every other retired key was active once).
///
/// Returns `false`, storing nothing, while a master-key rotation is pending: the new key could be
/// wrapped under one master key only.
pub async fn announce_key(db: &Db, new_id: i64, new_wrapped: &[u8]) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    lock_key_set(db, &mut tx).await?;
    if !pending_master_ids_in(tx.conn()).await?.is_empty() {
        return Ok(false);
    }
    insert_key(tx.conn(), new_id, "enc", "retired", new_wrapped).await?;
    tx.commit().await?;
    Ok(true)
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
