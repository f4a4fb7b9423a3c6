//! The event engine through the real socket, RPC by RPC: PDK calls leave as HandleEvent/Step
//! results, Steps of one event may arrive on any connection (and shard), failures fail
//! closed and are logged, abandoned events are reaped, ids survive no restart. Step aliases,
//! exit, phases, closed instances and reaping on a paused clock run in process:
//! `tests/in_process.rs`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::raw::{get, map, start_script, Conn};
use common::Server;
use rmpv::Value;
use serde_json::json;

fn handle_event(conn: &mut Conn, msgid: u64, instance: u64, phase: &str) -> (Value, Value) {
    conn.call(msgid, "plugin.HandleEvent", map(&[("InstanceId", instance.into()), ("EventName", phase.into())]))
}

fn data(result: &Value) -> &Value {
    get(result, "Data").expect("Data")
}
fn event_id(result: &Value) -> u64 {
    get(result, "EventId").and_then(Value::as_u64).expect("EventId")
}
fn method(result: &Value) -> &str {
    get(data(result), "Method").and_then(Value::as_str).expect("Method")
}
fn args(result: &Value) -> &[Value] {
    get(data(result), "Args").and_then(Value::as_array).expect("Args")
}

#[test]
fn steps_of_one_event_travel_on_different_connections() {
    let server = Server::start();
    let mut a = Conn::open(server.socket());
    let mut b = Conn::open(server.socket());
    let mut c = Conn::open(server.socket());
    let id = start_script(
        &mut a,
        1,
        json!([{"read": "x-api-key"}, {"set_headers": {"X-Account-Id": "$read", "X-Api-Key": null}}]),
    );

    let r = a.ok(2, "plugin.HandleEvent", map(&[("InstanceId", id.into()), ("EventName", "access".into())]));
    let eid = event_id(&r);
    assert_eq!(method(&r), "kong.request.get_header");
    assert_eq!(args(&r), [Value::from("x-api-key")]);

    let r = b.ok(2, "plugin.Step", map(&[("EventId", eid.into()), ("Data", "key-123".into())]));
    assert_eq!(method(&r), "kong.service.request.set_headers");
    let headers = &args(&r)[0];
    assert_eq!(get(headers, "X-Account-Id").and_then(Value::as_str), Some("key-123"));
    assert_eq!(get(headers, "X-Api-Key"), Some(&Value::Array(vec![])), "an empty array removes a header");

    // Kong sends a nil PDK result as a map without Data.
    let r = c.ok(3, "plugin.Step", map(&[("EventId", eid.into())]));
    assert_eq!(data(&r).as_str(), Some("ret"));
    let (err, _) = a.call(4, "plugin.Step", map(&[("EventId", eid.into())]));
    assert_eq!(err.as_str(), Some(format!("no running event {eid}").as_str()));
}

fn assert_fail_closed(r: &Value) {
    assert_eq!(method(r), "kong.response.exit");
    assert_eq!(args(r)[0].as_u64(), Some(500));
    let body: serde_json::Value = serde_json::from_str(args(r)[1].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "internal_error");
    assert_eq!(get(&args(r)[2], "Content-Type").and_then(Value::as_str), Some("application/problem+json"));
}

#[test]
fn a_panicking_plugin_answers_500_instead_of_leaving_kong_waiting() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let id = start_script(&mut conn, 1, json!([{"panic": "boom"}]));
    let (err, r) = handle_event(&mut conn, 2, id, "access");
    assert!(err.is_nil());
    assert_fail_closed(&r);

    let id = start_script(&mut conn, 3, json!([{"read": "x"}, {"fail": "bad state"}]));
    let r = handle_event(&mut conn, 4, id, "access").1;
    let r = conn.ok(5, "plugin.Step", map(&[("EventId", event_id(&r).into()), ("Data", "v".into())]));
    assert_fail_closed(&r);
    assert!(server.logs().contains("bad state"), "the failure is logged");
    // The server is fine afterwards.
    conn.ok(6, "plugin.GetStatus", Value::Nil);
}

#[test]
fn step_error_from_kong_2_8_reaches_the_plugin() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let id = start_script(&mut conn, 1, json!([{"read": "x"}, {"set_headers": {"A": "b"}}]));
    let r = handle_event(&mut conn, 2, id, "access").1;
    let r =
        conn.ok(3, "plugin.StepError", map(&[("EventId", event_id(&r).into()), ("Data", "header too long".into())]));
    // The script does not handle PDK errors: it fails, and the server fails closed.
    assert_fail_closed(&r);
    assert!(server.logs().contains("header too long"));
}

#[test]
fn instance_ids_are_not_reused_across_restarts() {
    let first = {
        let server = Server::start();
        let mut conn = Conn::open(server.socket());
        (0..3).map(|i| start_script(&mut conn, i, json!([]))).collect::<Vec<_>>()
    };
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let second: Vec<u64> = (0..3).map(|i| start_script(&mut conn, i, json!([]))).collect();
    let overlap: HashSet<_> = first.iter().filter(|id| second.contains(id)).collect();
    assert!(overlap.is_empty(), "restart reused ids {overlap:?} (Kong issue #8370)");
    for id in &second {
        assert!(*id < (1u64 << 53), "ids must fit a Lua number exactly");
    }
    // A stale id from the previous process is unknown, so Kong recreates the instance.
    let (err, _) = handle_event(&mut conn, 9, first[0], "access");
    assert!(err.as_str().unwrap().contains("no plugin instance"));
}

