//! Faithfulness proof: the emulator drives Kong's official Python plugin server
//! (PyPI `kong-pdk==0.36`) running `tests/python/py_api_key.py`, and everything a real Kong
//! relies on works: StartInstance with Kong's config JSON, events whose Steps travel over
//! different connections, PDK calls and their Step methods, the terminal `kong.response.exit`,
//! CloseInstance after a config change, and `no plugin instance` recovery after a restart.
//!
//! The interpreter comes from `KONG_PDK_PYTHON`, else `<workspace>/.venv/bin/python`. When
//! neither can import `kong_pdk` the test fails: it never passes without running.

use kong_emulator::{Error, Kong, PoolPolicy, Request, Value};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PLUGIN: &str = "py-api-key";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The Python interpreter with kong-pdk installed, or a panic explaining how to get one.
fn python() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("KONG_PDK_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(workspace_root().join(".venv/bin/python")))
        .collect();
    for candidate in &candidates {
        let ok = std::process::Command::new(candidate)
            .args(["-c", "import kong_pdk"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return candidate.clone();
        }
    }
    panic!(
        "no Python with kong-pdk found (tried {candidates:?}). Create it with:\n  \
         python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt\n\
         or set KONG_PDK_PYTHON to such an interpreter."
    );
}

/// A running Python plugin server; killed on drop.
struct PyServer {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl PyServer {
    /// Starts the dedicated server in gevent mode (it logs "started" only after `listen`)
    /// and waits for that line.
    async fn start(python: &Path, prefix: &Path) -> PyServer {
        let script = workspace_root().join("tests/python/py_api_key.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg("--kong-prefix")
            .arg(prefix)
            .args(["--no-lua-style", "-g"])
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} {}: {e}", python.display(), script.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let err_lines = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                err_lines.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                output.lock().unwrap().push(line.clone());
                if line.contains("started at path") {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            panic!("Python plugin server did not start; output:\n{}", output.lock().unwrap().join("\n"));
        }
        let out_lines = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                out_lines.lock().unwrap().push(line);
            }
        });
        PyServer { child, output }
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("kill Python server");
    }

    fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

fn request_with_key(key: &str) -> Request {
    Request::new("GET", "/v1/messages").with_header("Host", "api.test").with_header("X-Api-Key", key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kongs_python_plugin_server_works_with_the_emulator() {
    let python = python();

    // The dump is what Kong's query_cmd would read.
    let dump = std::process::Command::new(&python)
        .arg(workspace_root().join("tests/python/py_api_key.py"))
        .arg("--dump")
        .output()
        .expect("run --dump");
    let dump: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("dump is JSON");
    assert_eq!(dump[0]["Name"], PLUGIN);
    assert_eq!(dump[0]["Priority"], 1250);
    assert_eq!(dump[0]["Phases"], json!(["access"]));

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join(format!("{PLUGIN}.sock"));
    let server = PyServer::start(&python, dir.path()).await;

    // Rotate: every RPC of an event goes out on a different connection than the previous one.
    let kong = Kong::builder(&socket).pool_policy(PoolPolicy::Rotate).read_timeout(Duration::from_secs(10)).build();
    let plugin = kong.plugin(PLUGIN, json!({"header_name": "x-api-key", "account_prefix": "acct-"}));

    // 1. Success: StartInstance, HandleEvent and four Steps.
    let mut req = request_with_key("k1");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("first event");
    assert_eq!(
        outcome.pdk_calls,
        vec!["kong.request.get_header", "kong.service.request.set_header", "kong.ctx.shared.set", "kong.log.info"],
        "server log:\n{}",
        server.log()
    );
    assert!(outcome.continues());
    assert_eq!(outcome.rpcs, 6);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some("acct-k1"));
    assert_eq!(req.ctx_shared_get("authenticated_groups"), Some(&Value::Array(vec!["ghasi-authenticated".into()])));
    assert_eq!(req.plugin_logs("info"), vec!["accepted key for acct-k1"]);
    let first_instance = kong.cached_instance_id(&plugin).expect("instance cached");
    assert!(kong.connections_opened() >= 2, "Steps were rotated over connections");

    // 2. Missing key: exit 401, nothing sent after the exit call.
    let mut req = Request::new("GET", "/v1/messages");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("exit event");
    let exit = outcome.exit.clone().expect("401 exit");
    assert_eq!(exit.status, 401);
    assert_eq!(exit.body_json(), Some(json!({"message": "missing api key"})));
    assert_eq!(exit.header("www-authenticate").as_deref(), Some("ApiKey realm=\"test\""));
    assert_eq!(outcome.pdk_calls, vec!["kong.request.get_header", "kong.response.exit"]);
    assert_eq!(outcome.rpcs, 2, "HandleEvent + one Step; the exit is never answered");
    assert!(req.upstream_header("x-account-id").is_none());

    // 3. The server is still healthy after the exit, with the same instance.
    let mut req = request_with_key("k2");
    kong.run_event(&plugin, "access", &mut req).await.expect("after exit");
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some("acct-k2"));
    assert_eq!(kong.cached_instance_id(&plugin), Some(first_instance.clone()));

    // 4. Concurrent events over many connections never mix up their state.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (kong, plugin) = (kong.clone(), plugin.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = request_with_key(&format!("c{i}"));
            kong.run_event(&plugin, "access", &mut req).await.map(|_| req.upstream_header("x-account-id"))
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.expect("join").expect("concurrent event");
        assert_eq!(got, Some(format!("acct-c{i}")));
    }

    // 5. Config change: StartInstance(new) then CloseInstance(old); the new config is used.
    kong.update_config(&plugin, json!({"header_name": "x-api-key", "account_prefix": "v2-"}));
    let mut req = request_with_key("k3");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("after config change");
    assert_eq!(outcome.rpcs, 2 + 5, "StartInstance + CloseInstance + HandleEvent + 4 Steps");
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some("v2-k3"));
    let second_instance = kong.cached_instance_id(&plugin).expect("new instance");
    assert_ne!(second_instance, first_instance);
    // The old instance really is closed: the server no longer knows it.
    let err = kong
        .call(
            PLUGIN,
            "plugin.HandleEvent",
            &Value::Map(vec![("InstanceId".into(), first_instance.clone()), ("EventName".into(), "access".into())]),
        )
        .await
        .unwrap_err();
    assert!(err.is_no_plugin_instance(), "{err}");

    // 6. Restart: the cached id is unknown to the new process; Kong's retry recovers.
    server.stop().await;
    let server = PyServer::start(&python, dir.path()).await;
    let mut req = request_with_key("k4");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("recovered after restart");
    assert_eq!(outcome.attempts, 2, "first HandleEvent hit `no plugin instance`");
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some("v2-k4"));
    assert!(
        req.logs().iter().any(|l| l.level == "warn" && l.message.contains("no plugin instance")),
        "{:?}",
        req.logs()
    );

    // 7. StartInstance of an unknown plugin is an error Kong turns into a 500.
    let unknown = kong.plugin("not-served-here", json!({}));
    let err = kong.run_event(&unknown, "access", &mut request_with_key("k")).await.unwrap_err();
    assert!(matches!(err, Error::StartInstance { .. }), "{err}");

    server.stop().await;
}
