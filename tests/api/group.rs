//! Group commit (SQLite): jobs queued together share one transaction, and one job's failure
//! rolls back its batch and runs every job of it again in a batch of its own.

use alphabank::startup::Services;
use alphabank::store::group::GroupCommit;
use alphabank::store::{Engine, Tx, TxWork, Verdict, captcha as captcha_store};

use crate::helpers::test_services;

/// A job that marks one captcha challenge as spent and then keeps or aborts.
struct MarkJob {
    hash: [u8; 32],
    verdict: Verdict,
    ran: bool,
}

impl TxWork for MarkJob {
    async fn run(&mut self, tx: &mut Tx<'_>) -> Verdict {
        let expires = alphabank::now_millis() + 60_000;
        captcha_store::spend_in(tx, &self.hash, expires)
            .await
            .unwrap();
        self.ran = true;
        self.verdict
    }
}

fn mark(n: u8, verdict: Verdict) -> MarkJob {
    MarkJob {
        hash: [n; 32],
        verdict,
        ran: false,
    }
}

async fn marked(services: &Services, n: u8) -> bool {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT expires_at FROM captcha_spent WHERE challenge_hash = $1")
            .bind([n; 32].to_vec())
            .fetch_optional(services.db.pool())
            .await
            .unwrap();
    row.is_some()
}

/// The group-commit writer; `None` (nothing to test) only on PostgreSQL, which does not batch.
fn sqlite_group(services: &Services) -> Option<&GroupCommit> {
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

/// Runs `jobs` as concurrent requests would, queued while the write gate is held (an empty
/// write transaction): the writer thread gathers its batch only once it holds the gate, so the
/// jobs queued meanwhile land in one batch. The gate is released once every job is queued.
async fn queued_together(services: &Services, jobs: Vec<MarkJob>) -> Vec<MarkJob> {
    let group = services.db.group_commit().unwrap();
    let held = services.db.begin_write().await.unwrap();
    let count = jobs.len();
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let db = services.db.clone();
            tokio::spawn(async move { db.run_write(job).await.unwrap() })
        })
        .collect();
    while group.jobs_waiting() < count {
        tokio::task::yield_now().await;
    }
    held.commit().await.unwrap();
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.unwrap());
    }
    done
}

#[tokio::test]
async fn one_aborting_job_rolls_back_its_batch_and_every_job_runs_again_alone() {
    let (services, _dir) = test_services().await;
    let Some(group) = sqlite_group(&services) else {
        return;
    };
    let jobs = vec![
        mark(1, Verdict::Keep),
        mark(2, Verdict::Abort),
        mark(3, Verdict::Keep),
    ];
    let done = queued_together(&services, jobs).await;
    assert!(done.iter().all(|job| job.ran));
    assert!(
        marked(&services, 1).await,
        "job 1 committed in a batch of its own"
    );
    assert!(!marked(&services, 2).await, "job 2 aborted: rolled back");
    assert!(
        marked(&services, 3).await,
        "job 3 committed in a batch of its own"
    );
    // The shared batch, and job 2's own.
    assert_eq!(group.batches_rolled_back(), 2);

    // A batch of keeping jobs commits once, with every job's write.
    let done = queued_together(
        &services,
        vec![mark(4, Verdict::Keep), mark(5, Verdict::Keep)],
    )
    .await;
    assert!(done.iter().all(|job| job.ran));
    assert!(marked(&services, 4).await && marked(&services, 5).await);
    assert_eq!(group.batches_rolled_back(), 2);
}

#[tokio::test]
async fn beyond_the_queue_bound_a_job_waits_for_room_and_commits() {
    use alphabank::limits::GROUP_COMMIT_QUEUE_MAX;
    let (services, _dir) = test_services().await;
    let Some(group) = sqlite_group(&services) else {
        return;
    };
    let total = GROUP_COMMIT_QUEUE_MAX + 3;
    let held = services.db.begin_write().await.unwrap();
    let tasks: Vec<_> = (0..total)
        .map(|i| {
            let db = services.db.clone();
            let mut job = mark(0, Verdict::Keep);
            job.hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            tokio::spawn(async move { db.run_write(job).await })
        })
        .collect();
    // While the gate is held the writer takes at most one job off the queue and waits: the
    // queue fills to its bound and the jobs beyond it wait for room, none refused or lost.
    while group.jobs_waiting() < GROUP_COMMIT_QUEUE_MAX {
        tokio::task::yield_now().await;
    }
    assert!(
        group.jobs_waiting() <= GROUP_COMMIT_QUEUE_MAX + 1,
        "the queue is bounded"
    );
    assert!(
        tasks.iter().all(|task| !task.is_finished()),
        "nothing ran yet"
    );
    held.commit().await.unwrap();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().ran);
    }
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM captcha_spent")
        .fetch_one(services.db.pool())
        .await
        .unwrap();
    assert_eq!(rows, total as i64);
    assert_eq!(group.batches_rolled_back(), 0);
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
    captcha_store::spend_in(&mut Tx::Sqlx(&mut dropped), &[1; 32], expires)
        .await
        .unwrap();
    drop(dropped);
    let cancelled = async {
        let mut tx = services.db.begin_write().await.unwrap();
        captcha_store::spend_in(&mut Tx::Sqlx(&mut tx), &[2; 32], expires)
            .await
            .unwrap();
        // The request goes away here, the transaction still open (a timeout, a client leaving).
        std::future::pending::<()>().await;
    };
    let never = tokio::time::timeout(std::time::Duration::from_millis(100), cancelled).await;
    assert!(never.is_err(), "the write never finishes on its own");
    let mut next = services.db.begin_write().await.unwrap();
    captcha_store::spend_in(&mut Tx::Sqlx(&mut next), &[3; 32], expires)
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
    captcha_store::spend_in(&mut Tx::Sqlx(&mut dropped), &[7; 32], expires)
        .await
        .unwrap();
    drop(dropped);
    let eight = services.db.run_write(mark(8, Verdict::Keep)).await;
    assert!(eight.unwrap().ran, "the batch committed");
    assert_eq!(group.batches_rolled_back(), 0);
    assert!(!marked(&services, 7).await, "dropped: rolled back");
    assert!(marked(&services, 8).await);
    // sqlx's writer opens its connection again and writes on.
    let mut next = services.db.begin_write().await.unwrap();
    captcha_store::spend_in(&mut Tx::Sqlx(&mut next), &[9; 32], expires)
        .await
        .unwrap();
    next.commit().await.unwrap();
    assert!(marked(&services, 9).await);
}
