//! Start-up: open the services (database, migrations, keyring, ledger, audit) and build the
//! listeners. `Application::build` binds (port 0 in tests) and exposes `port()`; `main` only
//! parses the command line and calls it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::audit::AuditLog;
use crate::auth::passkey::Passkeys;
use crate::auth::password::{HashError, PasswordHasher};
use crate::captcha::Captcha;
use crate::config::{CaptchaMode, Config, ConfigError};
use crate::crypto::master::MasterKeySource;
use crate::crypto::{CryptoError, Keyring, MasterKey};
use crate::ledger::{Ledger, LedgerError};
use crate::limits::SHUTDOWN_DRAIN_TIMEOUT;
use crate::payments::{PaymentParts, Payments};
use crate::rate_limit::ClientLimiter;
use crate::services::ServiceSet;
use crate::store::{Db, StoreError, keys as key_store};
use crate::tls::TlsError;

/// What [`open_services`] opens and [`Application::services`] returns.
pub use crate::services::Services;

/// Why the services or the listeners could not start; shown as one line after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[source] ConfigError),
    #[error("database: {0}")]
    Database(#[source] DatabaseError),
    #[error("{0}")]
    Keys(#[source] KeysError),
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory: cannot {action} {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        action: DataDirAction,
        #[source]
        source: std::io::Error,
    },
}

/// Which database step failed.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("{0}")]
    Connect(#[source] StoreError),
    #[error("migration failed: {0}")]
    Migrate(#[source] StoreError),
    #[error("{0}")]
    ListKeys(#[source] StoreError),
    #[error("{0}")]
    CashAccount(#[source] LedgerError),
}

/// Which key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    MasterKey(#[source] CryptoError),
    #[error(
        "the master key cannot open the stored data keys (wrong ALPHABANK_MASTER_KEY or master key file)"
    )]
    WrongMasterKey,
    #[error("{0}")]
    Keyring(#[source] CryptoError),
    #[error("{0}")]
    PasswordHasher(#[source] HashError),
}

/// What could not be done to the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirAction {
    Create,
    Protect,
}

impl std::fmt::Display for DataDirAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataDirAction::Create => "create",
            DataDirAction::Protect => "protect",
        })
    }
}

fn prepare_data_dir(config: &Config) -> Result<(), StartError> {
    let dir = &config.data_dir;
    let failed = |action| {
        move |source| StartError::DataDir {
            path: dir.clone(),
            action,
            source,
        }
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(failed(DataDirAction::Create))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(failed(DataDirAction::Protect))?;
        tracing::info!(path = %dir.display(), "created data directory");
    }
    Ok(())
}

/// Opens the database (applying migrations) and the keyring. Every command goes through here, so
/// a master key that cannot open the stored data keys stops every command.
pub async fn open_services(config: Config) -> Result<Services, StartError> {
    if config.is_sqlite() {
        prepare_data_dir(&config)?;
    }
    let db = Db::connect(config.database_url.expose())
        .await
        .map_err(|e| StartError::Database(DatabaseError::Connect(e)))?;
    db.migrate()
        .await
        .map_err(|e| StartError::Database(DatabaseError::Migrate(e)))?;
    let keys_exist = !key_store::list(&db)
        .await
        .map_err(|e| StartError::Database(DatabaseError::ListKeys(e)))?
        .is_empty();
    let (master, master_key_source) = MasterKey::load(
        config.master_key.as_ref().map(|s| s.expose()),
        &config.master_key_file,
        !keys_exist,
    )
    .map_err(|e| StartError::Keys(KeysError::MasterKey(e)))?;
    let keyring = Keyring::load(&db, master).await.map_err(|e| match e {
        CryptoError::WrongMasterKey => StartError::Keys(KeysError::WrongMasterKey),
        other => StartError::Keys(KeysError::Keyring(other)),
    })?;
    let audit = AuditLog::new(db.clone(), keyring.clone());
    let ledger = Ledger::new(db.clone(), keyring.clone(), audit.clone());
    ledger
        .ensure_cash_account()
        .await
        .map_err(|e| StartError::Database(DatabaseError::CashAccount(e)))?;
    let captcha =
        Captcha::try_new(&config, db.clone(), keyring.clone()).map_err(StartError::Config)?;
    let outbox = crate::mail::Outbox::new(
        db.clone(),
        keyring.clone(),
        audit.clone(),
        &config.public_url,
    );
    let passkeys = Passkeys::new(
        &config.public_url,
        db.clone(),
        keyring.clone(),
        audit.clone(),
        outbox.clone(),
    );
    let payments = Payments::new(PaymentParts {
        db: db.clone(),
        keyring: keyring.clone(),
        ledger: ledger.clone(),
        audit: audit.clone(),
        captcha: captcha.clone(),
        passkeys: passkeys.clone(),
        outbox: outbox.clone(),
    });
    let hasher = PasswordHasher::new(config.argon2)
        .map_err(|e| StartError::Keys(KeysError::PasswordHasher(e)))?;
    let rate_limiter = Arc::new(ClientLimiter::per_minute(config.rate_limit_per_min));
    Ok(Services::from(ServiceSet {
        config: Arc::new(config),
        db,
        keyring,
        audit,
        ledger,
        payments,
        passkeys,
        outbox,
        hasher,
        captcha,
        rate_limiter,
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            crate::limits::REQUESTS_IN_FLIGHT_MAX,
        )),
        master_key_source,
    }))
}

