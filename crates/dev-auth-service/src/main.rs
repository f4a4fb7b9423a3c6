//! `dev-auth-service`: runs the dev auth-service stand-in (NOT the product) for local
//! development and docker-compose. Prints its URLs, logs requests without secrets.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dev_auth_service::{DevAuthService, DevConfig};

/// Development stand-in for Ghasi auth-service: API-key lookup, JWKS, token minting, fault
/// switches. Never use in production.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "DEV_AUTH_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// YAML config (accounts, users, api_keys, issuer, service_token). Without it, the built-in
    /// test data set (`DevConfig::for_tests`) is served.
    #[arg(long, env = "DEV_AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Optional second address serving only `/dev/` and `/_dev/` (stays up while the main port is
    /// down, so `POST /_dev/up` can reach it).
    #[arg(long, env = "DEV_AUTH_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Redis to publish revocation messages on (key revoked, account suspended, keys rotated),
    /// e.g. `redis://redis:6379`; off when unset.
    #[arg(long, env = "DEV_AUTH_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Channel of the revocation messages.
    #[arg(long, env = "DEV_AUTH_REVOCATION_CHANNEL", default_value = "ghasi:revocations")]
    revocation_channel: String,
    /// Log as JSON lines.
    #[arg(long, env = "DEV_AUTH_LOG_JSON")]
    log_json: bool,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_json {
        tracing_subscriber::fmt().with_env_filter(filter).json().init();
    } else {
        // Colour only on a terminal: logs redirected to a file stay plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    }

    let config = match &cli.config {
        Some(path) => DevConfig::load(path)?,
        None => {
            tracing::warn!("no --config: serving the built-in test data set (DevConfig::for_tests)");
            DevConfig::for_tests()
        }
    };
    tracing::info!(
        accounts = config.accounts.len(),
        users = config.users.len(),
        api_keys = config.api_keys.len(),
        issuer = %config.issuer,
        service_token = config.service_token.is_some(),
        "config loaded"
    );
    let svc = DevAuthService::start_at(cli.listen, config).await?;
    if let Some(url) = cli.redis_url.as_deref().filter(|u| !u.is_empty()) {
        svc.publish_revocations(url, &cli.revocation_channel)?;
        println!("  revocations: published on Redis channel {}", cli.revocation_channel);
    }
    println!("dev-auth-service (development stand-in, not for production)");
    println!("  url:    {}", svc.url());
    println!("  lookup: POST {}", svc.lookup_url());
    println!("  jwks:   {}", svc.jwks_url());
    println!("  tokens: POST {}/dev/tokens", svc.url());
    if let Some(addr) = cli.admin_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        println!("  admin:  http://{}/_dev/state", listener.local_addr()?);
        let router = svc.control_router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}
