//! `/_dev/…`: the HTTP form of the fault switches, counters and data changes, for the binary
//! (docker-compose, Python tests, manual poking with curl). In-process tests use the same
//! operations through [`crate::DevAuthService`].
//!
//! Why `/_dev/down` takes `for_ms`: once the main port is down, nothing can reach it to say "up";
//! either the outage is timed, or the control listener given by `--admin-listen` (which never
//! goes down) is used for `/_dev/up`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Account, ApiKey, User};
use crate::conn::ConnCtx;
use crate::faults::{FaultWire, Target};
use crate::reply::{error, parse, parse_body};
use crate::revocations;
use crate::state::{PowerCmd, Shared};

fn snapshot(st: &Shared) -> Value {
    json!({
        "faults": {
            "lookup": FaultWire::from(st.faults.get(Target::Lookup)),
            "jwks": FaultWire::from(st.faults.get(Target::Jwks)),
        },
        "counters": {"lookups": st.counters.lookups(), "jwks_fetches": st.counters.jwks_fetches()},
        "jwks_kids": st.keys.read().published_kids(),
    })
}

/// `GET /_dev/state` → faults, counters, published kids.
pub(crate) async fn state(State(st): State<Arc<Shared>>) -> Response {
    Json(snapshot(&st)).into_response()
}

#[derive(Deserialize)]
struct SetFault {
    target: Target,
    #[serde(flatten)]
    fault: FaultWire,
}

/// `POST /_dev/faults` with `{"target": "lookup"|"jwks"|"both", "fault": ..., ...}`.
pub(crate) async fn set_fault(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: SetFault = match parse(&body) {
        Ok(req) => req,
        Err(bad) => return bad.into_response(),
    };
    if let FaultWire::Status { status } = req.fault {
        if !(200..=599).contains(&status) {
            return error(StatusCode::BAD_REQUEST, "bad_request", "status must be 200..=599");
        }
    }
    tracing::info!(target = ?req.target, fault = ?req.fault, "fault switch set");
    st.faults.set(req.target, req.fault.into());
    Json(snapshot(&st)).into_response()
}

/// `POST /_dev/reset`: every fault back to normal, counters to zero.
pub(crate) async fn reset(State(st): State<Arc<Shared>>) -> Response {
    st.faults.set(Target::Both, crate::Fault::Normal);
    st.counters.reset();
    Json(snapshot(&st)).into_response()
}

/// `GET /_dev/counters`.
pub(crate) async fn counters(State(st): State<Arc<Shared>>) -> Response {
    Json(snapshot(&st)["counters"].clone()).into_response()
}

/// `POST /_dev/counters/reset`.
pub(crate) async fn reset_counters(State(st): State<Arc<Shared>>) -> Response {
    st.counters.reset();
    Json(snapshot(&st)["counters"].clone()).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DownRequest {
    for_ms: Option<u64>,
}

/// `POST /_dev/down` with optional `{"for_ms": N}`: the main listener closes (connections are
/// refused) after this response; with `for_ms` it listens again on the same port after N ms.
pub(crate) async fn down(State(st): State<Arc<Shared>>, conn: Option<Extension<ConnCtx>>, body: Bytes) -> Response {
    let req: DownRequest = match parse_body(&body) {
        Ok(req) => req,
        Err(bad) => return bad.into_response(),
    };
    let spare = conn.map(|c| c.id);
    if st.power.send(PowerCmd::Down { spare, for_ms: req.for_ms }).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "unavailable", "listener control is gone");
    }
    (StatusCode::ACCEPTED, Json(json!({"down": true, "for_ms": req.for_ms}))).into_response()
}

/// `POST /_dev/up`: listen again on the same port (use the `--admin-listen` port to reach this
/// while the main one is down).
pub(crate) async fn up(State(st): State<Arc<Shared>>) -> Response {
    if st.power.send(PowerCmd::Up).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "unavailable", "listener control is gone");
    }
    (StatusCode::ACCEPTED, Json(json!({"up": true}))).into_response()
}

/// `POST /_dev/accounts` with an account (`{"id", "status"}`): adds or replaces it.
pub(crate) async fn upsert_account(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<Account>(&body) {
        Ok(account) => {
            let suspended = (account.status == crate::AccountStatus::Suspended).then(|| account.id.clone());
            st.directory.write().upsert_account(account);
            if let Some(id) = suspended {
                let _ = st.revoked(revocations::account(&id)).await;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

/// `POST /_dev/users` with a user: adds or replaces it.
pub(crate) async fn upsert_user(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let user = match parse::<User>(&body) {
        Ok(user) => user,
        Err(bad) => return bad.into_response(),
    };
    match st.directory.write().upsert_user(user) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", &format!("{e:#}")),
    }
}

/// `POST /_dev/api-keys` with an API key as in the YAML: adds or replaces it.
pub(crate) async fn upsert_api_key(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let key = match parse::<ApiKey>(&body) {
        Ok(key) => key,
        Err(bad) => return bad.into_response(),
    };
    let key_id = key.key_id.clone();
    let replaced = st.directory.read().key_id(&key.key);
    let result = st.directory.write().upsert_api_key(key);
    match result {
        Ok(()) => {
            // A replaced key may have changed owner or been revoked: caches must forget it.
            if let Some(old) = replaced {
                let _ = st.revoked(revocations::api_key(&old)).await;
            }
            tracing::info!(%key_id, "api key added");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", &format!("{e:#}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    key: String,
    #[serde(default = "yes")]
    revoked: bool,
}

fn yes() -> bool {
    true
}

/// `POST /_dev/api-keys/revoke` with `{"key": "...", "revoked": true}` (the key travels in the
/// body, never in a URL that ends up in access logs).
pub(crate) async fn revoke_api_key(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let req = match parse::<RevokeRequest>(&body) {
        Ok(req) => req,
        Err(bad) => return bad.into_response(),
    };
    let key_id = st.directory.read().key_id(&req.key);
    if st.directory.write().set_revoked(&req.key, req.revoked) {
        if let Some(key_id) = key_id.filter(|_| req.revoked) {
            let _ = st.revoked(revocations::api_key(&key_id)).await;
        }
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "not_found", "unknown API key")
    }
}
