//! The zero-work floor: a minimal plugin server that answers the same RPC script as
//! `ghasi-api-key-lookup` on a cache hit, with no plugin logic at all — one thread, one
//! current-thread tokio runtime, MessagePack in and out. It is part of the bench crate, not
//! our binary, so the floor does not move with our runtime choices.
//!
//! Script per `access` event (Kong's client sends the RPCs):
//! HandleEvent → `kong.request.get_header("x-api-key")`; Step(key) →
//! `kong.service.request.set_headers({...})`; Step → `kong.ctx.shared.set(...)`; Step → "ret"
//! (4 RPCs, 3 PDK calls). Without a key: Step(nil) → `kong.response.exit(401, ...)`, which Kong
//! never answers (2 RPCs).
//!
//! Started as `ghasi-bench zero-work-server --socket PATH` (the rig's START_CMD).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Which step of the script each live event is at.
#[derive(Default)]
struct State {
    next_id: AtomicU64,
    events: Mutex<HashMap<u64, u8>>,
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let socket = match args {
        [flag, path] if flag == "--socket" => path.clone(),
        _ => anyhow::bail!("usage: ghasi-bench zero-work-server --socket PATH"),
    };
    let _ = std::fs::remove_file(&socket);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = UnixListener::bind(&socket)?;
        let state = Arc::new(State::default());
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(connection(stream, state.clone()));
        }
    })
}

async fn connection(mut stream: UnixStream, state: Arc<State>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(512);
    loop {
        let mut slice = &buf[..];
        match rmpv::decode::read_value(&mut slice) {
            Ok(message) => {
                let used = buf.len() - slice.len();
                buf.drain(..used);
                out.clear();
                if let Some(reply) = answer(&message, &state) {
                    rmpv::encode::write_value(&mut out, &reply).expect("encoding to a Vec");
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
            Err(_) if buf.len() < 1 << 20 => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            Err(_) => return,
        }
    }
}

fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

fn pdk(event: u64, method: &str, args: Vec<Value>) -> Value {
    map(vec![("EventId", event.into()), ("Data", map(vec![("Method", method.into()), ("Args", Value::Array(args))]))])
}

/// The response to one request, `None` for anything that is not a request.
fn answer(message: &Value, state: &State) -> Option<Value> {
    let parts = message.as_array()?;
    if parts.len() != 4 || parts[0].as_u64() != Some(0) {
        return None;
    }
    let msgid = parts[1].clone();
    let method = parts[2].as_str().unwrap_or("");
    let param = parts[3].as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Nil);
    let result = match method {
        "plugin.StartInstance" => map(vec![
            ("Id", state.next_id.fetch_add(1, Ordering::Relaxed).into()),
            ("Name", field(&param, "Name").cloned().unwrap_or(Value::Nil)),
            ("Config", field(&param, "Config").cloned().unwrap_or(Value::Nil)),
            ("StartTime", 0.into()),
        ]),
        "plugin.HandleEvent" => {
            let event = state.next_id.fetch_add(1, Ordering::Relaxed);
            state.events.lock().expect("events").insert(event, 0);
            pdk(event, "kong.request.get_header", vec!["x-api-key".into()])
        }
        m if m.starts_with("plugin.Step") => {
            let event = field(&param, "EventId").and_then(Value::as_u64).unwrap_or(u64::MAX);
            let data = field(&param, "Data").filter(|d| !d.is_nil());
            let mut events = state.events.lock().expect("events");
            let Some(step) = events.get_mut(&event) else {
                return Some(Value::Array(vec![
                    1.into(),
                    msgid,
                    format!("no running event {event}").into(),
                    Value::Nil,
                ]));
            };
            *step += 1;
            match *step {
                1 if data.is_none() => {
                    events.remove(&event);
                    let body = r#"{"status":401,"code":"credential_missing"}"#;
                    let headers = map(vec![("Content-Type", "application/problem+json".into())]);
                    pdk(event, "kong.response.exit", vec![401.into(), body.into(), headers])
                }
                1 => {
                    let headers = map(vec![
                        ("X-Account-Id", "acc_bench_0001".into()),
                        ("X-User-Id", "usr_bench_0001".into()),
                        ("X-Consumer-Username", "acc_bench_0001".into()),
                        ("X-Credential-Identifier", "key_hit_0".into()),
                        ("x-api-key", Value::Array(vec![])),
                    ]);
                    pdk(event, "kong.service.request.set_headers", vec![headers])
                }
                2 => pdk(
                    event,
                    "kong.ctx.shared.set",
                    vec!["authenticated_groups".into(), Value::Array(vec!["ghasi-authenticated".into()])],
                ),
                _ => {
                    events.remove(&event);
                    map(vec![("EventId", event.into()), ("Data", "ret".into())])
                }
            }
        }
        _ => Value::Nil,
    };
    Some(Value::Array(vec![1.into(), msgid, Value::Nil, result]))
}
