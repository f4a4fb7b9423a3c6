//! End to end through Kong's own plugin-server client: real HTTP into nginx running Kong's
//! unmodified `plugin_servers` Lua (3.9.3 and 3.4.2), which drives our binary over its Unix
//! socket; the dev auth-service answers lookups and serves the JWKS.
//!
//! Runs when `GHASI_KONG_RIG` names a kongrig folder (a rig of Kong's client files in Debian's
//! nginx; its `setup.sh` installs nginx and the Lua modules, and `scripts/test` runs it).
//! Without it every test prints that it was skipped and passes: the emulator suites still
//! cover the protocol. The rig folder may be read-only: each session writes only to its own
//! temporary `PREFIX`, and the rig's state dir is `KONGRIG_STATE` (default: `target/kongrig`).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dev_auth_service::fixtures::*;
use dev_auth_service::{DevAuthService, DevConfig, TokenSpec};
use serde_json::{json, Value as Json};

const API_KEY: &str = "ghasi-api-key-lookup";
const JWT: &str = "ghasi-jwt";
const VERSIONS: [&str; 2] = ["3.9.3", "3.4.2"];

/// The rig folder, or `None` (and a line saying why) when this suite is skipped.
fn rig() -> Option<PathBuf> {
    match std::env::var_os("GHASI_KONG_RIG").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("run.sh").is_file(),
                "GHASI_KONG_RIG={} has no run.sh: point it at a kongrig folder",
                dir.display()
            );
            assert!(
                Path::new("/usr/sbin/nginx").exists(),
                "GHASI_KONG_RIG is set but nginx is missing: run {}/setup.sh first",
                dir.display()
            );
            Some(dir)
        }
        None => {
            // Written to stderr directly, not with eprintln!: the test harness captures that
            // for passing tests, and a skip should be visible in the test command's output.
            let _ = writeln!(
                std::io::stderr(),
                "kong_rig: SKIPPED: GHASI_KONG_RIG is not set (it names a kongrig folder: Kong's own \
                 plugin-server client in nginx; scripts/test sets it when ../shared/kongrig exists)"
            );
            None
        }
    }
}

/// A port nobody listens on right now (bound and released: the rig binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// One rig run: nginx with Kong's client on private ports and a private PREFIX, and our binary
/// started by the rig's `START_CMD`. Dropping it stops both (the rig's stop.sh, by recorded PID).
struct Session {
    rig: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

struct SessionSpec<'a> {
    kong: &'a str,
    plugin: &'a str,
    config: Json,
    acl_allow: Option<&'a str>,
}

