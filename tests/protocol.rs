//! Bad input breaks nothing: each malformed or unexpected message gets an error reply or a
//! closed connection, and the server keeps serving every other connection.

mod common;

use common::raw::{get, map, Conn};
use common::Server;
use rmpv::Value;

/// A fresh connection still gets correct answers.
fn assert_still_serving(server: &Server) {
    let mut other = Conn::open(server.socket());
    let status = other.ok(1, "plugin.GetStatus", Value::Nil);
    assert!(get(&status, "Pid").is_some(), "{status:?}");
}

#[test]
fn every_connection_starts_with_the_server_pid() {
    let server = Server::start();
    let conn = Conn::open(server.socket());
    assert_eq!(conn.server_pid, Some(u64::from(server.pid())));
}

#[test]
fn unknown_method_gets_an_error_reply_and_the_connection_stays_usable() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let (err, res) = conn.call(7, "plugin.Frobnicate", Value::Nil);
    assert_eq!(err.as_str(), Some("method plugin.Frobnicate is not supported"));
    assert!(res.is_nil());
    conn.ok(8, "plugin.GetStatus", Value::Nil);
}

#[test]
fn wrong_envelope_with_a_readable_msgid_gets_an_error_reply() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    // A response-typed message sent to the server.
    conn.send(&Value::Array(vec![1.into(), 42.into(), Value::Nil, Value::Nil]));
    let resp = conn.read_value().expect("error reply");
    let arr = resp.as_array().unwrap();
    assert_eq!((arr[0].as_u64(), arr[1].as_u64()), (Some(1), Some(42)));
    assert!(arr[2].as_str().unwrap().contains("type 0"), "{resp:?}");
    // A 3-element request.
    conn.send(&Value::Array(vec![0.into(), 43.into(), "plugin.GetStatus".into()]));
    let resp = conn.read_value().expect("error reply");
    assert!(resp[2].as_str().unwrap().contains("4-element"), "{resp:?}");
    conn.ok(44, "plugin.GetStatus", Value::Nil);
}

#[test]
fn envelope_without_a_msgid_closes_only_that_connection() {
    let server = Server::start();
    let mut bystander = Conn::open(server.socket());
    let mut conn = Conn::open(server.socket());
    conn.send(&Value::from("just a string"));
    assert!(conn.is_closed());
    bystander.ok(1, "plugin.GetStatus", Value::Nil);
    assert_still_serving(&server);
}

#[test]
fn malformed_msgpack_closes_only_that_connection() {
    let server = Server::start();
    let mut bystander = Conn::open(server.socket());
    let mut conn = Conn::open(server.socket());
    conn.send_raw(&[0x94, 0x00, 0x01, 0xc1, 0xc1]); // 0xc1 is never valid
    assert!(conn.is_closed());
    bystander.ok(1, "plugin.GetStatus", Value::Nil);
    assert_still_serving(&server);
}

#[test]
fn truncated_frame_then_disconnect_leaves_the_server_serving() {
    let server = Server::start();
    let mut bystander = Conn::open(server.socket());
    {
        let mut conn = Conn::open(server.socket());
        // The first 6 bytes of a GetStatus request, then the client goes away.
        conn.send_raw(&[0x94, 0x00, 0x01, 0xb0, b'p', b'l']);
    }
    bystander.ok(1, "plugin.GetStatus", Value::Nil);
    assert_still_serving(&server);
}

#[test]
fn oversized_frame_closes_the_connection_without_buffering_it() {
    let server = Server::start_with(common::Options {
        args: vec!["--max-frame-bytes".into(), "65536".into()],
        ..Default::default()
    });
    let mut conn = Conn::open(server.socket());
    // str32 header announcing 1 GiB: refused from the header alone.
    conn.send_raw(&[0x94, 0x00, 0x01, 0xdb, 0x40, 0x00, 0x00, 0x00]);
    assert!(conn.is_closed());
    assert_still_serving(&server);
}

