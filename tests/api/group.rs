//! Group commit (SQLite): movements queued together share one transaction, and one job's
//! failure rolls back its batch and sends every job of it back to run on its own.

use alphabank::store::group::{BatchError, Batched, GroupCommit, SyncTx, Verdict};
use alphabank::store::{Engine, captcha as captcha_store};
use tokio::sync::oneshot;

use crate::helpers::test_services;

/// A job that marks one captcha challenge as spent and then keeps or aborts.
struct MarkJob {
    hash: [u8; 32],
    verdict: Verdict,
    reply: Option<oneshot::Sender<Result<(), BatchError>>>,
}

impl Batched for MarkJob {
    fn run(&mut self, tx: &SyncTx<'_>) -> Verdict {
        captcha_store::spend_sync(tx, &self.hash, alphabank::now_millis() + 60_000).unwrap();
        self.verdict
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

/// Holds the write gate (an empty write transaction) while `submit` queues jobs: the writer
/// thread gathers its batch only once it holds the gate, so every job queued meanwhile lands in
/// one batch.
async fn queued_together(services: &alphabank::startup::Services, submit: impl FnOnce()) {
    let held = services.db.begin_write().await.unwrap();
    submit();
    held.commit().await.unwrap();
}

#[tokio::test]
async fn one_aborting_job_rolls_back_its_batch_and_every_job_is_sent_back() {
    let (services, _dir) = test_services().await;
    let Some(group) = sqlite_group(&services) else {
        return;
    };
    let (a, a_answer) = job(1, Verdict::Keep);
    let (b, b_answer) = job(2, Verdict::Abort);
    let (c, c_answer) = job(3, Verdict::Keep);
    queued_together(&services, || {
        group.submit(a);
        group.submit(b);
        group.submit(c);
    })
    .await;
    for answer in [a_answer, b_answer, c_answer] {
        assert!(matches!(answer.await.unwrap(), Err(BatchError::Retry)));
    }
    for n in 1..=3 {
        assert!(
            !marked(&services, n).await,
            "job {n}'s write was rolled back"
        );
    }
    assert_eq!(group.batches_rolled_back(), 1);

    // A batch of keeping jobs commits once, with every job's write.
    let (d, d_answer) = job(4, Verdict::Keep);
    let (e, e_answer) = job(5, Verdict::Keep);
    queued_together(&services, || {
        group.submit(d);
        group.submit(e);
    })
    .await;
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
    // While the gate is held the writer takes at most one job off the queue and waits, so of
    // three jobs beyond the bound at least two find the queue full.
    let held = services.db.begin_write().await.unwrap();
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
    // Sent back already, before the writer ran a single batch.
    let mut sent_back = 0;
    let mut queued = Vec::new();
    for mut answer in answers {
        match answer.try_recv() {
            Ok(outcome) => {
                assert!(matches!(outcome, Err(BatchError::Retry)));
                sent_back += 1;
            }
            Err(_) => queued.push(answer),
        }
    }
    assert!((2..=3).contains(&sent_back), "{sent_back} jobs sent back");
    held.commit().await.unwrap();
    let committed = queued.len();
    for answer in queued {
        assert!(answer.await.unwrap().is_ok());
    }
    assert_eq!(committed + sent_back, GROUP_COMMIT_QUEUE_MAX + 3);
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM captcha_spent")
        .fetch_one(services.db.pool())
        .await
        .unwrap();
    assert_eq!(rows, committed as i64);
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

/// SQLite: a write transaction dropped without commit (its request went away) still holds the
/// write lock until someone rolls it back. The group commit's thread, which writes through a
/// connection of its own, must not wait on that lock: its batch commits, and the dropped write
/// is gone.
#[tokio::test]
async fn a_batch_after_a_write_dropped_without_commit_commits_and_the_dropped_write_is_gone() {
    let (services, _dir) = test_services().await;
    let Some(group) = sqlite_group(&services) else {
        return;
    };
    let expires = alphabank::now_millis() + 60_000;
    let mut dropped = services.db.begin_write().await.unwrap();
    captcha_store::spend_in(&mut dropped, &[7; 32], expires)
        .await
        .unwrap();
    drop(dropped);
    let (eight, answer) = job(8, Verdict::Keep);
    group.submit(eight);
    assert!(answer.await.unwrap().is_ok(), "the batch committed");
    assert!(!marked(&services, 7).await, "dropped: rolled back");
    assert!(marked(&services, 8).await);
    // sqlx's writer opens its connection again and writes on.
    let mut next = services.db.begin_write().await.unwrap();
    captcha_store::spend_in(&mut next, &[9; 32], expires)
        .await
        .unwrap();
    next.commit().await.unwrap();
    assert!(marked(&services, 9).await);
}
