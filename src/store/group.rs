//! Group commit for SQLite: write jobs queued by concurrent requests run one after another inside
//! one write transaction and share its one `fsync`. SQLite has one writer at a time anyway, and a
//! money movement's commit (the WAL flush) cost about as much as all of its statements together,
//! so batching them lets the writer do more movements per second without weakening durability: a
//! request is answered only after the batch that holds its writes has committed.
//!
//! The batches run on a thread of their own, with a SQLite connection of its own (`rusqlite`), and
//! each job runs its statements synchronously on that thread. Through sqlx every statement is a
//! hand-off to the connection's thread and back, and a movement makes five such calls; here a
//! whole batch costs no hand-off at all. While
//! a batch runs, the writer holds the same in-process write gate as sqlx's write connection
//! ([`super::Db::begin_write`]), so the two never wait on SQLite's file lock for each other.
//!
//! A job is a [`TxWork`], the same code that runs in a PostgreSQL transaction: its statements
//! see a [`Tx::Batch`] and are synchronous here, so its future completes in one poll on this
//! thread. A job runs exactly as it would alone, in submission order, and sees the writes of the
//! jobs before it in its batch (so two jobs with the same one-time code or idempotency key behave
//! as they would one after the other). A job that meets an operating error says so
//! ([`Verdict::Abort`]): the batch is rolled back and every job of it runs again in a batch of
//! its own, so one failure never spoils another request's writes. There is no second executor.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{StoreError, Tx, TxWork, Verdict, WriteSlot};
use crate::limits::{
    DB_POOL_ACQUIRE_TIMEOUT, GROUP_COMMIT_BATCH_MAX, GROUP_COMMIT_QUEUE_MAX,
    SQLITE_BUSY_TIMEOUT_MILLIS,
};

/// Why a job's writes were not committed.
#[derive(Debug, Clone)]
enum BatchError {
    /// The batch was rolled back because of a job's `Abort`.
    RolledBack,
    /// The database refused the transaction or its commit; nothing of the batch was kept.
    Failed { busy: bool, message: String },
}

/// A queued job: runs inside the batch's transaction (on the writer's thread: it must not wait
/// on anything but its own statements), then hears whether it was committed.
trait Batched: Send + 'static {
    fn run(&mut self, tx: &mut rusqlite::Connection) -> Verdict;
    /// Runs only in a batch of its own.
    fn alone(&self) -> bool;
    fn finish(self: Box<Self>, outcome: Result<(), BatchError>);
}

/// A [`TxWork`] on its way through the queue, and where to hand it back.
struct Job<W: TxWork> {
    work: W,
    alone: bool,
    reply: Option<oneshot::Sender<(W, Result<(), BatchError>)>>,
}

impl<W: TxWork> Batched for Job<W> {
    fn run(&mut self, conn: &mut rusqlite::Connection) -> Verdict {
        let mut tx = Tx::Batch(SyncTx { conn });
        complete_now(self.work.run(&mut tx)).unwrap_or_else(|| {
            tracing::error!("a group-commit job waited on something besides its statements");
            Verdict::Abort
        })
    }

    fn alone(&self) -> bool {
        self.alone
    }

    fn finish(self: Box<Self>, outcome: Result<(), BatchError>) {
        let Job { work, reply, .. } = *self;
        if let Some(reply) = reply {
            // The request may have gone away meanwhile; its writes are committed or not all the same.
            let _ = reply.send((work, outcome));
        }
    }
}

