//! SQL for accounts, journal entries, postings and idempotency outcomes.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, FromRow, Row};

use super::audit::AuditHead;
use super::group::{Param, SyncTx, opt_blob, opt_int};
use super::{Db, Engine, StoreError, Tx, WriteTx};
use crate::domain::UserId;
use crate::domain::{AccountKind, EntryKind, UnknownKind};

pub const CASH_ACCOUNT_ID: i64 = 1;

#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: i64,
    pub user_id: Option<UserId>,
    pub kind: AccountKind,
    pub balance_enc: Vec<u8>,
    pub seq: i64,
    pub head_mac: Vec<u8>,
}

impl FromRow<'_, AnyRow> for AccountRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(AccountRow {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            kind: kind_column(r, "kind", AccountKind::parse)?,
            balance_enc: r.try_get("balance_enc")?,
            seq: r.try_get("seq")?,
            head_mac: r.try_get("head_mac")?,
        })
    }
}

impl AccountRow {
    /// The same columns, read on SQLite's group-commit writer.
    fn from_batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let kind: String = r.get("kind")?;
        Ok(AccountRow {
            id: r.get("id")?,
            user_id: r.get("user_id")?,
            kind: AccountKind::parse(&kind).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            balance_enc: r.get("balance_enc")?,
            seq: r.get("seq")?,
            head_mac: r.get("head_mac")?,
        })
    }
}

/// Reads a `kind` column (named `column` in the statement) as the kind `parse` knows.
pub(super) fn kind_column<K>(
    r: &AnyRow,
    column: &str,
    parse: fn(&str) -> Result<K, UnknownKind>,
) -> Result<K, sqlx::Error> {
    let text: String = r.try_get(column)?;
    parse(&text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(e),
    })
}

#[derive(Debug, Clone)]
pub struct EntryRow {
    pub id: i64,
    pub kind: EntryKind,
    pub initiator_user_id: UserId,
    pub created_at_millis: i64,
    pub message_enc: Option<Vec<u8>>,
    pub card_name_enc: Option<Vec<u8>>,
    pub mac: Vec<u8>,
}

impl FromRow<'_, AnyRow> for EntryRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(EntryRow {
            id: r.try_get("id")?,
            kind: kind_column(r, "kind", EntryKind::parse)?,
            initiator_user_id: r.try_get("initiator_user_id")?,
            created_at_millis: r.try_get("created_at")?,
            message_enc: r.try_get("message_enc")?,
            card_name_enc: r.try_get("card_name_enc")?,
            mac: r.try_get("mac")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct PostingRow {
    pub account_id: i64,
    pub seq: i64,
    pub entry_id: i64,
    pub counterparty_account_id: Option<i64>,
    pub amount_enc: Vec<u8>,
    pub created_at_millis: i64,
    pub prev_mac: Vec<u8>,
    pub mac: Vec<u8>,
}

impl FromRow<'_, AnyRow> for PostingRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(PostingRow {
            account_id: r.try_get("account_id")?,
            seq: r.try_get("seq")?,
            entry_id: r.try_get("entry_id")?,
            counterparty_account_id: r.try_get("counterparty_account_id")?,
            amount_enc: r.try_get("amount_enc")?,
            created_at_millis: r.try_get("created_at")?,
            prev_mac: r.try_get("prev_mac")?,
            mac: r.try_get("mac")?,
        })
    }
}

/// One history row: a posting with its entry and the counterparty's username.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub seq: i64,
    pub entry_id: i64,
    pub amount_enc: Vec<u8>,
    pub created_at_millis: i64,
    pub kind: EntryKind,
    pub message_enc: Option<Vec<u8>>,
    pub card_name_enc: Option<Vec<u8>>,
    pub counterparty: Option<String>,
}

impl FromRow<'_, AnyRow> for HistoryRow {
    /// Reads the columns of [`HISTORY_RANGE_SQL`].
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(HistoryRow {
            seq: r.try_get("seq")?,
            entry_id: r.try_get("entry_id")?,
            amount_enc: r.try_get("amount_enc")?,
            created_at_millis: r.try_get("created_at")?,
            kind: kind_column(r, "kind", EntryKind::parse)?,
            message_enc: r.try_get("message_enc")?,
            card_name_enc: r.try_get("card_name_enc")?,
            counterparty: r.try_get("counterparty")?,
        })
    }
}

