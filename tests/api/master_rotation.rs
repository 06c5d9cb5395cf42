//! Master-key rotation (issue 7), as an operator does it with the real binary while instances
//! serve one database: `keys rotate-master --new-key-file PATH` with the old key O configured,
//! instances restarted with the new key N one at a time (an O instance and an N instance serve
//! side by side), then `keys rotate-master --finish` with N configured. Afterwards O opens
//! nothing, N opens everything, and an instance still running with O keeps serving.
//!
//! Instance A (key O) runs in-process, so the test can run its periodic keyring refresh itself;
//! the N instances are the real binary in their own processes.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use alphabank::crypto::{CryptoError, MasterKey};

use crate::helpers::{Customer, deposit, spawn_app};

/// How long any one command or server start may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs the real binary to completion (failing the test if it outlives [`DEADLINE`]).
fn alphabank(env: &[(String, String)], args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "`alphabank {}` did not finish in {DEADLINE:?}",
                args.join(" ")
            );
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts a refused command: non-zero exit, one line on stderr containing `expected`.
fn assert_refused(out: &Output, expected: &str) {
    assert!(!out.status.success(), "expected a refusal: {}", stdout(out));
    let err = stderr(out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expected), "{err}");
}

/// `env` with the master key taken from `key_file` (not the environment) and a fresh port.
fn env_with_key_file(
    env: &[(String, String)],
    key_file: &std::path::Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "ALPHABANK_MASTER_KEY" | "ALPHABANK_MASTER_KEY_FILE" | "ALPHABANK_LISTEN"
            )
        })
        .cloned()
        .collect();
    env.push((
        "ALPHABANK_MASTER_KEY_FILE".into(),
        key_file.display().to_string(),
    ));
    env.push(("ALPHABANK_LISTEN".into(), "127.0.0.1:0".into()));
    env
}

fn env_value(env: &[(String, String)], name: &str) -> String {
    env.iter().find(|(k, _)| k == name).unwrap().1.clone()
}

/// The same customer in a browser of their own, talking to `base`.
fn in_new_browser(c: &Customer, client: reqwest::Client, base: &str) -> Customer {
    let mut view = c.same_person(
        alphabank::auth::totp::TotpSecret::from_bytes(c.secret.as_bytes()),
        client,
    );
    view.base = base.to_string();
    view
}

/// The same customer, same browser (cookies), talking to `base`.
fn on(c: &Customer, base: &str) -> Customer {
    in_new_browser(c, c.client.clone(), base)
}

async fn healthz(c: &Customer) -> u16 {
    c.get("/healthz").await.status().as_u16()
}

