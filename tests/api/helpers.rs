//! Test harness: spawn the real application on port 0 over HTTPS with a fresh database —
//! SQLite in a temp dir, or, when `ALPHABANK_TEST_POSTGRES_URL` names a PostgreSQL server, a
//! new database created on it for this test alone.

use std::net::SocketAddr;

use alphabank::audit::AuditContext;
use alphabank::config::Config;
use alphabank::domain::{CardName, DepositAmount, Email, IdempotencyKey, UserId, Username};
use alphabank::startup::{Application, Services, ShutdownHandle, open_services};
use alphabank::store::TxWork;
use sqlx::Connection;

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub services: Services,
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub redirect_port: Option<u16>,
    shutdown: ShutdownHandle,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

pub fn postgres_admin_url() -> Option<String> {
    std::env::var("ALPHABANK_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh database URL: a new PostgreSQL database, or a SQLite file in `dir`.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match postgres_admin_url() {
        Some(admin) => {
            sqlx::any::install_default_drivers();
            let name = format!("t_{}", hex::encode(alphabank::crypto::random_bytes::<8>()));
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("connect to test PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .expect("admin URL has a database");
            format!("{base}/{name}")
        }
        None => format!("sqlite://{}?mode=rwc", dir.join("alphabank.db").display()),
    }
}

/// Environment for a test app: fresh data dir and database, port 0, a fixed master key, captcha off.
pub async fn test_env(dir: &std::path::Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("ALPHABANK_DATA_DIR".into(), dir.display().to_string()),
        (
            "ALPHABANK_DATABASE_URL".into(),
            fresh_database_url(dir).await,
        ),
        ("ALPHABANK_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "ALPHABANK_MASTER_KEY".into(),
            alphabank::crypto::MasterKey::generate()
                .to_base64()
                .to_string(),
        ),
        ("ALPHABANK_CAPTCHA".into(), "off".into()),
    ];
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = test_env(dir.path(), extra).await;
    let config = Config::load_from(None, &env).expect("valid test config");
    let plain = config.plain_http;
    let app = Application::build(config).await.expect("app builds");
    let port = app.port();
    let redirect_port = app.redirect_port();
    let services = app.services().clone();
    let shutdown = app.shutdown_handle();
    tokio::spawn(app.run_until_stopped());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        // The server closes a keep-alive connection idle for REQUEST_HEADER_TIMEOUT; a client
        // keeping it longer could send a request just as it closes (a test waiting for the next
        // code's step idles ~10 s).
        .pool_idle_timeout(alphabank::limits::REQUEST_HEADER_TIMEOUT / 2)
        .resolve("localhost", addr);
    if !plain {
        let pem = std::fs::read(dir.path().join("tls-cert.pem")).expect("generated cert");
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .tls_built_in_root_certs(false);
    }
    let client = builder.build().expect("client");
    let scheme = if plain { "http" } else { "https" };
    TestApp {
        addr,
        base: format!("{scheme}://localhost:{port}"),
        client,
        services,
        env,
        dir,
        redirect_port,
        shutdown,
    }
}

/// Services on a fresh database without a web server (ledger-level tests).
pub async fn test_services() -> (Services, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = test_env(dir.path(), &[]).await;
    let services = open_services(Config::load_from(None, &env).expect("config"))
        .await
        .expect("services");
    (services, dir)
}

/// Runs `work` as a job of SQLite's group-commit writer (committed unless it says `Abort`) and
/// hands it back; `None` on PostgreSQL, which has no such writer.
pub async fn in_batch<W: TxWork>(services: &Services, work: W) -> Option<W> {
    services.db.group_commit()?;
    Some(services.db.run_write(work).await.expect("the batch ran"))
}

pub fn ctx() -> AuditContext {
    AuditContext {
        user_id: None,
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        request_id: Some("test".into()),
    }
}

pub fn key() -> IdempotencyKey {
    IdempotencyKey::parse(&hex::encode(alphabank::crypto::random_bytes::<16>())).expect("key")
}

