//! The command line: `serve` (default), `migrate`, `verify`, `audit tail`, `keys rotate`,
//! `keys rotate-master`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit::{AuditContext, AuditEvent};
use crate::config::Config;
use crate::crypto::rotation::{self, MasterRotationError};
use crate::limits::AUDIT_TAIL_ROWS_MAX;
use crate::services::Services;
use crate::startup::{Application, StartError, open_services};

#[derive(Parser, Debug)]
#[command(
    name = "alphabank",
    version,
    about = "AlphaBank: a security-first web bank"
)]
pub struct Cli {
    /// TOML configuration file (else $ALPHABANK_CONFIG; no file is read unless named).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the bank (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Check ledger conservation and the integrity of the ledger and audit chains.
    Verify,
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Create N enrolled demo customers (and H movements for the first) in an empty database.
    Seed {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::seed::SEED_CUSTOMERS_MAX)))]
        customers: u32,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::seed::SEED_MOVEMENTS_MAX)))]
        movements: u32,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Manage data keys and the master key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the last N audit events, one JSON object a line.
    Tail {
        #[arg(short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=i64::from(AUDIT_TAIL_ROWS_MAX)))]
        n: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a new data key and re-encrypt every encrypted field under it.
    Rotate {
        /// Skip the 35 s wait that lets serving instances learn the new key first; only when no
        /// other instance is serving.
        #[arg(long)]
        no_wait: bool,
    },
    /// Rotate the master key in two phases, safe while instances serve: with the current key
    /// configured, `--new-key-file PATH` wraps every data key under the new key too (generating
    /// PATH, mode 0600, if it does not exist); restart every instance with the new key; then, with
    /// the new key configured, `--finish` drops the old key's wrappings.
    RotateMaster {
        /// The new master key (base64, mode 0600); generated here if the file does not exist.
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "finish",
            conflicts_with = "finish"
        )]
        new_key_file: Option<PathBuf>,
        /// Finish a pending rotation (run with the NEW master key configured).
        #[arg(long)]
        finish: bool,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    let file = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("ALPHABANK_CONFIG").map(PathBuf::from));
    let config = match Config::load(file.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    crate::telemetry::init(config.log_format, !matches!(command, Command::Serve));
    if let Command::Serve = command {
        return match Application::build(config).await {
            Ok(app) => match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("server stopped: {error}")),
            },
            Err(error) => start_failed(&error),
        };
    }
    let services = match open_services(config).await {
        Ok(services) => services,
        Err(error) => return start_failed(&error),
    };
    let code = run_command(&services, command).await;
    services.db.close().await;
    code
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn start_failed(error: &StartError) -> ExitCode {
    fail(&error.to_string())
}

async fn run_command(services: &Services, command: Command) -> ExitCode {
    match command {
        Command::Serve => ExitCode::SUCCESS,
        Command::Migrate => {
            println!("database schema is up to date");
            ExitCode::SUCCESS
        }
        Command::Verify => verify(services).await,
        Command::Audit {
            command: AuditCommand::Tail { n },
        } => audit_tail(services, n).await,
        Command::Seed {
            customers,
            movements,
            out,
        } => seed(services, customers, movements, &out).await,
        Command::Keys {
            command:
                KeysCommand::RotateMaster {
                    new_key_file,
                    finish,
                },
        } => rotate_master(services, new_key_file, finish).await,
        Command::Keys {
            command: KeysCommand::Rotate { no_wait },
        } => rotate_data_key(services, no_wait).await,
    }
}

