//! One plugin event, driven as Kong's `bridge_loop` and `handle_event` drive it (§5.1, §7.2).
//!
//! `HandleEvent` starts the event; every `{Method, Args}` the server asks for is executed
//! against the [`Request`] and answered with the `plugin.Step*` method Kong would choose,
//! until the server answers `"ret"`. `kong.response.exit/error` end the event without any
//! further message; a PDK function that raises abandons it. An RPC error containing
//! `no plugin instance` drops the cached instance and replays the whole event.

use crate::error::Error;
use crate::kong::Kong;
use crate::pdk::{self, Exit, PdkContext, PdkOutcome};
use crate::plugin::Plugin;
use crate::request::{LogSource, Request};
use crate::wire::{self, StepData};
use rmpv::Value;

/// What happened during one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventOutcome {
    /// The response recorded by `kong.response.exit`/`error`, if the plugin ended the request.
    pub exit: Option<Exit>,
    /// PDK method names the server called, in order (across retries).
    pub pdk_calls: Vec<String>,
    /// RPCs sent for this event, including StartInstance/CloseInstance and retries.
    pub rpcs: usize,
    /// Set when a PDK call raised a Lua error: Kong abandons the event and, in access,
    /// answers 500 "An unexpected error occurred".
    pub abandoned: Option<String>,
    /// How many times the event was started (>1 after `no plugin instance`).
    pub attempts: usize,
}

impl EventOutcome {
    /// True when the request goes on to the next plugin / upstream.
    pub fn continues(&self) -> bool {
        self.exit.is_none() && self.abandoned.is_none()
    }
}

impl Kong {
    /// Runs `phase` of `plugin` for `req`. `Err` means the event failed the way Kong sees an
    /// RPC failure; see [`Error::kong_effect`](crate::Error::kong_effect) for what Kong
    /// would do next.
    pub async fn run_event(&self, plugin: &Plugin, phase: &str, req: &mut Request) -> Result<EventOutcome, Error> {
        let mut outcome = EventOutcome::default();
        let mut last = None;
        for _ in 0..self.inner.max_event_attempts {
            outcome.attempts += 1;
            match self.try_event(plugin, phase, req, &mut outcome).await {
                Err(e) if e.is_no_plugin_instance() => {
                    req.log(LogSource::Kong, "warn", e.to_string());
                    self.inner.instances.reset(self.inner.version, plugin);
                    last = Some(e);
                }
                Err(e) => {
                    req.log(LogSource::Kong, "err", e.to_string());
                    return Err(e);
                }
                Ok(()) => return Ok(outcome),
            }
        }
        Err(Error::InstanceRetriesExhausted {
            plugin: plugin.name().to_string(),
            attempts: outcome.attempts,
            last: last.map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    async fn try_event(
        &self,
        plugin: &Plugin,
        phase: &str,
        req: &mut Request,
        outcome: &mut EventOutcome,
    ) -> Result<(), Error> {
        let rpc = self.rpc_object(plugin.name());
        let (instance_id, start_rpcs) = self.instance_id(plugin, &rpc).await?;
        outcome.rpcs += start_rpcs;

        let param = Value::Map(vec![
            (Value::from("InstanceId"), instance_id),
            (Value::from("EventName"), Value::from(phase)),
        ]);
        outcome.rpcs += 1;
        let mut step = self
            .call_on(&rpc, "plugin.HandleEvent", |msgid| wire::encode_request(msgid, "plugin.HandleEvent", &param))
            .await?;
        // Kong keeps the EventId of the HandleEvent answer for the whole event.
        let event_id = wire::map_get(&step, "EventId").cloned().unwrap_or(Value::Nil);
        loop {
            let (method, args) = match parse_step(&step)? {
                Step::Ret => return Ok(()),
                Step::Call { method, args } => (method, args),
            };
            outcome.pdk_calls.push(method.clone());
            let mut ctx = PdkContext { req, version: self.inner.version, node_id: &self.inner.node_id };
            let data: StepData = match pdk::call(&mut ctx, &method, args) {
                PdkOutcome::Return(data) => data,
                PdkOutcome::Exit(exit) => {
                    outcome.exit = Some(exit);
                    return Ok(());
                }
                PdkOutcome::Throw(message) => {
                    req.log(LogSource::Kong, "err", format!("{method}: {message}"));
                    outcome.abandoned = Some(format!("{method}: {message}"));
                    return Ok(());
                }
            };
            outcome.rpcs += 1;
            step = self.call_step(&rpc, pdk::step_method(&method), &event_id, &data).await?;
        }
    }
}

enum Step {
    Ret,
    Call { method: String, args: Option<Value> },
}

/// Reads a step result `{EventId, Data}`: `Data == "ret"` or `{Method, Args}`. Anything
/// else would be a Lua error in Kong's loop (indexing a non-table).
fn parse_step(step: &Value) -> Result<Step, Error> {
    let data = match step {
        Value::Map(_) => wire::map_get(step, "Data"),
        other => return Err(Error::Protocol(format!("step result is not a table: {other}"))),
    };
    match data {
        Some(Value::String(s)) if s.as_bytes() == b"ret" => Ok(Step::Ret),
        Some(d @ Value::Map(_)) => match wire::map_get(d, "Method") {
            Some(Value::String(m)) => Ok(Step::Call {
                method: String::from_utf8_lossy(m.as_bytes()).into_owned(),
                args: wire::map_get(d, "Args").cloned(),
            }),
            other => Err(Error::Protocol(format!("step Data.Method is not a string: {other:?}"))),
        },
        other => Err(Error::Protocol(format!("step Data is neither \"ret\" nor {{Method, Args}}: {other:?}"))),
    }
}
