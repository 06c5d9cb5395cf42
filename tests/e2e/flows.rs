//! The steps a customer takes in the browser — sign up, enrol the authenticator, log in, log
//! out — shared by the end-to-end tests. Each waits for the page it leads to and screenshots it.

use crate::browser::{Authenticator, Browser};

/// A customer who signed up through the browser.
pub struct Person {
    pub username: String,
    pub email: String,
    pub password: String,
    pub authenticator: Authenticator,
    pub recovery_codes: Vec<String>,
}

/// Fills in and sends the sign-up form (the browser must be on `/signup`), then enrols the
/// authenticator on `/2fa/setup`, reads the recovery codes and continues to the home page.
pub async fn sign_up_and_enrol(b: &mut Browser, username: &str) -> Person {
    let email = format!("{username}@example.no");
    let password = format!(
        "harbour kettle drifts {}",
        hex::encode(alphabank::crypto::random_bytes::<4>())
    );
    b.wait_for_location("/signup").await;
    b.type_into("#username", username).await;
    b.type_into("#email", &email).await;
    b.type_into("#password", &password).await;
    b.type_into("#password_confirm", &password).await;
    b.shot("signup").await;
    b.submit("form[action=\"/signup\"]").await;

    b.wait_for_location("/2fa/setup").await;
    let secret = b.text("#totp-secret").await;
    let authenticator = Authenticator::from_base32(&secret);
    b.shot("2fa-setup").await;
    b.type_into("#otp", &authenticator.next_code().await).await;
    b.submit("form[action=\"/2fa/setup\"]").await;

    b.wait_for_location("/2fa/recovery").await;
    let mut recovery_codes = Vec::new();
    for code in b.all(".recovery-code").await {
        recovery_codes.push(code.text().await.expect("code text"));
    }
    assert_eq!(recovery_codes.len(), 10, "ten recovery codes are shown");
    assert!(recovery_codes.iter().all(|c| !c.trim().is_empty()));
    b.shot("recovery-codes").await;
    b.click("main a[href=\"/\"]").await;
    b.wait_for_location("/").await;
    b.wait_for("#balance").await;
    Person {
        username: username.to_string(),
        email,
        password,
        authenticator,
        recovery_codes,
    }
}

/// The balance shown on the current page, in øre.
pub async fn balance_minor(b: &Browser) -> i64 {
    b.attr("#balance", "data-minor")
        .await
        .expect("#balance carries data-minor")
        .parse()
        .expect("data-minor is an integer")
}

/// Logs out with the button in the page header and waits for the visitor's landing page.
pub async fn log_out(b: &mut Browser) {
    b.click("header form[action=\"/logout\"] button").await;
    b.wait_for_location("/").await;
    b.wait_for("main a[href=\"/login\"]").await;
    assert!(
        b.all("#balance").await.is_empty(),
        "no balance after logging out"
    );
    assert!(
        b.all("header form[action=\"/logout\"]").await.is_empty(),
        "no logout button after logging out"
    );
}

/// Fills in and sends the login form (the browser must be on `/login`) with `otp` (a six-digit
/// code or a recovery code), and waits for the home page.
pub async fn log_in(b: &mut Browser, email: &str, password: &str, otp: &str, shot: &str) {
    b.wait_for_location("/login").await;
    b.type_into("#email", email).await;
    b.type_into("#password", password).await;
    b.type_into("#otp", otp).await;
    b.shot(shot).await;
    b.submit("form[action=\"/login\"]").await;
    b.wait_for_location("/").await;
    b.wait_for("#balance").await;
}

/// The form carries the built-in captcha (so the page's script had to solve it before the form
/// was accepted).
pub async fn assert_has_captcha(b: &Browser, form: &str) {
    assert_eq!(
        b.all(&format!("{form} input[name=\"pow_challenge\"][data-bits]"))
            .await
            .len(),
        1,
        "{form} carries a pow_challenge"
    );
}
