//! Passkeys in a real browser (CONTRACT §7), with WebDriver's virtual authenticator (CTAP2,
//! internal transport, resident keys, user verification): add a passkey on the settings page,
//! log out, log in with it alone, and send money signed with it on the review page.

use thirtyfour::common::command::FormatRequestData;
use thirtyfour::{RequestData, SessionId};

use crate::browser::{Browser, DESKTOP};
use crate::flows::{balance_minor, log_out, sign_up_and_enrol};
use crate::helpers::spawn_app_with;

/// `POST /session/{id}/webauthn/authenticator` (WebAuthn Level 2, §11.3): a virtual
/// authenticator that holds discoverable credentials and verifies its user.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl FormatRequestData for AddVirtualAuthenticator {
    fn format_request(&self, session_id: &SessionId) -> RequestData {
        RequestData::new(
            reqwest::Method::POST,
            format!("session/{session_id}/webauthn/authenticator"),
        )
        .add_body(serde_json::json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_passkey_log_in_with_it_and_sign_a_payment() {
    let app = spawn_app_with(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "10")]).await;
    let mut b = Browser::launch(&app.base, &app.dir.path().join("tls-cert.pem"), 60, DESKTOP).await;
    b.driver()
        .cmd(AddVirtualAuthenticator)
        .await
        .expect("a virtual authenticator");

    b.open("/signup").await;
    let tor = sign_up_and_enrol(&mut b, "tor").await;
    log_out(&mut b).await;
    b.open("/signup").await;
    let siri = sign_up_and_enrol(&mut b, "siri").await;

    // Cash first, so that there is something to send.
    b.open("/atm").await;
    b.type_into("#amount", "300").await;
    b.type_into("#username", &siri.username).await;
    b.type_into("#card_name", "Siri Visa").await;
    b.type_into("#otp", &siri.authenticator.next_code().await)
        .await;
    b.submit("form[action=\"/atm\"]").await;
    b.wait_to_leave("/atm").await;

    // Add a passkey: a name and a code, then the browser's own prompt (the virtual one).
    b.open("/settings").await;
    assert!(b.all(".passkey").await.is_empty());
    b.type_into("#passkey-name", "Laptop").await;
    b.type_into("#passkey-otp", &siri.authenticator.next_code().await)
        .await;
    b.shot("passkey-add").await;
    b.submit("#passkey-add").await;
    b.wait_for(".passkey").await;
    b.wait_for_location("/settings").await;
    assert!(b.text(".passkey").await.contains("Laptop"));
    assert!(b.attr(".passkey", "data-passkey-id").await.is_some());
    b.shot("passkey-added").await;

    // Log out, then in with the passkey alone: no email, password or code typed.
    log_out(&mut b).await;
    b.open("/login").await;
    b.shot("login-with-passkey").await;
    b.submit("#passkey-login").await;
    b.wait_for_location("/").await;
    b.wait_for("#balance").await;
    assert_eq!(balance_minor(&b).await, 30_000);
    b.shot("passkey-home").await;

    // Send 75 kr to tor, signed with the passkey on the review page.
    b.open("/transfer").await;
    b.type_into("#amount", "75").await;
    b.type_into("#from_username", &siri.username).await;
    b.type_into("#to_username", &tor.username).await;
    b.type_into("#message", "lunsj").await;
    b.submit("form[action=\"/transfer\"]").await;
    b.wait_for("#passkey-sign").await;
    let nonce = b.attr("#passkey-sign", "data-nonce").await.expect("nonce");
    assert_eq!(nonce.len(), 32);
    b.shot("passkey-review").await;
    b.click("#passkey-sign button[type=\"submit\"]").await;
    b.wait_to_leave("/transfer").await;
    b.shot("passkey-receipt").await;
    b.open("/").await;
    assert_eq!(balance_minor(&b).await, 30_000 - 7_500);
    let transfers: Vec<_> = app
        .services
        .audit
        .tail(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "transfer")
        .collect();
    assert_eq!(transfers.len(), 1);
    assert!(
        transfers[0].detail["signed"]["digest"].is_string(),
        "signed"
    );
    b.finish().await;
}
