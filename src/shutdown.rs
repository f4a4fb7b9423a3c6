//! When to stop: SIGTERM (Kong ≥3.0 sends it when worker #0 exits), SIGINT, or the parent
//! process going away (Kong 2.8 sends nothing; a server left behind would hold the socket
//! path and answer for a Kong that no longer exists).

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the signal handlers now and returns what resolves with the reason once the
/// server should drain and exit. Call it before binding the socket: until the handlers are
/// installed a SIGTERM kills the process outright, without draining.
pub fn requested() -> anyhow::Result<impl Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let original_parent = std::os::unix::process::parent_id();
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = parent_gone(original_parent) => "parent process exited",
        }
    })
}

/// Polls the parent pid once a second: a change means we were re-parented (to init or a
/// subreaper) because the process that started us died.
async fn parent_gone(original: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != original {
            return;
        }
    }
}
