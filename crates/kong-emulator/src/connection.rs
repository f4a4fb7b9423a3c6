//! One Unix-socket connection to the plugin server, read the way Kong's `Rpc:call` reads it.
//!
//! Kong feeds `receiveany(4096)` chunks to a streaming unpacker, so a response may arrive in
//! any number of pieces and several objects may share a chunk; bytes after a complete object
//! stay buffered for the next read on the same connection. [`RawConnection`] exposes the same
//! machinery without the RPC rules so that tests can send malformed frames.

use crate::error::Error;
use crate::wire::{self, Decoded};
use bytes::BytesMut;
use rmpv::Value;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Kong reads in chunks of this size.
const CHUNK: usize = 4096;

/// A connection plus its unread bytes.
#[derive(Debug)]
pub(crate) struct Connection {
    id: u64,
    stream: UnixStream,
    buf: BytesMut,
}

/// Why reading a message failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// EOF or timeout before the first byte (Kong: `no data`).
    NoData(String),
    /// EOF in the middle of an object (lua-MessagePack: `missing bytes`, a Lua error).
    MissingBytes,
    /// Bytes that are not msgpack (a Lua error in the unpacker).
    Invalid(String),
    /// A socket error other than EOF.
    Io(std::io::Error),
}

impl Connection {
    pub(crate) async fn connect(id: u64, path: &Path) -> Result<Self, Error> {
        let stream = UnixStream::connect(path).await.map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Connection { id, stream, buf: BytesMut::with_capacity(CHUNK) })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether an idle pooled connection is still usable. nginx watches idle keepalive
    /// connections and closes them when the peer closes or sends anything unsolicited.
    pub(crate) fn idle_usable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads the next complete msgpack object, waiting at most `timeout` for more bytes
    /// each time the buffer runs dry (OpenResty's read timeout is per receive call).
    pub(crate) async fn read_value(&mut self, timeout: Duration) -> Result<Value, ReadFailure> {
        loop {
            if !self.buf.is_empty() {
                match wire::decode_prefix(&self.buf) {
                    Decoded::Complete(value, used) => {
                        let _ = self.buf.split_to(used);
                        return Ok(value);
                    }
                    Decoded::Incomplete => {}
                    Decoded::Invalid(e) => return Err(ReadFailure::Invalid(e)),
                }
            }
            let started_empty = self.buf.is_empty();
            self.buf.reserve(CHUNK);
            let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Err(_elapsed) if started_empty => {
                    return Err(ReadFailure::NoData(format!("timeout after {timeout:?}")))
                }
                // lua-MessagePack's loader gets nil from the failed receive: `missing bytes`.
                Err(_elapsed) => return Err(ReadFailure::MissingBytes),
                Ok(Ok(0)) if started_empty => return Err(ReadFailure::NoData("closed".into())),
                Ok(Ok(0)) => return Err(ReadFailure::MissingBytes),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if started_empty => {
                    return Err(ReadFailure::NoData(format!("read failed: {e}")))
                }
                Ok(Err(e)) => return Err(ReadFailure::Io(e)),
            }
        }
    }
}

/// A connection handed to tests for byte-level experiments (malformed frames, pipelining,
/// half-written messages). It is never returned to the pool.
#[derive(Debug)]
pub struct RawConnection {
    conn: Connection,
    timeout: Duration,
}

impl RawConnection {
    /// Opens a fresh connection to `path`; reads wait at most `timeout`.
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, Error> {
        let conn = Connection::connect(0, path.as_ref()).await?;
        Ok(RawConnection { conn, timeout })
    }

    /// Writes raw bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.conn.send(bytes).await.map_err(|source| Error::Io {
            context: "writing raw bytes to the plugin server".into(),
            source,
        })
    }

    /// Sends a well-formed request `[0, msgid, method, [param]]`.
    pub async fn send_request(&mut self, msgid: u64, method: &str, param: &Value) -> Result<(), Error> {
        self.send_bytes(&wire::encode_request(msgid, method, param)).await
    }

    /// Reads the next msgpack object (notification or response), whatever it is.
    pub async fn read_value(&mut self) -> Result<Value, Error> {
        self.conn.read_value(self.timeout).await.map_err(|f| match f {
            ReadFailure::NoData(why) => Error::NoData { method: format!("raw read ({why})") },
            ReadFailure::MissingBytes => Error::Protocol("missing bytes".into()),
            ReadFailure::Invalid(e) => Error::Protocol(format!("undecodable response: {e}")),
            ReadFailure::Io(source) => Error::Io { context: "reading raw response".into(), source },
        })
    }

    /// True when the server closed (or reset) the connection within the timeout, with
    /// nothing left unread; false when data arrived or the timeout passed.
    pub async fn is_closed_by_peer(&mut self) -> bool {
        matches!(
            self.conn.read_value(self.timeout).await,
            Err(ReadFailure::NoData(why)) if why == "closed" || why.starts_with("read failed")
        )
    }
}
