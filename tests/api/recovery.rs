//! Account recovery (CONTRACT §9) as a customer who forgot the password uses it, and as an
//! attacker tries it: the emailed code and a second factor are both needed, no answer says
//! whether an address has an account, wrong parts are counted, and every session ends.

use crate::helpers::{Customer, TestApp, input_value, spawn_app};
use crate::mailbox::{Mail, read_messages, wait_for};

const NEW_PASSWORD: &str = "a lighthouse keeper sings 42";

fn outbox(app: &TestApp) -> Vec<Mail> {
    read_messages(&app.dir.path().join("outbox"))
}

fn recovery_mails(app: &TestApp, email: &str) -> Vec<Mail> {
    outbox(app)
        .into_iter()
        .filter(|m| m.to().contains(email) && m.event() == "recovery-code")
        .collect()
}

/// A visitor's form: GET `page` for its CSRF token, then POST `fields` to `action`.
async fn visitor_post(
    app: &TestApp,
    client: &reqwest::Client,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let html = client
        .get(format!("{}{page}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input_value(&html, "csrf_token").expect("csrf");
    let mut all = vec![("csrf_token", csrf.as_str())];
    all.extend_from_slice(fields);
    client
        .post(format!("{}{action}", app.base))
        .form(&all)
        .send()
        .await
        .unwrap()
}

async fn ask_code(app: &TestApp, client: &reqwest::Client, email: &str) -> (u16, String, String) {
    let r = visitor_post(app, client, "/recover", "/recover", &[("email", email)]).await;
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

/// The newest emailed code for `email`, once it has arrived.
async fn emailed_code(app: &TestApp, email: &str, nth: usize) -> String {
    let mails = wait_for(|| recovery_mails(app, email), |m| m.len() >= nth).await;
    assert!(mails.len() >= nth, "{} recovery mails", mails.len());
    let code = mails[nth - 1]
        .body
        .lines()
        .find_map(|l| l.strip_prefix("Code: "))
        .expect("a `Code: ` line")
        .to_string();
    assert!(
        code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    code
}

async fn reset(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    code: &str,
    otp: &str,
) -> reqwest::Response {
    visitor_post(
        app,
        client,
        "/recover/reset",
        "/recover/reset",
        &[
            ("email", email),
            ("code", code),
            ("otp", otp),
            ("new_password", NEW_PASSWORD),
            ("new_password_confirm", NEW_PASSWORD),
        ],
    )
    .await
}

async fn login_status(app: &TestApp, who: &Customer, password: &str, otp: &str) -> u16 {
    let browser = app.new_client();
    visitor_post(
        app,
        &browser,
        "/login",
        "/login",
        &[("email", &who.email), ("password", password), ("otp", otp)],
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn a_forgotten_password_is_replaced_with_the_emailed_code_and_the_authenticator() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let stranger = app.new_client();
    let (status, location, _) = ask_code(&app, &stranger, &kari.email).await;
    assert_eq!((status, location.as_str()), (303, "/recover/reset"));
    let code = emailed_code(&app, &kari.email, 1).await;
    let mail = &recovery_mails(&app, &kari.email)[0];
    assert!(!mail.body.contains(&kari.password));

    let otp = kari.next_code().await;
    let done = reset(&app, &stranger, &kari.email, &code, &otp).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/login?notice=password-reset");
    let login = stranger
        .get(format!("{}/login?notice=password-reset", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains("id=\"login-notice\""), "{login}");
    // Every session ended; the old password no longer logs in, the new one does.
    assert_eq!(kari.get("/settings").await.status(), 303);
    let old = login_status(&app, &kari, &kari.password, &kari.next_code().await).await;
    assert_eq!(old, 401);
    let new = login_status(&app, &kari, NEW_PASSWORD, &kari.next_code().await).await;
    assert_eq!(new, 303);
    let changed = wait_for(
        || outbox(&app),
        |m| {
            m.iter()
                .any(|m| m.to().contains(&kari.email) && m.event() == "password-changed")
        },
    )
    .await;
    assert!(changed.iter().any(|m| m.event() == "password-changed"));
    // The code was spent.
    let again = reset(&app, &stranger, &kari.email, &code, &kari.next_code().await).await;
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_answer_and_no_mail() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let client = app.new_client();
    let (known_status, known_location, _) = ask_code(&app, &client, &kari.email).await;
    let (unknown_status, unknown_location, _) = ask_code(&app, &client, "nobody@example.no").await;
    assert_eq!(
        (known_status, known_location.as_str()),
        (303, "/recover/reset")
    );
    assert_eq!(
        (unknown_status, unknown_location),
        (known_status, known_location)
    );
    emailed_code(&app, &kari.email, 1).await;
    assert!(
        outbox(&app)
            .iter()
            .all(|m| !m.to().contains("nobody@example.no"))
    );
    // A reset for the unknown address answers exactly as a wrong code for a known one.
    let unknown = reset(&app, &client, "nobody@example.no", "12345678", "123456").await;
    let known = reset(&app, &client, &kari.email, "00000000", "123456").await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(known.status(), 401);
    let message = |page: String| {
        let at = page.find("id=\"reset-error\"").expect("an error");
        page[at..at + page[at..].find("</p>").unwrap()].to_string()
    };
    assert_eq!(
        message(unknown.text().await.unwrap()),
        message(known.text().await.unwrap())
    );
}

#[tokio::test]
async fn the_code_alone_or_the_authenticator_alone_changes_nothing_and_five_tries_burn_the_code() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let client = app.new_client();
    ask_code(&app, &client, &kari.email).await;
    let code = emailed_code(&app, &kari.email, 1).await;
    // The right code with a wrong second factor, and a wrong code with the right factor.
    assert_eq!(
        reset(&app, &client, &kari.email, &code, "000000")
            .await
            .status(),
        401
    );
    let otp = kari.next_code().await;
    assert_eq!(
        reset(&app, &client, &kari.email, "00000000", &otp)
            .await
            .status(),
        401
    );
    // Three more wrong codes: five tries in all.
    for _ in 0..3 {
        assert_eq!(
            reset(&app, &client, &kari.email, "11111111", "000000")
                .await
                .status(),
            401
        );
    }
    let events = app.services.audit.tail(200).await.unwrap();
    let refused = events
        .iter()
        .filter(|e| e.event == "recovery_refused")
        .count();
    assert_eq!(refused, 5, "each wrong part audited");
    assert!(
        events.iter().any(|e| e.event == "account_locked"),
        "counted like log-ins"
    );
    // With the account's lock lifted, only the code's own tries decide: it is burnt.
    let user = kari.user_id(&app.services).await;
    crate::helpers::exec(
        &app.services,
        format!("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE id = {user}"),
    )
    .await;
    let otp = kari.next_code().await;
    assert_eq!(
        reset(&app, &client, &kari.email, &code, &otp)
            .await
            .status(),
        401,
        "burnt"
    );
    // Nothing changed: her session lives and her password still logs in.
    assert_eq!(
        kari.get("/settings").await.status(),
        200,
        "her session lives"
    );
    let old = login_status(&app, &kari, &kari.password, &kari.next_code().await).await;
    assert_eq!(old, 303);
}

#[tokio::test]
async fn a_recovery_code_serves_as_the_second_factor() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let client = app.new_client();
    ask_code(&app, &client, &kari.email).await;
    let code = emailed_code(&app, &kari.email, 1).await;
    let done = reset(&app, &client, &kari.email, &code, &kari.recovery_codes[3]).await;
    assert_eq!(done.status(), 303);
    let new = login_status(&app, &kari, NEW_PASSWORD, &kari.next_code().await).await;
    assert_eq!(new, 303);
}

#[tokio::test]
async fn at_most_three_codes_an_hour_reach_one_address() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let client = app.new_client();
    for _ in 0..5 {
        let (status, location, _) = ask_code(&app, &client, &kari.email).await;
        assert_eq!(
            (status, location.as_str()),
            (303, "/recover/reset"),
            "same answer"
        );
    }
    emailed_code(&app, &kari.email, 3).await;
    // Nothing more on its way: the outbox is empty, and three messages arrived.
    let deadline = std::time::Instant::now() + crate::mailbox::MAIL_WAIT;
    while alphabank::store::outbox::pending(&app.services.db)
        .await
        .unwrap()
        .0
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(recovery_mails(&app, &kari.email).len(), 3);
}
