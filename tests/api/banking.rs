//! The bank a customer sees: ATM, transfer, receipts, history — every refusal path, idempotent
//! resubmission, and escaping of what customers write.

use crate::helpers::{confirm_fields, deposit, spawn_app, verify};

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

#[tokio::test]
async fn deposit_and_transfer_through_the_forms_with_receipts() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let ola = app.customer("ola").await;
    let r = kari.deposit("1500,50").await;
    assert_eq!(r.status(), 303);
    let receipt = r.headers()["location"].to_str().unwrap().to_string();
    assert!(receipt.starts_with("/receipts/"));
    let html = text(kari.get(&receipt).await).await;
    assert!(html.contains("1 500,50 kr") && html.contains("Deposit received"));
    let r = kari
        .transfer("OLA", "500", "<script>alert(1)</script> \u{202E}evil")
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(kari.balance_minor().await, 100_050);
    assert_eq!(ola.balance_minor().await, 50_000);
    let home = text(ola.get("/").await).await;
    assert!(
        !home.contains("<script>alert(1)</script>"),
        "the message is escaped"
    );
    assert!(
        home.contains("<bdi>&#60;script&#62;alert(1)&#60;/script&#62; \u{202E}evil</bdi>")
            || home.contains("<bdi>&lt;script&gt;alert(1)&lt;/script&gt; \u{202E}evil</bdi>"),
        "{home}"
    );
    assert!(home.contains("class=\"txn\" data-minor=\"50000\""));
    verify(&app.services).await.unwrap();
}

struct Refused<'a> {
    name: &'a str,
    fields: Vec<(&'a str, String)>,
    status: u16,
    message: &'a str,
}

#[tokio::test]
async fn every_transfer_refusal_moves_nothing_keeps_input_and_is_audited() {
    let app = spawn_app().await;
    app.customer("ola").await;
    let stranger = app.customer("stranger").await;
    let (_, foreign_key) = stranger.form_keys("/transfer").await;
    let cases = vec![
        Refused {
            name: "bad amount",
            fields: vec![("amount", "12,345".into())],
            status: 422,
            message: "at most two decimals",
        },
        Refused {
            name: "zero",
            fields: vec![("amount", "0".into())],
            status: 422,
            message: "greater than zero",
        },
        Refused {
            name: "long message",
            fields: vec![("message", "x".repeat(121))],
            status: 422,
            message: "At most 120 characters",
        },
        Refused {
            name: "control char",
            fields: vec![("message", "a\u{7}b".into())],
            status: 422,
            message: "Control characters",
        },
        Refused {
            name: "forged key",
            fields: vec![("idempotency_key", "a".repeat(40))],
            status: 400,
            message: "expired or was changed",
        },
        Refused {
            name: "foreign key",
            fields: vec![("idempotency_key", foreign_key)],
            status: 400,
            message: "expired or was changed",
        },
        // The business rules, checked at review: no code is asked for.
        Refused {
            name: "someone else's from",
            fields: vec![("from_username", "ola".into())],
            status: 403,
            message: "your own username",
        },
        Refused {
            name: "overdraft",
            fields: vec![("amount", "100,01".into())],
            status: 409,
            message: "balance is too low",
        },
        Refused {
            name: "self",
            fields: vec![("to_username", "PAYER".into())],
            status: 422,
            message: "yourself",
        },
        Refused {
            name: "unknown receiver",
            fields: vec![("to_username", "nobody".into())],
            status: 422,
            message: "no customer with that username",
        },
    ];
    let payer = app.customer("payer").await;
    let payer_id = payer.user_id(&app.services).await;
    deposit(&app.services, payer_id, "100").await;
    let mut refusals = 0;
    for case in cases {
        let sender = &payer;
        let (csrf, key) = sender.form_keys("/transfer").await;
        let mut fields: Vec<(&str, String)> = vec![
            ("csrf_token", csrf),
            ("idempotency_key", key),
            ("amount", "10".into()),
            ("from_username", sender.username.clone()),
            ("to_username", "ola".into()),
            ("message", "hei".into()),
        ];
        for (k, v) in &case.fields {
            fields.retain(|(name, _)| name != k);
            let v = if v == "PAYER" {
                sender.username.to_uppercase()
            } else {
                v.clone()
            };
            fields.push((k, v));
        }
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = sender.post("/transfer", &borrowed).await;
        let status = r.status().as_u16();
        let html = text(r).await;
        assert_eq!(status, case.status, "{}: {html}", case.name);
        assert!(html.contains(case.message), "{}: {html}", case.name);
        assert!(
            html.contains("name=\"to_username\""),
            "the form is shown again"
        );
        assert!(
            !html.contains("id=\"review\""),
            "no review of a refused transfer"
        );
        if case.name == "overdraft" {
            assert!(html.contains("value=\"100,01\""), "what was typed is kept");
        }
        refusals += 1;
    }
    assert_eq!(payer.balance_minor().await, 10_000, "nothing moved");
    let audited = app
        .services
        .audit
        .tail(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "money_movement_refused")
        .count();
    assert_eq!(audited, refusals);
    verify(&app.services).await.unwrap();
}

