//! Counted failures and device-aware lockout (CONTRACT §3): every failed authentication counts,
//! the fifth inside a session ends it, an attacker's failures lock only the browsers that never
//! logged in, and requests at the same moment cannot get more than five guesses evaluated.

use crate::helpers::{
    Customer, TestApp, confirm_fields, exec, input_value, spawn_app, spawn_app_with,
};

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

/// The same customer in a browser that never logged in (no device cookie).
fn stranger_browser(app: &TestApp, kari: &Customer) -> Customer {
    kari.same_person(
        alphabank::auth::totp::TotpSecret::from_bytes(kari.secret.as_bytes()),
        app.new_client(),
    )
}

async fn wrong_login(c: &Customer) -> u16 {
    c.wrong_login().await.status().as_u16()
}

async fn events(app: &TestApp, name: &str) -> Vec<serde_json::Value> {
    app.services
        .audit
        .tail(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == name)
        .map(|e| e.detail)
        .collect()
}

/// After a failure ended the session: the next page is the landing page saying why.
async fn assert_session_ended_with_notice(c: &Customer) {
    let r = c.get("/transfer").await;
    assert_eq!(r.status(), 303, "the session has ended");
    assert_eq!(r.headers()["location"], "/");
    let landing = text(c.get("/").await).await;
    assert!(
        landing.contains("5 wrong"),
        "the landing page says why: {landing}"
    );
}

#[tokio::test]
async fn five_wrong_codes_on_transfer_confirmation_end_the_session_and_lock_new_browsers() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    app.customer("ola").await;
    kari.deposit("100").await;
    let html = text(kari.review("ola", "10", "").await).await;
    let (csrf, confirmation) = confirm_fields(&html);
    for attempt in 1..=4 {
        let r = kari.confirm(&csrf, &confirmation, "000000").await;
        assert_eq!(r.status(), 401, "attempt {attempt}");
        assert!(text(r).await.contains("id=\"review\""));
    }
    let fifth = kari.confirm(&csrf, &confirmation, "000000").await;
    assert_eq!(fifth.status(), 401);
    assert!(text(fifth).await.contains("session was ended"));
    // The sixth, with the right code, finds no session.
    let code = kari.next_code().await;
    assert_eq!(
        kari.confirm(&csrf, &confirmation, &code).await.status(),
        303
    );
    assert_session_ended_with_notice(&kari).await;
    assert_eq!(
        crate::helpers::balance_minor(&app.services, kari.user_id(&app.services).await).await,
        10_000,
        "nothing moved"
    );
    let refused = events(&app, "money_movement_refused").await;
    assert_eq!(refused.len(), 5, "each failure audited: {refused:?}");
    let locked = events(&app, "account_locked").await;
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0]["scope"], "shared");
    assert_eq!(locked[0]["locked_for_secs"], 900);
    let ended = events(&app, "session_expired").await;
    assert!(
        ended.iter().any(|d| d["reason"] == "too_many_failures"),
        "{ended:?}"
    );
    // A browser without the account's device cookie is locked out, with the usual words.
    let stranger = stranger_browser(&app, &kari);
    let r = stranger.login().await;
    assert_eq!(r.status(), 401);
    assert!(
        text(r)
            .await
            .contains("Email, password or code is incorrect.")
    );
    // The customer's own browser, which logged in before, is not.
    assert_eq!(kari.login().await.status(), 303);
}

#[tokio::test]
async fn five_wrong_codes_at_the_atm_end_the_session() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    for attempt in 1..=5 {
        let (csrf, key) = kari.form_keys("/atm").await;
        let r = kari
            .post(
                "/atm",
                &[
                    ("csrf_token", &csrf),
                    ("idempotency_key", &key),
                    ("amount", "100"),
                    ("username", "kari"),
                    ("card_name", "Kari"),
                    ("otp", "999999"),
                ],
            )
            .await;
        assert_eq!(r.status(), 401, "attempt {attempt}");
        let page = text(r).await;
        assert_eq!(page.contains("session was ended"), attempt == 5, "{page}");
    }
    assert_session_ended_with_notice(&kari).await;
    assert_eq!(events(&app, "account_locked").await.len(), 1);
}

