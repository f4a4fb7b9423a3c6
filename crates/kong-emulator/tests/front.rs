//! The HTTP front end to end: decK routes, the external plugin chain against a scripted
//! plugin server, the emulated acl guard, vault references, proxying to the echo upstream.

mod common;

use common::{call, get, step, FakeServer, Reply, Seen};
use kong_emulator::front::{chain, deck::Gateway, Front};
use kong_emulator::{Kong, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A fake `ghasi-api-key-lookup`: reads `x-api-key`; missing → 401 exit; else sets
/// `X-Account-Id` and publishes the guard group. A plugin named `ghasi-broken` fails every
/// HandleEvent with an ordinary RPC error.
fn plugin_server_handler() -> Arc<common::Handler> {
    let next_event = AtomicU64::new(1);
    let names: Mutex<HashMap<u64, String>> = Mutex::new(HashMap::new());
    let stages: Mutex<HashMap<u64, u8>> = Mutex::new(HashMap::new());
    Arc::new(move |req: &Seen| match req.method.as_str() {
        "plugin.StartInstance" => {
            let name = get(&req.param, "Name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
            let mut names = names.lock().unwrap();
            let id = names.len() as u64 + 1;
            names.insert(id, name);
            Reply::Ok(Value::Map(vec![("Id".into(), id.into())]))
        }
        "plugin.HandleEvent" => {
            let id = get(&req.param, "InstanceId").and_then(|i| i.as_u64()).unwrap_or(0);
            if names.lock().unwrap().get(&id).map(String::as_str) == Some("ghasi-broken") {
                return Reply::Err("boom".into());
            }
            let event = next_event.fetch_add(1, Ordering::SeqCst);
            stages.lock().unwrap().insert(event, 0);
            Reply::Ok(step(event, call("kong.request.get_header", vec!["x-api-key".into()])))
        }
        _ => {
            let event = get(&req.param, "EventId").and_then(|e| e.as_u64()).unwrap_or(0);
            let mut stages = stages.lock().unwrap();
            let stage = stages.entry(event).or_insert(0);
            *stage += 1;
            let data = get(&req.param, "Data").cloned();
            let next = match (*stage, data) {
                (1, None) => call(
                    "kong.response.exit",
                    vec![401.into(), Value::Map(vec![("code".into(), "credential_missing".into())])],
                ),
                (1, Some(key)) => call(
                    "kong.service.request.set_headers",
                    vec![Value::Map(vec![
                        ("X-Account-Id".into(), format!("acct-{}", key.as_str().unwrap_or("?")).into()),
                        ("x-api-key".into(), Value::Array(vec![])),
                    ])],
                ),
                (2, _) => call(
                    "kong.ctx.shared.set",
                    vec!["authenticated_groups".into(), Value::Array(vec!["ghasi-authenticated".into()])],
                ),
                _ => "ret".into(),
            };
            Reply::Ok(step(event, next))
        }
    })
}

struct Env {
    base: String,
    server: FakeServer,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(kong_emulator::echo::serve(echo));
    let server = FakeServer::start(None, plugin_server_handler()).await;
    std::env::set_var("KONG_EMULATOR_TEST_TOKEN", "s3cret");
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: echo
    url: http://{echo_addr}/base
    routes:
      - name: keyed
        methods: [GET]
        paths: ["~/v1/messages$"]
        strip_path: false
        plugins:
          - name: ghasi-api-key-lookup
            config:
              service_token: "{{vault://env/kong-emulator-test-token}}"
          - name: acl
            config:
              allow: [ghasi-authenticated]
              always_use_authenticated_groups: true
          - name: rate-limiting
            config: {{minute: 5}}
      - name: broken
        paths: [/broken]
        plugins:
          - name: ghasi-broken
          - name: acl
            config:
              allow: [ghasi-authenticated]
      - name: open
        paths: [/open]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yaml");
    std::fs::write(&path, yaml).unwrap();
    let gateway = Gateway::load(&path).expect("decK file");
    let mut priorities = chain::default_priorities();
    priorities.insert("ghasi-broken".into(), 1300);
    let front = Front::new(gateway, Kong::new(&server.path), &priorities).expect("front");
    assert_eq!(front.limitations(), vec!["bundled plugins not emulated, ignored: rate-limiting (1×)"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::new(front).serve(listener));
    Env { base, server, client: reqwest::Client::new(), _dir: dir }
}

async fn get_json(env: &Env, path: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut req = env.client.get(format!("{}{path}", env.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request to the front");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn authenticated_request_reaches_upstream_with_plugin_headers() {
    let env = start().await;
    let (status, echo) =
        get_json(&env, "/v1/messages?page=2", &[("X-Api-Key", "k1"), ("X-Account-Id", "spoofed")]).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/base/v1/messages");
    assert_eq!(echo["query"], "page=2");
    assert_eq!(echo["headers"]["x-account-id"], "acct-k1");
    assert!(echo["headers"].get("x-api-key").is_none(), "the key was removed");
    assert_eq!(echo["headers"]["x-consumer-groups"], "ghasi-authenticated");
    assert_eq!(echo["headers"]["x-forwarded-path"], "/v1/messages");

    // The vault reference was resolved before StartInstance.
    let start = env.server.seen().into_iter().find(|s| s.method == "plugin.StartInstance").expect("StartInstance");
    let config: serde_json::Value =
        serde_json::from_str(get(&start.param, "Config").and_then(|c| c.as_str()).unwrap()).unwrap();
    assert_eq!(config["service_token"], "s3cret");
}

#[tokio::test]
async fn plugin_exit_no_route_and_open_route() {
    let env = start().await;
    let (status, body) = get_json(&env, "/v1/messages", &[]).await;
    assert_eq!((status, body), (401, serde_json::json!({"code": "credential_missing"})));

    let resp = env.client.post(format!("{}/v1/messages", env.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["message"], "no Route matched with those values");

    let (status, echo) = get_json(&env, "/open/x", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(echo["path"], "/base/x", "strip_path defaults to true");
}

#[tokio::test]
async fn failing_plugin_is_skipped_and_acl_closes_the_door() {
    let env = start().await;
    let (status, body) = get_json(&env, "/broken", &[("X-Api-Key", "k1")]).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Unauthorized")));
    assert!(env.server.methods().contains(&"plugin.HandleEvent".to_string()));
}
