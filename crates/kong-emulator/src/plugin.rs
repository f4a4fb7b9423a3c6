//! Plugin configurations as Kong holds them (docs/protocol.md#startinstance, docs/protocol.md#instance-cache-in-kong).
//!
//! A [`Plugin`] is one row of Kong's `plugins` entity: a name, a config and its scoping.
//! Kong caches the server-side instance id per plugin id together with the config's
//! `__seq__`; when the config is rebuilt (new `__seq__`) the next event sends
//! `StartInstance` with the new config and then `CloseInstance` for the old id. The config
//! travels as cjson text with the metadata keys Kong injects (`__seq__`, `__key__`,
//! `__plugin_id`, `route_id`, … and `__ws_id` on 3.9).

use crate::version::KongVersion;
use parking_lot::Mutex;
use std::sync::Arc;

/// How to create a [`Plugin`]: name, config and optional explicit ids.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub config: serde_json::Value,
    /// Plugin entity id (`__plugin_id`, the cache key); random when `None`.
    pub id: Option<String>,
    /// `route_id` injected into the config; a random one when `None` and `service_id` and
    /// `global` are unset.
    pub route_id: Option<String>,
    pub service_id: Option<String>,
    /// A global plugin: no route/service id.
    pub global: bool,
    /// `plugin_instance_name` (Kong ≥3.2), if any.
    pub instance_name: Option<String>,
}

impl PluginSpec {
    pub fn new(name: impl Into<String>, config: serde_json::Value) -> Self {
        PluginSpec {
            name: name.into(),
            config,
            id: None,
            route_id: None,
            service_id: None,
            global: false,
            instance_name: None,
        }
    }
}

#[derive(Debug)]
struct Current {
    config: serde_json::Value,
    seq: u64,
}

#[derive(Debug)]
struct PluginInner {
    name: String,
    id: String,
    route_id: Option<String>,
    service_id: Option<String>,
    instance_name: Option<String>,
    current: Mutex<Current>,
    /// Serialises instance creation for this plugin (Kong's "claim" in `get_instance_id`).
    start_lock: tokio::sync::Mutex<()>,
}

/// A plugin configuration as Kong holds it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

impl Plugin {
    pub(crate) fn new(spec: PluginSpec, seq: u64) -> Self {
        let route_id = match (&spec.route_id, &spec.service_id, spec.global) {
            (Some(r), _, _) => Some(r.clone()),
            (None, None, false) => Some(uuid_like()),
            _ => None,
        };
        Plugin {
            inner: Arc::new(PluginInner {
                name: spec.name,
                id: spec.id.unwrap_or_else(uuid_like),
                route_id,
                service_id: spec.service_id,
                instance_name: spec.instance_name,
                current: Mutex::new(Current { config: spec.config, seq }),
                start_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The plugin entity id (`__plugin_id`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn route_id(&self) -> Option<&str> {
        self.inner.route_id.as_deref()
    }

    pub fn service_id(&self) -> Option<&str> {
        self.inner.service_id.as_deref()
    }

    /// The current config (without Kong's injected keys).
    pub fn config(&self) -> serde_json::Value {
        self.inner.current.lock().config.clone()
    }

    /// The current `__seq__`.
    pub fn seq(&self) -> u64 {
        self.inner.current.lock().seq
    }

    /// Serialises instance creation for this plugin (Kong's "claim" in `get_instance_id`).
    pub(crate) fn start_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.start_lock
    }

    pub(crate) fn replace_config(&self, config: serde_json::Value, seq: u64) {
        *self.inner.current.lock() = Current { config, seq };
    }

    /// The `Config` string of `plugin.StartInstance`: the config plus Kong's keys, as cjson
    /// text. Returns the seq it was built with.
    pub fn config_json(&self, version: KongVersion, ws_id: &str) -> (String, u64) {
        let (mut config, seq) = {
            let current = self.inner.current.lock();
            (current.config.clone(), current.seq)
        };
        if let serde_json::Value::Object(map) = &mut config {
            let mut put = |k: &str, v: serde_json::Value| {
                map.insert(k.to_string(), v);
            };
            if let Some(r) = &self.inner.route_id {
                put("route_id", r.as_str().into());
            }
            if let Some(s) = &self.inner.service_id {
                put("service_id", s.as_str().into());
            }
            let key = format!(
                "plugins:{}:{}:{}::{}",
                self.inner.name,
                self.inner.route_id.as_deref().unwrap_or(""),
                self.inner.service_id.as_deref().unwrap_or(""),
                ws_id
            );
            put("__key__", key.into());
            put("__seq__", seq.into());
            put("__plugin_id", self.inner.id.as_str().into());
            if let Some(n) = &self.inner.instance_name {
                put("plugin_instance_name", n.as_str().into());
            }
            if version == KongVersion::V3_9 {
                put("__ws_id", ws_id.into());
            }
        }
        (crate::json::cjson_encode(&config), seq)
    }
}

/// A random UUID-shaped string (version-4 layout).
pub fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0FFF,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3FFF) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}