/// A bound, ready-to-run web server (and its optional HTTP→HTTPS redirector).
pub struct Application {
    services: Services,
    listener: std::net::TcpListener,
    port: u16,
    tls: Option<RustlsConfig>,
    redirect: Option<(std::net::TcpListener, u16)>,
    handle: Handle<SocketAddr>,
    mail: crate::mail::sender::Transport,
}

/// Stops a running [`Application`] gracefully (in-flight requests drain).
#[derive(Clone)]
pub struct ShutdownHandle(Handle<SocketAddr>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.graceful_shutdown(Some(SHUTDOWN_DRAIN_TIMEOUT));
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let failed = |source| StartError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    Ok(listener)
}

fn local_port(listener: &std::net::TcpListener, addr: SocketAddr) -> Result<u16, StartError> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| StartError::Bind { addr, source })
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // Bound first: with `ALPHABANK_LISTEN` on port 0 the default public URL (the WebAuthn
        // origin) names the port the system chose.
        let listener = bind(config.listen)?;
        let port = local_port(&listener, config.listen)?;
        let config = config.with_bound_port(port);
        let services = open_services(config).await?;
        let config = services.config.clone();
        log_start_warnings(&config);
        let mail = crate::mail::sender::Transport::new(&config).map_err(|problem| {
            StartError::Config(ConfigError {
                variable: "ALPHABANK_SMTP_URL".into(),
                problem,
            })
        })?;
        match &services.master_key_source {
            MasterKeySource::Generated(path) => {
                tracing::info!(path = %path.display(), "generated a new master key (mode 0600); back it up: without it the data cannot be read")
            }
            MasterKeySource::File(path) => {
                tracing::info!(path = %path.display(), "master key loaded from file")
            }
            MasterKeySource::Environment => {
                tracing::info!("master key loaded from ALPHABANK_MASTER_KEY")
            }
        }
        let tls = if config.plain_http {
            None
        } else {
            let files = crate::tls::ensure_files(
                config.tls_cert.as_deref(),
                config.tls_key.as_deref(),
                &config.data_dir,
            )
            .map_err(StartError::Tls)?;
            let fingerprint = crate::tls::fingerprint(&files.cert).map_err(StartError::Tls)?;
            tracing::info!(
                certificate = %files.cert.display(),
                private_key = %files.key.display(),
                sha256_fingerprint = %fingerprint,
                generated = files.generated,
                "TLS certificate"
            );
            let server_config = crate::tls::server_config(&files).map_err(StartError::Tls)?;
            Some(RustlsConfig::from_config(server_config))
        };
        let redirect = match config.http_redirect_listen {
            Some(addr) => {
                let l = bind(addr)?;
                let p = local_port(&l, addr)?;
                Some((l, p))
            }
            None => None,
        };
        Ok(Application {
            services,
            listener,
            port,
            tls,
            redirect,
            handle: Handle::new(),
            mail,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect.as_ref().map(|(_, p)| *p)
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.handle.clone())
    }

    /// Serves until SIGTERM/SIGINT (or a [`ShutdownHandle`]), drains in-flight requests, then
    /// closes the database.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            services,
            listener,
            port,
            tls,
            redirect,
            handle,
            mail,
        } = self;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %format!("{scheme}://{}", listener.local_addr()?), "AlphaBank is serving");
        let signal_handle = handle.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; draining in-flight requests");
            signal_handle.graceful_shutdown(Some(SHUTDOWN_DRAIN_TIMEOUT));
        });
        let refresh = spawn_keyring_refresh(&services);
        let sender = tokio::spawn(crate::mail::sender::run(services.clone(), mail));
        let redirect_task = redirect.map(|(l, _)| {
            let redirect_handle = Handle::new();
            let inner = redirect_handle.clone();
            tokio::spawn(async move {
                let app = crate::web::redirect_router(port);
                let served = axum_server::from_tcp(l)
                    .map(|s| s.handle(inner).serve(app.into_make_service()));
                match served {
                    Ok(fut) => {
                        if let Err(error) = fut.await {
                            tracing::error!(%error, "redirect listener failed");
                        }
                    }
                    Err(error) => tracing::error!(%error, "redirect listener failed"),
                }
            });
            redirect_handle
        });
        let app = crate::web::router(services.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = match tls {
            Some(tls) => {
                let mut server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
                limit_http(server.http_builder());
                server.serve(app).await
            }
            None => {
                let mut server = axum_server::from_tcp(listener)?.handle(handle);
                limit_http(server.http_builder());
                server.serve(app).await
            }
        };
        if let Some(redirect_handle) = redirect_task {
            redirect_handle.graceful_shutdown(Some(SHUTDOWN_DRAIN_TIMEOUT));
        }
        refresh.abort();
        sender.abort();
        services.db.close().await;
        tracing::info!("stopped; database closed");
        result
    }
}

