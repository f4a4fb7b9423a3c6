//! ⑩ The plugins this server hosts, and what Kong learns about them through `--dump`.
//!
//! Each plugin is a [`PluginSpec`] (name, priority, version, phases, config fields) plus a
//! variant of [`Plugin`], the enum the event calls into (mini-redis `Command` style: no
//! trait objects, no boxing on the hot path).

pub mod api_key;
pub mod identity;
pub mod jwt;
pub mod lru;
pub mod outcome;
pub mod schema;
#[cfg(feature = "test-hooks")]
pub mod script;
pub mod start_error;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::pdk::Pdk;
use crate::services::Services;
pub use start_error::StartError;

/// Kong phases a plugin may declare (docs/protocol.md#handleevent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Access,
    Log,
}

impl Phase {
    pub fn parse(name: &str) -> Option<Phase> {
        match name {
            "access" => Some(Phase::Access),
            "log" => Some(Phase::Log),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Access => "access",
            Phase::Log => "log",
        }
    }
}

/// Static description of one plugin.
pub struct PluginSpec {
    pub name: &'static str,
    pub priority: i64,
    pub version: &'static str,
    pub phases: &'static [Phase],
    /// Config fields: the single source of the `--dump` schema and of validation.
    pub fields: &'static [schema::Field],
    /// Builds an instance from Kong's config JSON, with the process's shared services
    /// (caches, clients, clock); the error names the bad field(s).
    pub start: fn(&[u8], &Services) -> Result<Plugin, StartError>,
}

impl PluginSpec {
    /// One entry of Kong's `query_cmd` output (docs/protocol.md#plugin-discovery-the-dump).
    pub fn info(&self) -> Value {
        json!({
            "Name": self.name,
            "Priority": self.priority,
            "Version": self.version,
            "Phases": self.phases.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "Schema": schema::kong_schema(self.name, self.fields),
        })
    }
}

/// The product's plugins, in the order `--dump` lists them.
pub static PLUGINS: &[&PluginSpec] = &[&jwt::SPEC, &api_key::SPEC];

/// Test-only plugins (feature `test-hooks`), served only when `GHASI_TEST_PLUGINS=1` (see
/// [`script`]).
#[cfg(feature = "test-hooks")]
pub static TEST_PLUGINS: &[&PluginSpec] = &[&script::SPEC];

/// A started instance's plugin logic (shared by every event of the instance).
#[derive(Clone)]
pub enum Plugin {
    ApiKey(Arc<api_key::ApiKeyLookup>),
    Jwt(Arc<jwt::Jwt>),
    #[cfg(feature = "test-hooks")]
    Script(Arc<script::Script>),
}

impl Plugin {
    /// Runs one phase. An `Err` (or a panic) makes the event answer 500 in access.
    pub async fn handle(&self, phase: Phase, pdk: &mut Pdk) -> anyhow::Result<()> {
        match (self, phase) {
            (Plugin::ApiKey(p), Phase::Access) => p.access(pdk).await,
            (Plugin::Jwt(p), Phase::Access) => p.access(pdk).await,
            #[cfg(feature = "test-hooks")]
            (Plugin::Script(p), phase) => p.run(phase, pdk).await,
            (_, Phase::Log) => Ok(()),
        }
    }
}