pub async fn insert_account(
    tx: &mut WriteTx,
    row: &AccountRow,
    created_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO accounts (id, user_id, kind, balance_enc, seq, head_mac, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(row.id)
    .bind(row.user_id)
    .bind(row.kind.as_str())
    .bind(&row.balance_enc)
    .bind(row.seq)
    .bind(&row.head_mac)
    .bind(created_at)
    .execute(tx.conn())
    .await
    .map_err(|e| StoreError::from_insert(e, "account"))?;
    Ok(())
}

/// Locks an account row for the rest of the transaction (PostgreSQL `FOR UPDATE`).
pub async fn lock_account(tx: &mut WriteTx, id: i64) -> Result<Option<AccountRow>, StoreError> {
    let sql = tx.for_update(
        "SELECT id, user_id, kind, balance_enc, seq, head_mac FROM accounts WHERE id = $1 FOR UPDATE",
        "SELECT id, user_id, kind, balance_enc, seq, head_mac FROM accounts WHERE id = $1",
    );
    Ok(sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?)
}

/// What locking a movement's two accounts returns: the rows found, ordered by id, and the entry
/// the customer's idempotency key already produced (when a key was given).
pub struct Locked {
    pub accounts: Vec<AccountRow>,
    pub replayed: Option<i64>,
    /// With a key: the head of the key's audit stream (the customer's), read under the locks —
    /// on SQLite in the locking statement, on PostgreSQL row-locked with the key's read. `None`
    /// when the stream has no head yet.
    pub audit_head: Option<AuditHead>,
}

/// The statements that lock two accounts, one engine each; SQLite's keyed form also reads the
/// key's entry (`$3`, `$4`) and the head of the customer's audit stream (`$5`) in the same
/// statement.
struct LockSql {
    postgres: &'static str,
    sqlite: &'static str,
    sqlite_keyed: &'static str,
}

/// Locks the rows `sql` selects in one statement, in ascending id order (PostgreSQL `FOR UPDATE`
/// locks rows in the sorted order, so two movements cannot deadlock; SQLite holds its single
/// write lock), and reads the entry `key` already produced under those locks: a concurrent
/// submission with the same key may have won; and with it the customer's audit head. On SQLite
/// those reads are part of the statement (one trip to the writer's thread); on PostgreSQL they
/// are one statement after the lock, because a statement reads with the snapshot it started
/// with, which may predate the winner's commit.
async fn lock_pair(
    tx: &mut Tx<'_>,
    sql: &LockSql,
    a: i64,
    b: i64,
    key: Option<CustomerKey<'_>>,
) -> Result<Locked, StoreError> {
    let tx = match tx {
        Tx::Batch(batch) => return lock_pair_batch(batch, sql, a, b, key),
        Tx::Sqlx(tx) => tx,
    };
    if tx.engine() == Engine::Sqlite
        && let Some(key) = &key
    {
        let rows: Vec<KeyedRow> = sqlx::query_as(sql.sqlite_keyed)
            .bind(a)
            .bind(b)
            .bind(key.user_id)
            .bind(key.key)
            .bind(key.audit_stream)
            .fetch_all(tx.conn())
            .await?;
        return Ok(keyed_locked(rows, key));
    }
    let accounts: Vec<AccountRow> = sqlx::query_as(tx.for_update(sql.postgres, sql.sqlite))
        .bind(a)
        .bind(b)
        .fetch_all(tx.conn())
        .await?;
    let (replayed, audit_head) = match key {
        Some(key) => keyed_reads_after_lock(tx, key).await?,
        None => (None, None),
    };
    Ok(Locked {
        accounts,
        replayed,
        audit_head,
    })
}

/// A row of SQLite's keyed lock: an account, and on every row the same two reads: the entry the
/// key already produced and the head of the customer's audit stream.
struct KeyedRow {
    account: AccountRow,
    replayed: Option<i64>,
    audit_seq: Option<i64>,
    audit_mac: Option<Vec<u8>>,
}

impl FromRow<'_, AnyRow> for KeyedRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(KeyedRow {
            account: AccountRow::from_row(r)?,
            replayed: r.try_get("replayed")?,
            audit_seq: r.try_get("audit_seq")?,
            audit_mac: r.try_get("audit_mac")?,
        })
    }
}