#[test]
fn concurrent_events_interleaved_over_shared_connections_do_not_mix() {
    let server = Server::start();
    let mut conns: Vec<Conn> = (0..4).map(|_| Conn::open(server.socket())).collect();
    let id = start_script(&mut conns[0], 1, json!([{"read": "x-api-key"}, {"set_headers": {"X-Account-Id": "$read"}}]));
    let mut msgid = 10;
    // Start 40 events, all parked on their first PDK call.
    let mut events = Vec::new();
    for i in 0..40 {
        msgid += 1;
        let r = handle_event(&mut conns[i % 4], msgid, id, "access").1;
        events.push(event_id(&r));
    }
    // Answer them in reverse order, each on a different connection than it started on.
    for (i, eid) in events.iter().enumerate().rev() {
        msgid += 1;
        let value = format!("acct-{i}");
        let r = conns[(i + 1) % 4].ok(
            msgid,
            "plugin.Step",
            map(&[("EventId", (*eid).into()), ("Data", value.as_str().into())]),
        );
        assert_eq!(get(&args(&r)[0], "X-Account-Id").and_then(Value::as_str), Some(value.as_str()));
    }
    for (i, eid) in events.iter().enumerate() {
        msgid += 1;
        let r = conns[(i + 2) % 4].ok(msgid, "plugin.Step", map(&[("EventId", (*eid).into())]));
        assert_eq!(data(&r).as_str(), Some("ret"));
    }
}

#[test]
fn events_abandoned_by_kong_are_reaped() {
    let server = Server::start_with(common::Options {
        args: vec!["--event-timeout-secs".into(), "1".into()],
        ..Default::default()
    });
    let mut conn = Conn::open(server.socket());
    let id = start_script(&mut conn, 1, json!([{"read": "x"}]));
    for i in 0..5 {
        handle_event(&mut conn, 10 + i, id, "access");
    }
    let parked = |conn: &mut Conn, msgid| {
        let s = conn.ok(msgid, "plugin.GetStatus", Value::Nil);
        (
            get(&s, "ParkedEvents").and_then(Value::as_u64).unwrap(),
            get(&s, "ReapedEvents").and_then(Value::as_u64).unwrap(),
            get(&s, "Events").and_then(Value::as_u64).unwrap(),
        )
    };
    assert_eq!(parked(&mut conn, 20), (5, 0, 5));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut msgid = 21;
    loop {
        let (p, reaped, live) = parked(&mut conn, msgid);
        msgid += 1;
        if p == 0 && live == 0 {
            assert_eq!(reaped, 5);
            break;
        }
        assert!(Instant::now() < deadline, "events were never reaped: parked {p}, live {live}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_dropped_mid_event_does_not_lose_the_event() {
    let server = Server::start();
    let mut keep = Conn::open(server.socket());
    let id = start_script(&mut keep, 1, json!([{"read": "x"}, {"set_headers": {"X-Account-Id": "$read"}}]));
    let eid = {
        let mut doomed = Conn::open(server.socket());
        let r = handle_event(&mut doomed, 2, id, "access").1;
        event_id(&r)
        // Kong closes this connection (pool eviction, worker reload): the event lives on.
    };
    let r = keep.ok(3, "plugin.Step", map(&[("EventId", eid.into()), ("Data", "acct".into())]));
    assert_eq!(get(&args(&r)[0], "X-Account-Id").and_then(Value::as_str), Some("acct"));
    let r = keep.ok(4, "plugin.Step", map(&[("EventId", eid.into())]));
    assert_eq!(data(&r).as_str(), Some("ret"));
}

#[test]
fn tooling_methods_describe_plugins_and_instances() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let info = conn.ok(1, "plugin.GetPluginInfo", "ghasi-jwt".into());
    assert_eq!(get(&info, "Name").and_then(Value::as_str), Some("ghasi-jwt"));
    assert_eq!(get(&info, "Priority").and_then(Value::as_u64), Some(1450));
    let id = start_script(&mut conn, 2, json!([]));
    let status = conn.ok(3, "plugin.InstanceStatus", id.into());
    assert_eq!(get(&status, "Id").and_then(Value::as_u64), Some(id));
    assert_eq!(get(&status, "Name").and_then(Value::as_str), Some("ghasi-test-script"));
    let overall = conn.ok(4, "plugin.GetStatus", Value::Nil);
    let plugins = get(&overall, "Plugins").unwrap();
    assert_eq!(get(get(plugins, "ghasi-test-script").unwrap(), "Instances").and_then(Value::as_u64), Some(1));
    let (err, _) = conn.call(5, "plugin.GetPluginInfo", "nope".into());
    assert_eq!(err.as_str(), Some("no plugin named nope"));
}
