//! When to stop: SIGTERM (Kong ≥3.0 sends it when worker #0 exits), SIGINT, or the parent
//! process going away (Kong 2.8 sends nothing; a server left behind would hold the socket
//! path and answer for a Kong that no longer exists).

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the reason once the server should drain and exit.
pub async fn requested() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = parent_gone() => "parent process exited",
    }
}

/// Polls the parent pid once a second: a change means we were re-parented (to init or a
/// subreaper) because the process that started us died.
async fn parent_gone() {
    // SAFETY-free: getppid has no preconditions.
    let original = std::os::unix::process::parent_id();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != original {
            return;
        }
    }
}
