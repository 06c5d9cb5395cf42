//! The database: the one module that owns SQL. SQLite (bundled, WAL, `synchronous=FULL`) is the
//! embedded default; PostgreSQL is chosen by a `postgres://` URL. Both go through sqlx's `Any`
//! driver with `$N` placeholders, which both engines accept; the few statements that differ
//! (row locks, schema) are chosen per engine here and nowhere else.
//!
//! Writers: on SQLite a write transaction starts with `BEGIN IMMEDIATE` on the one write
//! connection, held behind an in-process mutex for the life of the process (one writer at a time,
//! readers in parallel under WAL; the busy timeout covers a CLI command writing beside a running
//! server). It is not pooled: its page cache stays warm, and a transaction costs no pool
//! checkout or release (sqlx pings every pooled connection on its way back, on a task of its own,
//! which under load queued the next writer behind the runtime's other work). Money movements
//! and session touches are written by the group commit's thread instead (`group`), on a
//! connection of its own, behind the same mutex. On PostgreSQL rows are locked with
//! `SELECT … FOR UPDATE` in a fixed order, so unrelated accounts never wait for each other.

pub mod audit;
pub mod captcha;
pub mod email_codes;
pub mod failures;
pub mod group;
mod ids;
pub mod keys;
pub mod ledger;
pub mod outbox;
pub mod passkeys;
pub mod sealed;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::limits::{
    DB_POOL_ACQUIRE_TIMEOUT, DB_POOL_CONNECTIONS_POSTGRES_MAX, DB_POOL_CONNECTIONS_SQLITE_MAX,
    SQLITE_BUSY_TIMEOUT_MILLIS,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// An error of SQLite's group-commit writer, which runs its statements itself (see `group`).
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// A group-commit batch could not begin or commit (its cause, shared by every job of it).
    #[error("database error: {0}")]
    Batch(String),
    #[error("a row with the same {0} already exists")]
    Conflict(&'static str),
    #[error("the database is busy; try again")]
    Busy,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    /// A pool that stayed saturated for `DB_POOL_ACQUIRE_TIMEOUT` is [`StoreError::Busy`], like a
    /// write gate that stayed held: the request is answered 503, not 500.
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut => StoreError::Busy,
            other => StoreError::Database(other),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    /// A database that stayed locked for the busy timeout is [`StoreError::Busy`], as above.
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy
            }
            _ => StoreError::Sqlite(error),
        }
    }
}

impl StoreError {
    /// [`StoreError::from_insert`] for the group-commit writer's statements.
    pub(crate) fn from_sqlite_insert(error: rusqlite::Error, what: &'static str) -> Self {
        let unique = matches!(
            &error,
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        );
        if unique {
            StoreError::Conflict(what)
        } else {
            StoreError::from(error)
        }
    }

    /// Maps a unique-constraint violation to [`StoreError::Conflict`] (no check-then-insert races).
    pub(crate) fn from_insert(error: sqlx::Error, what: &'static str) -> Self {
        match error.as_database_error() {
            Some(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::from(error),
        }
    }

    /// Whether the database was only busy (a saturated pool, a held write gate): 503, try again,
    /// rather than a fault.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy)
    }
}

/// A pooled database handle; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// SQLite only: the one connection that writes.
    writer: Option<Arc<Writer>>,
    engine: Engine,
    /// SQLite only: the group-commit queue for money movements (see `group`).
    group: Option<group::GroupCommit>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({:?})", self.engine)
    }
}

/// SQLite's write connection and how to open it again. The mutex is the write gate; `None`
/// inside it means "open a new connection" (at start, and after a failure left the old one in
/// doubt).
struct Writer {
    slot: Arc<Mutex<Option<WriteSlot>>>,
    options: AnyConnectOptions,
}

struct WriteSlot {
    conn: AnyConnection,
    /// A transaction was dropped without commit: roll it back before the next one begins.
    rollback_pending: bool,
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    inner: TxInner,
}

enum TxInner {
    /// PostgreSQL: a pooled connection's transaction.
    Pooled(Transaction<'static, Any>),
    /// SQLite: the write connection, held (and so the write gate) until commit or drop.
    Held(HeldTx),
}

struct HeldTx {
    slot: OwnedMappedMutexGuard<Option<WriteSlot>, WriteSlot>,
    committed: bool,
}

impl Drop for HeldTx {
    fn drop(&mut self) {
        if !self.committed {
            self.slot.rollback_pending = true;
        }
    }
}

impl WriteTx {
    /// The engine this transaction runs on, known by how it was begun.
    pub fn engine(&self) -> Engine {
        match &self.inner {
            TxInner::Pooled(_) => Engine::Postgres,
            TxInner::Held(_) => Engine::Sqlite,
        }
    }

