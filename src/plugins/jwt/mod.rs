//! `ghasi-jwt`: validates Bearer JWTs against auth-service's JWKS (design.md §4).
//! (Being implemented: the config below is final, the access logic is not there yet.)

pub mod config;

use std::sync::Arc;

use super::{Phase, Plugin, PluginSpec};
use crate::pdk::Pdk;

pub static SPEC: PluginSpec = PluginSpec {
    name: "ghasi-jwt",
    priority: 1450,
    version: "0.1.0",
    phases: &[Phase::Access],
    fields: config::FIELDS,
    start,
};

pub struct Jwt {
    #[allow(dead_code)]
    config: config::Config,
}

fn start(json: &[u8]) -> Result<Plugin, String> {
    let config = config::Config::parse(json)?;
    Ok(Plugin::Jwt(Arc::new(Jwt { config })))
}

impl Jwt {
    pub async fn access(&self, _pdk: &mut Pdk) -> anyhow::Result<()> {
        anyhow::bail!("ghasi-jwt is not implemented yet")
    }
}
