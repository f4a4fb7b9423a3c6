//! What `/health` and `/ready` report: whether the socket listens (and its path is still
//! ours), the state of every JWKS in use, and whether each auth-service answered its last
//! call. The plugins report into a [`Health`] the services hold; the ops listener reads the
//! same value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct JwksHealth {
    /// `empty` (never loaded), `fresh`, `refreshing`, `stale`, `expired`.
    pub state: &'static str,
    /// Seconds since the set in use was fetched (absent before the first fetch).
    pub age_seconds: Option<u64>,
    pub keys: usize,
    /// Gates `/ready` (a URL named by `--warm-jwks` or used by an instance).
    pub loaded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthServiceHealth {
    pub reachable: bool,
    /// Failure kind of the last call, if it failed (`timeout`, `connect`, `status`, `body`).
    pub last_error: Option<&'static str>,
}

/// The socket file this process bound: its path and inode. Kong reaches us only through the
/// path, so if the file is removed or replaced (another server took it) we still listen but
/// nobody can connect: `/ready` must say so.
#[derive(Debug, Clone)]
pub struct SocketOwner {
    path: std::path::PathBuf,
    inode: u64,
}

impl SocketOwner {
    pub fn new(path: std::path::PathBuf, inode: u64) -> SocketOwner {
        SocketOwner { path, inode }
    }

    /// One stat(2): does the path still name our socket?
    pub fn still_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).map(|m| m.ino()).ok() == Some(self.inode)
    }
}

/// The revocation subscriber (absent when `--revocation-redis-url` is unset). Informative
/// only: without Redis the server serves with normal cache lifetimes, so `/ready` ignores it.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationHealth {
    /// `connecting`, `subscribed` or `disconnected`.
    pub state: &'static str,
    pub channel: String,
    /// Why the last connection failed or ended (no URL or password in it).
    pub last_error: Option<String>,
    /// Successful (re)subscriptions so far.
    pub subscriptions: u64,
}

#[derive(Default)]
struct State {
    jwks: BTreeMap<String, JwksHealth>,
    auth_services: BTreeMap<String, AuthServiceHealth>,
    socket: Option<SocketOwner>,
    revocation: Option<RevocationHealth>,
}

/// The health state of one process; a clone shares it (one `Arc`).
#[derive(Clone, Default)]
pub struct Health(Arc<Inner>);

#[derive(Default)]
struct Inner {
    listening: AtomicBool,
    state: Mutex<State>,
}

impl Health {
    pub fn set_listening(&self, on: bool) {
        self.0.listening.store(on, Ordering::Release);
    }

    /// Records which socket file is ours (checked at every report).
    pub fn set_socket_owner(&self, owner: SocketOwner) {
        self.0.state.lock().socket = Some(owner);
    }

    pub fn report_jwks(&self, url: &str, health: JwksHealth) {
        self.0.state.lock().jwks.insert(url.to_owned(), health);
    }

    pub fn report_auth_service(&self, url: &str, reachable: bool, last_error: Option<&'static str>) {
        self.0.state.lock().auth_services.insert(url.to_owned(), AuthServiceHealth { reachable, last_error });
    }

    pub fn report_revocation(&self, health: RevocationHealth) {
        self.0.state.lock().revocation = Some(health);
    }

    /// Ready = the socket listens, its path is still ours, and every JWKS in use has loaded a
    /// first set.
    pub fn report(&self) -> Report {
        let listening = self.0.listening.load(Ordering::Acquire);
        let s = self.0.state.lock();
        let socket_owned = s.socket.as_ref().is_some_and(SocketOwner::still_ours);
        let ready = listening && socket_owned && s.jwks.values().all(|j| j.loaded);
        Report {
            ready,
            listening,
            socket_owned,
            jwks: s.jwks.clone(),
            auth_services: s.auth_services.clone(),
            revocation: s.revocation.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub listening: bool,
    /// The socket path still names the socket this process listens on (false when the file
    /// was removed or another process replaced it).
    pub socket_owned: bool,
    pub jwks: BTreeMap<String, JwksHealth>,
    pub auth_services: BTreeMap<String, AuthServiceHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationHealth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_the_socket_and_every_jwks_and_each_value_is_its_own() {
        let health = Health::default();
        let dir = std::env::temp_dir().join(format!("ghasi-health-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&dir).unwrap().ino();
        health.set_socket_owner(SocketOwner::new(dir.clone(), inode));
        assert!(!health.report().ready, "not listening yet");
        health.set_listening(true);
        assert!(health.report().ready);
        let loading = JwksHealth { state: "empty", age_seconds: None, keys: 0, loaded: false };
        health.report_jwks("http://jwks", loading);
        assert!(!health.report().ready, "a JWKS in use has not loaded");
        assert!(!Health::default().report().listening, "another value has its own state");
        std::fs::remove_file(&dir).unwrap();
        assert!(!health.report().socket_owned);
    }
}
