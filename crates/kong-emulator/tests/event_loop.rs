//! The event loop and PDK emulation against a scripted fake server: which Step method and
//! which `Data` Kong sends for each PDK call, terminal exits, raising PDK calls, and the
//! effects on the request.

mod common;

use common::{call, get, step, FakeServer, Reply, Seen};
use kong_emulator::{Kong, KongVersion, Request, Value};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// A server that, for every event, asks for `calls` in order and then returns.
async fn scripted(calls: Vec<Value>) -> FakeServer {
    let pos = Arc::new(Mutex::new(0usize));
    let handler: Arc<common::Handler> = Arc::new(move |req: &Seen| {
        let mut pos = pos.lock().unwrap();
        if req.method == "plugin.HandleEvent" {
            *pos = 0;
        }
        if req.method == "plugin.StartInstance" {
            return Reply::Ok(Value::Map(vec![("Id".into(), 1.into())]));
        }
        let next = calls.get(*pos).cloned();
        *pos += 1;
        Reply::Ok(step(9, next.unwrap_or_else(|| "ret".into())))
    });
    FakeServer::start(None, handler).await
}

/// The Step RPCs (method, Data or None) the server received, plus their raw bytes.
fn steps(server: &FakeServer) -> Vec<(String, Option<Value>, Vec<u8>)> {
    server
        .seen()
        .into_iter()
        .filter(|s| s.method.starts_with("plugin.Step"))
        .map(|s| {
            assert_eq!(get(&s.param, "EventId"), Some(&Value::from(9)), "EventId echoed");
            (s.method.clone(), get(&s.param, "Data").cloned(), s.bytes)
        })
        .collect()
}

async fn run(calls: Vec<Value>, req: &mut Request, version: KongVersion) -> (kong_emulator::EventOutcome, FakeServer) {
    let server = scripted(calls).await;
    let kong = Kong::builder(&server.path).version(version).build();
    let plugin = kong.plugin("demo", json!({}));
    let outcome = kong.run_event(&plugin, "access", req).await.expect("event");
    (outcome, server)
}

#[tokio::test]
async fn reads_use_the_right_step_methods_and_shapes() {
    let mut req = Request::new("GET", "/p")
        .with_query("a=1&flag&a=2")
        .with_header("Host", "example.com:8000")
        .with_header("X-Multi", "1")
        .with_header("x-multi", "2")
        .with_header("X-Bin", vec![0x66, 0xFF])
        .with_body(vec![0x00, 0xFF]);
    let (outcome, server) = run(
        vec![
            call("kong.request.get_header", vec!["x-multi".into()]),
            call("kong.request.get_header", vec!["missing".into()]),
            call("kong.request.get_headers", vec![]),
            call("kong.request.get_query", vec![]),
            call("kong.request.get_query_arg", vec!["flag".into()]),
            call("kong.request.get_host", vec![]),
            call("kong.request.get_raw_body", vec![]),
            call("kong.client.get_ip", vec![]),
            call("kong.router.get_route", vec![]),
            call("kong.no.such_method", vec![]),
        ],
        &mut req,
        KongVersion::V3_9,
    )
    .await;
    assert_eq!(outcome.pdk_calls.len(), 10);
    assert!(outcome.continues());
    let steps = steps(&server);
    let methods: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        methods,
        vec![
            "plugin.Step",
            "plugin.Step",
            "plugin.StepMultiMap",
            "plugin.StepMultiMap",
            "plugin.Step",
            "plugin.Step",
            "plugin.Step",
            "plugin.Step",
            "plugin.StepRoute",
            "plugin.Step"
        ]
    );
    // nginx ≥1.23 joins repeated headers into "1, 2"; Kong 3.9's get_header then answers the
    // first value (kong.tools.http.get_header), as 3.4 always did.
    assert_eq!(steps[0].1, Some(Value::from("1")), "the first of repeated headers");
    assert_eq!(steps[1].1, None, "nil → no Data key");
    let headers = steps[2].1.clone().expect("headers");
    assert_eq!(get(&headers, "x-multi"), Some(&Value::Array(vec!["1".into(), "2".into()])));
    assert_eq!(get(&headers, "host"), Some(&Value::Array(vec!["example.com:8000".into()])));
    let bin = get(&headers, "x-bin").and_then(|v| v.as_array()).and_then(|a| a.first()).cloned().unwrap();
    assert_eq!(bin.as_str(), None, "invalid UTF-8 is kept as bytes");
    let query = steps[3].1.clone().expect("query");
    assert_eq!(get(&query, "a"), Some(&Value::Array(vec!["1".into(), "2".into()])));
    assert_eq!(get(&query, "flag"), Some(&Value::Array(vec![])), "valueless flag → []");
    assert_eq!(steps[4].1, Some(Value::Boolean(true)));
    assert_eq!(steps[5].1, Some(Value::from("example.com")));
    assert!(wire_hex(&steps[6].2).ends_with("A4 44 61 74 61 C4 02 00 FF"), "raw body is bin");
    assert_eq!(steps[7].1, Some(Value::from("127.0.0.1")));
    assert_eq!(steps[8].1, None, "no route entity set");
    assert_eq!(steps[9].1, None);
    assert!(req.logs().iter().any(|l| l.message == "could not find pdk method: kong.no.such_method"));
}

