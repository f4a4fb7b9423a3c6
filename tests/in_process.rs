//! The protocol tier below the binary: the connection loop, dispatch and the event engine,
//! served in this process over `tokio::io::duplex` pipes, one task per connection as the
//! server runs them, and on tokio's paused clock where time matters (event timeouts, a
//! plugin waiting on I/O). No process, socket or sleep: these tests are deterministic and
//! can look at what the binary cannot show, such as why a connection was closed.
//!
//! The spawned-binary tests (`tests/protocol.rs`, `tests/events.rs`, …) stay the top tier:
//! the real socket, the shard threads, the command line, the logs and restarts.

use std::sync::Arc;
use std::time::Duration;

use ghasi_plugin_server::buffer_budget::{BudgetExceeded, BufferBudget};
use ghasi_plugin_server::codec::FrameError;
use ghasi_plugin_server::connection::{self, ConnectionError, Limits};
use ghasi_plugin_server::plugins;
use ghasi_plugin_server::registry::Registry;
use ghasi_plugin_server::rpc::{EnvelopeError, ProtocolError};
use ghasi_plugin_server::server;
use ghasi_plugin_server::services::Services;
use rmpv::Value;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

// Only its buffer reader: the rest of tests/common drives the spawned binary.
#[path = "common/raw.rs"]
mod raw;

/// Kong's own read timeout for an event, the production default of `--event-timeout-secs`.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server process holds: one registry (with the test plugins and services of its
/// own, so tests share no cache or clock) and the limits.
struct Harness {
    registry: Registry,
    limits: Arc<Limits>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_limits(1 << 20, 8 << 20)
    }

    fn with_limits(max_frame_bytes: usize, buffer_budget_bytes: usize) -> Harness {
        let mut specs = plugins::PLUGINS.to_vec();
        specs.extend_from_slice(plugins::TEST_PLUGINS);
        let limits =
            Limits { max_frame_bytes, send_server_pid: true, buffer_budget: BufferBudget::new(buffer_budget_bytes) };
        Harness { registry: Registry::new(specs, Services::for_tests(), EVENT_TIMEOUT), limits: Arc::new(limits) }
    }

    /// A new connection, served by its own task like an accepted socket.
    async fn connect(&self) -> Conn {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (registry, limits) = (self.registry.clone(), self.limits.clone());
        let served = tokio::spawn(async move { connection::serve(&mut server, registry, &limits).await });
        let mut conn = Conn { stream: client, buf: Vec::new(), served };
        // Every connection starts with `[2, "serverPid", pid]`.
        let first = conn.read_value().await.expect("serverPid notification");
        assert_eq!(first, Value::Array(vec![2.into(), "serverPid".into(), std::process::id().into()]));
        conn
    }

    fn parked_events(&self) -> usize {
        self.registry.parked_events()
    }
}

/// Kong's side of one connection.
struct Conn {
    stream: DuplexStream,
    buf: Vec<u8>,
    served: JoinHandle<Result<(), ConnectionError>>,
}