async fn verify(services: &Services) -> ExitCode {
    match crate::ledger::verify::check(&services.ledger, &services.audit).await {
        Ok(Ok(report)) => {
            println!(
                "verify: ok {}",
                serde_json::to_string(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(problem)) => fail(&format!("verify FAILED: {problem}")),
        Err(error) => fail(&format!("verify could not run: {error}")),
    }
}

async fn audit_tail(services: &Services, n: u32) -> ExitCode {
    match services.audit.tail(n).await {
        Ok(lines) => {
            for line in lines {
                println!("{}", serde_json::to_string(&line).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("cannot read the audit log: {error}")),
    }
}

async fn seed(services: &Services, customers: u32, movements: u32, out: &Path) -> ExitCode {
    let started = std::time::Instant::now();
    match crate::seed::seed(services, customers, movements, out).await {
        Ok(()) => {
            println!(
                "seed: {customers} customers, {movements} movements for the first, credentials in {} (mode 0600), {:.1} s",
                out.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("seed: {error}")),
    }
}

/// `keys rotate`: refused while a master-key rotation is pending.
async fn rotate_data_key(services: &Services, no_wait: bool) -> ExitCode {
    if matches!(
        rotation::master_rotation_pending(&services.db).await,
        Ok(true)
    ) {
        return fail(&format!(
            "keys rotate refused: {}",
            rotation::MASTER_ROTATION_PENDING
        ));
    }
    let delay = if no_wait {
        std::time::Duration::ZERO
    } else {
        crate::crypto::KEYRING_REFRESH_INTERVAL + crate::crypto::KEYRING_ANNOUNCE_MARGIN
    };
    match rotation::rotate_with_announce_delay(&services.db, &services.keyring, delay).await {
        Ok(report) => {
            services
                .audit
                .record_best_effort(
                    &AuditContext::system(),
                    AuditEvent::KeyRotation {
                        new_key_id: report.new_key_id,
                        resealed: report.resealed,
                    },
                )
                .await;
            println!(
                "keys rotate: data key {} is active; {} fields re-sealed{}; older keys are retired (kept readable for backups)",
                report.new_key_id,
                report.resealed,
                if report.resumed {
                    " (resumed an interrupted rotation)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("key rotation failed: {error}")),
    }
}

/// `keys rotate-master`: phase 1 with `--new-key-file PATH`, phase 2 with `--finish`.
async fn rotate_master(
    services: &Services,
    new_key_file: Option<PathBuf>,
    finish: bool,
) -> ExitCode {
    if finish {
        return finish_master_rotation(services).await;
    }
    let Some(path) = new_key_file else {
        return fail("keys rotate-master needs --new-key-file PATH or --finish");
    };
    start_master_rotation(services, &path).await
}

fn master_rotation_failed(error: MasterRotationError) -> ExitCode {
    match error {
        MasterRotationError::Refused(why) => fail(&format!("keys rotate-master refused: {why}")),
        MasterRotationError::Crypto(error) => fail(&format!("keys rotate-master failed: {error}")),
    }
}

async fn record_master_rotation(
    services: &Services,
    phase: &'static str,
    new_master_key_id: &str,
    data_keys: u64,
) {
    services
        .audit
        .record_best_effort(
            &AuditContext::system(),
            AuditEvent::MasterKeyRotation {
                phase,
                new_master_key_id: new_master_key_id.to_string(),
                data_keys,
            },
        )
        .await;
}

async fn start_master_rotation(services: &Services, path: &Path) -> ExitCode {
    let started = match rotation::start_master_rotation(&services.db, &services.keyring, path).await
    {
        Ok(started) => started,
        Err(error) => return master_rotation_failed(error),
    };
    if started.generated {
        println!(
            "keys rotate-master: generated a new master key in {} (mode 0600); back it up now",
            path.display()
        );
    }
    if started.already_pending {
        println!(
            "keys rotate-master: the rotation to this new master key (id {}) was already started; nothing changed",
            started.new_master_id
        );
    } else {
        record_master_rotation(
            services,
            "started",
            &started.new_master_id,
            started.data_keys,
        )
        .await;
        println!(
            "keys rotate-master: started; {} data keys are now wrapped under the current and the new master key (id {})",
            started.data_keys, started.new_master_id
        );
    }
    println!(
        "next: restart every instance, one at a time, with the new key (ALPHABANK_MASTER_KEY_FILE={} or its contents in ALPHABANK_MASTER_KEY), then run `alphabank keys rotate-master --finish` with the new key configured",
        path.display()
    );
    ExitCode::SUCCESS
}

async fn finish_master_rotation(services: &Services) -> ExitCode {
    match rotation::finish_master_rotation(&services.db, &services.keyring).await {
        Ok(done) => {
            record_master_rotation(services, "finished", &done.new_master_id, done.data_keys).await;
            println!(
                "keys rotate-master: finished; {} data keys are now wrapped only under the new master key (id {}). The old master key no longer opens this database: restart any instance still running with it, and destroy it once no backup taken before now needs it.",
                done.data_keys, done.new_master_id
            );
            ExitCode::SUCCESS
        }
        Err(error) => master_rotation_failed(error),
    }
}