fn wire_hex(b: &[u8]) -> String {
    kong_emulator::wire::hex(b)
}

#[tokio::test]
async fn empty_multimaps_are_explicit_empty_maps() {
    let mut req = Request::new("GET", "/");
    let (_, server) = run(
        vec![call("kong.request.get_headers", vec![]), call("kong.request.get_query", vec![])],
        &mut req,
        KongVersion::V3_9,
    )
    .await;
    for (method, _, bytes) in steps(&server) {
        assert_eq!(method, "plugin.StepMultiMap");
        assert!(wire_hex(&bytes).ends_with("A4 44 61 74 61 80"), "{}", wire_hex(&bytes));
    }
}

#[tokio::test]
async fn repeated_header_on_3_4_returns_the_first_value() {
    let mut req = Request::new("GET", "/").with_header("x", "1").with_header("X", "2");
    let (_, server) = run(vec![call("kong.request.get_header", vec!["x".into()])], &mut req, KongVersion::V3_4).await;
    assert_eq!(steps(&server)[0].1, Some(Value::from("1")));
}

#[tokio::test]
async fn writes_change_the_upstream_request_and_context() {
    let mut req = Request::new("GET", "/")
        .with_header("X-Api-Key", "secret")
        .with_header("X-Account-Id", "spoofed")
        .with_header("X-Keep", "k");
    let groups = Value::Array(vec!["ghasi-authenticated".into()]);
    let consumer = Value::Map(vec![("id".into(), "acc-1".into()), ("username".into(), "a@b".into())]);
    let headers = Value::Map(vec![
        ("X-Account-Id".into(), "acc-1".into()),
        ("x-api-key".into(), Value::Array(vec![])),
        ("X-Num".into(), 5.into()),
        ("X-List".into(), Value::Array(vec!["a".into(), "b".into()])),
    ]);
    let (outcome, server) = run(
        vec![
            call("kong.service.request.set_headers", vec![headers]),
            call("kong.service.request.add_header", vec!["X-Keep".into(), "k2".into()]),
            call("kong.service.request.clear_header", vec!["X-Nothing".into()]),
            call("kong.ctx.shared.set", vec!["authenticated_groups".into(), groups.clone()]),
            call("kong.ctx.shared.get", vec!["authenticated_groups".into()]),
            call("kong.client.authenticate", vec![consumer.clone(), Value::Nil]),
            call("kong.client.get_consumer", vec![]),
            call("kong.log.info", vec!["n=".into(), 3.into(), " ok=".into(), true.into()]),
            call("kong.request.get_header", vec!["x-account-id".into()]),
        ],
        &mut req,
        KongVersion::V3_9,
    )
    .await;
    assert!(outcome.continues());
    let up = req.upstream_headers();
    assert_eq!(up.get_all("x-account-id"), vec![&b"acc-1"[..]]);
    assert!(!up.contains("x-api-key"), "an empty array removes the header");
    assert_eq!(up.get_str("x-num").as_deref(), Some("5"));
    assert_eq!(up.get_all("x-list"), vec![&b"a"[..], &b"b"[..]]);
    assert_eq!(up.get_all("x-keep"), vec![&b"k"[..], &b"k2"[..]]);
    assert_eq!(req.client_headers().get_str("x-account-id").as_deref(), Some("spoofed"));
    assert_eq!(req.ctx_shared_get("authenticated_groups"), Some(&groups));
    assert_eq!(req.consumer(), Some(&consumer));
    assert_eq!(req.credential(), None);
    assert_eq!(req.plugin_logs("info"), vec!["n=3 ok=true"]);

    let steps = steps(&server);
    let methods: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(methods[5], "plugin.StepCredential", "authenticate answers with StepCredential");
    assert_eq!(methods[6], "plugin.StepConsumer");
    assert_eq!(steps[4].1, Some(groups), "ctx.shared round-trips");
    assert_eq!(steps[5].1, None);
    assert_eq!(steps[6].1, Some(consumer));
    assert_eq!(steps[8].1, Some(Value::from("acc-1")), "get_header sees the rewritten header");
}

