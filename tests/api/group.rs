//! Group commit (SQLite): movements queued together share one transaction, and one job's
//! failure rolls back its batch and sends every job of it back to run on its own.

use alphabank::store::group::{BatchError, Batched, GroupCommit, Verdict};
use alphabank::store::{Engine, WriteTx, captcha as captcha_store};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::helpers::test_services;

/// A job that marks one captcha challenge as spent and then keeps or aborts.
struct MarkJob {
    hash: [u8; 32],
    verdict: Verdict,
    reply: Option<oneshot::Sender<Result<(), BatchError>>>,
}

impl Batched for MarkJob {
    fn run<'a>(&'a mut self, tx: &'a mut WriteTx) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            captcha_store::spend_in(tx, &self.hash, alphabank::now_millis() + 60_000)
                .await
                .unwrap();
            self.verdict
        })
    }
    fn finish(self: Box<Self>, outcome: Result<(), BatchError>) {
        let _ = self.reply.unwrap().send(outcome);
    }
}

fn job(n: u8, verdict: Verdict) -> (Box<MarkJob>, oneshot::Receiver<Result<(), BatchError>>) {
    let (reply, answer) = oneshot::channel();
    let job = MarkJob {
        hash: [n; 32],
        verdict,
        reply: Some(reply),
    };
    (Box::new(job), answer)
}

async fn marked(services: &alphabank::startup::Services, n: u8) -> bool {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT expires_at FROM captcha_spent WHERE challenge_hash = $1")
            .bind([n; 32].to_vec())
            .fetch_optional(services.db.pool())
            .await
            .unwrap();
    row.is_some()
}

/// The group-commit writer; `None` (nothing to test) only on PostgreSQL, which does not batch.
fn sqlite_group(services: &alphabank::startup::Services) -> Option<&GroupCommit> {
    let group = services.db.group_commit();
    if group.is_none() {
        assert_eq!(
            services.db.engine(),
            Engine::Postgres,
            "only SQLite batches"
        );
    }
    group
}

// Single-threaded runtime (the default): `submit` does not yield, so jobs submitted one after
// the other are all queued before the writer task runs, and land in one batch.
#[tokio::test]
async fn one_aborting_job_rolls_back_its_batch_and_every_job_is_sent_back() {
    let (services, _dir) = test_services().await;
    let Some(group) = sqlite_group(&services) else {
        return;
    };
    let (a, a_answer) = job(1, Verdict::Keep);
    let (b, b_answer) = job(2, Verdict::Abort);
    let (c, c_answer) = job(3, Verdict::Keep);
    group.submit(a);
    group.submit(b);
    group.submit(c);
    for answer in [a_answer, b_answer, c_answer] {
        assert!(matches!(answer.await.unwrap(), Err(BatchError::Retry)));
    }
    for n in 1..=3 {
        assert!(
            !marked(&services, n).await,
            "job {n}'s write was rolled back"
        );
    }

    // A batch of keeping jobs commits once, with every job's write.
    let (d, d_answer) = job(4, Verdict::Keep);
    let (e, e_answer) = job(5, Verdict::Keep);
    group.submit(d);
    group.submit(e);
    assert!(d_answer.await.unwrap().is_ok());
    assert!(e_answer.await.unwrap().is_ok());
    assert!(marked(&services, 4).await && marked(&services, 5).await);
}

#[tokio::test]
async fn beyond_the_queue_bound_a_job_is_sent_back_at_once_to_run_alone() {
    use alphabank::limits::GROUP_COMMIT_QUEUE_MAX;
    let (services, _dir) = test_services().await;
    let Some(group) = sqlite_group(&services) else {
        return;
    };
    let mut answers = Vec::new();
    // Queued without yielding: the writer has not taken any job yet.
    for i in 0..GROUP_COMMIT_QUEUE_MAX + 3 {
        let (reply, answer) = oneshot::channel();
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
        group.submit(Box::new(MarkJob {
            hash,
            verdict: Verdict::Keep,
            reply: Some(reply),
        }));
        answers.push(answer);
    }
    let overflow: Vec<_> = answers.split_off(GROUP_COMMIT_QUEUE_MAX);
    for mut answer in overflow {
        // Already answered, before the writer ran.
        assert!(matches!(answer.try_recv(), Ok(Err(BatchError::Retry))));
    }
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM captcha_spent")
        .fetch_one(services.db.pool())
        .await
        .unwrap();
    assert_eq!(rows, GROUP_COMMIT_QUEUE_MAX as i64);
}

/// Both engines: a write transaction dropped without commit — given up by its owner, or its
/// request cancelled while it held the write connection — leaves nothing behind, and the next
/// one begins on a clean connection (on SQLite the one write connection is held, not pooled, so
/// its rollback runs before the next `BEGIN`).
#[tokio::test]
async fn a_write_dropped_without_commit_leaves_nothing_and_the_next_one_commits() {
    let (services, _dir) = test_services().await;
    let expires = alphabank::now_millis() + 60_000;
    let mut dropped = services.db.begin_write().await.unwrap();
    captcha_store::spend_in(&mut dropped, &[1; 32], expires)
        .await
        .unwrap();
    drop(dropped);
    let cancelled = async {
        let mut tx = services.db.begin_write().await.unwrap();
        captcha_store::spend_in(&mut tx, &[2; 32], expires)
            .await
            .unwrap();
        // The request goes away here, the transaction still open (a timeout, a client leaving).
        std::future::pending::<()>().await;
    };
    let never = tokio::time::timeout(std::time::Duration::from_millis(100), cancelled).await;
    assert!(never.is_err(), "the write never finishes on its own");
    let mut next = services.db.begin_write().await.unwrap();
    captcha_store::spend_in(&mut next, &[3; 32], expires)
        .await
        .unwrap();
    next.commit().await.unwrap();
    assert!(!marked(&services, 1).await, "dropped: rolled back");
    assert!(!marked(&services, 2).await, "cancelled: rolled back");
    assert!(marked(&services, 3).await, "the next write committed");
    assert_eq!(captcha_store::count(&services.db).await.unwrap(), 1);
}
