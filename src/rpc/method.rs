//! ⑤ Interprets a request's method name and parameter (docs/protocol.md#methods).
//!
//! Every method whose name starts with `plugin.Step` is a Step carrying an untyped PDK
//! result (`StepMultiMap`, `StepCredential`, … differ only in how Kong shaped `Data`);
//! `plugin.StepError` (Kong 2.8) reports that the previous PDK call failed.

use rmpv::Value;

use super::value::{self, as_u64};

#[derive(Debug)]
pub enum Method {
    StartInstance {
        name: String,
        config: Vec<u8>,
    },
    CloseInstance {
        id: u64,
    },
    /// `instance_id` is `None` in Kong 2.8/3.0's broken StartInstance-failure path
    /// (docs/protocol.md#startinstance).
    HandleEvent {
        instance_id: Option<u64>,
        event_name: String,
    },
    /// `data` is `None` when the PDK call returned Lua nil (the key is absent).
    Step {
        event_id: u64,
        data: Option<Value>,
    },
    StepError {
        event_id: u64,
        message: String,
    },
    GetPluginInfo {
        name: String,
    },
    GetStatus,
    InstanceStatus {
        id: u64,
    },
    /// Test-only: move the process clock forward (refused unless `GHASI_TEST_CLOCK=1`).
    AdvanceClock {
        seconds: u64,
    },
}

impl Method {
    /// The method's name for logs (every `plugin.Step*` alias is `plugin.Step`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::StartInstance { .. } => "plugin.StartInstance",
            Method::CloseInstance { .. } => "plugin.CloseInstance",
            Method::HandleEvent { .. } => "plugin.HandleEvent",
            Method::Step { .. } => "plugin.Step",
            Method::StepError { .. } => "plugin.StepError",
            Method::GetPluginInfo { .. } => "plugin.GetPluginInfo",
            Method::GetStatus => "plugin.GetStatus",
            Method::InstanceStatus { .. } => "plugin.InstanceStatus",
            Method::AdvanceClock { .. } => "plugin.GhasiTestAdvanceClock",
        }
    }

    /// Parses `method` with its single parameter; the error text goes back to Kong verbatim.
    pub fn parse(method: &str, mut param: Value) -> Result<Method, String> {
        let bad = |what: &str| format!("{method}: {what}");
        let string_field = |param: &Value, key: &str| -> Result<String, String> {
            value::get(param, key)
                .and_then(value::bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| bad(&format!("missing string field {key}")))
        };
        let id_field = |param: &Value, key: &str| -> Result<u64, String> {
            value::get(param, key).and_then(as_u64).ok_or_else(|| bad(&format!("missing integer field {key}")))
        };
        Ok(match method {
            "plugin.StartInstance" => {
                let name = string_field(&param, "Name")?;
                let config = value::get(&param, "Config")
                    .and_then(value::bytes)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| bad("missing string field Config"))?;
                Method::StartInstance { name, config }
            }
            "plugin.CloseInstance" => {
                Method::CloseInstance { id: as_u64(&param).ok_or_else(|| bad("the parameter must be an instance id"))? }
            }
            "plugin.HandleEvent" => Method::HandleEvent {
                instance_id: value::get(&param, "InstanceId").and_then(as_u64),
                event_name: string_field(&param, "EventName")?,
            },
            "plugin.StepError" => Method::StepError {
                event_id: id_field(&param, "EventId")?,
                message: value::get(&param, "Data")
                    .and_then(value::bytes)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            m if m.starts_with("plugin.Step") => Method::Step {
                event_id: id_field(&param, "EventId")?,
                data: value::take(&mut param, "Data").filter(|v| !v.is_nil()),
            },
            "plugin.GetPluginInfo" => Method::GetPluginInfo {
                name: value::bytes(&param)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .ok_or_else(|| bad("the parameter must be a plugin name"))?,
            },
            "plugin.GetStatus" => Method::GetStatus,
            "plugin.InstanceStatus" => Method::InstanceStatus {
                id: as_u64(&param).ok_or_else(|| bad("the parameter must be an instance id"))?,
            },
            "plugin.GhasiTestAdvanceClock" => Method::AdvanceClock { seconds: id_field(&param, "Seconds")? },
            other => return Err(format!("method {other} is not supported")),
        })
    }
}
