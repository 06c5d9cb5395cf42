//! Passkeys (CONTRACT §7) with a software authenticator: adding, listing, removing, logging in
//! without a password, and signing a payment over its canonical text; every refusal an attacker
//! could try (a signature moved to another payment, a removed or cloned passkey, a foreign
//! origin or RP id, a replayed challenge, bad input).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Customer, TestApp, confirm_fields, input_value, spawn_app_with};
use crate::soft_authenticator::{SoftAuthenticator, b64};

async fn app() -> TestApp {
    spawn_app_with(&[("ALPHABANK_RATE_LIMIT_PER_MIN", "10000")]).await
}

/// The value of `attr` on the element with `id="ID"`, unescaped.
fn attr(html: &str, id: &str, attr: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..at + html[at..].find('>')?];
    let marker = format!("{attr}=\"");
    let v = tag.find(&marker)? + marker.len();
    let end = tag[v..].find('"')?;
    Some(
        tag[v..v + end]
            .replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&#60;", "<")
            .replace("&#62;", ">")
            .replace("&#38;", "&")
            .replace("&amp;", "&"),
    )
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_str(&response.text().await.unwrap()).expect("a JSON answer")
}

async fn settings_csrf(c: &Customer) -> String {
    let page = c.get("/settings").await.text().await.unwrap();
    input_value(&page, "csrf_token").expect("csrf on settings")
}

async fn creation_options(c: &Customer, otp: &str) -> reqwest::Response {
    let csrf = settings_csrf(c).await;
    c.post(
        "/settings/passkeys/options",
        &[("csrf_token", &csrf), ("otp", otp)],
    )
    .await
}

/// Adds a passkey through the settings endpoints: the authenticator and the final answer.
async fn add_passkey_answer(
    app: &TestApp,
    c: &Customer,
    name: &str,
) -> (SoftAuthenticator, reqwest::Response) {
    let key = SoftAuthenticator::new(&app.base);
    let code = c.next_code().await;
    let options = creation_options(c, &code).await;
    assert_eq!(options.status(), 200);
    let options: Value = json_of(options).await;
    let credential = key.register(&options);
    let csrf = settings_csrf(c).await;
    let answer = c
        .post(
            "/settings/passkeys",
            &[
                ("csrf_token", &csrf),
                ("name", name),
                ("credential", &credential),
            ],
        )
        .await;
    (key, answer)
}

async fn add_passkey(app: &TestApp, c: &Customer, name: &str) -> SoftAuthenticator {
    let (key, answer) = add_passkey_answer(app, c, name).await;
    assert_eq!(answer.status(), 303, "passkey added");
    assert_eq!(answer.headers()["location"], "/settings");
    key
}

/// Logs in with `key` in a fresh browser: that browser and the answer.
async fn passkey_login(
    app: &TestApp,
    key: &SoftAuthenticator,
) -> (reqwest::Client, reqwest::Response) {
    let client = app.new_client();
    let page = client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input_value(&page, "csrf_token").unwrap();
    let options = client
        .post(format!("{}/login/passkey/options", app.base))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let options = json_of(options).await;
    let credential = key.assert(&options);
    let answer = client
        .post(format!("{}/login/passkey", app.base))
        .form(&[("csrf_token", csrf.as_str()), ("credential", &credential)])
        .send()
        .await
        .unwrap();
    (client, answer)
}

/// A review page's fields: csrf, confirmation, request options and nonce of `passkey-sign`.
struct SignablePayment {
    csrf: String,
    confirmation: String,
    options: Value,
    nonce: String,
}

fn signable(review_html: &str) -> SignablePayment {
    let (csrf, confirmation) = confirm_fields(review_html);
    let options = attr(review_html, "passkey-sign", "data-options").expect("passkey-sign options");
    SignablePayment {
        csrf,
        confirmation,
        options: serde_json::from_str(&options).unwrap(),
        nonce: attr(review_html, "passkey-sign", "data-nonce").expect("nonce"),
    }
}

