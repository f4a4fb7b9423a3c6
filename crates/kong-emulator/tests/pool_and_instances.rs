//! The emulator's Kong-side machinery against a scripted fake server: msgid scopes, pool
//! policies, the instance cache (start, reuse, replace, `no plugin instance`, `serverPid`)
//! and Kong's response validation.

mod common;

use common::{call, get, step, FakeServer, Reply, Seen};
use kong_emulator::{Error, Kong, KongEffect, KongVersion, PoolPolicy, Request, Value};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A well-behaved server: StartInstance returns increasing ids (from 100), every event asks
/// for `kong.request.get_header("x")` once and then returns.
fn polite_handler() -> Arc<common::Handler> {
    let next_id = Arc::new(AtomicU64::new(100));
    Arc::new(move |req: &Seen| match req.method.as_str() {
        "plugin.StartInstance" => {
            let id = next_id.fetch_add(1, Ordering::SeqCst);
            Reply::Ok(Value::Map(vec![("Id".into(), id.into())]))
        }
        "plugin.CloseInstance" => Reply::Ok(Value::Map(vec![])),
        "plugin.HandleEvent" => Reply::Ok(step(7, call("kong.request.get_header", vec!["x".into()]))),
        _ => Reply::Ok(step(7, "ret".into())),
    })
}

#[tokio::test]
async fn instance_is_started_once_and_reused() {
    let server = FakeServer::start(None, polite_handler()).await;
    let kong = Kong::new(&server.path);
    let plugin = kong.plugin("demo", json!({"message": "hi"}));
    for _ in 0..3 {
        let mut req = Request::new("GET", "/").with_header("x", "1");
        let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("event");
        assert_eq!(outcome.pdk_calls, vec!["kong.request.get_header"]);
    }
    assert_eq!(
        server.methods(),
        vec![
            "plugin.StartInstance",
            "plugin.HandleEvent",
            "plugin.Step",
            "plugin.HandleEvent",
            "plugin.Step",
            "plugin.HandleEvent",
            "plugin.Step"
        ]
    );
    assert_eq!(kong.rpc_count(), 7);
    assert_eq!(kong.cached_instance_id(&plugin), Some(Value::from(100)));
    // HandleEvent carries the cached id.
    let handle = &server.seen()[1];
    assert_eq!(get(&handle.param, "InstanceId"), Some(&Value::from(100)));
    assert_eq!(get(&handle.param, "EventName"), Some(&Value::from("access")));
}

