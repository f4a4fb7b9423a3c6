//! `ghasi-api-key-lookup`: resolves a customer API key against auth-service (design.md §3).
//! (Being implemented: the config below is final, the access logic is not there yet.)

pub mod config;

use std::sync::Arc;

use super::{Phase, Plugin, PluginSpec};
use crate::pdk::Pdk;

pub static SPEC: PluginSpec = PluginSpec {
    name: "ghasi-api-key-lookup",
    priority: 1250,
    version: "0.1.0",
    phases: &[Phase::Access],
    fields: config::FIELDS,
    start,
};

pub struct ApiKeyLookup {
    #[allow(dead_code)]
    config: config::Config,
}

fn start(json: &[u8]) -> Result<Plugin, String> {
    let config = config::Config::parse(json)?;
    Ok(Plugin::ApiKey(Arc::new(ApiKeyLookup { config })))
}

impl ApiKeyLookup {
    pub async fn access(&self, _pdk: &mut Pdk) -> anyhow::Result<()> {
        anyhow::bail!("ghasi-api-key-lookup is not implemented yet")
    }
}
