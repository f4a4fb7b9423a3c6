//! Process lifecycle: SIGTERM drains in-flight events, the server follows its parent's
//! death, a stale socket file is replaced.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::{get, map, start_script, Conn};
use common::Server;
use rmpv::Value;
use serde_json::json;

#[test]
fn sigterm_drains_in_flight_events_then_exits() {
    let mut server = Server::start();
    let mut conn = Conn::open(server.socket());
    let id = start_script(&mut conn, 1, json!([{"read": "x"}, {"sleep_ms": 200}, {"set_headers": {"A": "$read"}}]));
    let r = conn.ok(2, "plugin.HandleEvent", map(&[("InstanceId", id.into()), ("EventName", "access".into())]));
    let eid = get(&r, "EventId").unwrap().clone();

    server.signal(libc::SIGTERM);
    // No new connections once draining (the socket file is gone).
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.socket().exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!server.socket().exists(), "socket file removed on shutdown");
    assert!(server.is_running(), "must not exit while an event is in flight");

    // The in-flight event still completes on the open connection.
    let r = conn.ok(3, "plugin.Step", map(&[("EventId", eid.clone()), ("Data", "v".into())]));
    assert_eq!(
        get(get(&r, "Data").unwrap(), "Method").and_then(Value::as_str),
        Some("kong.service.request.set_headers")
    );
    let r = conn.ok(4, "plugin.Step", map(&[("EventId", eid)]));
    assert_eq!(get(&r, "Data").and_then(Value::as_str), Some("ret"));

    let status = server.wait_exit(Duration::from_secs(10)).expect("server exits once drained");
    assert!(status.success(), "{status:?}");
    assert!(server.logs().contains("draining"));
}

#[test]
fn sigterm_with_nothing_in_flight_exits_promptly() {
    let mut server = Server::start();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success());
}

#[test]
fn server_exits_when_its_parent_dies() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.socket");
    // A parent shell that starts the server, reports its pid, and dies a moment later.
    let script = format!(
        "'{}' --socket '{}' 2>/dev/null & echo $!; sleep 1",
        env!("CARGO_BIN_EXE_ghasi-plugin-server"),
        socket.display()
    );
    let mut parent = Command::new("bash").arg("-c").arg(script).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid: i32 = line.trim().parse().expect("server pid");
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;

    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "server never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = !alive(pid);
    if !gone {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(gone, "server outlived its parent");
}

#[test]
fn stale_socket_file_is_replaced_but_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ghasi.socket");
    // A leftover socket from a crashed process.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"))
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "server did not replace the stale socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server")).arg("--socket").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}
