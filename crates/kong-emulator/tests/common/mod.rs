//! A scripted plugin server for testing the emulator's Kong side in isolation.
//!
//! It accepts connections on a temporary Unix socket, decodes each request, records it
//! (with the connection it came on) and answers whatever the test's handler returns.

#![allow(dead_code)]

use kong_emulator::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    pub msgid: u64,
    pub method: String,
    pub param: Value,
    pub bytes: Vec<u8>,
}

/// What the fake server answers.
pub enum Reply {
    Ok(Value),
    Err(String),
    /// Raw bytes instead of a response.
    Raw(Vec<u8>),
    /// Answer, then close the connection.
    OkThenClose(Value),
}

pub type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct FakeServer {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    /// Starts serving; `pid` (if any) is sent as a `serverPid` notification on accept.
    pub async fn start(pid: Option<Arc<Mutex<u32>>>, handler: Arc<Handler>) -> FakeServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).expect("bind fake server socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                n += 1;
                let conn = n;
                let seen = seen2.clone();
                let handler = handler.clone();
                let pid = pid.clone();
                tokio::spawn(async move {
                    if let Some(pid) = pid {
                        let p = *pid.lock().unwrap();
                        let mut out = Vec::new();
                        rmpv::encode::write_value(
                            &mut out,
                            &Value::Array(vec![2.into(), "serverPid".into(), p.into()]),
                        )
                        .unwrap();
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let mut cursor = buf.as_slice();
                        match rmpv::decode::read_value(&mut cursor) {
                            Ok(v) => {
                                let used = buf.len() - cursor.len();
                                let bytes: Vec<u8> = buf.drain(..used).collect();
                                let items = v.as_array().cloned().unwrap_or_default();
                                let msgid = items.get(1).and_then(|m| m.as_u64()).unwrap_or(0);
                                let seen_req = Seen {
                                    conn,
                                    msgid,
                                    method: items.get(2).and_then(|m| m.as_str()).unwrap_or("").to_string(),
                                    param: items
                                        .get(3)
                                        .and_then(|p| p.as_array())
                                        .and_then(|p| p.first().cloned())
                                        .unwrap_or(Value::Nil),
                                    bytes,
                                };
                                seen.lock().unwrap().push(seen_req.clone());
                                let (out, close) = match handler(&seen_req) {
                                    Reply::Ok(result) => (response(msgid, Value::Nil, result), false),
                                    Reply::Err(e) => (response(msgid, e.into(), Value::Nil), false),
                                    Reply::Raw(bytes) => (bytes, false),
                                    Reply::OkThenClose(result) => (response(msgid, Value::Nil, result), true),
                                };
                                if stream.write_all(&out).await.is_err() || close {
                                    return;
                                }
                                continue;
                            }
                            Err(_) => {
                                let n = match stream.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                buf.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                });
            }
        });
        FakeServer { dir, path, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn methods(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.method).collect()
    }
}

pub fn response(msgid: u64, error: Value, result: Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Array(vec![1.into(), msgid.into(), error, result])).unwrap();
    out
}

/// `{EventId, Data}`.
pub fn step(event_id: u64, data: Value) -> Value {
    Value::Map(vec![("EventId".into(), event_id.into()), ("Data".into(), data)])
}

/// `{Method, Args}`.
pub fn call(method: &str, args: Vec<Value>) -> Value {
    Value::Map(vec![("Method".into(), method.into()), ("Args".into(), Value::Array(args))])
}

pub fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    kong_emulator::wire::map_get(map, key)
}
