//! A plugin instance: one plugin config as Kong started it (one per config per nginx worker).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rmpv::Value;

use crate::plugins::{Plugin, PluginSpec};
use crate::rpc::value::{from_json, map};

pub struct Instance {
    pub id: u64,
    pub spec: &'static PluginSpec,
    pub plugin: Plugin,
    /// The config as Kong sent it (Kong's own keys included), echoed by status calls.
    pub config: serde_json::Value,
    pub start_time: u64,
    /// Kong route id the config is scoped to (`global` if none): a bounded metrics label.
    pub route: Arc<str>,
}

impl Instance {
    pub fn new(id: u64, spec: &'static PluginSpec, plugin: Plugin, config: serde_json::Value) -> Self {
        let start_time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let route = config
            .get("route_id")
            .and_then(|r| r.as_str())
            .or_else(|| config.get("service_id").and_then(|s| s.as_str()).map(|_| "service"))
            .unwrap_or("global");
        let route: Arc<str> = Arc::from(route);
        Instance { id, spec, plugin, config, start_time, route }
    }

    /// `{Name, Id, Config, StartTime}`: StartInstance's result and InstanceStatus
    /// (docs/protocol.md#startinstance).
    pub fn status(&self) -> Value {
        map([
            ("Name", Value::from(self.spec.name)),
            ("Id", Value::from(self.id)),
            ("Config", from_json(&self.config)),
            ("StartTime", Value::from(self.start_time)),
        ])
    }
}