#[tokio::test]
async fn atm_refusals_and_the_ceiling() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    app.customer("ola").await;
    let (csrf, key) = kari.form_keys("/atm").await;
    for (amount, username, card, status, message) in [
        ("10000,01", "kari", "Visa", 422, "at most 10 000,00 kr"),
        ("abc", "kari", "Visa", 422, "at most two decimals"),
        ("5", "kari", "", 422, "required"),
        ("5", "kari", &"x".repeat(65), 422, "At most 64"),
        ("5", "kari", "Visa", 401, "code is not right"),
    ] {
        let r = kari
            .post(
                "/atm",
                &[
                    ("csrf_token", &csrf),
                    ("idempotency_key", &key),
                    ("amount", amount),
                    ("username", username),
                    ("card_name", card),
                    ("otp", "000000"),
                ],
            )
            .await;
        assert_eq!(r.status().as_u16(), status, "{amount} {card}");
        assert!(text(r).await.contains(message), "{amount}");
    }
    let code = kari.next_code().await;
    let r = kari
        .post(
            "/atm",
            &[
                ("csrf_token", &csrf),
                ("idempotency_key", &key),
                ("amount", "5"),
                ("username", "ola"),
                ("card_name", "Visa"),
                ("otp", &code),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    let ok = kari
        .post(
            "/atm",
            &[
                ("csrf_token", &csrf),
                ("idempotency_key", &key),
                ("amount", "10000"),
                ("username", "KARI"),
                ("card_name", "Visa"),
                ("otp", &kari.next_code().await),
            ],
        )
        .await;
    assert_eq!(
        ok.status(),
        303,
        "the refused submissions did not use the key up"
    );
    assert_eq!(kari.balance_minor().await, 1_000_000);
}

#[tokio::test]
async fn resubmitting_a_form_moves_money_once_and_shows_the_first_receipt() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let (csrf, key) = kari.form_keys("/atm").await;
    let code = kari.next_code().await;
    let fields = [
        ("csrf_token", csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("amount", "100"),
        ("username", "kari"),
        ("card_name", "Visa"),
        ("otp", code.as_str()),
    ];
    // A double click: two identical submissions at the same moment.
    let (a, b) = tokio::join!(kari.post("/atm", &fields), kari.post("/atm", &fields));
    let statuses: Vec<u16> = vec![a.status().as_u16(), b.status().as_u16()];
    let locations: Vec<String> = [&a, &b]
        .iter()
        .filter_map(|r| r.headers().get("location"))
        .map(|l| l.to_str().unwrap().to_string())
        .collect();
    assert!(statuses.contains(&303), "{statuses:?}");
    assert_eq!(kari.balance_minor().await, 10_000, "moved once");
    // A later resubmission with other values (and a replayed code) still answers the same receipt.
    let again = kari
        .post(
            "/atm",
            &[
                ("csrf_token", &csrf),
                ("idempotency_key", &key),
                ("amount", "9999"),
                ("username", "nobody!"),
                ("card_name", ""),
                ("otp", "000000"),
            ],
        )
        .await;
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"].to_str().unwrap(), locations[0]);
    assert_eq!(kari.balance_minor().await, 10_000);
}

#[tokio::test]
async fn history_pages_and_bad_page_numbers() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let id = kari.user_id(&app.services).await;
    for i in 1..=45 {
        deposit(&app.services, id, &i.to_string()).await;
    }
    let page1 = text(kari.get("/transactions").await).await;
    assert_eq!(page1.matches("class=\"txn\"").count(), 20);
    assert!(
        page1.contains("data-minor=\"4500\"")
            && page1.contains("rel=\"next\"")
            && !page1.contains("rel=\"prev\"")
    );
    let page3 = text(kari.get("/transactions?page=3").await).await;
    assert_eq!(page3.matches("class=\"txn\"").count(), 5);
    assert!(page3.contains("rel=\"prev\"") && !page3.contains("rel=\"next\""));
    for (query, status) in [
        ("?page=0", 400),
        ("?page=abc", 400),
        ("?page=-1", 400),
        ("?page=4", 404),
        ("?page=99999999999999", 400),
        ("?page=1&page=2", 400),
    ] {
        assert_eq!(
            kari.get(&format!("/transactions{query}"))
                .await
                .status()
                .as_u16(),
            status,
            "{query}"
        );
    }
    let home = text(kari.get("/").await).await;
    assert_eq!(home.matches("class=\"txn\"").count(), 10);
}

#[tokio::test]
async fn a_receipt_belongs_to_its_customer() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let eve = app.customer("eve").await;
    let r = kari.deposit("10").await;
    let receipt = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(eve.get(&receipt).await.status(), 404);
    assert_eq!(eve.get("/receipts/not-a-number").await.status(), 404);
}

