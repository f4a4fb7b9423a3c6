//! One Unix-socket connection to the plugin server, read the way Kong's `Rpc:call` reads it.
//!
//! Kong feeds `receiveany(4096)` chunks to a streaming unpacker, so a response may arrive in
//! any number of pieces and several objects may share a chunk; bytes after a complete object
//! stay buffered for the next read on the same connection. [`RawConnection`] exposes the same
//! machinery without the RPC rules so that tests can send malformed frames.

use crate::error::Error;
use crate::wire;
use rmpv::Value;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Sleep;

/// Kong reads in chunks of this size.
const CHUNK: usize = 4096;

/// A connection plus its unread bytes and a buffer for the request being written.
#[derive(Debug)]
pub(crate) struct Connection {
    id: u64,
    stream: UnixStream,
    /// Bytes read; `buf[start..]` is not consumed yet.
    buf: Vec<u8>,
    start: usize,
    /// The outgoing request, encoded in place (reused from RPC to RPC).
    pub(crate) out: Vec<u8>,
    /// The read timeout, re-armed for every receive (pushing a registered timer's deadline
    /// further is an atomic store; a new timer per read would lock the timer wheel twice).
    timer: Option<Pin<Box<Sleep>>>,
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

/// One complete object at the front of a connection's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) len: usize,
    /// Nesting depth ([`wire::object_len_and_depth`]).
    pub(crate) depth: usize,
}

