//! Shared by the integration tests: runs the real `ghasi-plugin-server` binary on a
//! temporary Unix socket, with its stderr (the logs) captured to a file.
#![allow(dead_code)]

pub mod http;
pub mod raw;
pub mod redis;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub socket: PathBuf,
    log_path: PathBuf,
    dir: tempfile::TempDir,
    options: Options,
}

#[derive(Clone)]
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The binary under test is built with the `test-hooks` feature (the package's self
/// dev-dependency turns it on for every `cargo test` build); these switches enable the hooks.
impl Default for Options {
    fn default() -> Self {
        Options {
            args: vec![],
            env: vec![
                ("GHASI_TEST_PLUGINS".into(), "1".into()),
                ("GHASI_TEST_CLOCK".into(), "1".into()),
                ("GHASI_LOG".into(), "debug".into()),
            ],
        }
    }
}

impl Server {
    /// Starts the binary with the test plugins and the test clock enabled.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("ghasi.socket");
        Server::spawn(options, dir, socket)
    }

    /// Like [`start_with`](Server::start_with) on a given socket path.
    pub fn start_with_socket(options: Options, socket: &Path) -> Server {
        Server::spawn(options, tempfile::tempdir().expect("tempdir"), socket.to_owned())
    }

    fn spawn(options: Options, dir: tempfile::TempDir, socket: PathBuf) -> Server {
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"));
        cmd.arg("--socket").arg(&socket).args(&options.args);
        cmd.env_remove("GHASI_METRICS_LISTEN");
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawning ghasi-plugin-server");
        let server = Server { child, socket, log_path, dir, options };
        server.wait_connectable();
        server
    }

    fn wait_connectable(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("server socket never became connectable; log:\n{}", self.logs());
    }

    /// Kills the process and starts a new one on the same socket (a crash + Kong respawn).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new().append(true).open(&self.log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"));
        cmd.arg("--socket").arg(&self.socket).args(&self.options.args).env_remove("GHASI_METRICS_LISTEN");
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        self.child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("respawning ghasi-plugin-server");
        self.wait_connectable();
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address of the `--metrics-listen` listener, once the server announced it (port 0
    /// resolves to a real port only there).
    pub fn metrics_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| l.contains("serving /metrics")) {
                let addr = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next());
                return addr.expect("the listener line names its address").to_owned();
            }
            assert!(Instant::now() < deadline, "the metrics listener never announced itself:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with `--metrics-listen 127.0.0.1:0` plus `extra`, and its metrics address.
pub fn start_with_metrics(extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_with(Options { args, ..Default::default() });
    let addr = server.metrics_addr();
    (server, addr)
}
