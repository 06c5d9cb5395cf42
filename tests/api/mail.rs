//! Mail (CONTRACT §8), as the customer's mailbox sees it: each notification arrives once with
//! its `X-AlphaBank-Event` header, over a real SMTP server on loopback or as a file in the
//! outbox directory; a server that refuses or goes away gets the message when it takes it; a
//! SIGKILL between commit and delivery loses nothing; two instances send each message once.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use alphabank::audit::AuditContext;
use alphabank::config::Config;
use alphabank::mail::Mail as Notice;
use alphabank::startup::Application;

use crate::helpers::{Customer, TestApp, exec, spawn_app, spawn_app_with};
use crate::mailbox::{Mail, SmtpSink, read_messages, wait_for};

const NEW_PASSWORD: &str = "a brand new fjord passphrase 99";

async fn change_password(customer: &Customer) -> reqwest::Response {
    let code = customer.next_code().await;
    customer
        .submit(
            "/settings",
            "/settings/password",
            &[
                ("current_password", &customer.password),
                ("new_password", NEW_PASSWORD),
                ("new_password_confirm", NEW_PASSWORD),
                ("otp", &code),
            ],
        )
        .await
}

fn to_and_event<'a>(mails: &'a [Mail], email: &str, event: &str) -> Vec<&'a Mail> {
    mails
        .iter()
        .filter(|m| m.to().contains(email) && m.event() == event)
        .collect()
}

/// How many messages wait in the outbox, and the most attempts any of them had.
async fn outbox_state(app: &TestApp) -> (i64, i64) {
    use sqlx::Row;
    let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(MAX(attempts), 0) AS a FROM outbox")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    (row.get("n"), row.get("a"))
}

