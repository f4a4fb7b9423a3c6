//! Forwarding the request upstream with the headers the plugins produced.
//!
//! Like nginx in Kong: hop-by-hop headers are dropped, `Host` becomes the upstream host
//! unless the route has `preserve_host`, the `X-Forwarded-*` and `X-Real-IP` headers are
//! set, redirects are not followed, and upstream failures become Kong's 502/504 bodies.

use super::deck::Service;
use crate::{HeaderMap, Request};
use anyhow::{Context, Result};
use std::time::Duration;

/// Headers that describe one connection and never cross a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// A response to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// A Kong-style `{"message": …}` JSON response.
    pub fn kong_message(status: u16, message: &str) -> Response {
        let body = serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.append("Content-Type", "application/json; charset=utf-8");
        Response { status, headers, body }
    }
}

/// HTTP clients, one per service (each with its connect timeout).
pub struct Upstreams {
    clients: Vec<reqwest::Client>,
}

impl Upstreams {
    pub fn new(services: &[Service]) -> Result<Upstreams> {
        let clients = services
            .iter()
            .map(|s| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
                    .build()
                    .with_context(|| format!("building the HTTP client for service {:?}", s.name))
            })
            .collect::<Result<_>>()?;
        Ok(Upstreams { clients })
    }

    /// Sends `req` to `service` at `path`.
    pub async fn forward(
        &self,
        index: usize,
        service: &Service,
        req: &Request,
        path: &str,
        preserve_host: bool,
    ) -> Response {
        let default_port = matches!((service.protocol.as_str(), service.port), ("http", 80) | ("https", 443));
        let authority = if default_port { service.host.clone() } else { format!("{}:{}", service.host, service.port) };
        let mut url = format!("{}://{}{}", service.protocol, authority, path);
        if !req.raw_query().is_empty() {
            url.push('?');
            url.push_str(req.raw_query());
        }
        let method = reqwest::Method::from_bytes(req.method().as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut builder = self.clients[index]
            .request(method, &url)
            .timeout(Duration::from_millis(service.read_timeout_ms + service.write_timeout_ms));
        let client_host = req.client_headers().get_str("host");
        for line in req.upstream_headers().lines() {
            let lower = line.name.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str())
                || lower == "host"
                || lower.starts_with("x-forwarded-")
                || lower == "x-real-ip"
            {
                continue;
            }
            builder = builder.header(line.name.as_str(), line.value.as_slice());
        }
        let host = if preserve_host { client_host.clone().unwrap_or(authority.clone()) } else { authority };
        let forwarded_for = match req.client_headers().get_str("x-forwarded-for") {
            Some(prior) => format!("{prior}, {}", req.client_ip()),
            None => req.client_ip().to_string(),
        };
        builder = builder
            .header("Host", host)
            .header("X-Real-IP", req.client_ip())
            .header("X-Forwarded-For", forwarded_for)
            .header("X-Forwarded-Proto", req.scheme())
            .header("X-Forwarded-Host", client_host.unwrap_or_default().split(':').next().unwrap_or_default())
            .header("X-Forwarded-Path", req.path())
            .body(req.body().to_vec());
        match builder.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let mut headers = HeaderMap::new();
                for (name, value) in resp.headers() {
                    if !HOP_BY_HOP.contains(&name.as_str()) {
                        headers.append(name.as_str(), value.as_bytes());
                    }
                }
                match resp.bytes().await {
                    Ok(body) => Response { status, headers, body: body.to_vec() },
                    Err(e) => upstream_failure(&e, &url),
                }
            }
            Err(e) => upstream_failure(&e, &url),
        }
    }
}

fn upstream_failure(e: &reqwest::Error, url: &str) -> Response {
    tracing::error!(upstream = %url, error = %e, "upstream request failed");
    if e.is_timeout() {
        Response::kong_message(504, "The upstream server is timing out")
    } else {
        Response::kong_message(502, "An invalid response was received from the upstream server")
    }
}
