//! Dev auth-service: a stand-in for Ghasi's auth-service (another team's service) implementing
//! the contract the plugin server's client is written against, for local development and tests.
//! It is **not** the product and never runs in production.
//!
//! What it serves (see docs/development.md#dev-auth-service for the wire contract):
//! * `POST {lookup_path}` (default `/internal/v1/api-keys/verify`): API-key lookup;
//! * `GET /.well-known/jwks.json`: the public keys (RS256, ES256, EdDSA);
//! * `POST /dev/tokens`, `POST /dev/rotate`: token minting and key rotation;
//! * `/_dev/…`: fault switches, counters, outage, data changes.
//!
//! In-process use (tokio tests): [`DevAuthService::start`] with [`DevConfig::for_tests`] (data
//! set in [`fixtures`]), [`TokenSpec`] for tokens, [`DevAuthService::forge`] and
//! [`forge::malformed`] for attack tokens, [`Fault`]/[`Target`] and `down()`/`up()` for failures.

mod admin;
mod config;
mod conn;
mod contract;
mod dev_api;
mod directory;
mod faults;
pub mod fixtures;
pub mod forge;
mod keyring;
mod keys;
mod reply;
mod revocations;
mod router;
mod server;
mod state;
mod tokens;

pub use config::{
    Account, AccountStatus, ApiKey, DevConfig, User, DEFAULT_ISSUER, DEFAULT_LOOKUP_PATH, DEFAULT_TOKEN_TTL_SECS,
};
pub use directory::{Verdict, VerifiedKey};
pub use faults::{Fault, FaultWire, Target};
pub use keys::{random_kid, Alg, SigningKey, RSA_BITS};
pub use router::JWKS_PATH;
pub use server::DevAuthService;
pub use tokens::{Minted, TokenSpec};
