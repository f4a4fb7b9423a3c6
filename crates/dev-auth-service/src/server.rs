//! The running service and its in-process handle, [`DevAuthService`]: binds, accepts, serves
//! HTTP/1.1, and can stop listening and listen again on the same port.
//!
//! Why an own accept loop rather than `axum::serve`: two faults need control below the router.
//! `Refuse` must close a connection without writing a response, which a handler cannot do, so
//! each connection carries a [`ConnCtx`] whose `kill` makes its task drop the socket. `down()`
//! must make the port refuse connections *and* close the keep-alive connections a client pool
//! holds (else a pooled client would not notice the outage), and `up()` must listen again on the
//! same address, so the listener and every connection task are owned here.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Mutex, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::config::{Account, AccountStatus, ApiKey, DevConfig, User};
use crate::conn::ConnCtx;
use crate::faults::{Fault, Target};
use crate::forge::Forge;
use crate::keyring::KeyRing;
use crate::keys::Alg;
use crate::router::{control_router, main_router, JWKS_PATH};
use crate::state::{PowerCmd, Shared};
use crate::tokens::{mint, Minted, TokenSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Power {
    On,
    /// Going down; `spare` may finish its current response.
    Off {
        spare: Option<u64>,
    },
}

struct Running {
    accept: JoinHandle<()>,
    power: watch::Sender<Power>,
}

/// Listener ownership: address, router, and the accept task while up.
struct Core {
    addr: SocketAddr,
    router: Router,
    running: Mutex<Option<Running>>,
    next_conn: Arc<AtomicU64>,
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Re-binding the same port after down() must not wait for TIME_WAIT connections.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn serve_conn(stream: TcpStream, router: Router, id: u64, mut power: watch::Receiver<Power>) {
    let kill = Arc::new(Notify::new());
    let ctx = ConnCtx { id, kill: kill.clone() };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ctx.clone());
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // Refuse: dropping `conn` closes the socket with no response written.
            _ = kill.notified() => return,
            changed = power.changed(), if !draining => {
                let spared = changed.is_ok() && *power.borrow() == (Power::Off { spare: Some(id) });
                if !spared {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    next_conn: Arc<AtomicU64>,
    mut power: watch::Receiver<Power>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let id = next_conn.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(serve_conn(stream, router.clone(), id, power.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = power.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Every connection got the signal: wait until they are closed (the spared one drains).
    while conns.join_next().await.is_some() {}
}

impl Core {
    fn spawn(&self, listener: TcpListener) -> Running {
        let (power, rx) = watch::channel(Power::On);
        let accept = tokio::spawn(accept_loop(listener, self.router.clone(), self.next_conn.clone(), rx));
        Running { accept, power }
    }

    async fn up(&self) -> io::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_none() {
            *running = Some(self.spawn(bind(self.addr)?));
            tracing::info!(addr = %self.addr, "listening again");
        }
        Ok(())
    }

    async fn down(&self, spare: Option<u64>) {
        let Some(mut r) = self.running.lock().await.take() else {
            return;
        };
        r.power.send_replace(Power::Off { spare });
        if tokio::time::timeout(Duration::from_secs(5), &mut r.accept).await.is_err() {
            r.accept.abort();
        }
        tracing::info!(addr = %self.addr, "down: port closed");
    }

    async fn is_up(&self) -> bool {
        self.running.lock().await.is_some()
    }
}

async fn power_task(core: Weak<Core>, mut commands: mpsc::UnboundedReceiver<PowerCmd>) {
    while let Some(cmd) = commands.recv().await {
        let Some(strong) = core.upgrade() else { break };
        match cmd {
            PowerCmd::Down { spare, for_ms } => {
                strong.down(spare).await;
                if let Some(ms) = for_ms {
                    let core = core.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        if let Some(core) = core.upgrade() {
                            if let Err(e) = core.up().await {
                                tracing::error!(error = %e, "could not listen again");
                            }
                        }
                    });
                }
            }
            PowerCmd::Up => {
                if let Err(e) = strong.up().await {
                    tracing::error!(error = %e, "could not listen again");
                }
            }
        }
    }
}

/// A running dev auth-service. Dropping it stops it (listener and connections).
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use dev_auth_service::{fixtures, DevAuthService, DevConfig, Fault, Target, TokenSpec};
/// let svc = DevAuthService::start(DevConfig::for_tests()).await?;
/// let jwks_url = svc.jwks_url();
/// let token = svc.mint(&TokenSpec::for_user(fixtures::USER_ALICE));
/// svc.set_fault(Target::Lookup, Fault::Status(503));
/// svc.down().await; // connections refused
/// svc.up().await; // same port again
/// assert_eq!(svc.lookups(), 0);
/// # Ok(()) }
/// ```
pub struct DevAuthService {
    shared: Arc<Shared>,
    core: Arc<Core>,
    power_task: JoinHandle<()>,
}

impl DevAuthService {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: DevConfig) -> anyhow::Result<Self> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` (port 0 picks a free one). Generates one signing key per algorithm.
    pub async fn start_at(addr: SocketAddr, config: DevConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let keys = tokio::task::spawn_blocking(KeyRing::generate).await??;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(&config, keys, tx));
        let listener = bind(addr).with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let core = Arc::new(Core {
            addr,
            router: main_router(shared.clone()),
            running: Mutex::new(None),
            next_conn: Arc::new(AtomicU64::new(1)),
        });
        *core.running.lock().await = Some(core.spawn(listener));
        let power_task = tokio::spawn(power_task(Arc::downgrade(&core), rx));
        Ok(DevAuthService { shared, core, power_task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// Base URL, `http://127.0.0.1:PORT` (the plugin's `auth_service_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.core.addr)
    }

    /// `{url}/.well-known/jwks.json` (the plugin's `jwks_url`).
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.url())
    }

    /// `{url}{lookup_path}`.
    pub fn lookup_url(&self) -> String {
        format!("{}{}", self.url(), self.shared.lookup_path)
    }

    /// The configured lookup path.
    pub fn lookup_path(&self) -> &str {
        &self.shared.lookup_path
    }

    /// `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The service token lookups must carry, if any.
    pub fn service_token(&self) -> Option<&str> {
        self.shared.service_token.as_deref()
    }

    /// A router with only the `/dev/` and `/_dev/` routes, to serve on a second listener that
    /// stays reachable while the main port is down (the binary's `--admin-listen`).
    pub fn control_router(&self) -> Router {
        control_router(self.shared.clone())
    }

    // ---- faults, outage, counters -------------------------------------------------------

    /// Sets the fault of `target` (takes effect for the next request).
    pub fn set_fault(&self, target: Target, fault: Fault) {
        self.shared.faults.set(target, fault);
    }

    /// The current fault of `target` (the lookup's for [`Target::Both`]).
    pub fn fault(&self, target: Target) -> Fault {
        self.shared.faults.get(target)
    }

    /// All faults back to [`Fault::Normal`].
    pub fn clear_faults(&self) {
        self.shared.faults.set(Target::Both, Fault::Normal);
    }

    /// Stops listening: new connections are refused and open ones (idle keep-alive or
    /// mid-request) are closed. Returns once the port is closed. No-op when already down.
    pub async fn down(&self) {
        self.core.down(None).await;
    }

    /// Listens again on the same address. Panics if the port cannot be bound again (another
    /// process took it meanwhile); see [`DevAuthService::try_up`].
    pub async fn up(&self) {
        if let Err(e) = self.try_up().await {
            panic!("dev auth-service: cannot listen again on {}: {e}", self.core.addr);
        }
    }

    /// Listens again on the same address. No-op when already up.
    pub async fn try_up(&self) -> io::Result<()> {
        self.core.up().await
    }

    /// Whether the main port is listening.
    pub async fn is_up(&self) -> bool {
        self.core.is_up().await
    }

    /// Lookup requests received (including failed and faulted ones).
    pub fn lookups(&self) -> u64 {
        self.shared.counters.lookups()
    }

    /// JWKS requests received (including faulted ones).
    pub fn jwks_fetches(&self) -> u64 {
        self.shared.counters.jwks_fetches()
    }

    /// Both counters to zero.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    // ---- keys and tokens ----------------------------------------------------------------

    /// A new key of `alg` becomes current; the previous current key of `alg` stays in the JWKS
    /// when `keep_old`. Returns the new kid.
    pub async fn rotate(&self, alg: Alg, keep_old: bool) -> String {
        self.shared.rotate_keys(alg, keep_old).await.expect("key generation")
    }

    /// Kid of the current key of `alg`.
    pub fn current_kid(&self, alg: Alg) -> String {
        self.shared.keys.read().current(alg).kid().to_owned()
    }

    /// The JWKS document as served (without faults).
    pub fn jwks(&self) -> Value {
        self.shared.keys.read().jwks()
    }

    /// Whether `kid` is in the served JWKS.
    pub fn is_published(&self, kid: &str) -> bool {
        self.shared.keys.read().is_published(kid)
    }

    /// Kids in the served JWKS.
    pub fn published_kids(&self) -> Vec<String> {
        self.shared.keys.read().published_kids()
    }

    /// The SPKI PEM of an RSA key this service holds (what an algorithm-confusion attacker
    /// would use as an HMAC secret); `None` for other key types or unknown kids.
    pub fn public_key_pem(&self, kid: &str) -> Option<String> {
        self.shared.keys.read().get(kid)?.public_key_pem().map(str::to_owned)
    }

    /// Adds a known key to, or removes it from, the JWKS without changing the current keys.
    /// False for an unknown kid.
    pub fn set_published(&self, kid: &str, published: bool) -> bool {
        let changed = self.shared.keys.write().set_published(kid, published);
        if changed && !published {
            drop(self.shared.revoked(crate::revocations::jwks()));
        }
        changed
    }

    /// Mints a token; panics on an invalid spec (unknown user, kid/alg mismatch).
    pub fn mint(&self, spec: &TokenSpec) -> String {
        self.try_mint(spec).unwrap_or_else(|e| panic!("dev auth-service mint: {e:#}")).token
    }

    /// Mints a token, returning it with its kid, alg and claims.
    pub fn try_mint(&self, spec: &TokenSpec) -> anyhow::Result<Minted> {
        mint(&self.shared, spec)
    }

    /// Attack tokens against this service's keys.
    pub fn forge(&self) -> Forge {
        Forge::new(self.shared.clone())
    }

    // ---- data ---------------------------------------------------------------------------

    /// Adds or replaces an API key (its account, and user if any, must exist).
    pub fn add_api_key(&self, key: ApiKey) -> anyhow::Result<()> {
        self.shared.directory.write().upsert_api_key(key)
    }

    /// Publishes revocation messages on `channel` of the Redis at `redis_url` from now on
    /// (see the module `revocations`). Call once, inside a tokio runtime.
    pub fn publish_revocations(&self, redis_url: &str, channel: &str) -> anyhow::Result<()> {
        let publisher = crate::revocations::Publisher::start(redis_url, channel)?;
        self.shared.revocations.set(publisher).map_err(|_| anyhow::anyhow!("revocation push is already on"))
    }

    /// Revokes a key (lookups answer 403) and publishes the revocation. False for an unknown
    /// key.
    pub fn revoke_key(&self, key: &str) -> bool {
        let key_id = self.shared.directory.read().key_id(key);
        let revoked = self.shared.directory.write().set_revoked(key, true);
        if let Some(key_id) = key_id {
            drop(self.shared.revoked(crate::revocations::api_key(&key_id)));
        }
        revoked
    }

    /// Un-revokes a key. False for an unknown key.
    pub fn unrevoke_key(&self, key: &str) -> bool {
        self.shared.directory.write().set_revoked(key, false)
    }

    /// Deletes a key (lookups answer 404). False for an unknown key.
    pub fn remove_api_key(&self, key: &str) -> bool {
        let key_id = self.shared.directory.read().key_id(key);
        let removed = self.shared.directory.write().remove_api_key(key);
        if let Some(key_id) = key_id {
            drop(self.shared.revoked(crate::revocations::api_key(&key_id)));
        }
        removed
    }

    /// Adds or replaces an account.
    pub fn add_account(&self, account: Account) {
        self.shared.directory.write().upsert_account(account);
    }

    /// Adds or replaces a user (its account must exist).
    pub fn add_user(&self, user: User) -> anyhow::Result<()> {
        self.shared.directory.write().upsert_user(user)
    }

    /// Suspends or reactivates an account. False for an unknown account.
    pub fn set_account_status(&self, account_id: &str, status: AccountStatus) -> bool {
        let changed = self.shared.directory.write().set_account_status(account_id, status);
        if changed && status == AccountStatus::Suspended {
            drop(self.shared.revoked(crate::revocations::account(account_id)));
        }
        changed
    }
}

impl Drop for DevAuthService {
    fn drop(&mut self) {
        self.power_task.abort();
        if let Ok(mut running) = self.core.running.try_lock() {
            if let Some(r) = running.take() {
                r.power.send_replace(Power::Off { spare: None });
                // Aborting the accept task drops its JoinSet, which aborts every connection.
                r.accept.abort();
            }
        }
    }
}