impl Session {
    fn start(rig: &Path, spec: SessionSpec) -> Session {
        let dir = tempfile::Builder::new().prefix("kongrig-").tempdir().expect("tempdir");
        let socket = dir.path().join("ghasi.sock");
        let prefix = dir.path().join("prefix");
        let bin = env!("CARGO_BIN_EXE_ghasi-plugin-server");
        let state = std::env::var_os("KONGRIG_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kongrig"));
        let port = free_port();
        let mut cmd = Command::new(rig.join("run.sh"));
        cmd.env("KONGRIG_STATE", &state)
            .env("PREFIX", &prefix)
            .env("KONG_VERSION", spec.kong)
            .env("SOCKET", &socket)
            .env("PLUGIN", spec.plugin)
            .env("CONFIG_JSON", spec.config.to_string())
            // Kong 3.9 registers only the first plugin of a dump.
            .env("QUERY_CMD", format!("{bin} --dump --plugin {}", spec.plugin))
            .env("START_CMD", format!("{bin} --socket {}", socket.display()))
            .env("PORT", port.to_string())
            .env("UPSTREAM_PORT", free_port().to_string())
            .env("GHASI_LOG", "info")
            .env_remove("GHASI_METRICS_LISTEN")
            .env_remove("GHASI_SOCKET")
            .env("ACL_ALLOW", spec.acl_allow.unwrap_or(""))
            .stdin(Stdio::null());
        let out = cmd.output().expect("running the rig's run.sh");
        let session = Session { rig: rig.to_owned(), dir, port };
        assert!(
            out.status.success(),
            "run.sh failed ({}):\n{}{}\nerror.log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            session.error_log()
        );
        if spec.kong.starts_with("3.4.") {
            session.wait_ready_probes();
        }
        session
    }

    /// Kong 3.4 skips the plugin in a worker until its readiness probe has connected once;
    /// run.sh waits 5 s for that, which a loaded machine can exceed.
    fn wait_ready_probes(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.error_log().matches("Kong readiness probe: ready").count() < 2 {
            assert!(Instant::now() < deadline, "Kong 3.4's readiness probe never connected:\n{}", self.error_log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn prefix(&self) -> PathBuf {
        self.dir.path().join("prefix")
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix().join("logs/error.log")).unwrap_or_default()
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.prefix().join("logs/pluginserver.log")).unwrap_or_default()
    }

    /// Kills the plugin server (its process group, as the rig started it with setsid).
    fn kill_server(&self) {
        let pid: i32 = std::fs::read_to_string(self.prefix().join("pluginserver.pid"))
            .expect("pluginserver.pid")
            .trim()
            .parse()
            .expect("a pid");
        // SAFETY: kill(2) on the process group the rig recorded for this session only.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }

    fn get(&self, headers: &[(&str, &str)]) -> Response {
        http_get(self.port, "/v1/messages?q=1", headers)
    }

    /// A failure message with everything needed to see why.
    fn context(&self, what: &str, r: &Response) -> String {
        format!(
            "{what}: got {} {}\n--- nginx error.log:\n{}\n--- plugin server log:\n{}",
            r.status,
            r.body,
            self.error_log(),
            self.server_log()
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new(self.rig.join("stop.sh"))
            .env("PREFIX", self.prefix())
            .env("KONGRIG_STATE", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct Response {
    status: u16,
    body: String,
}

impl Response {
    /// What the echo upstream saw, or `None` when the request did not reach it.
    fn upstream(&self) -> Option<Json> {
        let echo: Json = serde_json::from_str(&self.body).ok()?;
        echo.get("headers").cloned()
    }

    fn problem_code(&self) -> Option<String> {
        let body: Json = serde_json::from_str(&self.body).ok()?;
        body.get("code").and_then(Json::as_str).map(str::to_owned)
    }
}

/// A blocking HTTP/1.1 GET on loopback (`Connection: close`; the body is de-chunked).
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect :{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        common::http::dechunk(body)
    } else {
        body.to_owned()
    };
    Response { status, body }
}

fn assert_admitted(s: &Session, r: &Response, account: &str, user: Option<&str>, hidden: &str) {
    assert_eq!(r.status, 200, "{}", s.context("expected 200", r));
    let seen = r.upstream().unwrap_or_else(|| panic!("{}", s.context("no upstream echo", r)));
    assert_eq!(seen["x-account-id"], account, "{}", s.context("x-account-id upstream", r));
    if let Some(user) = user {
        assert_eq!(seen["x-user-id"], user, "{}", s.context("x-user-id upstream", r));
    }
    assert!(seen.get(hidden).is_none(), "{}", s.context(&format!("{hidden} reached the upstream"), r));
}

fn assert_refused(s: &Session, r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", s.context(&format!("expected {status} {code}"), r));
    assert!(r.upstream().is_none(), "{}", s.context("a refused request reached the upstream", r));
    assert_eq!(r.problem_code().as_deref(), Some(code), "{}", s.context("problem code", r));
}

fn assert_nothing_secret_logged(s: &Session, secrets: &[&str]) {
    let logs = format!("{}{}", s.error_log(), s.server_log());
    for secret in secrets {
        assert!(!logs.contains(secret), "a credential reached a log:\n{logs}");
    }
}

/// 200 with the identity and the key hidden, 401 without or with an unknown key, a spoofed
/// identity header stripped, 503 once auth-service is down (a key not cached yet).
async fn api_key(rig: &Path, kong: &str) {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let config = json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN});
    let s = Session::start(rig, SessionSpec { kong, plugin: API_KEY, config, acl_allow: None });

    let r = s.get(&[("X-API-Key", KEY_ALICE)]);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "x-api-key");
    let r = s.get(&[("X-API-Key", KEY_ALICE), ("X-Account-Id", "acc_spoofed")]);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "x-api-key");
    assert_refused(&s, &s.get(&[]), 401, "credential_missing");
    assert_refused(&s, &s.get(&[("X-API-Key", KEY_UNKNOWN)]), 401, "credential_invalid");
    let r = s.get(&[("X-Account-Id", "acc_spoofed")]);
    assert_refused(&s, &r, 401, "credential_missing");

    auth.down().await;
    assert_refused(&s, &s.get(&[("X-API-Key", KEY_GLOBEX)]), 503, "authority_unavailable");
    // The key cached before the outage still passes.
    assert_admitted(&s, &s.get(&[("X-API-Key", KEY_ALICE)]), ACCOUNT_ACME, Some(USER_ALICE), "x-api-key");
    assert_nothing_secret_logged(&s, &[KEY_ALICE, KEY_GLOBEX, KEY_UNKNOWN]);
}