    /// A statement's row-locking form: PostgreSQL locks the selected rows, SQLite already holds
    /// the write lock.
    pub(crate) fn for_update(&self, postgres: &'static str, sqlite: &'static str) -> &'static str {
        match self.engine() {
            Engine::Postgres => postgres,
            Engine::Sqlite => sqlite,
        }
    }

    pub fn conn(&mut self) -> &mut AnyConnection {
        match &mut self.inner {
            TxInner::Pooled(tx) => tx,
            TxInner::Held(held) => &mut held.slot.conn,
        }
    }
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Pooled(tx) => tx.commit().await?,
            TxInner::Held(mut held) => {
                held.slot.conn.execute("COMMIT").await?;
                held.committed = true;
            }
        }
        Ok(())
    }
}

/// A write transaction as the statements of a money movement see it: sqlx's (PostgreSQL, and
/// SQLite's other writers) or a batch of SQLite's group-commit writer. This is the one seam
/// between the engines: every store function a movement calls takes it and chooses the engine's
/// statements itself, so nothing above `store` is written twice.
pub enum Tx<'t> {
    Sqlx(&'t mut WriteTx),
    Batch(group::SyncTx<'t>),
}

impl<'t> From<&'t mut WriteTx> for Tx<'t> {
    fn from(tx: &'t mut WriteTx) -> Self {
        Tx::Sqlx(tx)
    }
}

/// Whether a unit of write work may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Abort,
}

/// Write work that runs in one transaction on either engine ([`Db::run_write`]): it keeps what
/// it decided in itself and says whether its writes may be committed. An operating error is
/// `Abort`.
pub trait TxWork: Send + 'static {
    fn run(&mut self, tx: &mut Tx<'_>) -> impl std::future::Future<Output = Verdict> + Send;
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_customers.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_master_rotation.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_devices_and_signup_throttle.sql"),
    ),
    (5, include_str!("../../migrations/sqlite/0005_passkeys.sql")),
    (
        6,
        include_str!("../../migrations/sqlite/0006_mail_and_authenticator.sql"),
    ),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_customers.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_master_rotation.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_devices_and_signup_throttle.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_passkeys.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_mail_and_authenticator.sql"),
    ),
];

impl Db {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            Engine::Postgres
        };
        if engine == Engine::Sqlite {
            create_sqlite_parent_dir(url);
        }
        let options: AnyConnectOptions = url.parse()?;
        let max_connections = match engine {
            Engine::Sqlite => DB_POOL_CONNECTIONS_SQLITE_MAX,
            Engine::Postgres => DB_POOL_CONNECTIONS_POSTGRES_MAX,
        };
        let pool = open_pool(engine, options.clone(), max_connections).await?;
        // SQLite: every write goes through one connection of its own, so its page cache stays
        // valid from one write transaction to the next (a connection's cache is dropped whenever
        // another connection has written); the read pool serves the readers in parallel.
        let writer = match engine {
            Engine::Sqlite => {
                let conn = connect(engine, &options).await?;
                Some(Arc::new(Writer {
                    slot: Arc::new(Mutex::new(Some(WriteSlot {
                        conn,
                        rollback_pending: false,
                    }))),
                    options,
                }))
            }
            Engine::Postgres => None,
        };
        let mut db = Db {
            pool,
            writer,
            engine,
            group: None,
        };
        if let (Some(writer), Some(path)) = (&db.writer, sqlite_path(url)) {
            db.group = Some(group::GroupCommit::start(writer.slot.clone(), path)?);
        }
        Ok(db)
    }

    /// The group-commit queue (SQLite only: PostgreSQL runs transactions in parallel).
    pub fn group_commit(&self) -> Option<&group::GroupCommit> {
        self.group.as_ref()
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `work` in a write transaction and commits it when the work says `Keep`: on SQLite in
    /// a batch of the group-commit writer (a batch rolled back because of another job runs the
    /// work again in a batch of its own), on PostgreSQL in a transaction of its own. Returns the
    /// work, holding what it decided; `Err` when the transaction itself could not begin or
    /// commit (nothing of it was kept).
    pub async fn run_write<W: TxWork>(&self, mut work: W) -> Result<W, StoreError> {
        if let Some(group) = &self.group {
            return group.run(work).await;
        }
        let mut tx = self.begin_write().await?;
        let verdict = work.run(&mut Tx::Sqlx(&mut tx)).await;
        if verdict == Verdict::Keep {
            tx.commit().await?;
        }
        Ok(work)
    }

    /// Starts a write transaction (see the module doc for the locking scheme).
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let inner = match &self.writer {
            Some(writer) => TxInner::Held(writer.begin().await?),
            None => TxInner::Pooled(self.pool.begin().await?),
        };
        Ok(WriteTx { inner })
    }

    /// Applies pending migrations; returns how many ran. Safe to run from several processes.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut tx = self.begin_write().await?;
        let migrations = match self.engine {
            Engine::Sqlite => MIGRATIONS_SQLITE,
            Engine::Postgres => {
                // Serialises concurrent migrators (several instances starting at once).
                sqlx::query("SELECT pg_advisory_xact_lock(7263554901)")
                    .execute(tx.conn())
                    .await?;
                MIGRATIONS_POSTGRES
            }
        };
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(tx.conn())
        .await?;
        let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations")
            .fetch_all(tx.conn())
            .await?;
        let mut ran = 0;
        for (version, sql) in migrations {
            if applied.iter().any(|(v,)| v == version) {
                continue;
            }
            sqlx::raw_sql(*sql).execute(tx.conn()).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(crate::now_millis())
                .execute(tx.conn())
                .await?;
            ran += 1;
        }
        tx.commit().await?;
        Ok(ran)
    }

    /// `GET /healthz`: the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            // Waits for a transaction in progress; after it, a write would open a new connection.
            let slot = writer.slot.lock().await.take();
            if let Some(slot) = slot
                && let Err(error) = slot.conn.close().await
            {
                tracing::warn!(%error, "closing the write connection");
            }
        }
        self.pool.close().await;
    }
}

