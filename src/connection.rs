//! ② One accepted connection: read a frame, serve it, write the answer on the same
//! connection, repeat. Kong never pipelines (one request in flight per connection, §2.3),
//! so requests are served in order. No event or instance state lives here.
//!
//! A frame that cannot be decoded closes this connection only; a well-formed envelope with
//! a bad method or parameter gets an error response and the connection stays open.
//! Idle connections are never closed from our side: Kong owns the pool (§2.4).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::codec::{self, FrameError};
use crate::dispatch::{dispatch, RpcError};
use crate::metrics::{self, KindLabels};
use crate::registry::Registry;
use crate::rpc::{self, Method, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("unreadable frame: {0}")]
    Frame(#[from] FrameError),
    #[error("bad envelope: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ConnectionError {
    /// Bounded label for the `connection_errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectionError::Frame(FrameError::TooLarge { .. }) => "frame_too_large",
            ConnectionError::Frame(_) => "bad_frame",
            ConnectionError::Protocol(_) => "bad_envelope",
            ConnectionError::Truncated(_) => "truncated",
            ConnectionError::Io(_) => "io",
        }
    }
}

pub struct Limits {
    pub max_frame_bytes: usize,
    /// Send `[2, "serverPid", pid]` first on every connection (§4.7).
    pub send_server_pid: bool,
}

/// Serves requests until EOF or an error. The caller closes the stream (after its own
/// bookkeeping, so that metrics never lag behind what the peer observed).
pub async fn serve(stream: &mut UnixStream, registry: Registry, limits: &Limits) -> Result<(), ConnectionError> {
    let mut out = Vec::with_capacity(512);
    if limits.send_server_pid {
        codec::encode(&rpc::server_pid_notification(std::process::id()), &mut out);
        stream.write_all(&out).await?;
    }
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let len = loop {
            if let Some(len) = codec::frame_len(&buf, limits.max_frame_bytes)? {
                break len;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return if buf.is_empty() { Ok(()) } else { Err(ConnectionError::Truncated(buf.len())) };
            }
        };
        let incoming = match rpc::read_common(&buf[..len]) {
            Some((msgid, method)) => Ok((msgid, Ok(method))),
            None => rpc::Request::from_value(codec::decode(&buf[..len])?)
                .map(|request| (request.msgid, Method::parse(&request.method, request.param))),
        };
        buf.advance(len);
        let _busy = registry.busy_guard();
        let (msgid, result) = match incoming {
            Ok((msgid, method)) => {
                let (name, result) = match method {
                    Ok(method) => (method.name(), dispatch(&registry, method).await),
                    Err(message) => ("unparsed", Err(RpcError { kind: "bad_request", message })),
                };
                let result = result.map_err(|e| {
                    tracing::debug!(method = name, kind = e.kind, "rpc error: {}", e.message);
                    metrics::global().rpc_errors.get_or_create(&KindLabels { kind: e.kind }).inc();
                    e.message
                });
                (msgid, result)
            }
            Err(ProtocolError { msgid: Some(msgid), reason }) => {
                metrics::global().rpc_errors.get_or_create(&KindLabels { kind: "bad_envelope" }).inc();
                (msgid, Err(reason))
            }
            Err(e) => return Err(e.into()),
        };
        out.clear();
        rpc::encode_response(msgid, &result, &mut out);
        stream.write_all(&out).await?;
    }
}
