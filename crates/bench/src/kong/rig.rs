//! One kongrig per server: starting a plugin server behind Kong's own plugin-server Lua in
//! nginx (the rig's `run.sh`, a private PREFIX and port), reading its CPU and RSS from `/proc`,
//! and stopping it (`stop.sh`) when the session is dropped.
//!
//! Why apart from the measurement: the rig is the part that knows about nginx, PREFIX folders and
//! process trees; the measurement only needs a port and a CPU counter.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::procfs;

/// What is missing for the rig mode, in words an operator can act on.
pub fn check(rig: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        rig.join("run.sh").is_file() && rig.join("setup.sh").is_file(),
        "{} is not a kongrig folder (no run.sh/setup.sh). Give the rig with --kong-rig DIR or \
         GHASI_KONG_RIG: a folder with Kong's own plugin-server client for nginx",
        rig.display()
    );
    let missing: Vec<&str> = [("/usr/sbin/nginx", "nginx-light + libnginx-mod-http-lua"), ("/usr/bin/wrk", "wrk")]
        .iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(_, what)| *what)
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "missing {}: run {}/setup.sh (it apt-installs them)",
        missing.join(", "),
        rig.display()
    );
    Ok(())
}

/// A server behind its own rig.
#[derive(Clone)]
pub(super) struct ServerSpec {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) plugin: String,
    pub(super) start_cmd: String,
    pub(super) query_cmd: Option<String>,
    pub(super) socket: PathBuf,
    pub(super) config: serde_json::Value,
}

/// One server running behind its own rig (a private nginx PREFIX and port); stopped on drop.
pub(super) struct Session {
    pub(super) spec: ServerSpec,
    rig: PathBuf,
    prefix: PathBuf,
    pub(super) port: u16,
    pids: Vec<u32>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Session {
    /// Starts `spec` behind the rig at `rig` (state folder `state`) for Kong `version`.
    pub(super) fn start(
        rig: &Path,
        state: &Path,
        version: &str,
        spec: &ServerSpec,
        dir: &Path,
    ) -> anyhow::Result<Session> {
        let prefix = dir.join(format!("{}-{}", spec.id, version));
        std::fs::create_dir_all(&prefix)?;
        let port = free_port();
        let mut cmd = Command::new(rig.join("run.sh"));
        cmd.env("KONGRIG_STATE", state)
            .env("PREFIX", &prefix)
            .env("KONG_VERSION", version)
            .env("SOCKET", &spec.socket)
            .env("PLUGIN", &spec.plugin)
            .env("CONFIG_JSON", spec.config.to_string())
            .env("START_CMD", &spec.start_cmd)
            .env("PORT", port.to_string())
            .env("UPSTREAM_PORT", free_port().to_string())
            .env("PHASES", "access")
            .env("PRIORITY", "1250")
            .env("GHASI_LOG", "warn")
            .env_remove("GHASI_METRICS_LISTEN")
            .env_remove("GHASI_THREADS")
            .stdin(Stdio::null());
        match &spec.query_cmd {
            Some(q) => cmd.env("QUERY_CMD", q),
            None => cmd.env_remove("QUERY_CMD"),
        };
        let out = cmd.output().context("running the rig's run.sh")?;
        let mut session = Session { spec: spec.clone(), rig: rig.to_path_buf(), prefix, port, pids: Vec::new() };
        if !out.status.success() {
            anyhow::bail!(
                "run.sh for {} (Kong {version}) failed: {}{}",
                spec.label,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let leader: u32 = std::fs::read_to_string(session.prefix.join("pluginserver.pid"))?.trim().parse()?;
        session.pids = descendants(leader);
        Ok(session)
    }

    /// CPU time of the server's whole process tree so far.
    pub(super) fn cpu(&self) -> Duration {
        self.pids.iter().filter_map(|&p| procfs::process_cpu(p)).map(|c| c.total()).sum()
    }

    pub(super) fn rss_mib(&self) -> f64 {
        self.pids.iter().filter_map(|&p| procfs::memory(p)).map(|m| m.rss_mib()).sum()
    }

    pub(super) fn log_tail(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.prefix.join("logs").join(f)).unwrap_or_default();
        let tail =
            |s: String| s.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("error.log:\n{}\nserver:\n{}", tail(read("error.log")), tail(read("pluginserver.log")))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new(self.rig.join("stop.sh"))
            .env("PREFIX", &self.prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `pid` and every process below it (the rig starts servers under a `bash -c` parent).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}
