//! Why an RPC gets an error response, by layer, and the one place such an error becomes the
//! text Kong reads.
//!
//! Each layer words its own failures ([`EnvelopeError`] for the envelope, [`MethodError`] for
//! the method and its parameter, [`DispatchError`] for the registry, instances and events);
//! this enum only collects them. Kong matches on some of these texts (`no plugin instance`
//! makes it recreate the instance and retry the event, docs/protocol.md#errors), so they are
//! part of the protocol: the tests below pin every one.

use crate::dispatch::DispatchError;

use super::{EnvelopeError, MethodError};

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The envelope was wrong but its msgid readable (otherwise the connection closes).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Method(#[from] MethodError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
}

impl RpcError {
    /// The error element of the response, `[1, msgid, <this>, nil]`.
    pub fn wire_text(&self) -> String {
        self.to_string()
    }

    /// Bounded label for the `rpc_errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Envelope(_) => "bad_envelope",
            RpcError::Method(_) => "bad_request",
            RpcError::Dispatch(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventError;
    use crate::rpc::method::{FieldType, Parameter};

    /// Every error text Kong can receive, as Kong and the integration tests expect it.
    #[test]
    fn every_layer_words_its_errors_as_kong_expects() {
        let method = |m: &str| m.to_owned();
        let cases: Vec<(RpcError, &str, &str)> = vec![
            (EnvelopeError::NotAnArray.into(), "RPC message is not an array", "bad_envelope"),
            (EnvelopeError::NotFourElements.into(), "RPC request must be a 4-element array", "bad_envelope"),
            (EnvelopeError::BadMsgid.into(), "RPC msgid is not an unsigned integer", "bad_envelope"),
            (EnvelopeError::NotARequest.into(), "only RPC requests (type 0) are accepted", "bad_envelope"),
            (EnvelopeError::MethodNotUtf8.into(), "RPC method is not UTF-8", "bad_envelope"),
            (EnvelopeError::MethodNotAString.into(), "RPC method is not a string", "bad_envelope"),
            (EnvelopeError::ParamsNotAnArray.into(), "RPC params are not an array", "bad_envelope"),
            (
                MethodError::Unsupported { method: method("plugin.Frobnicate") }.into(),
                "method plugin.Frobnicate is not supported",
                "bad_request",
            ),
            (
                MethodError::MissingField {
                    method: method("plugin.StepMultiMap"),
                    field: "EventId",
                    expected: FieldType::Integer,
                }
                .into(),
                "plugin.StepMultiMap: missing integer field EventId",
                "bad_request",
            ),
            (
                MethodError::MissingField {
                    method: method("plugin.StartInstance"),
                    field: "Config",
                    expected: FieldType::String,
                }
                .into(),
                "plugin.StartInstance: missing string field Config",
                "bad_request",
            ),
            (
                MethodError::BadParameter { method: method("plugin.CloseInstance"), expected: Parameter::InstanceId }
                    .into(),
                "plugin.CloseInstance: the parameter must be an instance id",
                "bad_request",
            ),
            (
                MethodError::BadParameter { method: method("plugin.GetPluginInfo"), expected: Parameter::PluginName }
                    .into(),
                "plugin.GetPluginInfo: the parameter must be a plugin name",
                "bad_request",
            ),
            (DispatchError::NoInstance { id: 7 }.into(), "no plugin instance 7", "no_instance"),
            (
                DispatchError::MissingInstanceId.into(),
                "plugin.HandleEvent: missing InstanceId (did StartInstance fail?)",
                "bad_request",
            ),
            (
                DispatchError::PhaseNotHandled { plugin: "ghasi-api-key-lookup", phase: "log".into() }.into(),
                "plugin ghasi-api-key-lookup does not handle phase log",
                "bad_request",
            ),
            (DispatchError::UnknownPlugin { name: "nope".into() }.into(), "no plugin named nope", "unknown_plugin"),
            (
                DispatchError::BadConfig { plugin: "ghasi-jwt".into(), reason: "field 'issuer': required".into() }
                    .into(),
                "ghasi-jwt: invalid config: field 'issuer': required",
                "bad_config",
            ),
            (DispatchError::Event(EventError::NotRunning { event_id: 99 }).into(), "no running event 99", "no_event"),
        ];
        #[cfg(feature = "test-hooks")]
        let cases = {
            let mut cases = cases;
            let refused = "the test clock is disabled (GHASI_TEST_CLOCK is not set)";
            cases.push((DispatchError::Clock(refused.into()).into(), refused, "bad_request"));
            cases
        };
        for (error, text, kind) in cases {
            assert_eq!((error.wire_text().as_str(), error.kind()), (text, kind), "{error:?}");
        }
    }
}
