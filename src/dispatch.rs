//! ⑥ Serves one parsed RPC against the registry. The one place where domain failures
//! become the error strings Kong sees (e.g. `no plugin instance 7`, which makes Kong
//! recreate the instance and retry the event, docs/protocol.md#errors).

use std::sync::Arc;

use rmpv::Value;

use crate::event;
use crate::instance::Instance;
use crate::plugins::Phase;
use crate::registry::Registry;
use crate::rpc::value::{from_json, map};
use crate::rpc::{Method, Reply};

/// An RPC failure: the text Kong sees, and a bounded kind for the `rpc_errors` metric.
#[derive(Debug)]
pub struct RpcError {
    pub kind: &'static str,
    pub message: String,
}

impl RpcError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        RpcError { kind, message: message.into() }
    }
}

pub async fn dispatch(registry: &Registry, method: Method) -> Result<Reply, RpcError> {
    let value = match method {
        Method::StartInstance { name, config } => start_instance(registry, &name, &config),
        Method::CloseInstance { id } => {
            let instance = registry.remove_instance(id).ok_or_else(|| no_instance(id))?;
            tracing::info!(plugin = instance.spec.name, instance_id = id, "instance closed");
            Ok(instance.status())
        }
        Method::HandleEvent { instance_id, event_name } => {
            let id = instance_id.ok_or_else(|| {
                RpcError::new("bad_request", "plugin.HandleEvent: missing InstanceId (did StartInstance fail?)")
            })?;
            let instance = registry.instance(id).ok_or_else(|| no_instance(id))?;
            let phase = Phase::parse(&event_name).filter(|p| instance.spec.phases.contains(p)).ok_or_else(|| {
                RpcError::new(
                    "bad_request",
                    format!("plugin {} does not handle phase {event_name}", instance.spec.name),
                )
            })?;
            return Ok(Reply::Step(event::start(registry, instance, phase).await));
        }
        Method::Step { event_id, data } => {
            return event::step(registry, event_id, Ok(data)).await.map(Reply::Step).map_err(no_event)
        }
        Method::StepError { event_id, message } => {
            return event::step(registry, event_id, Err(message)).await.map(Reply::Step).map_err(no_event)
        }
        Method::GetPluginInfo { name } => registry
            .plugin(&name)
            .map(|spec| from_json(&spec.info()))
            .ok_or_else(|| RpcError::new("unknown_plugin", format!("no plugin named {name}"))),
        Method::GetStatus => Ok(status(registry)),
        Method::InstanceStatus { id } => registry.instance(id).map(|i| i.status()).ok_or_else(|| no_instance(id)),
        Method::AdvanceClock { seconds } => {
            let clock = &registry.services().clock;
            clock.advance(std::time::Duration::from_secs(seconds)).map_err(|e| RpcError::new("bad_request", e))?;
            Ok(Value::from(clock.unix_now()))
        }
    };
    value.map(Reply::Value)
}

fn no_instance(id: u64) -> RpcError {
    RpcError::new("no_instance", format!("no plugin instance {id}"))
}

fn no_event(message: String) -> RpcError {
    RpcError::new("no_event", message)
}

fn start_instance(registry: &Registry, name: &str, config: &[u8]) -> Result<Value, RpcError> {
    let spec =
        registry.plugin(name).ok_or_else(|| RpcError::new("unknown_plugin", format!("no plugin named {name}")))?;
    let plugin = (spec.start)(config, registry.services()).map_err(|e| {
        tracing::warn!(plugin = name, "rejected config: {e}");
        RpcError::new("bad_config", format!("{name}: invalid config: {e}"))
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
