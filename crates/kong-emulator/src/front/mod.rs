//! The HTTP front: a minimal Kong proxy for local runs and benchmarks.
//!
//! It loads a decK file, matches each request to a route, runs the route's plugin chain in
//! the access phase (external plugins through the emulated plugin-server client, `acl`
//! emulated), then proxies to the service with the upstream headers the plugins produced. A
//! plugin's `kong.response.exit` is returned as is. Failures map to what Kong does: an RPC
//! error skips the plugin (fail open, which the `acl` guard then catches), a Lua error
//! (bad PDK arguments, protocol violation, failed `StartInstance`) is a 500. With the server
//! down that is a 401 from acl for a worker with the instance id cached and a 500 for one
//! without (on Kong 3.4, a worker that never reached the server skips the plugin: 401).
//!
//! Layering: this module (cargo feature `front`) sits on top of the protocol client and uses it
//! like any other caller would ([`Kong::run_event`], [`Request`], [`KongEffect`]); nothing in the
//! client knows about it (`tests/module_graph.rs` holds that), so the client builds without it.

pub mod acl;
pub mod chain;
pub mod deck;
pub mod proxy;
pub mod router;
pub mod vault;

use crate::{Kong, KongEffect, Request};
use acl::AclDecision;
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use chain::{ChainEntry, Chains, Step};
use deck::Gateway;
use proxy::{Response, Upstreams};
use router::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Everything needed to serve requests.
pub struct Front {
    gateway: Gateway,
    router: Router,
    chains: Chains,
    upstreams: Upstreams,
    kong: Kong,
}

impl Front {
    /// Builds the front for `gateway`, talking to the plugin server through `kong`;
    /// `priorities` gives the external plugins' priorities.
    pub fn new(gateway: Gateway, kong: Kong, priorities: &HashMap<String, i64>) -> Result<Front> {
        let router = Router::new(&gateway).context("compiling routes")?;
        let chains = Chains::build(&gateway, &kong, priorities);
        let upstreams = Upstreams::new(&gateway.services)?;
        Ok(Front { gateway, router, chains, upstreams, kong })
    }

    /// One line per thing the front does not emulate, for the startup log.
    pub fn limitations(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.chains.ignored.is_empty() {
            let list: Vec<String> = self.chains.ignored.iter().map(|(n, c)| format!("{n} ({c}×)")).collect();
            notes.push(format!("bundled plugins not emulated, ignored: {}", list.join(", ")));
        }
        if !self.chains.unprioritised.is_empty() {
            notes.push(format!(
                "external plugins with unknown priority (run with 0, after acl): {}",
                self.chains.unprioritised.join(", ")
            ));
        }
        if !self.gateway.ignored.is_empty() {
            notes.push(format!("decK sections ignored: {}", self.gateway.ignored.join(", ")));
        }
        notes
    }

    pub fn kong(&self) -> &Kong {
        &self.kong
    }

    /// Handles one client request end to end.
    pub async fn handle(&self, mut req: Request) -> Response {
        let host = req.client_headers().get_str("host");
        let Some(m) = self.router.find(&self.gateway, req.method(), host.as_deref(), req.path()) else {
            return Response::kong_message(404, "no Route matched with those values");
        };
        let route = &self.gateway.routes[m.route];
        let service = &self.gateway.services[route.service];
        req = req
            .with_route(crate::json::from_json(&serde_json::json!({
                "id": route.id, "name": route.name, "paths": route.paths, "methods": route.methods,
                "strip_path": route.strip_path, "preserve_host": route.preserve_host,
                "protocols": ["http", "https"], "service": {"id": service.id},
            })))
            .with_service(crate::json::from_json(&serde_json::json!({
                "id": service.id, "name": service.name, "protocol": service.protocol,
                "host": service.host, "port": service.port, "path": service.path,
            })));
        for entry in &self.chains.per_route[m.route] {
            if let Some(response) = self.run_plugin(entry, &mut req).await {
                return with_response_headers(response, &req);
            }
        }
        let path = router::upstream_path(service.path.as_deref(), &m.stripped_path);
        let response = self.upstreams.forward(route.service, service, &req, &path, route.preserve_host).await;
        with_response_headers(response, &req)
    }

    /// Runs one plugin; `Some` when it produced the client response.
    async fn run_plugin(&self, entry: &ChainEntry, req: &mut Request) -> Option<Response> {
        match &entry.step {
            Step::Acl(config) => match acl::check(config, req) {
                AclDecision::Allow => None,
                AclDecision::Deny { status, message } => Some(Response::kong_message(status, message)),
            },
            Step::External(plugin) => match self.kong.run_event(plugin, "access", req).await {
                Ok(outcome) => {
                    if let Some(exit) = outcome.exit {
                        return Some(Response { status: exit.status, headers: exit.headers, body: exit.body });
                    }
                    if let Some(error) = outcome.abandoned {
                        tracing::error!(plugin = %entry.name, %error, "PDK call raised: 500");
                        return Some(Response::kong_message(500, "An unexpected error occurred"));
                    }
                    None
                }
                Err(e) => match e.kong_effect() {
                    KongEffect::SkipPlugin => {
                        tracing::error!(plugin = %entry.name, error = %e, "plugin skipped (Kong fails open)");
                        None
                    }
                    KongEffect::LuaError => {
                        tracing::error!(plugin = %entry.name, error = %e, "Lua error: 500");
                        Some(Response::kong_message(500, "An unexpected error occurred"))
                    }
                },
            },
        }
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> Result<()> {
        let app = axum::Router::new().fallback(front_handler).with_state(self);
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .context("serving the HTTP front")
    }
}

/// Headers set with `kong.response.set_header` go on every response to the client.
fn with_response_headers(mut response: Response, req: &Request) -> Response {
    for line in req.response_headers().lines() {
        if !response.headers.get_all(&line.name).contains(&line.value.as_slice()) {
            response.headers.set(&line.name, vec![line.value.clone()]);
        }
    }
    response
}

async fn front_handler(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut req = Request::new(method.as_str(), uri.path())
        .with_query(uri.query().unwrap_or_default())
        .with_client_ip(peer.ip().to_string())
        .with_body(body.to_vec());
    for (name, value) in &headers {
        req = req.with_header(name.as_str(), value.as_bytes());
    }
    into_axum(front.handle(req).await)
}

/// Converts a [`Response`] for axum (invalid header bytes are dropped with a warning).
pub fn into_axum(response: Response) -> axum::response::Response {
    let mut out = axum::response::Response::new(axum::body::Body::from(response.body));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for line in response.headers.lines() {
        match (HeaderName::from_bytes(line.name.as_bytes()), HeaderValue::from_bytes(&line.value)) {
            (Ok(name), Ok(value)) => {
                out.headers_mut().append(name, value);
            }
            _ => tracing::warn!(header = %line.name, "dropping a response header that is not valid HTTP"),
        }
    }
    out
}
