//! A new authenticator and new recovery codes (CONTRACT §9), as a customer who lost the phone
//! uses them: log in with a recovery code, see how many are left, set up a new authenticator
//! (the old one working until the new one is confirmed), make new recovery codes.

use alphabank::auth::totp::TotpSecret;

use crate::helpers::{Customer, TestApp, element_text, spawn_app, texts_of_class};
use crate::mailbox::{read_messages, wait_for};

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

/// Logs `who` in (a fresh browser of the same person) with `otp` as the second factor.
async fn login_with(app: &TestApp, who: &Customer, otp: &str) -> (Customer, u16) {
    let browser = who.same_person(
        alphabank::auth::totp::TotpSecret::from_bytes(who.secret.as_bytes()),
        app.new_client(),
    );
    let r = browser
        .submit(
            "/login",
            "/login",
            &[
                ("email", &who.email),
                ("password", &who.password),
                ("otp", otp),
            ],
        )
        .await;
    let status = r.status().as_u16();
    (browser, status)
}

fn secret_of(page: &str) -> TotpSecret {
    let key = element_text(page, "totp-secret").expect("the key is shown");
    TotpSecret::from_bytes(&data_encoding::BASE32_NOPAD.decode(key.as_bytes()).unwrap())
}

async fn outbox_events(app: &TestApp, email: &str, event: &str) -> usize {
    let dir = app.dir.path().join("outbox");
    let mails = wait_for(
        || read_messages(&dir),
        |m| {
            m.iter()
                .any(|m| m.to().contains(email) && m.event() == event)
        },
    )
    .await;
    mails
        .iter()
        .filter(|m| m.to().contains(email) && m.event() == event)
        .count()
}

#[tokio::test]
async fn a_customer_who_lost_the_phone_sets_up_a_new_authenticator_after_a_recovery_code_log_in() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let (phone_lost, status) = login_with(&app, &kari, &kari.recovery_codes[0]).await;
    assert_eq!(status, 303);
    let home = text(phone_lost.get("/").await).await;
    assert_eq!(
        element_text(&home, "recovery-codes-left").as_deref(),
        Some("9"),
        "{home}"
    );
    assert!(home.contains("href=\"/settings/authenticator\""), "{home}");
    let r = phone_lost.get("/settings/authenticator").await;
    assert_eq!(r.headers()["location"], "/settings#authenticator");

    // A wrong password is refused, in the form's own section, and changes nothing.
    let wrong = phone_lost
        .submit(
            "/settings",
            "/settings/authenticator",
            &[
                ("current_password", "not my password at all"),
                ("otp", &kari.recovery_codes[1]),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(element_text(&text(wrong).await, "authenticator-error").is_some());
    assert_eq!(
        phone_lost.get("/2fa/setup").await.headers()["location"],
        "/"
    );

    let asked = phone_lost
        .submit(
            "/settings",
            "/settings/authenticator",
            &[
                ("current_password", &kari.password),
                ("otp", &kari.recovery_codes[2]),
            ],
        )
        .await;
    assert_eq!(asked.status(), 303);
    assert_eq!(asked.headers()["location"], "/2fa/setup");
    let setup = text(phone_lost.get("/2fa/setup").await).await;
    assert!(setup.contains("id=\"replacing\""), "{setup}");
    let new_secret = secret_of(&setup);
    assert_ne!(new_secret.as_bytes(), kari.secret.as_bytes());

    // Until it is confirmed, the old authenticator still logs in.
    let (_, old_still_works) = login_with(&app, &kari, &kari.next_code().await).await;
    assert_eq!(old_still_works, 303);

    let wrong_code = phone_lost
        .submit("/2fa/setup", "/2fa/setup", &[("otp", "000000")])
        .await;
    assert_eq!(wrong_code.status(), 422);
    // The next step's code: the current one may be the step the old authenticator just spent.
    let step = alphabank::now_millis() / 30_000 + 1;
    let next = format!("{:06}", new_secret.code_at_step(step));
    let confirmed = phone_lost
        .submit("/2fa/setup", "/2fa/setup", &[("otp", &next)])
        .await;
    assert_eq!(confirmed.status(), 303);
    assert_eq!(confirmed.headers()["location"], "/settings");
    let settings = text(phone_lost.get("/settings").await).await;
    assert!(
        settings.contains("Your new authenticator is set up"),
        "{settings}"
    );
    // The notice is gone, and nothing more waits at /2fa/setup.
    let home = text(phone_lost.get("/").await).await;
    assert!(element_text(&home, "recovery-codes-left").is_none());
    assert_eq!(
        phone_lost.get("/2fa/setup").await.headers()["location"],
        "/"
    );

    // At a step no code was spent for, the old authenticator no longer logs in; the new one does.
    kari.last_step.set(step);
    let old_code = kari.next_code().await;
    let fresh = kari.last_step.get();
    let (_, old) = login_with(&app, &kari, &old_code).await;
    assert_eq!(old, 401);
    let new_code = format!("{:06}", new_secret.code_at_step(fresh));
    let (_, new) = login_with(&app, &kari, &new_code).await;
    assert_eq!(new, 303);
    assert_eq!(
        outbox_events(&app, &kari.email, "authenticator-replaced").await,
        1
    );
}

#[tokio::test]
async fn new_recovery_codes_are_shown_once_and_the_old_ones_stop_working() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let wrong = kari
        .submit(
            "/settings",
            "/settings/recovery-codes",
            &[("otp", "000000")],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(element_text(&text(wrong).await, "recovery-error").is_some());

    let code = kari.next_code().await;
    let made = kari
        .submit("/settings", "/settings/recovery-codes", &[("otp", &code)])
        .await;
    assert_eq!(made.status(), 303);
    assert_eq!(made.headers()["location"], "/2fa/recovery");
    let shown = text(kari.get("/2fa/recovery").await).await;
    let codes = texts_of_class(&shown, "recovery-code");
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| !kari.recovery_codes.contains(c)));
    // Shown once.
    assert_eq!(kari.get("/2fa/recovery").await.status(), 303);

    let (_, old) = login_with(&app, &kari, &kari.recovery_codes[0]).await;
    assert_eq!(old, 401, "an old code no longer works");
    let (_, new) = login_with(&app, &kari, &codes[0]).await;
    assert_eq!(new, 303, "a new code does");
    assert_eq!(
        outbox_events(&app, &kari.email, "recovery-codes-replaced").await,
        1
    );
}

#[tokio::test]
async fn five_wrong_tries_at_a_new_authenticator_end_the_session() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let mut last = String::new();
    for _ in 0..alphabank::auth::FAILURES_MAX {
        let r = kari
            .submit(
                "/settings",
                "/settings/authenticator",
                &[
                    ("current_password", "not my password at all"),
                    ("otp", "000000"),
                ],
            )
            .await;
        assert_eq!(r.status(), 401);
        last = text(r).await;
    }
    assert!(last.contains("session was ended"), "{last}");
    assert_eq!(
        kari.get("/settings").await.status(),
        303,
        "the session has ended"
    );
}
