//! Ledger rules, idempotency, concurrency and conservation — on whichever engine the suite runs.

use std::sync::Arc;

use alphabank::domain::{Amount, CardName, DepositAmount, Message, UserId, Username};
use alphabank::ledger::{LedgerError, Outcome};
use proptest::prelude::*;

use crate::helpers::{balance_minor, ctx, customer, deposit, key, test_services, verify};

fn name(s: &str) -> Username {
    Username::parse(s).unwrap()
}

#[tokio::test]
async fn deposit_and_transfer_move_money_and_keep_it_conserved() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    let bob = customer(&s, "bob").await;
    deposit(&s, alice, "1000,50").await;
    let outcome = s
        .ledger
        .transfer(
            &ctx(),
            alice,
            &name("BOB"),
            Amount::parse("250.25").unwrap(),
            &Message::parse("rent").unwrap(),
            &key(),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Moved { .. }));
    assert_eq!(balance_minor(&s, alice).await, 75_025);
    assert_eq!(balance_minor(&s, bob).await, 25_025);
    let report = verify(&s).await.unwrap();
    assert_eq!(report.customer_money_minor, 100_050);
    assert_eq!(report.entries, 2);
    assert_eq!(report.postings, 4);
    // The receiver sees the message and the sender's name; amounts are signed per side.
    let bob_history = s.ledger.history(bob, 1, 20).await.unwrap();
    assert_eq!(bob_history.rows[0].amount.minor(), 25_025);
    assert_eq!(bob_history.rows[0].message.as_deref(), Some("rent"));
    assert_eq!(bob_history.rows[0].counterparty.as_deref(), Some("alice"));
    let alice_history = s.ledger.history(alice, 1, 20).await.unwrap();
    assert_eq!(alice_history.rows[0].amount.minor(), -25_025);
    assert_eq!(
        alice_history.rows[1].card_name.as_deref(),
        Some("Test Card")
    );
}

#[tokio::test]
async fn refusals_move_nothing() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    customer(&s, "bob").await;
    deposit(&s, alice, "100").await;
    let msg = Message::parse("").unwrap();
    type Case<'a> = (Username, &'a str, fn(&LedgerError) -> bool);
    let cases: Vec<Case> = vec![
        (name("bob"), "100,01", |e| {
            matches!(e, LedgerError::InsufficientFunds)
        }),
        (name("alice"), "1", |e| {
            matches!(e, LedgerError::SelfTransfer)
        }),
        (name("ALICE"), "1", |e| {
            matches!(e, LedgerError::SelfTransfer)
        }),
        (name("nobody"), "1", |e| {
            matches!(e, LedgerError::UnknownReceiver)
        }),
    ];
    for (to, amount, expected) in cases {
        let k = key();
        let error = s
            .ledger
            .transfer(&ctx(), alice, &to, Amount::parse(amount).unwrap(), &msg, &k)
            .await
            .unwrap_err();
        assert!(expected(&error), "{to} {amount}: {error:?}");
        assert!(error.refusal_reason().is_some());
        // A refused submission does not use the key up.
        let reads = s.ledger.movement_reads(alice, &k, None).await.unwrap();
        assert_eq!(reads.replayed, None);
    }
    assert_eq!(balance_minor(&s, alice).await, 10_000);
    assert_eq!(verify(&s).await.unwrap().entries, 1);
    // The ATM ceiling is a type: 10 000,01 kr cannot even be expressed as a deposit.
    assert!(DepositAmount::parse("10000,01").is_err());
}

#[tokio::test]
async fn the_same_idempotency_key_moves_money_once_and_returns_the_first_receipt() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    let bob = customer(&s, "bob").await;
    deposit(&s, alice, "500").await;
    let k = key();
    let first = s
        .ledger
        .transfer(
            &ctx(),
            alice,
            &name("bob"),
            Amount::parse("100").unwrap(),
            &Message::default(),
            &k,
        )
        .await
        .unwrap();
    // Resubmission with other values: the first outcome, nothing moves.
    let second = s
        .ledger
        .transfer(
            &ctx(),
            alice,
            &name("bob"),
            Amount::parse("300").unwrap(),
            &Message::default(),
            &k,
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        Outcome::Replayed {
            entry_id: first.entry_id()
        }
    );
    assert_eq!(balance_minor(&s, bob).await, 10_000);
    // Another customer's identical key is theirs alone.
    let carol = customer(&s, "carol").await;
    deposit(&s, carol, "10").await;
    let carol_outcome = s
        .ledger
        .transfer(
            &ctx(),
            carol,
            &name("bob"),
            Amount::parse("1").unwrap(),
            &Message::default(),
            &k,
        )
        .await
        .unwrap();
    assert!(matches!(carol_outcome, Outcome::Moved { .. }));
}