/// Creates a customer directly through the service (the password hash is opaque here).
pub async fn customer(services: &Services, username: &str) -> UserId {
    alphabank::customers::create(
        services,
        &ctx(),
        &Username::parse(username).expect("username"),
        &Email::parse(&format!("{username}@example.no")).expect("email"),
        "$argon2id$placeholder",
    )
    .await
    .expect("customer created")
}

pub async fn deposit(services: &Services, user_id: UserId, kroner: &str) -> i64 {
    services
        .ledger
        .deposit(
            &ctx(),
            user_id,
            DepositAmount::parse(kroner).expect("amount"),
            &CardName::parse("Test Card").expect("card"),
            &key(),
        )
        .await
        .expect("deposit")
        .entry_id()
}

pub async fn balance_minor(services: &Services, user_id: UserId) -> i64 {
    services
        .ledger
        .balance(user_id)
        .await
        .expect("balance")
        .minor()
}

/// Runs `alphabank verify` in-process: `Ok(report)` or `Err(first bad record)`.
pub async fn verify(
    services: &Services,
) -> Result<alphabank::ledger::verify::VerifyReport, String> {
    alphabank::ledger::verify::verify(&services.ledger, &services.audit)
        .await
        .expect("verify runs")
}

/// Raw SQL for tamper tests (an attacker with write access to the database file).
pub async fn exec(services: &Services, sql: String) -> u64 {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(services.db.pool())
        .await
        .expect("tamper SQL")
        .rows_affected()
}

/// The value of `<input name="NAME" … value="…">` (first match) in a page.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].replace("&#38;", "&").replace("&amp;", "&"))
}

/// The CSRF token and the confirmation of a review page.
pub fn confirm_fields(review_html: &str) -> (String, String) {
    let field = |name| {
        input_value(review_html, name)
            .unwrap_or_else(|| panic!("no {name} on the review page: {review_html:.800}"))
    };
    (field("csrf_token"), field("confirmation"))
}

/// Text of the element with `id="ID"`.
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let at = html.find(&marker)?;
    let open_end = at + html[at..].find('>')? + 1;
    let close = open_end + html[open_end..].find('<')?;
    Some(html[open_end..close].trim().to_string())
}

/// Texts of every element with class `CLASS` (simple, for flat elements).
pub fn texts_of_class(html: &str, class: &str) -> Vec<String> {
    let marker = format!("class=\"{class}\"");
    html.match_indices(&marker)
        .filter_map(|(at, _)| {
            let open_end = at + html[at..].find('>')? + 1;
            let close = open_end + html[open_end..].find('<')?;
            Some(html[open_end..close].trim().to_string())
        })
        .collect()
}

/// A customer driven through the real web flows, with their own cookie jar.
pub struct Customer {
    pub username: String,
    pub email: String,
    pub password: String,
    pub secret: alphabank::auth::totp::TotpSecret,
    pub recovery_codes: Vec<String>,
    pub client: reqwest::Client,
    pub base: String,
    pub last_step: std::rc::Rc<std::cell::Cell<i64>>,
}

pub fn now_step() -> i64 {
    alphabank::auth::totp::current_step(alphabank::now_millis() / 1000)
}

/// The step of a customer's next one-time code: after every step they used (the server refuses
/// a replay) and within the ±1 step window the server accepts. When this window's codes are
/// spent, it waits for the next step on the runtime's clock, never blocking the thread: the
/// app under test may run on the same thread, and a blocked thread would stall its requests
/// (and fire their timeouts) for up to a step.
pub async fn next_step(last_step: &std::cell::Cell<i64>) -> i64 {
    loop {
        let now_secs = alphabank::now_millis() / 1000;
        let now = alphabank::auth::totp::current_step(now_secs);
        // A code of the previous step stops being accepted when this step ends; late in a
        // step, a slow request (a browser typing) could arrive after that, so start from now.
        let oldest = if now_secs.rem_euclid(30) < 20 {
            now - 1
        } else {
            now
        };
        let step = (last_step.get() + 1).max(oldest);
        if step <= now + 1 {
            last_step.set(step);
            return step;
        }
        // This window's codes are spent: the next one becomes valid at the next step.
        let wait_millis = 30_000 - alphabank::now_millis().rem_euclid(30_000) + 250;
        tokio::time::sleep(std::time::Duration::from_millis(
            u64::try_from(wait_millis).unwrap_or(0),
        ))
        .await;
    }
}