impl Conn {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, value: &Value) {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        self.send_raw(&out).await;
    }

    /// One value; `None` once the server has closed the connection.
    async fn read_value(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = raw::take_value(&mut self.buf) {
                return Some(v);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await.expect("read") {
                0 => return None,
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// `[0, msgid, method, [param]]` → `(error, result)`.
    async fn call(&mut self, msgid: u64, method: &str, param: Value) -> (Value, Value) {
        self.send(&Value::Array(vec![0.into(), msgid.into(), method.into(), Value::Array(vec![param])])).await;
        let response = self.read_value().await.expect("a response");
        let Value::Array(items) = response else { panic!("response is not an array: {response:?}") };
        assert_eq!((items.len(), &items[0], &items[1]), (4, &Value::from(1), &Value::from(msgid)), "{items:?}");
        (items[2].clone(), items[3].clone())
    }

    async fn ok(&mut self, msgid: u64, method: &str, param: Value) -> Value {
        let (err, result) = self.call(msgid, method, param).await;
        assert!(err.is_nil(), "{method} failed: {err:?}");
        result
    }

    /// The error text of a call that must fail.
    async fn error(&mut self, msgid: u64, method: &str, param: Value) -> String {
        let (err, result) = self.call(msgid, method, param).await;
        assert!(result.is_nil(), "{result:?}");
        err.as_str().unwrap_or_else(|| panic!("error is not a string: {err:?}")).to_owned()
    }

    /// Waits for the server to close this connection and says why it did.
    async fn closed_by_server(mut self) -> Result<(), ConnectionError> {
        assert!(self.read_value().await.is_none(), "expected the server to close the connection");
        self.served.await.expect("connection task")
    }

    /// Closes our side; the server's task ends and says how it saw the end.
    async fn hang_up(self) -> Result<(), ConnectionError> {
        drop(self.stream);
        self.served.await.expect("connection task")
    }
}

fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(entries.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
}

fn get<'a>(m: &'a Value, key: &str) -> Option<&'a Value> {
    m.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

fn event_id(result: &Value) -> u64 {
    get(result, "EventId").and_then(Value::as_u64).expect("EventId")
}
fn data(result: &Value) -> &Value {
    get(result, "Data").expect("Data")
}
fn method(result: &Value) -> &str {
    get(data(result), "Method").and_then(Value::as_str).expect("Method")
}
fn args(result: &Value) -> &[Value] {
    get(data(result), "Args").and_then(Value::as_array).expect("Args")
}

/// StartInstance of the test-only script plugin; its instance id.
async fn start_script(conn: &mut Conn, msgid: u64, steps: serde_json::Value) -> u64 {
    let config = json!({"steps": steps, "__seq__": 1, "route_id": "r1"});
    let start = map(&[("Name", "ghasi-test-script".into()), ("Config", config.to_string().into())]);
    get(&conn.ok(msgid, "plugin.StartInstance", start).await, "Id").and_then(Value::as_u64).expect("Id")
}

async fn handle_event(conn: &mut Conn, msgid: u64, instance: u64, phase: &str) -> (Value, Value) {
    conn.call(msgid, "plugin.HandleEvent", map(&[("InstanceId", instance.into()), ("EventName", phase.into())])).await
}

fn step(event: u64, data: Option<Value>) -> Value {
    match data {
        Some(d) => map(&[("EventId", event.into()), ("Data", d)]),
        None => map(&[("EventId", event.into())]),
    }
}

// ── Envelopes and frames ───────────────────────────────────────────────────────────────

#[tokio::test]
async fn unknown_method_gets_an_error_reply_and_the_connection_stays_usable() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    assert_eq!(conn.error(7, "plugin.Frobnicate", Value::Nil).await, "method plugin.Frobnicate is not supported");
    // A parameter of the wrong type, or a missing field, is named in the answer.
    assert_eq!(
        conn.error(8, "plugin.CloseInstance", "seven".into()).await,
        "plugin.CloseInstance: the parameter must be an instance id"
    );
    assert_eq!(
        conn.error(9, "plugin.StepMultiMap", map(&[("Data", "v".into())])).await,
        "plugin.StepMultiMap: missing integer field EventId"
    );
    conn.ok(10, "plugin.GetStatus", Value::Nil).await;
    assert!(conn.hang_up().await.is_ok());
}

#[tokio::test]
async fn wrong_envelope_with_a_readable_msgid_gets_an_error_reply() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    // A response-typed message sent to the server.
    conn.send(&Value::Array(vec![1.into(), 42.into(), Value::Nil, Value::Nil])).await;
    let resp = conn.read_value().await.expect("error reply");
    assert_eq!(
        resp,
        Value::Array(vec![1.into(), 42.into(), "only RPC requests (type 0) are accepted".into(), Value::Nil])
    );
    // A 3-element request.
    conn.send(&Value::Array(vec![0.into(), 43.into(), "plugin.GetStatus".into()])).await;
    let resp = conn.read_value().await.expect("error reply");
    assert_eq!(
        resp,
        Value::Array(vec![1.into(), 43.into(), "RPC request must be a 4-element array".into(), Value::Nil])
    );
    conn.ok(44, "plugin.GetStatus", Value::Nil).await;
}