/// With Kong's acl plugin as the fail-closed guard: the plugin's groups admit a valid key,
/// and once the plugin server is dead acl answers 401 instead of proxying.
async fn api_key_with_acl(rig: &Path, kong: &str) {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let config = json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN});
    let acl = Some("ghasi-authenticated");
    let s = Session::start(rig, SessionSpec { kong, plugin: API_KEY, config, acl_allow: acl });

    let r = s.get(&[("X-API-Key", KEY_ALICE)]);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "x-api-key");
    assert_refused(&s, &s.get(&[]), 401, "credential_missing");
    s.kill_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get(&[("X-API-Key", KEY_ALICE)]);
        assert!(r.upstream().is_none(), "{}", s.context("with the plugin server dead, acl let a request through", &r));
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", s.context("acl never answered 401", &r));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 200 with the identity (Authorization kept: hide_credentials defaults to false for JWTs,
/// so a hidden-credential config is used), 401, 403 on a missing role; then, in a second
/// session with auth-service down before the JWKS was ever fetched, 503.
async fn jwt(rig: &Path, kong: &str) {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let config = json!({
        "jwks_url": auth.jwks_url(), "issuer": auth.issuer(),
        "required_roles": ["admin"], "hide_credentials": true,
    });
    let alice = auth.mint(&TokenSpec::for_user(USER_ALICE));
    let dave = auth.mint(&TokenSpec::for_user(USER_DAVE));
    let s = Session::start(rig, SessionSpec { kong, plugin: JWT, config: config.clone(), acl_allow: None });
    let bearer = |t: &str| format!("Bearer {t}");

    let r = s.get(&[("Authorization", &bearer(&alice))]);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "authorization");
    // The verified-token cache answers the second one.
    let r = s.get(&[("Authorization", &bearer(&alice)), ("X-User-Id", "usr_spoofed")]);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "authorization");
    assert_refused(&s, &s.get(&[]), 401, "credential_missing");
    assert_refused(&s, &s.get(&[("Authorization", "Bearer not.a.token")]), 401, "token_invalid");
    assert_refused(&s, &s.get(&[("Authorization", &bearer(&dave))]), 403, "insufficient_role");
    assert_nothing_secret_logged(&s, &[&alice, &dave]);
    drop(s);

    let down = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let config = json!({"jwks_url": down.jwks_url(), "issuer": down.issuer()});
    let token = down.mint(&TokenSpec::for_user(USER_ALICE));
    down.down().await;
    let s = Session::start(rig, SessionSpec { kong, plugin: JWT, config, acl_allow: None });
    assert_refused(&s, &s.get(&[("Authorization", &bearer(&token))]), 503, "authority_unavailable");
}

/// The holes attack testing found (issue 11), checked against Kong's own client code: a key
/// in the query under another case is removed upstream on both versions (3.4 has no
/// `clear_query_arg`), a repeated key header is ambiguous, Kong's consumer headers sent by
/// the client never reach the upstream, and auth-service's 401 to our service token is a 503.
async fn api_key_attacks(rig: &Path, kong: &str) {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let config = json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN, "key_in_query": true});
    let s = Session::start(rig, SessionSpec { kong, plugin: API_KEY, config, acl_allow: None });

    let r = http_get(s.port, &format!("/v1/messages?X-API-KEY={KEY_ALICE}&page=2"), &[]);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "x-api-key");
    let echo: Json = serde_json::from_str(&r.body).expect("echo JSON");
    assert_eq!(echo["args"], "page=2", "{}", s.context("the query key reached the upstream", &r));
    assert!(!s.error_log().contains("could not find pdk method"), "{}", s.error_log());

    let r = s.get(&[("X-API-Key", KEY_ALICE), ("X-API-Key", KEY_GLOBEX)]);
    assert_refused(&s, &r, 401, "credential_ambiguous");
    let r = s.get(&[("X-API-Key", KEY_UNKNOWN), ("X-API-Key", KEY_ALICE)]);
    assert_refused(&s, &r, 401, "credential_ambiguous");

    let spoofs = [
        ("X-Consumer-ID", "c1"),
        ("X-Consumer-Groups", "admin"),
        ("X-Anonymous-Consumer", "false"),
        ("X-Authenticated-Groups", "admin"),
    ];
    let mut headers = vec![("X-API-Key", KEY_ALICE)];
    headers.extend(spoofs);
    let r = s.get(&headers);
    assert_admitted(&s, &r, ACCOUNT_ACME, Some(USER_ALICE), "x-api-key");
    let seen = r.upstream().expect("echo");
    for (name, _) in spoofs {
        assert!(
            seen.get(name.to_ascii_lowercase()).is_none(),
            "{}",
            s.context(&format!("{name} reached the upstream"), &r)
        );
    }
    drop(s);

    let config = json!({"auth_service_url": auth.url(), "service_token": "rotated-away"});
    let s = Session::start(rig, SessionSpec { kong, plugin: API_KEY, config, acl_allow: None });
    for _ in 0..2 {
        assert_refused(&s, &s.get(&[("X-API-Key", KEY_ALICE)]), 503, "authority_unavailable");
    }
    assert_nothing_secret_logged(&s, &[KEY_ALICE, KEY_GLOBEX, KEY_UNKNOWN, "rotated-away"]);
}

async fn all(kong: &str) {
    let Some(rig) = rig() else { return };
    api_key(&rig, kong).await;
    api_key_attacks(&rig, kong).await;
    api_key_with_acl(&rig, kong).await;
    jwt(&rig, kong).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kong_3_9_3_client() {
    all(VERSIONS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kong_3_4_2_client() {
    all(VERSIONS[1]).await;
}
