//! The HTTP client every upstream call uses.

use std::time::Duration;

/// How long an idle pooled connection is kept: a little under common server keep-alive
/// limits, so we rarely pick a connection the upstream is closing.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A client hardened for internal upstreams: redirects are never followed (a redirect would
/// re-send an API key somewhere else, or fetch keys from a place the config did not name),
/// no `HTTP(S)_PROXY` from the environment is used (the upstreams are internal; a proxy must
/// not see keys), `TCP_NODELAY` on, idle connections dropped after [`POOL_IDLE`], and TLS
/// trusting the compiled-in roots of [`super::trust_roots`] only.
/// `connect_timeout` bounds connecting; callers bound each whole call themselves.
pub fn build_client(connect_timeout: Option<Duration>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_certs_only(super::trust_roots::mozilla())
        .user_agent(concat!("ghasi-plugin-server/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    builder.build()
}