#[tokio::test]
async fn config_carries_kongs_injected_keys() {
    for version in [KongVersion::V3_4, KongVersion::V3_9] {
        let server = FakeServer::start(None, polite_handler()).await;
        let kong = Kong::builder(&server.path).version(version).build();
        let plugin = kong.plugin("demo", json!({"url": "http://a/b"}));
        let mut req = Request::new("GET", "/");
        kong.run_event(&plugin, "access", &mut req).await.expect("event");
        let start = &server.seen()[0];
        assert_eq!(get(&start.param, "Name"), Some(&Value::from("demo")));
        let config_text = get(&start.param, "Config").and_then(|c| c.as_str()).expect("Config string");
        assert!(config_text.contains(r#""http:\/\/a\/b""#), "cjson escapes '/': {config_text}");
        let config: serde_json::Value = serde_json::from_str(config_text).expect("JSON config");
        assert_eq!(config["url"], "http://a/b");
        assert_eq!(config["__plugin_id"], plugin.id());
        assert_eq!(config["route_id"], plugin.route_id().expect("route id"));
        assert!(config["__key__"].as_str().expect("__key__").starts_with("plugins:demo:"));
        let seq = config["__seq__"].as_u64().expect("__seq__");
        match version {
            KongVersion::V3_4 => {
                assert_eq!(seq, 0);
                assert!(config.get("__ws_id").is_none());
            }
            KongVersion::V3_9 => {
                assert_eq!(seq, 1);
                assert!(config["__ws_id"].is_string());
            }
        }
    }
}

#[tokio::test]
async fn config_change_starts_new_instance_then_closes_old() {
    let server = FakeServer::start(None, polite_handler()).await;
    let kong = Kong::new(&server.path);
    let plugin = kong.plugin("demo", json!({"v": 1}));
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("first");
    kong.update_config(&plugin, json!({"v": 2}));
    let outcome = kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("second");
    assert_eq!(outcome.rpcs, 4, "StartInstance, CloseInstance, HandleEvent, Step");
    let seen = server.seen();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        methods,
        vec![
            "plugin.StartInstance",
            "plugin.HandleEvent",
            "plugin.Step",
            "plugin.StartInstance",
            "plugin.CloseInstance",
            "plugin.HandleEvent",
            "plugin.Step"
        ]
    );
    let new_config = get(&seen[3].param, "Config").and_then(|c| c.as_str()).unwrap().to_string();
    assert!(new_config.contains(r#""v":2"#), "{new_config}");
    assert_eq!(seen[4].param, Value::from(100), "CloseInstance param is the old id itself");
    assert_eq!(get(&seen[5].param, "InstanceId"), Some(&Value::from(101)));
}

#[tokio::test]
async fn msgid_scope_follows_the_kong_version() {
    for (version, expected) in
        [(KongVersion::V3_4, vec![1, 2, 3, 4, 5, 6]), (KongVersion::V3_9, vec![1, 2, 3, 1, 2, 3])]
    {
        let server = FakeServer::start(None, polite_handler()).await;
        let kong = Kong::builder(&server.path).version(version).build();
        let a = kong.plugin("plugin-a", json!({}));
        let b = kong.plugin("plugin-b", json!({}));
        kong.run_event(&a, "access", &mut Request::new("GET", "/")).await.expect("a");
        kong.run_event(&b, "access", &mut Request::new("GET", "/")).await.expect("b");
        let ids: Vec<u64> = server.seen().iter().map(|s| s.msgid).collect();
        assert_eq!(ids, expected, "{version:?}");
    }
}

#[tokio::test]
async fn lifo_reuses_one_connection_and_rotate_spreads_rpcs() {
    let server = FakeServer::start(None, polite_handler()).await;
    let kong = Kong::new(&server.path);
    let plugin = kong.plugin("demo", json!({}));
    for _ in 0..3 {
        kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("event");
    }
    assert!(server.seen().iter().all(|s| s.conn == 1), "sequential RPCs reuse the LIFO top");
    assert_eq!(kong.connections_opened(), 1);

    let server = FakeServer::start(None, polite_handler()).await;
    let kong = Kong::builder(&server.path).pool_policy(PoolPolicy::Rotate).build();
    let plugin = kong.plugin("demo", json!({}));
    for _ in 0..4 {
        kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("event");
    }
    let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
    assert!(conns.windows(2).all(|w| w[0] != w[1]), "consecutive RPCs on different connections: {conns:?}");
    assert_eq!(kong.connections_opened(), 2, "two connections are enough to alternate");
}

#[tokio::test]
async fn pool_size_bounds_idle_connections() {
    let server = FakeServer::start(None, polite_handler()).await;
    let kong = Kong::builder(&server.path).pool_size(2).build();
    let plugin = kong.plugin("demo", json!({}));
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("warm up");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (kong, plugin) = (kong.clone(), plugin.clone());
        tasks.push(tokio::spawn(async move {
            kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.map(|o| o.rpcs)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("event"), 2);
    }
    assert!(kong.connections_opened() > 2, "concurrent RPCs need their own connections");
    assert!(kong.idle_connections() <= 2, "idle {}", kong.idle_connections());
}

#[tokio::test]
async fn idle_connections_closed_by_the_server_are_not_reused() {
    let handler: Arc<common::Handler> = Arc::new(|_: &Seen| Reply::OkThenClose(Value::Map(vec![])));
    let server = FakeServer::start(None, handler).await;
    let kong = Kong::new(&server.path);
    kong.call("demo", "plugin.GetStatus", &Value::Nil).await.expect("first call");
    // Wait until the server has really closed the pooled connection.
    let mut raw = kong.raw_connection().await.expect("raw connection");
    raw.send_request(1, "plugin.GetStatus", &Value::Nil).await.expect("send");
    raw.read_value().await.expect("answer");
    assert!(raw.is_closed_by_peer().await, "the fake server closes after answering");
    // Like nginx, the emulator notices the close instead of failing with `no data`.
    kong.call("demo", "plugin.GetStatus", &Value::Nil).await.expect("second call on a fresh connection");
    assert_eq!(kong.connections_opened(), 2);
}

#[tokio::test]
async fn no_plugin_instance_restarts_and_replays_the_event() {
    // The server "restarts" after the first event: instance 100 is forgotten.
    let forgotten = Arc::new(Mutex::new(false));
    let next_id = Arc::new(AtomicU64::new(100));
    let f = forgotten.clone();
    let handler: Arc<common::Handler> = Arc::new(move |req: &Seen| match req.method.as_str() {
        "plugin.StartInstance" => {
            Reply::Ok(Value::Map(vec![("Id".into(), next_id.fetch_add(1, Ordering::SeqCst).into())]))
        }
        "plugin.HandleEvent" if *f.lock().unwrap() && get(&req.param, "InstanceId") == Some(&Value::from(100)) => {
            Reply::Err("No Plugin Instance #100".into())
        }
        "plugin.HandleEvent" => Reply::Ok(step(1, "ret".into())),
        _ => Reply::Err("unexpected".into()),
    });
    let server = FakeServer::start(None, handler).await;
    let kong = Kong::new(&server.path);
    let plugin = kong.plugin("demo", json!({}));
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("first");
    *forgotten.lock().unwrap() = true;
    let mut req = Request::new("GET", "/");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("recovered");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(
        server.methods(),
        vec![
            "plugin.StartInstance",
            "plugin.HandleEvent",
            "plugin.HandleEvent",
            "plugin.StartInstance",
            "plugin.HandleEvent"
        ]
    );
    assert_eq!(kong.cached_instance_id(&plugin), Some(Value::from(101)));
    assert!(req.logs().iter().any(|l| l.level == "warn" && l.message.contains("No Plugin Instance")));
}

#[tokio::test]
async fn endless_no_plugin_instance_is_bounded() {
    let handler: Arc<common::Handler> = Arc::new(|req: &Seen| match req.method.as_str() {
        "plugin.StartInstance" => Reply::Ok(Value::Map(vec![("Id".into(), 1.into())])),
        _ => Reply::Err("no plugin instance 1".into()),
    });
    let server = FakeServer::start(None, handler).await;
    let kong = Kong::builder(&server.path).max_event_attempts(3).build();
    let plugin = kong.plugin("demo", json!({}));
    let err = kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.unwrap_err();
    assert!(matches!(err, Error::InstanceRetriesExhausted { attempts: 3, .. }), "{err}");
    assert_eq!(server.methods().iter().filter(|m| *m == "plugin.StartInstance").count(), 3);
}

#[tokio::test]
async fn changed_server_pid_drops_the_instance_cache() {
    let pid = Arc::new(Mutex::new(1000u32));
    let server = FakeServer::start(Some(pid.clone()), polite_handler()).await;
    let kong = Kong::new(&server.path);
    let plugin = kong.plugin("demo", json!({}));
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("first");
    // Same pid on a new connection: nothing happens.
    kong.close_idle_connections();
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("second");
    assert_eq!(server.methods().iter().filter(|m| *m == "plugin.StartInstance").count(), 1);
    // A new pid seen on the next fresh connection: the instance is forgotten.
    *pid.lock().unwrap() = 2000;
    kong.close_idle_connections();
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("third");
    assert_eq!(kong.cached_instance_id(&plugin), None, "dropped while the event was running");
    kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.expect("fourth");
    assert_eq!(server.methods().iter().filter(|m| *m == "plugin.StartInstance").count(), 2);
}

#[tokio::test]
async fn kong_asserts_on_bad_responses() {
    // Wrong msgid.
    let handler: Arc<common::Handler> = Arc::new(|req: &Seen| {
        Reply::Raw(common::response(req.msgid + 5, Value::Nil, Value::Map(vec![("Id".into(), 1.into())])))
    });
    let server = FakeServer::start(None, handler).await;
    let kong = Kong::new(&server.path);
    let err = kong.call("demo", "plugin.StartInstance", &Value::Map(vec![])).await.unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("unexpected RPC response ID")), "{err}");
    assert_eq!(err.kong_effect(), KongEffect::LuaError);

    // Non-string error element.
    let handler: Arc<common::Handler> =
        Arc::new(|req: &Seen| Reply::Raw(common::response(req.msgid, 5.into(), Value::Nil)));
    let server = FakeServer::start(None, handler).await;
    let err = Kong::new(&server.path).call("demo", "plugin.GetStatus", &Value::Nil).await.unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("nil or a string")), "{err}");

    // A request instead of a response.
    let handler: Arc<common::Handler> = Arc::new(|_: &Seen| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &Value::Array(vec![0.into(), 1.into(), "x".into(), Value::Array(vec![])]))
            .unwrap();
        Reply::Raw(out)
    });
    let server = FakeServer::start(None, handler).await;
    let err = Kong::new(&server.path).call("demo", "plugin.GetStatus", &Value::Nil).await.unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("RPC response expected")), "{err}");

    // An RPC error string is an ordinary, fail-open error.
    let handler: Arc<common::Handler> = Arc::new(|_: &Seen| Reply::Err("boom".into()));
    let server = FakeServer::start(None, handler).await;
    let err = Kong::new(&server.path).call("demo", "plugin.GetStatus", &Value::Nil).await.unwrap_err();
    assert_eq!(err.rpc_message(), Some("boom"));
    assert_eq!(err.kong_effect(), KongEffect::SkipPlugin);
}

#[tokio::test]
async fn start_instance_failure_is_a_lua_error_and_connect_failure_fails_open() {
    let handler: Arc<common::Handler> = Arc::new(|_: &Seen| Reply::Err("bad config".into()));
    let server = FakeServer::start(None, handler).await;
    let kong = Kong::new(&server.path);
    let plugin = kong.plugin("demo", json!({}));
    let err = kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.unwrap_err();
    assert!(matches!(err, Error::StartInstance { .. }), "{err}");
    assert_eq!(err.kong_effect(), KongEffect::LuaError);
    assert_eq!(err.rpc_message(), Some("bad config"));

    let dir = tempfile::tempdir().unwrap();
    let kong = Kong::new(dir.path().join("nobody.sock"));
    let plugin = kong.plugin("demo", json!({}));
    let err = kong.run_event(&plugin, "access", &mut Request::new("GET", "/")).await.unwrap_err();
    assert!(
        matches!(err, Error::StartInstance { ref source, .. } if matches!(**source, Error::Connect { .. })),
        "{err}"
    );
}