// Multi-threaded: instance A's server keeps running while this thread waits for a command or for
// the next one-time code step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_rotates_while_an_old_and_a_new_instance_serve() {
    // Instance A serves with the old master key O; Kari has money.
    let a = spawn_app().await;
    let old_key = env_value(&a.env, "ALPHABANK_MASTER_KEY");
    let kari = a.customer("kari").await;
    deposit(&a.services, kari.user_id(&a.services).await, "250").await;
    assert_eq!(kari.balance_minor().await, 25_000);

    // Phase 1, with O configured: the new key N is generated into a file of mode 0600.
    let new_key_file = a.dir.path().join("master-new.key");
    let started = alphabank(
        &a.env,
        &[
            "keys",
            "rotate-master",
            "--new-key-file",
            new_key_file.to_str().unwrap(),
        ],
    );
    assert!(started.status.success(), "{}", stderr(&started));
    let said = stdout(&started);
    assert!(said.contains("generated a new master key in"), "{said}");
    assert!(said.contains("keys rotate-master: started"), "{said}");
    assert!(said.contains("--finish"), "{said}");
    assert_eq!(
        std::fs::metadata(&new_key_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let new_key = std::fs::read_to_string(&new_key_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(MasterKey::from_base64(&new_key).is_ok());
    assert_ne!(new_key, old_key);
    assert!(!said.contains(&new_key) && !said.contains(&old_key));

    // Run again with the same file: nothing changes, and the file is not overwritten.
    let again = alphabank(
        &a.env,
        &[
            "keys",
            "rotate-master",
            "--new-key-file",
            new_key_file.to_str().unwrap(),
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("already started; nothing changed"));
    assert_eq!(
        std::fs::read_to_string(&new_key_file).unwrap().trim(),
        new_key
    );

    // Instance B is started with N; A (still O) and B serve the same database.
    let n_env = env_with_key_file(&a.env, &new_key_file);
    let mut b = crate::process::serve(&n_env);
    let kari_b = in_new_browser(&kari, a.new_client(), &b.base());
    assert_eq!(kari_b.login().await.status(), 303, "Kari logs in on B");
    assert_eq!(kari_b.balance_minor().await, 25_000, "B shows her balance");
    assert_eq!(kari_b.deposit("50").await.status(), 303, "B seals money");
    assert_eq!(kari.balance_minor().await, 30_000, "A opens what B sealed");
    a.services
        .keyring
        .refresh(&a.services.db)
        .await
        .expect("A's periodic refresh still works while the rotation is pending");

    // While the rotation is pending: no new data key, no other new master key, no early finish.
    for env in [&a.env, &n_env] {
        assert_refused(
            &alphabank(env, &["keys", "rotate", "--no-wait"]),
            "a master key rotation is pending",
        );
    }
    let other_file = a.dir.path().join("master-other.key");
    assert_refused(
        &alphabank(
            &a.env,
            &[
                "keys",
                "rotate-master",
                "--new-key-file",
                other_file.to_str().unwrap(),
            ],
        ),
        "is already pending",
    );
    assert!(!other_file.exists(), "no stray key file is written");
    assert_refused(
        &alphabank(&a.env, &["keys", "rotate-master", "--finish"]),
        "is not the new key of the pending rotation",
    );

    // Phase 2, with N configured.
    let finished = alphabank(&n_env, &["keys", "rotate-master", "--finish"]);
    assert!(finished.status.success(), "{}", stderr(&finished));
    let said = stdout(&finished);
    assert!(said.contains("keys rotate-master: finished"), "{said}");
    assert!(
        said.contains("The old master key no longer opens this database"),
        "{said}"
    );
    assert_refused(
        &alphabank(&n_env, &["keys", "rotate-master", "--finish"]),
        "no master key rotation is pending",
    );

    // A still seals with the keys it holds; what it writes is readable with N.
    deposit(&a.services, kari.user_id(&a.services).await, "10").await;

    let verified = alphabank(&n_env, &["verify"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(stdout(&verified).contains("verify: ok"));

    // O now opens nothing: every command and a new instance with O stop with the clear error.
    for args in [&["serve"][..], &["verify"]] {
        let out = alphabank(&a.env, args);
        assert!(!out.status.success(), "{args:?} with the old key");
        assert!(
            stderr(&out).contains("the master key cannot open the stored data keys"),
            "{}",
            stderr(&out)
        );
    }

    // A, still running with O: its periodic refresh cannot open the keys, and it keeps serving
    // with the keys it holds.
    assert!(matches!(
        a.services.keyring.refresh(&a.services.db).await,
        Err(CryptoError::WrongMasterKey)
    ));
    assert_eq!(healthz(&kari).await, 200);
    assert_eq!(kari.balance_minor().await, 31_000, "A still serves Kari");

    // B keeps serving; its refresh now reads the keys from data_keys.
    assert!(b.running(), "B did not exit: {}", b.log());
    assert_eq!(kari_b.balance_minor().await, 31_000);

    // A new instance with N starts and serves Kari's session.
    let mut c = crate::process::serve(&n_env);
    let kari_c = on(&kari_b, &c.base());
    assert_eq!(kari_c.balance_minor().await, 31_000, "C shows her balance");
    assert!(c.running());

    // The audit log records both phases, without any key.
    let tail = alphabank(&n_env, &["audit", "tail", "-n", "20"]);
    assert!(tail.status.success(), "{}", stderr(&tail));
    let lines: Vec<serde_json::Value> = stdout(&tail)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let phases: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "master_key_rotation")
        .map(|l| l["detail"]["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["started", "finished"]);
    for text in [stdout(&tail), b.log(), c.log()] {
        assert!(!text.contains(&new_key) && !text.contains(&old_key));
    }
}

// Multi-threaded for the same reason: while this thread waits for a command, instance A's mail
// sender must be able to finish the write transaction it may be in, or the command waits for
// SQLite's write lock until its busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_refuses_a_readable_key_file_the_current_key_and_a_finish_without_start() {
    let a = spawn_app().await;
    let old_key = env_value(&a.env, "ALPHABANK_MASTER_KEY");
    let write = |name: &str, text: &str, mode: u32| {
        let path = a.dir.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        path
    };
    let rotate_to = |path: &std::path::Path| {
        alphabank(
            &a.env,
            &[
                "keys",
                "rotate-master",
                "--new-key-file",
                path.to_str().unwrap(),
            ],
        )
    };

    let readable = write("readable.key", &MasterKey::generate().to_base64(), 0o644);
    assert_refused(&rotate_to(&readable), "chmod 600");
    let same = write("same.key", &old_key, 0o600);
    assert_refused(&rotate_to(&same), "must differ from the current one");
    let garbage = write("garbage.key", "not a key", 0o600);
    assert_refused(&rotate_to(&garbage), "base64");
    assert_refused(
        &alphabank(&a.env, &["keys", "rotate-master", "--finish"]),
        "no master key rotation is pending",
    );
    let neither = alphabank(&a.env, &["keys", "rotate-master"]);
    assert_eq!(neither.status.code(), Some(2), "{}", stderr(&neither));

    // Nothing was started: a data key rotation is still allowed, and the old key still works.
    let (pending,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM data_key_wraps")
        .fetch_one(a.services.db.pool())
        .await
        .unwrap();
    assert_eq!(pending, 0);
    let rotated = alphabank(&a.env, &["keys", "rotate", "--no-wait"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(alphabank(&a.env, &["verify"]).status.success());
}
