//! `ghasi-test-script`: a test-only plugin that performs the PDK calls its config lists.
//!
//! The core's tests drive the real binary, so the plugin they need must live in it; this
//! one exists only in builds with the `test-hooks` feature (test builds and the benchmark's
//! server, never a release), and is served only when the environment has
//! `GHASI_TEST_PLUGINS=1`. It also serves as the benchmark's no-op floor: the same PDK calls
//! as a real plugin with none of the plugin work.
//!
//! Config: `{"steps": [step, …]}` where a step is one of
//! `{"call": "kong.x.y", "args": [...]}`, `{"read": "<header>"}` (get_header, remembered as
//! `$read`), `{"set_headers": {"Name": "value or $read", "Gone": null}}`,
//! `{"exit": 403, "body": "..."}`, `{"sleep_ms": 10}`, `{"fail": "message"}`, `{"panic": "message"}`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::{Phase, Plugin, PluginSpec};
use crate::pdk::service::HeaderChanges;
use crate::pdk::Pdk;

pub static SPEC: PluginSpec = PluginSpec {
    name: "ghasi-test-script",
    priority: 1000,
    version: "0.1.0",
    phases: &[Phase::Access, Phase::Log],
    fields: &[],
    start,
};

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    log_steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Step {
    Call {
        call: String,
        #[serde(default)]
        args: Vec<serde_json::Value>,
    },
    Read {
        read: String,
    },
    SetHeaders {
        set_headers: serde_json::Map<String, serde_json::Value>,
    },
    Exit {
        exit: u16,
        #[serde(default)]
        body: String,
    },
    Sleep {
        sleep_ms: u64,
    },
    Fail {
        fail: String,
    },
    Panic {
        panic: String,
    },
}

pub struct Script {
    access: Vec<Step>,
    log: Vec<Step>,
}

fn start(config: &[u8], _: &crate::services::Services) -> Result<Plugin, super::StartError> {
    let config: Config =
        serde_json::from_slice(config).map_err(|e| super::StartError::field("steps", e.to_string()))?;
    Ok(Plugin::Script(Arc::new(Script { access: config.steps, log: config.log_steps })))
}

impl Script {
    pub async fn run(&self, phase: Phase, pdk: &mut Pdk) -> anyhow::Result<()> {
        let steps = match phase {
            Phase::Access => &self.access,
            Phase::Log => &self.log,
        };
        let mut read: Option<String> = None;
        for step in steps {
            match step {
                Step::Call { call, args } => {
                    pdk.call_json(call, args).await.context("script call")?;
                }
                Step::Read { read: name } => {
                    read = pdk.request().get_header(name).await?.map(|b| String::from_utf8_lossy(&b).into_owned());
                }
                Step::SetHeaders { set_headers } => {
                    let mut changes = HeaderChanges::new();
                    for (name, value) in set_headers {
                        match value.as_str() {
                            Some("$read") => changes.set(name, read.as_deref().unwrap_or("")),
                            Some(v) => changes.set(name, v),
                            None => changes.remove(name),
                        };
                    }
                    pdk.service_request().set_headers(changes).await?;
                }
                Step::Exit { exit, body } => {
                    pdk.response().exit(*exit, body.as_bytes(), &[]).await?;
                    return Ok(());
                }
                Step::Sleep { sleep_ms } => tokio::time::sleep(Duration::from_millis(*sleep_ms)).await,
                Step::Fail { fail } => anyhow::bail!("{fail}"),
                Step::Panic { panic } => panic!("{panic}"),
            }
        }
        Ok(())
    }
}