impl KeyedRow {
    fn from_batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(KeyedRow {
            account: AccountRow::from_batch_row(r)?,
            replayed: r.get("replayed")?,
            audit_seq: r.get("audit_seq")?,
            audit_mac: r.get("audit_mac")?,
        })
    }
}

fn keyed_locked(rows: Vec<KeyedRow>, key: &CustomerKey<'_>) -> Locked {
    let replayed = rows.iter().find_map(|r| r.replayed);
    let audit_head = rows.iter().find_map(|r| match (r.audit_seq, &r.audit_mac) {
        (Some(seq), Some(mac)) => Some(AuditHead {
            stream: key.audit_stream.to_string(),
            seq,
            mac: mac.clone(),
        }),
        _ => None,
    });
    Locked {
        accounts: rows.into_iter().map(|r| r.account).collect(),
        replayed,
        audit_head,
    }
}

/// [`lock_pair`] on SQLite's group-commit writer (whose batch holds the write lock).
fn lock_pair_batch(
    tx: &SyncTx<'_>,
    sql: &LockSql,
    a: i64,
    b: i64,
    key: Option<CustomerKey<'_>>,
) -> Result<Locked, StoreError> {
    let Some(key) = key else {
        let params = [Param::Integer(a), Param::Integer(b)];
        let accounts = tx.query(sql.sqlite, &params, AccountRow::from_batch_row)?;
        return Ok(Locked {
            accounts,
            replayed: None,
            audit_head: None,
        });
    };
    let params = [
        Param::Integer(a),
        Param::Integer(b),
        Param::Integer(key.user_id.get()),
        Param::Text(key.key.as_bytes()),
        Param::Text(key.audit_stream.as_bytes()),
    ];
    let rows = tx.query(sql.sqlite_keyed, &params, KeyedRow::from_batch_row)?;
    Ok(keyed_locked(rows, &key))
}

/// PostgreSQL, after the accounts are locked: the key's entry and the customer's audit head
/// (row-locked, as `audit::lock_head` would) in one statement. Its snapshot is taken after the
/// lock was granted, so it sees a same-key winner, which held the same account locks until it
/// committed. A stream without a head yet (none in practice: sign-up writes the first event)
/// leaves the head to `audit::lock_head`.
async fn keyed_reads_after_lock(
    tx: &mut WriteTx,
    key: CustomerKey<'_>,
) -> Result<(Option<i64>, Option<AuditHead>), StoreError> {
    let row: Option<(i64, Vec<u8>, Option<i64>)> = sqlx::query_as(
        "SELECT h.seq, h.mac, \
         (SELECT entry_id FROM idempotency_keys WHERE user_id = $1 AND key = $2) \
         FROM audit_heads h WHERE h.stream = $3 FOR UPDATE",
    )
    .bind(key.user_id)
    .bind(key.key)
    .bind(key.audit_stream)
    .fetch_optional(tx.conn())
    .await?;
    Ok(match row {
        Some((seq, mac, replayed)) => (
            replayed,
            Some(AuditHead {
                stream: key.audit_stream.to_string(),
                seq,
                mac,
            }),
        ),
        None => (
            idempotent_entry(tx.conn(), key.user_id, key.key).await?,
            None,
        ),
    })
}

/// The three forms of a two-account lock whose rows `$filter` selects (see [`LockSql`]).
macro_rules! lock_sql {
    ($filter:literal) => {
        LockSql {
            postgres: concat!(
                "SELECT id, user_id, kind, balance_enc, seq, head_mac FROM accounts WHERE ",
                $filter,
                " ORDER BY id FOR UPDATE"
            ),
            sqlite: concat!(
                "SELECT id, user_id, kind, balance_enc, seq, head_mac FROM accounts WHERE ",
                $filter,
                " ORDER BY id"
            ),
            sqlite_keyed: concat!(
                "SELECT id, user_id, kind, balance_enc, seq, head_mac, \
                 (SELECT entry_id FROM idempotency_keys WHERE user_id = $3 AND key = $4) AS replayed, \
                 (SELECT seq FROM audit_heads WHERE stream = $5) AS audit_seq, \
                 (SELECT mac FROM audit_heads WHERE stream = $5) AS audit_mac \
                 FROM accounts WHERE ",
                $filter,
                " ORDER BY id"
            ),
        }
    };
}

