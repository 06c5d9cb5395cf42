//! Test harness: spawn the real application on port 0 over HTTPS with a fresh database —
//! SQLite in a temp dir, or, when `ALPHABANK_TEST_POSTGRES_URL` names a PostgreSQL server, a
//! new database created on it for this test alone.

use std::net::SocketAddr;

use alphabank::audit::AuditContext;
use alphabank::config::Config;
use alphabank::domain::{CardName, DepositAmount, Email, IdempotencyKey, Username};
use alphabank::startup::{Application, Services, ShutdownHandle, open_services};
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
pub async fn customer(services: &Services, username: &str) -> i64 {
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

pub async fn deposit(services: &Services, user_id: i64, kroner: &str) -> i64 {
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

pub async fn balance_minor(services: &Services, user_id: i64) -> i64 {
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
