//! Group commit for SQLite: write jobs queued by concurrent requests run one after another inside
//! one write transaction and share its one `fsync`. SQLite has one writer at a time anyway, and a
//! money movement's commit (the WAL flush) cost about as much as all of its statements together,
//! so batching them lets the writer do more movements per second without weakening durability: a
//! request is answered only after the batch that holds its writes has committed.
//!
//! The batches run on a thread of their own, with a SQLite connection of its own (`rusqlite`), and
//! each job runs its statements synchronously on that thread. Through sqlx every statement was a
//! hand-off to the connection's thread and back, and the writer's time per movement (five such
//! calls) was what bounded SQLite's transfers; here a whole batch costs no hand-off at all. While
//! a batch runs, the writer holds the same in-process write gate as sqlx's write connection
//! ([`super::Db::begin_write`]), so the two never wait on SQLite's file lock for each other.
//!
//! A job runs exactly as it would alone, in submission order, and sees the writes of the jobs
//! before it in its batch (so two jobs with the same one-time code or idempotency key behave as
//! they would one after the other). A job that meets an operating error says so
//! ([`Verdict::Abort`]): the batch is rolled back and every job of it is told to run again on its
//! own ([`BatchError::Retry`]), so one failure never spoils another request's writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{Mutex, mpsc};

use super::{StoreError, WriteSlot};
use crate::limits::{GROUP_COMMIT_BATCH_MAX, GROUP_COMMIT_QUEUE_MAX, SQLITE_BUSY_TIMEOUT_MILLIS};

/// Whether a job's writes may be committed with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Abort,
}

/// Why a job's writes were not committed.
#[derive(Debug)]
pub enum BatchError {
    /// The batch was rolled back because of another job (or this one): run the job on its own.
    Retry,
    /// The database refused the transaction or its commit; nothing of the batch was kept.
    Failed(String),
}

/// A write job: runs inside the batch's transaction (on the writer's thread: it must not block
/// on anything but its own statements), then hears whether it was committed.
pub trait Batched: Send + 'static {
    fn run(&mut self, tx: &SyncTx<'_>) -> Verdict;
    fn finish(self: Box<Self>, outcome: Result<(), BatchError>);
}

/// A value bound to a `$N` placeholder.
pub type Param<'a> = ValueRef<'a>;

/// `NULL` or the text.
pub fn opt_text(value: Option<&str>) -> Param<'_> {
    value.map_or(Param::Null, |text| Param::Text(text.as_bytes()))
}

/// `NULL` or the bytes.
pub fn opt_blob(value: Option<&[u8]>) -> Param<'_> {
    value.map_or(Param::Null, Param::Blob)
}

/// `NULL` or the integer.
pub fn opt_int(value: Option<i64>) -> Param<'static> {
    value.map_or(Param::Null, Param::Integer)
}

/// The batch's write transaction, on the writer's own connection. Statements use the same `$N`
/// placeholders as the rest of the store (`$1` is `params[0]`, in whichever statement it appears).
pub struct SyncTx<'c> {
    conn: &'c rusqlite::Connection,
}

impl SyncTx<'_> {
    /// Runs `statements` one after another; returns the rows they changed, summed.
    pub fn execute(&self, statements: &[&str], params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.execute_raw(statements, params)
            .map_err(StoreError::from)
    }

    /// [`SyncTx::execute`] for inserts: a unique-constraint violation is
    /// [`StoreError::Conflict`]`(what)`.
    pub fn execute_insert(
        &self,
        statements: &[&str],
        params: &[Param<'_>],
        what: &'static str,
    ) -> Result<usize, StoreError> {
        self.execute_raw(statements, params)
            .map_err(|error| StoreError::from_sqlite_insert(error, what))
    }

    fn execute_raw(&self, statements: &[&str], params: &[Param<'_>]) -> rusqlite::Result<usize> {
        let mut changed = 0;
        for sql in statements {
            let mut statement = self.conn.prepare_cached(sql)?;
            bind(&mut statement, params)?;
            changed += statement.raw_execute()?;
        }
        Ok(changed)
    }

    /// Runs one statement and maps every row it returns.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut statement = self.conn.prepare_cached(sql)?;
        bind(&mut statement, params)?;
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(map(row)?);
        }
        Ok(out)
    }
}