/// Locks the accounts of `user_a` and `user_b` (see [`lock_pair`]).
pub async fn lock_accounts_of_users(
    tx: &mut Tx<'_>,
    user_a: UserId,
    user_b: UserId,
    key: Option<CustomerKey<'_>>,
) -> Result<Locked, StoreError> {
    lock_pair(tx, &LOCK_USERS, user_a.get(), user_b.get(), key).await
}

const LOCK_USERS: LockSql = lock_sql!("user_id IN ($1, $2)");
const LOCK_ACCOUNT_AND_USER: LockSql = lock_sql!("id = $1 OR user_id = $2");

/// Locks account `id` and the account of `user_id` (see [`lock_pair`]).
pub async fn lock_account_and_user(
    tx: &mut Tx<'_>,
    id: i64,
    user_id: UserId,
    key: Option<CustomerKey<'_>>,
) -> Result<Locked, StoreError> {
    lock_pair(tx, &LOCK_ACCOUNT_AND_USER, id, user_id.get(), key).await
}

pub async fn account_id_of_user(
    conn: &mut AnyConnection,
    user_id: UserId,
) -> Result<Option<i64>, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM accounts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(id,)| id))
}

pub async fn account_of_user(db: &Db, user_id: UserId) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, kind, balance_enc, seq, head_mac FROM accounts WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?)
}

/// Accounts in id order, a batch at a time (for `verify`).
pub async fn accounts_after(
    conn: &mut AnyConnection,
    after_id: i64,
    limit: i64,
) -> Result<Vec<AccountRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, kind, balance_enc, seq, head_mac FROM accounts WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

/// Binds an entry's seven columns in table order.
fn bind_entry<'q>(query: AnyQuery<'q>, row: &'q EntryRow) -> AnyQuery<'q> {
    query
        .bind(row.id)
        .bind(row.kind.as_str())
        .bind(row.initiator_user_id)
        .bind(row.created_at_millis)
        .bind(row.message_enc.as_deref())
        .bind(row.card_name_enc.as_deref())
        .bind(&row.mac)
}

/// Binds an account head's four values: id, sealed balance, seq, head MAC.
fn bind_head<'q>(query: AnyQuery<'q>, head: &AccountHead<'q>) -> AnyQuery<'q> {
    query
        .bind(head.id)
        .bind(head.balance_enc)
        .bind(head.seq)
        .bind(head.head_mac)
}

/// Binds a posting's eight columns in table order.
fn bind_posting<'q>(query: AnyQuery<'q>, row: &'q PostingRow) -> AnyQuery<'q> {
    query
        .bind(row.account_id)
        .bind(row.seq)
        .bind(row.entry_id)
        .bind(row.counterparty_account_id)
        .bind(&row.amount_enc)
        .bind(row.created_at_millis)
        .bind(&row.prev_mac)
        .bind(&row.mac)
}

/// The new head of an account after an entry: its sealed balance and newest `(seq, mac)`.
pub struct AccountHead<'a> {
    pub id: i64,
    pub balance_enc: &'a [u8],
    pub seq: i64,
    pub head_mac: &'a [u8],
}

/// A customer's idempotency key: read under a movement's locks, written with its entry. With it,
/// the audit stream the movement's event goes to (the customer's): on SQLite the lock statement
/// reads that stream's head too.
#[derive(Debug, Clone, Copy)]
pub struct CustomerKey<'a> {
    pub user_id: UserId,
    pub key: &'a str,
    pub audit_stream: &'a str,
}

