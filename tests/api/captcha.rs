//! The captcha service (CONTRACT §4): the built-in proof of work — accepted once when solved,
//! refused when missing, forged, expired, reused, under-worked or minted below the configured
//! difficulty — the bounded replay store, third-party providers against a local stub verify
//! server, and the `captcha.html` partial.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alphabank::captcha::{
    Captcha, CaptchaError, CaptchaFields, CaptchaSubmission, CspSources, pow,
    provider_response_field,
};
use alphabank::config::{CaptchaMode, Config};
use alphabank::startup::Services;
use alphabank::store::captcha as captcha_store;
use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};

use crate::helpers::test_services;

const POW_BITS: u8 = 8;

fn config(pairs: &[(&str, &str)]) -> Config {
    let env: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(None, &env).unwrap()
}

fn pow_captcha(services: &Services, bits: u8) -> Captcha {
    let bits = bits.to_string();
    let config = config(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", &bits)]);
    Captcha::new(&config, services.db.clone(), services.keyring.clone())
}

/// Leading zero bits, computed independently of the crate.
fn zero_bits(digest: &[u8]) -> u32 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    let high = u128::from_be_bytes(first);
    if high == 0 {
        128 + zero_bits_tail(&digest[16..])
    } else {
        high.leading_zeros()
    }
}