#[tokio::test]
async fn a_right_code_in_a_session_starts_the_count_again() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    for _ in 0..2 {
        for _ in 0..4 {
            let (csrf, key) = kari.form_keys("/atm").await;
            let fields = [
                ("csrf_token", csrf.as_str()),
                ("idempotency_key", &key),
                ("amount", "1"),
                ("username", "kari"),
                ("card_name", "Kari"),
                ("otp", "999999"),
            ];
            assert_eq!(kari.post("/atm", &fields).await.status(), 401);
        }
        assert_eq!(kari.deposit("1").await.status(), 303, "a right code");
    }
    assert!(
        events(&app, "account_locked").await.is_empty(),
        "8 failures, never 5 in a row"
    );
    assert_eq!(kari.get("/settings").await.status(), 200);
}

#[tokio::test]
async fn a_password_change_gives_one_message_counts_each_failure_and_the_fifth_ends_the_session() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let attempt = |current: String, otp: String| {
        let kari = &kari;
        async move {
            let r = kari
                .submit(
                    "/settings",
                    "/settings/password",
                    &[
                        ("current_password", &current),
                        ("new_password", "a brand new fjord lantern 77"),
                        ("new_password_confirm", "a brand new fjord lantern 77"),
                        ("otp", &otp),
                    ],
                )
                .await;
            (r.status().as_u16(), text(r).await)
        }
    };
    let (wrong_password, page_a) =
        attempt("not my password at all".into(), kari.next_code().await).await;
    let (wrong_code, page_b) = attempt(kari.password.clone(), "000000".into()).await;
    assert_eq!((wrong_password, wrong_code), (401, 401));
    let message = |page: &str| {
        let at = page.find("class=\"field-error\"").expect("a field error");
        page[at..at + page[at..].find("</p>").unwrap()].to_string()
    };
    assert_eq!(message(&page_a), message(&page_b), "one message for either");
    for _ in 0..2 {
        assert_eq!(
            attempt("still not it, sorry".into(), "000000".into())
                .await
                .0,
            401
        );
    }
    let (status, page) = attempt("still not it, sorry".into(), "000000".into()).await;
    assert_eq!(status, 401);
    assert!(page.contains("session was ended"), "{page}");
    assert_session_ended_with_notice(&kari).await;
    let reasons: Vec<String> = events(&app, "password_change_refused")
        .await
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert_eq!(
        reasons.iter().filter(|r| *r == "wrong_code").count(),
        1,
        "{reasons:?}"
    );
    // The password did not change.
    assert_eq!(kari.login().await.status(), 303);
}

#[tokio::test]
async fn an_attackers_failures_lock_other_browsers_but_not_the_owners() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    let attacker = stranger_browser(&app, &kari);
    for _ in 0..5 {
        assert_eq!(wrong_login(&attacker).await, 401);
    }
    assert_eq!(
        attacker.login().await.status(),
        401,
        "locked for the attacker's browser"
    );
    let second = stranger_browser(&app, &kari);
    assert_eq!(
        second.login().await.status(),
        401,
        "and every other new browser"
    );
    assert_eq!(
        kari.login().await.status(),
        303,
        "not for the owner's known browser"
    );
    let locked = events(&app, "account_locked").await;
    assert_eq!(locked.len(), 1);
    assert_eq!(locked[0]["scope"], "shared");
}

