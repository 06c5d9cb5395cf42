//! SQL for the audit log: append-only events, chained per stream, with one head row per stream.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use super::group::{Param, SyncTx, opt_int, opt_text};
use super::{Db, Engine, StoreError, Tx, WriteTx};
use crate::domain::UserId;

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub stream: String,
    pub seq: i64,
    pub created_at_millis: i64,
    pub event: String,
    pub user_id: Option<UserId>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: String,
    pub prev_mac: Vec<u8>,
    pub mac: Vec<u8>,
}

impl FromRow<'_, AnyRow> for AuditRow {
    /// Reads the columns of [`COLUMNS`] by name.
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(AuditRow {
            id: r.try_get("id")?,
            stream: r.try_get("stream")?,
            seq: r.try_get("seq")?,
            created_at_millis: r.try_get("created_at")?,
            event: r.try_get("event")?,
            user_id: r.try_get("user_id")?,
            client_ip: r.try_get("client_ip")?,
            request_id: r.try_get("request_id")?,
            detail: r.try_get("detail")?,
            prev_mac: r.try_get("prev_mac")?,
            mac: r.try_get("mac")?,
        })
    }
}

const COLUMNS: &str =
    "id, stream, seq, created_at, event, user_id, client_ip, request_id, detail, prev_mac, mac";

/// A stream's head as read under the transaction's write lock: the last event's `seq` and MAC.
#[derive(Debug, Clone)]
pub struct AuditHead {
    pub stream: String,
    pub seq: i64,
    pub mac: Vec<u8>,
}

const LOCK_HEAD: &str = "INSERT INTO audit_heads (stream, seq, mac) VALUES ($1, 0, $2) \
     ON CONFLICT (stream) DO UPDATE SET seq = audit_heads.seq RETURNING seq, mac";

