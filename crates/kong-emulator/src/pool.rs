//! The per-worker cosocket keepalive pool Kong uses for plugin-server connections.
//!
//! Kong takes a connection per RPC (an idle pooled one, or a new one), writes one request,
//! reads the answer and hands the connection back with `setkeepalive()`. OpenResty's pool
//! is a LIFO of idle connections bounded by `lua_socket_pool_size`; when it is full the
//! least recently used idle connection is closed, and an idle connection the server closes
//! (or writes to) is dropped rather than reused. [`PoolPolicy::Rotate`] deliberately
//! spreads consecutive RPCs over different connections, which is allowed by Kong's design
//! and proves that the server keeps no per-connection state (docs/protocol.md#connections).

use crate::connection::Connection;
use crate::error::Error;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How an RPC picks its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolPolicy {
    /// OpenResty: reuse the most recently returned idle connection.
    #[default]
    Lifo,
    /// Never use the connection the previous RPC used: take the least recently used other
    /// idle connection, or open a new one.
    Rotate,
}

#[derive(Debug, Default)]
struct Idle {
    /// Idle connections, most recently returned last.
    conns: Vec<Connection>,
    /// The connection taken by the most recent RPC.
    last_taken: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Pool {
    path: PathBuf,
    size: usize,
    policy: PoolPolicy,
    idle: Mutex<Idle>,
    next_id: AtomicU64,
    /// A connect has succeeded once (Kong 3.4's readiness probe would have, too).
    connected: AtomicBool,
}

impl Pool {
    pub(crate) fn new(path: PathBuf, size: usize, policy: PoolPolicy) -> Self {
        Pool {
            path,
            size,
            policy,
            idle: Mutex::new(Idle::default()),
            next_id: AtomicU64::new(1),
            connected: AtomicBool::new(false),
        }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Takes an idle connection according to the policy, or connects a new one.
    pub(crate) async fn acquire(&self) -> Result<Connection, Error> {
        let reused = {
            let mut idle = self.idle.lock();
            // Idle connections the server closed meanwhile are dropped, as nginx does.
            idle.conns.retain(Connection::idle_usable);
            let pick = match self.policy {
                PoolPolicy::Lifo => idle.conns.len().checked_sub(1),
                PoolPolicy::Rotate => {
                    let last = idle.last_taken;
                    idle.conns.iter().position(|c| Some(c.id()) != last)
                }
            };
            let conn = pick.map(|i| idle.conns.remove(i));
            if let Some(c) = &conn {
                idle.last_taken = Some(c.id());
            }
            conn
        };
        if let Some(conn) = reused {
            return Ok(conn);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Connection::connect(id, &self.path).await?;
        self.connected.store(true, Ordering::Relaxed);
        self.idle.lock().last_taken = Some(id);
        Ok(conn)
    }

    /// `setkeepalive()`: back into the pool, evicting the least recently used idle
    /// connection when full.
    pub(crate) fn release(&self, conn: Connection) {
        if self.size == 0 {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.conns.len() >= self.size {
            idle.conns.remove(0);
        }
        idle.conns.push(conn);
    }

    /// Whether a connect to the socket ever succeeded.
    pub(crate) fn ever_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Number of connections opened so far.
    pub(crate) fn opened(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    /// Number of idle pooled connections.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().conns.len()
    }

    /// Closes every idle connection (like a worker restart would).
    pub(crate) fn clear(&self) {
        self.idle.lock().conns.clear();
    }
}
