//! The operations listener (`--metrics-listen`): Prometheus `/metrics`, `/health` (JSON:
//! JWKS age/state, auth-service reachability, ready flag) and `/ready` (200 once the socket
//! listens and every JWKS in use has loaded, else 503). Off unless configured.

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics;
use crate::registry::Registry;

pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics listener on {addr}"))
}

/// Serves the endpoints of `registry`'s process: its events and its services' health.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) {
    let health = registry.services().health.clone();
    let (for_health, for_ready) = (health.clone(), health);
    let app = Router::new()
        .route("/metrics", get(move || render_metrics(registry.clone())))
        .route("/health", get(move || async move { Json(for_health.report()) }))
        .route("/ready", get(move || ready(for_ready.clone())));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics listener failed: {e}");
    }
}

async fn render_metrics(registry: Registry) -> impl IntoResponse {
    let m = metrics::global();
    m.events_in_flight.set(registry.live_events() as i64);
    m.ready.set(i64::from(registry.services().health.report().ready));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
}

async fn ready(health: crate::health::Health) -> impl IntoResponse {
    let report = health.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}