impl Customer {
    /// A fresh code (see [`next_step`]).
    pub async fn next_code(&self) -> String {
        let step = next_step(&self.last_step).await;
        format!("{:06}", self.secret.code_at_step(step))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
    }

    /// GETs `form_page`, takes its CSRF token, and POSTs `fields` to `action`.
    pub async fn submit(
        &self,
        form_page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let page = self.get(form_page).await.text().await.unwrap();
        let csrf = input_value(&page, "csrf_token").expect("form has a csrf token");
        let mut all: Vec<(&str, &str)> = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(fields);
        self.client
            .post(format!("{}{action}", self.base))
            .form(&all)
            .send()
            .await
            .expect("POST")
    }

    pub async fn login(&self) -> reqwest::Response {
        let code = self.next_code().await;
        self.submit(
            "/login",
            "/login",
            &[
                ("email", &self.email),
                ("password", &self.password),
                ("otp", &code),
            ],
        )
        .await
    }

    /// A login with a wrong password and code.
    pub async fn wrong_login(&self) -> reqwest::Response {
        self.submit(
            "/login",
            "/login",
            &[
                ("email", &self.email),
                ("password", "wrong but long password"),
                ("otp", "123456"),
            ],
        )
        .await
    }

    pub async fn logout(&self) -> reqwest::Response {
        self.submit("/settings", "/logout", &[]).await
    }
}

impl TestApp {
    pub fn new_client(&self) -> reqwest::Client {
        let pem = std::fs::read(self.dir.path().join("tls-cert.pem")).expect("cert");
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .pool_idle_timeout(alphabank::limits::REQUEST_HEADER_TIMEOUT / 2)
            .resolve("localhost", self.addr)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .tls_built_in_root_certs(false)
            .build()
            .expect("client")
    }

    /// Signs up through the web forms (without confirming 2FA); returns the client and response.
    pub async fn signup_only(
        &self,
        username: &str,
        password: &str,
    ) -> (reqwest::Client, reqwest::Response) {
        self.signup_as(username, &format!("{username}@example.no"), password)
            .await
    }

