//! Tamper evidence: each kind of edit an attacker with write access to the database could make
//! is detected by `verify`, naming the first bad record.

use alphabank::domain::{Amount, Message, Username};
use alphabank::startup::Services;

use crate::helpers::{ctx, customer, deposit, exec, key, test_services, verify};

struct World {
    s: Services,
    _dir: tempfile::TempDir,
    alice_account: i64,
    bob_account: i64,
}

async fn world() -> World {
    let (s, dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    let bob = customer(&s, "bob").await;
    deposit(&s, alice, "1000").await;
    deposit(&s, bob, "10").await;
    for i in 0..3 {
        s.ledger
            .transfer(
                &ctx(),
                alice,
                &Username::parse("bob").unwrap(),
                Amount::parse("10").unwrap(),
                &Message::parse(&format!("m{i}")).unwrap(),
                &key(),
            )
            .await
            .unwrap();
    }
    let account = |user: alphabank::domain::UserId| {
        let s = s.clone();
        async move {
            let (id,): (i64,) = sqlx::query_as("SELECT id FROM accounts WHERE user_id = $1")
                .bind(user)
                .fetch_one(s.db.pool())
                .await
                .unwrap();
            id
        }
    };
    let (alice_account, bob_account) = (account(alice).await, account(bob).await);
    verify(&s).await.expect("intact before tampering");
    World {
        s,
        _dir: dir,
        alice_account,
        bob_account,
    }
}

async fn blob(s: &Services, sql: String) -> Vec<u8> {
    let (b,): (Vec<u8>,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    b
}

async fn set_blob(s: &Services, sql: String, value: &[u8]) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .execute(s.db.pool())
        .await
        .unwrap();
}

async fn expect_detected(w: &World, needle: &str) {
    let problem = verify(&w.s).await.expect_err("tampering must be detected");
    assert!(
        problem.contains(needle),
        "expected {needle:?} in {problem:?}"
    );
}

#[tokio::test]
async fn an_edited_amount_is_detected() {
    let w = world().await;
    let (a, s) = (w.alice_account, &w.s);
    let mut amount = blob(
        s,
        format!("SELECT amount_enc FROM postings WHERE account_id = {a} AND seq = 2"),
    )
    .await;
    let last = amount.len() - 1;
    amount[last] ^= 1;
    set_blob(
        s,
        format!("UPDATE postings SET amount_enc = $1 WHERE account_id = {a} AND seq = 2"),
        &amount,
    )
    .await;
    expect_detected(&w, &format!("posting account={a} seq=2")).await;
}

#[tokio::test]
async fn ciphertexts_swapped_between_rows_are_detected() {
    let w = world().await;
    let (a, s) = (w.alice_account, &w.s);
    let two = blob(
        s,
        format!("SELECT amount_enc FROM postings WHERE account_id = {a} AND seq = 2"),
    )
    .await;
    let three = blob(
        s,
        format!("SELECT amount_enc FROM postings WHERE account_id = {a} AND seq = 3"),
    )
    .await;
    set_blob(
        s,
        format!("UPDATE postings SET amount_enc = $1 WHERE account_id = {a} AND seq = 2"),
        &three,
    )
    .await;
    set_blob(
        s,
        format!("UPDATE postings SET amount_enc = $1 WHERE account_id = {a} AND seq = 3"),
        &two,
    )
    .await;
    expect_detected(&w, "amount does not open").await;
}

#[tokio::test]
async fn balances_swapped_between_accounts_are_detected() {
    let w = world().await;
    let (a, b, s) = (w.alice_account, w.bob_account, &w.s);
    let alice = blob(
        s,
        format!("SELECT balance_enc FROM accounts WHERE id = {a}"),
    )
    .await;
    let bob = blob(
        s,
        format!("SELECT balance_enc FROM accounts WHERE id = {b}"),
    )
    .await;
    set_blob(
        s,
        format!("UPDATE accounts SET balance_enc = $1 WHERE id = {a}"),
        &bob,
    )
    .await;
    set_blob(
        s,
        format!("UPDATE accounts SET balance_enc = $1 WHERE id = {b}"),
        &alice,
    )
    .await;
    expect_detected(&w, "balance does not open").await;
}

#[tokio::test]
async fn messages_swapped_between_entries_are_detected() {
    let w = world().await;
    let s = &w.s;
    let ids: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM journal_entries WHERE kind = 'transfer' ORDER BY id")
            .fetch_all(s.db.pool())
            .await
            .unwrap();
    let (x, y) = (ids[0].0, ids[1].0);
    let mx = blob(
        s,
        format!("SELECT message_enc FROM journal_entries WHERE id = {x}"),
    )
    .await;
    let my = blob(
        s,
        format!("SELECT message_enc FROM journal_entries WHERE id = {y}"),
    )
    .await;
    set_blob(
        s,
        format!("UPDATE journal_entries SET message_enc = $1 WHERE id = {x}"),
        &my,
    )
    .await;
    set_blob(
        s,
        format!("UPDATE journal_entries SET message_enc = $1 WHERE id = {y}"),
        &mx,
    )
    .await;
    expect_detected(&w, "message does not open").await;
}

#[tokio::test]
async fn a_deleted_posting_is_detected() {
    let w = world().await;
    let a = w.alice_account;
    assert_eq!(
        exec(
            &w.s,
            format!("DELETE FROM postings WHERE account_id = {a} AND seq = 2")
        )
        .await,
        1
    );
    expect_detected(&w, &format!("posting account={a} seq=3")).await;
}

#[tokio::test]
async fn a_deleted_newest_posting_is_detected() {
    let w = world().await;
    let a = w.alice_account;
    assert_eq!(
        exec(
            &w.s,
            format!("DELETE FROM postings WHERE account_id = {a} AND seq = 4")
        )
        .await,
        1
    );
    expect_detected(&w, &format!("account id={a}")).await;
}

#[tokio::test]
async fn reordered_postings_are_detected() {
    let w = world().await;
    let a = w.alice_account;
    exec(
        &w.s,
        format!("UPDATE postings SET seq = 100 WHERE account_id = {a} AND seq = 2"),
    )
    .await;
    exec(
        &w.s,
        format!("UPDATE postings SET seq = 2 WHERE account_id = {a} AND seq = 3"),
    )
    .await;
    exec(
        &w.s,
        format!("UPDATE postings SET seq = 3 WHERE account_id = {a} AND seq = 100"),
    )
    .await;
    expect_detected(&w, &format!("posting account={a} seq=2")).await;
}

#[tokio::test]
async fn an_edited_plain_column_is_detected() {
    let w = world().await;
    let (a, b) = (w.alice_account, w.bob_account);
    assert_eq!(exec(&w.s, format!("UPDATE postings SET counterparty_account_id = {a} WHERE account_id = {b} AND seq = 1")).await, 1);
    expect_detected(&w, &format!("posting account={b} seq=1")).await;
}

#[tokio::test]
async fn an_edited_entry_is_detected() {
    let w = world().await;
    exec(
        &w.s,
        "UPDATE journal_entries SET created_at = created_at + 1 WHERE kind = 'deposit'".into(),
    )
    .await;
    expect_detected(&w, "journal entry id=").await;
}

#[tokio::test]
async fn a_deleted_audit_event_is_detected() {
    let w = world().await;
    let deleted = exec(&w.s, "DELETE FROM audit_events WHERE id = (SELECT MIN(id) FROM audit_events WHERE event = 'deposit')".into()).await;
    assert_eq!(deleted, 1);
    expect_detected(&w, "audit").await;
}

#[tokio::test]
async fn an_edited_audit_event_is_detected() {
    let w = world().await;
    exec(&w.s, "UPDATE audit_events SET client_ip = '10.6.6.6' WHERE id = (SELECT MIN(id) FROM audit_events)".into()).await;
    expect_detected(&w, "MAC mismatch; the event was edited").await;
}

#[tokio::test]
async fn a_deleted_audit_head_is_detected() {
    let w = world().await;
    exec(&w.s, "DELETE FROM audit_heads".into()).await;
    expect_detected(&w, "head record is missing").await;
}
