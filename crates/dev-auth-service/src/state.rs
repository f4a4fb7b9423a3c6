//! The state shared by the HTTP handlers and the in-process handle: settings, data, keys, faults,
//! counters, and the channel to the listener control.
//!
//! Why one struct behind an `Arc`: a test changes a fault or revokes a key through its
//! [`crate::DevAuthService`] while requests are being served, and the next request must see it.

use std::sync::OnceLock;

use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::config::DevConfig;
use crate::directory::Directory;
use crate::faults::{Counters, FaultBoard};
use crate::keyring::KeyRing;
use crate::keys::{Alg, SigningKey};
use crate::revocations::Publisher;

/// A request to take the main listener down or bring it back (sent by the admin API, carried out
/// by the server, which owns the listener).
#[derive(Debug, Clone, Copy)]
pub(crate) enum PowerCmd {
    /// Stop listening and close connections; `spare` is a connection allowed to finish its
    /// response (the one that asked); `for_ms` brings the listener back after that long.
    Down { spare: Option<u64>, for_ms: Option<u64> },
    /// Listen again on the same address.
    Up,
}

pub(crate) struct Shared {
    pub issuer: String,
    pub audience: Option<String>,
    pub service_token: Option<String>,
    pub lookup_path: String,
    pub token_ttl_secs: i64,
    pub directory: RwLock<Directory>,
    pub keys: RwLock<KeyRing>,
    pub faults: FaultBoard,
    pub counters: Counters,
    pub power: mpsc::UnboundedSender<PowerCmd>,
    /// Revocation push, when configured.
    pub revocations: OnceLock<Publisher>,
}

impl Shared {
    pub fn new(config: &DevConfig, keys: KeyRing, power: mpsc::UnboundedSender<PowerCmd>) -> Self {
        Shared {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            service_token: config.service_token.clone(),
            lookup_path: config.lookup_path.clone(),
            token_ttl_secs: config.token_ttl_secs,
            directory: RwLock::new(Directory::from_config(config)),
            keys: RwLock::new(keys),
            faults: FaultBoard::default(),
            counters: Counters::default(),
            power,
            revocations: OnceLock::new(),
        }
    }

    /// Publishes a revocation message, if revocation push is on; the receiver fires once it is
    /// out (at once when push is off).
    pub fn revoked(&self, message: serde_json::Value) -> tokio::sync::oneshot::Receiver<()> {
        match self.revocations.get() {
            Some(publisher) => publisher.send(message),
            None => {
                let (done, rx) = tokio::sync::oneshot::channel();
                let _ = done.send(());
                rx
            }
        }
    }

    /// Generates a key and makes it current (RSA keygen runs off the async workers).
    pub async fn rotate_keys(&self, alg: Alg, keep_old: bool) -> anyhow::Result<String> {
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg)).await??;
        let kid = self.keys.write().rotate(key, keep_old);
        tracing::info!(%kid, %alg, keep_old, "rotated signing key");
        let _ = self.revoked(crate::revocations::jwks()).await;
        Ok(kid)
    }
}
