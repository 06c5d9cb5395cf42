//! Customers: sign-up, enrollment, login, lockout, sessions, CSRF and access control — driven
//! through the real HTTPS forms as a browser would.

use crate::helpers::{Customer, exec, input_value, now_step, spawn_app, texts_of_class};

fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-alphabank="))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("__Host-alphabank=")
        .to_string()
}

async fn body(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

#[tokio::test]
async fn signup_enrol_and_reach_home_with_a_balance_mark() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let home = kari.get("/").await;
    assert_eq!(home.status(), 200);
    let html = body(home).await;
    assert!(html.contains("id=\"balance\" data-minor=\"0\""), "{html}");
    // Recovery codes are shown once; the secret is never shown again once confirmed.
    assert_eq!(kari.get("/2fa/recovery").await.headers()["location"], "/");
    assert_eq!(kari.get("/2fa/setup").await.headers()["location"], "/");
}

#[tokio::test]
async fn signup_refusals_say_which_field_and_create_nothing() {
    let app = spawn_app().await;
    app.customer("taken").await;
    let (_, weak) = app.signup_only("newbie", "password1234").await;
    assert_eq!(weak.status(), 422);
    assert!(body(weak).await.contains("too easy to guess"));
    let (_, from_name) = app
        .signup_only("olanordmann", "olanordmann-rocks-2024")
        .await;
    assert_eq!(from_name.status(), 422);
    assert!(
        body(from_name)
            .await
            .contains("built from your username or email")
    );
    let (_, taken) = app
        .signup_as(
            "TAKEN",
            "other@example.no",
            "a perfectly fine passphrase 42",
        )
        .await;
    assert_eq!(taken.status(), 409);
    let html = body(taken).await;
    assert!(html.contains("username-error") && html.contains("This username is taken"));
    // Same email, different case, other username.
    let client = app.new_client();
    let page = body(
        client
            .get(format!("{}/signup", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let csrf = input_value(&page, "csrf_token").unwrap();
    let pw = "another fine passphrase 77";
    let dup = client
        .post(format!("{}/signup", app.base))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", "someoneelse"),
            ("email", "TAKEN@Example.no"),
            ("password", pw),
            ("password_confirm", pw),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    assert!(body(dup).await.contains("email-error"));
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_pending_session_reaches_only_enrollment_and_logout() {
    let app = spawn_app().await;
    let (client, response) = app
        .signup_only("pending", "correct horse quiet battery")
        .await;
    assert_eq!(response.headers()["location"], "/2fa/setup");
    for path in ["/", "/settings", "/2fa/recovery"] {
        let r = client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/2fa/setup", "{path}");
    }
    let setup = body(
        client
            .get(format!("{}/2fa/setup", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(setup.contains("id=\"totp-secret\"") && setup.contains("data:image/svg+xml;base64,"));
    // A wrong code is refused.
    let csrf = input_value(&setup, "csrf_token").unwrap();
    let wrong = client
        .post(format!("{}/2fa/setup", app.base))
        .form(&[("csrf_token", csrf.as_str()), ("otp", "000000")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 422);
    // Logout works for a pending session.
    let out = client
        .post(format!("{}/logout", app.base))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(
        client
            .get(format!("{}/2fa/setup", app.base))
            .send()
            .await
            .unwrap()
            .headers()["location"],
        "/"
    );
}

#[tokio::test]
async fn the_session_cookie_has_every_flag_and_a_new_id_at_every_login() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    let first = kari.login().await;
    assert_eq!(first.status(), 303);
    let cookie = set_cookie(&first).expect("session cookie set");
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    kari.logout().await;
    let second = kari.login().await;
    let cookie2 = set_cookie(&second).unwrap();
    assert_ne!(cookie_value(&cookie), cookie_value(&cookie2));
    // Only the hash is stored.
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE id_hash = $1")
        .bind(cookie_value(&cookie2))
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn login_failures_look_identical_whatever_was_wrong() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let other = app.customer("other").await;
    let attempts = [
        (
            "nobody@example.no".to_string(),
            kari.password.clone(),
            kari.next_code().await,
        ),
        (
            kari.email.clone(),
            "wrong password entirely 1".to_string(),
            kari.next_code().await,
        ),
        (
            kari.email.clone(),
            kari.password.clone(),
            "123456".to_string(),
        ),
        (
            kari.email.clone(),
            kari.password.clone(),
            format!("{:06}", kari.secret.code_at_step(now_step() - 5)),
        ),
        (
            other.email.clone(),
            other.password.clone(),
            "not-a-recovery-code".to_string(),
        ),
        ("not an email".to_string(), "x".to_string(), String::new()),
    ];
    let mut seen = Vec::new();
    for (email, password, otp) in attempts {
        let client = app.new_client();
        let page = body(
            client
                .get(format!("{}/login", app.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let csrf = input_value(&page, "csrf_token").unwrap();
        let r = client
            .post(format!("{}/login", app.base))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("email", email.as_str()),
                ("password", password.as_str()),
                ("otp", otp.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let message = texts_of_class(&body(r).await, "form-error");
        seen.push((status, message));
    }
    assert!(seen.iter().all(|s| s == &seen[0]), "{seen:?}");
    assert_eq!(seen[0].0, 401);
}

#[tokio::test]
async fn a_code_is_accepted_once_and_concurrent_use_lets_one_win() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let code = kari.next_code().await;
    let post = |client: reqwest::Client, csrf: String| {
        let (base, email, password, code) = (
            app.base.clone(),
            kari.email.clone(),
            kari.password.clone(),
            code.clone(),
        );
        async move {
            client
                .post(format!("{base}/login"))
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("email", email.as_str()),
                    ("password", password.as_str()),
                    ("otp", code.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let (a, b) = (app.new_client(), app.new_client());
    let csrf_a = input_value(
        &body(a.get(format!("{}/login", app.base)).send().await.unwrap()).await,
        "csrf_token",
    )
    .unwrap();
    let csrf_b = input_value(
        &body(b.get(format!("{}/login", app.base)).send().await.unwrap()).await,
        "csrf_token",
    )
    .unwrap();
    let (ra, rb) = tokio::join!(post(a, csrf_a), post(b, csrf_b));
    let mut statuses = [ra.as_u16(), rb.as_u16()];
    statuses.sort();
    assert_eq!(
        statuses,
        [303, 401],
        "exactly one of two concurrent logins with one code wins"
    );
    // Replay later: refused.
    let c = app.new_client();
    let csrf_c = input_value(
        &body(c.get(format!("{}/login", app.base)).send().await.unwrap()).await,
        "csrf_token",
    )
    .unwrap();
    assert_eq!(post(c, csrf_c).await, 401);
}

#[tokio::test]
async fn a_recovery_code_works_once_and_is_counted() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let code = kari.recovery_codes[3].clone();
    let login = |otp: String| {
        let kari = &kari;
        async move {
            kari.submit(
                "/login",
                "/login",
                &[
                    ("email", &kari.email),
                    ("password", &kari.password),
                    ("otp", &otp),
                ],
            )
            .await
        }
    };
    kari.logout().await;
    assert_eq!(
        login(code.to_uppercase()).await.status(),
        303,
        "case and layout are forgiven"
    );
    kari.logout().await;
    assert_eq!(
        login(code.clone()).await.status(),
        401,
        "second use refused"
    );
    assert_eq!(
        kari.get("/settings").await.status(),
        303,
        "not logged in after the refused attempt"
    );
    let ok = kari.login().await;
    assert_eq!(ok.status(), 303);
    let html = body(kari.get("/settings").await).await;
    assert!(
        html.contains("<strong>9</strong> unused recovery codes"),
        "{html}"
    );
    assert!(html.contains("Recovery code used"));
}

#[tokio::test]
async fn five_failures_lock_the_account_with_the_same_words() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    for _ in 0..5 {
        let r = kari
            .submit(
                "/login",
                "/login",
                &[
                    ("email", &kari.email),
                    ("password", "wrong but long password"),
                    ("otp", "123456"),
                ],
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let locked = kari.login().await; // correct password and a fresh code
    assert_eq!(locked.status(), 401);
    assert!(
        body(locked)
            .await
            .contains("Email, password or code is incorrect.")
    );
    let tail = app.services.audit.tail(50).await.unwrap();
    assert!(tail.iter().any(|e| e.event == "account_locked"));
    // Once the lock has passed (simulated), the customer gets in and sees the lock in settings.
    // The failures came from Kari's own browser (it logged in before): its count is the
    // device's.
    exec(&app.services, "UPDATE devices SET locked_until = 0".into()).await;
    assert_eq!(kari.login().await.status(), 303);
    let html = body(kari.get("/settings").await).await;
    assert!(html.contains("Log-in locked for 15 minutes"), "{html}");
    let (failed, lockouts): (i64, i64) = sqlx::query_as("SELECT failures, lockouts FROM devices")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(
        (failed, lockouts),
        (0, 0),
        "a successful login resets the count"
    );
}

#[tokio::test]
async fn a_repeated_lockout_lasts_twice_as_long() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    for round in 0..2 {
        for _ in 0..5 {
            kari.submit(
                "/login",
                "/login",
                &[
                    ("email", &kari.email),
                    ("password", "wrong but long password"),
                    ("otp", "123456"),
                ],
            )
            .await;
        }
        if round == 0 {
            exec(&app.services, "UPDATE devices SET locked_until = 0".into()).await;
        }
    }
    let lines = app.services.audit.tail(100).await.unwrap();
    let secs: Vec<i64> = lines
        .iter()
        .filter(|e| e.event == "account_locked")
        .map(|e| e.detail["locked_for_secs"].as_i64().unwrap())
        .collect();
    assert_eq!(secs, vec![900, 1800]);
}

#[tokio::test]
async fn idle_and_absolute_expiry_end_the_session_server_side() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    assert_eq!(kari.get("/settings").await.status(), 200);
    exec(
        &app.services,
        "UPDATE sessions SET last_seen_at = last_seen_at - 301000".into(),
    )
    .await;
    let r = kari.get("/settings").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let landing = body(kari.get("/").await).await;
    assert!(
        landing.contains("Your session ended after 5 minutes of inactivity"),
        "{landing}"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);

    assert_eq!(kari.login().await.status(), 303);
    exec(
        &app.services,
        "UPDATE sessions SET created_at = created_at - 43200000".into(),
    )
    .await;
    assert_eq!(kari.get("/settings").await.headers()["location"], "/");
}

#[tokio::test]
async fn a_session_in_use_is_kept_alive_by_its_requests() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    // 200 s idle twice is 400 s in all, more than the 5-minute idle limit: the session survives
    // only if the request in between recorded its use (the touch, batched on SQLite).
    for _ in 0..2 {
        exec(
            &app.services,
            "UPDATE sessions SET last_seen_at = last_seen_at - 200000".into(),
        )
        .await;
        assert_eq!(kari.get("/settings").await.status(), 200);
    }
    let (idle_millis,): (i64,) = sqlx::query_as("SELECT $1 - last_seen_at FROM sessions")
        .bind(alphabank::now_millis())
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert!(
        (0..10_000).contains(&idle_millis),
        "last use recorded just now, not {idle_millis} ms ago"
    );
}

#[tokio::test]
async fn logout_kills_the_session_server_side() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    kari.logout().await;
    let login = kari.login().await;
    let stolen = cookie_value(&set_cookie(&login).unwrap());
    assert_eq!(kari.logout().await.status(), 303);
    let thief = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", app.addr)
        .add_root_certificate(
            reqwest::Certificate::from_pem(
                &std::fs::read(app.dir.path().join("tls-cert.pem")).unwrap(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let r = thief
        .get(format!("{}/settings", app.base))
        .header("cookie", format!("__Host-alphabank={stolen}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
}

#[tokio::test]
async fn revoke_others_and_password_change_end_the_other_sessions() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let laptop = clone_customer(&kari, &app);
    let recovery_login = |code: String| {
        let laptop = &laptop;
        async move {
            laptop
                .submit(
                    "/login",
                    "/login",
                    &[
                        ("email", &laptop.email),
                        ("password", &laptop.password),
                        ("otp", &code),
                    ],
                )
                .await
        }
    };
    assert_eq!(
        recovery_login(kari.recovery_codes[0].clone())
            .await
            .status(),
        303
    );
    assert_eq!(laptop.get("/settings").await.status(), 200);
    let r = kari
        .submit("/settings", "/settings/sessions/revoke-others", &[])
        .await;
    assert_eq!(r.headers()["location"], "/settings");
    assert!(
        body(kari.get("/settings").await)
            .await
            .contains("1 other session was logged out.")
    );
    assert_eq!(laptop.get("/settings").await.status(), 303);

    // Password change: needs the current password and a code; ends other sessions.
    assert_eq!(
        recovery_login(kari.recovery_codes[1].clone())
            .await
            .status(),
        303
    );
    let new_password = "a brand new fjord passphrase 99";
    let wrong = kari
        .submit(
            "/settings",
            "/settings/password",
            &[
                ("current_password", "not my password at all"),
                ("new_password", new_password),
                ("new_password_confirm", new_password),
                ("otp", "000000"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let code = kari.next_code().await;
    let ok = kari
        .submit(
            "/settings",
            "/settings/password",
            &[
                ("current_password", &kari.password),
                ("new_password", new_password),
                ("new_password_confirm", new_password),
                ("otp", &code),
            ],
        )
        .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(
        laptop.get("/settings").await.status(),
        303,
        "other session ended"
    );
    assert_eq!(
        kari.get("/settings").await.status(),
        200,
        "this session lives on"
    );
}

fn clone_customer(c: &Customer, app: &crate::helpers::TestApp) -> Customer {
    // Same identity and authenticator, its own browser (cookie jar). Codes stay ordered per test.
    let secret = alphabank::auth::totp::TotpSecret::from_bytes(c.secret.as_bytes());
    Customer::same_person(c, secret, app.new_client())
}

#[tokio::test]
async fn csrf_missing_or_foreign_tokens_are_refused_with_403() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let eve = app.customer("eve").await;
    let eve_token = input_value(&body(eve.get("/settings").await).await, "csrf_token").unwrap();
    for token in [None, Some("0".repeat(64)), Some(eve_token)] {
        let mut form: Vec<(&str, &str)> = vec![];
        if let Some(t) = &token {
            form.push(("csrf_token", t));
        }
        let r = kari
            .client
            .post(format!("{}/settings/sessions/revoke-others", app.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{token:?}");
        let r = kari
            .client
            .post(format!("{}/logout", app.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    assert_eq!(kari.get("/settings").await.status(), 200, "still logged in");
    // A cross-site POST with the right token is refused too.
    let token = input_value(&body(kari.get("/settings").await).await, "csrf_token").unwrap();
    let r = kari
        .client
        .post(format!("{}/logout", app.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = kari
        .client
        .post(format!("{}/logout", app.base))
        .header("origin", "https://evil.example")
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let tail = app.services.audit.tail(100).await.unwrap();
    assert!(tail.iter().filter(|e| e.event == "csrf_rejected").count() >= 8);
}

#[tokio::test]
async fn visitors_are_sent_to_the_landing_page_from_every_customer_page() {
    let app = spawn_app().await;
    for path in ["/settings", "/2fa/recovery", "/2fa/setup"] {
        let r = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap()
            ),
            (303, "/"),
            "{path}"
        );
    }
    for path in [
        "/settings/password",
        "/settings/sessions/revoke-others",
        "/logout",
        "/2fa/setup",
    ] {
        let r = app
            .client
            .post(format!("{}{path}", app.base))
            .form(&[("x", "y")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap()
            ),
            (303, "/"),
            "POST {path}"
        );
    }
}

#[tokio::test]
async fn logged_in_customers_visiting_login_or_signup_are_sent_home() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    for path in ["/login", "/signup"] {
        let r = kari.get(path).await;
        assert_eq!(r.headers()["location"], "/", "{path}");
    }
}

#[tokio::test]
async fn at_most_ten_sessions_per_customer() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let codes = kari.recovery_codes.clone();
    for code in &codes {
        let browser = clone_customer(&kari, &app);
        let r = browser
            .submit(
                "/login",
                "/login",
                &[
                    ("email", &kari.email),
                    ("password", &kari.password),
                    ("otp", code),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
    }
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(
        kari.get("/settings").await.status(),
        303,
        "the oldest session (enrollment) ended"
    );
}

#[tokio::test]
async fn a_browser_s_origin_null_is_believed_only_with_sec_fetch_site_same_origin() {
    let app = spawn_app().await;
    let kari = app.customer("kari").await;
    let token = input_value(&body(kari.get("/settings").await).await, "csrf_token").unwrap();
    // What a browser sends under Referrer-Policy: no-referrer.
    let r = kari
        .client
        .post(format!("{}/settings/sessions/revoke-others", app.base))
        .header("origin", "null")
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "Origin: null alone is not enough");
    let r = kari
        .client
        .post(format!("{}/settings/sessions/revoke-others", app.base))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn one_address_is_throttled_after_a_hundred_failed_logins_and_others_are_not() {
    let app = crate::helpers::spawn_app_with(&[
        ("ALPHABANK_TRUSTED_PROXIES", "127.0.0.1"),
        ("ALPHABANK_RATE_LIMIT_PER_MIN", "100000"),
    ])
    .await;
    let client = app.new_client();
    let page = body(
        client
            .get(format!("{}/login", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let csrf = input_value(&page, "csrf_token").unwrap();
    let attempt = |ip: &'static str| {
        let (client, url, csrf) = (client.clone(), format!("{}/login", app.base), csrf.clone());
        async move {
            client
                .post(url)
                .header("x-forwarded-for", ip)
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("email", "nobody@example.no"),
                    ("password", "some long wrong password"),
                    ("otp", "123456"),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..alphabank::auth::LOGIN_FAILURES_PER_IP_MAX {
        assert_eq!(attempt("198.51.100.7").await, 401);
    }
    assert_eq!(
        attempt("198.51.100.7").await,
        429,
        "this address is throttled"
    );
    assert_eq!(attempt("203.0.113.9").await, 401, "another address is not");
}

#[tokio::test]
async fn one_address_may_start_twenty_sign_ups_an_hour_and_a_taken_username_costs_no_hash() {
    let app = spawn_app().await;
    let password = "fjord lantern quietly 2611";
    for i in 0..alphabank::customers::SIGNUPS_PER_IP_MAX {
        let (_, r) = app.signup_only(&format!("family{i:02}"), password).await;
        assert_eq!(r.status(), 303, "sign-up {i}");
    }
    let (_, over) = app.signup_only("family99", password).await;
    assert_eq!(over.status(), 429);
    assert!(body(over).await.contains("Too many sign-ups"));
    // A taken username is refused before the throttle and before the password is hashed.
    let (_, taken) = app.signup_only("family00", password).await;
    assert_eq!(taken.status(), 409);
    let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(users, alphabank::customers::SIGNUPS_PER_IP_MAX);
    let tail = app.services.audit.tail(200).await.unwrap();
    assert_eq!(
        tail.iter()
            .filter(|e| e.event == "signup_throttled")
            .count(),
        1
    );
    // The window passes (simulated): sign-ups are possible again.
    exec(
        &app.services,
        "UPDATE signup_throttle SET window_start = 0".into(),
    )
    .await;
    let (_, again) = app.signup_only("family99", password).await;
    assert_eq!(again.status(), 303);
}

#[tokio::test]
async fn eighty_sign_ups_at_once_from_one_address_leave_other_visitors_logins_working() {
    let app = crate::helpers::spawn_app_with(&[
        ("ALPHABANK_TRUSTED_PROXIES", "127.0.0.1"),
        ("ALPHABANK_RATE_LIMIT_PER_MIN", "100000"),
    ])
    .await;
    let mut people = Vec::new();
    for i in 0..4 {
        let c = app.customer(&format!("visitor{i}")).await;
        c.logout().await;
        people.push(c);
    }
    let signup = |i: usize| {
        let (client, base) = (app.new_client(), app.base.clone());
        async move {
            let from = ("x-forwarded-for", "198.51.100.7");
            let page = client
                .get(format!("{base}/signup"))
                .header(from.0, from.1)
                .send()
                .await
                .unwrap();
            let csrf = input_value(&body(page).await, "csrf_token").unwrap();
            let (name, email) = (format!("flood{i:02}"), format!("flood{i:02}@example.no"));
            let password = "fjord lantern quietly 2611";
            client
                .post(format!("{base}/signup"))
                .header(from.0, from.1)
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("username", &name),
                    ("email", &email),
                    ("password", password),
                    ("password_confirm", password),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (signups, logins) = tokio::join!(
        futures_util::future::join_all((0..80).map(signup)),
        futures_util::future::join_all(people.iter().map(|c| c.login())),
    );
    let logins: Vec<u16> = logins.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(logins, vec![303; 4], "other visitors log in: {signups:?}");
    let accepted = signups.iter().filter(|s| **s == 303).count();
    assert!(
        accepted as i64 <= alphabank::customers::SIGNUPS_PER_IP_MAX,
        "{signups:?}"
    );
    assert!(
        signups.iter().all(|s| matches!(s, 303 | 429)),
        "{signups:?}"
    );
}
