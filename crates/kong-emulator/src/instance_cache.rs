//! Kong's per-worker instance cache (`running_instances`): plugin id → the server-side instance.
//!
//! Why a module of its own: the worker owns the cache (a changed `serverPid` and
//! `forget_instances` clear it), and `get_instance_id` ([`crate::instance`]) fills it; keeping
//! the data here lets both depend on it without depending on each other.

use crate::plugin::Plugin;
use crate::rpc::RpcObject;
use crate::version::KongVersion;
use parking_lot::Mutex;
use rmpv::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// One cached instance.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    pub(crate) id: Value,
    /// The config `__seq__` the instance was started with.
    pub(crate) seq: u64,
    pub(crate) plugin_name: String,
    /// The RPC object it was started through (see [`InstanceCache::drop_bound_to`]).
    pub(crate) rpc: Arc<RpcObject>,
}

/// `running_instances`: plugin id → instance.
#[derive(Debug, Default)]
pub(crate) struct InstanceCache {
    entries: Mutex<HashMap<String, CacheEntry>>,
}

impl InstanceCache {
    pub(crate) fn get(&self, plugin_id: &str) -> Option<CacheEntry> {
        self.entries.lock().get(plugin_id).cloned()
    }

    /// The cached instance id of `plugin_id` if it was started with config `seq`.
    pub(crate) fn current_id(&self, plugin_id: &str, seq: u64) -> Option<Value> {
        self.entries.lock().get(plugin_id).filter(|e| e.seq == seq).map(|e| e.id.clone())
    }

    pub(crate) fn insert(&self, plugin_id: &str, entry: CacheEntry) {
        self.entries.lock().insert(plugin_id.to_string(), entry);
    }

    pub(crate) fn remove(&self, plugin_id: &str) {
        self.entries.lock().remove(plugin_id);
    }

    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    /// A changed `serverPid`: drop everything started through that RPC object.
    pub(crate) fn drop_bound_to(&self, rpc: &Arc<RpcObject>) {
        self.entries.lock().retain(|_, e| !Arc::ptr_eq(&e.rpc, rpc));
    }

    /// Kong's `reset_instance` after `no plugin instance`.
    pub(crate) fn reset(&self, version: KongVersion, plugin: &Plugin) {
        let mut entries = self.entries.lock();
        match version {
            // ≤3.4: only the failing entry.
            KongVersion::V3_4 => {
                entries.remove(plugin.id());
            }
            // ≥3.7: every instance of that plugin name.
            KongVersion::V3_9 => entries.retain(|_, e| e.plugin_name != plugin.name()),
        }
    }
}