async fn wait_outbox(app: &TestApp, done: impl Fn((i64, i64)) -> bool) -> (i64, i64) {
    let deadline = std::time::Instant::now() + crate::mailbox::MAIL_WAIT;
    loop {
        let state = outbox_state(app).await;
        if done(state) || std::time::Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_password_change_is_mailed_once_over_smtp_with_its_header_and_no_secret() {
    let sink = SmtpSink::start();
    let url = sink.url();
    let app = spawn_app_with(&[
        ("ALPHABANK_SMTP_URL", url.as_str()),
        ("ALPHABANK_MAIL_FROM", "AlphaBank <post@bank.example>"),
    ])
    .await;
    let kari = app.customer("kari").await;
    assert_eq!(change_password(&kari).await.status(), 303);
    let mails = wait_for(
        || sink.messages(),
        |m| !to_and_event(m, &kari.email, "password-changed").is_empty(),
    )
    .await;
    let changed = to_and_event(&mails, &kari.email, "password-changed");
    assert_eq!(changed.len(), 1, "{mails:#?}");
    let mail = changed[0];
    assert!(mail.header("From").unwrap().contains("post@bank.example"));
    assert!(
        mail.header("Subject")
            .unwrap()
            .contains("password was changed")
    );
    assert!(mail.header("Date").is_some() && mail.header("Message-ID").is_some());
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(!mail.body.contains(NEW_PASSWORD) && !mail.body.contains(&kari.password));
    assert!(
        mail.text().contains(&app.base),
        "links to the bank: {}",
        mail.body
    );
    // Delivered messages leave the outbox; nothing else was sent to her (sign-up's browser is known).
    assert_eq!(wait_outbox(&app, |(n, _)| n == 0).await.0, 0);
    let mine: Vec<_> = sink
        .messages()
        .into_iter()
        .filter(|m| m.to().contains(&kari.email))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
}

#[tokio::test]
async fn a_log_in_from_a_new_browser_is_mailed_and_one_from_a_known_browser_is_not() {
    let sink = SmtpSink::start();
    let url = sink.url();
    let app = spawn_app_with(&[("ALPHABANK_SMTP_URL", url.as_str())]).await;
    let kari = app.customer("kari").await;
    // The browser she signed up in is known.
    assert_eq!(kari.logout().await.status(), 303);
    assert_eq!(kari.login().await.status(), 303);
    // A new browser.
    let other = kari.same_person(
        alphabank::auth::totp::TotpSecret::from_bytes(kari.secret.as_bytes()),
        app.new_client(),
    );
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    let page = other.get("/login").await.text().await.unwrap();
    let csrf = crate::helpers::input_value(&page, "csrf_token").unwrap();
    let code = other.next_code().await;
    let r = other
        .client
        .post(format!("{}/login", app.base))
        .header("User-Agent", ua)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", other.email.as_str()),
            ("password", other.password.as_str()),
            ("otp", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let mails = wait_for(
        || sink.messages(),
        |m| !to_and_event(m, &kari.email, "new-device-login").is_empty(),
    )
    .await;
    let new_device = to_and_event(&mails, &kari.email, "new-device-login");
    assert_eq!(new_device.len(), 1, "{mails:#?}");
    let body = &new_device[0].body;
    assert!(body.contains("Browser: Chrome on Linux"), "{body}");
    assert!(body.contains("Address: 127.0.0.1"), "{body}");
    assert!(body.contains("Time: ") && body.contains(" UTC"), "{body}");
    assert!(!body.contains("Mozilla"), "{body}");
    // The same new browser again is now known: no second message.
    assert_eq!(other.logout().await.status(), 303);
    assert_eq!(other.login().await.status(), 303);
    assert_eq!(wait_outbox(&app, |(n, _)| n == 0).await.0, 0);
    let all = sink.messages();
    assert_eq!(
        to_and_event(&all, &kari.email, "new-device-login").len(),
        1,
        "{all:#?}"
    );
}

#[tokio::test]
async fn a_locked_account_is_mailed_to_its_owner() {
    let sink = SmtpSink::start();
    let url = sink.url();
    let app = spawn_app_with(&[("ALPHABANK_SMTP_URL", url.as_str())]).await;
    let kari = app.customer("kari").await;
    let stranger = kari.same_person(
        alphabank::auth::totp::TotpSecret::from_bytes(kari.secret.as_bytes()),
        app.new_client(),
    );
    for _ in 0..alphabank::auth::failures::FAILURES_MAX {
        assert_eq!(stranger.wrong_login().await.status(), 401);
    }
    let mails = wait_for(
        || sink.messages(),
        |m| !to_and_event(m, &kari.email, "account-locked").is_empty(),
    )
    .await;
    let locked = to_and_event(&mails, &kari.email, "account-locked");
    assert_eq!(locked.len(), 1, "{mails:#?}");
    assert!(
        locked[0].text().contains("refused for"),
        "{}",
        locked[0].body
    );
}

#[tokio::test]
async fn a_server_that_refuses_with_4xx_or_5xx_is_retried_until_it_accepts() {
    for reply in ["451 4.3.0 Try again later", "554 5.7.1 Not now"] {
        let sink = SmtpSink::start();
        sink.refuse(reply);
        let url = sink.url();
        let app = spawn_app_with(&[("ALPHABANK_SMTP_URL", url.as_str())]).await;
        let kari = app.customer("kari").await;
        assert_eq!(change_password(&kari).await.status(), 303);
        // Refused at least once: still waiting, with its attempt counted.
        let (waiting, attempts) = wait_outbox(&app, |(n, a)| n == 1 && a >= 1).await;
        assert_eq!((waiting, attempts >= 1), (1, true), "{reply}");
        assert!(sink.messages().is_empty());
        sink.accept();
        let mails = wait_for(|| sink.messages(), |m| !m.is_empty()).await;
        assert_eq!(
            to_and_event(&mails, &kari.email, "password-changed").len(),
            1,
            "{reply}"
        );
        assert_eq!(wait_outbox(&app, |(n, _)| n == 0).await.0, 0);
        assert_eq!(sink.messages().len(), 1, "{reply}: once");
    }
}

#[tokio::test]
async fn a_server_that_went_away_gets_the_message_when_it_comes_back() {
    let mut sink = SmtpSink::start();
    let url = sink.url();
    let app = spawn_app_with(&[("ALPHABANK_SMTP_URL", url.as_str())]).await;
    let kari = app.customer("kari").await;
    sink.stop();
    assert_eq!(change_password(&kari).await.status(), 303);
    let (waiting, attempts) = wait_outbox(&app, |(n, a)| n == 1 && a >= 1).await;
    assert_eq!((waiting, attempts >= 1), (1, true));
    sink.restart();
    let mails = wait_for(|| sink.messages(), |m| !m.is_empty()).await;
    assert_eq!(
        to_and_event(&mails, &kari.email, "password-changed").len(),
        1
    );
    assert_eq!(wait_outbox(&app, |(n, _)| n == 0).await.0, 0);
}

#[tokio::test]
async fn without_an_smtp_server_messages_are_private_files_in_the_outbox_directory() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    assert_eq!(change_password(&kari).await.status(), 303);
    let dir = app.dir.path().join("outbox");
    let mails = wait_for(|| read_messages(&dir), |m| !m.is_empty()).await;
    assert_eq!(
        to_and_event(&mails, &kari.email, "password-changed").len(),
        1
    );
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), 1, "one file, no temporary left");
    let name = files[0].file_name().into_string().unwrap();
    // <time>-<id>.eml: 20261208T010203.456Z-0123456789abcdef.eml
    let (time, id) = name.trim_end_matches(".eml").split_once('-').unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[8] == b'T',
        "{name}"
    );
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(
        files[0].metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[tokio::test]
async fn the_text_of_a_waiting_message_is_sealed_at_rest() {
    let mut sink = SmtpSink::start();
    let url = sink.url();
    let app = spawn_app_with(&[("ALPHABANK_SMTP_URL", url.as_str())]).await;
    let kari = app.customer("kari").await;
    sink.stop();
    assert_eq!(change_password(&kari).await.status(), 303);
    use sqlx::Row;
    let row = sqlx::query("SELECT kind, body_enc FROM outbox")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    let body: Vec<u8> = row.get("body_enc");
    assert_eq!(row.get::<String, _>("kind"), "password-changed");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("password") && !text.contains("Hello"),
        "sealed"
    );
    // A text moved to another row no longer opens: it is given up (audited), never delivered.
    // Moved while it waits for its retry, not while a sender holds it.
    let deadline = std::time::Instant::now() + crate::mailbox::MAIL_WAIT;
    loop {
        let soon = alphabank::now_millis() + 60_000;
        let sql = format!(
            "UPDATE outbox SET id = id + 1 WHERE attempts >= 1 AND next_attempt_at < {soon}"
        );
        if exec(&app.services, sql).await == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the message was never tried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sink.restart();
    assert_eq!(wait_outbox(&app, |(n, _)| n == 0).await.0, 0);
    let events = app.services.audit.tail(50).await.unwrap();
    assert!(
        events.iter().any(|e| e.event == "mail_abandoned"),
        "{events:#?}"
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn two_instances_on_one_database_send_each_message_once() {
    let sink = SmtpSink::start();
    let url = sink.url();
    let a = spawn_app_with(&[("ALPHABANK_SMTP_URL", url.as_str())]).await;
    let config = Config::load_from(None, &crate::multi::env_with(&a.env, &[])).unwrap();
    let b = Application::build(config).await.unwrap();
    let b_shutdown = b.shutdown_handle();
    tokio::spawn(b.run_until_stopped());
    let kari = a.customer("kari").await;
    let user = kari.user_id(&a.services).await;
    // Forty messages committed at once; both senders poll the same outbox.
    const N: usize = 40;
    let outbox = &a.services.outbox;
    let mut tx = a.services.db.begin_write().await.unwrap();
    for i in 0..N {
        let notice = Notice::password_changed(outbox.public_url(), i64::try_from(i).unwrap());
        outbox
            .notify_in(&mut tx, &AuditContext::system(), user, &notice)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    outbox.wake();
    let mails = wait_for(|| sink.messages(), |m| m.len() >= N).await;
    assert_eq!(wait_outbox(&a, |(n, _)| n == 0).await.0, 0);
    let mails = if mails.len() == N {
        sink.messages()
    } else {
        mails
    };
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for mail in &mails {
        *by_id
            .entry(mail.header("Message-ID").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_id.len(), N, "every message arrived");
    assert!(by_id.values().all(|&n| n == 1), "none twice: {by_id:?}");
    assert_eq!(mails.len(), N);
    b_shutdown.shutdown();
}

#[tokio::test]
async fn a_sigkill_between_commit_and_delivery_loses_no_message() {
    let mut sink = SmtpSink::start();
    sink.stop(); // nothing listens: the bank cannot deliver yet
    let url = sink.url();
    let dir = tempfile::tempdir().unwrap();
    let env = crate::helpers::test_env(dir.path(), &[("ALPHABANK_SMTP_URL", url.as_str())]).await;
    let services = alphabank::startup::open_services(Config::load_from(None, &env).unwrap())
        .await
        .unwrap();
    let user = crate::helpers::customer(&services, "kari").await;
    let mut bank = crate::process::serve(&env);
    let outbox = &services.outbox;
    let mut tx = services.db.begin_write().await.unwrap();
    let notice = Notice::password_changed(outbox.public_url(), alphabank::now_millis());
    outbox
        .notify_in(&mut tx, &AuditContext::system(), user, &notice)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The running bank claims it and fails to deliver it at least once; then it is killed.
    let attempted = wait_for_attempt(&services).await;
    assert!(attempted >= 1, "the bank tried to deliver it");
    bank.child.kill().unwrap(); // SIGKILL: no clean shutdown
    bank.child.wait().unwrap();
    drop(bank);
    sink.restart();
    let _bank = crate::process::serve(&env);
    let mails = wait_for(|| sink.messages(), |m| !m.is_empty()).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].event(), "password-changed");
    services.db.close().await;
}

async fn wait_for_attempt(services: &alphabank::startup::Services) -> i64 {
    use sqlx::Row;
    let deadline = std::time::Instant::now() + crate::mailbox::MAIL_WAIT;
    loop {
        // Tried, and waiting for its retry rather than claimed right now (a claim holds the
        // message for MAIL_LEASE, longer than this test waits).
        let soon = alphabank::now_millis() + 60_000;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(attempts), 0) AS a FROM outbox WHERE next_attempt_at < $1",
        )
        .bind(soon)
        .fetch_one(services.db.pool())
        .await
        .unwrap();
        let attempts: i64 = row.get("a");
        if attempts >= 1 || std::time::Instant::now() > deadline {
            return attempts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
