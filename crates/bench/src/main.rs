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
//! * memory: RSS idle and after looking up 1,000,000 distinct valid API keys.
//!
//! Nothing here asserts a timing: the figures and ratios are printed, never checked.

mod auth;
mod load;
mod procfs;
mod report;
mod servers;

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
    /// Our server binary (a release build).
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
    /// Longest measured window per scenario, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up per scenario, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct API keys looked up in the memory scenario.
    #[arg(long, default_value_t = 1_000_000)]
    cache_keys: u64,
    /// Distinct keys the cache-hit scenario cycles through.
    #[arg(long, default_value_t = 1_000)]
    hit_keys: u64,
    /// Run only these scenario ids (comma-separated): floor, api-key-hit, js, python-gevent,
    /// python, floor-denied, denied, js-denied, python-gevent-denied, python-denied,
    /// api-key-miss, jwt-cached, jwt-rs256, jwt-es256, memory.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip these scenario ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Also write the markdown here (scripts/bench: bench/results.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line shown in the report.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
}


fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let paths = Paths {
        ghasi: abs(&cli.server),
        python_server: abs(&cli.python_server),
        python_plugins: abs(&cli.python_plugins),
        node: cli.node.clone(),
        js_server: abs(&cli.js_server),
        js_plugins: abs(&cli.js_plugins),
    };
    anyhow::ensure!(
        servers::is_executable(&paths.ghasi),
        "{} not found: build it first (cargo build --release -p ghasi-plugin-server)",
        paths.ghasi.display()
    );
    let mut bench = Bench { cli: &cli, paths, rows: Vec::new() };
    let started = std::time::Instant::now();
    bench.run_all()?;
    let memory = if bench.wants("memory") { Some(bench.memory()) } else { None };

    let machine = report::Machine::probe(&cli.node, &bench.paths.python_server.with_file_name("python"));
    let settings = report::Settings { workers: cli.workers, concurrency: cli.concurrency, seconds: cli.seconds, warmup: cli.warmup };
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
    let _ = std::fmt::Write::write_fmt(&mut md, format_args!("\nTotal benchmark time: {:.0} s.\n", started.elapsed().as_secs_f64()));
    println!("\n{md}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
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
    max_requests: u64,
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

        // Success path (3 PDK calls): floor, ours, the official servers.
        let success: Vec<(&'static str, &'static str, Kind, &'static str, serde_json::Value)> = vec![
            ("floor", "no-op floor (script plugin)", Kind::Ghasi, "ghasi-test-script", floor_success_config()),
            ("api-key-hit", "API key, cache hit", Kind::Ghasi, "ghasi-api-key-lookup", auth.api_key_config()),
            ("js", "minimal plugin, key present", Kind::Js, "ghasi-bench-minimal", minimal()),
            ("python-gevent", "minimal plugin, key present", Kind::Python { gevent: true }, "ghasi-bench-minimal", minimal()),
            ("python", "minimal plugin, key present", Kind::Python { gevent: false }, "ghasi-bench-minimal", minimal()),
        ];
        for (id, title, kind, plugin, config) in success {
            self.scenario(Scenario {
                id,
                title: title.into(),
                kind,
                plugin,
                config,
                gen: hit_gen.clone(),
                expect: Expect::Admitted,
                warmup_requests: hit_keys,
                max_requests: u64::MAX,
            });
        }

        // Denial (2 PDK calls).
        let denied: Vec<(&'static str, &'static str, Kind, &'static str, serde_json::Value)> = vec![
            ("floor-denied", "no-op floor, denied (script plugin)", Kind::Ghasi, "ghasi-test-script", floor_denied_config()),
            ("denied", "API key missing → 401", Kind::Ghasi, "ghasi-api-key-lookup", auth.api_key_config()),
            ("js-denied", "minimal plugin, no key → 401", Kind::Js, "ghasi-bench-minimal", minimal()),
            ("python-gevent-denied", "minimal plugin, no key → 401", Kind::Python { gevent: true }, "ghasi-bench-minimal", minimal()),
            ("python-denied", "minimal plugin, no key → 401", Kind::Python { gevent: false }, "ghasi-bench-minimal", minimal()),
        ];
        for (id, title, kind, plugin, config) in denied {
            self.scenario(Scenario {
                id,
                title: title.into(),
                kind,
                plugin,
                config,
                gen: none_gen.clone(),
                expect: Expect::Exit(401),
                warmup_requests: 0,
                max_requests: u64::MAX,
            });
        }

        // API-key miss: every request a key never seen before, looked up in the fake auth-service.
        let miss_gen: RequestGen = Arc::new(move |i| (i < miss_keys).then(|| api_key_request(Some(auth::key("miss", i)))));
        let lookups_before = auth.lookups();
        self.scenario(Scenario {
            id: "api-key-miss",
            title: "API key, cache miss → fake auth-service".into(),
            kind: Kind::Ghasi,
            plugin: "ghasi-api-key-lookup",
            config: auth.api_key_config(),
            gen: miss_gen,
            expect: Expect::Admitted,
            warmup_requests: 0,
            max_requests: miss_keys - 20_000,
        });
        if self.wants("api-key-miss") {
            eprintln!("  auth-service lookups during api-key-miss: {}", auth.lookups() - lookups_before);
        }

        // JWT.
        if self.wants("jwt-cached") {
            let tokens = Arc::new(auth.mint(Alg::RS256, 100));
            let gen: RequestGen = Arc::new(move |i| Some(bearer_request(&tokens[i as usize % tokens.len()])));
            self.scenario(Scenario {
                id: "jwt-cached",
                title: "JWT RS256, verified-token cache hit".into(),
                kind: Kind::Ghasi,
                plugin: "ghasi-jwt",
                config: auth.jwt_config(),
                gen,
                expect: Expect::Admitted,
                warmup_requests: 100,
                max_requests: u64::MAX,
            });
        }
        for (id, alg, n) in [("jwt-rs256", Alg::RS256, 12_000usize), ("jwt-es256", Alg::ES256, 40_000)] {
            if !self.wants(id) {
                continue;
            }
            eprintln!("minting {n} {alg:?} tokens for {id}");
            let tokens = Arc::new(auth.mint(alg, n));
            let supply = tokens.len() as u64;
            let gen: RequestGen = Arc::new(move |i| tokens.get(i as usize).map(|t| bearer_request(t)));
            self.scenario(Scenario {
                id,
                title: format!("JWT {alg:?}, first verification (new token each request)"),
                kind: Kind::Ghasi,
                plugin: "ghasi-jwt",
                config: auth.jwt_config(),
                gen,
                expect: Expect::Admitted,
                warmup_requests: 500,
                // Stop before the supply runs dry, while every task is still busy.
                max_requests: supply.saturating_sub(500 + 2 * self.cli.concurrency as u64),
            });
        }
        auth.shutdown();
        Ok(())
    }

    fn scenario(&mut self, s: Scenario) {
        if !self.wants(s.id) {
            return;
        }
        eprintln!("== {} — {} ({})", s.id, s.title, s.kind.label());
        let spec = LoadSpec {
            plugin: s.plugin.to_string(),
            config: s.config,
            gen: s.gen,
            expect: s.expect,
            warmup: Duration::from_secs_f64(self.cli.warmup),
            warmup_requests: s.warmup_requests,
            duration: Duration::from_secs_f64(self.cli.seconds),
            max_requests: s.max_requests,
            workers: self.cli.workers,
            concurrency: self.cli.concurrency,
        };
        let mut memory = procfs::Memory::default();
        let result = match Server::start(s.kind, &self.paths, false) {
            Err(e) => Err(format!("{e:#}")),
            Ok(server) => {
                let r = load::run(&server, &spec).map_err(|e| format!("{e:#}"));
                memory = server.memory();
                if let Ok(r) = &r {
                    if r.errors > 0 {
                        eprintln!("   server log:\n{}", server.log_tail());
                    }
                }
                server.stop();
                r
            }
        };
        match &result {
            Ok(r) => eprintln!(
                "   {:.0} req/s, p99 {:.2} ms, {:.2} RPCs/req, server {:.1} µs/req, emulator {:.1} µs/req, {} errors{}",
                r.rps(),
                r.quantile_ms(0.99),
                r.per_request(r.rpcs),
                r.server_us(),
                r.emulator_us(),
                r.errors,
                r.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
            ),
            Err(e) => eprintln!("   failed: {e}"),
        }
        self.rows.push(Row {
            id: s.id,
            scenario: s.title,
            kind: s.kind,
            result,
            memory,
            workers: self.cli.workers,
        });
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
        let server = match Server::start(Kind::Ghasi, &self.paths, true) {
            Ok(s) => s,
            Err(e) => {
                report.fill_error = Some(format!("{e:#}"));
                return report;
            }
        };
        std::thread::sleep(Duration::from_millis(300));
        report.idle = server.memory();
        eprintln!("   idle: VmRSS {:.1} MiB; filling", report.idle.rss_mib());
        let fill = LoadSpec {
            plugin: "ghasi-api-key-lookup".into(),
            config: auth.api_key_config(),
            gen: Arc::new(move |i| (i < keys).then(|| api_key_request(Some(auth::key("mem", i))))),
            expect: Expect::Admitted,
            warmup: Duration::ZERO,
            warmup_requests: 0,
            duration: Duration::from_secs(900),
            max_requests: keys,
            workers: self.cli.workers,
            concurrency: self.cli.concurrency,
        };
        match load::run(&server, &fill) {
            Ok(r) => {
                if r.errors > 0 {
                    eprintln!("   {} errors (first: {:?}); server log:\n{}", r.errors, r.first_error, server.log_tail());
                }
                report.fill = Some(r);
            }
            Err(e) => report.fill_error = Some(format!("{e:#}")),
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
