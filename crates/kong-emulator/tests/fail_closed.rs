//! Fail closed with the plugin server down, the ways Kong's own code does it
//! (`kong/runloop/plugin_servers`):
//!
//! * the worker has an instance id cached: `HandleEvent` cannot connect, Kong logs the error
//!   and skips the plugin; no authenticated groups were published, so `acl` answers 401;
//! * no instance id cached (first request of a worker, a config change, a changed
//!   `serverPid`): `StartInstance` cannot connect, `get_instance_id` raises, Kong answers 500;
//! * Kong 3.4 only: a worker whose readiness probe never reached the server skips the plugin
//!   without trying `StartInstance`: 401 from acl.
//!
//! In no case does a request reach the upstream.

mod common;

use common::{call, step, FakeServer, Reply, Seen};
use kong_emulator::front::{chain, deck::Gateway, Front};
use kong_emulator::{Kong, KongVersion, Request, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A plugin that only publishes the guard group (what our plugins do on success).
/// Instance ids start at `first_id` (a restarted server never reuses the old ones).
fn publishing_plugin(first_id: u64) -> Arc<common::Handler> {
    let next_event = AtomicU64::new(1);
    let next_instance = AtomicU64::new(first_id);
    Arc::new(move |req: &Seen| match req.method.as_str() {
        "plugin.StartInstance" => {
            Reply::Ok(Value::Map(vec![("Id".into(), next_instance.fetch_add(1, Ordering::SeqCst).into())]))
        }
        "plugin.HandleEvent" => {
            let event = next_event.fetch_add(1, Ordering::SeqCst);
            Reply::Ok(step(
                event,
                call(
                    "kong.ctx.shared.set",
                    vec!["authenticated_groups".into(), Value::Array(vec!["ghasi-authenticated".into()])],
                ),
            ))
        }
        "plugin.CloseInstance" => Reply::Ok(Value::Nil),
        _ => {
            let event = common::get(&req.param, "EventId").and_then(|e| e.as_u64()).unwrap_or(0);
            Reply::Ok(step(event, "ret".into()))
        }
    })
}

/// The plugin server as Kong sees it: a socket path that can point at a live server, at
/// nothing (server down), or at a new server (restart).
struct Socket {
    dir: tempfile::TempDir,
}

impl Socket {
    fn new() -> Socket {
        Socket { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("ghasi.socket")
    }
    fn point_at(&self, server: &FakeServer) {
        let _ = std::fs::remove_file(self.path());
        std::os::unix::fs::symlink(&server.path, self.path()).unwrap();
    }
    /// The server is gone: nothing answers on the path, and the idle connections Kong
    /// pooled were closed by the dying server (nginx drops those from its pool).
    fn down(&self, kong: &Kong) {
        std::fs::remove_file(self.path()).unwrap();
        kong.close_idle_connections();
    }
}

/// An upstream that counts what reaches it.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "upstream reached"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn front(socket: &Path, upstream: &str) -> (Front, tempfile::TempDir) {
    front_for(Kong::new(socket), upstream).await
}

async fn front_for(kong: Kong, upstream: &str) -> (Front, tempfile::TempDir) {
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: upstream
    url: {upstream}
    routes:
      - name: protected
        paths: [/protected]
        plugins:
          - name: ghasi-api-key-lookup
          - name: acl
            config:
              allow: [ghasi-authenticated]
              always_use_authenticated_groups: true
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, yaml).unwrap();
    let gateway = Gateway::load(&file).unwrap();
    (Front::new(gateway, kong, &chain::default_priorities()).unwrap(), dir)
}