async fn review_page(c: &Customer, to: &str, amount: &str, message: &str) -> String {
    let review = c.review(to, amount, message).await;
    assert_eq!(review.status(), 200);
    review.text().await.unwrap()
}

async fn confirm_signed(c: &Customer, p: &SignablePayment, assertion: &str) -> reqwest::Response {
    c.post(
        "/transfer/confirm",
        &[
            ("csrf_token", p.csrf.as_str()),
            ("confirmation", p.confirmation.as_str()),
            ("passkey_assertion", assertion),
        ],
    )
    .await
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

async fn passkey_rows(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM passkeys")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn a_passkey_is_added_listed_and_logs_in_without_a_password() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let code = kari.next_code().await;
    let options: Value = json_of(creation_options(&kari, &code).await).await;
    let rp_id = url::Url::parse(&app.base)
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    assert_eq!(options["rp"]["id"], rp_id.as_str());
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "required"
    );
    let algs: Vec<i64> = options["pubKeyCredParams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["alg"].as_i64().unwrap())
        .collect();
    assert_eq!(algs, vec![-7, -8], "ES256 and Ed25519");
    assert!(!options["user"]["id"].as_str().unwrap().contains("kari"));

    let key = add_passkey(&app, &kari, "Kari's phone").await;
    let settings = kari.get("/settings").await.text().await.unwrap();
    assert!(
        settings.contains("class=\"passkey\" data-passkey-id=\""),
        "{settings:.2000}"
    );
    assert!(settings.contains("Kari&#39;s phone"), "the name is listed");
    assert_eq!(events(&app, "passkey_added").await.len(), 1);
    // Sealed at rest: neither the name nor the credential id is in the database in clear.
    let (name_enc, cred_enc): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT name_enc, credential_enc FROM passkeys")
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&name_enc).contains("phone"));
    assert!(
        !cred_enc
            .windows(16)
            .any(|w| w == key.credential_id.as_slice())
    );

    let (browser, answer) = passkey_login(&app, &key).await;
    assert_eq!(answer.status(), 303, "logged in with the passkey alone");
    assert_eq!(answer.headers()["location"], "/");
    let home = browser
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("id=\"balance\""), "a customer's home");
    let logins = events(&app, "login_succeeded").await;
    assert!(
        logins.iter().any(|d| d["method"] == "passkey"),
        "{logins:?}"
    );
    let settings = kari.get("/settings").await.text().await.unwrap();
    assert!(!settings.contains("last used <span class=\"passkey-last-used\">never"));
}

#[tokio::test]
async fn a_signed_transfer_moves_money_and_records_digest_and_credential() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let _ola = app.customer("ola").await;
    assert_eq!(kari.deposit("500").await.status(), 303);
    let key = add_passkey(&app, &kari, "laptop").await;

    let html = review_page(&kari, "OLA", "120,50", "rent").await;
    let p = signable(&html);
    let key_field = input_value(&html, "idempotency_key");
    assert!(key_field.is_none(), "the review page carries no loose key");
    let allowed = p.options["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["id"], b64(&key.credential_id).as_str());
    assert_eq!(p.options["userVerification"], "required");
    // The challenge is the payment: SHA-256 of its canonical text (the key from the token).
    let challenge = crate::soft_authenticator::unb64(p.options["challenge"].as_str().unwrap());
    let reviewed = app
        .services
        .payments
        .open_confirmation(kari.user_id(&app.services).await, &p.confirmation)
        .unwrap();
    let text = format!(
        "alphabank-payment-v1\n12050\nola\nrent\n{}\n{}",
        reviewed.key.as_str(),
        p.nonce
    );
    assert_eq!(challenge, Sha256::digest(text.as_bytes()).to_vec());

    let before = kari.balance_minor().await;
    let answer = confirm_signed(&kari, &p, &key.assert(&p.options)).await;
    assert_eq!(answer.status(), 303, "{}", answer.text().await.unwrap());
    assert!(
        answer.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/receipts/")
    );
    assert_eq!(kari.balance_minor().await, before - 12050);
    let transfers = events(&app, "transfer").await;
    let signed = &transfers[0]["signed"];
    assert_eq!(signed["digest"], hex::encode(&challenge).as_str());
    assert_eq!(signed["credential"], b64(&key.credential_id).as_str());
    crate::helpers::verify(&app.services).await.unwrap();
}

