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

    // That a client builds with them on a host without a CA store: tests/trust_roots.rs (it
    // changes the process environment, so it has a test binary of its own).
}
