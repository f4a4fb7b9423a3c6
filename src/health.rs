//! What `/health` and `/ready` report: whether the socket listens (and its path is still
//! ours), the state of every JWKS
//! in use, and whether each auth-service answered its last call. The plugins report into
//! it; the ops listener reads it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

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

static LISTENING: AtomicBool = AtomicBool::new(false);

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Mutex::default)
}

pub fn set_listening(on: bool) {
    LISTENING.store(on, Ordering::Release);
}

/// Records which socket file is ours (checked at every report).
pub fn set_socket_owner(owner: SocketOwner) {
    state().lock().socket = Some(owner);
}

pub fn report_jwks(url: &str, health: JwksHealth) {
    state().lock().jwks.insert(url.to_owned(), health);
}

pub fn report_auth_service(url: &str, reachable: bool, last_error: Option<&'static str>) {
    state().lock().auth_services.insert(url.to_owned(), AuthServiceHealth { reachable, last_error });
}

pub fn report_revocation(health: RevocationHealth) {
    state().lock().revocation = Some(health);
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

/// Ready = the socket listens, its path is still ours, and every JWKS in use has loaded a
/// first set.
pub fn report() -> Report {
    let listening = LISTENING.load(Ordering::Acquire);
    let s = state().lock();
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