/// An event's row (`$1`–`$10`, table order) and its stream's head, moved only from `seq - 1`.
macro_rules! insert_event_sql {
    () => {
        "INSERT INTO audit_events (stream, seq, created_at, event, user_id, client_ip, request_id, detail, prev_mac, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    };
}
macro_rules! move_head_sql {
    () => {
        "UPDATE audit_heads SET seq = $2, mac = $10 WHERE stream = $1 AND seq = $2 - 1"
    };
}
const APPEND_POSTGRES: &str = concat!(
    "WITH e AS (",
    insert_event_sql!(),
    "), h AS (",
    move_head_sql!(),
    " RETURNING 1) SELECT COUNT(*) FROM h"
);
/// SQLite has no data-modifying `WITH`: two statements of one call.
const APPEND_SQLITE: &str = concat!(insert_event_sql!(), "; ", move_head_sql!());
/// The same two statements for the group-commit writer, which runs them one by one.
const APPEND_SQLITE_STATEMENTS: [&str; 2] = [insert_event_sql!(), move_head_sql!()];

/// Locks the head of `stream` (creating it with `genesis_mac` if new) and returns `(seq, mac)`.
pub async fn lock_head(
    tx: &mut Tx<'_>,
    stream: &str,
    genesis_mac: &[u8],
) -> Result<(i64, Vec<u8>), StoreError> {
    let tx = match tx {
        Tx::Sqlx(tx) => tx,
        Tx::Batch(tx) => return lock_head_batch(tx, stream, genesis_mac),
    };
    // One statement: creates the head if new, and on PostgreSQL the upsert row-locks it (like
    // `FOR UPDATE`) until the transaction ends; SQLite holds its single write lock.
    let head: (i64, Vec<u8>) = sqlx::query_as(LOCK_HEAD)
        .bind(stream)
        .bind(genesis_mac)
        .fetch_one(tx.conn())
        .await?;
    Ok(head)
}

pub async fn append(tx: &mut Tx<'_>, event: &AuditRow) -> Result<(), StoreError> {
    match tx {
        Tx::Sqlx(tx) => append_sqlx(tx, event).await,
        Tx::Batch(tx) => append_batch(tx, event),
    }
}

async fn append_sqlx(tx: &mut WriteTx, event: &AuditRow) -> Result<(), StoreError> {
    // The event and its head in one round trip: on PostgreSQL one statement, on SQLite (no
    // data-modifying `WITH`) two statements of one call.
    let postgres = tx.engine() == Engine::Postgres;
    let sql = if postgres {
        APPEND_POSTGRES
    } else {
        APPEND_SQLITE
    };
    let query = sqlx::query(sql)
        .bind(&event.stream)
        .bind(event.seq)
        .bind(event.created_at_millis)
        .bind(&event.event)
        .bind(event.user_id)
        .bind(event.client_ip.as_deref())
        .bind(event.request_id.as_deref())
        .bind(&event.detail)
        .bind(&event.prev_mac)
        .bind(&event.mac);
    let inserted = |e| StoreError::from_insert(e, "audit sequence number");
    let updated: i64 = if postgres {
        query
            .fetch_one(tx.conn())
            .await
            .map_err(inserted)?
            .try_get(0)?
    } else {
        // The insert inserts its row or fails: what it changed beyond that is the head.
        let changed = query
            .execute(tx.conn())
            .await
            .map_err(inserted)?
            .rows_affected();
        i64::try_from(changed.saturating_sub(1)).unwrap_or(i64::MAX)
    };
    if updated != 1 {
        return Err(StoreError::Corrupt(format!(
            "audit stream {} moved while locked",
            event.stream
        )));
    }
    Ok(())
}

/// [`lock_head`] on SQLite's group-commit writer.
fn lock_head_batch(
    tx: &SyncTx<'_>,
    stream: &str,
    genesis_mac: &[u8],
) -> Result<(i64, Vec<u8>), StoreError> {
    let params = [Param::Text(stream.as_bytes()), Param::Blob(genesis_mac)];
    tx.query(LOCK_HEAD, &params, |row| Ok((row.get(0)?, row.get(1)?)))?
        .pop()
        .ok_or_else(|| StoreError::Corrupt(format!("audit stream {stream} has no head")))
}

/// [`append`] on SQLite's group-commit writer.
fn append_batch(tx: &SyncTx<'_>, event: &AuditRow) -> Result<(), StoreError> {
    let params = [
        Param::Text(event.stream.as_bytes()),
        Param::Integer(event.seq),
        Param::Integer(event.created_at_millis),
        Param::Text(event.event.as_bytes()),
        opt_int(event.user_id.map(UserId::get)),
        opt_text(event.client_ip.as_deref()),
        opt_text(event.request_id.as_deref()),
        Param::Text(event.detail.as_bytes()),
        Param::Blob(&event.prev_mac),
        Param::Blob(&event.mac),
    ];
    let changed = tx.execute_insert(&APPEND_SQLITE_STATEMENTS, &params, "audit sequence number")?;
    // The insert inserts its row or fails: what it changed beyond that is the head.
    if changed != 2 {
        return Err(StoreError::Corrupt(format!(
            "audit stream {} moved while locked",
            event.stream
        )));
    }
    Ok(())
}

/// The newest `limit` events, oldest first.
pub async fn tail(db: &Db, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_events ORDER BY id DESC LIMIT $1"
    ));
    let mut rows: Vec<AuditRow> = sqlx::query_as(sql).bind(limit).fetch_all(db.pool()).await?;
    rows.reverse();
    Ok(rows)
}

/// The newest `limit` events of one user, newest first (settings page).
pub async fn recent_for_user(
    db: &Db,
    user_id: UserId,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_events WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
    ));
    let rows: Vec<AuditRow> = sqlx::query_as(sql)
        .bind(user_id)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    Ok(rows)
}

/// Stream heads after `after` in name order (for `verify`).
pub async fn heads_after(
    conn: &mut AnyConnection,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT stream, seq, mac FROM audit_heads WHERE stream > $1 ORDER BY stream LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// Events of one stream after `after_seq`, in chain order (for `verify`).
pub async fn stream_after(
    conn: &mut AnyConnection,
    stream: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ));
    let rows: Vec<AuditRow> = sqlx::query_as(sql)
        .bind(stream)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows)
}

/// Streams that have events but no head row (a deleted head is tampering).
pub async fn streams_without_head(conn: &mut AnyConnection) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT e.stream FROM audit_events e LEFT JOIN audit_heads h ON h.stream = e.stream WHERE h.stream IS NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}
