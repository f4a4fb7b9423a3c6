//! The benchmark through Kong's own plugin-server client: a kongrig folder (Kong's
//! unmodified `plugin_servers` Lua in Debian's nginx, 2 workers) in front of each server, and
//! `wrk --latency` against nginx. Every server runs behind its own rig at once (private
//! PREFIX and ports); the cells are then measured in turn, round after round, and each
//! figure is the median over the rounds.
//!
//! Per cell: req/s, p50 and p99 (wrk), server CPU µs per request (utime + stime of the
//! server's whole process tree from `/proc`, over the measured window ÷ requests), RSS after
//! the last round.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::auth::{self, Auth};
use crate::procfs;

pub struct Options {
    pub rig: PathBuf,
    pub state: PathBuf,
    pub ghasi: PathBuf,
    pub bench: PathBuf,
    pub versions: Vec<String>,
    pub shards: Vec<usize>,
    pub conns: Vec<usize>,
    pub seconds: f64,
    pub rounds: usize,
    pub wrk_threads: usize,
}

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
struct ServerSpec {
    id: String,
    label: String,
    plugin: String,
    start_cmd: String,
    query_cmd: Option<String>,
    socket: PathBuf,
    config: serde_json::Value,
}

struct Session {
    spec: ServerSpec,
    rig: PathBuf,
    prefix: PathBuf,
    port: u16,
    pids: Vec<u32>,
}

/// One measured cell: a request against a session.
struct Cell {
    session: usize,
    title: String,
    rpcs: u32,
    headers: Vec<(String, String)>,
    status: u16,
    conns: usize,
}

#[derive(Default, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    non2xx: u64,
}

