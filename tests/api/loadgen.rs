//! The load generator (the `loadgen` crate, `loadgen/src/main.rs`) runs its 2-second `smoke` scenario correctly against
//! a real server: customers created by `alphabank seed`, login with a TOTP code and the built-in
//! proof of work, home requests, a deposit and a transfer (303).

use std::process::Command;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn the_load_generator_smoke_scenario_logs_in_and_makes_a_transfer() {
    let app = spawn_app_with(&[
        ("ALPHABANK_RATE_LIMIT_PER_MIN", "100000"),
        ("ALPHABANK_CAPTCHA", "pow"),
        ("ALPHABANK_POW_BITS", "8"),
    ])
    .await;
    let customers = app.dir.path().join("customers.json");
    let customers_arg = customers.display().to_string();
    let env = app.env.clone();
    let seed = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_alphabank"))
            .args(["seed", "--customers", "2", "--out", &customers_arg])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        seed.status.success(),
        "seed: {}",
        String::from_utf8_lossy(&seed.stderr)
    );

    let cert = app.dir.path().join("tls-cert.pem");
    let args = [
        "--base-url".to_string(),
        app.base.clone(),
        "--cert".to_string(),
        cert.display().to_string(),
        "--customers".to_string(),
        customers.display().to_string(),
        "--scenario".to_string(),
        "smoke".to_string(),
        "--duration".to_string(),
        "2".to_string(),
        "--json".to_string(),
    ];
    let loadgen = loadgen_binary();
    let run =
        tokio::task::spawn_blocking(move || Command::new(loadgen).args(&args).output().unwrap())
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "loadgen smoke failed: {stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(result["scenario"], "smoke");
    assert_eq!(result["ok"], true);
    assert_eq!(result["transfers_303"], 1, "{line}");
}

/// The load generator's binary, built beside the bank's (`target/<profile>/loadgen`): it is a
/// crate of its own, so cargo builds it for this test only when asked (`scripts/test` runs
/// `cargo build -p loadgen` first).
fn loadgen_binary() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_alphabank")).with_file_name("loadgen");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p loadgen` (scripts/test does)",
        path.display()
    );
    path
}
