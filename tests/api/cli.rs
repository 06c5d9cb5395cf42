//! The operator's command line, run as the real binary: configuration errors, `verify`,
//! `audit tail`, `keys rotate`, a wrong master key, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use alphabank::domain::{Amount, Message, Username};

use crate::helpers::{ctx, customer, deposit, exec, key, spawn_app, test_env};

fn alphabank(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn a_bad_configuration_value_stops_the_start_with_one_line_naming_it() {
    for (var, value) in [
        ("ALPHABANK_SESSION_IDLE_SECS", "five"),
        ("ALPHABANK_ARGON2_M_KIB", "8"),
        ("ALPHABANK_LISTEN", "localhost"),
        ("ALPHABANK_TLS_CERT", "/nonexistent.pem"),
    ] {
        let out = alphabank(&[(var.to_string(), value.to_string())], &["migrate"]);
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(var), "{err}");
    }
}

#[tokio::test]
async fn verify_passes_on_a_healthy_database_and_fails_naming_the_record_after_tampering() {
    let app = spawn_app().await;
    let s = &app.services;
    let alice = customer(s, "alice").await;
    customer(s, "bob").await;
    deposit(s, alice, "100").await;
    s.ledger
        .transfer(
            &ctx(),
            alice,
            &Username::parse("bob").unwrap(),
            Amount::parse("5").unwrap(),
            &Message::default(),
            &key(),
        )
        .await
        .unwrap();
    let ok = alphabank(&app.env, &["verify"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("verify: ok"));

    exec(
        s,
        "UPDATE journal_entries SET initiator_user_id = initiator_user_id WHERE 1 = 0".into(),
    )
    .await;
    exec(s, "UPDATE postings SET created_at = created_at + 1000 WHERE seq = 1 AND counterparty_account_id IS NOT NULL AND account_id <> 1".into()).await;
    let bad = alphabank(&app.env, &["verify"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("posting account="),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn a_wrong_master_key_stops_every_command() {
    let app = spawn_app().await;
    let mut env = app.env.clone();
    env.retain(|(k, _)| k != "ALPHABANK_MASTER_KEY");
    env.push((
        "ALPHABANK_MASTER_KEY".into(),
        alphabank::crypto::MasterKey::generate()
            .to_base64()
            .to_string(),
    ));
    for args in [
        &["verify"][..],
        &["migrate"],
        &["audit", "tail"],
        &["serve"],
    ] {
        let out = alphabank(&env, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("master key cannot open the stored data keys"),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn audit_tail_prints_json_lines_without_secrets() {
    let app = spawn_app().await;
    let alice = customer(&app.services, "alice").await;
    deposit(&app.services, alice, "42").await;
    let out = alphabank(&app.env, &["audit", "tail", "-n", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"], "signup");
    assert_eq!(lines[1]["event"], "deposit");
    assert_eq!(lines[1]["user_id"], alice.get());
    assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    // Amounts are sealed in the journal; the audit detail names only the entry.
    let detail = lines[1]["detail"].as_object().unwrap();
    assert_eq!(detail.keys().collect::<Vec<_>>(), vec!["entry_id"]);
    let master = app
        .env
        .iter()
        .find(|(k, _)| k == "ALPHABANK_MASTER_KEY")
        .unwrap()
        .1
        .clone();
    assert!(!text.contains(&master));
    let bad = alphabank(&app.env, &["audit", "tail", "-n", "0"]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn keys_rotate_reseals_every_field_and_the_data_still_reads() {
    let app = spawn_app().await;
    let s = &app.services;
    let alice = customer(s, "alice").await;
    customer(s, "bob").await;
    deposit(s, alice, "100").await;
    s.ledger
        .transfer(
            &ctx(),
            alice,
            &Username::parse("bob").unwrap(),
            Amount::parse("5").unwrap(),
            &Message::parse("hei").unwrap(),
            &key(),
        )
        .await
        .unwrap();
    let before = s.keyring.active_key_id();

    let out = alphabank(&app.env, &["keys", "rotate", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.keyring.refresh(&s.db).await.unwrap();
    let after = s.keyring.active_key_id();
    assert_ne!(before, after);
    // Every sealed value now names the new key.
    for (table, column) in [
        ("accounts", "balance_enc"),
        ("postings", "amount_enc"),
        ("users", "email_enc"),
        ("journal_entries", "message_enc"),
    ] {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
        )))
        .fetch_all(s.db.pool())
        .await
        .unwrap();
        assert!(!rows.is_empty());
        for (ct,) in rows {
            assert_eq!(
                alphabank::crypto::Keyring::key_id_of(&ct).unwrap(),
                after,
                "{table}.{column}"
            );
        }
    }
    assert_eq!(s.ledger.balance(alice).await.unwrap().minor(), 9_500);
    let history = s.ledger.history(alice, 1, 20).await.unwrap();
    assert_eq!(history.rows[0].message.as_deref(), Some("hei"));
    assert!(alphabank(&app.env, &["verify"]).status.success());
    let tail =
        String::from_utf8(alphabank(&app.env, &["audit", "tail", "-n", "1"]).stdout).unwrap();
    assert!(tail.contains("key_rotation"));
}

#[tokio::test]
async fn an_interrupted_rotation_resumes_without_creating_another_key() {
    let app = spawn_app().await;
    let s = &app.services;
    let alice = customer(s, "alice").await;
    deposit(s, alice, "100").await;
    // Simulate a rotation that stopped right after the new key was stored.
    let first = alphabank(&app.env, &["keys", "rotate", "--no-wait"]);
    assert!(first.status.success());
    exec(
        s,
        "UPDATE data_keys SET state = 'retiring' WHERE purpose = 'enc' AND state = 'retired'"
            .into(),
    )
    .await;
    let keys_before: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_keys")
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    let resumed = alphabank(&app.env, &["keys", "rotate", "--no-wait"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("resumed"));
    let keys_after: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_keys")
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    assert_eq!(keys_before, keys_after);
}

#[tokio::test]
async fn sigterm_drains_and_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_env(dir.path(), &[]).await;
    env.push(("ALPHABANK_LOG_FORMAT".into(), "json".into()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .arg("serve")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("server prints its address").unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value["message"] == "AlphaBank is serving" {
            break value["address"].as_str().unwrap().to_string();
        }
    };
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let pem = std::fs::read(dir.path().join("tls-cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let health = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM");
    assert!(
        rest.iter().any(|l| l.contains("database closed")),
        "{rest:?}"
    );
}

#[tokio::test]
async fn seed_creates_enrolled_customers_who_can_log_in_and_refuses_a_second_run() {
    let app = spawn_app().await;
    let out = app.dir.path().join("seeded.json");
    let run = alphabank(
        &app.env,
        &[
            "seed",
            "--customers",
            "3",
            "--movements",
            "2000",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let seeded: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(seeded.len(), 3);
    assert_eq!(seeded[0]["username"], "customer00001");
    // The first customer logs in through the web with the written credentials.
    let secret = alphabank::auth::totp::TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(seeded[0]["totp_secret"].as_str().unwrap().as_bytes())
            .unwrap(),
    );
    let client = app.new_client();
    let page = client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::helpers::input_value(&page, "csrf_token").unwrap();
    let code = format!("{:06}", secret.code_at_step(crate::helpers::now_step()));
    let r = client
        .post(format!("{}/login", app.base))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", seeded[0]["email"].as_str().unwrap()),
            ("password", seeded[0]["password"].as_str().unwrap()),
            ("otp", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let history = client
        .get(format!("{}/transactions", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        history.contains("2000 movements · page 1 of 100"),
        "{history}"
    );
    assert!(alphabank(&app.env, &["verify"]).status.success());
    let again = alphabank(
        &app.env,
        &["seed", "--customers", "1", "--out", out.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already holds customers"));
}