impl<'a> CustomerKey<'a> {
    pub fn new(
        user_id: UserId,
        key: &'a crate::domain::IdempotencyKey,
        audit_stream: &'a str,
    ) -> Self {
        CustomerKey {
            user_id,
            key: key.as_str(),
            audit_stream,
        }
    }
}

/// The parts of [`write_entry`]'s SQL (macros, so that `concat!` can join them at compile time).
macro_rules! insert_entry_sql {
    () => {
        "INSERT INTO journal_entries (id, kind, initiator_user_id, created_at, message_enc, card_name_enc, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    };
}
macro_rules! insert_postings_sql {
    () => {
        "INSERT INTO postings (account_id, seq, entry_id, counterparty_account_id, amount_enc, created_at, prev_mac, mac) \
         VALUES ($8, $9, $10, $11, $12, $13, $14, $15), ($16, $17, $18, $19, $20, $21, $22, $23)"
    };
}
macro_rules! insert_key_sql {
    () => {
        "INSERT INTO idempotency_keys (user_id, key, entry_id, created_at) VALUES ($32, $33, $1, $4)"
    };
}
/// Both account heads, each only if still at the `seq` before its new one (`$24`–`$31`).
macro_rules! update_heads_sql {
    ($values:literal) => {
        concat!(
            "UPDATE accounts SET balance_enc = v.balance_enc, seq = v.seq, head_mac = v.head_mac FROM ",
            $values,
            " WHERE accounts.id = v.id AND accounts.seq = v.seq - 1"
        )
    };
}
macro_rules! postgres_heads_sql {
    () => {
        update_heads_sql!(
            "(VALUES ($24, $25, $26, $27), ($28, $29, $30, $31)) AS v (id, balance_enc, seq, head_mac)"
        )
    };
}
macro_rules! sqlite_heads_sql {
    () => {
        update_heads_sql!(
            "(SELECT $24 AS id, $25 AS balance_enc, $26 AS seq, $27 AS head_mac UNION ALL SELECT $28, $29, $30, $31) AS v"
        )
    };
}

/// PostgreSQL: one data-modifying `WITH`; it answers how many heads moved.
const WRITE_ENTRY_POSTGRES: &str = concat!(
    "WITH e AS (",
    insert_entry_sql!(),
    "), p AS (",
    insert_postings_sql!(),
    "), u AS (",
    postgres_heads_sql!(),
    " RETURNING accounts.id) SELECT COUNT(*) FROM u"
);
const WRITE_ENTRY_KEYED_POSTGRES: &str = concat!(
    "WITH e AS (",
    insert_entry_sql!(),
    "), p AS (",
    insert_postings_sql!(),
    "), i AS (",
    insert_key_sql!(),
    "), u AS (",
    postgres_heads_sql!(),
    " RETURNING accounts.id) SELECT COUNT(*) FROM u"
);
/// SQLite has no data-modifying `WITH`: the same writes as statements of one call (one trip to
/// the connection's thread; each changes a known number of rows).
const WRITE_ENTRY_SQLITE: &str = concat!(
    insert_entry_sql!(),
    "; ",
    insert_postings_sql!(),
    "; ",
    sqlite_heads_sql!()
);
const WRITE_ENTRY_KEYED_SQLITE: &str = concat!(
    insert_entry_sql!(),
    "; ",
    insert_postings_sql!(),
    "; ",
    insert_key_sql!(),
    "; ",
    sqlite_heads_sql!()
);

/// Writes an entry, its two postings, the two account heads and (for a customer's form) the
/// idempotency outcome, in one round trip: on PostgreSQL one data-modifying `WITH` (foreign keys
/// checked at its end), on SQLite the statements of one call. Either way an account whose head
/// moved while locked is an error and the transaction must roll back.
pub async fn write_entry(
    tx: &mut Tx<'_>,
    entry: &EntryRow,
    postings: &[PostingRow; 2],
    heads: [AccountHead<'_>; 2],
    key: Option<CustomerKey<'_>>,
) -> Result<(), StoreError> {
    match tx {
        Tx::Sqlx(tx) => write_entry_sqlx(tx, entry, postings, heads, key).await,
        Tx::Batch(tx) => write_entry_batch(tx, entry, postings, heads, key),
    }
}

async fn write_entry_sqlx(
    tx: &mut WriteTx,
    entry: &EntryRow,
    postings: &[PostingRow; 2],
    heads: [AccountHead<'_>; 2],
    key: Option<CustomerKey<'_>>,
) -> Result<(), StoreError> {
    let postgres = tx.engine() == Engine::Postgres;
    let sql = match (postgres, key.is_some()) {
        (true, false) => WRITE_ENTRY_POSTGRES,
        (true, true) => WRITE_ENTRY_KEYED_POSTGRES,
        (false, false) => WRITE_ENTRY_SQLITE,
        (false, true) => WRITE_ENTRY_KEYED_SQLITE,
    };
    let [a, b] = postings;
    let [h0, h1] = heads;
    let query = bind_posting(bind_posting(bind_entry(sqlx::query(sql), entry), a), b);
    let mut query = bind_head(bind_head(query, &h0), &h1);
    if let Some(key) = &key {
        query = query.bind(key.user_id).bind(key.key);
    }
    let inserted = |e| StoreError::from_insert(e, "journal entry");
    let heads_moved = if postgres {
        let updated: i64 = query
            .fetch_one(tx.conn())
            .await
            .map_err(inserted)?
            .try_get(0)?;
        updated == 2
    } else {
        // The inserts either insert every row or fail; only the heads' update can fall short.
        let rows = 1 + 2 + u64::from(key.is_some()) + 2;
        query
            .execute(tx.conn())
            .await
            .map_err(inserted)?
            .rows_affected()
            == rows
    };
    if !heads_moved {
        return Err(StoreError::Corrupt(format!(
            "an account of entry {} moved while locked",
            entry.id
        )));
    }
    Ok(())
}

/// [`write_entry`] on SQLite's group-commit writer: the same statements, run one by one.
fn write_entry_batch(
    tx: &SyncTx<'_>,
    entry: &EntryRow,
    postings: &[PostingRow; 2],
    heads: [AccountHead<'_>; 2],
    key: Option<CustomerKey<'_>>,
) -> Result<(), StoreError> {
    let mut params = Vec::with_capacity(33);
    params.extend([
        Param::Integer(entry.id),
        Param::Text(entry.kind.as_str().as_bytes()),
        Param::Integer(entry.initiator_user_id.get()),
        Param::Integer(entry.created_at_millis),
        opt_blob(entry.message_enc.as_deref()),
        opt_blob(entry.card_name_enc.as_deref()),
        Param::Blob(&entry.mac),
    ]);
    for p in postings {
        params.extend([
            Param::Integer(p.account_id),
            Param::Integer(p.seq),
            Param::Integer(p.entry_id),
            opt_int(p.counterparty_account_id),
            Param::Blob(&p.amount_enc),
            Param::Integer(p.created_at_millis),
            Param::Blob(&p.prev_mac),
            Param::Blob(&p.mac),
        ]);
    }
    for h in &heads {
        params.extend([
            Param::Integer(h.id),
            Param::Blob(h.balance_enc),
            Param::Integer(h.seq),
            Param::Blob(h.head_mac),
        ]);
    }
    let statements: &[&str] = match &key {
        Some(key) => {
            params.extend([
                Param::Integer(key.user_id.get()),
                Param::Text(key.key.as_bytes()),
            ]);
            &[
                insert_entry_sql!(),
                insert_postings_sql!(),
                insert_key_sql!(),
                sqlite_heads_sql!(),
            ]
        }
        None => &[
            insert_entry_sql!(),
            insert_postings_sql!(),
            sqlite_heads_sql!(),
        ],
    };
    let changed = tx.execute_insert(statements, &params, "journal entry")?;
    // The inserts either insert every row or fail; only the heads' update can fall short.
    if changed != 1 + 2 + usize::from(key.is_some()) + 2 {
        return Err(StoreError::Corrupt(format!(
            "an account of entry {} moved while locked",
            entry.id
        )));
    }
    Ok(())
}

/// What a money form needs to know before its write transaction, read in one statement: the
/// customer's sealed TOTP secret and last accepted step, the entry their idempotency key already
/// produced, and the receiver's id (when a receiver's username key is given). `None`: no such
/// customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementReads {
    pub totp_secret_enc: Option<Vec<u8>>,
    pub totp_last_step: i64,
    pub replayed: Option<i64>,
    pub receiver: Option<UserId>,
}

pub async fn movement_reads(
    db: &Db,
    user_id: UserId,
    key: &str,
    receiver_key: Option<&str>,
) -> Result<Option<MovementReads>, StoreError> {
    type Tuple = (Option<Vec<u8>>, i64, Option<i64>, Option<UserId>);
    let row: Option<Tuple> = sqlx::query_as(
        "SELECT u.totp_secret_enc, u.totp_last_step, \
         (SELECT entry_id FROM idempotency_keys WHERE user_id = $1 AND key = $2), \
         (SELECT id FROM users WHERE username_key = $3) \
         FROM users u WHERE u.id = $1",
    )
    .bind(user_id)
    .bind(key)
    .bind(receiver_key)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(
        |(totp_secret_enc, totp_last_step, replayed, receiver)| MovementReads {
            totp_secret_enc,
            totp_last_step,
            replayed,
            receiver,
        },
    ))
}

/// The entry a customer's idempotency key already produced, if any.
pub async fn idempotent_entry(
    conn: &mut AnyConnection,
    user_id: UserId,
    key: &str,
) -> Result<Option<i64>, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT entry_id FROM idempotency_keys WHERE user_id = $1 AND key = $2")
            .bind(user_id)
            .bind(key)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(id,)| id))
}

