//! One plugin event, driven as Kong's `bridge_loop` and `handle_event` drive it
//! (docs/protocol.md#step, docs/protocol.md#errors).
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
use crate::rpc::RpcResult;
use crate::wire::{self, RawStep, StepData};
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

        outcome.rpcs += 1;
        let (packed_event_id, mut step) = self
            .call_on(
                &rpc,
                "plugin.HandleEvent",
                |msgid, out| wire::write_handle_event(msgid, &instance_id, phase, out),
                handle_event_result,
            )
            .await??;
        loop {
            let (method, args) = match step {
                Step::Ret => return Ok(()),
                Step::Call { method, args } => (method, args),
            };
            let mut ctx = PdkContext { req, version: self.inner.version, node_id: &self.inner.node_id };
            let pdk_outcome = pdk::call(&mut ctx, &method, args);
            let step_method = pdk::step_method(&method);
            let data: StepData = match pdk_outcome {
                PdkOutcome::Return(data) => data,
                PdkOutcome::Exit(exit) => {
                    outcome.pdk_calls.push(method);
                    outcome.exit = Some(exit);
                    return Ok(());
                }
                PdkOutcome::Throw(message) => {
                    req.log(LogSource::Kong, "err", format!("{method}: {message}"));
                    outcome.abandoned = Some(format!("{method}: {message}"));
                    outcome.pdk_calls.push(method);
                    return Ok(());
                }
            };
            outcome.pdk_calls.push(method);
            outcome.rpcs += 1;
            step = self.call_step(&rpc, step_method, &packed_event_id, &data, step_result).await??;
        }
    }
}

#[derive(Debug, PartialEq)]
enum Step {
    Ret,
    Call { method: String, args: Option<Value> },
}

/// The `HandleEvent` answer: Kong keeps its `EventId` (packed here once, as the Lua value it
/// sends back with every Step of the event) and runs the first step.
fn handle_event_result(result: RpcResult<'_>) -> Result<(Vec<u8>, Step), Error> {
    let mut packed = Vec::with_capacity(16);
    if let RpcResult::Raw(bytes) = result {
        if let (Some(id), Some(step)) = (wire::raw_map_get(bytes, b"EventId"), wire::raw_step(bytes)) {
            wire::encode(&id.map(wire::decode_raw).unwrap_or(Value::Nil), &mut packed);
            return Ok((packed, Step::from_raw(step)));
        }
    }
    let value = result.into_value();
    wire::encode(wire::map_get(&value, "EventId").unwrap_or(&Value::Nil), &mut packed);
    Ok((packed, parse_step(&value)?))
}

/// A Step answer: the next step.
fn step_result(result: RpcResult<'_>) -> Result<Step, Error> {
    if let RpcResult::Raw(bytes) = result {
        if let Some(step) = wire::raw_step(bytes) {
            return Ok(Step::from_raw(step));
        }
    }
    parse_step(&result.into_value())
}

impl Step {
    fn from_raw(step: RawStep<'_>) -> Step {
        match step {
            RawStep::Ret => Step::Ret,
            RawStep::Call { method, args } => {
                Step::Call { method: method.to_string(), args: args.map(wire::decode_raw) }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testgen::{encode_any, Rng};

    /// A step result as a server might shape it: the usual keys in any order, with odd
    /// types now and then.
    fn step_like(rng: &mut Rng) -> Value {
        let method = || -> Vec<Value> {
            vec![
                "kong.request.get_header".into(),
                Value::Binary(b"kong.log.err".to_vec()),
                wire::lua_string(&[0x6B, 0xFF]),
                5.into(),
            ]
        };
        let mut data_entries = Vec::new();
        for _ in 0..rng.below(4) {
            let entry = match rng.below(4) {
                0 => ("Method".into(), method()[rng.below(4) as usize].clone()),
                1 => ("Args".into(), rng.value(2)),
                2 => (Value::Binary(b"Method".to_vec()), "kong.x".into()),
                _ => (rng.value(0), rng.value(1)),
            };
            data_entries.push(entry);
        }
        if rng.below(3) > 0 {
            data_entries.insert(0, ("Method".into(), "kong.request.get_path".into()));
        }
        let data = match rng.below(6) {
            0 => "ret".into(),
            1 => "rets".into(),
            2 => rng.value(1),
            _ => Value::Map(data_entries),
        };
        let mut entries = vec![("EventId".into(), rng.value(1)), ("Data".into(), data)];
        if rng.below(4) == 0 {
            entries.swap(0, 1);
        }
        if rng.below(4) == 0 {
            entries.insert(rng.below(3) as usize, (Value::Binary(b"Data".to_vec()), "ret".into()));
        }
        match rng.below(10) {
            0 => rng.value(1),
            _ => Value::Map(entries),
        }
    }

    fn describe<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn in_place_step_parsing_matches_the_decoded_path() {
        let mut rng = Rng::new(5);
        let mut fast = 0;
        for _ in 0..20_000 {
            let result = step_like(&mut rng);
            let mut frame = vec![0x94, 0x01, 0x2A, 0xC0];
            encode_any(&result, &mut rng, &mut frame);
            let Some(raw) = wire::ok_response_result(&frame, 42) else { panic!("{}", wire::hex(&frame)) };
            let decoded = wire::decode_raw(raw);
            if wire::raw_step(raw).is_some() {
                fast += 1;
            }
            assert_eq!(
                describe(step_result(RpcResult::Raw(raw))),
                describe(step_result(RpcResult::Value(decoded.clone()))),
                "{}",
                wire::hex(&frame)
            );
            assert_eq!(
                describe(handle_event_result(RpcResult::Raw(raw))),
                describe(handle_event_result(RpcResult::Value(decoded))),
                "{}",
                wire::hex(&frame)
            );
        }
        assert!(fast > 5_000, "the fast path is exercised ({fast})");
    }
}