#[tokio::test]
async fn envelope_without_a_msgid_closes_only_that_connection() {
    let h = Harness::new();
    let mut bystander = h.connect().await;
    let mut conn = h.connect().await;
    conn.send(&Value::from("just a string")).await;
    let ended = conn.closed_by_server().await;
    assert!(
        matches!(
            ended,
            Err(ConnectionError::Protocol(ProtocolError { msgid: None, error: EnvelopeError::NotAnArray }))
        ),
        "{ended:?}"
    );
    bystander.ok(1, "plugin.GetStatus", Value::Nil).await;
    h.connect().await.ok(1, "plugin.GetStatus", Value::Nil).await;
}

#[tokio::test]
async fn malformed_msgpack_closes_only_that_connection() {
    let h = Harness::new();
    let mut bystander = h.connect().await;
    let mut conn = h.connect().await;
    conn.send_raw(&[0x94, 0x00, 0x01, 0xc1, 0xc1]).await; // 0xc1 is never valid
    let ended = conn.closed_by_server().await;
    assert!(matches!(ended, Err(ConnectionError::Frame(FrameError::InvalidMarker(0xc1)))), "{ended:?}");
    assert_eq!(ended.unwrap_err().kind(), "bad_frame");
    bystander.ok(1, "plugin.GetStatus", Value::Nil).await;
}

#[tokio::test]
async fn truncated_frame_then_disconnect_leaves_the_server_serving() {
    let h = Harness::new();
    let mut bystander = h.connect().await;
    let mut conn = h.connect().await;
    // The first 6 bytes of a GetStatus request, then the client goes away.
    conn.send_raw(&[0x94, 0x00, 0x01, 0xb0, b'p', b'l']).await;
    let ended = conn.hang_up().await;
    assert!(matches!(ended, Err(ConnectionError::Truncated(6))), "{ended:?}");
    assert_eq!(h.limits.buffer_budget.used(), 0, "the partial frame's bytes are released");
    bystander.ok(1, "plugin.GetStatus", Value::Nil).await;
}

#[tokio::test]
async fn oversized_frame_closes_the_connection_without_buffering_it() {
    let h = Harness::with_limits(65_536, 1 << 20);
    let mut conn = h.connect().await;
    // str32 header announcing 1 GiB: refused from the header alone.
    conn.send_raw(&[0x94, 0x00, 0x01, 0xdb, 0x40, 0x00, 0x00, 0x00]).await;
    let ended = conn.closed_by_server().await;
    assert!(matches!(ended, Err(ConnectionError::Frame(FrameError::TooLarge { max: 65_536 }))), "{ended:?}");
    h.connect().await.ok(1, "plugin.GetStatus", Value::Nil).await;
}

#[tokio::test]
async fn frame_split_across_writes_is_reassembled() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    let mut bytes = Vec::new();
    let req = Value::Array(vec![0.into(), 5.into(), "plugin.GetStatus".into(), Value::Array(vec![])]);
    rmpv::encode::write_value(&mut bytes, &req).unwrap();
    for b in &bytes {
        conn.send_raw(&[*b]).await;
        tokio::task::yield_now().await; // let the server read each byte on its own
    }
    let resp = conn.read_value().await.unwrap();
    assert_eq!((resp[1].as_u64(), resp[2].is_nil()), (Some(5), true), "{resp:?}");
}

