//! The TLS trust roots of every outgoing HTTPS call (auth-service lookups, JWKS fetches):
//! Mozilla's root programme, compiled in (the `webpki-root-certs` crate).
//!
//! Why compiled in rather than the host's store (reqwest 0.13's default, the platform
//! verifier): the binary runs inside Kong's image, whatever its CA bundle; with the platform
//! verifier a host without one makes `reqwest::Client::builder().build()` fail ("No CA
//! certificates were loaded from the system"), even for plain-http upstreams. The bundled
//! roots are what the product trusted before reqwest 0.13 (its `rustls-tls` feature).

/// Mozilla's roots as reqwest certificates, for `ClientBuilder::tls_certs_only`.
pub fn mozilla() -> Vec<reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        // Each is a well-formed DER certificate; one that were not would only be left out.
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_root_is_usable() {
        assert_eq!(mozilla().len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(mozilla().len() > 100);
    }

    #[test]
    fn a_client_builds_on_a_host_without_a_ca_store() {
        // rustls-native-certs reads only these when they are set: a host with no CA bundle.
        // (Process-wide, but no client of the product reads the host's store any more.)
        std::env::set_var("SSL_CERT_FILE", "/nonexistent/ghasi-test/ca.pem");
        std::env::set_var("SSL_CERT_DIR", "/nonexistent/ghasi-test/certs");
        let built = reqwest::Client::builder().tls_certs_only(mozilla()).build();
        assert!(built.is_ok(), "{:?}", built.err());
    }
}
