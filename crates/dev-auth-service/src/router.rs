//! Route table of the service, and the request log.
//!
//! Why two routers: the main one (contract + dev + `/_dev/` control) is what clients call and
//! what faults and `down()` affect; the control-only one is served on the optional
//! `--admin-listen` address so that a script can bring the main port back up.
//! The request log names method, path, status and latency only: keys travel in bodies and tokens
//! in headers, neither of which is logged; query strings are left out too.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::contract;
use crate::reply::error;
use crate::state::Shared;
use crate::{admin, dev_api};

/// JWKS path, fixed by the contract.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method, %path, status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64, "request"
    );
    resp
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

fn control_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/dev/tokens", post(dev_api::tokens))
        .route("/dev/rotate", post(dev_api::rotate))
        .route("/_dev/state", get(admin::state))
        .route("/_dev/faults", post(admin::set_fault))
        .route("/_dev/reset", post(admin::reset))
        .route("/_dev/counters", get(admin::counters))
        .route("/_dev/counters/reset", post(admin::reset_counters))
        .route("/_dev/down", post(admin::down))
        .route("/_dev/up", post(admin::up))
        .route("/_dev/accounts", post(admin::upsert_account))
        .route("/_dev/users", post(admin::upsert_user))
        .route("/_dev/api-keys", post(admin::upsert_api_key))
        .route("/_dev/api-keys/revoke", post(admin::revoke_api_key))
}

/// Everything: the contract endpoints plus the dev and control routes.
pub(crate) fn main_router(st: Arc<Shared>) -> Router {
    Router::new()
        .route(&st.lookup_path, post(contract::lookup))
        .route(JWKS_PATH, get(contract::jwks))
        .merge(control_routes())
        .fallback(not_found)
        .layer(middleware::from_fn(log_requests))
        .with_state(st)
}

/// The dev and control routes only.
pub(crate) fn control_router(st: Arc<Shared>) -> Router {
    control_routes().fallback(not_found).layer(middleware::from_fn(log_requests)).with_state(st)
}