#[tokio::test]
async fn a_forms_reads_before_its_transaction_name_the_receiver_the_replay_and_the_code_state() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    let bob = customer(&s, "bob").await;
    deposit(&s, alice, "500").await;
    let k = key();
    let before = s
        .ledger
        .movement_reads(alice, &k, Some("bob"))
        .await
        .unwrap();
    assert_eq!((before.replayed, before.receiver), (None, Some(bob)));
    assert_eq!(before.totp_last_step, 0, "no code used yet");
    let entry = s
        .ledger
        .transfer(
            &ctx(),
            alice,
            &name("bob"),
            Amount::parse("1").unwrap(),
            &Message::default(),
            &k,
        )
        .await
        .unwrap()
        .entry_id();
    let after = s
        .ledger
        .movement_reads(alice, &k, Some("nobody"))
        .await
        .unwrap();
    assert_eq!((after.replayed, after.receiver), (Some(entry), None));
    // Another customer's key is not Alice's: no replay for Bob with the same key.
    let bobs = s.ledger.movement_reads(bob, &k, None).await.unwrap();
    assert_eq!((bobs.replayed, bobs.receiver), (None, None));
    // A customer that does not exist is an error, not an empty answer.
    assert!(
        s.ledger
            .movement_reads(UserId::new(i64::MAX), &k, None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn concurrent_submissions_with_one_key_move_money_at_most_once() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    let k = key();
    let card = CardName::parse("Visa").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, k, card) = (s.clone(), k.clone(), card.clone());
        tasks.push(tokio::spawn(async move {
            s.ledger
                .deposit(
                    &ctx(),
                    alice,
                    DepositAmount::parse("100").unwrap(),
                    &card,
                    &k,
                )
                .await
                .unwrap()
        }));
    }
    let mut moved = 0;
    let mut entries = std::collections::HashSet::new();
    for task in tasks {
        let outcome = task.await.unwrap();
        moved += usize::from(matches!(outcome, Outcome::Moved { .. }));
        entries.insert(outcome.entry_id());
    }
    assert_eq!(moved, 1);
    assert_eq!(
        entries.len(),
        1,
        "every submission answers with the same receipt"
    );
    assert_eq!(balance_minor(&s, alice).await, 10_000);
    verify(&s).await.unwrap();
}

