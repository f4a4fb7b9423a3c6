//! The `dev-auth-service` binary with the shipped `dev/auth-service.yaml`: prints its URLs,
//! serves the quick-start keys, honours `--admin-listen`, and never logs a key or token.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const ALICE_KEY: &str = "dev_key_alice_DO_NOT_USE_IN_PROD";
const REVOKED_KEY: &str = "dev_key_revoked_DO_NOT_USE_IN_PROD";
const SERVICE_TOKEN: &str = "dev-only-service-token-not-a-secret";

struct Running {
    _child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    async fn line_starting(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line {prefix:?}; got {:#?}", self.seen))
                .unwrap_or_else(|| panic!("exited; output {:#?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.trim_start().strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Everything printed so far (waits briefly for log lines to arrive).
    async fn output(&mut self) -> String {
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

fn spawn() -> Running {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dev/auth-service.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dev-auth-service"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config", config])
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dev-auth-service");
    let (tx, lines) = mpsc::unbounded_channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for reader in [Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box::new(err)] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    Running { _child: child, lines, seen: Vec::new() }
}

#[tokio::test]
async fn binary_serves_the_shipped_config_and_logs_no_secrets() {
    let mut bin = spawn();
    let url = bin.line_starting("url:").await;
    let lookup_url = bin.line_starting("lookup: POST").await;
    let jwks_url = bin.line_starting("jwks:").await;
    let admin_state = bin.line_starting("admin:").await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(lookup_url, format!("{url}/internal/v1/api-keys/verify"));
    assert_eq!(jwks_url, format!("{url}/.well-known/jwks.json"));
    let admin = admin_state.trim_end_matches("/_dev/state").to_owned();

    let http = reqwest::Client::new();
    let lookup = |key: &str, token: Option<&str>| {
        let mut req = http.post(&lookup_url).json(&json!({ "api_key": key }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let resp = lookup(ALICE_KEY, Some(SERVICE_TOKEN)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["account_id"], "acc_dev_acme");
    assert_eq!(body["consumer_username"], "acme-alice");
    assert_eq!(lookup(REVOKED_KEY, Some(SERVICE_TOKEN)).await.unwrap().status(), 403);
    assert_eq!(lookup("dev_key_frozen_DO_NOT_USE_IN_PROD", Some(SERVICE_TOKEN)).await.unwrap().status(), 403);
    assert_eq!(lookup("dev_key_expired_DO_NOT_USE_IN_PROD", Some(SERVICE_TOKEN)).await.unwrap().status(), 403);
    assert_eq!(lookup("no-such-key", Some(SERVICE_TOKEN)).await.unwrap().status(), 404);
    assert_eq!(lookup(ALICE_KEY, None).await.unwrap().status(), 401);

    let jwks: Value = http.get(&jwks_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);
    let minted: Value = http
        .post(format!("{url}/dev/tokens"))
        .json(&json!({"user_id": "usr_dev_alice", "alg": "ES256"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    assert_eq!(minted["claims"]["iss"], "https://api.ghasi.io");
    assert_eq!(minted["claims"]["roles"], json!(["customer", "admin"]));

    // Down through the main port, up through the admin port.
    let resp = http.post(format!("{url}/_dev/down")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let fresh_get = || async { reqwest::Client::new().get(&jwks_url).send().await };
    let mut refused = false;
    for _ in 0..100 {
        match fresh_get().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "main port still accepting after /_dev/down");
    assert_eq!(http.post(format!("{admin}/_dev/up")).send().await.unwrap().status(), 202);
    let mut back = false;
    for _ in 0..100 {
        if fresh_get().await.is_ok_and(|r| r.status() == 200) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "main port not back after /_dev/up on the admin port");

    let output = bin.output().await;
    assert!(output.contains("key_dev_alice"), "lookups log the key_id:\n{output}");
    for secret in [ALICE_KEY, REVOKED_KEY, SERVICE_TOKEN, token.as_str()] {
        assert!(!output.contains(secret), "output leaks {secret}:\n{output}");
    }
}

#[tokio::test]
async fn binary_rejects_a_broken_config() {
    let dir = std::env::temp_dir().join(format!("dev-auth-bad-{}", std::process::id()));
    std::fs::write(&dir, "accounts:\n  - id: a\napi_keys:\n  - key: k\n    key_id: k1\n    account_id: missing\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dev-auth-service"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&dir)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown account"), "{stderr}");
}