pub struct CellResult {
    pub version: String,
    pub title: String,
    pub server: String,
    pub rpcs: u32,
    pub conns: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us: f64,
    pub rss_mib: f64,
    pub unexpected: u64,
    pub error: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Session {
    fn start(opts: &Options, version: &str, spec: &ServerSpec, dir: &Path) -> anyhow::Result<Session> {
        let prefix = dir.join(format!("{}-{}", spec.id, version));
        std::fs::create_dir_all(&prefix)?;
        let port = free_port();
        let mut cmd = Command::new(opts.rig.join("run.sh"));
        cmd.env("KONGRIG_STATE", &opts.state)
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
        let mut session = Session { spec: spec.clone(), rig: opts.rig.clone(), prefix, port, pids: Vec::new() };
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

    fn cpu(&self) -> Duration {
        self.pids.iter().filter_map(|&p| procfs::process_cpu(p)).map(|c| c.total()).sum()
    }

    fn rss_mib(&self) -> f64 {
        self.pids.iter().filter_map(|&p| procfs::memory(p)).map(|m| m.rss_mib()).sum()
    }

    fn log_tail(&self) -> String {
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

/// Status of one GET through the rig.
fn status_of(port: u16, headers: &[(String, String)]) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = String::from("GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")
}

/// wrk's latency figure (`812.00us`, `1.23ms`, `2.00s`) in milliseconds.
fn ms(v: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mul)
}

fn wrk(port: u16, cell: &Cell, seconds: f64, threads: usize) -> anyhow::Result<(String, Duration)> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", threads.min(cell.conns).max(1)))
        .arg(format!("-c{}", cell.conns))
        .arg(format!("-d{}s", seconds.max(1.0).round() as u64))
        .arg("--latency");
    for (k, v) in &cell.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://127.0.0.1:{port}/bench"));
    let started = Instant::now();
    let out = cmd.output().context("running wrk")?;
    anyhow::ensure!(out.status.success(), "wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), started.elapsed()))
}

fn parse_wrk(text: &str) -> Option<(f64, f64, f64, u64, u64)> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let (mut requests, mut non2xx) = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = ms(v),
            ["99%", v] => p99 = ms(v),
            [n, "requests", "in", ..] => requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => non2xx = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some((rps?, p50?, p99?, requests, non2xx))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs every server behind Kong `version`'s client and measures every cell.
pub fn run_version(opts: &Options, version: &str, auth: &Auth, jwt_token: &str) -> anyhow::Result<Vec<CellResult>> {
    let dir = tempfile::Builder::new().prefix("ghasi-bench-kong-").tempdir_in(&opts.state)?;
    let sock = |name: &str| dir.path().join(format!("{name}.sock"));
    let ghasi = opts.ghasi.display().to_string();
    let js_server = opts.state.join("js/node_modules/.bin/kong-js-pluginserver");
    let python = opts.state.join("venv/bin/python");
    let rig = opts.rig.display();

    let mut specs = vec![ServerSpec {
        id: "zero".into(),
        label: "zero-work server (bench crate, 1 thread)".into(),
        plugin: "zero-work".into(),
        start_cmd: format!("{} zero-work-server --socket {}", opts.bench.display(), sock("zero").display()),
        query_cmd: None,
        socket: sock("zero"),
        config: serde_json::json!({}),
    }];
    // `threads: None` runs the server's default shard count (what ships).
    let ghasi_spec =
        |id: String, label: String, plugin: &str, config: serde_json::Value, threads: Option<usize>| ServerSpec {
            start_cmd: match threads {
                Some(n) => format!("{ghasi} --socket {} --threads {n}", sock(&id).display()),
                None => format!("{ghasi} --socket {}", sock(&id).display()),
            },
            query_cmd: Some(format!("{ghasi} --dump --plugin {plugin}")),
            socket: sock(&id),
            plugin: plugin.into(),
            id,
            label,
            config,
        };
    for &n in &opts.shards {
        let label = format!("ghasi, --threads {n}");
        specs.push(ghasi_spec(format!("key{n}"), label, "ghasi-api-key-lookup", auth.api_key_config(), Some(n)));
    }
    let default = "ghasi, default threads".to_string();
    let mut miss_config = auth.api_key_config();
    miss_config["cache_ttl"] = 0.into();
    specs.push(ghasi_spec("miss".into(), default.clone(), "ghasi-api-key-lookup", miss_config, None));
    specs.push(ghasi_spec("jwt".into(), default, "ghasi-jwt", auth.jwt_config(), None));
    let js_dir = dir.path().join("js");
    if js_server.exists() {
        std::fs::create_dir_all(&js_dir)?;
        specs.push(ServerSpec {
            id: "js".into(),
            label: "Kong JS PDK 0.6.0 (node)".into(),
            plugin: "key-check".into(),
            start_cmd: format!("{} -d {rig}/examples/js/plugins -p {}", js_server.display(), js_dir.display()),
            query_cmd: Some(format!("{} -d {rig}/examples/js/plugins --dump-all-plugins", js_server.display())),
            socket: js_dir.join("js_pluginserver.sock"),
            config: serde_json::json!({}),
        });
    } else {
        eprintln!(
            "kong {version}: no {}: JS server skipped (run the rig's setup.sh with npm installed)",
            js_server.display()
        );
    }
    let py_dir = dir.path().join("py");
    if python.exists() {
        std::fs::create_dir_all(&py_dir)?;
        specs.push(ServerSpec {
            id: "py".into(),
            label: "Kong Python PDK 0.36 (gevent -g)".into(),
            plugin: "key-check".into(),
            start_cmd: format!("{} {rig}/examples/python/key-check.py -g -p {}", python.display(), py_dir.display()),
            query_cmd: Some(format!("{} {rig}/examples/python/key-check.py --dump", python.display())),
            socket: py_dir.join("key-check.sock"),
            config: serde_json::json!({}),
        });
    }

    let mut sessions = Vec::new();
    for spec in &specs {
        eprintln!("kong {version}: starting {} ({})", spec.id, spec.label);
        sessions.push(Session::start(opts, version, spec, dir.path())?);
    }
    let idx = |id: &str| sessions.iter().position(|s| s.spec.id == id);
    let key = vec![("x-api-key".to_string(), auth::key("hit", 0))];
    let bearer = vec![("authorization".to_string(), format!("Bearer {jwt_token}"))];
    let mut cells = Vec::new();
    for &c in &opts.conns {
        let mut add = |id: &str, title: &str, rpcs: u32, headers: &Vec<(String, String)>, status: u16| {
            if let Some(session) = idx(id) {
                cells.push(Cell { session, title: title.into(), rpcs, headers: headers.clone(), status, conns: c });
            }
        };
        add("zero", "key present (floor)", 4, &key, 200);
        for &n in &opts.shards {
            add(&format!("key{n}"), "API key, cache hit", 4, &key, 200);
        }
        add("jwt", "JWT RS256, verified-token hit", 4, &bearer, 200);
        add("js", "minimal key check, key present", 3, &key, 200);
        add("py", "minimal key check, key present", 3, &key, 200);
        add("zero", "no key → 401 (floor)", 2, &vec![], 401);
        // On the cache_ttl 0 server: a denial without a key never reaches the cache.
        add("miss", "API key missing → 401", 2, &vec![], 401);
        add("js", "minimal key check, no key → 401", 2, &vec![], 401);
        add("miss", "API key, cache miss (cache_ttl 0) → auth-service", 4, &key, 200);
    }

    // Each cell once, unmeasured: instances exist, caches hold the key/token, pools are warm.
    let mut broken: Vec<Option<String>> = vec![None; cells.len()];
    for (i, cell) in cells.iter().enumerate() {
        let s = &sessions[cell.session];
        match status_of(s.port, &cell.headers) {
            Ok(st) if st == cell.status => {
                let _ = wrk(s.port, cell, 1.0, opts.wrk_threads);
            }
            Ok(st) => broken[i] = Some(format!("answered {st}, expected {}\n{}", cell.status, s.log_tail())),
            Err(e) => broken[i] = Some(format!("{e:#}\n{}", s.log_tail())),
        }
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cells.len()];
    for round in 0..opts.rounds {
        for (i, cell) in cells.iter().enumerate() {
            if broken[i].is_some() {
                continue;
            }
            let s = &sessions[cell.session];
            let before = s.cpu();
            let result = wrk(s.port, cell, opts.seconds, opts.wrk_threads);
            let cpu = s.cpu().saturating_sub(before);
            match result.map(|(text, _)| parse_wrk(&text).ok_or(text)) {
                Ok(Ok((rps, p50, p99, requests, non2xx))) => {
                    let unexpected = if cell.status == 200 { non2xx } else { requests.saturating_sub(non2xx) };
                    samples[i].push(Sample {
                        rps,
                        p50_ms: p50,
                        p99_ms: p99,
                        cpu_us: cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
                        non2xx: unexpected,
                    });
                    eprintln!(
                        "kong {version} round {}: {:<28} {:<45} c={:<3} {:>8.0} req/s p99 {:>6.2} ms {:>6.1} µs/req",
                        round + 1,
                        s.spec.label,
                        cell.title,
                        cell.conns,
                        rps,
                        p99,
                        cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
                    );
                }
                Ok(Err(text)) => broken[i] = Some(format!("unreadable wrk output: {text}")),
                Err(e) => broken[i] = Some(format!("{e:#}")),
            }
        }
    }
    let results = cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let s = &sessions[cell.session];
            let v = &samples[i];
            CellResult {
                version: version.into(),
                title: cell.title.clone(),
                server: s.spec.label.clone(),
                rpcs: cell.rpcs,
                conns: cell.conns,
                rps: median(v.iter().map(|x| x.rps).collect()),
                p50_ms: median(v.iter().map(|x| x.p50_ms).collect()),
                p99_ms: median(v.iter().map(|x| x.p99_ms).collect()),
                cpu_us: median(v.iter().map(|x| x.cpu_us).collect()),
                rss_mib: s.rss_mib(),
                unexpected: v.iter().map(|x| x.non2xx).sum(),
                error: broken[i].clone(),
            }
        })
        .collect();
    drop(sessions);
    Ok(results)
}

