//! The operations listener: Prometheus metrics move as the traffic dictates; /health and
//! /ready tell an SRE (or a probe) whether the server can decide.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, sample};
use common::raw::{map, start_script, Conn};
use common::{start_with_metrics, Server};
use rmpv::Value;
use serde_json::json;

/// Starts the server with the metrics listener on a free loopback port; returns the address.

#[test]
fn core_metrics_count_connections_rpc_errors_bad_frames_and_reaped_events() {
    let (server, addr) = start_with_metrics(&["--event-timeout-secs", "1"]);
    let mut conn = Conn::open(server.socket());
    let mut conn2 = Conn::open(server.socket());
    conn.call(1, "plugin.HandleEvent", map(&[("InstanceId", 5.into()), ("EventName", "access".into())]));
    conn.call(2, "plugin.Nope", Value::Nil);
    {
        let mut bad = Conn::open(server.socket());
        bad.send_raw(&[0xc1]);
        assert!(bad.is_closed());
    }
    let id = start_script(&mut conn2, 1, json!([{"read": "x"}]));
    conn2.ok(2, "plugin.HandleEvent", map(&[("InstanceId", id.into()), ("EventName", "access".into())]));

    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "ghasi_rpc_errors_total", &[r#"kind="no_instance""#]), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "ghasi_rpc_errors_total", &[r#"kind="bad_request""#]), Some(1.0));
    assert_eq!(sample(&metrics, "ghasi_connection_errors_total", &[r#"kind="bad_frame""#]), Some(1.0));
    assert_eq!(sample(&metrics, "ghasi_connections_open", &[]), Some(2.0));
    assert_eq!(sample(&metrics, "ghasi_events_in_flight", &[]), Some(1.0));

    // The parked event is abandoned (no Step comes) and reaped.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = get(&addr, "/metrics");
        if sample(&metrics, "ghasi_events_reaped_total", &[]) == Some(1.0) {
            assert_eq!(sample(&metrics, "ghasi_events_in_flight", &[]), Some(0.0));
            break;
        }
        assert!(Instant::now() < deadline, "never reaped: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ready_and_health_report_the_socket() {
    let (_server, addr) = start_with_metrics(&[]);
    let (status, body) = get(&addr, "/ready");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&addr, "/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["listening"], true);
    assert_eq!(health["ready"], true);
}

#[test]
fn metrics_listener_is_off_unless_configured() {
    let server = Server::start();
    assert!(!server.logs().contains("serving /metrics"));
}
