//! ① The Unix socket listener: bind (replacing only a stale socket file), accept concurrently,
//! one task per connection, then drain on shutdown.
//!
//! Draining: stop accepting, keep serving the connections already open (Kong sends the
//! remaining Steps of in-flight events on them) until no event is alive, bounded by the
//! drain timeout. The socket file is removed only if it is still ours: on `kong reload`
//! the next server may already have bound the same path.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;

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
            Err(e) => return Err(BindError::Io { what: "checking whether a server answers on", path: path.to_owned(), source: e }),
        }
        std::fs::remove_file(path).map_err(io("removing stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("setting permissions of", path))?;
    let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
    Ok(Listener { listener, path: path.to_owned(), inode })
}

pub struct ServeOptions {
    pub limits: Limits,
    pub drain_timeout: Duration,
}

/// Serves until `shutdown` resolves, then drains. Also runs the abandoned-event reaper.
pub async fn serve(
    listener: Listener,
    registry: Registry,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = &'static str>,
) {
    let limits = Arc::new(options.limits);
    let reaper = tokio::spawn(reap_forever(registry.clone()));
    tokio::pin!(shutdown);
    let reason = loop {
        tokio::select! {
            accepted = listener.listener.accept() => match accepted {
                Ok((mut stream, _)) => {
                    let (registry, limits) = (registry.clone(), limits.clone());
                    tokio::spawn(async move {
                        let m = metrics::global();
                        m.connections_open.inc();
                        let result = connection::serve(&mut stream, registry, &limits).await;
                        if let Err(e) = &result {
                            m.connection_errors.get_or_create(&KindLabels { kind: e.kind() }).inc();
                            tracing::warn!("connection closed: {e}");
                        }
                        m.connections_open.dec();
                        drop(stream);
                    });
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
    let deadline = Instant::now() + options.drain_timeout;
    while !registry.is_idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !registry.is_idle() {
        tracing::warn!(events = registry.live_events(), "drain timeout: exiting with events in flight");
    }
    reaper.abort();
}

async fn reap_forever(registry: Registry) {
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
