//! The emulated Kong worker: connection pool, RPC objects and the RPC call itself.
//!
//! One [`Kong`] value plays one nginx worker. Its `call` is Kong's `Rpc:call`: take a pooled
//! connection, write `[0, msgid, method, [param]]`, read objects until a response, handle
//! `serverPid` notifications on the way, validate type and msgid like Kong's asserts, and
//! return the connection to the pool. msgids come from an "RPC object": one per plugin
//! server in Kong ≤3.8, one per plugin in 3.9 (docs/protocol.md#message-envelopes).

use crate::connection::{Connection, RawConnection, ReadFailure};
use crate::error::Error;
use crate::instance_cache::InstanceCache;
use crate::plugin::{Plugin, PluginSpec};
use crate::pool::{Pool, PoolPolicy};
use crate::rpc::{RpcObject, RpcResult};
use crate::version::KongVersion;
use crate::wire::{self, Incoming, StepData};
use parking_lot::Mutex;
use rmpv::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings for a [`Kong`].
#[derive(Debug, Clone)]
pub struct KongBuilder {
    socket: PathBuf,
    version: KongVersion,
    pool_size: Option<usize>,
    policy: PoolPolicy,
    read_timeout: Duration,
    max_event_attempts: usize,
}

impl KongBuilder {
    pub fn version(mut self, version: KongVersion) -> Self {
        self.version = version;
        self
    }

    /// Idle connections kept (`lua_socket_pool_size`); default by version.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    pub fn pool_policy(mut self, policy: PoolPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a read may wait for bytes (OpenResty default 60 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How many times one event is tried when the server says `no plugin instance`
    /// (Kong: unbounded).
    pub fn max_event_attempts(mut self, attempts: usize) -> Self {
        self.max_event_attempts = attempts.max(1);
        self
    }

    pub fn build(self) -> Kong {
        let pool_size = self.pool_size.unwrap_or(self.version.default_pool_size());
        Kong {
            inner: Arc::new(Inner {
                pool: Pool::new(self.socket, pool_size, self.policy),
                version: self.version,
                read_timeout: self.read_timeout,
                max_event_attempts: self.max_event_attempts,
                server_rpc: Arc::new(RpcObject::default()),
                plugin_rpcs: Mutex::new(HashMap::new()),
                instances: InstanceCache::default(),
                rpcs: AtomicUsize::new(0),
                seq: AtomicU64::new(match self.version {
                    KongVersion::V3_4 => 0,
                    KongVersion::V3_9 => 1,
                }),
                node_id: crate::plugin::uuid_like(),
                ws_id: crate::plugin::uuid_like(),
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) version: KongVersion,
    read_timeout: Duration,
    pub(crate) max_event_attempts: usize,
    server_rpc: Arc<RpcObject>,
    plugin_rpcs: Mutex<HashMap<String, Arc<RpcObject>>>,
    pub(crate) instances: InstanceCache,
    rpcs: AtomicUsize,
    seq: AtomicU64,
    pub(crate) node_id: String,
    pub(crate) ws_id: String,
}

/// An emulated Kong worker talking to one plugin-server socket. Cheap to clone; clones
/// share the pool, counters and instance cache.
#[derive(Debug, Clone)]
pub struct Kong {
    pub(crate) inner: Arc<Inner>,
}

impl Kong {
    /// A Kong 3.9 worker with default settings.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self::builder(socket).build()
    }

    pub fn builder(socket: impl Into<PathBuf>) -> KongBuilder {
        KongBuilder {
            socket: socket.into(),
            version: KongVersion::default(),
            pool_size: None,
            policy: PoolPolicy::default(),
            read_timeout: Duration::from_secs(60),
            max_event_attempts: 3,
        }
    }

    pub fn version(&self) -> KongVersion {
        self.inner.version
    }

    pub fn socket(&self) -> &std::path::Path {
        self.inner.pool.path()
    }

    /// RPCs sent so far (all plugins, all events).
    pub fn rpc_count(&self) -> usize {
        self.inner.rpcs.load(Ordering::Relaxed)
    }

    /// Connections opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.pool.opened()
    }

    /// Idle connections currently pooled.
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.idle_count()
    }

    /// Closes all idle pooled connections.
    pub fn close_idle_connections(&self) {
        self.inner.pool.clear()
    }

    /// `kong.node.get_id()` of this worker.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// A plugin configuration (a `plugins` row) scoped to a fresh route id.
    pub fn plugin(&self, name: &str, config: serde_json::Value) -> Plugin {
        self.plugin_from(PluginSpec::new(name, config))
    }

    /// A plugin configuration with explicit ids/scoping.
    pub fn plugin_from(&self, spec: PluginSpec) -> Plugin {
        Plugin::new(spec, self.next_seq())
    }

