//! The JSON answers and body parsing every handler shares: `{"error", "message"}` bodies and
//! `400 bad_request` for a body that does not parse (naming the parse error, never echoing
//! the body, which may carry a key).
//!
//! Why a leaf module: the contract endpoints, the dev API and the `/_dev/` control all answer
//! this way; with the helpers here none of those modules depends on another.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A JSON error body `{"error": code, "message": ...}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// A `400 bad_request` answer carrying the parse error (never the body itself).
pub(crate) struct BadRequest(pub String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, "bad_request", &self.0)
    }
}

/// Parses a JSON body; an empty body is `T::default()`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, BadRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| BadRequest(e.to_string()))
}

/// Parses a JSON body that must be there (a `400` naming the parse error otherwise).
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest(e.to_string()))
}
