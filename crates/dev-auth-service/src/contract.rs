//! The two endpoints the plugin server calls — the API-key lookup and the JWKS — exactly as the
//! auth-service contract (docs/design.md#the-auth-service-contract,
//! docs/development.md#dev-auth-service) specifies, with the fault switches applied in front of
//! them.
//!
//! Why the order count → fault → service token → body → verdict: a request is counted the moment
//! it arrives (tests assert "one auth-service call" even when the call fails), faults model the
//! network and the server being broken before any logic runs, and the service token is checked
//! before the body like a real service's authentication middleware would.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::conn::ConnCtx;
use crate::directory::Verdict;
use crate::faults::{Fault, Target};
use crate::reply::error;
use crate::state::Shared;

/// Applies the fault of `target`: `None` means "go on and answer normally" (possibly after a
/// delay), `Some` is the faulty answer. `Refuse` never returns: it tells the connection to drop.
pub(crate) async fn apply_fault(st: &Shared, target: Target, conn: Option<&ConnCtx>) -> Option<Response> {
    match st.faults.get(target) {
        Fault::Normal => None,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(error(status, "injected_fault", "dev auth-service fault switch"))
        }
        Fault::Garbage => {
            Some(([(header::CONTENT_TYPE, "application/json")], "<html>502 this is { not JSON").into_response())
        }
        Fault::EmptyJwks => Some(match target {
            Target::Jwks => Json(json!({"keys": []})).into_response(),
            _ => Json(json!({})).into_response(),
        }),
        Fault::Refuse => match conn {
            Some(conn) => {
                tracing::info!(?target, "fault: closing the connection without a response");
                conn.kill.notify_one();
                std::future::pending::<()>().await;
                unreachable!("the connection task drops this handler")
            }
            None => Some(error(StatusCode::INTERNAL_SERVER_ERROR, "injected_fault", "refuse")),
        },
    }
}

#[derive(Deserialize)]
struct VerifyRequest {
    api_key: String,
}

/// Byte-wise comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `POST {lookup_path}` with `{"api_key": "..."}`.
pub(crate) async fn lookup(
    State(st): State<Arc<Shared>>,
    conn: Option<Extension<ConnCtx>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.counters.count(Target::Lookup);
    if let Some(resp) = apply_fault(&st, Target::Lookup, conn.as_deref()).await {
        return resp;
    }
    if let Some(expected) = &st.service_token {
        let ok = bearer(&headers).is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()));
        if !ok {
            tracing::info!("lookup: 401 missing or wrong service token");
            return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid service token");
        }
    }
    let req = match serde_json::from_slice::<VerifyRequest>(&body) {
        Ok(req) if !req.api_key.is_empty() => req,
        _ => {
            tracing::info!("lookup: 400 malformed body");
            return error(StatusCode::BAD_REQUEST, "bad_request", r#"expected {"api_key": "<non-empty string>"}"#);
        }
    };
    let verdict = st.directory.read().verify(&req.api_key, OffsetDateTime::now_utc());
    // Never log the key itself: only the key_id of a known key.
    match verdict {
        Verdict::Valid(found) => {
            tracing::info!(key_id = %found.key_id, account_id = %found.account_id, "lookup: 200 valid");
            (StatusCode::OK, Json(found)).into_response()
        }
        Verdict::Unknown => {
            tracing::info!("lookup: 404 unknown key");
            error(StatusCode::NOT_FOUND, "not_found", "unknown API key")
        }
        Verdict::Revoked => {
            tracing::info!("lookup: 403 revoked key");
            error(StatusCode::FORBIDDEN, "revoked", "API key revoked")
        }
        Verdict::Suspended => {
            tracing::info!("lookup: 403 account suspended");
            error(StatusCode::FORBIDDEN, "account_suspended", "account suspended")
        }
        Verdict::Expired => {
            tracing::info!("lookup: 403 expired key");
            error(StatusCode::FORBIDDEN, "expired", "API key expired")
        }
    }
}

/// `GET /.well-known/jwks.json`.
pub(crate) async fn jwks(State(st): State<Arc<Shared>>, conn: Option<Extension<ConnCtx>>) -> Response {
    st.counters.count(Target::Jwks);
    if let Some(resp) = apply_fault(&st, Target::Jwks, conn.as_deref()).await {
        return resp;
    }
    let doc = st.keys.read().jwks();
    Json(doc).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearerabc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