/// Polls `future` once: `Some(output)` when it is ready. A job's statements on this thread never
/// wait, so its future is ready at once; one that is not is a bug, refused rather than blocked on.
fn complete_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
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
    conn: &'c mut rusqlite::Connection,
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
    /// Jobs queued and not yet in a batch.
    waiting: Arc<AtomicUsize>,
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
        let mut conn = rusqlite::Connection::open(path)?;
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
        let waiting = Arc::new(AtomicUsize::new(0));
        let counters = Counters {
            rolled_back: rolled_back.clone(),
            waiting: waiting.clone(),
        };
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || writer(&mut conn, &gate, receiver, &counters))
            .map_err(|error| StoreError::Corrupt(format!("starting the writer thread: {error}")))?;
        Ok(GroupCommit {
            sender,
            rolled_back,
            waiting,
        })
    }

    /// How many batches were rolled back so far (each job of them ran again in a batch of its
    /// own). Zero while nothing fails.
    pub fn batches_rolled_back(&self) -> u64 {
        self.rolled_back.load(Ordering::Relaxed)
    }

    /// How many jobs are queued and not yet in a batch (the queue's depth).
    pub fn jobs_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Runs `work` in a batch and hands it back once the batch has committed or rolled back.
    /// A batch rolled back because of another job runs the work again in a batch of its own; a
    /// rollback there was the work's own `Abort`, which the work itself reports. A full queue
    /// waits for room (at most `DB_POOL_ACQUIRE_TIMEOUT`, then [`StoreError::Busy`]).
    pub async fn run<W: TxWork>(&self, work: W) -> Result<W, StoreError> {
        let (work, outcome) = self.queue(work, false).await?;
        let (work, outcome) = match outcome {
            Err(BatchError::RolledBack) => self.queue(work, true).await?,
            other => (work, other),
        };
        match outcome {
            Ok(()) | Err(BatchError::RolledBack) => Ok(work),
            Err(BatchError::Failed { busy: true, .. }) => Err(StoreError::Busy),
            Err(BatchError::Failed { message, .. }) => Err(StoreError::Batch(message)),
        }
    }

    async fn queue<W: TxWork>(
        &self,
        work: W,
        alone: bool,
    ) -> Result<(W, Result<(), BatchError>), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            work,
            alone,
            reply: Some(reply),
        });
        let stopped = || StoreError::Batch("the group-commit writer stopped".into());
        let permit = tokio::time::timeout(DB_POOL_ACQUIRE_TIMEOUT, self.sender.reserve())
            .await
            .map_err(|_| StoreError::Busy)?
            .map_err(|_| stopped())?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        permit.send(job);
        answer.await.map_err(|_| stopped())
    }
}

/// What the writer thread counts, shared with [`GroupCommit`].
struct Counters {
    rolled_back: Arc<AtomicU64>,
    waiting: Arc<AtomicUsize>,
}

fn writer(
    conn: &mut rusqlite::Connection,
    gate: &Mutex<Option<WriteSlot>>,
    mut receiver: mpsc::Receiver<Box<dyn Batched>>,
    counters: &Counters,
) {
    // A job that must run alone, met while gathering another batch: it opens the next one.
    let mut held: Option<Box<dyn Batched>> = None;
    while let Some(first) = held.take().or_else(|| receiver.blocking_recv()) {
        let mut batch = vec![first];
        let outcome = {
            // No sqlx write transaction in this process meanwhile. The gate is taken before the
            // batch is gathered: jobs queued while another writer held it join this batch.
            let mut slot = gate.blocking_lock();
            while batch.len() < GROUP_COMMIT_BATCH_MAX && !batch.iter().any(|job| job.alone()) {
                match receiver.try_recv() {
                    Ok(job) if job.alone() => {
                        held = Some(job);
                        break;
                    }
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            counters.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
            if slot.as_ref().is_some_and(|open| open.rollback_pending) {
                // A transaction dropped without commit still holds SQLite's write lock: closing
                // its connection rolls it back (the next `begin_write` opens a new one).
                *slot = None;
            }
            run_batch(conn, &mut batch)
        };
        if let Err(error) = &outcome {
            counters.rolled_back.fetch_add(1, Ordering::Relaxed);
            let reason = match error {
                BatchError::RolledBack => {
                    "a job met an operating error; every job runs again alone"
                }
                BatchError::Failed { message, .. } => message.as_str(),
            };
            tracing::warn!(
                jobs = batch.len(),
                reason,
                "a group-commit batch was rolled back"
            );
        }
        for job in batch {
            job.finish(outcome.clone());
        }
    }
}

/// Runs a batch's jobs in one transaction and commits it, or rolls it back.
fn run_batch(
    conn: &mut rusqlite::Connection,
    batch: &mut [Box<dyn Batched>],
) -> Result<(), BatchError> {
    let failed = |error: rusqlite::Error| {
        let error = StoreError::from(error);
        BatchError::Failed {
            busy: error.is_busy(),
            message: error.to_string(),
        }
    };
    conn.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
    let kept = batch.iter_mut().all(|job| job.run(conn) == Verdict::Keep);
    let ended = if kept {
        conn.execute_batch("COMMIT")
    } else {
        conn.execute_batch("ROLLBACK")
    };
    match ended {
        Ok(()) if kept => Ok(()),
        Ok(()) => Err(BatchError::RolledBack),
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
