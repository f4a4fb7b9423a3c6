//! The benchmark through Kong's own plugin-server client: a kongrig folder (Kong's
//! unmodified `plugin_servers` Lua in Debian's nginx, 2 workers) in front of each server, and
//! `wrk --latency` against nginx. Every server runs behind its own rig at once (private
//! PREFIX and ports); the cells are then measured in turn, round after round, and each
//! figure is the median over the rounds.
//!
//! Per cell: req/s, p50 and p99 (wrk), server CPU µs per request (utime + stime of the
//! server's whole process tree from `/proc`, over the measured window ÷ requests), RSS after
//! the last round.
//!
//! Files: `rig.rs` starts and watches one server behind its own rig, `wrk.rs` drives the load,
//! `report.rs` renders the figures; this file picks the servers and cells and runs the rounds.

mod report;
mod rig;
mod wrk;

use std::path::PathBuf;

use crate::auth::{self, Auth};
pub use report::{report, CellResult};
pub use rig::check;
use rig::{ServerSpec, Session};

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
        sessions.push(Session::start(&opts.rig, &opts.state, version, spec, dir.path())?);
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
        match wrk::status_of(s.port, &cell.headers) {
            Ok(st) if st == cell.status => {
                let _ = wrk::run(s.port, cell.conns, &cell.headers, 1.0, opts.wrk_threads);
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
            let result = wrk::run(s.port, cell.conns, &cell.headers, opts.seconds, opts.wrk_threads);
            let cpu = s.cpu().saturating_sub(before);
            match result.map(|(text, _)| wrk::parse(&text).ok_or(text)) {
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
