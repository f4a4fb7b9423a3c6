//! An echo upstream: answers every request with JSON `{method, path, query, headers}`.
//!
//! Used as the service behind the front in local runs, tests and benchmarks, so that what
//! the plugins did to the upstream request is visible in the response. `headers` maps each
//! lower-cased name to its value, or to an array of values when the header was repeated
//! (so a duplicated identity header cannot hide).
//!
//! Part of the HTTP side (cargo feature `front`), like [`crate::front`].

use anyhow::{Context, Result};
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;

/// The echo document for one request.
pub fn echo_document(method: &Method, uri: &Uri, headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<serde_json::Value> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into()).collect();
        let value = if values.len() == 1 { values.into_iter().next().unwrap_or_default() } else { values.into() };
        map.insert(name.as_str().to_string(), value);
    }
    serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query().unwrap_or_default(),
        "headers": map,
    })
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<serde_json::Value> {
    Json(echo_document(&method, &uri, &headers))
}

/// Serves the echo upstream on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> Result<()> {
    let app = axum::Router::new().fallback(echo);
    axum::serve(listener, app).await.context("serving the echo upstream")
}
