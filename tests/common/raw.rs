//! A deliberately small synchronous MessagePack-RPC client for protocol tests that need to
//! send exact bytes (malformed frames, odd envelopes) or pin RPCs to specific connections.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rmpv::Value;

/// The first whole value in `buf`, removed from it; `None` while it is incomplete. Shared with
/// the in-process tier (tests/in_process.rs), which reads the same way from a duplex pipe.
pub fn take_value(buf: &mut Vec<u8>) -> Option<Value> {
    let mut slice = &buf[..];
    let v = rmpv::decode::read_value(&mut slice).ok()?;
    let used = buf.len() - slice.len();
    buf.drain(..used);
    Some(v)
}

pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    pub server_pid: Option<u64>,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let stream = UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut conn = Conn { stream, buf: Vec::new(), server_pid: None };
        // The server announces its pid first (docs/protocol.md#serverpid).
        let first = conn.read_value().expect("serverPid notification");
        let arr = first.as_array().expect("notification array").clone();
        assert_eq!(arr[0], Value::from(2), "first message must be a notification: {first:?}");
        assert_eq!(arr[1].as_str(), Some("serverPid"));
        conn.server_pid = arr[2].as_u64();
        conn
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, value: &Value) {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        self.send_raw(&out);
    }

    /// Reads one value; `None` on EOF (the server closed the connection).
    pub fn read_value(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = take_value(&mut self.buf) {
                return Some(v);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends `[0, msgid, method, [param]]` and returns `(error, result)`.
    pub fn call(&mut self, msgid: u64, method: &str, param: Value) -> (Value, Value) {
        self.send(&Value::Array(vec![0.into(), msgid.into(), method.into(), Value::Array(vec![param])]));
        let resp = self.read_value().expect("response");
        let arr = resp.as_array().expect("response array");
        assert_eq!(arr.len(), 4, "{resp:?}");
        assert_eq!(arr[0], Value::from(1));
        assert_eq!(arr[1], Value::from(msgid), "msgid must be echoed");
        (arr[2].clone(), arr[3].clone())
    }

    /// Like [`call`] but panics on an RPC error.
    pub fn ok(&mut self, msgid: u64, method: &str, param: Value) -> Value {
        let (err, res) = self.call(msgid, method, param);
        assert!(err.is_nil(), "{method} failed: {err:?}");
        res
    }

    /// True if the server closed this connection.
    pub fn is_closed(&mut self) -> bool {
        self.read_value().is_none()
    }
}

pub fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(entries.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
}

pub fn get<'a>(m: &'a Value, key: &str) -> Option<&'a Value> {
    m.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

/// StartInstance of the test-only script plugin with the given steps (JSON).
pub fn start_script(conn: &mut Conn, msgid: u64, steps: serde_json::Value) -> u64 {
    let config =
        serde_json::json!({"steps": steps, "__seq__": 1, "__key__": "plugins:ghasi-test-script::::", "route_id": "r1"});
    let res = conn.ok(
        msgid,
        "plugin.StartInstance",
        map(&[("Name", "ghasi-test-script".into()), ("Config", config.to_string().into())]),
    );
    get(&res, "Id").and_then(Value::as_u64).expect("instance Id")
}