/// Binds each `$N` placeholder of `statement` to `params[N - 1]`.
fn bind(statement: &mut rusqlite::Statement<'_>, params: &[Param<'_>]) -> rusqlite::Result<()> {
    for index in 1..=statement.parameter_count() {
        let value = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| params.get(number.checked_sub(1)?))
            .copied()
            .ok_or(rusqlite::Error::InvalidParameterCount(index, params.len()))?;
        statement.raw_bind_parameter(index, ToSqlOutput::Borrowed(value))?;
    }
    Ok(())
}

/// The queue in front of the writer thread (cheap to clone).
#[derive(Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<Box<dyn Batched>>,
    rolled_back: Arc<AtomicU64>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl GroupCommit {
    /// Opens the writer's connection to the database file at `path` and starts its thread, which
    /// takes `gate` for each batch. The thread ends when every `GroupCommit` is gone.
    pub(super) fn start(
        gate: Arc<Mutex<Option<WriteSlot>>>,
        path: &str,
    ) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        // The settings of every other connection (see `super::configure`).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_millis(u64::from(
            SQLITE_BUSY_TIMEOUT_MILLIS,
        )))?;
        conn.set_prepared_statement_cache_capacity(32);
        let (sender, receiver) = mpsc::channel(GROUP_COMMIT_QUEUE_MAX);
        let rolled_back = Arc::new(AtomicU64::new(0));
        let counter = rolled_back.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || writer(&conn, &gate, receiver, &counter))
            .map_err(|error| StoreError::Corrupt(format!("starting the writer thread: {error}")))?;
        Ok(GroupCommit {
            sender,
            rolled_back,
        })
    }

    /// How many batches were rolled back so far (each job of them ran again on its own through
    /// sqlx). Zero while nothing fails: the batches' own statements did the work.
    pub fn batches_rolled_back(&self) -> u64 {
        self.rolled_back.load(Ordering::Relaxed)
    }

    /// Queues `job`. When the queue is full or the writer is gone the job is finished at once
    /// with [`BatchError::Retry`], and the caller runs it on its own.
    pub fn submit(&self, job: Box<dyn Batched>) {
        if let Err(error) = self.sender.try_send(job) {
            let job = match error {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            job.finish(Err(BatchError::Retry));
        }
    }
}

fn writer(
    conn: &rusqlite::Connection,
    gate: &Mutex<Option<WriteSlot>>,
    mut receiver: mpsc::Receiver<Box<dyn Batched>>,
    rolled_back: &AtomicU64,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        let outcome = {
            // No sqlx write transaction in this process meanwhile. The gate is taken before the
            // batch is gathered: jobs queued while another writer held it join this batch.
            let mut slot = gate.blocking_lock();
            while batch.len() < GROUP_COMMIT_BATCH_MAX {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if slot.as_ref().is_some_and(|open| open.rollback_pending) {
                // A transaction dropped without commit still holds SQLite's write lock: closing
                // its connection rolls it back (the next `begin_write` opens a new one).
                *slot = None;
            }
            run_batch(conn, &mut batch)
        };
        if let Err(error) = &outcome {
            rolled_back.fetch_add(1, Ordering::Relaxed);
            let reason = match error {
                BatchError::Retry => "a job met an operating error; every job runs again alone",
                BatchError::Failed(message) => message.as_str(),
            };
            tracing::warn!(
                jobs = batch.len(),
                reason,
                "a group-commit batch was rolled back"
            );
        }
        for job in batch {
            job.finish(match &outcome {
                Ok(()) => Ok(()),
                Err(BatchError::Retry) => Err(BatchError::Retry),
                Err(BatchError::Failed(message)) => Err(BatchError::Failed(message.clone())),
            });
        }
    }
}

/// Runs a batch's jobs in one transaction and commits it, or rolls it back.
fn run_batch(
    conn: &rusqlite::Connection,
    batch: &mut [Box<dyn Batched>],
) -> Result<(), BatchError> {
    let failed = |error: rusqlite::Error| BatchError::Failed(StoreError::from(error).to_string());
    conn.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
    let tx = SyncTx { conn };
    let kept = batch.iter_mut().all(|job| job.run(&tx) == Verdict::Keep);
    let ended = if kept {
        conn.execute_batch("COMMIT")
    } else {
        conn.execute_batch("ROLLBACK")
    };
    match ended {
        Ok(()) if kept => Ok(()),
        Ok(()) => Err(BatchError::Retry),
        Err(error) => {
            // A failed `COMMIT` leaves the transaction open (SQLite may have rolled it back
            // already): end it, so the next batch begins afresh.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(failed(error))
        }
    }
}
