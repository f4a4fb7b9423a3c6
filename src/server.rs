//! ① The Unix socket listener: bind (replacing only a stale socket file), accept, deal each
//! connection to one of the single-threaded event loops (shards), then drain on shutdown.
//!
//! Draining: stop accepting, keep serving the connections already open (Kong sends the
//! remaining Steps of in-flight events on them) until no event is alive, bounded by the
//! drain timeout. The socket file is removed only if it is still ours: on `kong reload`
//! the next server may already have bound the same path.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};

use crate::connection::{self, Limits};
use crate::health;
use crate::metrics::{self, KindLabels};
use crate::registry::Registry;

pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl Listener {
    /// Which file at the socket path is ours, for `/ready` (see [`health::SocketOwner`]).
    pub fn owner(&self) -> health::SocketOwner {
        health::SocketOwner::new(self.path.clone(), self.inode)
    }
}

/// Why the socket could not be bound. Each one stops the server at start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} exists and is not a socket; refusing to remove it", path.display())]
    NotASocket { path: PathBuf },
    #[error(
        "another server is listening on {} (a second pluginserver entry with a start_cmd, or a \
         server that is still running?); refusing to take its socket",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error(
        "the socket directory {} does not exist (a typo in --socket? Kong would never find the socket); \
         create it, or pass --create-socket-dir",
        dir.display()
    )]
    NoDirectory { dir: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BindError + 'a {
    move |source| BindError::Io { what, path: path.to_owned(), source }
}

/// Binds `path`. A leftover socket file (Kong never removes it) is replaced only when no
/// server answers on it: a live one belongs to another process, and taking it would leave
/// that process running unreachable. The directory must exist unless `create_dir`.
pub fn bind(path: &Path, mode: u32, create_dir: bool) -> Result<Listener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            if !create_dir {
                return Err(BindError::NoDirectory { dir: dir.to_owned() });
            }
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket { path: path.to_owned() });
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: path.to_owned() }),
            // Nobody listens: a leftover of a dead process.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                return Err(BindError::Io {
                    what: "checking whether a server answers on",
                    path: path.to_owned(),
                    source: e,
                })
            }
        }
        std::fs::remove_file(path).map_err(io("removing stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting permissions of", path))?;
    let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
    Ok(Listener { listener, path: path.to_owned(), inode })
}

pub struct ServeOptions {
    pub limits: Limits,
    pub drain_timeout: Duration,
    /// Event loops serving connections (at least 1).
    pub shards: usize,
}

/// Serves until `shutdown` resolves, then drains. Also runs the abandoned-event reaper.
///
/// Runtime model: `shards` threads, each a single-threaded tokio runtime that owns the
/// connections handed to it. Under Kong's client each RPC wakes the server once (Kong's Lua
/// side is the slow half, so the server mostly sleeps between RPCs); on one thread that
/// wake-up is all it pays, whereas a work-stealing runtime adds cross-thread wake-ups to
/// every RPC. This task (on the caller's runtime) only accepts and deals the connections out
/// round-robin; Kong keeps them pooled, so that hop is paid once per connection. Instances and
/// events stay process-wide in `registry`: a Step may arrive on any connection, on any shard.
pub async fn serve(
    listener: Listener,
    registry: Registry,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = &'static str>,
) {
    let limits = Arc::new(options.limits);
    let reaper = tokio::spawn(reap_forever(registry.clone()));
    let shards: Vec<Shard> = (0..options.shards.max(1))
        .filter_map(|i| match Shard::start(i, registry.clone(), limits.clone()) {
            Ok(shard) => Some(shard),
            Err(e) => {
                tracing::error!(shard = i, "cannot start a shard thread: {e}");
                None
            }
        })
        .collect();
    if shards.is_empty() {
        tracing::error!("no shard could start: not serving");
        reaper.abort();
        return;
    }
    tracing::debug!(shards = shards.len(), "serving connections on single-threaded event loops");
    let mut next = 0usize;
    tokio::pin!(shutdown);
    let reason = loop {
        tokio::select! {
            accepted = listener.listener.accept() => match accepted.and_then(|(stream, _)| stream.into_std()) {
                Ok(stream) => {
                    // A shard whose thread died (it cannot, short of a panic) hands the
                    // connection back; the next one takes it.
                    let mut stream = Some(stream);
                    for _ in 0..shards.len() {
                        let shard = &shards[next % shards.len()];
                        next = next.wrapping_add(1);
                        match shard.tx.send(stream.take().expect("held")) {
                            Ok(()) => break,
                            Err(tokio::sync::mpsc::error::SendError(back)) => stream = Some(back),
                        }
                    }
                    if stream.is_some() {
                        tracing::error!("every shard is gone: closing a new connection");
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            reason = &mut shutdown => break reason,
        }
    };
    tracing::info!(reason, events = registry.live_events(), "shutting down: draining in-flight events");
    let Listener { listener, path, inode } = listener;
    drop(listener);
    if std::fs::metadata(&path).map(|m| m.ino()).ok() == Some(inode) {
        let _ = std::fs::remove_file(&path);
    }
    // Shards keep serving the open connections (Kong sends the remaining Steps on them); they
    // stop with the process.
    drop(shards);
    let deadline = Instant::now() + options.drain_timeout;
    while !registry.is_idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !registry.is_idle() {
        tracing::warn!(events = registry.live_events(), "drain timeout: exiting with events in flight");
    }
    reaper.abort();
}

/// One event loop: a thread running a current-thread runtime, fed accepted connections.
struct Shard {
    tx: tokio::sync::mpsc::UnboundedSender<std::os::unix::net::UnixStream>,
}

impl Shard {
    fn start(index: usize, registry: Registry, limits: Arc<Limits>) -> std::io::Result<Shard> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::os::unix::net::UnixStream>();
        std::thread::Builder::new().name(format!("ghasi-shard-{index}")).spawn(move || {
            runtime.block_on(async move {
                while let Some(stream) = rx.recv().await {
                    match UnixStream::from_std(stream) {
                        Ok(stream) => {
                            tokio::spawn(serve_connection(stream, registry.clone(), limits.clone()));
                        }
                        Err(e) => tracing::error!("cannot register a connection with its shard: {e}"),
                    }
                }
                // The acceptor is gone (shutdown): keep serving what is open until exit.
                std::future::pending::<()>().await;
            });
        })?;
        Ok(Shard { tx })
    }
}

/// Serves one accepted connection to its end, counting it in the metrics. Generic over the
/// transport so the in-process tests drive exactly this path over in-memory pipes.
pub async fn serve_connection<S>(mut stream: S, registry: Registry, limits: Arc<Limits>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let m = metrics::global();
    m.connections_open.inc();
    let result = connection::serve(&mut stream, registry, &limits).await;
    if let Err(e) = &result {
        m.connection_errors.get_or_create(&KindLabels { kind: e.kind() }).inc();
        tracing::warn!("connection closed: {e}");
    }
    m.connections_open.dec();
    drop(stream);
}

/// Ends parked events Kong abandoned, checking a few times per event timeout. Runs on the
/// tokio clock, so a test with paused time can make hours pass at once.
pub async fn reap_forever(registry: Registry) {
    let period = (registry.event_timeout() / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let n = registry.reap_abandoned();
        if n > 0 {
            tracing::warn!(reaped = n, "reaped events abandoned by Kong");
        }
    }
}