impl Writer {
    /// Takes the write gate and begins `BEGIN IMMEDIATE` on the write connection: first rolling
    /// back a transaction dropped without commit, and opening the connection again if that or a
    /// previous statement failed (a connection in doubt is never reused).
    async fn begin(&self) -> Result<HeldTx, StoreError> {
        let mut slot =
            tokio::time::timeout(DB_POOL_ACQUIRE_TIMEOUT, self.slot.clone().lock_owned())
                .await
                .map_err(|_| StoreError::Busy)?;
        let rollback_failed = match slot.as_mut() {
            Some(open) if open.rollback_pending => {
                let failed = open.conn.execute("ROLLBACK").await.is_err();
                open.rollback_pending = false;
                failed
            }
            _ => false,
        };
        if rollback_failed {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(WriteSlot {
                conn: connect(Engine::Sqlite, &self.options).await?,
                rollback_pending: false,
            });
        }
        let begun = match slot.as_mut() {
            Some(open) => {
                // Until `BEGIN` has answered, a rollback is owed: if this future is dropped while
                // waiting (a request timing out behind a CLI writer), the statement still runs.
                open.rollback_pending = true;
                let begun = open.conn.execute("BEGIN IMMEDIATE").await.map(|_| ());
                open.rollback_pending = false;
                begun
            }
            None => Ok(()),
        };
        if let Err(error) = begun {
            *slot = None;
            return Err(error.into());
        }
        let slot = OwnedMutexGuard::try_map(slot, Option::as_mut).map_err(|_| StoreError::Busy)?;
        Ok(HeldTx {
            slot,
            committed: false,
        })
    }
}

/// One connection outside any pool (SQLite's write connection), set up like the pooled ones.
async fn connect(engine: Engine, options: &AnyConnectOptions) -> Result<AnyConnection, StoreError> {
    let mut conn = AnyConnection::connect_with(options).await?;
    configure(engine, &mut conn).await?;
    Ok(conn)
}

/// Per-connection settings, for pooled and held connections alike.
async fn configure(engine: Engine, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    match engine {
        Engine::Sqlite => {
            // Durability first: acknowledged writes survive a crash or power loss.
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MILLIS}"
            )))
            .await?;
        }
        Engine::Postgres => {
            conn.execute("SET synchronous_commit = on").await?;
        }
    }
    Ok(())
}

async fn open_pool(
    engine: Engine,
    options: AnyConnectOptions,
    max_connections: u32,
) -> Result<AnyPool, StoreError> {
    Ok(AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(DB_POOL_ACQUIRE_TIMEOUT)
        // No ping before each use: sqlx already pings every connection when it goes back to
        // the pool and drops one that fails, so a second ping on the way out only adds a round
        // trip (PostgreSQL) or a thread hand-off (SQLite) to every query. A server that went
        // away between the two fails that one request, and the connection is replaced.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| Box::pin(configure(engine, conn)))
        .connect_with(options)
        .await?)
}

/// The file a `sqlite:` URL names (`None`: an in-memory database, which no second connection
/// can share).
fn sqlite_path(url: &str) -> Option<&str> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        None
    } else {
        Some(path)
    }
}

fn create_sqlite_parent_dir(url: &str) {
    if let Some(parent) = sqlite_path(url).and_then(|path| std::path::Path::new(path).parent()) {
        let _ = std::fs::create_dir_all(parent);
    }
}

/// A consistent read-only snapshot (for `verify`): every read through it sees one point in time.
pub struct Snapshot {
    tx: Transaction<'static, Any>,
}

impl Snapshot {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Db {
    pub async fn begin_snapshot(&self) -> Result<Snapshot, StoreError> {
        let tx = match self.engine {
            Engine::Sqlite => self.pool.begin().await?,
            Engine::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        };
        Ok(Snapshot { tx })
    }
}
