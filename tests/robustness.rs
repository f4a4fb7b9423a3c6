//! Robust by default, through the real binary: the socket is owned (a second server does
//! not steal it, `/ready` notices when the path is no longer ours), a missing socket
//! directory is an error, incomplete frames share one global budget, mistakes in settings
//! stop the start, and a connect-then-close probe is not worth a warning.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::http::{get, sample};
use common::raw::Conn;
use common::{Options, Server};
use rmpv::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ghasi-plugin-server");

/// Starts the server with extra args and the metrics listener on a free port.
fn start_with_metrics(extra: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    start_listening_on("127.0.0.1:0", extra, env)
}

fn start_listening_on(listen: &str, extra: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let mut args = vec!["--metrics-listen".to_owned(), listen.to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let server = Server::start_with(Options { args, env });
    let addr = server.metrics_addr();
    (server, addr)
}

/// Runs the binary to completion (it is expected to refuse to start), bounded in time.
fn run_to_exit(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("GHASI_METRICS_LISTEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running with {args:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_server_refuses_a_live_socket_and_the_first_keeps_serving() {
    let (mut first, addr) = start_with_metrics(&[], &[]);
    let socket = first.socket().to_str().unwrap().to_owned();
    let out = run_to_exit(&["--socket", &socket]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("another server is listening on") && stderr.contains(&socket), "{stderr}");

    // The first one still owns its socket: Kong reaches it, and it is ready.
    assert!(first.is_running());
    let conn = Conn::open(first.socket());
    assert_eq!(conn.server_pid, Some(u64::from(first.pid())));
    let (status, body) = get(&addr, "/ready");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn ready_turns_false_when_the_socket_path_is_no_longer_ours() {
    let (server, addr) = start_with_metrics(&[], &[]);
    assert_eq!(get(&addr, "/ready").0, 200);

    // Someone removes the file: the server still listens, but Kong can no longer reach it.
    std::fs::remove_file(server.socket()).unwrap();
    let (status, body) = get(&addr, "/ready");
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((report["ready"].as_bool(), report["socket_owned"].as_bool()), (Some(false), Some(false)));

    // Another process binds the path (a different inode): still not ours.
    let _other = UnixListener::bind(server.socket()).unwrap();
    assert_eq!(get(&addr, "/ready").0, 503);
}

#[test]
fn a_missing_socket_directory_is_an_error_unless_creation_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let socket = missing.join("ghasi.socket");
    let out = run_to_exit(&["--socket", socket.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("the socket directory {} does not exist", missing.display())), "{stderr}");
    assert!(!missing.exists(), "the directory must not be created");

    // The explicit flag (or GHASI_CREATE_SOCKET_DIR) creates it.
    let options = Options { args: vec![], env: vec![("GHASI_CREATE_SOCKET_DIR".into(), "true".into())] };
    let server = Server::start_with_socket(options, &socket);
    assert!(UnixStream::connect(server.socket()).is_ok());
}

#[test]
fn mistakes_in_settings_stop_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.socket");
    let socket = socket.to_str().unwrap();
    for (args, needle) in [
        (vec!["--log", "debgu"], "--log"),
        (vec!["--warm-jwks", "not a url"], "--warm-jwks"),
        (vec!["--metrics-listen", "localhost"], "--metrics-listen"),
        (vec!["--max-frame-bytes", "2000", "--buffer-budget-bytes", "1000"], "--buffer-budget-bytes"),
    ] {
        let mut all = vec!["--socket", socket];
        all.extend(&args);
        let out = run_to_exit(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A host name is a fine listen address.
    let (_server, addr) = start_listening_on("localhost:0", &[], &[]);
    assert_eq!(get(&addr, "/health").0, 200);
}

#[test]
fn a_connect_then_close_probe_logs_no_warning() {
    let options = Options { args: vec![], env: vec![("GHASI_LOG".into(), "info".into())] };
    let server = Server::start_with(options);
    for _ in 0..50 {
        drop(UnixStream::connect(server.socket()).unwrap());
    }
    // A probe that reads the serverPid notification, then leaves.
    for _ in 0..20 {
        let mut s = UnixStream::connect(server.socket()).unwrap();
        let mut byte = [0u8; 1];
        let _ = s.read(&mut byte);
    }
    // A real RPC afterwards: every probe's task has run by then (one task per connection,
    // accepted in order), give them a moment to log.
    let mut conn = Conn::open(server.socket());
    conn.call(1, "plugin.GetStatus", Value::Nil);
    std::thread::sleep(Duration::from_millis(300));
    let logs = server.logs();
    assert!(!logs.contains("WARN"), "{logs}");
}

/// `[0, msgid, "plugin.GetStatus", [<str32 of len bytes>]]` (the envelope is well formed,
/// so the server answers with an error and keeps the connection).
fn big_request(msgid: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0x94, 0x00, msgid, 0xb0];
    out.extend_from_slice(b"plugin.GetStatus");
    out.push(0x91);
    out.push(0xdb);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend(std::iter::repeat_n(b'x', len));
    out
}

#[test]
fn incomplete_frames_share_one_budget_and_the_newest_offender_is_closed() {
    const PART: usize = 300_000;
    let (server, addr) = start_with_metrics(&["--max-frame-bytes", "500000", "--buffer-budget-bytes", "1000000"], &[]);
    let buffered = || sample(&get(&addr, "/metrics").1, "ghasi_incomplete_frame_bytes", &[]).unwrap_or(0.0) as usize;
    let frame = big_request(1, 400_000);

    // Three connections each trickle 300 kB of a 400 kB frame: 900 kB of the 1 MB budget.
    let mut early: Vec<Conn> = Vec::new();
    for i in 1..=3 {
        let mut conn = Conn::open(server.socket());
        for piece in frame[..PART].chunks(4096) {
            conn.send_raw(piece);
        }
        poll("the partial frame to be buffered", || (buffered() >= i * PART).then_some(()));
        early.push(conn);
    }

    // The fourth would go over the budget: it is closed, and counted.
    let mut late = UnixStream::connect(server.socket()).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for piece in frame[..PART].chunks(4096) {
        if late.write_all(piece).is_err() {
            break; // already closed by the server
        }
    }
    let mut rest = Vec::new();
    let closed = match late.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the over-budget connection must be closed");
    let metrics = poll("the budget closure to be counted", || {
        let m = get(&addr, "/metrics").1;
        sample(&m, "ghasi_connection_errors_total", &[r#"kind="buffer_budget""#]).map(|_| m)
    });
    assert_eq!(sample(&metrics, "ghasi_connection_errors_total", &[r#"kind="buffer_budget""#]), Some(1.0));
    assert!(buffered() <= 1_000_000);

    // A normal connection works, and the earlier ones finish their frames and get answers.
    let mut normal = Conn::open(server.socket());
    normal.ok(7, "plugin.GetStatus", Value::Nil);
    for conn in &mut early {
        conn.send_raw(&frame[PART..]);
        let resp = conn.read_value().expect("an answer to the completed frame");
        assert_eq!(resp.as_array().map(|a| a[1].clone()), Some(Value::from(1)), "{resp:?}");
    }
    poll("the budget to be released", || (buffered() == 0).then_some(()));
}
