//! Starting the plugin servers under test on temporary sockets: ours, Kong's official
//! Python server (`kong-pdk` 0.36 from PyPI) and Kong's official JavaScript server
//! (`kong-pdk` 0.6.0 from npm).
//!
//! | server | command | socket |
//! |---|---|---|
//! | ghasi | `ghasi-plugin-server --socket DIR/ghasi.sock` (built with the `test-hooks` feature, env `GHASI_TEST_PLUGINS=1` for the floor plugin; the memory scenario adds `--metrics-listen` and `--api-key-cache-entries`) | `DIR/ghasi.sock` |
//! | Python | `kong-python-pluginserver -d bench/python -p DIR --socket-name python.sock [-g]` | `<prefix>/<socket-name>` |
//! | JavaScript | `node kong-js-pluginserver --plugins-directory bench/js/plugins --kong-prefix DIR --sock-name js.sock` | `<kong-prefix>/<sock-name>` |
//!
//! The Python server's default mode runs a thread per connection and per event; `-g`
//! (gevent) uses greenlets instead. Both are measured. Every server is started with
//! `PR_SET_PDEATHSIG`, so none outlives the harness; servers must therefore be started from
//! the main thread (the signal follows the *thread* that forked).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procfs;

/// Which plugin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ghasi,
    /// Kong's Python server; `gevent` = its `-g` mode.
    Python {
        gevent: bool,
    },
    Js,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ghasi => "ghasi (Rust)",
            Kind::Python { gevent: false } => "Python kong-pdk 0.36 (threads)",
            Kind::Python { gevent: true } => "Python kong-pdk 0.36 (gevent -g)",
            Kind::Js => "JS kong-pdk 0.6.0",
        }
    }
}

/// Where the servers' executables and plugin files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub ghasi: PathBuf,
    pub python_server: PathBuf,
    pub python_plugins: PathBuf,
    pub node: PathBuf,
    pub js_server: PathBuf,
    pub js_plugins: PathBuf,
}

/// A plugin server running for one scenario.
pub struct Server {
    child: Child,
    pub kind: Kind,
    pub socket: PathBuf,
    /// `--metrics-listen` address (ours only, when asked for).
    pub metrics: Option<SocketAddr>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server of `kind` and waits until its socket accepts connections.
    pub fn start(kind: Kind, paths: &Paths, with_metrics: bool) -> anyhow::Result<Server> {
        Server::start_with(kind, paths, with_metrics, &[])
    }

    /// [`Server::start`] with extra command-line arguments for the server.
    pub fn start_with(kind: Kind, paths: &Paths, with_metrics: bool, args: &[String]) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("ghasi-bench-").tempdir().context("temp dir")?;
        let log = dir.path().join("server.log");
        let mut metrics = None;
        let (mut cmd, socket) = match kind {
            Kind::Ghasi => {
                let socket = dir.path().join("ghasi.sock");
                let mut cmd = Command::new(&paths.ghasi);
                cmd.arg("--socket").arg(&socket).env("GHASI_TEST_PLUGINS", "1").env("GHASI_LOG", "warn");
                for var in ["GHASI_METRICS_LISTEN", "GHASI_TEST_CLOCK", "GHASI_LOG_FORMAT"] {
                    cmd.env_remove(var);
                }
                if with_metrics {
                    let addr = free_local_port()?;
                    cmd.arg("--metrics-listen").arg(addr.to_string());
                    metrics = Some(addr);
                }
                (cmd, socket)
            }
            Kind::Python { gevent } => {
                let mut cmd = Command::new(&paths.python_server);
                cmd.arg("-d")
                    .arg(&paths.python_plugins)
                    .arg("-p")
                    .arg(dir.path())
                    .arg("--socket-name")
                    .arg("python.sock");
                if gevent {
                    cmd.arg("-g");
                }
                (cmd, dir.path().join("python.sock"))
            }
            Kind::Js => {
                let mut cmd = Command::new(&paths.node);
                cmd.arg(&paths.js_server)
                    .arg("--plugins-directory")
                    .arg(&paths.js_plugins)
                    .arg("--kong-prefix")
                    .arg(dir.path())
                    .arg("--sock-name")
                    .arg("js.sock");
                (cmd, dir.path().join("js.sock"))
            }
        };
        cmd.args(args);
        let log_file = std::fs::File::create(&log).context("server log file")?;
        let err_file = log_file.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(log_file).stderr(err_file);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let program = format!("{:?}", cmd.get_program());
        let child = cmd.spawn().with_context(|| format!("starting {} ({program})", kind.label()))?;
        let mut server = Server { child, kind, socket, metrics, log, _dir: dir };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu(&self) -> procfs::Cpu {
        procfs::process_cpu(self.pid()).unwrap_or_default()
    }

    pub fn memory(&self) -> procfs::Memory {
        procfs::memory(self.pid()).unwrap_or_default()
    }

    /// The server's own log (stdout + stderr), for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at start ({status}); log:\n{}", self.kind.label(), self.log_tail());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                let metrics_ready = match self.metrics {
                    Some(addr) => TcpStream::connect(addr).is_ok(),
                    None => true,
                };
                if metrics_ready {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{} never opened {}; log:\n{}", self.kind.label(), self.socket.display(), self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Our server's Prometheus text, if it was started with metrics.
    pub fn scrape_metrics(&self) -> Option<String> {
        let addr = self.metrics?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Sum of a metric's samples whose line contains every one of `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let text = self.scrape_metrics()?;
        let mut found = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(name) else { continue };
            if !(rest.starts_with('{') || rest.starts_with(' ')) || !labels.iter().all(|l| line.contains(l)) {
                continue;
            }
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a local benchmark).
fn free_local_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// How to build the server the benchmark needs.
const BUILD: &str = "cargo build --release -p ghasi-plugin-server --features test-hooks (scripts/bench does)";

/// Checks that `ghasi` is our server built with the `test-hooks` feature: the emulator
/// micro-benchmark's floor is its test-only `ghasi-test-script` plugin and the revocation
/// scenario moves its test clock, neither of which a release build contains. (Behind Kong's
/// own client the floor is the zero server, and the shipped build is measured.)
pub fn check_ghasi(ghasi: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(is_executable(ghasi), "{} not found: build it first: {BUILD}", ghasi.display());
    let dump = Command::new(ghasi)
        .arg("--dump")
        .env("GHASI_TEST_PLUGINS", "1")
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {} --dump", ghasi.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&dump.stdout).contains("ghasi-test-script"),
        "{} was built without the test-hooks feature (the floor plugin, the test clock): {BUILD}",
        ghasi.display()
    );
    Ok(())
}

/// True when `path` exists and is executable by someone.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
