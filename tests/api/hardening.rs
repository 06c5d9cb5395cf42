//! Hardening: rate limits, error pages, request limits and hostile input.

use std::io::{Read, Write};

use crate::helpers::{input_value, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_sixty_first_request_in_a_minute_gets_429_and_spoofed_forwarded_for_is_ignored() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    for i in 0..60 {
        // A client cannot buy a fresh bucket by claiming another address: nobody is a trusted proxy.
        let r = app
            .client
            .get(format!("{}/login", app.base))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    // The bucket refills one request a second (60 a minute): on a slow machine the first requests
    // may have bought a few more; past those, the next request is refused.
    let refilled = started.elapsed().as_secs() + 1;
    let mut extra = 0;
    let r = loop {
        let r = app
            .client
            .get(format!("{}/login", app.base))
            .header("x-forwarded-for", "10.9.9.9")
            .send()
            .await
            .unwrap();
        if r.status() != 200 || extra > refilled {
            break r;
        }
        extra += 1;
    };
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert!(
        r.headers().get("content-security-policy").is_some(),
        "error responses carry the headers too"
    );
    assert!(r.text().await.unwrap().contains("Too many requests"));
    // Static files and health checks are not counted.
    assert_eq!(
        app.client
            .get(format!("{}/static/app.css", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let events = app.services.audit.tail(10).await.unwrap();
    assert!(events.iter().any(|e| e.event == "rate_limited"));
}

#[tokio::test]
async fn a_trusted_proxy_s_forwarded_for_gives_each_client_its_own_bucket() {
    let app = spawn_app_with(&[("ALPHABANK_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    for i in 0..200 {
        let r = app
            .client
            .get(format!("{}/login", app.base))
            .header("x-forwarded-for", format!("203.0.113.{}", i % 250))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn a_logged_in_session_over_the_limit_is_ended() {
    let app = spawn_app_with(&[("ALPHABANK_RATE_LIMIT_PER_MIN", "30")]).await;
    let kari = app.customer("kari").await;
    let mut limited = None;
    for i in 0..40 {
        let r = kari.get("/settings").await;
        if r.status() == 429 {
            limited = Some(i);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    assert!(limited.is_some());
    let r = kari.get("/settings").await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/"),
        "the session ended"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn hostile_form_bodies_get_a_clear_4xx_and_change_nothing() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let page = kari.get("/atm").await.text().await.unwrap();
    let csrf = input_value(&page, "csrf_token").unwrap();
    let key = input_value(&page, "idempotency_key").unwrap();
    let url = format!("{}/atm", app.base);
    let raw = |body: String, content_type: &'static str| {
        let client = kari.client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let form = "application/x-www-form-urlencoded";
    let base =
        format!("csrf_token={csrf}&idempotency_key={key}&username=kari&card_name=Visa&otp=000000");
    for (body, content_type, status) in [
        (format!("{base}&amount=%FF%FE"), form, 400),
        (format!("{base}&amount=1&amount=2"), form, 400),
        (format!("{base}&amount=1%00"), form, 400),
        (format!("{base}&amount=%zz"), form, 400),
        (
            format!("{base}&amount=1000000000000000000000000000000"),
            form,
            422,
        ),
        ("{\"amount\": 1}".to_string(), "application/json", 415),
        (
            format!("{base}&amount=1&pad={}", "x".repeat(20_000)),
            form,
            413,
        ),
    ] {
        let r = raw(body.clone(), content_type).await;
        assert_eq!(
            r.status().as_u16(),
            status,
            "{}",
            &body[body.len().saturating_sub(60)..]
        );
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("panicked") && !html.contains("src/"),
            "no internals shown"
        );
    }
    assert_eq!(kari.balance_minor().await, 0);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_app().await;
    let long = format!("{}/{}", app.base, "a".repeat(3_000));
    assert_eq!(app.client.get(long).send().await.unwrap().status(), 414);
    let r = app
        .client
        .get(format!("{}/", app.base))
        .header("x-big", "y".repeat(20_000))
        .send()
        .await;
    let r = r.expect("answered with a status, not a dropped connection");
    assert_eq!(r.status(), 431);
}

#[tokio::test]
async fn a_slow_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_with(&[("ALPHABANK_PLAIN_HTTP", "true")]).await;
    let addr = app.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).unwrap_or(0);
        (n, started.elapsed())
    })
    .await
    .unwrap();
    assert!(
        closed.1 >= std::time::Duration::from_secs(9),
        "closed after the header timeout, not before"
    );
    assert!(
        closed.1 < std::time::Duration::from_secs(25),
        "closed by the server, {closed:?}"
    );
    let _ = closed.0;
}

#[tokio::test]
async fn error_pages_are_generic_and_in_the_site_layout() {
    let app = spawn_app().await;
    for (method, path, status) in [
        ("GET", "/nope", 404),
        ("PUT", "/login", 405),
        ("DELETE", "/", 405),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let html = r.text().await.unwrap();
        assert!(
            html.contains("AlphaBank")
                && html.contains("WE VALUE YOUR SECURITY")
                && html.contains(&id)
        );
    }
}

#[tokio::test]
async fn the_built_in_captcha_guards_the_forms() {
    let app = spawn_app_with(&[("ALPHABANK_CAPTCHA", "pow"), ("ALPHABANK_POW_BITS", "8")]).await;
    let client = app.new_client();
    let page = client
        .get(format!("{}/signup", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-bits=\"8\"") && page.contains("/static/pow.js"));
    let csrf = input_value(&page, "csrf_token").unwrap();
    let challenge = input_value(&page, "pow_challenge").unwrap();
    let pw = "quiet fjord lantern evening";
    let fields = |nonce: &str| {
        vec![
            ("csrf_token".to_string(), csrf.clone()),
            ("username".into(), "powuser".into()),
            ("email".into(), "pow@example.no".into()),
            ("password".into(), pw.into()),
            ("password_confirm".into(), pw.into()),
            ("pow_challenge".into(), challenge.clone()),
            ("pow_nonce".into(), nonce.to_string()),
        ]
    };
    // Missing or wrong work: refused, nothing created.
    let r = client
        .post(format!("{}/signup", app.base))
        .form(&fields(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let nonce = (0u64..)
        .find(|n| alphabank::captcha::pow::work_bits(&challenge, &n.to_string()) >= 8)
        .unwrap()
        .to_string();
    let r = client
        .post(format!("{}/signup", app.base))
        .form(&fields(&nonce))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // The same solution again: refused (single use).
    let other = app.new_client();
    let page = other
        .get(format!("{}/signup", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut again = fields(&nonce);
    again[0].1 = input_value(&page, "csrf_token").unwrap();
    again[1].1 = "another".into();
    again[2].1 = "another@example.no".into();
    let r = other
        .post(format!("{}/signup", app.base))
        .form(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let events = app.services.audit.tail(20).await.unwrap();
    assert!(
        events
            .iter()
            .filter(|e| e.event == "captcha_failed")
            .count()
            >= 2
    );
}

#[tokio::test]
async fn a_panicking_handler_gives_the_generic_500_page_and_the_server_keeps_serving() {
    use axum::routing::get;
    let app = spawn_app().await;
    // The real request middleware around a handler that panics.
    let router = axum::Router::new()
        .route("/boom", get(boom))
        .layer(axum::middleware::from_fn_with_state(
            app.services.clone(),
            alphabank::web::context::request_context,
        ))
        .with_state(app.services.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let r = client
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let html = r.text().await.unwrap();
        assert!(html.contains(&id) && html.contains("Something went wrong on our side"));
        assert!(
            !html.contains("internal detail"),
            "the panic message is not shown"
        );
    }
}

#[tokio::test]
async fn redirects_carry_the_security_headers_too() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/settings", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for h in [
        "content-security-policy",
        "strict-transport-security",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "cache-control",
    ] {
        assert!(r.headers().get(h).is_some(), "{h}");
    }
}

async fn boom() -> &'static str {
    if std::hint::black_box(true) {
        panic!("internal detail that must not leak");
    }
    "unreachable"
}

#[tokio::test]
async fn beyond_the_in_flight_bound_a_request_gets_503_at_once() {
    use axum::routing::get;
    let app = spawn_app().await;
    // The real middleware with a bound of one request in flight (production: REQUESTS_IN_FLIGHT_MAX).
    let mut set = (*app.services).clone();
    set.in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    let services = alphabank::startup::Services::from(set);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    let (r2, e2) = (release.clone(), entered.clone());
    let router = axum::Router::new()
        .route(
            "/slow",
            get(move || {
                let (release, entered) = (r2.clone(), e2.clone());
                async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            alphabank::web::context::request_context,
        ))
        .with_state(services);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let client = reqwest::Client::new();
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}/slow"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    entered.notified().await;
    let second = client
        .get(format!("http://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        second.status(),
        503,
        "refused at once while the first is in flight"
    );
    release.notify_one();
    assert_eq!(first.await.unwrap(), 200);
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from a raw socket, giving up at
/// `deadline`; returns what arrived (possibly nothing, when the server closed or the time ran out).
fn read_response_until(stream: &mut std::net::TcpStream, deadline: std::time::Instant) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        stream.set_read_timeout(Some(deadline - now)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&received);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if received.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_that_stalls_in_its_body_gets_408_after_the_request_timeout_and_others_are_served()
{
    use alphabank::limits::REQUEST_TIMEOUT;
    use std::time::{Duration, Instant};
    let app = spawn_app_with(&[("ALPHABANK_PLAIN_HTTP", "true")]).await;
    let addr = app.addr;
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    // A complete request head promising 200 body bytes, then 12 of them, then nothing.
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(
                b"POST /login HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Type: application/x-www-form-urlencoded\r\n\
                  Content-Length: 200\r\n\r\ncsrf_token=a",
            )
            .unwrap();
        let started = Instant::now();
        let _ = sent_tx.send(());
        let response = read_response_until(
            &mut stream,
            started + REQUEST_TIMEOUT + Duration::from_secs(15),
        );
        (response, started.elapsed())
    });
    sent_rx.await.unwrap();
    // Meanwhile the server keeps serving everyone else, at once.
    let asked = Instant::now();
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("healthz answers during the stall");
    assert_eq!(health.status(), 200);
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(!slow.is_finished(), "the slow request is still stalled");
    let (response, elapsed) = slow.await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 408"),
        "408 after {elapsed:?}, got {:?}",
        &response[..response.len().min(200)]
    );
    assert!(
        elapsed >= REQUEST_TIMEOUT - Duration::from_secs(1),
        "not before the request timeout: {elapsed:?}"
    );
    assert!(
        elapsed < REQUEST_TIMEOUT + Duration::from_secs(15),
        "about at the request timeout: {elapsed:?}"
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    for h in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "cache-control",
    ] {
        assert!(head.contains(&format!("\r\n{h}:")), "{h} on the 408");
    }
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id:"))
        .expect("a request id")
        .trim()
        .to_string();
    assert!(!id.is_empty());
    assert!(
        body.contains("AlphaBank")
            && body.contains("WE VALUE YOUR SECURITY")
            && body.contains("408")
            && body.contains(&id),
        "the generic error page with the request id: {body}"
    );
    // And the server still serves afterwards.
    let after = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
}

/// The login form's CSRF token for `client` (its visitor cookie is set by the same GET).
async fn login_csrf(app: &crate::helpers::TestApp, client: &reqwest::Client) -> String {
    let page = client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    input_value(&page, "csrf_token").expect("csrf")
}

/// A login attempt with a wrong password (it needs the database, and records a failure).
async fn wrong_login(
    app: &crate::helpers::TestApp,
    client: &reqwest::Client,
    csrf: &str,
) -> (u16, String, String, std::time::Duration) {
    let started = std::time::Instant::now();
    let r = client
        .post(format!("{}/login", app.base))
        .timeout(alphabank::limits::REQUEST_TIMEOUT + std::time::Duration::from_secs(10))
        .form(&[
            ("csrf_token", csrf),
            ("email", "nobody@example.no"),
            ("password", "not the right password"),
            ("otp", "123456"),
        ])
        .send()
        .await
        .expect("answered, not dropped");
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        r.headers().get("content-security-policy").is_some(),
        "security headers on {status}"
    );
    let html = r.text().await.unwrap();
    (status, id, html, started.elapsed())
}

async fn login_throttle_rows(app: &crate::helpers::TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM login_throttle")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    n
}

fn assert_busy_page(status: u16, id: &str, html: &str) {
    assert_eq!(status, 503, "{html}");
    assert!(
        html.contains("AlphaBank")
            && html.contains("WE VALUE YOUR SECURITY")
            && html.contains("busy")
            && !id.is_empty()
            && html.contains(id),
        "the generic 503 page with the request id: {html}"
    );
    assert!(!html.contains("Something went wrong on our side"));
}

#[tokio::test]
async fn with_every_pool_connection_held_a_request_gets_503_within_the_acquire_timeout() {
    use alphabank::limits::{
        DB_POOL_ACQUIRE_TIMEOUT, DB_POOL_CONNECTIONS_POSTGRES_MAX, DB_POOL_CONNECTIONS_SQLITE_MAX,
    };
    use alphabank::store::Engine;
    use std::time::Duration;
    let app = spawn_app().await;
    let client = app.new_client();
    let csrf = login_csrf(&app, &client).await;
    let pool = app.services.db.pool();
    let max = match app.services.db.engine() {
        Engine::Sqlite => DB_POOL_CONNECTIONS_SQLITE_MAX,
        Engine::Postgres => DB_POOL_CONNECTIONS_POSTGRES_MAX,
    };
    assert_eq!(pool.options().get_max_connections(), max);
    // Every connection of the pool taken (another request, or a stuck query, could hold them).
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(pool.acquire().await.expect("a pooled connection"));
    }
    assert_eq!((pool.size(), pool.num_idle()), (max, 0));
    let (status, id, html, elapsed) = wrong_login(&app, &client, &csrf).await;
    assert_busy_page(status, &id, &html);
    assert!(
        elapsed >= DB_POOL_ACQUIRE_TIMEOUT - Duration::from_secs(1),
        "waited for a connection first: {elapsed:?}"
    );
    assert!(
        elapsed < DB_POOL_ACQUIRE_TIMEOUT + Duration::from_secs(10),
        "failed fast, no hang: {elapsed:?}"
    );
    drop(held);
    assert_eq!(login_throttle_rows(&app).await, 0, "nothing was recorded");
    // With the connections back, the same request works again.
    let (status, _, html, _) = wrong_login(&app, &client, &csrf).await;
    assert_eq!(status, 401, "{html}");
    assert_eq!(login_throttle_rows(&app).await, 1);
}

#[tokio::test]
async fn an_open_write_transaction_holds_sqlite_writers_only_up_to_the_acquire_timeout() {
    use alphabank::limits::DB_POOL_ACQUIRE_TIMEOUT;
    use alphabank::store::Engine;
    use std::time::Duration;
    let app = spawn_app().await;
    let client = app.new_client();
    let csrf = login_csrf(&app, &client).await;
    // A write transaction left open (a stuck writer): it holds SQLite's one write gate.
    let open = app.services.db.begin_write().await.unwrap();
    let (status, id, html, elapsed) = wrong_login(&app, &client, &csrf).await;
    match app.services.db.engine() {
        Engine::Sqlite => {
            assert_busy_page(status, &id, &html);
            assert!(
                elapsed >= DB_POOL_ACQUIRE_TIMEOUT - Duration::from_secs(1),
                "waited for the gate first: {elapsed:?}"
            );
            assert!(
                elapsed < DB_POOL_ACQUIRE_TIMEOUT + Duration::from_secs(10),
                "failed fast, no hang: {elapsed:?}"
            );
            drop(open);
            assert_eq!(login_throttle_rows(&app).await, 0, "nothing was changed");
            let (status, _, html, _) = wrong_login(&app, &client, &csrf).await;
            assert_eq!(status, 401, "works again once the gate is free: {html}");
        }
        Engine::Postgres => {
            // No gate on PostgreSQL: rows are locked, so an unrelated open transaction does not
            // hold other writers up.
            assert_eq!(status, 401, "{html}");
            assert!(
                elapsed < DB_POOL_ACQUIRE_TIMEOUT,
                "not held up: {elapsed:?}"
            );
            drop(open);
        }
    }
    assert_eq!(login_throttle_rows(&app).await, 1);
}
