//! Crash test: SIGKILL a process in the middle of a stream of deposits, open the same database
//! again, and find every acknowledged deposit there and `verify` intact.
//!
//! The writer is this test binary itself, re-executed to run `crash_child_deposit_stream` (an
//! ignored test that does nothing unless the parent sets `ALPHABANK_CRASH_CHILD_ENV`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use alphabank::config::Config;
use alphabank::startup::open_services;

use crate::helpers::{customer, deposit, test_env, verify};

const ACKS_BEFORE_KILL: usize = 40;

#[tokio::test]
async fn sigkill_during_deposits_loses_no_acknowledged_deposit() {
    let dir = tempfile::tempdir().unwrap();
    let env = test_env(dir.path(), &[]).await;
    let services = open_services(Config::load_from(None, &env).unwrap())
        .await
        .unwrap();
    let user = customer(&services, "crashtest").await;
    services.db.close().await;

    let encoded: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_deposit_stream",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALPHABANK_CRASH_CHILD_ENV", encoded)
        .env("ALPHABANK_CRASH_CHILD_USER", user.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acknowledged = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("ACK ") {
            acknowledged.push(id.trim().parse::<i64>().unwrap());
            if acknowledged.len() == ACKS_BEFORE_KILL {
                child.kill().unwrap(); // SIGKILL on Unix: no destructors, no clean shutdown
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    assert_eq!(acknowledged.len(), ACKS_BEFORE_KILL);

    let services = open_services(Config::load_from(None, &env).unwrap())
        .await
        .unwrap();
    let report = verify(&services).await.expect("verify after crash");
    for entry_id in &acknowledged {
        assert!(
            services
                .ledger
                .movement(user, *entry_id)
                .await
                .unwrap()
                .is_some(),
            "acknowledged deposit {entry_id} is missing after the crash"
        );
    }
    let balance = services.ledger.balance(user).await.unwrap().minor();
    assert!(
        balance >= ACKS_BEFORE_KILL as i64 * 100,
        "balance {balance} øre covers every acknowledged deposit"
    );
    assert_eq!(report.customer_money_minor, balance);
}

/// The writer half of the crash test; does nothing when run on its own.
#[tokio::test]
#[ignore = "child process of sigkill_during_deposits_loses_no_acknowledged_deposit"]
async fn crash_child_deposit_stream() {
    let Ok(encoded) = std::env::var("ALPHABANK_CRASH_CHILD_ENV") else {
        return;
    };
    let user: i64 = std::env::var("ALPHABANK_CRASH_CHILD_USER")
        .unwrap()
        .parse()
        .unwrap();
    let env: Vec<(String, String)> = encoded
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let services = open_services(Config::load_from(None, &env).unwrap())
        .await
        .unwrap();
    use std::io::Write;
    loop {
        let entry = deposit(&services, user, "1").await;
        // Printed only after the commit returned: an acknowledgement.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {entry}").unwrap();
        out.flush().unwrap();
    }
}
