//! ⑤ Interprets a request's method name and parameter (docs/protocol.md#methods).
//!
//! Every method whose name starts with `plugin.Step` is a Step carrying an untyped PDK
//! result (`StepMultiMap`, `StepCredential`, … differ only in how Kong shaped `Data`);
//! `plugin.StepError` (Kong 2.8) reports that the previous PDK call failed.

use rmpv::Value;

use super::value::{self, as_u64};

/// Why a well-formed request names no method we serve, or lacks what its method needs.
/// The texts go back to Kong verbatim; they name the method as Kong spelled it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("method {method} is not supported")]
    Unsupported { method: String },
    #[error("{method}: missing {expected} field {field}")]
    MissingField { method: String, field: &'static str, expected: FieldType },
    #[error("{method}: the parameter must be {expected}")]
    BadParameter { method: String, expected: Parameter },
}

/// The type a parameter-map field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Integer,
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
        })
    }
}

/// What a method with a single scalar parameter expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameter {
    InstanceId,
    PluginName,
}

impl std::fmt::Display for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Parameter::InstanceId => "an instance id",
            Parameter::PluginName => "a plugin name",
        })
    }
}

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
    /// Test builds only (feature `test-hooks`): move the process clock forward (refused
    /// unless `GHASI_TEST_CLOCK=1`). Without the feature the method does not exist.
    #[cfg(feature = "test-hooks")]
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
            #[cfg(feature = "test-hooks")]
            Method::AdvanceClock { .. } => "plugin.GhasiTestAdvanceClock",
        }
    }

    /// Parses `method` with its single parameter.
    pub fn parse(method: &str, mut param: Value) -> Result<Method, MethodError> {
        let missing = |field, expected| MethodError::MissingField { method: method.to_owned(), field, expected };
        let string_field = |param: &Value, field: &'static str| -> Result<String, MethodError> {
            value::get(param, field)
                .and_then(value::bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| missing(field, FieldType::String))
        };
        let id_field = |param: &Value, field: &'static str| -> Result<u64, MethodError> {
            value::get(param, field).and_then(as_u64).ok_or_else(|| missing(field, FieldType::Integer))
        };
        let bad_param = |expected| MethodError::BadParameter { method: method.to_owned(), expected };
        Ok(match method {
            "plugin.StartInstance" => {
                let name = string_field(&param, "Name")?;
                let config = value::get(&param, "Config")
                    .and_then(value::bytes)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| missing("Config", FieldType::String))?;
                Method::StartInstance { name, config }
            }
            "plugin.CloseInstance" => {
                Method::CloseInstance { id: as_u64(&param).ok_or_else(|| bad_param(Parameter::InstanceId))? }
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
                    .ok_or_else(|| bad_param(Parameter::PluginName))?,
            },
            "plugin.GetStatus" => Method::GetStatus,
            "plugin.InstanceStatus" => {
                Method::InstanceStatus { id: as_u64(&param).ok_or_else(|| bad_param(Parameter::InstanceId))? }
            }
            #[cfg(feature = "test-hooks")]
            "plugin.GhasiTestAdvanceClock" => Method::AdvanceClock { seconds: id_field(&param, "Seconds")? },
            other => return Err(MethodError::Unsupported { method: other.to_owned() }),
        })
    }
}
