//! Transfers are reviewed, then confirmed (CONTRACT §6): the review spends no code, the
//! confirmation is bound to exactly what was reviewed, to its customer and to five minutes, and
//! one key moves money once however often, or however simultaneously, it is confirmed.

use alphabank::domain::{Amount, IdempotencyKey, Message, Username};
use alphabank::payments::{CONFIRMATION_TTL_MILLIS, Reviewed};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::helpers::{Customer, TestApp, confirm_fields, spawn_app, verify};

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

async fn last_step(app: &TestApp, c: &Customer) -> i64 {
    let (step,): (i64,) = sqlx::query_as("SELECT totp_last_step FROM users WHERE id = $1")
        .bind(c.user_id(&app.services).await.get())
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    step
}

async fn entries(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM journal_entries")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    n
}

/// The value of `attr` on the element with `id="review"`.
fn review_attr(html: &str, attr: &str) -> String {
    let at = html.find("id=\"review\"").expect("a review element");
    let tag = &html[at..at + html[at..].find('>').unwrap()];
    let start = tag.find(&format!("{attr}=\"")).expect(attr) + attr.len() + 2;
    tag[start..start + tag[start..].find('"').unwrap()].to_string()
}

async fn refusals(app: &TestApp) -> Vec<String> {
    app.services
        .audit
        .tail(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "money_movement_refused")
        .map(|e| e.detail.to_string())
        .collect()
}

#[tokio::test]
async fn a_review_spends_no_code_and_the_confirmation_moves_exactly_what_was_reviewed_once() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let ola = app.customer("Ola").await;
    kari.deposit("100").await;
    let step_before = last_step(&app, &kari).await;
    let review = kari.review("OLA", "25,5", "  husleie  ").await;
    assert_eq!(review.status(), 200);
    let html = text(review).await;
    assert_eq!(review_attr(&html, "data-amount-minor"), "2550");
    assert_eq!(review_attr(&html, "data-to-username"), "ola");
    assert!(html.contains("<bdi>husleie</bdi>"), "{html}");
    assert!(
        html.contains("name=\"otp\""),
        "the code is asked for on the review page"
    );
    assert_eq!(last_step(&app, &kari).await, step_before, "no code spent");
    assert_eq!(kari.balance_minor().await, 10_000, "nothing moved yet");

    let (csrf, confirmation) = confirm_fields(&html);
    let code = kari.next_code().await;
    let confirmed = kari.confirm(&csrf, &confirmation, &code).await;
    assert_eq!(confirmed.status(), 303);
    let receipt = confirmed.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(receipt.starts_with("/receipts/"), "{receipt}");
    assert_eq!(kari.balance_minor().await, 7_450);
    assert_eq!(ola.balance_minor().await, 2_550);
    let shown = text(kari.get(&receipt).await).await;
    assert!(shown.contains("husleie"), "{shown}");

    // Used: the same confirmation answers the same receipt, whatever code it carries.
    let again = kari.confirm(&csrf, &confirmation, "000000").await;
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"].to_str().unwrap(), receipt);
    assert_eq!(kari.balance_minor().await, 7_450, "moved once");
    verify(&app.services).await.unwrap();
}

