//! Errors of the emulated Kong side, classified by what real Kong would do about them.
//!
//! Kong reacts to plugin-server failures in two ways (docs/protocol.md#errors): most RPC
//! errors are logged and the plugin is skipped (the request continues, "fail open"), while
//! protocol violations and a failed `StartInstance` raise a Lua error (HTTP 500 in access).
//! [`Error::kong_effect`] tells callers which one applies.

use std::path::PathBuf;

/// What Kong does with a failed plugin event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KongEffect {
    /// `kong.log.err(err)`; the plugin is skipped and the request continues.
    SkipPlugin,
    /// A Lua error escapes the plugin: 500 "An unexpected error occurred" in access.
    LuaError,
}

/// A failure while playing Kong's side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ngx.socket.connect` failed (Kong logs `trying to connect: <err>`).
    #[error("trying to connect to {}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },

    /// A socket write/read error.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    /// EOF or read timeout before the first byte of a response (Kong's error string `no data`).
    #[error("no data (waiting for the {method} response)")]
    NoData { method: String },

    /// What would be a Lua assert/error in Kong's RPC code: wrong message type, msgid
    /// mismatch, non-string error value, undecodable bytes, malformed step result.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// The server answered with a non-nil error element.
    #[error("{method} failed: {message}")]
    Rpc { method: String, message: String },

    /// Kong 3.1–3.8 only: the worker's readiness probe never reached the server (it probes
    /// the socket at worker start); `get_instance_id` answers "not ready" (or the probe's
    /// socket error) instead of starting an instance, and the plugin is skipped.
    #[error("plugin server is not ready, {plugin} will not be executed in this request: {source}")]
    NotReady { plugin: String, source: Box<Error> },

    /// `plugin.StartInstance` failed; Kong ≥3.1 raises (500 in access).
    #[error("starting instance of {plugin}: {source}")]
    StartInstance { plugin: String, source: Box<Error> },

    /// The server kept answering `no plugin instance` although Kong re-created the instance
    /// each time (Kong retries forever; the emulator gives up).
    #[error("`no plugin instance` after {attempts} attempts for plugin {plugin}: {last}")]
    InstanceRetriesExhausted { plugin: String, attempts: usize, last: String },
}

impl Error {
    /// What real Kong would do after this error in the access phase.
    pub fn kong_effect(&self) -> KongEffect {
        match self {
            Error::Connect { .. } | Error::Io { .. } | Error::NoData { .. } | Error::Rpc { .. } => {
                KongEffect::SkipPlugin
            }
            Error::InstanceRetriesExhausted { .. } | Error::NotReady { .. } => KongEffect::SkipPlugin,
            Error::Protocol(_) | Error::StartInstance { .. } => KongEffect::LuaError,
        }
    }

    /// The server's error string, when the server answered with one.
    pub fn rpc_message(&self) -> Option<&str> {
        match self {
            Error::Rpc { message, .. } => Some(message),
            Error::StartInstance { source, .. } => source.rpc_message(),
            _ => None,
        }
    }

    /// Kong's test for a stale instance id: `err:lower()` contains `no plugin instance`.
    pub fn is_no_plugin_instance(&self) -> bool {
        matches!(self, Error::Rpc { message, .. } if message.to_lowercase().contains("no plugin instance"))
    }
}