#[tokio::test]
async fn a_peer_leaving_before_the_first_byte_is_not_an_error() {
    let h = Harness::new();
    let (client, mut server) = tokio::io::duplex(1024);
    drop(client);
    // Our serverPid write fails with a broken pipe: a probe, not a failure.
    assert!(connection::serve(&mut server, h.registry.clone(), &h.limits).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn incomplete_frames_share_one_budget_and_the_newest_offender_is_closed() {
    let h = Harness::with_limits(5_000, 10_000);
    let frame = big_request(1, 4_000);
    let settle = || tokio::time::sleep(Duration::from_millis(1));
    // Three connections each send 3,000 bytes of a 4,000-byte frame: 9,000 of the 10,000.
    let mut early = Vec::new();
    for i in 1..=3 {
        let mut conn = h.connect().await;
        conn.send_raw(&frame[..3_000]).await;
        settle().await;
        assert_eq!(h.limits.buffer_budget.used(), i * 3_000);
        early.push(conn);
    }
    // The fourth would go over the budget: it alone is closed.
    let mut late = h.connect().await;
    late.send_raw(&frame[..3_000]).await;
    let ended = late.closed_by_server().await;
    assert!(matches!(ended, Err(ConnectionError::Budget(BudgetExceeded { limit: 10_000 }))), "{ended:?}");
    assert_eq!(h.limits.buffer_budget.used(), 9_000);
    // The others finish their frames and get answers; the budget is released.
    for conn in &mut early {
        conn.send_raw(&frame[3_000..]).await;
        let resp = conn.read_value().await.expect("an answer to the completed frame");
        assert_eq!(resp[1], Value::from(1), "{resp:?}");
    }
    assert_eq!(h.limits.buffer_budget.used(), 0);
}

/// `[0, msgid, "plugin.GetStatus", [<str32 of len bytes>]]`: well formed, so answered.
fn big_request(msgid: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0x94, 0x00, msgid, 0xb0];
    out.extend_from_slice(b"plugin.GetStatus");
    out.extend_from_slice(&[0x91, 0xdb]);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend(std::iter::repeat_n(b'x', len));
    out
}

// ── Events ─────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn steps_of_one_event_travel_on_different_connections() {
    let h = Harness::new();
    let (mut a, mut b, mut c) = (h.connect().await, h.connect().await, h.connect().await);
    let steps = json!([{"read": "x-api-key"}, {"set_headers": {"X-Account-Id": "$read", "X-Api-Key": null}}]);
    let id = start_script(&mut a, 1, steps).await;

    let r = a.ok(2, "plugin.HandleEvent", map(&[("InstanceId", id.into()), ("EventName", "access".into())])).await;
    let eid = event_id(&r);
    assert_eq!((method(&r), args(&r)), ("kong.request.get_header", &[Value::from("x-api-key")][..]));
    assert_eq!(h.parked_events(), 1, "parked between RPCs, in no connection");

    let r = b.ok(3, "plugin.Step", step(eid, Some("key-123".into()))).await;
    assert_eq!(method(&r), "kong.service.request.set_headers");
    let headers = &args(&r)[0];
    assert_eq!(get(headers, "X-Account-Id").and_then(Value::as_str), Some("key-123"));
    assert_eq!(get(headers, "X-Api-Key"), Some(&Value::Array(vec![])), "an empty array removes a header");

    // Kong sends a nil PDK result as a map without Data.
    let r = c.ok(4, "plugin.Step", step(eid, None)).await;
    assert_eq!(data(&r).as_str(), Some("ret"));
    assert_eq!(a.error(5, "plugin.Step", step(eid, None)).await, format!("no running event {eid}"));
    assert_eq!(h.parked_events(), 0);
}

#[tokio::test]
async fn every_step_alias_and_absent_data_are_accepted() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    let calls: Vec<_> = (0..7).map(|i| json!({"call": "kong.log.debug", "args": [i]})).collect();
    let id = start_script(&mut conn, 1, json!(calls)).await;
    let mut r = handle_event(&mut conn, 2, id, "access").await.1;
    let aliases = [
        "plugin.Step",
        "plugin.StepMultiMap",
        "plugin.StepCredential",
        "plugin.StepConsumer",
        "plugin.StepRoute",
        "plugin.StepService",
        "plugin.StepMemoryStats",
    ];
    for (i, alias) in aliases.iter().enumerate() {
        assert_eq!((method(&r), args(&r)), ("kong.log.debug", &[Value::from(i)][..]));
        r = conn.ok(10 + i as u64, alias, step(event_id(&r), Some(Value::Map(vec![])))).await;
    }
    assert_eq!(data(&r).as_str(), Some("ret"));
}

