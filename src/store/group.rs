//! Group commit for SQLite: write jobs queued by concurrent requests run one after another inside
//! one write transaction and share its one `fsync`. SQLite has one writer at a time anyway, and a
//! money movement's commit (the WAL flush) cost about as much as all of its statements together,
//! so batching them lets the writer do more movements per second without weakening durability: a
//! request is answered only after the batch that holds its writes has committed.
//!
//! A job runs exactly as it would alone, in submission order, and sees the writes of the jobs
//! before it in its batch (so two jobs with the same one-time code or idempotency key behave as
//! they would one after the other). A job that meets an operating error says so
//! ([`Verdict::Abort`]): the batch is rolled back and every job of it is told to run again on its
//! own ([`BatchError::Retry`]), so one failure never spoils another request's writes.

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::{Db, WriteTx};
use crate::limits::{GROUP_COMMIT_BATCH_MAX, GROUP_COMMIT_QUEUE_MAX};

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

/// A write job: runs inside the batch's transaction, then hears whether it was committed.
pub trait Batched: Send + 'static {
    fn run<'a>(&'a mut self, tx: &'a mut WriteTx) -> BoxFuture<'a, Verdict>;
    fn finish(self: Box<Self>, outcome: Result<(), BatchError>);
}

/// The queue in front of the writer task (cheap to clone).
#[derive(Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<Box<dyn Batched>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl GroupCommit {
    /// Starts the writer task on the current runtime. `db` must not hold this `GroupCommit`
    /// (the task ends when every sender is gone).
    pub(crate) fn start(db: Db) -> Self {
        let (sender, receiver) = mpsc::channel(GROUP_COMMIT_QUEUE_MAX);
        tokio::spawn(writer(db, receiver));
        GroupCommit { sender }
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

async fn writer(db: Db, mut receiver: mpsc::Receiver<Box<dyn Batched>>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_BATCH_MAX {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut tx = match db.begin_write().await {
            Ok(tx) => tx,
            Err(error) => {
                let message = error.to_string();
                for job in batch {
                    job.finish(Err(BatchError::Failed(message.clone())));
                }
                continue;
            }
        };
        let mut aborted = false;
        for job in batch.iter_mut() {
            if job.run(&mut tx).await == Verdict::Abort {
                aborted = true;
                break;
            }
        }
        if aborted {
            drop(tx);
            for job in batch {
                job.finish(Err(BatchError::Retry));
            }
            continue;
        }
        match tx.commit().await {
            Ok(()) => {
                for job in batch {
                    job.finish(Ok(()));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for job in batch {
                    job.finish(Err(BatchError::Failed(message.clone())));
                }
            }
        }
    }
}
