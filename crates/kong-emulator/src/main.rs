//! `kong-emulator`: an echo upstream and a Kong-like HTTP front for local runs and benchmarks.
//!
//! `kong-emulator echo --listen ADDR` answers every request with what it received.
//! `kong-emulator front --listen ADDR --socket PATH --config kong/kong.yaml` plays Kong in
//! front of the plugin server (see the crate docs and docs/development.md#kong-emulator).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kong_emulator::front::{chain, deck::Gateway, Front};
use kong_emulator::{Kong, KongVersion, PoolPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "kong-emulator", about = "Plays Kong's side of the MsgPack:1 plugin-server protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An upstream answering every request with JSON {method, path, query, headers}.
    Echo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// A Kong-like proxy reading a decK file and running the external plugins.
    Front {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// The plugin server's Unix socket.
        #[arg(long)]
        socket: PathBuf,
        /// decK declarative configuration.
        #[arg(long, default_value = "kong/kong.yaml")]
        config: PathBuf,
        /// Read plugin priorities from `<bin> --dump` instead of the built-in table.
        #[arg(long)]
        plugin_server_bin: Option<PathBuf>,
        /// Kong release line to imitate.
        #[arg(long, value_enum, default_value = "3.9")]
        kong_version: Version,
        /// Idle plugin-server connections kept (default: the version's lua_socket_pool_size).
        #[arg(long)]
        pool_size: Option<usize>,
        /// Send consecutive RPCs over different connections.
        #[arg(long)]
        rotate_connections: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Version {
    #[value(name = "3.4")]
    V3_4,
    #[value(name = "3.9")]
    V3_9,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Echo { listen } => {
            let listener = bind(listen).await?;
            tracing::info!(%listen, "echo upstream listening");
            kong_emulator::echo::serve(listener).await
        }
        Command::Front { listen, socket, config, plugin_server_bin, kong_version, pool_size, rotate_connections } => {
            let gateway = Gateway::load(&config)?;
            let priorities = match &plugin_server_bin {
                Some(bin) => dump_priorities(bin)?,
                None => chain::default_priorities(),
            };
            let mut builder = Kong::builder(&socket).version(match kong_version {
                Version::V3_4 => KongVersion::V3_4,
                Version::V3_9 => KongVersion::V3_9,
            });
            if let Some(size) = pool_size {
                builder = builder.pool_size(size);
            }
            if rotate_connections {
                builder = builder.pool_policy(PoolPolicy::Rotate);
            }
            let front = Arc::new(Front::new(gateway, builder.build(), &priorities)?);
            for note in front.limitations() {
                tracing::warn!("{note}");
            }
            let listener = bind(listen).await?;
            tracing::info!(%listen, socket = %socket.display(), config = %config.display(), "Kong emulator front listening");
            front.serve(listener).await
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// Runs `<bin> --dump` (Kong's query_cmd) and reads each plugin's priority.
fn dump_priorities(bin: &PathBuf) -> Result<std::collections::HashMap<String, i64>> {
    let output = std::process::Command::new(bin)
        .arg("--dump")
        .output()
        .with_context(|| format!("running {} --dump", bin.display()))?;
    if !output.status.success() {
        bail!("{} --dump exited with {}: {}", bin.display(), output.status, String::from_utf8_lossy(&output.stderr));
    }
    let dump: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} --dump did not print JSON", bin.display()))?;
    let priorities = chain::priorities_from_dump(&dump);
    if priorities.is_empty() {
        bail!("{} --dump lists no plugins", bin.display());
    }
    tracing::info!(?priorities, "plugin priorities from the dump");
    Ok(priorities)
}
