//! Serving: HTTPS with the generated certificate, /healthz, plain-HTTP mode, the redirector,
//! security headers and generic error pages.

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_ok_over_https_with_the_generated_certificate() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    // The generated files exist with private modes.
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| {
        std::fs::metadata(app.dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("tls-key.pem"), 0o600);
    assert!(app.dir.path().join("tls-cert.pem").is_file());
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let app = spawn_app().await;
    let stranger = reqwest::Client::builder()
        .resolve("localhost", app.addr)
        .build()
        .unwrap();
    assert!(
        stranger
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plain_http_serves_without_tls_and_without_hsts() {
    let app = spawn_app_with(&[("ALPHABANK_PLAIN_HTTP", "true")]).await;
    assert!(app.base.starts_with("http://"));
    let response = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    assert!(
        !app.dir.path().join("tls-cert.pem").exists(),
        "no certificate generated in plain mode"
    );
}

#[tokio::test]
async fn redirect_listener_sends_308_to_https_with_same_path_and_query() {
    let app = spawn_app_with(&[("ALPHABANK_HTTP_REDIRECT_LISTEN", "127.0.0.1:0")]).await;
    let port = app.redirect_port.expect("redirect listener configured");
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = plain
        .get(format!("http://127.0.0.1:{port}/transactions?page=2"))
        .header("host", "localhost:1234")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    let https_port = app.addr.port();
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        format!("https://localhost:{https_port}/transactions?page=2")
    );
    // A forged Host cannot inject a header or another URL.
    let response = plain
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", "evil.example/@x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/healthz", "/no-such-page", "/static/app.css"] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let h = response.headers();
        assert_eq!(
            h["strict-transport-security"], "max-age=63072000; includeSubDomains",
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline")
                && !csp.contains("unsafe-eval")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.get("server").is_none());
    }
}

#[tokio::test]
async fn unknown_pages_get_a_generic_404_page_with_a_request_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/admin/../../etc/passwd", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.text().await.unwrap();
    assert!(body.contains("AlphaBank") && body.contains(&id));
    let response = app
        .client
        .delete(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn landing_page_links_to_login_and_signup_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let body = app
        .client
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("href=\"/login\"") && body.contains("href=\"/signup\""));
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no absolute URLs to other origins"
    );
    assert!(body.contains("WE VALUE YOUR SECURITY"));
}
