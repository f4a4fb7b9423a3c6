//! `ghasi-bench`: the benchmark of project issue 7 (run it with `scripts/bench`).
//!
//! Drives every server with the Kong emulator (`crates/kong-emulator`) as load generator
//! and prints a markdown table: requests/s, event latency quantiles, RPC round trips and PDK
//! calls per request, server CPU time per request (utime + stime of the server process from
//! `/proc/<pid>/stat`, delta over the measured window ÷ requests), the emulator's own CPU per
//! request, and peak RSS (`VmHWM`). Scenarios:
//!
//! * ours: the no-op floor (`ghasi-test-script` making the same PDK calls), API-key cache
//!   hit, API-key miss against the fake auth-service, JWT cached token, JWT first verification
//!   (RS256, ES256), denied 401 — each on a freshly started server;
//! * Kong's official JavaScript (npm `kong-pdk` 0.6.0) and Python (PyPI `kong-pdk` 0.36, thread
//!   and gevent modes) servers running `ghasi-bench-minimal` (bench/js, bench/python), which
//!   makes exactly our plugin's PDK calls and nothing else;
//! * memory: RSS idle and after looking up 1,000,000 distinct valid API keys, with the
//!   server's cache sized (`--api-key-cache-entries`) to keep every one of them.
//!
//! Nothing here asserts a timing: the figures and ratios are printed, never checked.

mod auth;
mod cache_memory;
mod kong;
mod load;
mod procfs;
mod report;
mod revocation;
mod servers;
mod zero;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dev_auth_service::Alg;
use kong_emulator::Request;
use serde_json::json;

use load::{Expect, LoadSpec, RequestGen};
use report::{MemoryReport, Row};
use servers::{Kind, Paths, Server};

