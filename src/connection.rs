//! ② One accepted connection: read a frame, serve it, write the answer on the same
//! connection, repeat. Kong never pipelines (one request in flight per connection,
//! docs/protocol.md#connections), so requests are served in order. No event or instance state lives
//! here.
//!
//! A frame that cannot be decoded closes this connection only; a well-formed envelope with
//! a bad method or parameter gets an error response and the connection stays open.
//! Idle connections are never closed from our side: Kong owns the pool
//! (docs/protocol.md#connections).
//!
//! Frame detection resumes where the last read stopped ([`codec::FrameScanner`]), and the
//! bytes of a frame still arriving are charged to the process-wide [`BufferBudget`].
//! A peer that connects and leaves before sending anything (a health probe; Kong 3.4's
//! readiness check does exactly that) is not an error.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::buffer_budget::{BudgetExceeded, BufferBudget};
use crate::codec::{self, FrameError, FrameScanner};
use crate::dispatch::dispatch;
use crate::metrics::{self, KindLabels};
use crate::registry::Registry;
use crate::rpc::{self, Method, ProtocolError, RpcError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("unreadable frame: {0}")]
    Frame(#[from] FrameError),
    #[error("bad envelope: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("closed: {0}")]
    Budget(#[from] BudgetExceeded),
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
            ConnectionError::Budget(_) => "buffer_budget",
            ConnectionError::Io(_) => "io",
        }
    }
}

pub struct Limits {
    pub max_frame_bytes: usize,
    /// Send `[2, "serverPid", pid]` first on every connection (docs/protocol.md#serverpid).
    pub send_server_pid: bool,
    /// Shared by all connections: bytes of incomplete frames.
    pub buffer_budget: BufferBudget,
}

/// Serves requests until EOF or an error. The caller closes the stream (after its own
/// bookkeeping, so that metrics never lag behind what the peer observed).
///
/// Any byte stream will do: production serves Unix sockets, the in-process tests
/// (`tests/in_process.rs`) serve `tokio::io::duplex` pipes with the clock paused.
pub async fn serve<S>(stream: &mut S, registry: Registry, limits: &Limits) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut received = 0usize;
    let result = serve_frames(stream, registry, limits, &mut received).await;
    match result {
        // A peer that closed before sending a byte (connect-then-close probe): our serverPid
        // write or the first read fails with EPIPE/ECONNRESET. Nothing was lost.
        Err(ConnectionError::Io(e))
            if received == 0
                && matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) =>
        {
            tracing::debug!("peer closed before sending anything: {e}");
            Ok(())
        }
        other => other,
    }
}

async fn serve_frames<S>(
    stream: &mut S,
    registry: Registry,
    limits: &Limits,
    received: &mut usize,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(512);
    if limits.send_server_pid {
        codec::encode(&rpc::server_pid_notification(std::process::id()), &mut out);
        stream.write_all(&out).await?;
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = FrameScanner::new();
    let mut charge = limits.buffer_budget.charge();
    loop {
        let len = loop {
            if let Some(len) = scanner.scan(&buf, limits.max_frame_bytes)? {
                break len;
            }
            // Incomplete: what is buffered counts against the global budget.
            charge.hold(buf.len())?;
            let n = stream.read_buf(&mut buf).await?;
            if n == 0 {
                return if buf.is_empty() { Ok(()) } else { Err(ConnectionError::Truncated(buf.len())) };
            }
            *received += n;
        };
        scanner.reset();
        let incoming = match rpc::read_common(&buf[..len]) {
            Some((msgid, method)) => Ok((msgid, Ok(method))),
            None => rpc::Request::from_value(codec::decode(&buf[..len])?)
                .map(|request| (request.msgid, Method::parse(&request.method, request.param))),
        };
        buf.advance(len);
        charge.hold(0)?;
        let _busy = registry.busy_guard();
        let (msgid, name, result) = match incoming {
            Ok((msgid, Ok(method))) => {
                let name = method.name();
                (msgid, name, dispatch(&registry, method).await.map_err(RpcError::from))
            }
            Ok((msgid, Err(e))) => (msgid, "unparsed", Err(RpcError::from(e))),
            Err(ProtocolError { msgid: Some(msgid), error }) => (msgid, "unparsed", Err(RpcError::from(error))),
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = &result {
            tracing::debug!(method = name, kind = e.kind(), "rpc error: {e}");
            metrics::global().rpc_errors.get_or_create(&KindLabels { kind: e.kind() }).inc();
        }
        out.clear();
        rpc::encode_response(msgid, &result, &mut out);
        stream.write_all(&out).await?;
    }
}