#[tokio::test]
async fn a_changed_foreign_expired_or_broken_confirmation_is_refused_and_spends_nothing() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let ola = app.customer("ola").await;
    kari.deposit("100").await;
    let html = text(kari.review("ola", "10", "hei").await).await;
    let (csrf, confirmation) = confirm_fields(&html);
    let code = kari.next_code().await;

    // Another amount, receiver or message in the payload, the MAC kept.
    let (payload, mac) = confirmation.split_once('.').unwrap();
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    for (from, to) in [
        ("\"amount_minor\":1000", "\"amount_minor\":9000"),
        ("\"to\":\"ola\"", "\"to\":\"kari\""),
        ("\"message\":\"hei\"", "\"message\":\"hei!\""),
    ] {
        assert!(json.contains(from), "{json}");
        let changed = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(json.replace(from, to)));
        let r = kari.confirm(&csrf, &changed, &code).await;
        assert_eq!(r.status(), 400, "{to}");
        let page = text(r).await;
        assert!(page.contains("expired or was changed"), "{page}");
        assert!(
            page.contains("name=\"to_username\""),
            "the transfer form again"
        );
    }
    // Broken ones: never a 500.
    let (long, cut) = ("a".repeat(5_000), format!("{payload}."));
    for broken in ["", ".", "x.y", "%%%", long.as_str(), cut.as_str()] {
        let r = kari.confirm(&csrf, broken, &code).await;
        assert_eq!(r.status(), 400, "{broken:.40}");
    }
    let r = kari
        .post(
            "/transfer/confirm",
            &[("csrf_token", &csrf), ("otp", &code)],
        )
        .await;
    assert_eq!(r.status(), 400, "no confirmation at all");
    // Another customer's session.
    let ola_csrf =
        crate::helpers::input_value(&text(ola.get("/").await).await, "csrf_token").expect("csrf");
    let ola_code = ola.next_code().await;
    let r = ola.confirm(&ola_csrf, &confirmation, &ola_code).await;
    assert_eq!(r.status(), 400);
    // Expired: a review issued just over five minutes ago, sealed by the bank's own key.
    let kari_id = kari.user_id(&app.services).await;
    let key = app.services.payments.issue_key(kari_id);
    let old = Reviewed {
        issued_millis: alphabank::now_millis() - CONFIRMATION_TTL_MILLIS - 1_000,
        ..Reviewed::new(
            kari_id,
            Amount::parse("10").unwrap(),
            &Username::parse("ola").unwrap(),
            Message::parse("hei").unwrap(),
            IdempotencyKey::parse(&key).unwrap(),
            None,
        )
    };
    let r = kari
        .confirm(&csrf, &old.seal(&app.services.keyring), &code)
        .await;
    assert_eq!(r.status(), 400);
    let page = text(r).await;
    assert!(
        page.contains("value=\"10,00\""),
        "the form with what was reviewed: {page}"
    );

    assert_eq!(kari.balance_minor().await, 10_000, "nothing moved");
    assert_eq!(ola.balance_minor().await, 0);
    // The code was never checked: it still confirms the real review.
    let r = kari.confirm(&csrf, &confirmation, &code).await;
    assert_eq!(r.status(), 303);
    assert_eq!(kari.balance_minor().await, 9_000);
    let reasons = refusals(&app).await;
    let count = |reason: &str| reasons.iter().filter(|r| r.contains(reason)).count();
    assert_eq!(count("bad_confirmation"), 10, "{reasons:?}");
    assert_eq!(count("foreign_confirmation"), 1, "{reasons:?}");
    assert_eq!(count("expired_confirmation"), 1, "{reasons:?}");
    verify(&app.services).await.unwrap();
}

#[tokio::test]
async fn a_wrong_code_shows_the_review_again_and_the_right_one_then_sends() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let ola = app.customer("ola").await;
    kari.deposit("100").await;
    let html = text(kari.review("ola", "40", "").await).await;
    let (csrf, confirmation) = confirm_fields(&html);
    for wrong in ["000000", "12345", "abcdef", ""] {
        let r = kari.confirm(&csrf, &confirmation, wrong).await;
        assert_eq!(r.status(), 401, "{wrong}");
        let page = text(r).await;
        assert!(page.contains("id=\"review\""), "the review again: {page}");
        assert!(page.contains("code is not right"), "{page}");
        assert_eq!(
            confirm_fields(&page).1,
            confirmation,
            "the same confirmation"
        );
    }
    assert_eq!(kari.balance_minor().await, 10_000);
    let code = kari.next_code().await;
    assert_eq!(
        kari.confirm(&csrf, &confirmation, &code).await.status(),
        303
    );
    assert_eq!(ola.balance_minor().await, 4_000);
}

#[tokio::test]
async fn a_review_refused_for_the_balance_keeps_what_was_typed_and_asks_no_code() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    app.customer("ola").await;
    let step_before = last_step(&app, &kari).await;
    let r = kari.review("ola", "12,34", "for kaffe").await;
    assert_eq!(r.status(), 409);
    let page = text(r).await;
    assert!(page.contains("balance is too low"), "{page}");
    assert!(page.contains("value=\"12,34\"") && page.contains("value=\"for kaffe\""));
    assert!(!page.contains("name=\"otp\""), "no code asked for");
    assert_eq!(last_step(&app, &kari).await, step_before);
}

#[tokio::test]
async fn two_confirmations_of_one_review_at_the_same_moment_move_money_once() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let ola = app.customer("ola").await;
    kari.deposit("100").await;
    let before = entries(&app).await;
    let html = text(kari.review("ola", "30", "once").await).await;
    let (csrf, confirmation) = confirm_fields(&html);
    let (code1, code2) = (kari.next_code().await, kari.next_code().await);
    let (r1, r2) = tokio::join!(
        kari.confirm(&csrf, &confirmation, &code1),
        kari.confirm(&csrf, &confirmation, &code2),
    );
    let answers = [r1.status().as_u16(), r2.status().as_u16()];
    assert!(answers.contains(&303), "{answers:?}");
    assert!(
        answers.iter().all(|s| *s == 303 || *s == 401),
        "{answers:?}"
    );
    assert_eq!(entries(&app).await, before + 1, "one journal entry");
    assert_eq!(kari.balance_minor().await, 7_000);
    assert_eq!(ola.balance_minor().await, 3_000);
    verify(&app.services).await.unwrap();
}
