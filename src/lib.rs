//! ghasi-plugin-server: a Kong external plugin server ("MsgPack:1") hosting the Ghasi edge's
//! authentication plugins, `ghasi-jwt` and `ghasi-api-key-lookup`.
//!
//! Kong starts the binary (`pluginserver_<name>_start_cmd`), learns the plugins from
//! `--dump`, and talks to it over a Unix socket. The modules follow one request:
//!
//! ```text
//! Kong worker ─ unix socket ─▶ ① server       accept; deal to a single-threaded shard; drain on shutdown
//! bytes                       ▶ ② connection   read until one complete frame; answer on the same connection
//! frame                       ▶ ③ codec        one MessagePack value (size- and depth-capped)
//! rpc message                 ▶ ④ rpc          [0, msgid, "plugin.HandleEvent", [param]]
//! typed call                  ▶ ⑤ rpc::method  Method::HandleEvent { instance_id, event_name }
//! operation                   ▶ ⑥ dispatch     registry lookups; domain errors → Kong's error strings
//! instance / event            ▶ ⑦ registry, ⑧ event   start the phase future, park it at each PDK call
//! plugin                      ▶ ⑩ plugins      access(&mut pdk)
//! PDK call                    ▶ ⑨ pdk          get_header(…) → {Method, Args} leaves as the RPC result
//!   … Kong runs the PDK function and sends plugin.Step (maybe on another connection) → ②…⑥ →
//!   that Step polls the parked event with the value … until "ret" or kong.response.exit.
//! ```

// No unsafe code in the product: everything it needs from the OS comes through std,
// tokio or /proc text.
#![forbid(unsafe_code)]

pub mod buffer_budget;
pub mod clock;
pub mod clock_skew;
pub mod codec;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod event;
pub mod health;
pub mod instance;
pub mod log_file;
pub mod metrics;
pub mod ops;
pub mod pdk;
pub mod plugins;
pub mod probe;
pub mod process_metrics;
pub mod registry;
pub mod revocation;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod trust_roots;
pub mod warn_limiter;

use std::time::Duration;

use config::Settings;
use plugins::{PluginSpec, PLUGINS, TEST_PLUGINS};

/// The plugins this process serves: the product's, plus the test-only ones when
/// `GHASI_TEST_PLUGINS=1`.
pub fn served_plugins() -> Vec<&'static PluginSpec> {
    let mut specs: Vec<&'static PluginSpec> = PLUGINS.to_vec();
    if std::env::var("GHASI_TEST_PLUGINS").as_deref() == Ok("1") {
        specs.extend_from_slice(TEST_PLUGINS);
    }
    specs
}

/// The `--dump` output: a JSON array of plugin-info objects (`kong-protocol.md` §8.1).
pub fn dump(only: Option<&str>) -> Result<String, String> {
    let specs = served_plugins();
    let chosen: Vec<_> = match only {
        Some(name) => {
            let spec = specs.iter().find(|s| s.name == name).ok_or_else(|| {
                let known: Vec<_> = specs.iter().map(|s| s.name).collect();
                format!("unknown plugin {name:?}; this server provides {}", known.join(", "))
            })?;
            vec![spec.info()]
        }
        None => specs.iter().map(|s| s.info()).collect(),
    };
    Ok(serde_json::to_string(&chosen).expect("plugin info is valid JSON"))
}

/// Binds the socket and serves until shutdown is requested.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    if std::env::var("GHASI_TEST_CLOCK").as_deref() == Ok("1") {
        clock::enable_test_mode();
        tracing::warn!("GHASI_TEST_CLOCK=1: the test clock RPC is enabled; never use this in production");
    }
    plugins::api_key::cache::set_positive_capacity(settings.api_key_cache_entries);
    let revocation = revocation::Subscription::from_settings(
        settings.revocation_redis_url.as_deref(),
        &settings.revocation_channel,
    )?;
    let registry = registry::Registry::new(served_plugins(), Duration::from_secs(settings.event_timeout_secs));
    let ops_listener = match settings.metrics_listen {
        Some(addr) => Some(ops::bind(addr).await?),
        None => None,
    };
    let shutdown = shutdown::requested()?;
    let listener = server::bind(&settings.socket, settings.socket_mode, settings.create_socket_dir)?;
    health::set_socket_owner(listener.owner());
    health::set_listening(true);
    for url in settings.warm_jwks.iter().filter(|u| !u.is_empty()) {
        let cache = plugins::jwt::jwks::shared(url);
        let timing = plugins::jwt::config::JwksTiming::defaults();
        tokio::spawn(async move { cache.warm(timing).await });
    }
    if let Some(subscription) = revocation {
        // On the runtime of `run`, which lives as long as the process.
        tokio::spawn(revocation::run(subscription, revocation::Targets::process()));
    }
    if let Some(l) = ops_listener {
        tracing::info!(addr = %l.local_addr()?, "serving /metrics, /health and /ready");
        tokio::spawn(ops::serve(l, registry.clone()));
    }
    tracing::info!(
        socket = %settings.socket.display(),
        plugins = ?registry.plugins().iter().map(|p| p.name).collect::<Vec<_>>(),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    let options = server::ServeOptions {
        limits: connection::Limits {
            max_frame_bytes: settings.max_frame_bytes,
            send_server_pid: !settings.no_server_pid,
            buffer_budget: buffer_budget::BufferBudget::new(settings.buffer_budget_bytes),
        },
        drain_timeout: Duration::from_secs(settings.drain_timeout_secs),
        shards: settings.shard_count(),
    };
    server::serve(listener, registry, options, shutdown).await;
    health::set_listening(false);
    tracing::info!("stopped");
    Ok(())
}