/// Benchmark ghasi-plugin-server against Kong's official Python and JavaScript plugin servers.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Our server binary: a release build; with the test-hooks feature for the emulator
    /// micro-benchmark (its floor plugin and the revocation scenario's test clock).
    #[arg(long, default_value = "target/release/ghasi-plugin-server")]
    server: PathBuf,
    /// Kong's Python plugin server entry point (PyPI kong-pdk 0.36).
    #[arg(long, default_value = ".venv/bin/kong-python-pluginserver")]
    python_server: PathBuf,
    /// Directory with the Python bench plugin.
    #[arg(long, default_value = "bench/python")]
    python_plugins: PathBuf,
    /// node (20+).
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// Kong's JavaScript plugin server (npm kong-pdk 0.6.0).
    #[arg(long, default_value = "bench/js/node_modules/kong-pdk/bin/kong-js-pluginserver")]
    js_server: PathBuf,
    /// Directory with the JavaScript bench plugin.
    #[arg(long, default_value = "bench/js/plugins")]
    js_plugins: PathBuf,
    /// Emulated nginx workers (each its own connection pool and instance).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Events in flight in total (spread over the workers).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Longest measured time per scenario, seconds (split over the rounds).
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// Measured windows per scenario, taken in turn across the servers of a group.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Warm-up per scenario, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct API keys looked up in the memory scenario.
    #[arg(long, default_value_t = 1_000_000)]
    cache_keys: u64,
    /// The memory scenario's `--api-key-cache-entries` (default: every one of --cache-keys,
    /// at least 1,000,000), so that the looked-up keys are really cached.
    #[arg(long)]
    cache_entries: Option<u64>,
    /// Distinct keys the cache-hit scenario cycles through.
    #[arg(long, default_value_t = 1_000)]
    hit_keys: u64,
    /// Run only these scenario ids (comma-separated): floor, api-key-hit, js, python-gevent,
    /// python, floor-denied, denied, js-denied, python-gevent-denied, python-denied,
    /// api-key-miss, jwt-cached, jwt-rs256, jwt-es256, memory, revocation.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip these scenario ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Revocations measured in the revocation scenario.
    #[arg(long, default_value_t = 300)]
    revocations: usize,
    /// Also write the markdown here (scripts/bench: bench/results.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line shown in the report.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
    /// The kongrig folder (Kong's own plugin-server client in nginx) the main benchmark
    /// drives; its setup.sh installs nginx, wrk and Kong's JS/Python servers.
    #[arg(long, env = "GHASI_KONG_RIG")]
    kong_rig: Option<PathBuf>,
    /// Where the rig writes (venv, node_modules, nginx prefixes): KONGRIG_STATE.
    #[arg(long, env = "KONGRIG_STATE", default_value = "target/kongrig")]
    kong_rig_state: PathBuf,
    /// Kong client versions to measure through.
    #[arg(long, value_delimiter = ',', default_value = "3.9.3,3.4.2")]
    kong_versions: Vec<String>,
    /// Shard counts (`--threads`) to measure our API-key hit with (the other ghasi cells run
    /// the default shard count, what ships).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<usize>,
    /// wrk connections per cell.
    #[arg(long, value_delimiter = ',', default_value = "50")]
    conns: Vec<usize>,
    /// Seconds per cell and round under Kong's client.
    #[arg(long, default_value_t = 5.0)]
    cell_seconds: f64,
    /// Run the emulator micro-benchmark (the Kong emulator as load generator: a load pattern
    /// nginx does not produce; not what Kong sees) instead of the rig.
    #[arg(long)]
    emulator: bool,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("zero-work-server") {
        return zero::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("cache-memory") {
        return cache_memory::main(&args[2..]);
    }
    let cli = Cli::parse();
    if !cli.emulator {
        return through_kong(&cli);
    }
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let paths = Paths {
        ghasi: abs(&cli.server),
        python_server: abs(&cli.python_server),
        python_plugins: abs(&cli.python_plugins),
        node: cli.node.clone(),
        js_server: abs(&cli.js_server),
        js_plugins: abs(&cli.js_plugins),
    };
    servers::check_ghasi(&paths.ghasi)?;
    let mut bench = Bench { cli: &cli, paths, rows: Vec::new() };
    let started = std::time::Instant::now();
    bench.run_all()?;
    let memory = if bench.wants("memory") { Some(bench.memory()) } else { None };
    let revocation = if bench.wants("revocation") {
        eprintln!("== revocation — push latency, hot keys, eviction scan");
        Some(revocation::run(&bench.paths.ghasi, cli.revocations))
    } else {
        None
    };

    let machine = report::Machine::probe(&cli.node, &bench.paths.python_server.with_file_name("python"));
    let settings = report::Settings {
        workers: cli.workers,
        concurrency: cli.concurrency,
        seconds: cli.seconds,
        warmup: cli.warmup,
    };
    let mut md = String::new();
    md.push_str(&report::header(&machine, &settings, &cli.command));
    md.push('\n');
    md.push_str(&report::table(&bench.rows));
    md.push_str("\nRatios and targets (same run):\n\n");
    md.push_str(&report::targets(&bench.rows, memory.as_ref()));
    if let Some(m) = &memory {
        md.push_str("\nMemory:\n\n");
        md.push_str(&report::memory_section(m));
    }
    if let Some(r) = &revocation {
        md.push_str("\nRevocation push and hot keys (issue 14):\n\n");
        md.push_str(r);
    }
    let _ = std::fmt::Write::write_fmt(
        &mut md,
        format_args!("\nTotal benchmark time: {:.0} s.\n", started.elapsed().as_secs_f64()),
    );
    println!("\n{md}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}

/// The main benchmark: every server behind Kong's own client (`kong/`), then the memory
/// scenario (its load comes from the emulator: it only counts bytes per cached key).
fn through_kong(cli: &Cli) -> anyhow::Result<()> {
    let rig = cli.kong_rig.clone().context(
        "no kongrig: give --kong-rig DIR or GHASI_KONG_RIG (a folder with Kong's own plugin-server client \
         in nginx; its setup.sh apt-installs nginx-light, libnginx-mod-http-lua, wrk and prepares Kong's \
         JS and Python servers). --emulator runs the emulator micro-benchmark instead",
    )?;
    kong::check(&rig)?;
    std::fs::create_dir_all(&cli.kong_rig_state)?;
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let opts = kong::Options {
        rig: abs(&rig),
        state: abs(&cli.kong_rig_state),
        ghasi: abs(&cli.server),
        bench: std::env::current_exe()?,
        versions: cli.kong_versions.clone(),
        shards: cli.shards.clone(),
        conns: cli.conns.clone(),
        seconds: cli.cell_seconds,
        rounds: cli.rounds.max(1),
        wrk_threads: 2,
    };
    anyhow::ensure!(
        servers::is_executable(&opts.ghasi),
        "{} not found: build it first (cargo build --release -p ghasi-plugin-server)",
        opts.ghasi.display()
    );
    let started = std::time::Instant::now();
    let load_before = loadavg();
    let auth = auth::Auth::start(&[("hit", 1)])?;
    let token = auth.mint(Alg::RS256, 1).pop().context("minting a token")?;
    let mut results = Vec::new();
    for version in &opts.versions {
        results.extend(kong::run_version(&opts, version, &auth, &token)?);
    }
    auth.shutdown();
    let machine = report::Machine::probe(&cli.node, Path::new("python3"));
    let mut md = format!(
        "Machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}; shared with other work while measuring, so \
         figures move by ±10–25 % between runs: compare rows of one run, not runs.\n\
         Load: Kong's own plugin-server client (kongrig: Kong's unmodified plugin_servers Lua in Debian's \
         nginx, 2 workers) in front of each server; `wrk -t2 -c<conns> --latency` on the proxy; \
         {} alternated rounds of {:.0} s per cell after one unmeasured second; medians. Server CPU = utime + \
         stime of the server's process tree over the window ÷ requests; RSS after the last round.\n\
         Command: `{}`\n",
        machine.cpus, machine.model, machine.mem_gib, machine.kernel, opts.rounds, opts.seconds, cli.command
    );
    md.push_str(&format!(
        "Machine load average (1 min, from /proc/loadavg) before: {load_before}, after: {}; above the CPU count \
         other work competed with this run.\n",
        loadavg()
    ));
    md.push_str(&kong::report(&results, &opts.conns));
    let bench = Bench {
        cli,
        paths: Paths {
            ghasi: opts.ghasi.clone(),
            python_server: PathBuf::new(),
            python_plugins: PathBuf::new(),
            node: cli.node.clone(),
            js_server: PathBuf::new(),
            js_plugins: PathBuf::new(),
        },
        rows: Vec::new(),
    };
    if bench.wants("memory") {
        let memory = bench.memory();
        md.push_str("\nMemory (load from the Kong emulator: this scenario only counts bytes per cached key):\n\n");
        md.push_str(&report::memory_section(&memory));
    }
    md.push_str(&format!("\nTotal benchmark time: {:.0} s.\n", started.elapsed().as_secs_f64()));
    println!("\n{md}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}

/// The 1-minute load average, as printed in `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

struct Bench<'a> {
    cli: &'a Cli,
    paths: Paths,
    rows: Vec<Row>,
}

/// One scenario to run.
struct Scenario {
    id: &'static str,
    title: String,
    kind: Kind,
    plugin: &'static str,
    config: serde_json::Value,
    gen: RequestGen,
    expect: Expect,
    warmup_requests: u64,
    /// Measured requests in all (split evenly over the rounds); `u64::MAX` = time-bound only.
    max_requests: u64,
    /// Warm up by request count only (scenarios whose distinct requests are a finite supply).
    count_warmup: bool,
}

fn api_key_request(key: Option<String>) -> Request {
    let req = Request::new("GET", "/v1/messages").with_header("accept", "application/json");
    match key {
        Some(k) => req.with_header("x-api-key", k),
        None => req,
    }
}

fn bearer_request(token: &str) -> Request {
    Request::new("GET", "/v1/messages")
        .with_header("accept", "application/json")
        .with_header("authorization", format!("Bearer {token}"))
}

/// `ghasi-test-script` steps making exactly the success path's PDK calls.
fn floor_success_config() -> serde_json::Value {
    json!({"steps": [
        {"read": "x-api-key"},
        {"set_headers": {
            "X-Account-Id": auth::ACCOUNT,
            "X-User-Id": auth::USER,
            "X-Consumer-Username": auth::ACCOUNT,
            "X-Credential-Identifier": "key_hit_0",
            "x-api-key": null
        }},
        {"call": "kong.ctx.shared.set", "args": ["authenticated_groups", ["ghasi-authenticated"]]}
    ]})
}

/// `ghasi-test-script` steps making exactly the denial's PDK calls.
fn floor_denied_config() -> serde_json::Value {
    json!({"steps": [
        {"read": "x-api-key"},
        {"exit": 401, "body": "{\"type\":\"about:blank\",\"title\":\"Unauthorized\",\"status\":401,\"code\":\"credential_missing\",\"detail\":\"No API key was presented.\"}"}
    ]})
}

impl Bench<'_> {
    fn wants(&self, id: &str) -> bool {
        (self.cli.only.is_empty() || self.cli.only.iter().any(|o| o == id)) && !self.cli.skip.iter().any(|s| s == id)
    }

    fn run_all(&mut self) -> anyhow::Result<()> {
        let cli = self.cli;
        let miss_keys = 150_000;
        eprintln!("starting the fake auth-service");
        let auth = auth::Auth::start(&[("hit", cli.hit_keys), ("miss", miss_keys)])?;
        let hit_keys = cli.hit_keys.max(1);
        let hit_gen: RequestGen = Arc::new(move |i| Some(api_key_request(Some(auth::key("hit", i % hit_keys)))));
        let none_gen: RequestGen = Arc::new(|_| Some(api_key_request(None)));
        let minimal = || json!({});
        let scenario = |id, title: &str, kind, plugin, config, gen: &RequestGen, expect, warmup_requests| Scenario {
            id,
            title: title.to_string(),
            kind,
            plugin,
            config,
            gen: gen.clone(),
            expect,
            warmup_requests,
            max_requests: u64::MAX,
            count_warmup: false,
        };
        let (py, py_gevent) = (Kind::Python { gevent: false }, Kind::Python { gevent: true });

        // Success path (3 PDK calls): floor, ours, the official servers, interleaved.
        let ok = Expect::Admitted;
        self.group(vec![
            scenario(
                "floor",
                "no-op floor (script plugin)",
                Kind::Ghasi,
                "ghasi-test-script",
                floor_success_config(),
                &hit_gen,
                ok,
                hit_keys,
            ),
            scenario(
                "api-key-hit",
                "API key, cache hit",
                Kind::Ghasi,
                "ghasi-api-key-lookup",
                auth.api_key_config(),
                &hit_gen,
                ok,
                hit_keys,
            ),
            scenario("js", "minimal plugin, key present", Kind::Js, "ghasi-bench-minimal", minimal(), &hit_gen, ok, 0),
            scenario(
                "python-gevent",
                "minimal plugin, key present",
                py_gevent,
                "ghasi-bench-minimal",
                minimal(),
                &hit_gen,
                ok,
                0,
            ),
            scenario("python", "minimal plugin, key present", py, "ghasi-bench-minimal", minimal(), &hit_gen, ok, 0),
        ]);

        // Denial (2 PDK calls), interleaved.
        let no = Expect::Exit(401);
        self.group(vec![
            scenario(
                "floor-denied",
                "no-op floor, denied (script plugin)",
                Kind::Ghasi,
                "ghasi-test-script",
                floor_denied_config(),
                &none_gen,
                no,
                0,
            ),
            scenario(
                "denied",
                "API key missing → 401",
                Kind::Ghasi,
                "ghasi-api-key-lookup",
                auth.api_key_config(),
                &none_gen,
                no,
                0,
            ),
            scenario(
                "js-denied",
                "minimal plugin, no key → 401",
                Kind::Js,
                "ghasi-bench-minimal",
                minimal(),
                &none_gen,
                no,
                0,
            ),
            scenario(
                "python-gevent-denied",
                "minimal plugin, no key → 401",
                py_gevent,
                "ghasi-bench-minimal",
                minimal(),
                &none_gen,
                no,
                0,
            ),
            scenario(
                "python-denied",
                "minimal plugin, no key → 401",
                py,
                "ghasi-bench-minimal",
                minimal(),
                &none_gen,
                no,
                0,
            ),
        ]);

        // API-key miss: every request a key never seen before, looked up in the fake auth-service.
        let miss_gen: RequestGen =
            Arc::new(move |i| (i < miss_keys).then(|| api_key_request(Some(auth::key("miss", i)))));
        let lookups_before = auth.lookups();
        self.group(vec![Scenario {
            max_requests: miss_keys - 20_000,
            count_warmup: true,
            ..scenario(
                "api-key-miss",
                "API key, cache miss → fake auth-service",
                Kind::Ghasi,
                "ghasi-api-key-lookup",
                auth.api_key_config(),
                &miss_gen,
                ok,
                0,
            )
        }]);
        if self.wants("api-key-miss") {
            eprintln!("   auth-service lookups during api-key-miss: {}", auth.lookups() - lookups_before);
        }

        // JWT.
        if self.wants("jwt-cached") {
            let tokens = Arc::new(auth.mint(Alg::RS256, 100));
            let gen: RequestGen = Arc::new(move |i| Some(bearer_request(&tokens[i as usize % tokens.len()])));
            let title = "JWT RS256, verified-token cache hit";
            self.group(vec![scenario("jwt-cached", title, Kind::Ghasi, "ghasi-jwt", auth.jwt_config(), &gen, ok, 100)]);
        }
        for (id, alg, n) in [("jwt-rs256", Alg::RS256, 30_000usize), ("jwt-es256", Alg::ES256, 40_000)] {
            if !self.wants(id) {
                continue;
            }
            eprintln!("minting {n} {alg:?} tokens for {id}");
            let tokens = Arc::new(auth.mint(alg, n));
            let supply = tokens.len() as u64;
            let gen: RequestGen = Arc::new(move |i| tokens.get(i as usize).map(|t| bearer_request(t)));
            let title = format!("JWT {alg:?}, first verification (new token each request)");
            self.group(vec![Scenario {
                // Stop before the supply runs dry, while every task is still busy.
                max_requests: supply.saturating_sub(500 + 2 * self.cli.concurrency as u64),
                count_warmup: true,
                ..scenario(id, &title, Kind::Ghasi, "ghasi-jwt", auth.jwt_config(), &gen, ok, 500)
            }]);
        }
        auth.shutdown();
        Ok(())
    }

    /// Runs the wanted scenarios of a group side by side: every server started once, then
    /// `rounds` measured windows taken in turn (A B C, A B C, …), so that a disturbance of
    /// the shared machine falls on all of them alike. Figures are pooled over the windows.
    fn group(&mut self, scenarios: Vec<Scenario>) {
        let scenarios: Vec<Scenario> = scenarios.into_iter().filter(|s| self.wants(s.id)).collect();
        if scenarios.is_empty() {
            return;
        }
        let rounds = self.cli.rounds.max(1);
        let mut live = Vec::new();
        for s in scenarios {
            eprintln!("== {} — {} ({}): starting", s.id, s.title, s.kind.label());
            let server = Server::start(s.kind, &self.paths, false).map_err(|e| format!("{e:#}"));
            if let Err(e) = &server {
                eprintln!("   failed: {e}");
            }
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            live.push((s, server, next, None::<Result<load::LoadResult, String>>));
        }
        for round in 0..rounds {
            for (s, server, next, acc) in live.iter_mut() {
                let Ok(server) = server else { continue };
                if matches!(acc, Some(Err(_))) {
                    continue;
                }
                let done = match acc {
                    Some(Ok(r)) => r.requests,
                    _ => 0,
                };
                if done >= s.max_requests {
                    continue;
                }
                let first = round == 0;
                let spec = LoadSpec {
                    plugin: s.plugin.to_string(),
                    config: s.config.clone(),
                    gen: s.gen.clone(),
                    next: next.clone(),
                    expect: s.expect,
                    warmup: match (s.count_warmup, first) {
                        (true, _) => Duration::ZERO,
                        (false, true) => Duration::from_secs_f64(self.cli.warmup),
                        (false, false) => Duration::from_secs_f64(0.2),
                    },
                    warmup_requests: if first { s.warmup_requests } else { 0 },
                    duration: Duration::from_secs_f64(self.cli.seconds / rounds as f64),
                    // A finite supply is shared evenly by the rounds.
                    max_requests: match s.max_requests {
                        u64::MAX => u64::MAX,
                        total => (total.div_ceil(rounds as u64) * (round as u64 + 1)).min(total).saturating_sub(done),
                    },
                    workers: self.cli.workers,
                    concurrency: self.cli.concurrency,
                };
                let r = load::run(server, &spec).map_err(|e| format!("{e:#}"));
                match &r {
                    Ok(r) => eprintln!(
                        "   {} round {}: {:.0} req/s, p99 {:.2} ms, {:.2} RPCs/req, server {:.1} µs/req ({:.0}% kernel), emulator {:.1} µs/req, other load {:.2} cores, {} errors{}",
                        s.id,
                        round + 1,
                        r.rps(),
                        r.quantile_ms(0.99),
                        r.per_request(r.rpcs),
                        r.server_us(),
                        r.server_kernel_share() * 100.0,
                        r.emulator_us(),
                        r.other_cores(),
                        r.errors,
                        r.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
                    ),
                    Err(e) => eprintln!("   {} round {}: failed: {e}", s.id, round + 1),
                }
                if matches!(&r, Ok(r) if r.errors > 0) {
                    eprintln!("   server log:\n{}", server.log_tail());
                }
                *acc = Some(match (acc.take(), r) {
                    (Some(Ok(mut total)), Ok(r)) => {
                        total.merge(r);
                        Ok(total)
                    }
                    (_, r) => r,
                });
            }
        }
        for (s, server, _, acc) in live {
            let (result, memory) = match server {
                Err(e) => (Err(e), procfs::Memory::default()),
                Ok(server) => {
                    let memory = server.memory();
                    server.stop();
                    (acc.unwrap_or_else(|| Err("not run".into())), memory)
                }
            };
            self.rows.push(Row { id: s.id, scenario: s.title, kind: s.kind, result, memory });
        }
    }

    /// RSS idle and after `cache_keys` distinct valid keys were looked up through the plugin.
    fn memory(&self) -> MemoryReport {
        let keys = self.cli.cache_keys;
        let mut report = MemoryReport { keys, ..Default::default() };
        eprintln!("== memory — starting a fake auth-service knowing {keys} keys");
        let auth = match auth::Auth::start(&[("mem", keys)]) {
            Ok(a) => a,
            Err(e) => {
                report.fill_error = Some(format!("{e:#}"));
                return report;
            }
        };
        report.capacity = self.cli.cache_entries.unwrap_or(keys.max(1_000_000));
        let args = vec!["--api-key-cache-entries".to_string(), report.capacity.to_string()];
        let server = match Server::start_with(Kind::Ghasi, &self.paths, true, &args) {
            Ok(s) => s,
            Err(e) => {
                report.fill_error = Some(format!("{e:#}"));
                return report;
            }
        };
        std::thread::sleep(Duration::from_millis(300));
        report.idle = server.memory();
        eprintln!(
            "   idle: VmRSS {:.1} MiB; filling (--api-key-cache-entries {})",
            report.idle.rss_mib(),
            report.capacity
        );
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fill = LoadSpec {
            plugin: "ghasi-api-key-lookup".into(),
            // Long enough a TTL that the re-read below measures what the cache kept.
            config: {
                let mut config = auth.api_key_config();
                config["cache_ttl"] = json!(3600);
                config
            },
            gen: Arc::new(move |i| (i < keys).then(|| api_key_request(Some(auth::key("mem", i))))),
            next: next.clone(),
            expect: Expect::Admitted,
            warmup: Duration::ZERO,
            warmup_requests: 0,
            duration: Duration::from_secs(900),
            max_requests: keys,
            workers: self.cli.workers,
            concurrency: self.cli.concurrency,
        };
        // Filled in steps, with RSS and the cache's size read after each.
        let mut steps: Vec<u64> =
            [10_000, 32_768, 65_536, 131_072, 262_144, 524_288].into_iter().filter(|&n| n < keys).collect();
        steps.push(keys);
        let mut done = 0;
        for step in steps {
            let spec = LoadSpec { max_requests: step - done, ..fill.clone() };
            match load::run(&server, &spec) {
                Ok(r) => {
                    if r.errors > 0 {
                        eprintln!(
                            "   {} errors (first: {:?}); server log:\n{}",
                            r.errors,
                            r.first_error,
                            server.log_tail()
                        );
                    }
                    done += r.requests;
                    match &mut report.fill {
                        Some(total) => total.merge(r),
                        None => report.fill = Some(r),
                    }
                }
                Err(e) => {
                    report.fill_error = Some(format!("{e:#}"));
                    break;
                }
            }
            // Requests past the step's count may have started; wait for none.
            next.store(done, std::sync::atomic::Ordering::SeqCst);
            let entries = server.metric("ghasi_cache_entries", &["cache=\"positive\""]);
            let mem = server.memory();
            eprintln!("   {done} keys looked up: {:?} cached, VmRSS {:.1} MiB", entries, mem.rss_mib());
            report.steps.push((done, entries, mem));
        }
        report.lookups = auth.lookups();
        report.after_fill = server.memory();
        report.entries = server.metric("ghasi_cache_entries", &["cache=\"positive\""]);
        eprintln!(
            "   after fill: VmRSS {:.1} MiB, VmHWM {:.1} MiB, cached {:?}",
            report.after_fill.rss_mib(),
            report.after_fill.hwm_mib(),
            report.entries
        );
        // Which of the filled keys are still cached: re-read an even sample, count lookups.
        let sample = 20_000.min(keys).max(1);
        let stride = (keys / sample).max(1);
        let before = auth.lookups();
        let check = LoadSpec {
            gen: Arc::new(move |i| (i < sample).then(|| api_key_request(Some(auth::key("mem", i * stride))))),
            next: Default::default(),
            duration: Duration::from_secs(120),
            max_requests: sample,
            ..fill
        };
        if load::run(&server, &check).is_ok() {
            report.sample = Some((sample, auth.lookups() - before));
        }
        server.stop();
        auth.shutdown();
        report
    }
}