/// Bounds on the HTTP layer: slow-client header timeout (slowloris) and request head size.
fn limit_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(crate::limits::REQUEST_HEADER_TIMEOUT)
        .max_buf_size(crate::limits::REQUEST_HEAD_BYTES_MAX);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(
            u32::try_from(crate::limits::REQUEST_HEAD_BYTES_MAX).unwrap_or(u32::MAX),
        );
}

/// Background upkeep: re-read the keyring (after `keys rotate`), evict idle rate-limit keys,
/// and delete expired sessions (expiry is also checked on every request).
fn spawn_keyring_refresh(services: &Services) -> tokio::task::JoinHandle<()> {
    let services = services.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(crate::crypto::KEYRING_REFRESH_INTERVAL);
        interval.tick().await;
        loop {
            interval.tick().await;
            if let Err(error) = services.keyring.refresh(&services.db).await {
                tracing::error!(%error, "could not refresh the keyring");
            }
            services.rate_limiter.evict_idle();
            let now = crate::now_millis();
            let idle = i64::try_from(services.config.session_idle_secs).unwrap_or(0) * 1_000;
            let absolute =
                i64::try_from(services.config.session_absolute_secs).unwrap_or(0) * 1_000;
            if let Err(error) =
                crate::store::passkeys::delete_expired_challenges(&services.db, now).await
            {
                tracing::error!(%error, "could not delete expired passkey challenges");
            }
            if let Err(error) =
                crate::store::sessions::delete_expired(&services.db, now - idle, now - absolute)
                    .await
            {
                tracing::error!(%error, "could not delete expired sessions");
            }
        }
    })
}

fn log_start_warnings(config: &Config) {
    if config.plain_http {
        tracing::warn!(
            "ALPHABANK_PLAIN_HTTP=true: serving plain HTTP; only safe behind a TLS-terminating proxy"
        );
    }
    if config.smtp.is_none() {
        tracing::warn!(
            outbox = %config.data_dir.join("outbox").display(),
            "ALPHABANK_SMTP_URL is not set: mail is written to files in the outbox directory, not sent"
        );
    }
    if config.captcha == CaptchaMode::Off {
        tracing::warn!(
            "ALPHABANK_CAPTCHA=off: forms are not protected against bots; never use this in production"
        );
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_print_one_line_naming_what_failed() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let cases = [
            (
                StartError::DataDir {
                    path: PathBuf::from("/srv/bank"),
                    action: DataDirAction::Protect,
                    source: denied(),
                },
                format!("data directory: cannot protect /srv/bank: {}", denied()),
            ),
            (
                StartError::Bind {
                    addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
                    source: denied(),
                },
                format!("cannot listen on 127.0.0.1:8443: {}", denied()),
            ),
            (
                StartError::Database(DatabaseError::Migrate(StoreError::Busy)),
                "database: migration failed: the database is busy; try again".to_string(),
            ),
            (
                StartError::Keys(KeysError::WrongMasterKey),
                "the master key cannot open the stored data keys (wrong ALPHABANK_MASTER_KEY or master key file)".to_string(),
            ),
        ];
        for (error, printed) in cases {
            assert_eq!(error.to_string(), printed);
        }
    }
}