#[tokio::test]
async fn exit_is_terminal_and_carries_status_body_headers() {
    let mut req = Request::new("GET", "/");
    let body = Value::Map(vec![("code".into(), "credential_missing".into()), ("url".into(), "a/b".into())]);
    let headers = Value::Map(vec![("WWW-Authenticate".into(), "ApiKey".into())]);
    let (outcome, server) = run(
        vec![
            call("kong.response.set_header", vec!["X-Early".into(), "1".into()]),
            call("kong.response.exit", vec![401.into(), body, headers]),
            call("kong.log.err", vec!["never reached".into()]),
        ],
        &mut req,
        KongVersion::V3_9,
    )
    .await;
    let exit = outcome.exit.expect("exit recorded");
    assert_eq!(exit.status, 401);
    assert_eq!(exit.body_text(), r#"{"code":"credential_missing","url":"a\/b"}"#);
    assert_eq!(exit.header("www-authenticate").as_deref(), Some("ApiKey"));
    assert_eq!(exit.header("x-early").as_deref(), Some("1"));
    assert_eq!(exit.header("content-type").as_deref(), Some("application/json; charset=utf-8"));
    assert_eq!(outcome.pdk_calls, vec!["kong.response.set_header", "kong.response.exit"]);
    // HandleEvent + one Step (for set_header); nothing after exit.
    assert_eq!(outcome.rpcs, 3);
    assert_eq!(steps(&server).len(), 1);
}

#[tokio::test]
async fn response_error_builds_kongs_message_body() {
    let mut req = Request::new("GET", "/");
    let (outcome, _) = run(vec![call("kong.response.error", vec![403.into()])], &mut req, KongVersion::V3_9).await;
    let exit = outcome.exit.expect("exit");
    assert_eq!((exit.status, exit.body_text()), (403, r#"{"message":"Forbidden"}"#.to_string()));
}

#[tokio::test]
async fn bad_pdk_arguments_abandon_the_event() {
    for (version, c) in [
        (KongVersion::V3_9, call("kong.response.exit", vec!["401".into()])),
        (KongVersion::V3_9, call("kong.client.authenticate", vec![])),
        (KongVersion::V3_9, call("kong.service.request.set_header", vec!["X".into()])),
        (KongVersion::V3_9, call("kong.request.get_header", vec![1.into()])),
        (KongVersion::V3_4, call("kong.service.request.set_header", vec!["X".into(), Value::Array(vec!["a".into()])])),
    ] {
        let mut req = Request::new("GET", "/");
        let method = c.as_map().and_then(|m| m.first()).map(|(_, v)| v.clone()).unwrap();
        let (outcome, server) = run(vec![c, call("kong.log.err", vec!["after".into()])], &mut req, version).await;
        assert!(outcome.abandoned.is_some(), "{method} should raise on {version:?}");
        assert!(outcome.exit.is_none());
        assert!(steps(&server).is_empty(), "Kong never answers a raising call");
    }
    // The same array is fine on 3.9.
    let mut req = Request::new("GET", "/");
    let (outcome, _) = run(
        vec![call("kong.service.request.set_header", vec!["X".into(), Value::Array(vec!["a".into(), "b".into()])])],
        &mut req,
        KongVersion::V3_9,
    )
    .await;
    assert!(outcome.abandoned.is_none());
    assert_eq!(req.upstream_headers().get_all("x"), vec![&b"a"[..], &b"b"[..]]);
}