#[tokio::test]
async fn a_signature_is_accepted_only_for_the_payment_it_signed() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let _ola = app.customer("ola").await;
    let _per = app.customer("per").await;
    assert_eq!(kari.deposit("900").await.status(), 303);
    let key = add_passkey(&app, &kari, "laptop").await;
    let first = signable(&review_page(&kari, "ola", "10", "").await);
    let assertion = key.assert(&first.options);
    let before = kari.balance_minor().await;
    for (to, amount) in [("ola", "800"), ("per", "10")] {
        let other = signable(&review_page(&kari, to, amount, "").await);
        let refused = confirm_signed(&kari, &other, &assertion).await;
        assert_eq!(
            refused.status(),
            401,
            "signature for 10 kr to ola on {amount} kr to {to}"
        );
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("passkey signature was not accepted")
        );
    }
    assert_eq!(kari.balance_minor().await, before, "nothing moved");
    // The signature still confirms its own payment, once.
    let answer = confirm_signed(&kari, &first, &assertion).await;
    assert_eq!(answer.status(), 303);
    let again = confirm_signed(&kari, &first, &key.assert(&first.options)).await;
    assert_eq!(again.status(), 303, "the same key answers its receipt");
    assert_eq!(again.headers()["location"], answer.headers()["location"]);
    assert_eq!(kari.balance_minor().await, before - 1000);
    let refused = events(&app, "money_movement_refused").await;
    assert_eq!(
        refused
            .iter()
            .filter(|d| d["reason"] == "wrong_passkey")
            .count(),
        2
    );
}

#[tokio::test]
async fn another_customers_passkey_cannot_sign_or_be_removed() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let ola = app.customer("ola").await;
    assert_eq!(kari.deposit("100").await.status(), 303);
    let _kari_key = add_passkey(&app, &kari, "kari").await;
    let ola_key = add_passkey(&app, &ola, "ola").await;
    let p = signable(&review_page(&kari, "ola", "10", "").await);
    let refused = confirm_signed(&kari, &p, &ola_key.assert(&p.options)).await;
    assert_eq!(refused.status(), 401);
    let ola_settings = ola.get("/settings").await.text().await.unwrap();
    let ola_id = attr_passkey_id(&ola_settings);
    let csrf = settings_csrf(&kari).await;
    let code = kari.next_code().await;
    let r = kari
        .post(
            "/settings/passkeys/remove",
            &[
                ("csrf_token", &csrf),
                ("passkey_id", &ola_id),
                ("otp", &code),
            ],
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(passkey_rows(&app).await, 2);
}