/// Postings of one account with `seq` in `[seq_low, seq_high]`, newest first. Reads only the rows
/// asked for, through the `(account_id, seq)` primary key, whatever the history's length.
/// The history query: one account's postings in a `seq` range, through the primary key. Public so
/// that a test can check its query plan reads only the rows asked for.
pub const HISTORY_RANGE_SQL: &str = "SELECT p.seq, p.entry_id, p.amount_enc, p.created_at, e.kind, e.message_enc, e.card_name_enc, u.username AS counterparty \
         FROM postings p \
         JOIN journal_entries e ON e.id = p.entry_id \
         LEFT JOIN accounts ca ON ca.id = p.counterparty_account_id \
         LEFT JOIN users u ON u.id = ca.user_id \
         WHERE p.account_id = $1 AND p.seq >= $2 AND p.seq <= $3 \
         ORDER BY p.seq DESC";

pub async fn history_range(
    db: &Db,
    account_id: i64,
    seq_low: i64,
    seq_high: i64,
) -> Result<Vec<HistoryRow>, StoreError> {
    Ok(sqlx::query_as(HISTORY_RANGE_SQL)
        .bind(account_id)
        .bind(seq_low)
        .bind(seq_high)
        .fetch_all(db.pool())
        .await?)
}

/// The posting of `account_id` in `entry_id` (a receipt), with the same shape as a history row.
pub async fn history_row_of_entry(
    db: &Db,
    account_id: i64,
    entry_id: i64,
) -> Result<Option<HistoryRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT p.seq, p.entry_id, p.amount_enc, p.created_at, e.kind, e.message_enc, e.card_name_enc, u.username AS counterparty \
         FROM postings p \
         JOIN journal_entries e ON e.id = p.entry_id \
         LEFT JOIN accounts ca ON ca.id = p.counterparty_account_id \
         LEFT JOIN users u ON u.id = ca.user_id \
         WHERE p.account_id = $1 AND p.entry_id = $2",
    )
    .bind(account_id)
    .bind(entry_id)
    .fetch_optional(db.pool())
    .await?)
}

/// Postings of one account after `after_seq`, in chain order (for `verify`).
pub async fn postings_after(
    conn: &mut AnyConnection,
    account_id: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<PostingRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT account_id, seq, entry_id, counterparty_account_id, amount_enc, created_at, prev_mac, mac \
         FROM postings WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(account_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Journal entries in id order, a batch at a time (for `verify`).
pub async fn entries_after(
    conn: &mut AnyConnection,
    after_id: i64,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, initiator_user_id, created_at, message_enc, card_name_enc, mac \
         FROM journal_entries WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
