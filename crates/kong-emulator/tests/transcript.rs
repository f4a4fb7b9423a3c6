//! A long scripted conversation covering every PDK function, odd argument shapes and odd
//! (but acceptable) response encodings, rendered as a transcript: each event's outcome and
//! the request's end state, then every byte the emulator sent.
//!
//! The transcript is pinned by its hash, so that any change of the emulator's behaviour —
//! on the wire or in the PDK emulation — is noticed, and a pure optimisation can prove it
//! changed nothing. After an intended change, write the transcript before and after
//! (`KONG_EMULATOR_TRANSCRIPT=<file> cargo test -p kong-emulator --test transcript`, on the
//! old and the new commit), check the diff, and update [`EXPECTED_FNV1A`].

mod common;

use common::{call, response, FakeServer, Reply, Seen};
use kong_emulator::{Kong, KongVersion, PluginSpec, PoolPolicy, Request, Value};
use serde_json::json;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

type Answer = Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

fn ok(v: Value) -> Answer {
    Box::new(move |msgid| response(msgid, Value::Nil, v.clone()))
}

fn raw(f: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static) -> Answer {
    Box::new(f)
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn step_v(event_id: Value, data: Value) -> Value {
    Value::Map(vec![("EventId".into(), event_id), ("Data".into(), data)])
}

fn call_raw_args(method: &str, args: Option<Value>) -> Value {
    let mut m = vec![("Method".into(), method.into())];
    if let Some(a) = args {
        m.push(("Args".into(), a));
    }
    Value::Map(m)
}

/// A server answering StartInstance/CloseInstance itself and everything else from a queue.
async fn server(queue: Arc<Mutex<VecDeque<Answer>>>, pid: Option<Arc<Mutex<u32>>>) -> FakeServer {
    let handler: Arc<common::Handler> = Arc::new(move |req: &Seen| match req.method.as_str() {
        "plugin.StartInstance" => Reply::Ok(Value::Map(vec![("Id".into(), 42.into())])),
        "plugin.CloseInstance" => Reply::Ok(Value::Map(vec![])),
        _ => match queue.lock().unwrap().pop_front() {
            Some(a) => Reply::Raw(a(req.msgid)),
            None => Reply::Err("queue empty".into()),
        },
    });
    FakeServer::start(pid, handler).await
}

/// Bytes as text when they are UTF-8, else as hex.
fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("x'{}'", kong_emulator::wire::hex(b)),
    }
}

