//! ⑥ Serves one parsed RPC against the registry. Domain failures are [`DispatchError`]s;
//! [`crate::rpc::RpcError::wire_text`] turns them into the strings Kong sees (e.g.
//! `no plugin instance 7`, which makes Kong recreate the instance and retry the event,
//! docs/protocol.md#errors).

use std::sync::Arc;

use rmpv::Value;

use crate::event::{self, EventError};
use crate::instance::Instance;
use crate::pdk::KongError;
use crate::plugins::Phase;
use crate::registry::Registry;
use crate::rpc::value::{from_json, map};
use crate::rpc::{Method, Reply};

/// Why a well-formed RPC could not be served. The texts are Kong's (see [`crate::rpc::error`]).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Kong then recreates the instance and retries the event (docs/protocol.md#errors).
    #[error("no plugin instance {id}")]
    NoInstance { id: u64 },
    #[error("plugin.HandleEvent: missing InstanceId (did StartInstance fail?)")]
    MissingInstanceId,
    #[error("plugin {plugin} does not handle phase {phase}")]
    PhaseNotHandled { plugin: &'static str, phase: String },
    #[error("no plugin named {name}")]
    UnknownPlugin { name: String },
    /// `reason` is the plugin's start error as text: it names the bad field(s).
    #[error("{plugin}: invalid config: {reason}")]
    BadConfig { plugin: String, reason: String },
    #[error(transparent)]
    Event(#[from] EventError),
    /// The test clock refused to move (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[error("{0}")]
    Clock(String),
}

impl DispatchError {
    /// Bounded label for the `rpc_errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            DispatchError::NoInstance { .. } => "no_instance",
            DispatchError::MissingInstanceId | DispatchError::PhaseNotHandled { .. } => "bad_request",
            DispatchError::UnknownPlugin { .. } => "unknown_plugin",
            DispatchError::BadConfig { .. } => "bad_config",
            DispatchError::Event(_) => "no_event",
            #[cfg(feature = "test-hooks")]
            DispatchError::Clock(_) => "bad_request",
        }
    }
}

pub async fn dispatch(registry: &Registry, method: Method) -> Result<Reply, DispatchError> {
    let value = match method {
        Method::StartInstance { name, config } => start_instance(registry, &name, &config),
        Method::CloseInstance { id } => {
            let instance = registry.remove_instance(id).ok_or(DispatchError::NoInstance { id })?;
            tracing::info!(plugin = instance.spec.name, instance_id = id, "instance closed");
            Ok(instance.status())
        }
        Method::HandleEvent { instance_id, event_name } => {
            let id = instance_id.ok_or(DispatchError::MissingInstanceId)?;
            let instance = registry.instance(id).ok_or(DispatchError::NoInstance { id })?;
            let Some(phase) = Phase::parse(&event_name).filter(|p| instance.spec.phases.contains(p)) else {
                return Err(DispatchError::PhaseNotHandled { plugin: instance.spec.name, phase: event_name });
            };
            return Ok(Reply::Step(event::start(registry, instance, phase).await));
        }
        Method::Step { event_id, data } => return Ok(Reply::Step(event::step(registry, event_id, Ok(data)).await?)),
        Method::StepError { event_id, message } => {
            return Ok(Reply::Step(event::step(registry, event_id, Err(KongError { message })).await?))
        }
        Method::GetPluginInfo { name } => match registry.plugin(&name) {
            Some(spec) => Ok(from_json(&spec.info())),
            None => Err(DispatchError::UnknownPlugin { name }),
        },
        Method::GetStatus => Ok(status(registry)),
        Method::InstanceStatus { id } => {
            registry.instance(id).map(|i| i.status()).ok_or(DispatchError::NoInstance { id })
        }
        #[cfg(feature = "test-hooks")]
        Method::AdvanceClock { seconds } => {
            let clock = &registry.services().clock;
            clock.advance(std::time::Duration::from_secs(seconds)).map_err(|e| DispatchError::Clock(e.to_string()))?;
            Ok(Value::from(clock.unix_now()))
        }
    };
    value.map(Reply::Value)
}

fn start_instance(registry: &Registry, name: &str, config: &[u8]) -> Result<Value, DispatchError> {
    let spec = registry.plugin(name).ok_or_else(|| DispatchError::UnknownPlugin { name: name.to_owned() })?;
    let plugin = (spec.start)(config, registry.services()).map_err(|e| {
        tracing::warn!(plugin = name, "rejected config: {e}");
        DispatchError::BadConfig { plugin: name.to_owned(), reason: e.to_string() }
    })?;
    // Kept for status calls only; the plugin parsed its own copy. Secrets are blanked.
    let mut shown: serde_json::Value = serde_json::from_slice(config).unwrap_or_default();
    for field in spec.fields.iter().filter(|f| f.encrypted) {
        if let Some(v) = shown.get_mut(field.name).filter(|v| !v.is_null()) {
            *v = serde_json::Value::from("<redacted>");
        }
    }
    let instance = Arc::new(Instance::new(registry.next_instance_id(), spec, plugin, shown));
    registry.add_instance(instance.clone());
    tracing::info!(plugin = name, instance_id = instance.id, "instance started");
    Ok(instance.status())
}

/// `{Pid, Plugins: {name: {Name, Instances, …}}}`, mirroring the reference servers
/// (docs/protocol.md#methods).
fn status(registry: &Registry) -> Value {
    let instances = registry.instances();
    let plugins = registry
        .plugins()
        .iter()
        .map(|spec| {
            let n = instances.iter().filter(|i| i.spec.name == spec.name).count();
            (Value::from(spec.name), map([("Name", Value::from(spec.name)), ("Instances", Value::from(n))]))
        })
        .collect();
    map([
        ("Pid", Value::from(std::process::id())),
        ("Plugins", Value::Map(plugins)),
        ("Events", Value::from(registry.live_events())),
        ("ParkedEvents", Value::from(registry.parked_events())),
        ("ReapedEvents", Value::from(registry.reaped_events())),
    ])
}