    pub async fn signup_as(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> (reqwest::Client, reqwest::Response) {
        let client = self.new_client();
        let page = client
            .get(format!("{}/signup", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = input_value(&page, "csrf_token").expect("csrf");
        let response = client
            .post(format!("{}/signup", self.base))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("username", username),
                ("email", email),
                ("password", password),
                ("password_confirm", password),
            ])
            .send()
            .await
            .unwrap();
        (client, response)
    }

    /// A fully enrolled customer: sign-up, secret read from the page, first code, recovery codes.
    pub async fn customer(&self, username: &str) -> Customer {
        let password = format!(
            "fjord lantern quietly {}",
            hex::encode(alphabank::crypto::random_bytes::<4>())
        );
        let (client, response) = self.signup_only(username, &password).await;
        assert_eq!(response.status(), 303, "signup accepted");
        let setup = client
            .get(format!("{}/2fa/setup", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let secret_text = element_text(&setup, "totp-secret").expect("secret shown");
        let secret = alphabank::auth::totp::TotpSecret::from_bytes(
            &data_encoding::BASE32_NOPAD
                .decode(secret_text.as_bytes())
                .expect("base32"),
        );
        let customer = Customer {
            username: username.to_string(),
            email: format!("{username}@example.no"),
            password,
            secret,
            recovery_codes: Vec::new(),
            client,
            base: self.base.clone(),
            last_step: std::rc::Rc::new(std::cell::Cell::new(i64::MIN / 2)),
        };
        let code = customer.next_code().await;
        let csrf = input_value(&setup, "csrf_token").expect("csrf");
        let confirmed = customer
            .client
            .post(format!("{}/2fa/setup", self.base))
            .form(&[("csrf_token", csrf.as_str()), ("otp", code.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 303);
        assert_eq!(confirmed.headers()["location"], "/2fa/recovery");
        let recovery = customer.get("/2fa/recovery").await.text().await.unwrap();
        let codes = texts_of_class(&recovery, "recovery-code");
        assert_eq!(codes.len(), 10);
        Customer {
            recovery_codes: codes,
            ..customer
        }
    }
}

impl Customer {
    /// The same person in another browser.
    pub fn same_person(
        &self,
        secret: alphabank::auth::totp::TotpSecret,
        client: reqwest::Client,
    ) -> Customer {
        Customer {
            username: self.username.clone(),
            email: self.email.clone(),
            password: self.password.clone(),
            secret,
            recovery_codes: self.recovery_codes.clone(),
            client,
            base: self.base.clone(),
            last_step: self.last_step.clone(),
        }
    }
}

impl Customer {
    /// GETs a money form and returns its hidden fields (csrf_token, idempotency_key).
    pub async fn form_keys(&self, page: &str) -> (String, String) {
        let response = self.get(page).await;
        let status = response.status();
        let html = response.text().await.unwrap();
        let field = |name| {
            input_value(&html, name)
                .unwrap_or_else(|| panic!("no {name} in GET {page} ({status}): {html:.600}"))
        };
        (field("csrf_token"), field("idempotency_key"))
    }

    pub async fn post(&self, action: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{action}", self.base))
            .form(fields)
            .send()
            .await
            .expect("POST")
    }

    /// An ATM deposit through the form, with a fresh code.
    pub async fn deposit(&self, amount: &str) -> reqwest::Response {
        let (csrf, key) = self.form_keys("/atm").await;
        let code = self.next_code().await;
        self.post(
            "/atm",
            &[
                ("csrf_token", &csrf),
                ("idempotency_key", &key),
                ("amount", amount),
                ("username", &self.username),
                ("card_name", "Kari Nordmann"),
                ("otp", &code),
            ],
        )
        .await
    }

    /// A transfer through the form: reviewed, then confirmed with a fresh code. A refused
    /// review is answered as it came.
    pub async fn transfer(&self, to: &str, amount: &str, message: &str) -> reqwest::Response {
        let review = self.review(to, amount, message).await;
        if review.status() != 200 {
            return review;
        }
        let html = review.text().await.unwrap();
        let (csrf, confirmation) = confirm_fields(&html);
        let code = self.next_code().await;
        self.confirm(&csrf, &confirmation, &code).await
    }

    /// `POST /transfer` with a new form's keys: the review page when accepted.
    pub async fn review(&self, to: &str, amount: &str, message: &str) -> reqwest::Response {
        let (csrf, key) = self.form_keys("/transfer").await;
        self.post(
            "/transfer",
            &[
                ("csrf_token", &csrf),
                ("idempotency_key", &key),
                ("amount", amount),
                ("from_username", &self.username),
                ("to_username", to),
                ("message", message),
            ],
        )
        .await
    }

    /// `POST /transfer/confirm`.
    pub async fn confirm(&self, csrf: &str, confirmation: &str, otp: &str) -> reqwest::Response {
        self.post(
            "/transfer/confirm",
            &[
                ("csrf_token", csrf),
                ("confirmation", confirmation),
                ("otp", otp),
            ],
        )
        .await
    }

    pub async fn balance_minor(&self) -> i64 {
        let html = self.get("/").await.text().await.unwrap();
        let at = html
            .find("id=\"balance\" data-minor=\"")
            .expect("balance mark")
            + 25;
        html[at..at + html[at..].find('"').unwrap()]
            .parse()
            .unwrap()
    }

    pub async fn user_id(&self, services: &Services) -> UserId {
        let (id,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE username_key = $1")
            .bind(self.username.to_ascii_lowercase())
            .fetch_one(services.db.pool())
            .await
            .unwrap();
        UserId::new(id)
    }
}
