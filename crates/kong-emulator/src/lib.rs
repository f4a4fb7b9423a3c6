//! Kong emulator: plays Kong's side of the "MsgPack:1" external plugin-server protocol.
//!
//! Kong itself cannot run where this project is built and tested, so this crate reproduces
//! what a Kong worker does on the plugin-server socket, byte for byte where it matters
//! (docs/protocol.md). It has two parts, and the dependency goes one way only:
//!
//! * **The protocol client** (always built): [`Kong`], one emulated nginx worker, with
//!   lua-MessagePack encoding ([`wire`]), the cosocket keepalive pool, per-RPC-object msgids,
//!   the instance cache with `StartInstance`/`CloseInstance` and `no plugin instance`
//!   recovery, and the event loop that executes PDK calls ([`pdk`]) against an in-memory
//!   [`Request`]. Its modules, top-down: `event` (one plugin event) → `instance`
//!   (`get_instance_id`) → `kong` (the worker and its `Rpc:call`) → `instance_cache`, `plugin`,
//!   `rpc`, `pool` → `connection` → [`wire`]; `pdk` → [`json`], `request`, [`headers`];
//!   `version` and `error` are leaves.
//! * **The HTTP front** (cargo feature `front`, on by default): `front`, a minimal Kong proxy
//!   reading decK YAML (routes, the `acl` guard, vault references, plugin chains) that drives the
//!   client, and `echo`, an upstream that answers with what it received. The `kong-emulator`
//!   binary serves both for local runs and benchmarks. Nothing in the client uses them: build
//!   with `--no-default-features` for the client alone (no axum, reqwest, YAML or regex).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kong_emulator::Error> {
//! use kong_emulator::{Kong, Request};
//! let kong = Kong::new("/tmp/ghasi.sock");
//! let plugin = kong.plugin("ghasi-api-key-lookup", serde_json::json!({"auth_service_url": "http://127.0.0.1:8081"}));
//! let mut req = Request::new("GET", "/v1/messages").with_header("x-api-key", "k1");
//! let outcome = kong.run_event(&plugin, "access", &mut req).await?;
//! assert!(outcome.exit.is_none());
//! # Ok(()) }
//! ```

// ---- the protocol client ----------------------------------------------------------------
mod connection;
mod error;
mod event;
pub mod headers;
mod instance;
mod instance_cache;
pub mod json;
mod kong;
pub mod pdk;
mod plugin;
mod pool;
mod request;
mod rpc;
mod version;
pub mod wire;

pub use connection::RawConnection;
pub use error::{Error, KongEffect};
pub use event::EventOutcome;
pub use headers::{HeaderLine, HeaderMap};
pub use kong::{Kong, KongBuilder};
pub use pdk::Exit;
pub use plugin::{uuid_like, Plugin, PluginSpec};
pub use pool::PoolPolicy;
pub use request::{LogLine, LogSource, Request};
pub use rmpv::Value;
pub use version::KongVersion;

// ---- the HTTP front (feature `front`): uses the client, never the other way round ------
#[cfg(feature = "front")]
pub mod echo;
#[cfg(feature = "front")]
pub mod front;