fn num(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.digits$}")
    }
}

/// The markdown table of one Kong version, and the targets of project issue 13.
pub fn report(results: &[CellResult], opts: &Options) -> String {
    let mut md = String::new();
    let versions: Vec<&str> = {
        let mut v: Vec<&str> = results.iter().map(|r| r.version.as_str()).collect();
        v.dedup();
        v
    };
    for version in versions {
        let rows: Vec<&CellResult> = results.iter().filter(|r| r.version == version).collect();
        md.push_str(&format!("\n#### Kong {version}'s client\n\n"));
        md.push_str("| scenario | server | RPCs/req | conns | req/s | p50 ms | p99 ms | server CPU µs/req | RSS MiB | unexpected statuses |\n");
        md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for r in &rows {
            match &r.error {
                Some(e) => md.push_str(&format!(
                    "| {} | {} | {} | {} | failed: {} | | | | | |\n",
                    r.title,
                    r.server,
                    r.rpcs,
                    r.conns,
                    e.lines().next().unwrap_or("")
                )),
                None => md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} |\n",
                    r.title,
                    r.server,
                    r.rpcs,
                    r.conns,
                    num(r.rps, 0),
                    num(r.p50_ms, 2),
                    num(r.p99_ms, 2),
                    num(r.cpu_us, 1),
                    num(r.rss_mib, 1),
                    r.unexpected
                )),
            }
        }
        for &c in &opts.conns {
            md.push_str(&targets(&rows, c));
        }
    }
    md
}

fn targets(rows: &[&CellResult], conns: usize) -> String {
    let find = |server_prefix: &str, title: &str| {
        rows.iter()
            .find(|r| r.conns == conns && r.server.starts_with(server_prefix) && r.title == title && r.error.is_none())
    };
    let Some(zero) = find("zero-work", "key present (floor)") else { return String::new() };
    let js = find("Kong JS", "minimal key check, key present");
    let mut md = format!("\nTargets at c={conns} (medians of this run; hit cells against the zero-work floor):\n\n");
    md.push_str("| cell | req/s ÷ zero-work (≥ 97 %) | CPU/req ÷ zero-work (≤ 1.05×) | CPU/req ÷ JS (≤ 0.8×) | p99 ÷ zero-work (≤ 1.10×) |\n|---|--:|--:|--:|--:|\n");
    for r in rows.iter().filter(|r| {
        r.conns == conns
            && r.server.starts_with("ghasi")
            && r.rpcs == 4
            && r.error.is_none()
            && !r.title.contains("miss")
    }) {
        let js_ratio = js.map_or("–".to_string(), |j| format!("{:.2}×", r.cpu_us / j.cpu_us));
        md.push_str(&format!(
            "| {} ({}) | {:.0} % | {:.2}× | {} | {:.2}× |\n",
            r.title,
            r.server,
            100.0 * r.rps / zero.rps,
            r.cpu_us / zero.cpu_us,
            js_ratio,
            r.p99_ms / zero.p99_ms
        ));
    }
    md
}