/// 200 concurrent transfers out of one account that can afford only 50 of them, while the
/// receivers send money back the other way (lock ordering must prevent deadlocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_two_hundred_transfers_exactly_the_affordable_ones_succeed() {
    let (s, _dir) = test_services().await;
    let payer = customer(&s, "payer").await;
    let mut receivers = Vec::new();
    for i in 0..4 {
        let id = customer(&s, &format!("receiver{i}")).await;
        deposit(&s, id, "1000").await;
        receivers.push(id);
    }
    for _ in 0..5 {
        deposit(&s, payer, "1000").await; // 5 000 kr: affords 50 transfers of 100 kr
    }
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let to = name(&format!("receiver{}", i % 4));
            s.ledger
                .transfer(
                    &ctx(),
                    payer,
                    &to,
                    Amount::parse("100").unwrap(),
                    &Message::default(),
                    &key(),
                )
                .await
        }));
    }
    // Reverse traffic: receivers pay someone else's receiver, touching the same accounts.
    let mut reverse = Vec::new();
    for (i, from) in receivers.iter().copied().enumerate() {
        let s = s.clone();
        reverse.push(tokio::spawn(async move {
            let to = name(&format!("receiver{}", (i + 1) % 4));
            for _ in 0..5 {
                s.ledger
                    .transfer(
                        &ctx(),
                        from,
                        &to,
                        Amount::parse("1").unwrap(),
                        &Message::default(),
                        &key(),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Outcome::Moved { .. }) => ok += 1,
            Err(LedgerError::InsufficientFunds) => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    for task in reverse {
        task.await.unwrap();
    }
    assert_eq!((ok, refused), (50, 150));
    assert_eq!(balance_minor(&s, payer).await, 0);
    let receiver_total: i64 = {
        let mut t = 0;
        for r in &receivers {
            t += balance_minor(&s, *r).await;
        }
        t
    };
    assert_eq!(receiver_total, 4 * 100_000 + 50 * 10_000);
    let report = verify(&s).await.unwrap();
    assert_eq!(report.customer_money_minor, 4 * 100_000 + 5 * 100_000);
}

#[tokio::test]
async fn history_pages_newest_first_and_refuses_pages_that_do_not_exist() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    for i in 1..=45 {
        deposit(&s, alice, &i.to_string()).await;
    }
    let page1 = s.ledger.history(alice, 1, 20).await.unwrap();
    assert_eq!(page1.last_page, 3);
    assert_eq!(page1.rows.len(), 20);
    assert_eq!(page1.rows[0].amount.minor(), 4_500);
    let page3 = s.ledger.history(alice, 3, 20).await.unwrap();
    assert_eq!(page3.rows.len(), 5);
    assert_eq!(page3.rows[4].amount.minor(), 100);
    assert!(matches!(
        s.ledger.history(alice, 4, 20).await,
        Err(LedgerError::NoSuchPage { last_page: 3 })
    ));
    assert!(matches!(
        s.ledger.history(alice, 0, 20).await,
        Err(LedgerError::NoSuchPage { .. })
    ));
    // An empty history has one (empty) page.
    let bob = customer(&s, "bob").await;
    assert!(s.ledger.history(bob, 1, 20).await.unwrap().rows.is_empty());
}

#[tokio::test]
async fn rows_held_in_memory_never_hide_a_movement_made_by_another_instance() {
    let (s, _dir) = test_services().await;
    let alice = customer(&s, "alice").await;
    deposit(&s, alice, "1").await;
    deposit(&s, alice, "2").await;
    let seen = s.ledger.history(alice, 1, 2).await.unwrap();
    let minors = |rows: &[std::sync::Arc<alphabank::ledger::MovementView>]| {
        rows.iter().map(|r| r.amount.minor()).collect::<Vec<_>>()
    };
    assert_eq!(minors(&seen.rows), [200, 100]);
    // A second instance (its own memory) on the same database moves money twice.
    let mut set = (*s).clone();
    set.ledger = alphabank::ledger::Ledger::new(s.db.clone(), s.keyring.clone(), s.audit.clone());
    let other = alphabank::startup::Services::from(set);
    deposit(&other, alice, "3").await;
    deposit(&other, alice, "4").await;
    // The first instance shows them at once, newest first, beside the rows it already held.
    let now = s.ledger.history(alice, 1, 3).await.unwrap();
    assert_eq!(minors(&now.rows), [400, 300, 200]);
    assert_eq!(now.balance.minor(), 1_000);
    assert_eq!(now.total_rows, 4);
    let older = s.ledger.history(alice, 2, 3).await.unwrap();
    assert_eq!(minors(&older.rows), [100]);
    assert_eq!(older.rows[0].card_name.as_deref(), Some("Test Card"));
}

#[derive(Debug, Clone)]
enum Op {
    Deposit { actor: usize, minor: i64 },
    Transfer { from: usize, to: usize, minor: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4, 1i64..=1_000_000).prop_map(|(actor, minor)| Op::Deposit { actor, minor }),
        (0usize..4, 0usize..4, 1i64..=600_000).prop_map(|(from, to, minor)| Op::Transfer {
            from,
            to,
            minor
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random sequences of deposits and transfers by several actors agree with a simple model:
    /// money is conserved and no balance goes negative.
    #[test]
    fn random_movements_keep_money_conserved(ops in proptest::collection::vec(op(), 1..30)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (s, _dir) = test_services().await;
            let mut ids = Vec::new();
            for i in 0..4 {
                ids.push(customer(&s, &format!("actor{i}")).await);
            }
            let mut model = [0i64; 4];
            let card = CardName::parse("card").unwrap();
            for op in ops {
                match op {
                    Op::Deposit { actor, minor } => {
                        let amount = DepositAmount::try_from(Amount::from_minor(minor).unwrap()).unwrap();
                        s.ledger.deposit(&ctx(), ids[actor], amount, &card, &key()).await.unwrap();
                        model[actor] += minor;
                    }
                    Op::Transfer { from, to, minor } => {
                        let result = s.ledger.transfer(&ctx(), ids[from], &name(&format!("actor{to}")),
                            Amount::from_minor(minor).unwrap(), &Message::default(), &key()).await;
                        match result {
                            Ok(_) => { assert!(from != to && model[from] >= minor); model[from] -= minor; model[to] += minor; }
                            Err(LedgerError::SelfTransfer) => assert_eq!(from, to),
                            Err(LedgerError::InsufficientFunds) => assert!(model[from] < minor),
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
            }
            for (i, id) in ids.iter().enumerate() {
                let balance = balance_minor(&s, *id).await;
                assert_eq!(balance, model[i]);
                assert!(balance >= 0);
            }
            let report = verify(&s).await.unwrap();
            assert_eq!(report.customer_money_minor, model.iter().sum::<i64>());
        });
    }
}
