//! The product's HTTP clients do not depend on the host's CA store (src/upstream/trust_roots.rs): with
//! reqwest 0.13's default (the platform verifier), building a client on a host without a CA
//! bundle fails, even for plain-http upstreams (the JWKS client would panic, an API-key
//! instance would not start). Its own test binary, because it changes the process environment.

use std::time::Duration;

use ghasi_plugin_server::plugins::api_key::client::AuthClient;
use ghasi_plugin_server::plugins::jwt::config::JwksTiming;
use ghasi_plugin_server::services::Services;
use ghasi_plugin_server::upstream::{build_client, trust_roots};

/// rustls-native-certs reads only these when they are set: a host with no CA bundle.
fn no_host_ca_store() {
    std::env::set_var("SSL_CERT_FILE", "/nonexistent/ghasi-test/ca.pem");
    std::env::set_var("SSL_CERT_DIR", "/nonexistent/ghasi-test/certs");
}

#[test]
fn a_client_with_the_bundled_roots_builds_without_a_host_ca_store() {
    no_host_ca_store();
    let built = reqwest::Client::builder().tls_certs_only(trust_roots::mozilla()).build();
    assert!(built.is_ok(), "{:?}", built.err());
    let upstream = build_client(Some(Duration::from_secs(1)));
    assert!(upstream.is_ok(), "the one upstream client: {:?}", upstream.err());
}

#[tokio::test]
async fn the_product_clients_build_without_a_host_ca_store() {
    no_host_ca_store();
    // Port 1 on loopback: nothing listens, the calls fail fast; what matters is that the
    // clients exist (an error here would be "cannot build the HTTP client", a panic the test's).
    let services = Services::for_tests();
    let auth = AuthClient::new("http://127.0.0.1:1", "/verify", None, Duration::from_secs(1), &services);
    assert!(auth.is_ok(), "{:?}", auth.err());
    let timing = JwksTiming {
        ttl: Duration::from_secs(60),
        refresh_ahead: Duration::from_secs(10),
        max_stale: Duration::from_secs(60),
        kid_refresh_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    };
    let jwks = services.jwks("http://127.0.0.1:1/jwks");
    assert!(jwks.is_ok(), "{:?}", jwks.err());
    jwks.unwrap().refresh_now(&timing).await;
}
