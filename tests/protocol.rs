//! Bad input breaks nothing, through the real binary: a malformed or oversized frame closes
//! its connection only, unknown instances and bad configs get Kong's error texts, secrets
//! are never echoed. The finer protocol cases (each envelope error, split and truncated
//! frames, the reason a connection was closed) run in process: `tests/in_process.rs`.

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
