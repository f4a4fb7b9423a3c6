//! The RPC state Kong keeps per "RPC object", and what a successful call hands back.
//!
//! Why apart from [`crate::Kong`]: the instance cache binds every instance to the RPC object it
//! was started through (a changed `serverPid` drops exactly those), so it needs this type
//! without needing the worker that owns the cache.

use crate::wire;
use parking_lot::Mutex;
use rmpv::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// The result of a successful RPC: still in the connection's read buffer (a frame of
/// bounded depth, decodable without error) or already decoded.
#[derive(Debug)]
pub(crate) enum RpcResult<'a> {
    Raw(&'a [u8]),
    Value(Value),
}

impl RpcResult<'_> {
    pub(crate) fn into_value(self) -> Value {
        match self {
            RpcResult::Raw(bytes) => wire::decode_raw(bytes),
            RpcResult::Value(value) => value,
        }
    }
}

/// One Lua RPC object: a msgid counter and the last `serverPid` seen.
#[derive(Debug, Default)]
pub(crate) struct RpcObject {
    msgid: AtomicU64,
    pid: Mutex<Option<f64>>,
}

impl RpcObject {
    pub(crate) fn next_msgid(&self) -> u64 {
        self.msgid.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records the pid of a `serverPid` notification; `on_change` runs (under the same lock,
    /// so no call sees the new pid before it ran) when a different pid was known before.
    pub(crate) fn record_pid(&self, pid: Option<f64>, on_change: impl FnOnce()) {
        let mut known = self.pid.lock();
        if known.is_some() && *known != pid {
            on_change();
        }
        *known = pid;
    }
}