fn zero_bits_tail(rest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in rest {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

fn work(challenge: &str, nonce: u64) -> u32 {
    zero_bits(&Sha256::digest(format!("{challenge}:{nonce}").as_bytes()))
}

/// Brute-forces a nonce as the browser does: the first decimal nonce with enough zero bits.
pub(crate) fn solve(challenge: &str, bits: u8) -> String {
    (0u64..)
        .find(|nonce| work(challenge, *nonce) >= u32::from(bits))
        .unwrap()
        .to_string()
}

/// A nonce that does not do the work.
pub(crate) fn lazy_nonce(challenge: &str, bits: u8) -> String {
    (0u64..)
        .find(|nonce| work(challenge, *nonce) < u32::from(bits))
        .unwrap()
        .to_string()
}

fn pow_submission(challenge: &str, nonce: &str) -> CaptchaSubmission {
    CaptchaSubmission {
        pow_challenge: Some(challenge.to_string()),
        pow_nonce: Some(nonce.to_string()),
        provider_response: None,
    }
}

fn solved(challenge: &str, bits: u8) -> CaptchaSubmission {
    pow_submission(challenge, &solve(challenge, bits))
}

fn challenge_of(captcha: &Captcha) -> (String, u8) {
    match captcha.form_fields() {
        CaptchaFields::Pow { challenge, bits } => (challenge, bits),
        other => panic!("expected a proof-of-work challenge, got {other:?}"),
    }
}

fn now_secs() -> i64 {
    alphabank::now_millis() / 1000
}

/// The challenge's dot-separated fields.
fn fields(challenge: &str) -> Vec<String> {
    challenge.split('.').map(str::to_string).collect()
}

fn flip_hex(text: &str, index: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[index] = if chars[index] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

#[test]
fn leading_zero_bits_are_counted_from_the_most_significant_bit() {
    assert_eq!(pow::leading_zero_bits(&[0xff]), 0);
    assert_eq!(pow::leading_zero_bits(&[0x7f]), 1);
    assert_eq!(pow::leading_zero_bits(&[0x01, 0x00]), 7);
    assert_eq!(pow::leading_zero_bits(&[0x00, 0x80]), 8);
    assert_eq!(pow::leading_zero_bits(&[0x00, 0x00, 0x3f]), 18);
    assert_eq!(pow::leading_zero_bits(&[0x00, 0x00]), 16);
    assert_eq!(pow::leading_zero_bits(&[]), 0);
    for seed in 0u32..2_000 {
        let digest = Sha256::digest(seed.to_be_bytes());
        assert_eq!(pow::leading_zero_bits(&digest), zero_bits(&digest));
        assert_eq!(
            pow::work_bits("v1.x", &seed.to_string()),
            work("v1.x", u64::from(seed))
        );
    }
}

#[tokio::test]
async fn a_solved_challenge_is_accepted_once() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    assert_eq!(captcha.mode(), CaptchaMode::Pow);
    let (challenge, bits) = challenge_of(&captcha);
    assert_eq!(bits, POW_BITS);
    assert!(challenge.len() <= pow::POW_CHALLENGE_BYTES_MAX);
    let submission = solved(&challenge, bits);
    captcha.verify(&submission, None).await.unwrap();
    // A replay is refused, also through another handle on the same database.
    assert!(matches!(
        captcha.verify(&submission, None).await,
        Err(CaptchaError::Reused)
    ));
    let other = pow_captcha(&services, POW_BITS);
    assert!(matches!(
        other.verify(&submission, None).await,
        Err(CaptchaError::Reused)
    ));
    // Every form gets a fresh challenge.
    assert_ne!(challenge_of(&captcha).0, challenge);
}

#[tokio::test]
async fn the_same_solution_sent_twice_at_once_is_accepted_once() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    let (challenge, bits) = challenge_of(&captcha);
    let submission = solved(&challenge, bits);
    let (a, b, c) = tokio::join!(
        captcha.verify(&submission, None),
        captcha.verify(&submission, None),
        captcha.verify(&submission, None)
    );
    let results = [a, b, c];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Err(CaptchaError::Reused)))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_missing_captcha_is_refused() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    let (challenge, bits) = challenge_of(&captcha);
    let nonce = solve(&challenge, bits);
    for submission in [
        CaptchaSubmission::default(),
        pow_submission("", ""),
        pow_submission(&challenge, ""),
        pow_submission("", &nonce),
        CaptchaSubmission {
            pow_challenge: Some(challenge.clone()),
            pow_nonce: None,
            provider_response: None,
        },
    ] {
        let result = captcha.verify(&submission, None).await;
        assert!(
            matches!(result, Err(CaptchaError::Missing)),
            "{submission:?}: {result:?}"
        );
    }
    // The refusals did not spend the challenge.
    captcha
        .verify(&pow_submission(&challenge, &nonce), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn forged_or_malformed_challenges_are_refused() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    let (challenge, _) = challenge_of(&captcha);
    let parts = fields(&challenge);
    assert_eq!(parts.len(), 5, "{challenge}");
    assert_eq!(parts[0], "v1");
    let with = |index: usize, value: String| {
        let mut changed = parts.clone();
        changed[index] = value;
        changed.join(".")
    };
    let expiry: i64 = parts[3].parse().unwrap();
    let mut forged = vec![
        ("changed MAC", with(4, flip_hex(&parts[4], 63))),
        ("changed MAC start", with(4, flip_hex(&parts[4], 0))),
        ("changed salt", with(1, flip_hex(&parts[1], 5))),
        ("raised bits", with(2, "9".into())),
        ("lowered bits", with(2, "7".into())),
        ("later expiry", with(3, (expiry + 3600).to_string())),
        ("MAC of another field", with(4, "0".repeat(64))),
        ("uppercase", challenge.to_uppercase()),
        ("padded bits", with(2, "08".into())),
        ("other version", with(0, "v2".into())),
        ("extra field", format!("{challenge}.00")),
        ("too long", format!("{challenge}{}", "0".repeat(200))),
        ("garbage", "hello".into()),
    ];
    // A challenge minted by another bank (another keyring) is forged too.
    let (stranger, _dir2) = test_services().await;
    forged.push((
        "other keyring",
        challenge_of(&pow_captcha(&stranger, POW_BITS)).0,
    ));
    for (what, token) in forged {
        // Real work for the forged token's own claim, so that only the forgery is wrong.
        let bits = token
            .split('.')
            .nth(2)
            .and_then(|b| b.parse::<u8>().ok())
            .unwrap_or(POW_BITS)
            .min(16);
        let result = captcha.verify(&solved(&token, bits), None).await;
        assert!(
            matches!(result, Err(CaptchaError::Forged)),
            "{what}: {result:?}"
        );
    }
    // A malformed nonce is refused before any work is checked.
    for nonce in ["12a", "-1", " 1", "1 ", "123456789012345678901", "0x10"] {
        let result = captcha
            .verify(&pow_submission(&challenge, nonce), None)
            .await;
        assert!(
            matches!(result, Err(CaptchaError::Forged)),
            "nonce {nonce:?}: {result:?}"
        );
    }
    // The genuine challenge still works after all that.
    captcha
        .verify(&solved(&challenge, POW_BITS), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    let ttl = pow::POW_CHALLENGE_TTL_SECS;
    assert_eq!(ttl, 600);
    for minted_secs_ago in [ttl, ttl + 1, 3 * ttl] {
        let old = captcha.issue_at(now_secs() - minted_secs_ago);
        let result = captcha.verify(&solved(&old, POW_BITS), None).await;
        assert!(
            matches!(result, Err(CaptchaError::Expired)),
            "{minted_secs_ago}: {result:?}"
        );
    }
    // Nine and a half minutes old is still good.
    let recent = captcha.issue_at(now_secs() - (ttl - 30));
    captcha
        .verify(&solved(&recent, POW_BITS), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn too_little_work_is_refused() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    let (challenge, bits) = challenge_of(&captcha);
    let lazy = lazy_nonce(&challenge, bits);
    assert!(pow::work_bits(&challenge, &lazy) < u32::from(bits));
    let result = captcha
        .verify(&pow_submission(&challenge, &lazy), None)
        .await;
    assert!(
        matches!(result, Err(CaptchaError::InsufficientWork)),
        "{result:?}"
    );
    // The failed attempt did not spend the challenge.
    captcha
        .verify(&solved(&challenge, bits), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_challenge_minted_below_the_configured_difficulty_is_refused() {
    let (services, _dir) = test_services().await;
    let strict = pow_captcha(&services, POW_BITS);
    let lenient = pow_captcha(&services, 4);
    let (easy, easy_bits) = challenge_of(&lenient);
    assert_eq!(easy_bits, 4);
    // Refused even when the nonce happens to do the configured amount of work.
    let result = strict.verify(&solved(&easy, POW_BITS), None).await;
    assert!(
        matches!(result, Err(CaptchaError::InsufficientWork)),
        "{result:?}"
    );
    // A challenge minted at a higher difficulty (before the setting was lowered) is fine.
    let (hard, hard_bits) = challenge_of(&pow_captcha(&services, 10));
    assert_eq!(hard_bits, 10);
    strict
        .verify(&solved(&hard, hard_bits), None)
        .await
        .unwrap();
    // …but only with the work it asked for.
    let (hard, _) = challenge_of(&pow_captcha(&services, 10));
    let nonce = (0u64..)
        .find(|n| {
            let w = work(&hard, *n);
            (u32::from(POW_BITS)..10).contains(&w)
        })
        .unwrap()
        .to_string();
    let result = strict.verify(&pow_submission(&hard, &nonce), None).await;
    assert!(
        matches!(result, Err(CaptchaError::InsufficientWork)),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_replay_store_is_bounded_and_pruned() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS).with_replay_rows_max(2);
    for _ in 0..2 {
        let (challenge, bits) = challenge_of(&captcha);
        captcha
            .verify(&solved(&challenge, bits), None)
            .await
            .unwrap();
    }
    let (challenge, bits) = challenge_of(&captcha);
    let submission = solved(&challenge, bits);
    let result = captcha.verify(&submission, None).await;
    assert!(
        matches!(result, Err(CaptchaError::Overloaded)),
        "{result:?}"
    );
    assert!(!CaptchaError::Overloaded.is_operating_error());
    assert_eq!(captcha_store::count(&services.db).await.unwrap(), 2);

    // Store level: pruning deletes expired rows only, in bounded batches.
    let db = &services.db;
    let now = alphabank::now_millis();
    for i in 0u8..5 {
        let outcome = captcha_store::spend(db, &[i; 32], now - 1_000 - i64::from(i))
            .await
            .unwrap();
        assert_eq!(outcome, captcha_store::SpendOutcome::Spent);
    }
    assert_eq!(
        captcha_store::spend(db, &[0u8; 32], now + 60_000)
            .await
            .unwrap(),
        captcha_store::SpendOutcome::AlreadySpent
    );
    assert_eq!(captcha_store::count(db).await.unwrap(), 7);
    assert_eq!(captcha_store::prune_expired(db, now, 3).await.unwrap(), 3);
    assert_eq!(captcha_store::prune_expired(db, now, 3).await.unwrap(), 2);
    assert_eq!(captcha_store::prune_expired(db, now, 3).await.unwrap(), 0);
    assert_eq!(captcha_store::count(db).await.unwrap(), 2);
}

#[tokio::test]
async fn captcha_off_accepts_everything_and_renders_nothing() {
    let (services, _dir) = test_services().await;
    let captcha = Captcha::new(
        &config(&[("ALPHABANK_CAPTCHA", "off")]),
        services.db.clone(),
        services.keyring.clone(),
    );
    assert_eq!(captcha.mode(), CaptchaMode::Off);
    assert_eq!(captcha.form_fields(), CaptchaFields::None);
    assert_eq!(captcha.csp_sources(), CspSources::default());
    captcha
        .verify(&CaptchaSubmission::default(), None)
        .await
        .unwrap();
    assert_eq!(render(CaptchaFields::None).trim(), "<form></form>");
}

#[derive(Template)]
#[template(source = "<form>{% include \"captcha.html\" %}</form>", ext = "html")]
struct CaptchaForm {
    captcha: CaptchaFields,
}

fn render(captcha: CaptchaFields) -> String {
    CaptchaForm { captcha }.render().unwrap()
}

/// Every `<script` in `html` loads a file (no inline script under `script-src 'self'`).
fn assert_no_inline_script(html: &str) {
    for script in html.split("<script").skip(1) {
        let tag_end = script.find('>').unwrap();
        assert!(
            script[..tag_end].contains(" src=\""),
            "inline script: {script}"
        );
        assert!(script[tag_end + 1..].starts_with("</script>"), "{script}");
    }
}

#[tokio::test]
async fn the_pow_partial_renders_the_contract_fields() {
    let (services, _dir) = test_services().await;
    let captcha = pow_captcha(&services, POW_BITS);
    let fields = captcha.form_fields();
    let (challenge, _) = challenge_of(&captcha);
    let html = render(fields.clone());
    let CaptchaFields::Pow {
        challenge: shown, ..
    } = &fields
    else {
        panic!("{fields:?}")
    };
    assert!(
        html.contains(&format!(
            r#"<input type="hidden" name="pow_challenge" value="{shown}" data-bits="8">"#
        )),
        "{html}"
    );
    assert!(html.contains(r#"<input type="hidden" name="pow_nonce" value="">"#));
    assert!(html.contains(r#"<p class="pow-status" role="status" aria-live="polite">"#));
    assert!(html.contains("<noscript>"));
    assert!(html.contains(r#"<script src="/static/pow.js?v=1" defer></script>"#));
    assert_no_inline_script(&html);
    assert_eq!(captcha.csp_sources(), CspSources::default());
    assert!(captcha.csp_sources().is_empty());
    assert_eq!(provider_response_field(CaptchaMode::Pow), None);
    // The challenge is plain token text: nothing in it needs escaping.
    assert!(
        challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.')
    );
}

#[test]
fn the_browser_scripts_are_self_contained() {
    let page = include_str!("../../static/pow.js");
    let worker = include_str!("../../static/pow-worker.js");
    assert!(page.contains("'/static/pow-worker.js?v=1'"));
    assert!(page.contains("Checking your browser"));
    assert!(worker.contains("crypto.subtle.digest('SHA-256'"));
    for script in [page, worker] {
        for forbidden in [
            "eval(",
            "new Function",
            "importScripts",
            "http://",
            "https://",
        ] {
            assert!(!script.contains(forbidden), "{forbidden}");
        }
    }
}

// ---- third-party providers, against a local stub of the verify endpoint ----

/// One call to the stub: its content type and its form fields.
type Call = (String, Vec<(String, String)>);

#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Answers like a provider's siteverify, per path.
async fn stub_verify(
    State(calls): State<Calls>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    calls.0.lock().unwrap().push((content_type, form));
    let json = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    match uri.path() {
        "/ok" => json(
            StatusCode::OK,
            r#"{"success": true, "hostname": "localhost"}"#.into(),
        ),
        "/no" => json(
            StatusCode::OK,
            r#"{"success": false, "error-codes": ["invalid-input-response"]}"#.into(),
        ),
        "/bad-secret" => json(
            StatusCode::OK,
            r#"{"success": false, "error-codes": ["invalid-input-secret"]}"#.into(),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, r#"{"success": true}"#.into())
        }
        "/error" => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"success": true}"#.into(),
        ),
        "/redirect" => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/ok")]).into_response()
        }
        "/garbage" => json(StatusCode::OK, "<html>success</html>".into()),
        "/string" => json(StatusCode::OK, r#"{"success": "true"}"#.into()),
        "/huge" => json(
            StatusCode::OK,
            format!(r#"{{"success": true, "pad": "{}"}}"#, "x".repeat(64 * 1024)),
        ),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stub_server() -> (SocketAddr, Calls) {
    let calls = Calls::default();
    let app = Router::new()
        .route("/{*path}", post(stub_verify))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, calls)
}

fn provider_config(mode: &str, url: &str) -> Config {
    config(&[
        ("ALPHABANK_CAPTCHA", mode),
        ("ALPHABANK_CAPTCHA_SECRET", "s3cret-value"),
        ("ALPHABANK_CAPTCHA_SITE_KEY", "site-key-1"),
        ("ALPHABANK_CAPTCHA_VERIFY_URL", url),
    ])
}

fn provider_submission(response: &str) -> CaptchaSubmission {
    CaptchaSubmission {
        provider_response: Some(response.to_string()),
        ..CaptchaSubmission::default()
    }
}

#[tokio::test]
async fn a_provider_verdict_decides_and_receives_secret_response_and_ip() {
    let (services, _dir) = test_services().await;
    let (addr, calls) = stub_server().await;
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    for mode in ["recaptcha", "hcaptcha", "turnstile"] {
        let captcha = Captcha::try_new(
            &provider_config(mode, &format!("http://{addr}/ok")),
            services.db.clone(),
            services.keyring.clone(),
        )
        .unwrap();
        captcha
            .verify(&provider_submission("widget-token&=+ é"), Some(ip))
            .await
            .unwrap();
        let seen = calls.take();
        assert_eq!(seen.len(), 1, "{mode}");
        let (content_type, form) = &seen[0];
        assert_eq!(content_type, "application/x-www-form-urlencoded", "{mode}");
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("secret"), Some("s3cret-value"));
        assert_eq!(field("response"), Some("widget-token&=+ é"));
        assert_eq!(field("remoteip"), Some("203.0.113.7"));
    }
    // Without a client address, no remoteip is sent.
    let captcha = Captcha::new(
        &provider_config("turnstile", &format!("http://{addr}/ok")),
        services.db.clone(),
        services.keyring.clone(),
    );
    captcha
        .verify(&provider_submission("t"), None)
        .await
        .unwrap();
    let seen = calls.take();
    assert!(seen[0].1.iter().all(|(k, _)| k != "remoteip"));

    // A refusal from the provider refuses the form.
    for path in ["no", "bad-secret"] {
        let captcha = Captcha::new(
            &provider_config("hcaptcha", &format!("http://{addr}/{path}")),
            services.db.clone(),
            services.keyring.clone(),
        );
        let result = captcha.verify(&provider_submission("t"), Some(ip)).await;
        assert!(
            matches!(result, Err(CaptchaError::ProviderRejected)),
            "{path}: {result:?}"
        );
    }

    // No token: refused without asking the provider.
    calls.take();
    for submission in [CaptchaSubmission::default(), provider_submission("")] {
        let result = captcha.verify(&submission, Some(ip)).await;
        assert!(matches!(result, Err(CaptchaError::Missing)), "{result:?}");
    }
    let oversized = "x".repeat(alphabank::captcha::provider::PROVIDER_RESPONSE_BYTES_MAX + 1);
    assert!(matches!(
        captcha
            .verify(&provider_submission(&oversized), Some(ip))
            .await,
        Err(CaptchaError::Forged)
    ));
    assert!(calls.take().is_empty());
}

#[tokio::test]
async fn anything_but_a_clear_success_in_time_refuses_the_form() {
    let (services, _dir) = test_services().await;
    let (addr, calls) = stub_server().await;
    for path in ["error", "redirect", "garbage", "string", "huge", "missing"] {
        let captcha = Captcha::new(
            &provider_config("recaptcha", &format!("http://{addr}/{path}")),
            services.db.clone(),
            services.keyring.clone(),
        );
        let result = captcha.verify(&provider_submission("t"), None).await;
        assert!(
            matches!(result, Err(CaptchaError::ProviderUnavailable)),
            "{path}: {result:?}"
        );
    }
    // The redirect was not followed: one call per attempt, none to /ok.
    assert_eq!(calls.take().len(), 6);

    // A provider slower than the timeout refuses the form, and quickly.
    let captcha = Captcha::new(
        &provider_config("turnstile", &format!("http://{addr}/slow")),
        services.db.clone(),
        services.keyring.clone(),
    )
    .with_provider_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let result = captcha.verify(&provider_submission("t"), None).await;
    assert!(
        matches!(result, Err(CaptchaError::ProviderUnavailable)),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        alphabank::captcha::PROVIDER_VERIFY_TIMEOUT,
        Duration::from_secs(5)
    );

    // Nobody listening: refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let captcha = Captcha::new(
        &provider_config("turnstile", &format!("http://{closed}/ok")),
        services.db.clone(),
        services.keyring.clone(),
    );
    assert!(matches!(
        captcha.verify(&provider_submission("t"), None).await,
        Err(CaptchaError::ProviderUnavailable)
    ));
}

#[tokio::test]
async fn a_plain_http_verify_url_elsewhere_than_localhost_is_refused() {
    let (services, _dir) = test_services().await;
    let plain = provider_config("recaptcha", "http://example.com/siteverify");
    let error =
        Captcha::try_new(&plain, services.db.clone(), services.keyring.clone()).unwrap_err();
    assert_eq!(error.variable, "ALPHABANK_CAPTCHA_VERIFY_URL");
    assert!(!error.to_string().contains('\n'));
    // Built anyway, it fails closed without calling anyone.
    let captcha = Captcha::new(&plain, services.db.clone(), services.keyring.clone());
    assert!(matches!(
        captcha.verify(&provider_submission("t"), None).await,
        Err(CaptchaError::ProviderUnavailable)
    ));
    // The providers' own https endpoints are accepted by default.
    for mode in ["recaptcha", "hcaptcha", "turnstile"] {
        let default_url = config(&[
            ("ALPHABANK_CAPTCHA", mode),
            ("ALPHABANK_CAPTCHA_SECRET", "s"),
            ("ALPHABANK_CAPTCHA_SITE_KEY", "k"),
        ]);
        Captcha::try_new(&default_url, services.db.clone(), services.keyring.clone()).unwrap();
    }
}

#[tokio::test]
async fn providers_render_their_widget_and_name_their_origins() {
    let (services, _dir) = test_services().await;
    let cases = [
        (
            "recaptcha",
            "g-recaptcha",
            "https://www.google.com/recaptcha/api.js",
            "g-recaptcha-response",
            vec!["https://www.google.com", "https://www.gstatic.com"],
        ),
        (
            "hcaptcha",
            "h-captcha",
            "https://js.hcaptcha.com/1/api.js",
            "h-captcha-response",
            vec!["https://hcaptcha.com", "https://*.hcaptcha.com"],
        ),
        (
            "turnstile",
            "cf-turnstile",
            "https://challenges.cloudflare.com/turnstile/v0/api.js",
            "cf-turnstile-response",
            vec!["https://challenges.cloudflare.com"],
        ),
    ];
    for (mode, class, script, field, script_origins) in cases {
        let captcha = Captcha::new(
            &config(&[
                ("ALPHABANK_CAPTCHA", mode),
                ("ALPHABANK_CAPTCHA_SECRET", "s"),
                (
                    "ALPHABANK_CAPTCHA_SITE_KEY",
                    "site\"><script>alert(1)</script>",
                ),
            ]),
            services.db.clone(),
            services.keyring.clone(),
        );
        assert_eq!(provider_response_field(captcha.mode()), Some(field));
        let fields = captcha.form_fields();
        let CaptchaFields::Provider {
            provider,
            widget_class,
            script_src,
            ..
        } = &fields
        else {
            panic!("{fields:?}")
        };
        assert_eq!(
            (*provider, *widget_class, *script_src),
            (mode, class, script)
        );
        let html = render(fields.clone());
        assert!(html.contains(&format!(r#"<div class="{class}" data-sitekey="site&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;"></div>"#))
            || html.contains(&format!(r#"<div class="{class}" data-sitekey="site&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"></div>"#)),
            "{html}");
        assert!(
            html.contains(&format!(r#"<script src="{script}" async defer></script>"#)),
            "{html}"
        );
        assert!(!html.contains("pow_challenge"));
        assert_no_inline_script(&html);
        let csp = captcha.csp_sources();
        assert_eq!(csp.script, script_origins, "{mode}");
        assert!(!csp.frame.is_empty(), "{mode}");
        assert!(
            csp.script
                .iter()
                .chain(&csp.frame)
                .chain(&csp.style)
                .chain(&csp.connect)
                .all(|origin| origin.starts_with("https://") && !origin.contains(' ')),
            "{csp:?}"
        );
    }
}

#[test]
fn error_messages_are_safe_to_show() {
    let store = CaptchaError::Store(alphabank::store::StoreError::Busy);
    assert!(store.is_operating_error());
    assert!(!store.user_message().contains("store"));
    for error in [
        CaptchaError::Missing,
        CaptchaError::Forged,
        CaptchaError::Expired,
        CaptchaError::Reused,
        CaptchaError::InsufficientWork,
        CaptchaError::ProviderRejected,
        CaptchaError::ProviderUnavailable,
        CaptchaError::Overloaded,
    ] {
        assert!(!error.is_operating_error());
        assert_eq!(error.user_message(), error.to_string());
        assert!(error.user_message().ends_with('.'));
    }
}

/// A money form's captcha and code step spent together (one call on SQLite): a replayed
/// challenge spends no step, and a new challenge is marked whether or not its step is accepted.
#[tokio::test]
async fn a_replayed_challenge_spends_no_code_step() {
    use alphabank::store::captcha::SpendOutcome;
    let (services, _dir) = test_services().await;
    let expires = alphabank::now_millis() + 60_000;
    // Both ways a money form spends its captcha and code: in a write transaction of its own,
    // and (SQLite) in a batch of the group-commit writer.
    for batched in [false, true] {
        let user = crate::helpers::customer(&services, &format!("stepper{batched}")).await;
        let last_step = || async {
            let (step,): (i64,) = sqlx::query_as("SELECT totp_last_step FROM users WHERE id = $1")
                .bind(user)
                .fetch_one(services.db.pool())
                .await
                .unwrap();
            step
        };
        let spend = |n: u8, step: i64| {
            let services = services.clone();
            let hash = [n + if batched { 100 } else { 0 }; 32];
            async move {
                if batched {
                    let work = StepWork {
                        hash,
                        expires,
                        user,
                        step,
                        spent: None,
                    };
                    return crate::helpers::in_batch(&services, work)
                        .await
                        .map(|work| work.spent.unwrap());
                }
                let mut tx = services.db.begin_write().await.unwrap();
                let result = captcha_store::spend_with_step_in(
                    &mut alphabank::store::Tx::Sqlx(&mut tx),
                    &hash,
                    expires,
                    user,
                    step,
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                Some(result)
            }
        };
        let Some(first) = spend(1, 100).await else {
            continue; // PostgreSQL: no batches
        };
        assert_eq!(first, (SpendOutcome::Spent, true));
        assert_eq!(last_step().await, 100);
        // The same challenge with a newer step: refused, and the step stays unspent.
        assert_eq!(
            spend(1, 101).await,
            Some((SpendOutcome::AlreadySpent, false))
        );
        assert_eq!(last_step().await, 100);
        // A new challenge with an old step: the challenge is spent, the step is not accepted.
        assert_eq!(spend(2, 100).await, Some((SpendOutcome::Spent, false)));
        assert_eq!(
            spend(2, 102).await,
            Some((SpendOutcome::AlreadySpent, false))
        );
        // The step the replay could not take is still there for a new challenge.
        assert_eq!(spend(3, 101).await, Some((SpendOutcome::Spent, true)));
        assert_eq!(last_step().await, 101);
    }
}

/// A captcha mark and code step spent as a job of SQLite's group-commit writer.
struct StepWork {
    hash: [u8; 32],
    expires: i64,
    user: alphabank::domain::UserId,
    step: i64,
    spent: Option<(alphabank::store::captcha::SpendOutcome, bool)>,
}

impl alphabank::store::TxWork for StepWork {
    async fn run(&mut self, tx: &mut alphabank::store::Tx<'_>) -> alphabank::store::Verdict {
        let spent =
            captcha_store::spend_with_step_in(tx, &self.hash, self.expires, self.user, self.step)
                .await
                .unwrap();
        self.spent = Some(spent);
        alphabank::store::Verdict::Keep
    }
}
