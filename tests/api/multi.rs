//! Several instances on one database (issue 7): two application instances on two loopback ports
//! share one database and one master key, and correctness must not depend on which one answers —
//! sessions, one-time codes, idempotency, balances, login blocks, captcha replay marks, start-up
//! migrations, a SIGKILLed instance, and `keys rotate` while both serve.
//!
//! The first instance is a normal [`TestApp`]; the second is built from its `env` with only
//! `ALPHABANK_LISTEN` changed, so it uses the same database, master key and data dir (hence the
//! same TLS certificate). Cookies are host-scoped, not port-scoped: a customer's client (which
//! resolves `localhost` to 127.0.0.1 and takes the port from the URL) sends the same
//! `__Host-alphabank` cookie to both instances.

use std::time::Duration;

use alphabank::config::Config;
use alphabank::domain::{Amount, Message, UserId, Username};
use alphabank::startup::{Application, Services, ShutdownHandle};

use crate::helpers::{
    Customer, TestApp, balance_minor, confirm_fields, ctx, customer, deposit, input_value, key,
    spawn_app, spawn_app_with, test_env, verify,
};

/// A second in-process instance on the same database as a [`TestApp`].
struct Instance {
    base: String,
    services: Services,
    shutdown: ShutdownHandle,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

/// `env` with `ALPHABANK_LISTEN` (and anything in `replace`) replaced.
pub(crate) fn env_with(
    env: &[(String, String)],
    replace: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "ALPHABANK_LISTEN" && !replace.iter().any(|(r, _)| r == k))
        .cloned()
        .collect();
    env.push(("ALPHABANK_LISTEN".into(), "127.0.0.1:0".into()));
    env.extend(replace.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Mirrors `spawn_app_with`, but for an explicit environment (the first app's).
async fn second_instance(app: &TestApp) -> Instance {
    let config = Config::load_from(None, &env_with(&app.env, &[])).expect("config");
    let built = Application::build(config)
        .await
        .expect("second instance builds");
    let port = built.port();
    let services = built.services().clone();
    let shutdown = built.shutdown_handle();
    tokio::spawn(built.run_until_stopped());
    Instance {
        base: format!("https://localhost:{port}"),
        services,
        shutdown,
    }
}

/// The same customer, same cookie jar and same code counter, talking to `base`.
fn on(customer: &Customer, base: &str) -> Customer {
    let mut view = customer.same_person(
        alphabank::auth::totp::TotpSecret::from_bytes(customer.secret.as_bytes()),
        customer.client.clone(),
    );
    view.base = base.to_string();
    view
}

/// An ATM deposit of 100 kr with the given form fields and code.
async fn atm(c: &Customer, csrf: &str, key: &str, code: &str) -> reqwest::Response {
    c.post(
        "/atm",
        &[
            ("csrf_token", csrf),
            ("idempotency_key", key),
            ("amount", "100"),
            ("username", &c.username),
            ("card_name", "Kari Nordmann"),
            ("otp", code),
        ],
    )
    .await
}

/// A login with a wrong password (and a wrong code).
fn status(r: &reqwest::Response) -> u16 {
    r.status().as_u16()
}

#[tokio::test]
async fn a_session_from_a_works_on_b_and_a_logout_on_b_ends_it_on_a() {
    let a = spawn_app().await;
    let b = second_instance(&a).await;
    let kari_a = a.customer("kari").await;
    let kari_b = on(&kari_a, &b.base);
    assert_eq!(
        kari_b.balance_minor().await,
        0,
        "the session from A works on B"
    );
    assert_eq!(status(&kari_b.get("/settings").await), 200);
    let r = kari_b.logout().await;
    assert_eq!(status(&r), 303);
    let settings = kari_a.get("/settings").await;
    assert_eq!(
        status(&settings),
        303,
        "the logout on B ended the session on A"
    );
    assert_eq!(settings.headers()["location"], "/");
    let home = kari_a.get("/").await.text().await.unwrap();
    assert!(
        !home.contains("id=\"balance\""),
        "A shows the visitor's landing page"
    );
}

#[tokio::test]
async fn a_code_accepted_on_a_is_refused_on_b() {
    let a = spawn_app().await;
    let b = second_instance(&a).await;
    let kari_a = a.customer("kari").await;
    let kari_b = on(&kari_a, &b.base);
    let code = kari_a.next_code().await;
    let (csrf, k) = kari_a.form_keys("/atm").await;
    assert_eq!(status(&atm(&kari_a, &csrf, &k, &code).await), 303);
    let (csrf, k) = kari_b.form_keys("/atm").await;
    let replay = atm(&kari_b, &csrf, &k, &code).await;
    assert!(
        replay.status().is_client_error(),
        "a replayed code is refused on B: {}",
        replay.status()
    );
    assert_eq!(kari_b.balance_minor().await, 10_000, "only one deposit");
}

#[tokio::test]
async fn the_same_idempotency_key_on_a_and_b_at_once_moves_money_once() {
    let a = spawn_app().await;
    let b = second_instance(&a).await;
    let kari_a = a.customer("kari").await;
    a.customer("ola").await;
    let kari_b = on(&kari_a, &b.base);
    let kari_id = kari_a.user_id(&a.services).await;
    deposit(&a.services, kari_id, "1000").await;
    // One review; its confirmation sent to A and to B at the same moment, each with its own code.
    let review = kari_a.review("ola", "250", "once").await;
    assert_eq!(review.status(), 200);
    let (csrf, confirmation) = confirm_fields(&review.text().await.unwrap());
    let (code1, code2) = (kari_a.next_code().await, kari_a.next_code().await);
    let (r1, r2) = tokio::join!(
        kari_a.confirm(&csrf, &confirmation, &code1),
        kari_b.confirm(&csrf, &confirmation, &code2),
    );
    let statuses = [r1.status(), r2.status()];
    assert!(statuses.iter().any(|s| s.as_u16() == 303), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.as_u16() == 303 || s.is_client_error()),
        "{statuses:?}"
    );
    assert_eq!(balance_minor(&b.services, kari_id).await, 75_000);
    assert!(verify(&b.services).await.is_ok());
}

#[tokio::test]
async fn of_two_transfers_the_balance_covers_once_exactly_one_succeeds() {
    let a = spawn_app().await;
    let b = second_instance(&a).await;
    let kari_a = a.customer("kari").await;
    a.customer("ola").await;
    let kari_b = on(&kari_a, &b.base);
    let kari_id = kari_a.user_id(&a.services).await;
    deposit(&a.services, kari_id, "100").await;
    // Through the web: one transfer to A, one to B, at the same moment.
    // Through the web: two reviews (the balance covers each), confirmed on A and on B at the
    // same moment.
    let review_a = kari_a.review("ola", "80", "race").await;
    let review_b = kari_b.review("ola", "80", "race").await;
    assert_eq!(
        (review_a.status().as_u16(), review_b.status().as_u16()),
        (200, 200)
    );
    let (csrf_a, confirmation_a) = confirm_fields(&review_a.text().await.unwrap());
    let (csrf_b, confirmation_b) = confirm_fields(&review_b.text().await.unwrap());
    let (code1, code2) = (kari_a.next_code().await, kari_a.next_code().await);
    let (ra, rb) = tokio::join!(
        kari_a.confirm(&csrf_a, &confirmation_a, &code1),
        kari_b.confirm(&csrf_b, &confirmation_b, &code2),
    );
    let statuses = [ra.status(), rb.status()];
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() == 303).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.as_u16() == 303 || s.is_client_error())
    );
    assert_eq!(balance_minor(&a.services, kari_id).await, 2_000);
    // The same race through each instance's own ledger (its own connection pool), where no
    // one-time code can decide it: only the balance check does.
    let bob = customer(&a.services, "bob").await;
    deposit(&a.services, bob, "100").await;
    let to = Username::parse("ola").unwrap();
    let (amount, message) = (Amount::parse("80").unwrap(), Message::parse("").unwrap());
    let (key_a, key_b, ctx_a, ctx_b) = (key(), key(), ctx(), ctx());
    let (la, lb) = tokio::join!(
        a.services
            .ledger
            .transfer(&ctx_a, bob, &to, amount, &message, &key_a),
        b.services
            .ledger
            .transfer(&ctx_b, bob, &to, amount, &message, &key_b),
    );
    assert_eq!(
        [la.is_ok(), lb.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{la:?} {lb:?}"
    );
    assert_eq!(balance_minor(&b.services, bob).await, 2_000);
    assert!(verify(&b.services).await.is_ok());
}