#[tokio::test]
async fn five_failures_from_a_known_browser_lock_that_browser_alone() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    for _ in 0..5 {
        assert_eq!(wrong_login(&kari).await, 401);
    }
    assert_eq!(
        kari.login().await.status(),
        401,
        "the known browser is locked"
    );
    let elsewhere = stranger_browser(&app, &kari);
    assert_eq!(
        elsewhere.login().await.status(),
        303,
        "another browser is not"
    );
    let locked = events(&app, "account_locked").await;
    assert_eq!(locked.len(), 1);
    assert_eq!(locked[0]["scope"], "device");
    let (devices,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM devices")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(devices, 2, "both browsers are now known");
}

/// Guesses whose outcome depended on the password or code: refused as wrong, or passed.
async fn evaluated(app: &TestApp) -> usize {
    let failed = events(app, "login_failed").await;
    failed
        .iter()
        .filter(|d| matches!(d["reason"].as_str(), Some("wrong_password" | "wrong_code")))
        .count()
        + events(app, "login_succeeded").await.len()
}

async fn sessions(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    n
}

/// `wrong` wrong logins and, if `right`, one right one, all at the same moment.
async fn at_once(attacker: &Customer, wrong: usize, right: bool) -> Vec<u16> {
    let page = text(attacker.get("/login").await).await;
    let csrf = input_value(&page, "csrf_token").unwrap();
    let post = |password: String, otp: String| {
        let (attacker, csrf) = (attacker, &csrf);
        async move {
            let fields = [
                ("csrf_token", csrf.as_str()),
                ("email", &attacker.email),
                ("password", &password),
                ("otp", &otp),
            ];
            attacker.post("/login", &fields).await.status().as_u16()
        }
    };
    let mut all = Vec::new();
    for i in 0..wrong {
        all.push(post(
            format!("wrong but long password {i}"),
            "123456".into(),
        ));
    }
    if right {
        all.push(post(attacker.password.clone(), attacker.next_code().await));
    }
    let statuses = futures_util::future::join_all(all).await;
    assert!(
        statuses.iter().all(|s| matches!(s, 303 | 401 | 503)),
        "{statuses:?}"
    );
    statuses
}

#[tokio::test]
async fn fifty_wrong_logins_and_a_right_one_at_once_get_at_most_five_evaluated() {
    // A hundred and more requests from one address: above the per-client rate limit, which
    // would answer them before the login could.
    let app = spawn_app_with(&[("ALPHABANK_RATE_LIMIT_PER_MIN", "10000")]).await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    let attacker = stranger_browser(&app, &kari);
    let statuses = at_once(&attacker, 50, true).await;
    let passed = statuses.iter().filter(|s| **s == 303).count();
    assert!(evaluated(&app).await <= 5, "{statuses:?}");
    assert!(passed <= 1);
    assert_eq!(
        sessions(&app).await as usize,
        passed,
        "a session only for a login that passed"
    );
    let locks = events(&app, "account_locked").await.len();
    assert!(
        passed == 1 || locks == 1,
        "five failures lock: {statuses:?}"
    );
    if locks == 0 {
        // The right one came first and started the count again: five more lock it.
        for _ in 0..5 {
            assert_eq!(wrong_login(&attacker).await, 401);
        }
    }
    let locks = events(&app, "account_locked").await;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["locked_for_secs"], 900);

    // The lock has passed (simulated). Fifty at once again: five evaluated, and the second lock
    // lasts twice as long.
    exec(&app.services, "UPDATE users SET locked_until = 0".into()).await;
    exec(&app.services, "DELETE FROM sessions".into()).await;
    let before = evaluated(&app).await;
    at_once(&attacker, 50, false).await;
    assert_eq!(evaluated(&app).await - before, 5);
    let locks = events(&app, "account_locked").await;
    assert_eq!(locks.len(), 2, "{locks:?}");
    assert_eq!(locks[1]["locked_for_secs"], 1800, "{locks:?}");
    // Locked: the right password and code make no session.
    let statuses = at_once(&attacker, 0, true).await;
    assert_eq!(statuses, vec![401]);
    assert_eq!(sessions(&app).await, 0);
}