async fn status_and_message(front: &Front) -> (u16, Option<String>) {
    let response = front.handle(Request::new("GET", "/protected")).await;
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    (response.status, body["message"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn server_down_with_an_instance_cached_skips_the_plugin_and_acl_answers_401() {
    let (upstream, hits) = counting_upstream().await;
    let socket = Socket::new();
    let server = FakeServer::start(None, publishing_plugin(1)).await;
    socket.point_at(&server);
    let (front, _dir) = front(&socket.path(), &upstream).await;
    assert_eq!(status_and_message(&front).await.0, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    socket.down(front.kong());
    for _ in 0..2 {
        // Kong keeps the cached id after a connect error: every request is skipped + 401.
        assert_eq!(status_and_message(&front).await, (401, Some("Unauthorized".into())));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing reached the upstream");

    // The server is restarted (Kong's start_cmd respawns it): the cached id is unknown to
    // the new process, Kong drops it on `no plugin instance` and starts a new instance.
    let fresh = publishing_plugin(100);
    let restarted = FakeServer::start(
        None,
        Arc::new(move |req: &Seen| match req.method.as_str() {
            "plugin.HandleEvent" if common::get(&req.param, "InstanceId").and_then(|i| i.as_u64()) < Some(100) => {
                Reply::Err("no plugin instance 1".into())
            }
            _ => fresh(req),
        }),
    )
    .await;
    socket.point_at(&restarted);
    assert_eq!(status_and_message(&front).await.0, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn server_down_without_an_instance_cached_answers_500() {
    let (upstream, hits) = counting_upstream().await;
    let socket = Socket::new();
    // The first request of a worker while the server is down (e.g. right after Kong
    // started it and before it listens): StartInstance fails, Kong raises.
    let (front, _dir) = front(&socket.path(), &upstream).await;
    for _ in 0..2 {
        assert_eq!(status_and_message(&front).await, (500, Some("An unexpected error occurred".into())));
    }

    // Once it is up, requests pass.
    let server = FakeServer::start(None, publishing_plugin(1)).await;
    socket.point_at(&server);
    assert_eq!(status_and_message(&front).await.0, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A worker that forgot its instances (a changed serverPid, a worker restart) while the
    // server is down: 500 again, not 401.
    socket.down(front.kong());
    front.kong().forget_instances();
    assert_eq!(status_and_message(&front).await.0, 500);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing reached the upstream");
}

#[tokio::test]
async fn a_failed_start_instance_drops_the_claim_and_the_old_id_is_never_closed() {
    // Kong's get_instance_id blanks the cached id before StartInstance and removes the entry
    // when it fails: the old id is forgotten (never closed), the next event starts afresh.
    let socket = Socket::new();
    let server = FakeServer::start(None, publishing_plugin(1)).await;
    socket.point_at(&server);
    let kong = Kong::new(socket.path());
    let plugin = kong.plugin("ghasi-api-key-lookup", serde_json::json!({"v": 1}));
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.unwrap();
    assert_eq!(kong.cached_instance_id(&plugin), Some(Value::from(1)));

    socket.down(&kong);
    kong.update_config(&plugin, serde_json::json!({"v": 2}));
    let err = kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.unwrap_err();
    assert_eq!(err.kong_effect(), kong_emulator::KongEffect::LuaError, "{err}");
    assert_eq!(kong.cached_instance_id(&plugin), None, "the claim is removed");

    socket.point_at(&server);
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.unwrap();
    assert!(!server.methods().contains(&"plugin.CloseInstance".to_string()), "{:?}", server.methods());
}

#[tokio::test]
async fn kong_3_4_skips_the_plugin_until_its_readiness_probe_reached_the_server() {
    let (upstream, hits) = counting_upstream().await;
    let socket = Socket::new();
    let kong = Kong::builder(socket.path()).version(KongVersion::V3_4).build();
    let (front, _dir) = front_for(kong, &upstream).await;
    // Never reached: `server_def.ready` is false, the plugin is skipped, acl answers.
    assert_eq!(status_and_message(&front).await, (401, Some("Unauthorized".into())));

    let server = FakeServer::start(None, publishing_plugin(1)).await;
    socket.point_at(&server);
    assert_eq!(status_and_message(&front).await.0, 200);

    // Ready once, then down with no instance cached: StartInstance raises, as on 3.9.
    socket.down(front.kong());
    front.kong().forget_instances();
    assert_eq!(status_and_message(&front).await.0, 500);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing reached the upstream while down");
}