impl Connection {
    pub(crate) async fn connect(id: u64, path: &Path) -> Result<Self, Error> {
        let stream =
            UnixStream::connect(path).await.map_err(|source| Error::Connect { path: path.to_path_buf(), source })?;
        Ok(Connection {
            id,
            stream,
            buf: Vec::with_capacity(CHUNK),
            start: 0,
            out: Vec::with_capacity(256),
            timer: None,
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Whether an idle pooled connection is still usable. nginx watches idle keepalive
    /// connections and closes them when the peer closes or sends anything unsolicited.
    pub(crate) fn idle_usable(&self) -> bool {
        if !self.pending().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends `self.out`.
    pub(crate) async fn send_out(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.out).await
    }

    /// The bytes of the frame at the front of the buffer.
    pub(crate) fn frame(&self, frame: Frame) -> &[u8] {
        &self.buf[self.start..self.start + frame.len]
    }

    /// Drops the frame at the front of the buffer.
    pub(crate) fn consume(&mut self, frame: Frame) {
        self.start += frame.len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads the next complete msgpack object, waiting at most `timeout` for more bytes
    /// each time the buffer runs dry (OpenResty's read timeout is per receive call).
    pub(crate) async fn read_value(&mut self, timeout: Duration) -> Result<Value, ReadFailure> {
        let frame = self.read_frame(timeout).await?;
        let value =
            rmpv::decode::read_value(&mut self.frame(frame)).map_err(|e| ReadFailure::Invalid(e.to_string()))?;
        self.consume(frame);
        Ok(value)
    }

    /// Waits until a complete msgpack object is at the front of the buffer (left there:
    /// see [`Connection::frame`] and [`Connection::consume`]).
    pub(crate) async fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadFailure> {
        loop {
            if !self.pending().is_empty() {
                match wire::object_len_and_depth(self.pending()) {
                    Ok(Some((len, depth))) => return Ok(Frame { len, depth }),
                    Ok(None) => {}
                    Err(e) => return Err(ReadFailure::Invalid(e)),
                }
            }
            let started_empty = self.pending().is_empty();
            if self.start > 0 {
                // Keep the beginning of an object at the front of the buffer.
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(CHUNK);
            match self.receive(timeout).await {
                None if started_empty => return Err(ReadFailure::NoData(format!("timeout after {timeout:?}"))),
                // lua-MessagePack's loader gets nil from the failed receive: `missing bytes`.
                None => return Err(ReadFailure::MissingBytes),
                Some(Ok(0)) if started_empty => return Err(ReadFailure::NoData("closed".into())),
                Some(Ok(0)) => return Err(ReadFailure::MissingBytes),
                Some(Ok(_)) => {}
                Some(Err(e)) if started_empty => return Err(ReadFailure::NoData(format!("read failed: {e}"))),
                Some(Err(e)) => return Err(ReadFailure::Io(e)),
            }
        }
    }

    /// One receive into the spare capacity of `buf`, or `None` after `timeout` without data
    /// (what `tokio::time::timeout` around the read would do, with the connection's timer).
    async fn receive(&mut self, timeout: Duration) -> Option<std::io::Result<usize>> {
        let deadline = clock::deadline(timeout);
        let timer = match &mut self.timer {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let mut read = std::pin::pin!(self.stream.read_buf(&mut self.buf));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
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
        self.conn
            .send(bytes)
            .await
            .map_err(|source| Error::Io { context: "writing raw bytes to the plugin server".into(), source })
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

/// Read deadlines from the coarse monotonic clock.
///
/// A receive's deadline is taken for every RPC; the precise clock (`Instant::now`) costs
/// a TSC read through the vDSO, the coarse one (`CLOCK_MONOTONIC_COARSE`, advanced every
/// tick) only a load. A deadline is never earlier than `Instant::now() + timeout` and at most
/// two ticks later, like nginx, whose timers run on a time cached per event-loop turn.
mod clock {
    use std::sync::OnceLock;
    use std::time::Duration;
    use tokio::time::Instant;

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    mod coarse {
        use std::time::Duration;

        #[repr(C)]
        struct Timespec {
            tv_sec: i64,
            tv_nsec: i64,
        }

        extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
            fn clock_getres(clock: i32, ts: *mut Timespec) -> i32;
        }

        const CLOCK_MONOTONIC_COARSE: i32 = 6;

        fn call(f: unsafe extern "C" fn(i32, *mut Timespec) -> i32) -> Option<Duration> {
            let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid, writable `struct timespec` (64-bit Linux layout).
            let ok = unsafe { f(CLOCK_MONOTONIC_COARSE, &mut ts) } == 0;
            ok.then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
        }

        pub(super) fn now() -> Option<Duration> {
            call(clock_gettime)
        }

        pub(super) fn resolution() -> Option<Duration> {
            call(clock_getres)
        }
    }

    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    mod coarse {
        pub(super) fn now() -> Option<std::time::Duration> {
            None
        }

        pub(super) fn resolution() -> Option<std::time::Duration> {
            None
        }
    }

    /// A precise instant, the coarse clock read just before it, and the margin that makes
    /// coarse readings safe (one tick for each of the two readings' lag).
    struct Base {
        instant: Instant,
        coarse: Duration,
        margin: Duration,
    }

    fn base() -> Option<&'static Base> {
        static BASE: OnceLock<Option<Base>> = OnceLock::new();
        BASE.get_or_init(|| {
            let coarse = coarse::now()?;
            let instant = Instant::now();
            let tick = coarse::resolution()?;
            // Give up on an implausible clock rather than risk early timeouts.
            (tick <= Duration::from_millis(50)).then_some(Base { instant, coarse, margin: 2 * tick })
        })
        .as_ref()
    }

    /// `Instant::now() + timeout`, rounded up to the clock tick.
    pub(super) fn deadline(timeout: Duration) -> Instant {
        match base().zip(coarse::now()) {
            Some((base, now)) => base.instant + now.saturating_sub(base.coarse) + base.margin + timeout,
            None => Instant::now() + timeout,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn deadlines_are_never_early_and_barely_late() {
            for timeout in [Duration::ZERO, Duration::from_millis(3), Duration::from_secs(60)] {
                for _ in 0..1000 {
                    let before = Instant::now();
                    let deadline = deadline(timeout);
                    let after = Instant::now();
                    assert!(deadline >= after + timeout, "early by {:?}", after + timeout - deadline);
                    assert!(deadline <= before + timeout + Duration::from_millis(150));
                }
            }
        }
    }
}