#[test]
fn frame_split_across_writes_is_reassembled() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let mut bytes = Vec::new();
    let req = Value::Array(vec![0.into(), 5.into(), "plugin.GetStatus".into(), Value::Array(vec![])]);
    rmpv::encode::write_value(&mut bytes, &req).unwrap();
    for b in &bytes {
        conn.send_raw(&[*b]);
    }
    let resp = conn.read_value().unwrap();
    assert_eq!(resp[1].as_u64(), Some(5));
    assert!(resp[2].is_nil());
}

#[test]
fn unknown_instance_errors_contain_no_plugin_instance() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let event = map(&[("InstanceId", 123456789.into()), ("EventName", "access".into())]);
    let (err, _) = conn.call(1, "plugin.HandleEvent", event);
    assert_eq!(err.as_str(), Some("no plugin instance 123456789"));
    let (err, _) = conn.call(2, "plugin.CloseInstance", 123456789.into());
    assert_eq!(err.as_str(), Some("no plugin instance 123456789"));
    let (err, _) = conn.call(3, "plugin.InstanceStatus", 123456789.into());
    assert_eq!(err.as_str(), Some("no plugin instance 123456789"));
    let (err, _) = conn.call(4, "plugin.Step", map(&[("EventId", 99.into())]));
    assert_eq!(err.as_str(), Some("no running event 99"));
}

#[test]
fn bad_config_is_refused_with_the_field_named_and_kong_keys_are_tolerated() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let config = serde_json::json!({"jwks_url": "not a url", "issuer": "https://api.ghasi.io", "leeway": "soon",
        "__seq__": 3, "__key__": "plugins:ghasi-jwt:r1::::ws", "__plugin_id": "p1", "route_id": "r1", "__ws_id": "w"});
    let start = map(&[("Name", "ghasi-jwt".into()), ("Config", config.to_string().into())]);
    let (err, _) = conn.call(1, "plugin.StartInstance", start);
    let err = err.as_str().expect("error string");
    assert!(err.starts_with("ghasi-jwt: invalid config:"), "{err}");
    assert!(err.contains("field 'jwks_url'") && err.contains("field 'leeway'"), "{err}");
    assert!(!err.contains("__seq__") && !err.contains("route_id"), "Kong's keys are not errors: {err}");

    // lua-cjson escapes '/' as '\/' and writes JSON nulls for unset fields.
    let good = r#"{"jwks_url":"http:\/\/127.0.0.1:1\/jwks","issuer":"https:\/\/api.ghasi.io","__seq__":3,"__plugin_id":"p1","route_id":"r1","__ws_id":"w","consumer_id":null,"audiences":{}}"#;
    let start = map(&[("Name", "ghasi-jwt".into()), ("Config", good.into())]);
    let res = conn.ok(2, "plugin.StartInstance", start);
    assert!(get(&res, "Id").and_then(Value::as_u64).is_some());
    assert_eq!(get(&res, "Name").and_then(Value::as_str), Some("ghasi-jwt"));

    let (err, _) = conn.call(3, "plugin.StartInstance", map(&[("Name", "nope".into()), ("Config", "{}".into())]));
    assert_eq!(err.as_str(), Some("no plugin named nope"));
}

#[test]
fn service_token_is_not_echoed_in_instance_status() {
    let server = Server::start();
    let mut conn = Conn::open(server.socket());
    let config = serde_json::json!({"auth_service_url": "http://127.0.0.1:1", "service_token": "s3cr3t-token-value"});
    let res = conn.ok(
        1,
        "plugin.StartInstance",
        map(&[("Name", "ghasi-api-key-lookup".into()), ("Config", config.to_string().into())]),
    );
    let id = get(&res, "Id").unwrap().clone();
    let status = conn.ok(2, "plugin.InstanceStatus", id);
    let shown = format!("{res:?}{status:?}");
    assert!(!shown.contains("s3cr3t-token-value"), "{shown}");
    assert!(!server.logs().contains("s3cr3t-token-value"));
}