#[tokio::test]
async fn login_failures_on_a_and_b_add_up_to_one_block_on_both() {
    let a = spawn_app().await;
    let b = second_instance(&a).await;
    let kari_a = a.customer("kari").await;
    kari_a.logout().await;
    let kari_b = on(&kari_a, &b.base);
    for (who, times) in [(&kari_a, 3), (&kari_b, 2)] {
        for _ in 0..times {
            assert_eq!(status(&who.wrong_login().await), 401);
        }
    }
    assert_eq!(status(&kari_a.login().await), 401, "blocked on A");
    assert_eq!(status(&kari_b.login().await), 401, "blocked on B");
    // One browser (its device cookie is sent to both instances): one count, the device's.
    let (lockouts, locked_until): (i64, i64) =
        sqlx::query_as("SELECT lockouts, locked_until FROM devices")
            .fetch_one(b.services.db.pool())
            .await
            .unwrap();
    assert_eq!(lockouts, 1);
    assert!(locked_until > alphabank::now_millis());
    let tail = b.services.audit.tail(50).await.unwrap();
    assert!(tail.iter().any(|e| e.event == "account_locked"));
}

#[tokio::test]
async fn a_captcha_challenge_used_on_a_is_refused_on_b() {
    let a = spawn_app_with(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "8")]).await;
    let b = second_instance(&a).await;
    let client = a.new_client();
    let page = client
        .get(format!("{}/signup", a.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let challenge = input_value(&page, "pow_challenge").unwrap();
    let nonce = (0u64..)
        .find(|n| alphabank::captcha::pow::work_bits(&challenge, &n.to_string()) >= 8)
        .unwrap()
        .to_string();
    let signup = |base: String, csrf: String, name: &'static str| {
        let (client, challenge, nonce) = (client.clone(), challenge.clone(), nonce.clone());
        async move {
            let pw = "quiet fjord lantern evening";
            client
                .post(format!("{base}/signup"))
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("username", name),
                    ("email", &format!("{name}@example.no")),
                    ("password", pw),
                    ("password_confirm", pw),
                    ("pow_challenge", &challenge),
                    ("pow_nonce", &nonce),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let csrf = input_value(&page, "csrf_token").unwrap();
    assert_eq!(status(&signup(a.base.clone(), csrf, "powa").await), 303);
    // A visitor on B (a fresh client: no session) replays the solved challenge.
    let other = a.new_client();
    let page_b = other
        .get(format!("{}/signup", b.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page_b.contains("data-bits=\"8\""));
    let csrf_b = input_value(&page_b, "csrf_token").unwrap();
    let pw = "quiet fjord lantern evening";
    let replay = other
        .post(format!("{}/signup", b.base))
        .form(&[
            ("csrf_token", csrf_b.as_str()),
            ("username", "powb"),
            ("email", "powb@example.no"),
            ("password", pw),
            ("password_confirm", pw),
            ("pow_challenge", &challenge),
            ("pow_nonce", &nonce),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&replay), 400, "a used challenge is refused on B");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(b.services.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "nobody was created on B");
}

#[tokio::test]
async fn two_instances_starting_together_on_an_empty_database_migrate_once_and_both_serve() {
    let dir = tempfile::tempdir().unwrap();
    let env = test_env(dir.path(), &[]).await;
    let (c1, c2) = (
        Config::load_from(None, &env).unwrap(),
        Config::load_from(None, &env).unwrap(),
    );
    let (one, two) = tokio::join!(Application::build(c1), Application::build(c2));
    let (one, two) = (one.expect("first builds"), two.expect("second builds"));
    let services = one.services().clone();
    let versions: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY version",
    )
    .fetch_all(services.db.pool())
    .await
    .unwrap();
    assert!(!versions.is_empty());
    assert!(versions.iter().all(|(_, n)| *n == 1), "{versions:?}");
    let keys: Vec<(String, i64)> = sqlx::query_as(
        "SELECT purpose, COUNT(*) FROM data_keys WHERE state = 'active' GROUP BY purpose ORDER BY purpose",
    )
    .fetch_all(services.db.pool())
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![("bidx".into(), 1), ("enc".into(), 1), ("mac".into(), 1)]
    );
    let pem = std::fs::read(dir.path().join("tls-cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let ports = [one.port(), two.port()];
    let handles = [one.shutdown_handle(), two.shutdown_handle()];
    tokio::spawn(one.run_until_stopped());
    tokio::spawn(two.run_until_stopped());
    for port in ports {
        let r = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert!(verify(&services).await.is_ok());
    for h in handles {
        h.shutdown();
    }
}

/// The real binary, serving on the database of a [`TestApp`].
fn serve_process(app: &TestApp) -> crate::process::Serving {
    crate::process::serve(&app.env)
}

#[tokio::test]
async fn sigkill_of_a_mid_stream_loses_no_acknowledged_transfer_and_b_keeps_serving() {
    // B is in-process (the TestApp); A is the real binary on the same database.
    let b = spawn_app().await;
    let mut a = serve_process(&b);
    let a_base = a.base();
    b.customer("ola").await;
    // Each customer has two codes left in this 30-second window (enrollment used one).
    let mut senders = Vec::new();
    for i in 0..4 {
        let c = b.customer(&format!("sender{i}")).await;
        let id = c.user_id(&b.services).await;
        deposit(&b.services, id, "1000").await;
        senders.push((on(&c, &a_base), id));
    }
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(UserId, i64)>();
    let stream = futures_util::future::join_all(senders.iter().map(|(c, id)| {
        let acked = acked_tx.clone();
        async move {
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                let (csrf, k) = match c.client.get(format!("{}/transfer", c.base)).send().await {
                    Ok(r) => match r.text().await {
                        Ok(html) => (
                            input_value(&html, "csrf_token").unwrap(),
                            input_value(&html, "idempotency_key").unwrap(),
                        ),
                        Err(_) => break,
                    },
                    Err(_) => break,
                };
                let reviewed = c
                    .client
                    .post(format!("{}/transfer", c.base))
                    .form(&[
                        ("csrf_token", csrf.as_str()),
                        ("idempotency_key", &k),
                        ("amount", "10"),
                        ("from_username", &c.username),
                        ("to_username", "ola"),
                        ("message", "stream"),
                    ])
                    .send()
                    .await;
                let review = match reviewed {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(html) => html,
                        Err(_) => break,
                    },
                    Ok(r) => panic!("unexpected review refusal {}", r.status()),
                    Err(_) => break, // A died
                };
                let (csrf, confirmation) = confirm_fields(&review);
                let code = c.next_code().await;
                let sent = c
                    .client
                    .post(format!("{}/transfer/confirm", c.base))
                    .form(&[
                        ("csrf_token", csrf.as_str()),
                        ("confirmation", &confirmation),
                        ("otp", &code),
                    ])
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 303 => {
                        let location = r.headers()["location"].to_str().unwrap().to_string();
                        let entry: i64 = location
                            .strip_prefix("/receipts/")
                            .expect("a receipt")
                            .parse()
                            .unwrap();
                        let _ = acked.send((*id, entry));
                        outcomes.push((*id, entry));
                    }
                    Ok(r) => panic!("unexpected refusal {}", r.status()),
                    Err(_) => break, // A died: not acknowledged
                }
            }
            outcomes
        }
    }));
    drop(acked_tx);
    let killer = async {
        // Kill A once some transfers have been acknowledged and others are under way.
        for _ in 0..3 {
            acked_rx.recv().await.expect("a transfer is acknowledged");
        }
        a.child.kill().expect("SIGKILL A");
        a.child.wait().unwrap();
    };
    let (outcomes, ()) = tokio::join!(stream, killer);
    let acknowledged: Vec<(UserId, i64)> = outcomes.into_iter().flatten().collect();
    assert!(acknowledged.len() >= 3);
    assert!(
        acknowledged.len() < 8,
        "A was killed before the stream ended"
    );
    // B keeps serving, the books balance, and every acknowledged transfer is there.
    let health = b
        .client
        .get(format!("{}/healthz", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let report = verify(&b.services).await;
    assert!(report.is_ok(), "{report:?}");
    for (user, entry) in &acknowledged {
        assert!(
            b.services
                .ledger
                .movement(*user, *entry)
                .await
                .unwrap()
                .is_some(),
            "acknowledged transfer {entry} of {user} is missing"
        );
    }
    // Every acknowledged transfer moved its 10 kr (a transfer cut off by the kill may have too).
    let mut moved = 0;
    for (_, id) in &senders {
        moved += 100_000 - balance_minor(&b.services, *id).await;
    }
    assert!(moved >= acknowledged.len() as i64 * 1_000, "{moved}");
}

#[tokio::test]
async fn after_an_announced_rotation_b_opens_what_a_seals_under_the_new_key() {
    let a = spawn_app().await;
    let b = second_instance(&a).await;
    let alice = customer(&a.services, "alice").await;
    customer(&a.services, "bob").await;
    deposit(&a.services, alice, "100").await;
    let before = b.services.keyring.active_key_id();
    let announced = async {
        // B's periodic refresh, simulated: it runs after the announce and before the promotion.
        loop {
            let keys: Vec<(i64,)> = sqlx::query_as(
                "SELECT id FROM data_keys WHERE purpose = 'enc' AND state = 'retired' AND id > $1",
            )
            .bind(i64::from(before))
            .fetch_all(b.services.db.pool())
            .await
            .unwrap();
            if !keys.is_empty() {
                b.services.keyring.refresh(&b.services.db).await.unwrap();
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    let (report, ()) = tokio::join!(
        alphabank::crypto::rotation::rotate_with_announce_delay(
            &a.services.db,
            &a.services.keyring,
            Duration::from_secs(2),
        ),
        announced
    );
    let report = report.unwrap();
    assert_ne!(report.new_key_id, before);
    assert_eq!(a.services.keyring.active_key_id(), report.new_key_id);
    assert_eq!(
        b.services.keyring.active_key_id(),
        before,
        "B has not refreshed since the promotion"
    );
    // A seals under the new key; B opens it without another refresh.
    deposit(&a.services, alice, "5").await;
    let (ct,): (Vec<u8>,) = sqlx::query_as("SELECT balance_enc FROM accounts WHERE user_id = $1")
        .bind(alice)
        .fetch_one(a.services.db.pool())
        .await
        .unwrap();
    assert_eq!(
        alphabank::crypto::Keyring::key_id_of(&ct).unwrap(),
        report.new_key_id
    );
    assert_eq!(balance_minor(&b.services, alice).await, 10_500);
    // What B seals (still under the old key) A opens, and the books still verify on both.
    b.services
        .ledger
        .transfer(
            &ctx(),
            alice,
            &Username::parse("bob").unwrap(),
            Amount::parse("1").unwrap(),
            &Message::parse("after rotation").unwrap(),
            &key(),
        )
        .await
        .unwrap();
    assert_eq!(balance_minor(&a.services, alice).await, 10_400);
    assert!(verify(&a.services).await.is_ok());
    assert!(verify(&b.services).await.is_ok());
}

#[tokio::test]
async fn a_rotation_interrupted_after_the_announce_resumes_with_the_announced_key() {
    let a = spawn_app().await;
    let s = &a.services;
    let alice = customer(s, "alice").await;
    deposit(s, alice, "100").await;
    let before = s.keyring.active_key_id();
    let announced_id = || async {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM data_keys WHERE purpose = 'enc' AND state = 'retired' AND id > $1",
        )
        .bind(i64::from(before))
        .fetch_all(s.db.pool())
        .await
        .unwrap();
        rows.first().map(|(id,)| *id)
    };
    // Interrupt the rotation during its announce wait (as a killed `keys rotate` would be).
    tokio::select! {
        r = alphabank::crypto::rotation::rotate_with_announce_delay(&s.db, &s.keyring, Duration::from_secs(60)) => {
            panic!("the rotation cannot finish before its announce delay: {r:?}")
        }
        id = async {
            loop {
                if let Some(id) = announced_id().await {
                    return id;
                }
                tokio::task::yield_now().await;
            }
        } => assert!(id > i64::from(before)),
    }
    let announced = announced_id().await.unwrap();
    assert_eq!(
        s.keyring.active_key_id(),
        before,
        "nothing sealed under it yet"
    );
    let report = alphabank::crypto::rotation::rotate_with_announce_delay(
        &s.db,
        &s.keyring,
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    assert!(report.resumed);
    assert_eq!(i64::from(report.new_key_id), announced, "no other key made");
    let (enc_keys,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM data_keys WHERE purpose = 'enc'")
            .fetch_one(s.db.pool())
            .await
            .unwrap();
    assert_eq!(enc_keys, 2);
    assert_eq!(balance_minor(s, alice).await, 10_000);
    assert!(verify(s).await.is_ok());
}

#[tokio::test]
async fn a_transfers_captcha_is_checked_at_review_and_spent_once_by_its_confirmation() {
    // Customers sign up on an instance without the captcha; the transfer runs on one with it.
    let app = spawn_app().await;
    let kari_plain = app.customer("kari").await;
    app.customer("ola").await;
    let pow = [("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "6")];
    let config = Config::load_from(None, &env_with(&app.env, &pow)).expect("config");
    let built = Application::build(config).await.expect("builds");
    let port = built.port();
    let shutdown = built.shutdown_handle();
    tokio::spawn(built.run_until_stopped());
    let kari = on(&kari_plain, &format!("https://localhost:{port}"));
    crate::helpers::deposit(&app.services, kari.user_id(&app.services).await, "100").await;
    let page = kari.get("/transfer").await.text().await.unwrap();
    let challenge = crate::helpers::input_value(&page, "pow_challenge").unwrap();
    let nonce = crate::captcha::solve(&challenge, 6);
    // Two reviews with the one solved challenge: a review writes nothing, so both are shown.
    let mut confirmations = Vec::new();
    let review = |nonce: String| {
        let (kari, challenge) = (&kari, &challenge);
        async move {
            let (csrf, key) = kari.form_keys("/transfer").await;
            let fields = [
                ("csrf_token", csrf.as_str()),
                ("idempotency_key", &key),
                ("amount", "10"),
                ("from_username", "kari"),
                ("to_username", "ola"),
                ("message", ""),
                ("pow_challenge", challenge),
                ("pow_nonce", &nonce),
            ];
            kari.post("/transfer", &fields).await
        }
    };
    for _ in 0..2 {
        let review = review(nonce.clone()).await;
        assert_eq!(review.status(), 200);
        confirmations.push(crate::helpers::confirm_fields(
            &review.text().await.unwrap(),
        ));
    }
    // Without the work the review is refused.
    let lazy = crate::captcha::lazy_nonce(&challenge, 6);
    assert_eq!(review(lazy).await.status(), 400);
    // The first confirmation spends the challenge with its movement; the second is refused.
    let (csrf, first) = &confirmations[0];
    let code = kari.next_code().await;
    assert_eq!(kari.confirm(csrf, first, &code).await.status(), 303);
    let (csrf, second) = &confirmations[1];
    let code = kari.next_code().await;
    let refused = kari.confirm(csrf, second, &code).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(kari.balance_minor().await, 9_000, "one transfer moved");
    crate::helpers::verify(&app.services).await.unwrap();
    shutdown.shutdown();
}