#[tokio::test]
async fn exit_is_terminal_and_kong_never_answers_it() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    let steps = json!([{"exit": 403, "body": "no"}, {"call": "kong.log.err", "args": ["unreachable"]}]);
    let id = start_script(&mut conn, 1, steps).await;
    let (err, r) = handle_event(&mut conn, 2, id, "access").await;
    assert!(err.is_nil());
    assert_eq!(method(&r), "kong.response.exit");
    assert_eq!((args(&r)[0].as_u64(), args(&r)[1].as_str()), (Some(403), Some("no")));
    // The event is gone at once: nothing is parked waiting for an answer Kong never sends.
    let status = conn.ok(3, "plugin.GetStatus", Value::Nil).await;
    assert_eq!(get(&status, "ParkedEvents").and_then(Value::as_u64), Some(0));
    let eid = event_id(&r);
    assert_eq!(conn.error(4, "plugin.Step", step(eid, None)).await, format!("no running event {eid}"));
}

fn assert_fail_closed(r: &Value) {
    assert_eq!((method(r), args(r)[0].as_u64()), ("kong.response.exit", Some(500)));
    let body: serde_json::Value = serde_json::from_str(args(r)[1].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "internal_error");
    assert_eq!(get(&args(r)[2], "Content-Type").and_then(Value::as_str), Some("application/problem+json"));
}

#[tokio::test]
async fn a_failing_plugin_and_a_kong_side_pdk_error_answer_500() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    let id = start_script(&mut conn, 1, json!([{"panic": "boom"}])).await;
    assert_fail_closed(&handle_event(&mut conn, 2, id, "access").await.1);

    // Kong 2.8 reports a PDK function that raised with plugin.StepError.
    let id = start_script(&mut conn, 3, json!([{"read": "x"}, {"set_headers": {"A": "b"}}])).await;
    let r = handle_event(&mut conn, 4, id, "access").await.1;
    let r = conn.ok(5, "plugin.StepError", step(event_id(&r), Some("header too long".into()))).await;
    assert_fail_closed(&r);
    assert_eq!((h.parked_events(), h.registry.live_events()), (0, 0));
}

#[tokio::test]
async fn undeclared_phase_is_an_error_and_closed_instances_are_gone() {
    let h = Harness::new();
    let mut conn = h.connect().await;
    let config = json!({"auth_service_url": "http://127.0.0.1:1"}).to_string();
    let start = map(&[("Name", "ghasi-api-key-lookup".into()), ("Config", config.into())]);
    let key_id = get(&conn.ok(1, "plugin.StartInstance", start).await, "Id").and_then(Value::as_u64).unwrap();
    let (err, _) = handle_event(&mut conn, 2, key_id, "log").await;
    assert_eq!(err.as_str(), Some("plugin ghasi-api-key-lookup does not handle phase log"));

    let id = start_script(&mut conn, 3, json!([])).await;
    let (err, r) = handle_event(&mut conn, 4, id, "log").await;
    assert!(err.is_nil());
    assert_eq!(data(&r).as_str(), Some("ret"));

    let closed = conn.ok(5, "plugin.CloseInstance", id.into()).await;
    assert_eq!(get(&closed, "Id").and_then(Value::as_u64), Some(id));
    assert_eq!(
        handle_event(&mut conn, 6, id, "access").await.0.as_str(),
        Some(format!("no plugin instance {id}").as_str())
    );
    // Kong 2.8/3.0 send HandleEvent without an id after a failed StartInstance.
    let no_id = map(&[("EventName", "access".into())]);
    assert_eq!(
        conn.error(7, "plugin.HandleEvent", no_id).await,
        "plugin.HandleEvent: missing InstanceId (did StartInstance fail?)"
    );
}