/// Reading the home page costs the same with 10 or 50 000 movements: the history query reads the
/// newest rows through the `(account_id, seq)` primary key and never scans the account's postings.
#[tokio::test]
async fn home_reads_only_the_newest_rows_whatever_the_history_length() {
    use alphabank::store::Engine;
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let s = &app.services;
    let user = kari.user_id(s).await;
    let (account,): (i64,) = sqlx::query_as("SELECT id FROM accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    const MOVEMENTS: i64 = 50_000;
    let filler = vec![0u8; 45];
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
         INSERT INTO journal_entries (id, kind, initiator_user_id, created_at, message_enc, card_name_enc, mac) \
         SELECT 1000000 + i, 'deposit', $1, i, NULL, NULL, $2 FROM n",
    )
    .bind(user)
    .bind(filler.clone())
    .execute(s.db.pool())
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
         INSERT INTO postings (account_id, seq, entry_id, counterparty_account_id, amount_enc, created_at, prev_mac, mac) \
         SELECT $1, i, 1000000 + i, 1, $2, i, $2, $2 FROM n",
    )
    .bind(account)
    .bind(filler)
    .execute(s.db.pool())
    .await
    .unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM postings WHERE account_id = $1")
        .bind(account)
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    assert_eq!(count, MOVEMENTS);
    sqlx::query("ANALYZE").execute(s.db.pool()).await.unwrap();
    let sql = alphabank::store::ledger::HISTORY_RANGE_SQL;
    let plan: Vec<String> = match s.db.engine() {
        Engine::Sqlite => {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(account)
                    .bind(MOVEMENTS - 9)
                    .bind(MOVEMENTS)
                    .fetch_all(s.db.pool())
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect()
        }
        Engine::Postgres => {
            let rows: Vec<(String,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .bind(account)
                    .bind(MOVEMENTS - 9)
                    .bind(MOVEMENTS)
                    .fetch_all(s.db.pool())
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.0).collect()
        }
    };
    let text = plan.join("\n");
    match s.db.engine() {
        Engine::Sqlite => {
            assert!(text.contains("SEARCH p USING PRIMARY KEY (account_id=? AND seq>? AND seq<?)") || text.contains("SEARCH p USING INDEX sqlite_autoindex_postings_1 (account_id=? AND seq>? AND seq<?)"), "{text}");
            assert!(!text.contains("SCAN p"), "{text}");
        }
        Engine::Postgres => {
            assert!(text.contains("postings_pkey"), "{text}");
            assert!(!text.contains("Seq Scan on postings"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_confirmation_refused_by_the_balance_spends_its_code_in_the_same_commit_as_its_audit_event()
 {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let _ola = app.customer("ola").await;
    let _per = app.customer("per").await;
    kari.deposit("100").await;
    let review = kari.review("ola", "50", "rent").await;
    assert_eq!(review.status(), 200);
    let (csrf, confirmation) = confirm_fields(&text(review).await);
    // The balance changes between review and confirmation.
    assert_eq!(kari.transfer("per", "100", "all").await.status(), 303);
    let code = kari.next_code().await;
    let first = kari.confirm(&csrf, &confirmation, &code).await;
    assert_eq!(first.status(), 409);
    let html = text(first).await;
    assert!(html.contains("balance is too low"), "{html}");
    assert!(
        html.contains("value=\"50,00\"") && html.contains("value=\"rent\""),
        "the transfer form again with what was reviewed: {html}"
    );
    // The same code again is refused as used: the refusal committed the code's step.
    let second = kari.confirm(&csrf, &confirmation, &code).await;
    assert_eq!(second.status(), 401);
    assert!(text(second).await.contains("already used"));
    assert_eq!(kari.balance_minor().await, 0, "nothing more moved");
    let reasons: Vec<String> = app
        .services
        .audit
        .tail(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "money_movement_refused")
        .map(|e| e.detail.to_string())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("insufficient_funds"), "{reasons:?}");
    assert!(reasons[1].contains("wrong_code"), "{reasons:?}");
    verify(&app.services).await.unwrap();
}

#[tokio::test]
async fn transfers_sent_at_the_same_moment_each_move_once_and_conserve_money() {
    let app = spawn_app().await;
    let mut people = Vec::new();
    for i in 0..12 {
        people.push(app.customer(&format!("ring{i:02}")).await);
    }
    for person in &people {
        assert_eq!(person.deposit("100").await.status(), 303);
    }
    // Everyone sends 1 kr to the next at once: on SQLite they share group commits.
    let sends = people.iter().enumerate().map(|(i, person)| {
        let to = format!("ring{:02}", (i + 1) % people.len());
        async move { person.transfer(&to, "1", "ring").await }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut receipts = std::collections::HashSet::new();
    for answer in answers {
        assert_eq!(answer.status(), 303);
        receipts.insert(answer.headers()["location"].to_str().unwrap().to_string());
    }
    assert_eq!(receipts.len(), people.len(), "one entry per transfer");
    for person in &people {
        assert_eq!(person.balance_minor().await, 10_000, "sent 1 kr, got 1 kr");
    }
    let (entries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM journal_entries")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(entries, 2 * people.len() as i64);
    verify(&app.services).await.unwrap();
    if let Some(group) = app.services.db.group_commit() {
        // SQLite: every movement was written by the batch it was queued in, none sent back to
        // run alone (which would hide a broken batch path behind the fallback).
        assert_eq!(group.batches_rolled_back(), 0);
    }
}