    /// Replaces a plugin's config (a config rebuild in Kong): the next event starts a new
    /// instance and then closes the old one.
    pub fn update_config(&self, plugin: &Plugin, config: serde_json::Value) {
        plugin.replace_config(config, self.next_seq());
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Cached instance id of a plugin, if any.
    pub fn cached_instance_id(&self, plugin: &Plugin) -> Option<Value> {
        self.inner.instances.get(plugin.id()).map(|e| e.id)
    }

    /// Forgets every cached instance (what a changed `serverPid` or a worker restart does).
    pub fn forget_instances(&self) {
        self.inner.instances.clear();
    }

    /// A fresh connection outside the pool, for byte-level tests.
    pub async fn raw_connection(&self) -> Result<RawConnection, Error> {
        RawConnection::connect(self.inner.pool.path(), self.inner.read_timeout).await
    }

    /// The RPC object used for `plugin_name`.
    pub(crate) fn rpc_object(&self, plugin_name: &str) -> Arc<RpcObject> {
        match self.inner.version {
            KongVersion::V3_4 => self.inner.server_rpc.clone(),
            KongVersion::V3_9 => {
                let mut rpcs = self.inner.plugin_rpcs.lock();
                match rpcs.get(plugin_name) {
                    Some(rpc) => rpc.clone(),
                    None => rpcs.entry(plugin_name.to_string()).or_default().clone(),
                }
            }
        }
    }

    /// Sends one RPC with a single parameter and returns the result (Kong's `Rpc:call`).
    /// Uses the RPC object of `plugin_name`.
    pub async fn call(&self, plugin_name: &str, method: &str, param: &Value) -> Result<Value, Error> {
        let rpc = self.rpc_object(plugin_name);
        let encode = |msgid, out: &mut Vec<u8>| wire::write_request(msgid, method, param, out);
        self.call_on(&rpc, method, encode, |r: RpcResult<'_>| r.into_value()).await
    }

    /// Sends a `plugin.Step*` RPC.
    pub(crate) async fn call_step<T>(
        &self,
        rpc: &Arc<RpcObject>,
        method: &str,
        packed_event_id: &[u8],
        data: &StepData,
        on_result: impl FnOnce(RpcResult<'_>) -> T,
    ) -> Result<T, Error> {
        self.call_on(rpc, method, |msgid, out| wire::write_step(msgid, method, packed_event_id, data, out), on_result)
            .await
    }

    /// Kong's `Rpc:call` on the RPC object `rpc`: `encode` writes the request for the msgid it
    /// is given, `on_result` sees the result of a successful response before the connection
    /// goes back to the pool (the result stays in the read buffer when the response has the
    /// common shape; anything else is decoded and checked value by value).
    pub(crate) async fn call_on<T>(
        &self,
        rpc: &Arc<RpcObject>,
        method: &str,
        encode: impl FnOnce(u64, &mut Vec<u8>),
        on_result: impl FnOnce(RpcResult<'_>) -> T,
    ) -> Result<T, Error> {
        let msgid = rpc.next_msgid();
        let mut conn = self.inner.pool.acquire().await?;
        self.inner.rpcs.fetch_add(1, Ordering::Relaxed);
        conn.out.clear();
        encode(msgid, &mut conn.out);
        if let Err(source) = conn.send_out().await {
            return Err(Error::Io { context: format!("sending {method}"), source });
        }
        loop {
            let frame = match conn.read_frame(self.inner.read_timeout).await {
                Ok(frame) => frame,
                Err(failure) => return Err(self.read_failure(conn, method, failure)),
            };
            if frame.depth <= wire::FAST_PATH_DEPTH {
                if let Some(result) = wire::ok_response_result(conn.frame(frame), msgid) {
                    let value = on_result(RpcResult::Raw(result));
                    conn.consume(frame);
                    // Kong returns the connection before looking at the result.
                    self.inner.pool.release(conn);
                    return Ok(value);
                }
            }
            let value = match rmpv::decode::read_value(&mut conn.frame(frame)) {
                Ok(value) => value,
                Err(e) => {
                    let failure = ReadFailure::Invalid(e.to_string());
                    return Err(self.read_failure(conn, method, failure));
                }
            };
            conn.consume(frame);
            match wire::classify(value) {
                Err(assert) => return Err(Error::Protocol(format!("{method}: {assert}"))),
                Ok(Incoming::Notification { label, args }) => self.notification(rpc, &label, &args),
                Ok(Incoming::Response { msgid: got, error, result }) => {
                    if wire::lua_number(&got) != Some(msgid as f64) {
                        return Err(Error::Protocol(format!(
                            "unexpected RPC response ID from Go plugin server: sent {msgid} for {method}, got {got}"
                        )));
                    }
                    // Kong returns the connection before looking at the error.
                    self.inner.pool.release(conn);
                    return match error {
                        Value::Nil => Ok(on_result(RpcResult::Value(result))),
                        Value::String(s) => Err(Error::Rpc {
                            method: method.to_string(),
                            message: String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        }),
                        other => Err(Error::Protocol(format!(
                            "{method}: error element must be nil or a string (Kong calls err:lower()), got {other}"
                        ))),
                    };
                }
            }
        }
    }

    /// Maps a read failure; a timed-out connection goes back to the pool like in Kong.
    fn read_failure(&self, conn: Connection, method: &str, failure: ReadFailure) -> Error {
        match failure {
            ReadFailure::NoData(why) => {
                if why.starts_with("timeout") {
                    // OpenResty keeps a timed-out cosocket usable; Kong calls setkeepalive().
                    self.inner.pool.release(conn);
                }
                Error::NoData { method: format!("{method}, {why}") }
            }
            ReadFailure::MissingBytes => Error::Protocol(format!("{method}: missing bytes")),
            ReadFailure::Invalid(e) => Error::Protocol(format!("{method}: undecodable response: {e}")),
            ReadFailure::Io(source) => Error::Io { context: format!("reading the {method} response"), source },
        }
    }

    /// `rpc_notifications`: only `serverPid` is known; a changed pid drops the instances
    /// bound to this RPC object.
    fn notification(&self, rpc: &Arc<RpcObject>, label: &Value, args: &Value) {
        if label.as_str() != Some("serverPid") {
            return;
        }
        rpc.record_pid(wire::lua_number(args), || self.inner.instances.drop_bound_to(rpc));
    }
}