#[tokio::test(start_paused = true)]
async fn events_abandoned_by_kong_are_reaped_after_the_event_timeout_and_not_before() {
    let h = Harness::new();
    let reaper = tokio::spawn(server::reap_forever(h.registry.clone()));
    let mut conn = h.connect().await;
    let id = start_script(&mut conn, 1, json!([{"read": "x"}])).await;
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(event_id(&handle_event(&mut conn, 10 + i, id, "access").await.1));
    }
    let counts = |s: Value| {
        let n = |k| get(&s, k).and_then(Value::as_u64).unwrap();
        (n("ParkedEvents"), n("ReapedEvents"), n("Events"))
    };
    assert_eq!(counts(conn.ok(20, "plugin.GetStatus", Value::Nil).await), (5, 0, 5));

    // A second short of Kong's timeout: a slow PDK call, not an abandoned event.
    tokio::time::sleep(EVENT_TIMEOUT - Duration::from_secs(1)).await;
    assert_eq!(counts(conn.ok(21, "plugin.GetStatus", Value::Nil).await), (5, 0, 5));

    // Past the timeout and one reaper period (at most 10 s): every one is ended.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(counts(conn.ok(22, "plugin.GetStatus", Value::Nil).await), (0, 5, 0));
    let eid = events[0];
    assert_eq!(conn.error(23, "plugin.Step", step(eid, Some("late".into()))).await, format!("no running event {eid}"));
    reaper.abort();
}

#[tokio::test(start_paused = true)]
async fn a_plugin_waiting_on_io_holds_its_own_connection_only() {
    let h = Harness::new();
    let mut waiting = h.connect().await;
    let id = start_script(&mut waiting, 1, json!([{"sleep_ms": 30_000}, {"read": "x-api-key"}])).await;
    let started = tokio::time::Instant::now();
    // The plugin sleeps (as it would await the auth-service) inside HandleEvent: the
    // connection serving it waits with it, and answers once the plugin makes its PDK call.
    let event = tokio::spawn(async move {
        let r = handle_event(&mut waiting, 2, id, "access").await.1;
        (r, tokio::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Meanwhile every other connection is served; the event is alive but not parked.
    let mut other = h.connect().await;
    let status = other.ok(1, "plugin.GetStatus", Value::Nil).await;
    assert_eq!(get(&status, "Events").and_then(Value::as_u64), Some(1));
    assert_eq!(get(&status, "ParkedEvents").and_then(Value::as_u64), Some(0));

    let (r, answered) = event.await.unwrap();
    assert_eq!(method(&r), "kong.request.get_header");
    let waited = answered - started;
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31), "{waited:?}");
    let r = other.ok(2, "plugin.Step", step(event_id(&r), None)).await;
    assert_eq!(data(&r).as_str(), Some("ret"));
}

#[tokio::test]
async fn a_connection_dropped_mid_event_does_not_lose_the_event() {
    let h = Harness::new();
    let mut keep = h.connect().await;
    let id = start_script(&mut keep, 1, json!([{"read": "x"}, {"set_headers": {"X-Account-Id": "$read"}}])).await;
    let mut doomed = h.connect().await;
    let eid = event_id(&handle_event(&mut doomed, 2, id, "access").await.1);
    // Kong closes this connection (pool eviction, worker reload): the event lives on.
    assert!(doomed.hang_up().await.is_ok());
    let r = keep.ok(3, "plugin.Step", step(eid, Some("acct".into()))).await;
    assert_eq!(get(&args(&r)[0], "X-Account-Id").and_then(Value::as_str), Some("acct"));
    let r = keep.ok(4, "plugin.Step", step(eid, None)).await;
    assert_eq!(data(&r).as_str(), Some("ret"));
}
