//! Kong's `get_instance_id`: the server-side instance for a plugin, started on first use and
//! restarted when the config changes (docs/protocol.md#startinstance, docs/protocol.md#instance-cache-in-kong).
//!
//! The cached id is used while its `__seq__` matches the plugin's config; otherwise
//! `StartInstance` goes out with the new config and then `CloseInstance` for the replaced id.
//! Why apart from the cache ([`crate::instance_cache`]): this is an RPC sequence on top of the
//! worker ([`Kong`]), whereas the cache is data the worker itself owns.

use crate::error::Error;
use crate::instance_cache::CacheEntry;
use crate::kong::Kong;
use crate::plugin::Plugin;
use crate::rpc::{RpcObject, RpcResult};
use crate::version::KongVersion;
use crate::wire;
use rmpv::Value;
use std::sync::Arc;

impl Kong {
    /// Kong's `get_instance_id`: the cached id when its seq matches, otherwise
    /// `StartInstance` (and `CloseInstance` of the replaced id). Returns the id and the number
    /// of RPCs it took.
    pub(crate) async fn instance_id(&self, plugin: &Plugin, rpc: &Arc<RpcObject>) -> Result<(Value, usize), Error> {
        let cache = &self.inner.instances;
        if let Some(id) = cache.current_id(plugin.id(), plugin.seq()) {
            return Ok((id, 0));
        }
        let _claim = plugin.start_lock().lock().await;
        let old = cache.get(plugin.id());
        if let Some(entry) = &old {
            if entry.seq == plugin.seq() {
                return Ok((entry.id.clone(), 0));
            }
        }
        let (config, seq) = plugin.config_json(self.inner.version, &self.inner.ws_id);
        let param = Value::Map(vec![
            (Value::from("Name"), Value::from(plugin.name())),
            (Value::from("Config"), Value::from(config)),
        ]);
        let status = self
            .call_on(
                rpc,
                "plugin.StartInstance",
                |msgid, out| wire::write_request(msgid, "plugin.StartInstance", &param, out),
                |r: RpcResult<'_>| r.into_value(),
            )
            .await
            .map_err(|e| {
                // Kong blanked the cached id before the call and removes the whole entry when it
                // fails ("remove claim"): the old id is forgotten, never closed.
                cache.remove(plugin.id());
                let plugin = plugin.name().to_string();
                // Kong 3.4: a worker whose readiness probe never connected does not even try
                // StartInstance (`server_def.ready` is false): the plugin is skipped. Emulated
                // as "no connect ever succeeded and this one failed too".
                if self.inner.version == KongVersion::V3_4
                    && matches!(e, Error::Connect { .. })
                    && !self.inner.pool.ever_connected()
                {
                    return Error::NotReady { plugin, source: Box::new(e) };
                }
                Error::StartInstance { plugin, source: Box::new(e) }
            })?;
        // Kong reads only `Id`; a missing one becomes nil and is sent back as such.
        let id = wire::map_get(&status, "Id").cloned().unwrap_or(Value::Nil);
        cache.insert(
            plugin.id(),
            CacheEntry { id: id.clone(), seq, plugin_name: plugin.name().to_string(), rpc: rpc.clone() },
        );
        let mut rpcs = 1;
        if let Some(old) = old {
            // Errors are ignored: "maybe other thread closed it first".
            let _ = self
                .call_on(
                    rpc,
                    "plugin.CloseInstance",
                    |msgid, out| wire::write_request(msgid, "plugin.CloseInstance", &old.id, out),
                    |_: RpcResult<'_>| (),
                )
                .await;
            rpcs += 1;
        }
        Ok((id, rpcs))
    }
}
