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
    let user = alphabank::domain::UserId::new(
        std::env::var("ALPHABANK_CRASH_CHILD_USER")
            .unwrap()
            .parse()
            .unwrap(),
    );
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

/// The same, against the real server binary: customers deposit at the ATM through HTTPS,
/// concurrently; the server is SIGKILLed once a dozen deposits were acknowledged (303), while
/// others are in flight. Afterwards `alphabank verify` passes on the same data and every
/// acknowledged deposit is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_server_during_atm_deposits_loses_no_acknowledged_deposit() {
    const CUSTOMERS: usize = 24;
    const ACKS_BEFORE_KILL: usize = 12;
    let mut server = crate::process::start(&[("ALPHABANK_RATE_LIMIT_PER_MIN", "100000")]).await;
    let out = server.dir.path().join("seed.json");
    let seed = Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .args([
            "seed",
            "--customers",
            &CUSTOMERS.to_string(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env_clear()
        .envs(server.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        seed.status.success(),
        "{}",
        String::from_utf8_lossy(&seed.stderr)
    );
    let seeded: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let step = crate::helpers::now_step();
    let (acks, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64)>();
    for customer in seeded {
        let (client, base, acks) = (server.client(), server.url(""), acks.clone());
        tokio::spawn(async move {
            let secret = alphabank::auth::totp::TotpSecret::from_bytes(
                &data_encoding::BASE32_NOPAD
                    .decode(customer["totp_secret"].as_str().unwrap().as_bytes())
                    .unwrap(),
            );
            let text = |r: reqwest::Response| async move { r.text().await.unwrap_or_default() };
            let Ok(page) = client.get(format!("{base}/login")).send().await else {
                return;
            };
            let page = text(page).await;
            let Some(csrf) = crate::helpers::input_value(&page, "csrf_token") else {
                return;
            };
            let code = format!("{:06}", secret.code_at_step(step));
            let login = client
                .post(format!("{base}/login"))
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("email", customer["email"].as_str().unwrap()),
                    ("password", customer["password"].as_str().unwrap()),
                    ("otp", code.as_str()),
                ])
                .send()
                .await;
            if !login.is_ok_and(|r| r.status() == 303) {
                return;
            }
            let Ok(atm) = client.get(format!("{base}/atm")).send().await else {
                return;
            };
            let atm = text(atm).await;
            let (Some(csrf), Some(key)) = (
                crate::helpers::input_value(&atm, "csrf_token"),
                crate::helpers::input_value(&atm, "idempotency_key"),
            ) else {
                return;
            };
            let code = format!("{:06}", secret.code_at_step(step + 1));
            let username = customer["username"].as_str().unwrap().to_string();
            let deposit = client
                .post(format!("{base}/atm"))
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("idempotency_key", key.as_str()),
                    ("amount", "10"),
                    ("username", username.as_str()),
                    ("card_name", "Crash Test"),
                    ("otp", code.as_str()),
                ])
                .send()
                .await;
            if let Ok(r) = deposit
                && r.status() == 303
            {
                let entry: i64 = r.headers()["location"]
                    .to_str()
                    .unwrap()
                    .trim_start_matches("/receipts/")
                    .parse()
                    .unwrap();
                let _ = acks.send((username, entry));
            }
        });
    }
    drop(acks);
    let mut acknowledged = Vec::new();
    while let Some(ack) = acked_rx.recv().await {
        acknowledged.push(ack);
        if acknowledged.len() == ACKS_BEFORE_KILL {
            server.serving.child.kill().unwrap(); // SIGKILL: no drain, no clean close
            break;
        }
    }
    assert_eq!(
        acknowledged.len(),
        ACKS_BEFORE_KILL,
        "enough deposits were acknowledged before the kill"
    );
    let _ = server.serving.child.wait();
    let verify = Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .arg("verify")
        .env_clear()
        .envs(server.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let services = open_services(Config::load_from(None, &server.env).unwrap())
        .await
        .unwrap();
    for (username, entry) in &acknowledged {
        let (user_id, _) = alphabank::store::users::id_by_username_key(&services.db, username)
            .await
            .unwrap()
            .unwrap();
        assert!(
            services
                .ledger
                .movement(user_id, *entry)
                .await
                .unwrap()
                .is_some(),
            "acknowledged deposit {entry} of {username} is missing"
        );
    }
}
