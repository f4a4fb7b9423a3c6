//! `/dev/tokens` and `/dev/rotate`: minting and key rotation over HTTP, for local development
//! with curl and for tests in other languages (tests/python) that cannot link the library.
//!
//! Why these are not under `/_dev/`: they are the dev auth-service's own product surface (what a
//! developer uses daily), whereas `/_dev/` switches faults and data for tests.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::keys::Alg;
use crate::reply::{error, parse_body};
use crate::state::Shared;
use crate::tokens::{mint, TokenSpec};

/// `POST /dev/tokens` with a [`TokenSpec`] → `{"token", "kid", "alg", "claims"}`.
pub(crate) async fn tokens(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: TokenSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(bad) => return bad.into_response(),
    };
    match mint(&st, &spec) {
        Ok(minted) => {
            tracing::info!(kid = ?minted.kid, alg = %minted.alg, user = ?spec.user_id, "minted a token");
            Json(minted).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", &format!("{e:#}")),
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RotateRequest {
    alg: Alg,
    keep_old: bool,
}

impl Default for RotateRequest {
    fn default() -> Self {
        RotateRequest { alg: Alg::RS256, keep_old: true }
    }
}

/// `POST /dev/rotate` with `{"alg": "RS256", "keep_old": true}` (both optional) →
/// `{"kid", "alg", "jwks_kids"}`.
pub(crate) async fn rotate(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: RotateRequest = match parse_body(&body) {
        Ok(req) => req,
        Err(bad) => return bad.into_response(),
    };
    match st.rotate_keys(req.alg, req.keep_old).await {
        Ok(kid) => {
            let jwks_kids = st.keys.read().published_kids();
            Json(json!({"kid": kid, "alg": req.alg, "jwks_kids": jwks_kids})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "keygen_failed", &format!("{e:#}")),
    }
}
