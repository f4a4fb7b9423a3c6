//! `--log-file PATH`: a copy of every log line in a file the SRE's log shipper can read.
//!
//! Why: Kong reads the plugin server's stdout/stderr and writes each line into its own error
//! log at INFO level only, so at Kong's default `log_level = notice` every warning and error
//! we print is dropped (see docs/operations.md#logs). The file receives the same lines as stderr,
//! whatever Kong's level.
//!
//! The file is opened for appending (several processes and restarts may share it; each line
//! is one `write` on an `O_APPEND` descriptor) and reopened on SIGHUP, so logrotate can
//! rename it and signal us (`postrotate kill -HUP …`), no `copytruncate` needed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, thiserror::Error)]
#[error("--log-file {}: cannot open it for appending: {source}", path.display())]
pub struct OpenError {
    path: PathBuf,
    source: io::Error,
}

/// The log file; clones share the descriptor, which [`LogFile::reopen`] swaps.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: RwLock<File>,
}

fn open(path: &Path) -> Result<File, OpenError> {
    // 0640: log lines name routes and outcomes; they are for operators, not every local user.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| OpenError { path: path.to_owned(), source })
}

impl LogFile {
    /// Opens (creating) `path` for appending; an error names the flag and the path.
    pub fn open(path: &Path) -> Result<LogFile, OpenError> {
        let file = open(path)?;
        Ok(LogFile { inner: Arc::new(Inner { path: path.to_owned(), file: RwLock::new(file) }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens the path again and writes there from now on (the old descriptor is closed once
    /// no line is being written through it). On failure the old file keeps receiving lines.
    pub fn reopen(&self) -> Result<(), OpenError> {
        let file = open(&self.inner.path)?;
        *self.inner.file.write() = file;
        Ok(())
    }

    /// Reopens the file on every SIGHUP. The handler is installed before this returns, so
    /// a SIGHUP sent after startup never takes its default action (exit). Must be called
    /// inside a tokio runtime.
    pub fn reopen_on_sighup(&self) -> io::Result<impl std::future::Future<Output = ()>> {
        let mut hangups = signal(SignalKind::hangup())?;
        let this = self.clone();
        Ok(async move {
            while hangups.recv().await.is_some() {
                match this.reopen() {
                    Ok(()) => tracing::info!(path = %this.path().display(), "SIGHUP: log file reopened"),
                    Err(e) => tracing::warn!("SIGHUP: {e}; still writing to the previous file"),
                }
            }
        })
    }
}

/// One log line's access to the current descriptor (a read lock: writers do not block each
/// other, only a reopen waits for the lines in progress).
pub struct LineWriter<'a>(RwLockReadGuard<'a, File>);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self.0).write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(self.inner.file.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_path_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ghasi.log");
        let log = LogFile::open(&path).unwrap();
        log.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("ghasi.log.1")).unwrap();
        log.make_writer().write_all(b"two\n").unwrap(); // still the renamed file
        log.reopen().unwrap();
        log.make_writer().write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("ghasi.log.1")).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn a_path_that_cannot_be_opened_names_the_flag() {
        let err = LogFile::open(Path::new("/nonexistent-dir/ghasi.log")).err().unwrap().to_string();
        assert!(err.starts_with("--log-file /nonexistent-dir/ghasi.log: cannot open"), "{err}");
    }
}
