//! Money in a real browser, with the built-in captcha on every form: a cash deposit at the ATM,
//! a transfer to another customer carrying a hostile message (reviewed, then confirmed with a
//! code), and the receiver's home page
//! showing that message as plain text — no alert dialog, no injected element.

use crate::browser::{Browser, DESKTOP};
use crate::flows::{assert_has_captcha, balance_minor, log_in, log_out, sign_up_and_enrol};
use crate::helpers::spawn_app_with;

const HOSTILE: &str = "<script>alert(1)</script>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_then_transfer_with_a_hostile_message_shown_escaped() {
    let app = spawn_app_with(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "10")]).await;
    let mut b = Browser::launch(&app.base, &app.dir.path().join("tls-cert.pem"), 20, DESKTOP).await;

    // The receiver opens an account first, in the same browser.
    b.open("/signup").await;
    let bjorn = sign_up_and_enrol(&mut b, "bjorn").await;
    log_out(&mut b).await;

    b.open("/signup").await;
    let astrid = sign_up_and_enrol(&mut b, "astrid").await;

    // ATM: 500 kr in cash.
    b.click("header a[href=\"/atm\"]").await;
    b.wait_for_location("/atm").await;
    assert_has_captcha(&b, "form[action=\"/atm\"]").await;
    b.type_into("#amount", "500").await;
    b.type_into("#username", &astrid.username).await;
    b.type_into("#card_name", "Astrid Visa").await;
    b.type_into("#otp", &astrid.authenticator.next_code().await)
        .await;
    b.shot("atm").await;
    b.submit("form[action=\"/atm\"]").await;
    b.wait_to_leave("/atm").await;
    b.shot("atm-receipt").await;
    b.open("/").await;
    assert_eq!(balance_minor(&b).await, 50_000, "500 kr deposited");

    // Transfer 123,45 kr to bjorn (the receiver's name in another case) with a hostile message.
    b.click("header a[href=\"/transfer\"]").await;
    b.wait_for_location("/transfer").await;
    assert_has_captcha(&b, "form[action=\"/transfer\"]").await;
    b.type_into("#amount", "123,45").await;
    b.type_into("#from_username", &astrid.username).await;
    b.type_into("#to_username", &bjorn.username.to_uppercase())
        .await;
    b.type_into("#message", HOSTILE).await;
    b.shot("transfer").await;
    b.submit("form[action=\"/transfer\"]").await;
    // The review page: what will be sent, and the code asked for only now.
    let review = b.wait_for("#review").await;
    assert_eq!(
        review.attr("data-amount-minor").await.unwrap().as_deref(),
        Some("12345")
    );
    let receiver = review.attr("data-to-username").await.unwrap();
    assert_eq!(
        receiver.as_deref(),
        Some(bjorn.username.to_lowercase().as_str())
    );
    assert!(
        review.text().await.unwrap().contains(HOSTILE),
        "the message as text"
    );
    b.assert_no_alert().await;
    b.type_into("#otp", &astrid.authenticator.next_code().await)
        .await;
    b.shot("transfer-review").await;
    b.submit("form[action=\"/transfer/confirm\"]").await;
    b.wait_to_leave("/transfer").await;
    b.assert_no_alert().await;
    b.shot("transfer-receipt").await;
    b.open("/").await;
    assert_eq!(balance_minor(&b).await, 50_000 - 12_345);
    b.shot("sender-home").await;

    // The receiver sees the message as text.
    log_out(&mut b).await;
    b.open("/login").await;
    let code = bjorn.authenticator.next_code().await;
    log_in(
        &mut b,
        &bjorn.email,
        &bjorn.password,
        &code,
        "receiver-login",
    )
    .await;
    b.assert_no_alert().await;
    assert_eq!(balance_minor(&b).await, 12_345);
    let rows = b.all(".txn").await;
    let mut shown = None;
    for row in &rows {
        if row.attr("data-minor").await.unwrap().as_deref() == Some("12345") {
            shown = Some(row.text().await.unwrap());
        }
    }
    let shown = shown.expect("the home page lists the incoming transfer (data-minor 12345)");
    assert!(
        shown.contains(HOSTILE),
        "the message is shown literally: {shown:?}"
    );
    assert!(
        b.all(".txn script, .txn img, .txn iframe").await.is_empty(),
        "no element was injected into the history"
    );
    assert!(
        b.all("script:not([src])").await.is_empty(),
        "no inline script on the page"
    );
    b.shot("receiver-home").await;
    b.assert_no_alert().await;
    b.finish().await;
}
