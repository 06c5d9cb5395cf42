//! Accounts in a real browser: sign-up with the built-in captcha solved by the page's own
//! script, authenticator enrolment, recovery codes, logging out with the header button, and
//! logging in again with a fresh code and with a recovery code.

use crate::browser::{Browser, DESKTOP, POW_WORKING_LABEL};
use crate::flows::{assert_has_captcha, balance_minor, log_in, log_out, sign_up_and_enrol};
use crate::helpers::spawn_app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_enrol_log_out_and_log_in_again() {
    let app = spawn_app_with(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "10")]).await;
    let mut b = Browser::launch(&app.base, &app.dir.path().join("tls-cert.pem"), 1, DESKTOP).await;

    b.open("/").await;
    b.shot("landing").await;
    b.click("main a[href=\"/signup\"]").await;
    b.wait_for_location("/signup").await;
    assert_has_captcha(&b, "form[action=\"/signup\"]").await;
    let ingrid = sign_up_and_enrol(&mut b, "ingrid").await;
    assert_eq!(balance_minor(&b).await, 0);
    assert!(
        b.body_text().await.contains("ingrid"),
        "the header names the customer"
    );
    b.shot("home").await;

    log_out(&mut b).await;
    b.shot("logged-out").await;
    b.click("main a[href=\"/login\"]").await;
    b.wait_for_location("/login").await;
    assert_has_captcha(&b, "form[action=\"/login\"]").await;
    let code = ingrid.authenticator.next_code().await;
    log_in(&mut b, &ingrid.email, &ingrid.password, &code, "login").await;
    assert_eq!(balance_minor(&b).await, 0);
    b.shot("home-after-login").await;

    // Lost phone: a recovery code instead of the six-digit code.
    log_out(&mut b).await;
    b.click("main a[href=\"/login\"]").await;
    log_in(
        &mut b,
        &ingrid.email.to_uppercase(),
        &ingrid.password,
        &ingrid.recovery_codes[3],
        "login-recovery-code",
    )
    .await;
    b.shot("home-after-recovery-code").await;
    b.finish().await;
}

/// While the page's Web Worker searches for the proof of work, the submit button is held:
/// disabled and labelled "Checking your browser…", with no nonce yet. At 32 bits the search
/// cannot finish during the test, so this state is seen without racing the worker; the other
/// tests (10 bits) see it finish, check the nonce's work, and have their forms accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captcha_holds_the_submit_button_while_the_work_runs() {
    let app = spawn_app_with(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "32")]).await;
    let mut b = Browser::launch(&app.base, &app.dir.path().join("tls-cert.pem"), 15, DESKTOP).await;
    b.open("/signup").await;
    let form = "form[action=\"/signup\"]";
    assert_eq!(
        b.attr(
            &format!("{form} input[name=\"pow_challenge\"]"),
            "data-bits"
        )
        .await
        .as_deref(),
        Some("32")
    );
    b.type_into("#username", "solveig").await;
    b.type_into("#email", "solveig@example.no").await;
    let button = b.wait_for(&format!("{form} button[type=\"submit\"]")).await;
    let label = button.text().await.unwrap();
    let enabled = button.is_enabled().await.unwrap();
    let nonce = b
        .wait_for(&format!("{form} input[name=\"pow_nonce\"]"))
        .await
        .value()
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        !enabled && label == POW_WORKING_LABEL && nonce.is_empty(),
        "while the work runs the button is disabled and says {POW_WORKING_LABEL:?} \
         (enabled: {enabled}, label {label:?}, nonce {nonce:?})"
    );
    b.shot("signup-captcha-working").await;
    assert_eq!(b.location().await, "/signup");
    b.finish().await;
}
