//! `--log-file`: warnings reach a file an SRE can ship (Kong drops our stderr below its INFO
//! level), the file follows logrotate's rename + SIGHUP, and no credential is ever in it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use dev_auth_service::fixtures::*;
use dev_auth_service::{DevAuthService, DevConfig, Fault, Target};
use kong_emulator::{Kong, Request, Value};
use serde_json::json;

const PLUGIN: &str = "ghasi-api-key-lookup";
const WARNING: &str = "auth-service unavailable";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls until `path` holds `n` warning lines (a loaded CI machine may be slow to write).
fn wait_for_warnings(path: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read(path);
        if text.matches(WARNING).count() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never got {n} warning(s):\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_json_lines_without_secrets(text: &str) {
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    for secret in [KEY_ALICE, SERVICE_TOKEN] {
        assert!(!text.contains(secret), "a credential is in the log file:\n{text}");
    }
}

#[tokio::test]
async fn warnings_go_to_the_log_file_which_is_reopened_on_sighup() {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghasi.log");
    let rotated = dir.path().join("ghasi.log.1");
    let mut options = common::Options {
        args: vec!["--log-file".into(), path.display().to_string(), "--log-format".into(), "json".into()],
        ..Default::default()
    };
    // At info, like production: the warning must not depend on debug logging.
    options.env.retain(|(k, _)| k != "GHASI_LOG");
    let server = Server::start_with(options);
    let kong = Kong::new(server.socket());
    let plugin = kong.plugin(PLUGIN, json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN}));
    let ask = || async {
        let mut req = Request::new("GET", "/v1/messages").with_header("x-api-key", KEY_ALICE);
        let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("the event runs");
        assert_eq!(outcome.exit.as_ref().map(|e| e.status), Some(503));
    };

    auth.set_fault(Target::Lookup, Fault::Status(500));
    ask().await;
    wait_for_warnings(&path, 1);

    // logrotate: rename, then SIGHUP; the server must write to a new file at the old path.
    std::fs::rename(&path, &rotated).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read(&path).contains("log file reopened") {
        assert!(Instant::now() < deadline, "no new file after SIGHUP; stderr:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The warning is rate-limited to one per 10 s per auth-service: move the clock past it.
    let param = Value::Map(vec![(Value::from("Seconds"), Value::from(11))]);
    kong.call(PLUGIN, "plugin.GhasiTestAdvanceClock", &param).await.expect("advancing the test clock");
    ask().await;
    let new = wait_for_warnings(&path, 1);

    let old = read(&rotated);
    assert_eq!(old.matches(WARNING).count(), 1, "the rotated file keeps only the first warning:\n{old}");
    assert_eq!(new.matches(WARNING).count(), 1, "{new}");
    assert!(new.contains(r#""level":"WARN""#), "{new}");
    assert_json_lines_without_secrets(&old);
    assert_json_lines_without_secrets(&new);
    // stderr (what Kong reads) still carries everything.
    assert_eq!(server.logs().matches(WARNING).count(), 2, "{}", server.logs());
}

#[test]
fn a_log_file_that_cannot_be_opened_stops_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"))
        .arg("--socket")
        .arg(dir.path().join("ghasi.socket"))
        .arg("--log-file")
        .arg(dir.path().join("no-such-dir/ghasi.log"))
        .env_remove("GHASI_LOG_FILE")
        .output()
        .expect("running the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-file") && stderr.contains("no-such-dir/ghasi.log"), "{stderr}");
    assert!(!dir.path().join("ghasi.socket").exists(), "it must stop before binding the socket");
}
