//! Talking to an upstream over HTTP: the one place both plugins' upstream calls share, so the
//! API-key client (`plugins::api_key::client`, auth-service lookups) and the JWKS fetcher
//! (`plugins::jwt::jwks`) cannot drift apart in how they are hardened.
//!
//! * [`client`]: the hardened `reqwest` client (no redirects, no proxy from the environment,
//!   our user agent, bounded idle pool);
//! * [`body`]: reading a response body with a size cap;
//! * [`failure`]: why an upstream gave no usable answer, as one enum whose [`Failure::kind`] is
//!   the `upstream_failures{kind}` label and the reason logged with the 503;
//! * [`skew`]: the clock-skew check on every response's `Date` header;
//! * [`trust_roots`]: the TLS roots the client trusts (compiled in, not the host's).

pub mod body;
pub mod client;
pub mod failure;
pub mod skew;
pub mod trust_roots;

pub use body::read_capped;
pub use client::build_client;
pub use failure::{chain, classify, Failure};
pub use skew::DateSkew;
