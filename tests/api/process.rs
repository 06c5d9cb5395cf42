//! Tests against the real binary in its own process: memory under an Argon2 flood, and no secret
//! in the logs or the audit log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::helpers::{input_value, test_env};

/// `alphabank serve` in its own process, with every log line it printed; killed when dropped.
pub(crate) struct Serving {
    pub(crate) child: Child,
    pub(crate) port: u16,
    output: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a server may take to say it is serving before the test fails.
const START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Starts the real binary with `env` (JSON logs) and waits until it says where it serves.
pub(crate) fn serve(env: &[(String, String)]) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .arg("serve")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ALPHABANK_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains("AlphaBank is serving") {
                    let _ = tx.send(line.clone());
                }
                output.lock().unwrap().push(line);
            }
        });
    }
    let Ok(line) = rx.recv_timeout(START_DEADLINE) else {
        let _ = child.kill();
        panic!(
            "the server did not start: {:?}",
            output.lock().unwrap().clone()
        );
    };
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = value["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Serving {
        child,
        port,
        output,
    }
}

impl Serving {
    pub(crate) fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
    /// Still running (not exited).
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    /// Every line it logged so far.
    pub(crate) fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

pub(crate) struct Server {
    pub(crate) serving: Serving,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
}

pub(crate) async fn start(extra: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_env(dir.path(), extra).await;
    env.push(("ALPHABANK_LOG_FORMAT".into(), "json".into()));
    env.push((
        "ALPHABANK_LOG".into(),
        "debug,sqlx=warn,hyper=info,rustls=info,h2=info".into(),
    ));
    Server {
        serving: serve(&env),
        dir,
        env,
    }
}

impl Server {
    pub(crate) fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(self.dir.path().join("tls-cert.pem")).unwrap();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .resolve(
                "localhost",
                format!("127.0.0.1:{}", self.serving.port).parse().unwrap(),
            )
            .build()
            .unwrap()
    }
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.serving.base())
    }
    /// Peak resident memory of the server process, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.serving.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_argon2_flood_of_100_concurrent_logins_keeps_memory_bounded() {
    let server = start(&[("ALPHABANK_RATE_LIMIT_PER_MIN", "100000")]).await;
    let client = server.client();
    let page = client
        .get(server.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input_value(&page, "csrf_token").unwrap();
    // One login first, so that lazily allocated pools and caches exist before the baseline.
    let form = |i: usize| {
        vec![
            ("csrf_token", csrf.clone()),
            ("email", format!("flood{i}@example.no")),
            ("password", "a long wrong password 123".into()),
            ("otp", "123456".into()),
        ]
    };
    client
        .post(server.url("/login"))
        .form(&form(0))
        .send()
        .await
        .unwrap();
    let baseline = server.peak_rss_kib();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (client, url, form) = (client.clone(), server.url("/login"), form(i));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "beyond the queue bound, requests are refused quickly"
    );
    let peak = server.peak_rss_kib();
    // One Argon2 hash holds 19 MiB while it runs; at most one per core run at once.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let bound_kib = cores * 19 * 1024 + 64 * 1024;
    assert!(
        peak.saturating_sub(baseline) <= bound_kib,
        "peak grew by {} KiB (bound {bound_kib} KiB)",
        peak - baseline
    );
}

#[tokio::test]
async fn no_password_code_secret_or_cookie_reaches_the_logs_or_the_audit_log() {
    let server = start(&[]).await;
    let client = server.client();
    let page = client
        .get(server.url("/signup"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input_value(&page, "csrf_token").unwrap();
    let password = "very secret lighthouse keeper 8841";
    let r = client
        .post(server.url("/signup"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", "loggy"),
            ("email", "loggy@example.no"),
            ("password", password),
            ("password_confirm", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .split('=')
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    let setup = client
        .get(server.url("/2fa/setup"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret_b32 = crate::helpers::element_text(&setup, "totp-secret").unwrap();
    let secret = alphabank::auth::totp::TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(secret_b32.as_bytes())
            .unwrap(),
    );
    let step = crate::helpers::now_step();
    let code1 = format!("{:06}", secret.code_at_step(step - 1));
    let csrf = input_value(&setup, "csrf_token").unwrap();
    let r = client
        .post(server.url("/2fa/setup"))
        .form(&[("csrf_token", csrf.as_str()), ("otp", code1.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let mut all_cookies = cookies;
    all_cookies.extend(r.headers().get_all("set-cookie").iter().map(|v| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .split('=')
            .nth(1)
            .unwrap()
            .to_string()
    }));
    let recovery = client
        .get(server.url("/2fa/recovery"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let recovery_codes = crate::helpers::texts_of_class(&recovery, "recovery-code");
    // A failed login with a wrong password and a code, too.
    let other = server.client();
    let page = other
        .get(server.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input_value(&page, "csrf_token").unwrap();
    let code2 = format!("{:06}", secret.code_at_step(step));
    other
        .post(server.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "loggy@example.no"),
            ("password", "another secret guess 5521"),
            ("otp", code2.as_str()),
        ])
        .send()
        .await
        .unwrap();

    let audit = Command::new(env!("CARGO_BIN_EXE_alphabank"))
        .args(["audit", "tail", "-n", "1000"])
        .env_clear()
        .envs(server.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(audit.status.success());
    let audit_text = String::from_utf8(audit.stdout).unwrap();
    assert!(audit_text.contains("two_factor_enrolled") && audit_text.contains("login_failed"));
    let logs = server.serving.log();
    assert!(logs.contains("audit event"), "the logs were captured");
    let master_key = server
        .env
        .iter()
        .find(|(k, _)| k == "ALPHABANK_MASTER_KEY")
        .unwrap()
        .1
        .clone();
    let mut secrets = vec![
        password.to_string(),
        "another secret guess 5521".into(),
        secret_b32,
        master_key,
    ];
    secrets.extend(all_cookies.into_iter().filter(|c| !c.is_empty()));
    secrets.extend(recovery_codes);
    for code in [&code1, &code2] {
        // Codes are six digits and may occur by chance inside timestamps: look for them as values.
        secrets.push(format!("\"{code}\""));
        secrets.push(format!("={code}"));
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {secret}"
        );
        assert!(
            !audit_text.contains(secret.as_str()),
            "a secret reached the audit log: {secret}"
        );
    }
}