/// A compact, exact rendering of a value (types included).
fn val(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::F32(f) => format!("f32:{f:?}"),
        Value::F64(f) => format!("f64:{f:?}"),
        Value::String(s) => text(s.as_bytes()),
        Value::Binary(b) => format!("bin'{}'", kong_emulator::wire::hex(b)),
        Value::Ext(t, b) => format!("ext({t},'{}')", kong_emulator::wire::hex(b)),
        Value::Array(items) => format!("[{}]", items.iter().map(val).collect::<Vec<_>>().join(", ")),
        Value::Map(entries) => {
            format!(
                "{{{}}}",
                entries.iter().map(|(k, v)| format!("{}: {}", val(k), val(v))).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

fn headers(h: &kong_emulator::HeaderMap) -> String {
    h.lines().iter().map(|l| format!("{}={}", l.name, text(&l.value))).collect::<Vec<_>>().join(" ")
}

fn describe_outcome(outcome: &Result<kong_emulator::EventOutcome, kong_emulator::Error>) -> String {
    match outcome {
        Err(e) => format!("error: {e} ({:?})", e.kong_effect()),
        Ok(o) => {
            let exit = o
                .exit
                .as_ref()
                .map(|e| format!(" exit={} body={} headers[{}]", e.status, text(&e.body), headers(&e.headers)))
                .unwrap_or_default();
            format!(
                "ok rpcs={} attempts={} calls={:?} abandoned={:?}{exit}",
                o.rpcs, o.attempts, o.pdk_calls, o.abandoned
            )
        }
    }
}

fn describe_request(req: &Request) -> String {
    let mut s = String::new();
    if req.upstream_headers() != req.client_headers() {
        let _ = writeln!(s, "upstream[{}]", headers(req.upstream_headers()));
    }
    let pairs =
        |t: &[(Value, Value)]| t.iter().map(|(k, v)| format!("{}: {}", val(k), val(v))).collect::<Vec<_>>().join(", ");
    let _ = writeln!(s, "ctx_shared{{{}}}", pairs(req.ctx_shared()));
    if req.consumer().is_some() || req.credential().is_some() {
        let _ = writeln!(
            s,
            "consumer={} credential={}",
            req.consumer().map(val).unwrap_or_default(),
            req.credential().map(val).unwrap_or_default()
        );
    }
    if !req.response_headers().is_empty() {
        let _ = writeln!(s, "response[{}]", headers(req.response_headers()));
    }
    for l in req.logs() {
        let _ = writeln!(s, "log {:?} {} {}", l.source, l.level, l.message);
    }
    s
}

fn rich_request() -> Request {
    Request::new("POST", "/v1/messages")
        .with_query("a=1&flag&a=2&e=%41+b&&=x")
        .with_header("Host", "Example.com:8000")
        .with_header("X-Api-Key", "k-123")
        .with_header("X-Multi", "1")
        .with_header("x-multi", "2")
        .with_header("X_Under", "u")
        .with_header("Cookie", "a=1")
        .with_header("cookie", "b=2")
        .with_header("X-Forwarded-For", "1.1.1.1")
        .with_header("x-forwarded-for", "2.2.2.2")
        .with_header("X-Bin", vec![0x66, 0xFF])
        .with_header("X-Long", "x".repeat(40))
        .with_body(vec![0x00, 0xFF, 0x10])
        .with_client_ip("10.0.0.7")
        .with_forwarded_ip("203.0.113.9")
        .with_start_time(1_700_000_000.25)
        .with_route(Value::Map(vec![("id".into(), "r-1".into()), ("paths".into(), Value::Array(vec!["/v1".into()]))]))
        .with_var("custom_var", "cv")
}

fn events(node_id_probe: bool) -> Vec<(&'static str, Vec<Answer>)> {
    let e = |id: u64| Value::from(id);
    let mut evs: Vec<(&'static str, Vec<Answer>)> = Vec::new();
    // 1: the benchmark's floor.
    evs.push((
        "floor",
        vec![
            ok(step_v(e(9), call("kong.request.get_header", vec!["x-api-key".into()]))),
            ok(step_v(
                e(9),
                call(
                    "kong.service.request.set_headers",
                    vec![Value::Map(vec![
                        ("X-Account-Id".into(), "acc".into()),
                        ("X-User-Id".into(), "usr".into()),
                        ("X-Consumer-Username".into(), "acc".into()),
                        ("X-Credential-Identifier".into(), "key_hit_0".into()),
                        ("x-api-key".into(), Value::Array(vec![])),
                    ])],
                ),
            )),
            ok(step_v(
                e(9),
                call(
                    "kong.ctx.shared.set",
                    vec!["authenticated_groups".into(), Value::Array(vec!["ghasi-authenticated".into()])],
                ),
            )),
            ok(step_v(e(9), "ret".into())),
        ],
    ));
    // 2: every read.
    let reads: Vec<Value> = vec![
        call("kong.request.get_header", vec!["x-multi".into()]),
        call("kong.request.get_header", vec!["X_MULTI".into()]),
        call("kong.request.get_header", vec!["x-under".into()]),
        call("kong.request.get_header", vec!["cookie".into()]),
        call("kong.request.get_header", vec!["x_forwarded_for".into()]),
        call("kong.request.get_header", vec!["x-bin".into()]),
        call("kong.request.get_header", vec!["x-long".into()]),
        call("kong.request.get_header", vec!["missing".into()]),
        call(
            "kong.request.get_header",
            vec![Value::Binary(vec![0x78, 0x2D, 0x61, 0x70, 0x69, 0x2D, 0x6B, 0x65, 0x79])],
        ),
        call("kong.request.get_headers", vec![]),
        call("kong.request.get_headers", vec![2.into()]),
        call("kong.request.get_query", vec![]),
        call("kong.request.get_query", vec![1.into()]),
        call("kong.request.get_query_arg", vec!["a".into()]),
        call("kong.request.get_query_arg", vec!["flag".into()]),
        call("kong.request.get_query_arg", vec!["e".into()]),
        call("kong.request.get_method", vec![]),
        call("kong.request.get_path", vec![]),
        call("kong.request.get_raw_query", vec![]),
        call("kong.request.get_scheme", vec![]),
        call("kong.request.get_host", vec![]),
        call("kong.request.get_raw_body", vec![]),
        call("kong.client.get_ip", vec![]),
        call("kong.client.get_forwarded_ip", vec![]),
        call("kong.client.get_consumer", vec![]),
        call("kong.client.get_credential", vec![]),
        call("kong.router.get_route", vec![]),
        call("kong.router.get_service", vec![]),
        call("kong.nginx.get_var", vec!["remote_addr".into()]),
        call("kong.nginx.get_var", vec!["request_uri".into()]),
        call("kong.nginx.get_var", vec!["http_x_multi".into()]),
        call("kong.nginx.get_var", vec!["custom_var".into()]),
        call("kong.nginx.get_var", vec!["host".into()]),
        call("kong.nginx.get_var", vec!["nope".into()]),
        call("kong.nginx.req_start_time", vec![]),
        call(
            "kong.log.notice",
            vec![
                "n=".into(),
                3.into(),
                " f=".into(),
                2.5.into(),
                " t=".into(),
                true.into(),
                Value::Nil,
                Value::Map(vec![("k".into(), "v/w".into())]),
            ],
        ),
        call("kong.log.bogus", vec!["x".into()]),
        call("kong.no.such_method", vec![]),
    ];
    let mut answers: Vec<Answer> = reads.into_iter().map(|c| ok(step_v("ev-str".into(), c))).collect();
    if node_id_probe {
        answers.push(ok(step_v("ev-str".into(), call("kong.node.get_id", vec![]))));
    }
    answers.push(ok(step_v("ev-str".into(), "ret".into())));
    evs.push(("reads", answers));
    // 3: odd argument shapes, round-tripped through ctx.shared / ngx.ctx.
    let big = Value::from(u64::MAX);
    let weird =
        Value::Map(vec![(Value::from(1), "a".into()), (Value::from(2), "b".into()), (Value::F64(3.0), "c".into())]);
    let holes = Value::Array(vec![Value::Nil, "x".into(), Value::Nil]);
    let nested = Value::Map(vec![
        ("nilval".into(), Value::Nil),
        (Value::Nil, "nilkey".into()),
        ("bin".into(), Value::Binary(b"bytes".to_vec())),
        ("badutf".into(), Value::Binary(vec![0xC3, 0x28])),
        ("ext".into(), Value::Ext(5, vec![1, 2])),
        ("f32".into(), Value::F32(1.5)),
        ("f32i".into(), Value::F32(2.0)),
        ("big".into(), big.clone()),
        ("neg".into(), Value::from(-(1i64 << 60))),
        ("empty_map".into(), Value::Map(vec![])),
        ("empty_arr".into(), Value::Array(vec![])),
        ("weird".into(), weird.clone()),
        ("holes".into(), holes.clone()),
        ("dense".into(), Value::Array(vec![1.into(), Value::Array(vec![Value::Nil]), "z".repeat(33).into()])),
        ("dup".into(), Value::Map(vec![(Value::from(1), "p".into()), (Value::from(1), "q".into())])),
        ("nan".into(), Value::F64(f64::NAN)),
        ("inf".into(), Value::F64(f64::INFINITY)),
        ("frac".into(), Value::F64(-0.25)),
    ]);
    let set_get = |k: &str, v: Value| -> Vec<Value> {
        vec![call("kong.ctx.shared.set", vec![k.into(), v]), call("kong.ctx.shared.get", vec![k.into()])]
    };
    let mut odd: Vec<Value> = Vec::new();
    odd.extend(set_get("nested", nested.clone()));
    odd.extend(set_get("holes", holes.clone()));
    odd.extend(set_get("weird", weird));
    odd.extend(set_get("big", big));
    odd.extend(set_get("emptymap", Value::Map(vec![])));
    odd.push(call("kong.ctx.shared.set", vec![Value::from(7), "numkey".into()]));
    odd.push(call("kong.ctx.shared.get", vec![Value::F64(7.0)]));
    odd.push(call("kong.ctx.shared.set", vec!["nested".into(), Value::Nil]));
    odd.push(call("kong.ctx.shared.get", vec!["nested".into()]));
    odd.push(call("kong.nginx.set_ctx", vec!["n".into(), nested]));
    odd.push(call("kong.nginx.get_ctx", vec!["n".into()]));
    odd.push(call_raw_args("kong.request.get_method", None));
    odd.push(call_raw_args("kong.log.info", Some(Value::Map(vec![("a".into(), 1.into())]))));
    odd.push(call_raw_args("kong.log.info", Some("scalar".into())));
    odd.push(call_raw_args("kong.log.info", None));
    odd.push(call("kong.service.request.set_header", vec!["X-Num".into(), 5.into()]));
    odd.push(call("kong.service.request.set_header", vec!["X-Float".into(), 2.75.into()]));
    odd.push(call("kong.service.request.set_header", vec!["X-Bool".into(), false.into()]));
    odd.push(call("kong.service.request.set_header", vec!["X-Arr".into(), Value::Array(vec!["a".into(), 1.into()])]));
    odd.push(call("kong.service.request.set_header", vec!["x-multi".into(), "only".into()]));
    odd.push(call("kong.service.request.add_header", vec!["X-Add".into(), "1".into()]));
    odd.push(call("kong.service.request.add_header", vec!["X-Add".into(), Value::Array(vec!["2".into(), "3".into()])]));
    odd.push(call("kong.service.request.clear_header", vec!["X-UNDER".into()]));
    odd.push(call("kong.service.request.set_headers", vec![Value::Array(vec![])]));
    odd.push(call(
        "kong.service.request.set_headers",
        vec![Value::Map(vec![("X-Bin-Val".into(), Value::Binary(vec![0xFF]))])],
    ));
    let bad_name = kong_emulator::wire::lua_string(&[0x58, 0xFF]);
    odd.push(call("kong.service.request.set_header", vec![bad_name.clone(), "bad-name".into()]));
    odd.push(call(
        "kong.service.request.add_header",
        vec![bad_name.clone(), Value::Array(vec![true.into(), 1.5.into()])],
    ));
    odd.push(call("kong.request.get_header", vec![bad_name.clone()]));
    odd.push(call("kong.request.get_header", vec![Value::Binary(vec![0x58, 0xFF])]));
    odd.push(call(
        "kong.service.request.set_headers",
        vec![Value::Map(vec![
            (Value::Binary(b"X-Bin-Key".to_vec()), Value::Array(vec!["a".into(), "c".into()])),
            (Value::Binary(vec![0x59, 0xFE]), Value::Array(vec!["second".into(), Value::Nil])),
            ("X-Empty-Map".into(), Value::Map(vec![])),
            ("X-Int".into(), Value::from(-3)),
            ("X-Big".into(), Value::from(u64::MAX)),
        ])],
    ));
    odd.push(call("kong.request.get_headers", vec![]));
    odd.push(call("kong.response.set_header", vec!["X-R".into(), "1".into()]));
    odd.push(call("kong.response.add_header", vec!["X-R".into(), "2".into()]));
    odd.push(call(
        "kong.client.authenticate",
        vec![Value::Map(vec![("id".into(), "c1".into())]), Value::Map(vec![("id".into(), "cred".into())])],
    ));
    odd.push(call("kong.client.get_consumer", vec![]));
    odd.push(call("kong.client.get_credential", vec![]));
    odd.push(call("kong.request.get_headers", vec![]));
    let mut answers: Vec<Answer> = odd.into_iter().map(|c| ok(step_v(e(70000), c))).collect();
    answers.push(ok(step_v(e(70000), "ret".into())));
    evs.push(("odd-args", answers));
    // 4: acceptable but unusual response encodings.
    evs.push((
        "odd-encodings",
        vec![
            // type as float64 1.0, msgid as uint8, extra trailing element
            raw(move |msgid| {
                let mut out = vec![0x95, 0xCB];
                out.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
                out.extend_from_slice(&[0xCC, msgid as u8, 0xC0]);
                out.extend(enc(&step_v(e(1), call("kong.request.get_path", vec![]))));
                out.extend(enc(&"extra".into()));
                out
            }),
            // msgid as float, Data and keys as str8, a serverPid notification first
            raw(move |msgid| {
                let mut out = enc(&Value::Array(vec![2.into(), "serverPid".into(), 77.into()]));
                out.extend(enc(&Value::Array(vec![2.into(), "other".into(), Value::Nil])));
                out.extend_from_slice(&[0x94, 0x01, 0xCB]);
                out.extend_from_slice(&(msgid as f64).to_bits().to_be_bytes());
                out.push(0xC0);
                // {EventId: 1, Data: {Method: str8, Args: [..]}} with str8 keys
                out.push(0x82);
                out.extend_from_slice(&[0xD9, 7]);
                out.extend_from_slice(b"EventId");
                out.push(0x01);
                out.extend_from_slice(&[0xD9, 4]);
                out.extend_from_slice(b"Data");
                out.push(0x81);
                out.extend_from_slice(&[0xD9, 6]);
                out.extend_from_slice(b"Method");
                out.extend_from_slice(&[0xD9, 26]);
                out.extend_from_slice(b"kong.request.get_raw_query");
                out
            }),
            // duplicate Data keys (first wins), a binary key first
            raw(move |msgid| {
                let v = Value::Map(vec![
                    (Value::Binary(b"Data".to_vec()), "ret".into()),
                    ("EventId".into(), 1.into()),
                    ("Data".into(), call("kong.request.get_scheme", vec![])),
                    ("Data".into(), "ret".into()),
                ]);
                response(msgid, Value::Nil, v)
            }),
            // Method with invalid UTF-8
            raw(move |msgid| {
                let v = Value::Map(vec![
                    ("EventId".into(), 1.into()),
                    (
                        "Data".into(),
                        Value::Map(vec![
                            ("Method".into(), Value::from("kong.x")),
                            ("Args".into(), Value::Array(vec![])),
                        ]),
                    ),
                ]);
                let mut out = response(msgid, Value::Nil, v);
                // replace the trailing "kong.x" bytes: find and corrupt 'x'
                let pos = out.windows(6).position(|w| w == b"kong.x").unwrap();
                out[pos + 5] = 0xFF;
                out
            }),
            // "ret" in str16 form, followed by a pipelined notification for the next RPC
            raw(move |msgid| {
                let mut out = vec![0x94, 0x01];
                out.extend(enc(&Value::from(msgid)));
                out.push(0xC0);
                out.push(0x82);
                out.extend(enc(&"EventId".into()));
                out.push(0x01);
                out.extend(enc(&"Data".into()));
                out.extend_from_slice(&[0xDA, 0, 3]);
                out.extend_from_slice(b"ret");
                out.extend(enc(&Value::Array(vec![2.into(), "serverPid".into(), 77.into()])));
                out
            }),
        ],
    ));
    // 5: the HandleEvent answer with a table EventId.
    let table_id =
        Value::Map(vec![("a".into(), Value::Map(vec![])), ("b".into(), Value::Array(vec![1.into(), Value::Nil]))]);
    evs.push((
        "table-event-id",
        vec![
            ok(step_v(table_id.clone(), call("kong.request.get_method", vec![]))),
            ok(step_v(e(3), call("kong.request.get_method", vec![]))),
            ok(step_v(e(3), "ret".into())),
        ],
    ));
    // 6: missing EventId.
    evs.push((
        "no-event-id",
        vec![
            ok(Value::Map(vec![("Data".into(), call("kong.request.get_method", vec![]))])),
            ok(Value::Map(vec![("Data".into(), "ret".into())])),
        ],
    ));
    // 7..: failures, one per event.
    evs.push((
        "rpc-error",
        vec![
            ok(step_v(e(1), call("kong.request.get_path", vec![]))),
            Box::new(|m| response(m, "boom".into(), Value::Nil)),
        ],
    ));
    evs.push(("bad-error", vec![Box::new(|m| response(m, 5.into(), Value::Nil))]));
    evs.push(("wrong-msgid", vec![Box::new(|m| response(m + 3, Value::Nil, Value::Nil))]));
    evs.push(("not-array", vec![Box::new(|_| enc(&Value::Map(vec![("a".into(), 1.into())])))]));
    evs.push(("type-0", vec![Box::new(|m| enc(&Value::Array(vec![0.into(), m.into(), Value::Nil, Value::Nil])))]));
    evs.push(("short-array", vec![Box::new(|m| enc(&Value::Array(vec![1.into(), m.into()])))]));
    evs.push(("step-not-table", vec![ok("nope".into())]));
    evs.push(("data-bad", vec![ok(step_v(e(1), 5.into()))]));
    evs.push(("data-string", vec![ok(step_v(e(1), "rets".into()))]));
    evs.push(("method-bad", vec![ok(step_v(e(1), Value::Map(vec![("Method".into(), 5.into())])))]));
    evs.push((
        "method-bin",
        vec![ok(step_v(e(1), Value::Map(vec![("Method".into(), Value::Binary(b"kong.request.get_path".to_vec()))])))],
    ));
    evs.push(("reserved", vec![Box::new(|_| vec![0xC1])]));
    evs.push((
        "exit",
        vec![
            ok(step_v(e(2), call("kong.response.set_header", vec!["X-Early".into(), "1".into()]))),
            ok(step_v(
                e(2),
                call(
                    "kong.response.exit",
                    vec![
                        401.into(),
                        Value::Map(vec![("code".into(), "missing".into()), ("url".into(), "a/b".into())]),
                        Value::Map(vec![("WWW-Authenticate".into(), "ApiKey".into())]),
                    ],
                ),
            )),
        ],
    ));
    evs.push(("exit-str", vec![ok(step_v(e(2), call("kong.response.exit", vec![200.into(), "plain".into()])))]));
    evs.push(("error", vec![ok(step_v(e(2), call("kong.response.error", vec![403.into()])))]));
    evs.push((
        "error-msg",
        vec![ok(step_v(
            e(2),
            call(
                "kong.response.error",
                vec![429.into(), "slow down".into(), Value::Map(vec![("Retry-After".into(), 5.into())])],
            ),
        ))],
    ));
    for bad in [
        call("kong.response.exit", vec!["401".into()]),
        call("kong.response.exit", vec![200.into(), 5.into()]),
        call("kong.response.error", vec![200.into()]),
        call("kong.client.authenticate", vec![]),
        call("kong.client.authenticate", vec!["x".into()]),
        call("kong.service.request.set_header", vec!["X".into()]),
        call("kong.service.request.set_header", vec![1.into(), "v".into()]),
        call("kong.service.request.set_headers", vec!["x".into()]),
        call("kong.service.request.set_headers", vec![Value::Array(vec!["a".into()])]),
        call("kong.service.request.set_header", vec!["X".into(), Value::Array(vec![Value::Map(vec![])])]),
        call("kong.service.request.clear_header", vec![Value::Nil]),
        call("kong.request.get_header", vec![1.into()]),
        call("kong.request.get_headers", vec![0.into()]),
        call("kong.request.get_headers", vec![5000.into()]),
        call("kong.request.get_query", vec!["x".into()]),
        call("kong.request.get_query_arg", vec![true.into()]),
        call("kong.ctx.shared.set", vec![Value::Nil, 1.into()]),
        call("kong.nginx.set_ctx", vec![]),
        call("kong.nginx.get_var", vec![3.into()]),
        call(
            "kong.service.request.add_header",
            vec!["X".into(), Value::Array(vec!["a".into(), Value::Array(vec![1.into()])])],
        ),
        call("kong.service.request.add_header", vec![Value::Map(vec![]), "v".into()]),
        call(
            "kong.service.request.set_headers",
            vec![Value::Map(vec![("X-Holes".into(), Value::Array(vec!["a".into(), Value::Nil, "c".into()]))])],
        ),
        call(
            "kong.service.request.set_headers",
            vec![Value::Map(vec![("X".into(), Value::Map(vec![("k".into(), 1.into())]))])],
        ),
        call("kong.service.request.set_headers", vec![Value::Map(vec![(Value::from(2), "v".into())])]),
        call("kong.client.authenticate", vec![Value::Nil, Value::Map(vec![("id".into(), "cred-only".into())])]),
        call("kong.service.request.set_header", vec!["X".into(), Value::Array(vec!["a".into()])]),
    ] {
        evs.push(("raise", vec![ok(step_v(e(4), bad))]));
    }
    evs
}

async fn run_all(version: KongVersion, policy: PoolPolicy, out: &mut String) {
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let pid = Arc::new(Mutex::new(77u32));
    let server = server(queue.clone(), Some(pid)).await;
    let kong = Kong::builder(&server.path)
        .version(version)
        .pool_policy(policy)
        .read_timeout(std::time::Duration::from_secs(2))
        .build();
    let mut spec = PluginSpec::new("demo", json!({"a": 1}));
    spec.id = Some("plugin-id".into());
    spec.route_id = Some("route-id".into());
    let plugin = kong.plugin_from(spec);
    let node = kong.node_id().to_string();
    for (name, answers) in events(true) {
        let n = answers.len();
        queue.lock().unwrap().extend(answers);
        let mut req = rich_request();
        let outcome = kong.run_event(&plugin, "access", &mut req).await;
        let left = queue.lock().unwrap().len();
        queue.lock().unwrap().clear();
        writeln!(out, "=== {version:?} {policy:?} {name} ({n} answers, {left} unused)").unwrap();
        writeln!(out, "{}", describe_outcome(&outcome)).unwrap();
        out.push_str(&describe_request(&req).replace(&node, "<node-id>"));
    }
    // The plain `call` API.
    for v in [
        Value::Map(vec![("Id".into(), 5.into()), ("x".into(), Value::Nil)]),
        Value::Array(vec![Value::Nil, Value::Binary(vec![1])]),
        Value::Nil,
    ] {
        queue.lock().unwrap().push_back(ok(v));
        let r = kong.call("demo", "plugin.GetStatus", &Value::Map(vec![("Name".into(), "demo".into())])).await;
        writeln!(out, "call -> {}", r.as_ref().map(val).unwrap_or_else(|e| e.to_string())).unwrap();
    }
    // A config change and a stale instance.
    kong.update_config(&plugin, json!({"a": 2}));
    queue.lock().unwrap().push_back(Box::new(|m| response(m, "No Plugin Instance 42".into(), Value::Nil)));
    queue.lock().unwrap().push_back(ok(step_v(1.into(), "ret".into())));
    let mut req = Request::new("GET", "/");
    let outcome = kong.run_event(&plugin, "access", &mut req).await;
    writeln!(out, "=== stale instance\n{}", describe_outcome(&outcome)).unwrap();
    out.push_str(&describe_request(&req));
    writeln!(out, "rpcs={} opened={} idle={}", kong.rpc_count(), kong.connections_opened(), kong.idle_connections())
        .unwrap();

    writeln!(out, "--- wire").unwrap();
    for s in server.seen() {
        let bytes = if s.method == "plugin.StartInstance" {
            "<config>".to_string()
        } else {
            kong_emulator::wire::hex(&s.bytes)
        };
        writeln!(
            out,
            "conn={} {} {}",
            s.conn,
            s.method,
            bytes.replace(&kong_emulator::wire::hex(node.as_bytes()), "<node-id>")
        )
        .unwrap();
    }
}

#[tokio::test]
async fn transcript() {
    let mut out = String::new();
    for (version, policy) in [
        (KongVersion::V3_9, PoolPolicy::Lifo),
        (KongVersion::V3_4, PoolPolicy::Lifo),
        (KongVersion::V3_9, PoolPolicy::Rotate),
    ] {
        run_all(version, policy, &mut out).await;
    }
    assert!(out.contains("kong.response.exit"));
    if let Ok(path) = std::env::var("KONG_EMULATOR_TRANSCRIPT") {
        std::fs::write(path, &out).unwrap();
    }
    let hash = fnv1a(out.as_bytes());
    assert_eq!(
        hash,
        EXPECTED_FNV1A,
        "the emulator's transcript changed (FNV-1a {hash:#018x}, {} bytes): see this file's header",
        out.len()
    );
}

/// FNV-1a (64 bits) of the transcript (124,974 bytes). Last changed when 3.9's `get_header`
/// began answering the first of repeated headers, as Kong's `kong.tools.http.get_header` does
/// (the diff: only those Steps' `Data`).
const EXPECTED_FNV1A: u64 = 0x64ee_8ba4_0fdc_b159;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}