fn attr_passkey_id(settings: &str) -> String {
    let at = settings.find("data-passkey-id=\"").expect("a passkey") + 17;
    settings[at..at + settings[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn a_removed_passkey_no_longer_logs_in_or_signs() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let _ola = app.customer("ola").await;
    assert_eq!(kari.deposit("100").await.status(), 303);
    let key = add_passkey(&app, &kari, "old phone").await;
    let _other = add_passkey(&app, &kari, "new phone").await;
    let settings = kari.get("/settings").await.text().await.unwrap();
    let id = attr_passkey_id(&settings);
    let csrf = settings_csrf(&kari).await;
    let wrong = kari
        .post(
            "/settings/passkeys/remove",
            &[
                ("csrf_token", &csrf),
                ("passkey_id", &id),
                ("otp", "000000"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 401, "a code is required");
    assert_eq!(passkey_rows(&app).await, 2);
    let code = kari.next_code().await;
    let removed = kari
        .post(
            "/settings/passkeys/remove",
            &[("csrf_token", &csrf), ("passkey_id", &id), ("otp", &code)],
        )
        .await;
    assert_eq!(removed.status(), 303);
    assert_eq!(passkey_rows(&app).await, 1);
    assert_eq!(events(&app, "passkey_removed").await.len(), 1);
    let (_, login) = passkey_login(&app, &key).await;
    assert_eq!(login.status(), 401);
    let p = signable(&review_page(&kari, "ola", "10", "").await);
    let refused = confirm_signed(&kari, &p, &key.assert(&p.options)).await;
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_cloned_authenticator_is_refused_and_audited() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let key = add_passkey(&app, &kari, "phone").await;
    let clone = key.cloned();
    for _ in 0..3 {
        let (_, ok) = passkey_login(&app, &key).await;
        assert_eq!(ok.status(), 303);
    }
    // The clone's counter is behind the original's.
    let (_, refused) = passkey_login(&app, &clone).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(events(&app, "passkey_clone_suspected").await.len(), 1);
}

#[tokio::test]
async fn a_login_challenge_is_single_use_and_bound_to_its_browser() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let key = add_passkey(&app, &kari, "phone").await;
    let browser = app.new_client();
    let page = browser
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input_value(&page, "csrf_token").unwrap();
    let options = browser
        .post(format!("{}/login/passkey/options", app.base))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let options = json_of(options).await;
    assert_eq!(options["allowCredentials"].as_array().unwrap().len(), 0);
    let credential = key.assert(&options);
    // Another browser posting it (its own CSRF token) is refused.
    let other = app.new_client();
    let other_page = other
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let other_csrf = input_value(&other_page, "csrf_token").unwrap();
    let stolen = other
        .post(format!("{}/login/passkey", app.base))
        .form(&[
            ("csrf_token", other_csrf.as_str()),
            ("credential", &credential),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401);
    // A wrong signature on this challenge burns it: the right one after it is refused.
    let mut forged: Value = serde_json::from_str(&credential).unwrap();
    forged["response"]["signature"] = Value::String(b64(&[0x30, 0x06, 2, 1, 1, 2, 1, 1]));
    let post = |credential: String| {
        browser
            .post(format!("{}/login/passkey", app.base))
            .form(&[("csrf_token", csrf.clone()), ("credential", credential)])
            .send()
    };
    assert_eq!(post(forged.to_string()).await.unwrap().status(), 401);
    assert_eq!(
        post(credential.clone()).await.unwrap().status(),
        401,
        "used"
    );
    let failed = events(&app, "login_failed").await;
    assert!(
        failed.iter().any(|d| d["reason"] == "bad_challenge"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_foreign_origin_or_rp_id_is_refused_and_nothing_is_stored() {
    let app = app().await;
    let kari = app.customer("kari").await;
    for (origin, rp_id) in [
        ("https://evil.example", None),
        (app.base.as_str(), Some("evil.example")),
    ] {
        let mut key = SoftAuthenticator::new(origin);
        if let Some(rp_id) = rp_id {
            key.rp_id = rp_id.to_string();
        }
        let code = kari.next_code().await;
        let options = json_of(creation_options(&kari, &code).await).await;
        let credential = key.register(&options);
        let csrf = settings_csrf(&kari).await;
        let r = kari
            .post(
                "/settings/passkeys",
                &[
                    ("csrf_token", &csrf),
                    ("name", "evil"),
                    ("credential", &credential),
                ],
            )
            .await;
        assert_eq!(r.status(), 400, "origin {origin}, rp id {rp_id:?}");
        assert!(r.text().await.unwrap().contains("could not be checked"));
    }
    assert_eq!(passkey_rows(&app).await, 0);
    // An assertion from a foreign origin or for another RP id, with a registered key.
    let key = add_passkey(&app, &kari, "phone").await;
    let mut evil = key.cloned();
    evil.origin = "https://evil.example".into();
    evil.set_counter(100);
    let (_, r) = passkey_login(&app, &evil).await;
    assert_eq!(r.status(), 401);
    let mut evil = key.cloned();
    evil.rp_id = "evil.example".into();
    evil.set_counter(200);
    let (_, r) = passkey_login(&app, &evil).await;
    assert_eq!(r.status(), 401);
    let (_, ok) = passkey_login(&app, &key).await;
    assert_eq!(ok.status(), 303, "the real one still works");
}

#[tokio::test]
async fn bad_input_on_the_passkey_endpoints_is_a_clear_4xx_and_changes_nothing() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let csrf = settings_csrf(&kari).await;
    let oversized = "x".repeat(alphabank::limits::REQUEST_BODY_BYTES_MAX + 10);
    let credentials = [
        "",
        "not json",
        "{\"id\": 5}",
        "[1,2,3]",
        "{\"id\":\"a\",\"rawId\":\"!!\",\"type\":\"public-key\",\"response\":{}}",
        &"{".repeat(5000),
    ];
    for credential in credentials {
        let r = kari
            .post(
                "/settings/passkeys",
                &[
                    ("csrf_token", &csrf),
                    ("name", "x"),
                    ("credential", credential),
                ],
            )
            .await;
        assert_eq!(r.status(), 400, "credential {credential:.40}");
    }
    let too_big = kari
        .post(
            "/settings/passkeys",
            &[
                ("csrf_token", &csrf),
                ("name", "x"),
                ("credential", &oversized),
            ],
        )
        .await;
    assert_eq!(too_big.status(), 413);
    for name in ["", "   ", &"n".repeat(65), "a\u{0007}b"] {
        let r = kari
            .post(
                "/settings/passkeys",
                &[("csrf_token", &csrf), ("name", name), ("credential", "{}")],
            )
            .await;
        assert_eq!(r.status(), 422, "name {name:?}");
    }
    for id in ["", "abc", "1e5", "99999999999999999999", "-1"] {
        let r = kari
            .post(
                "/settings/passkeys/remove",
                &[("csrf_token", &csrf), ("passkey_id", id), ("otp", "123456")],
            )
            .await;
        assert!(
            r.status() == 400 || r.status() == 404,
            "id {id:?}: {}",
            r.status()
        );
    }
    // The JSON endpoints refuse in JSON.
    let r = kari
        .post(
            "/settings/passkeys/options",
            &[("csrf_token", "wrong"), ("otp", "1")],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(json_of(r).await["error"].is_string());
    let r = kari
        .client
        .post(format!("{}/settings/passkeys/options", app.base))
        .header("content-type", "application/json")
        .body("{\"csrf_token\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(json_of(r).await["error"].is_string());
    let visitor = app.new_client();
    let r = visitor
        .post(format!("{}/login/passkey/options", app.base))
        .form(&[("csrf_token", "none")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(json_of(r).await["error"].is_string());
    // Log-in with garbage, or an unknown credential: the login page's one message.
    let page = visitor
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v_csrf = input_value(&page, "csrf_token").unwrap();
    let options = json_of(
        visitor
            .post(format!("{}/login/passkey/options", app.base))
            .form(&[("csrf_token", v_csrf.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stranger = SoftAuthenticator::new(&app.base);
    for credential in ["", "{", "{\"rawId\": []}", &stranger.assert(&options)] {
        let r = visitor
            .post(format!("{}/login/passkey", app.base))
            .form(&[("csrf_token", v_csrf.as_str()), ("credential", credential)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "credential {credential:.40}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Email, password or code is incorrect.")
        );
    }
    // A passkey assertion on the review page that is not JSON.
    let _ola = app.customer("ola").await;
    assert_eq!(kari.deposit("10").await.status(), 303);
    let html = review_page(&kari, "ola", "1", "").await;
    let (csrf, confirmation) = confirm_fields(&html);
    for assertion in ["nope", "{\"id\":1}", &"[".repeat(3000)] {
        let r = kari
            .post(
                "/transfer/confirm",
                &[
                    ("csrf_token", csrf.as_str()),
                    ("confirmation", confirmation.as_str()),
                    ("passkey_assertion", assertion),
                ],
            )
            .await;
        assert_eq!(r.status(), 401, "assertion {assertion:.40}");
    }
    assert_eq!(passkey_rows(&app).await, 0);
    assert_eq!(kari.balance_minor().await, 1000);
}

#[tokio::test]
async fn wrong_codes_when_adding_a_passkey_are_counted_and_the_fifth_ends_the_session() {
    let app = app().await;
    let kari = app.customer("kari").await;
    for n in 1..=4 {
        let r = creation_options(&kari, "000000").await;
        assert_eq!(r.status(), 401, "wrong code {n}");
        assert!(json_of(r).await["error"].as_str().unwrap().contains("code"));
    }
    let fifth = creation_options(&kari, "000000").await;
    assert_eq!(fifth.status(), 401);
    assert!(
        fifth
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().contains("alphabank-notice=failures"))
    );
    let next = kari.get("/settings").await;
    assert_eq!(next.status(), 303, "the session has ended");
    let refused = events(&app, "passkey_refused").await;
    assert_eq!(refused.len(), 5, "each failure audited: {refused:?}");
    assert_eq!(events(&app, "account_locked").await.len(), 1);
}

#[tokio::test]
async fn a_customer_holds_at_most_ten_passkeys() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let rows: Vec<i64> = (0..10)
        .map(|_| alphabank::crypto::random_row_id())
        .collect();
    let user = kari.user_id(&app.services).await;
    for id in &rows {
        // Ten stored directly (a real one each would cost ten codes); the limit is what counts.
        sqlx::query(
            "INSERT INTO passkeys (id, user_id, credential_bidx, credential_enc, name_enc, \
             sign_count, created_at) VALUES ($1, $2, $3, $4, $5, 0, 0)",
        )
        .bind(*id)
        .bind(user)
        .bind(id.to_be_bytes().to_vec())
        .bind(vec![0u8])
        .bind(app.services.keyring.seal_str(
            &alphabank::crypto::Aad::new("passkeys", "name_enc", id),
            "old key",
        ))
        .execute(app.services.db.pool())
        .await
        .unwrap();
    }
    let r = creation_options(&kari, "000000").await;
    assert_eq!(r.status(), 409, "no code is asked for or counted");
    assert!(json_of(r).await["error"].as_str().unwrap().contains("10"));
    assert!(events(&app, "passkey_refused").await.is_empty());
}

#[tokio::test]
async fn two_signatures_with_one_counter_at_the_same_moment_move_money_once() {
    let app = app().await;
    let kari = app.customer("kari").await;
    let _ola = app.customer("ola").await;
    assert_eq!(kari.deposit("100").await.status(), 303);
    let key = add_passkey(&app, &kari, "phone").await;
    let a = signable(&review_page(&kari, "ola", "10", "a").await);
    let b = signable(&review_page(&kari, "ola", "10", "b").await);
    // A cloned authenticator: both signatures carry the same counter.
    let counter = key.counter();
    let signed_a = key.assert(&a.options);
    key.set_counter(counter);
    let signed_b = key.assert(&b.options);
    let before = kari.balance_minor().await;
    let (ra, rb) = tokio::join!(
        confirm_signed(&kari, &a, &signed_a),
        confirm_signed(&kari, &b, &signed_b)
    );
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [303, 401],
        "one moves money, the other is refused"
    );
    assert_eq!(kari.balance_minor().await, before - 1000);
    crate::helpers::verify(&app.services).await.unwrap();
}
