//! The markdown the benchmark prints and writes to `bench/results.md`.

use std::fmt::Write as _;

use crate::load::LoadResult;
use crate::procfs::Memory;
use crate::servers::Kind;

/// One scenario's line in the table.
pub struct Row {
    pub id: &'static str,
    pub scenario: String,
    pub kind: Kind,
    pub result: Result<LoadResult, String>,
    pub memory: Memory,
}

impl Row {
    pub fn ok(&self) -> Option<&LoadResult> {
        self.result.as_ref().ok().filter(|r| r.requests > 0)
    }
}

/// Cached API keys the memory target (< 300 MiB RSS) is about.
pub const TARGET_KEYS: u64 = 1_000_000;

/// The memory scenario's figures.
#[derive(Default)]
pub struct MemoryReport {
    pub keys: u64,
    /// The server's `--api-key-cache-entries`.
    pub capacity: u64,
    pub idle: Memory,
    pub after_fill: Memory,
    pub fill: Option<LoadResult>,
    pub fill_error: Option<String>,
    pub entries: Option<f64>,
    pub lookups: u64,
    /// Keys sampled evenly from the filled set, and how many of them needed a new lookup.
    pub sample: Option<(u64, u64)>,
    /// (keys looked up, valid keys cached, memory) along the fill.
    pub steps: Vec<(u64, Option<f64>, Memory)>,
}

impl MemoryReport {
    /// Marginal RSS bytes per cached key: growth between the first fill step and the first
    /// step at which the cache stopped growing. Returns (bytes, entries from, entries to).
    pub fn marginal(&self) -> Option<(f64, f64, f64)> {
        let points: Vec<(f64, f64)> =
            self.steps.iter().filter_map(|(_, e, mem)| e.map(|e| (e, mem.rss_kib as f64 * 1024.0))).collect();
        let &(e0, r0) = points.first()?;
        let max_e = points.iter().map(|p| p.0).reduce(f64::max)?;
        let &(e1, r1) = points.iter().find(|p| p.0 >= max_e)?;
        (e1 > e0).then(|| ((r1 - r0) / (e1 - e0), e0, e1))
    }

    /// RSS with every one of `keys` cached, at `per_key` bytes each.
    pub fn projected_mib(&self, per_key: f64) -> f64 {
        self.idle.rss_mib() + per_key * self.keys as f64 / 1048576.0
    }

    /// Whether every looked-up key was cached at the end of the fill, so the RSS after it
    /// is the measured figure for `keys` cached keys.
    pub fn all_cached(&self) -> bool {
        self.fill_error.is_none() && self.entries.is_some_and(|e| e as u64 >= self.keys)
    }

    /// RSS growth from idle to the end of the fill, per cached key, in bytes.
    pub fn per_key_overall(&self) -> Option<f64> {
        let entries = self.entries.filter(|&e| e > 0.0)?;
        Some((self.after_fill.rss_kib as f64 - self.idle.rss_kib as f64) * 1024.0 / entries)
    }
}

pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub mem_gib: f64,
    pub node: String,
    pub python: String,
}

impl Machine {
    pub fn probe(node: &std::path::Path, python: &std::path::Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let version = |cmd: &std::path::Path| {
            std::process::Command::new(cmd)
                .arg("--version")
                .output()
                .ok()
                .map(|o| {
                    let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                    String::from_utf8_lossy(&text).trim().to_string()
                })
                .unwrap_or_else(|| "not found".into())
        };
        Machine {
            cpus: std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0),
            model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            mem_gib: mem_kib / 1024.0 / 1024.0,
            node: version(node),
            python: version(python),
        }
    }
}

pub struct Settings {
    pub workers: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub warmup: f64,
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

/// Throughput with thousands separators.
fn rps(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | server | PDK calls/req | RPCs/req | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | of which kernel | emulator CPU µs/req | peak RSS MiB | other load (cores) | errors |\n");
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for row in rows {
        match &row.result {
            Ok(r) if r.requests > 0 => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | **{}** | {}% | {} | {} | {} | {} |",
                    row.scenario,
                    row.kind.label(),
                    f(r.per_request(r.pdk_calls), 2),
                    f(r.per_request(r.rpcs), 2),
                    rps(r.rps()),
                    f(r.quantile_ms(0.50), 2),
                    f(r.quantile_ms(0.99), 2),
                    f(r.quantile_ms(0.999), 2),
                    f(r.server_us(), 1),
                    f(r.server_kernel_share() * 100.0, 0),
                    f(r.emulator_us(), 1),
                    f(row.memory.hwm_mib(), 1),
                    f(r.other_cores(), 2),
                    r.errors,
                );
            }
            Ok(r) => {
                let why = r.first_error.clone().unwrap_or_else(|| "no request completed".into());
                let _ = writeln!(
                    out,
                    "| {} | {} | – | not measured: {} |||||||||| {} |",
                    row.scenario,
                    row.kind.label(),
                    md(&why),
                    r.errors
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | – | not measured: {} ||||||||||  |",
                    row.scenario,
                    row.kind.label(),
                    md(e)
                );
            }
        }
    }
    out
}

/// Makes a message safe for one table cell.
fn md(s: &str) -> String {
    let one_line = s.split('\n').next().unwrap_or("").replace('|', "\\|");
    match one_line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn find<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.id == id)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

/// Ratios against the official servers and the floor, with the targets.
pub fn targets(rows: &[Row], memory: Option<&MemoryReport>) -> String {
    let mut out = String::new();
    let res = |id: &str| find(rows, id).and_then(|r| r.ok());
    let busy_note = |id: &str| match res(id) {
        Some(r) => format!(" (measured; machine CPUs {:.0}% busy)", r.machine_busy_share() * 100.0),
        None => String::new(),
    };
    let cpus = std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1) as f64;
    // Requests/s the server alone could serve with the cores it can use: every core for ours
    // (one runtime thread per core), one for the single-threaded JS event loop and Python
    // (GIL). Derived from the measured CPU per request; the load generator's CPU left out.
    let capacity = |kind: Kind, r: &LoadResult| {
        let cores = if kind == Kind::Ghasi { cpus } else { 1.0 };
        cores * 1e6 / r.server_us()
    };
    out.push_str("| comparison | ratio | target | verdict |\n|---|--:|--:|---|\n");
    for (path, ours, floor, js, pys) in [
        ("success (3 PDK calls)", "api-key-hit", "floor", "js", ["python-gevent", "python"]),
        ("denied 401 (2 PDK calls)", "denied", "floor-denied", "js-denied", ["python-gevent-denied", "python-denied"]),
    ] {
        let Some(o) = res(ours) else { continue };
        let primary = path.starts_with("success");
        let target = |t: &str| if primary { t.to_string() } else { format!("({t})") };
        let judge = |met: bool| {
            if primary {
                verdict(met)
            } else if met {
                "(would meet)"
            } else {
                "(would miss)"
            }
        };
        if let Some(j) = res(js) {
            let cpu = j.server_us() / o.server_us();
            let tput = o.rps() / j.rps();
            let _ = writeln!(
                out,
                "| {path}: server CPU/req, JS ÷ ours | {cpu:.1}× | {} | {} |",
                target("≥ 2×"),
                judge(cpu >= 2.0)
            );
            let _ = writeln!(
                out,
                "| {path}: req/s, ours ÷ JS{} | {tput:.1}× | {} | {} |",
                busy_note(ours),
                target("≥ 3×"),
                judge(tput >= 3.0)
            );
            let cap = capacity(Kind::Ghasi, o) / capacity(Kind::Js, j);
            let _ = writeln!(
                out,
                "| {path}: server-bound capacity, ours ÷ JS (derived, load generator excluded) | {cap:.1}× | {} | {} |",
                target("≥ 3×"),
                if cap >= 3.0 { "(would meet)" } else { "(would miss)" }
            );
        }
        for py in pys {
            let Some(p) = res(py) else { continue };
            let label = find(rows, py).map(|r| r.kind.label()).unwrap_or("Python");
            let cpu = p.server_us() / o.server_us();
            let tput = o.rps() / p.rps();
            let _ = writeln!(
                out,
                "| {path}: server CPU/req, {label} ÷ ours | {cpu:.1}× | {} | {} |",
                target("≥ 10×"),
                judge(cpu >= 10.0)
            );
            let _ = writeln!(
                out,
                "| {path}: req/s, ours ÷ {label}{} | {tput:.1}× | {} | {} |",
                busy_note(ours),
                target("≥ 10×"),
                judge(tput >= 10.0)
            );
            let kind = find(rows, py).map(|r| r.kind).unwrap_or(Kind::Python { gevent: true });
            let cap = capacity(Kind::Ghasi, o) / capacity(kind, p);
            let _ = writeln!(
                out,
                "| {path}: server-bound capacity, ours ÷ {label} (derived) | {cap:.1}× | {} | {} |",
                target("≥ 10×"),
                if cap >= 10.0 { "(would meet)" } else { "(would miss)" }
            );
        }
        if let Some(fl) = res(floor) {
            let over = o.server_us() / fl.server_us() - 1.0;
            let _ = writeln!(
                out,
                "| {path}: plugin work, server CPU/req over the no-op floor | {:+.0}% | {} | {} |",
                over * 100.0,
                target("≤ +25%"),
                judge(over <= 0.25)
            );
            let tput = fl.rps() / o.rps() - 1.0;
            let _ = writeln!(out, "| {path}: floor req/s over ours | {:+.0}% | – | (informative) |", tput * 100.0);
        }
    }
    if let Some(m) = memory {
        let rss = m.after_fill.rss_mib();
        let all_cached = m.all_cached();
        let _ = writeln!(
            out,
            "| RSS with {} API keys {} | {:.1} MiB | < 300 MiB | {} |",
            group(m.keys),
            match m.entries {
                _ if all_cached => "cached (measured)".to_string(),
                Some(e) => format!("looked up ({} cached)", group(e as u64)),
                None => "looked up".to_string(),
            },
            rss,
            if all_cached {
                if m.keys >= TARGET_KEYS {
                    verdict(rss < 300.0).to_string()
                } else {
                    format!("(the target is for {} keys)", group(TARGET_KEYS))
                }
            } else {
                match m.marginal() {
                    Some((per, _, _)) => format!(
                        "**not measurable**: the cache keeps fewer keys; extrapolated {:.0} MiB at {:.0} B/key, which would {}",
                        m.projected_mib(per),
                        per,
                        if m.projected_mib(per) < 300.0 { "meet" } else { "miss" }
                    ),
                    None => "**not measurable**: the cache keeps fewer keys".to_string(),
                }
            }
        );
    }
    out
}

fn group(n: u64) -> String {
    rps(n as f64)
}

pub fn memory_section(m: &MemoryReport) -> String {
    let mut out = String::new();
    out.push_str("| state | VmRSS MiB | VmHWM MiB | valid keys cached (`ghasi_cache_entries`) |\n|---|--:|--:|--:|\n");
    let _ = writeln!(out, "| idle (started, no instance) | {:.1} | {:.1} | 0 |", m.idle.rss_mib(), m.idle.hwm_mib());
    for (done, entries, mem) in &m.steps {
        let entries = entries.map(|e| group(e as u64)).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "| after {} distinct valid keys were looked up (one request each) | {:.1} | {:.1} | {} |",
            group(*done),
            mem.rss_mib(),
            mem.hwm_mib(),
            entries
        );
    }
    out.push('\n');
    if let Some(fill) = &m.fill {
        let _ = writeln!(
            out,
            "Fill: {} requests in {:.1} s ({} req/s, all cache misses through the fake auth-service; {} lookups; server CPU {:.1} µs/req; p99 {:.2} ms).",
            group(fill.requests),
            fill.wall.as_secs_f64(),
            rps(fill.rps()),
            group(m.lookups),
            fill.server_us(),
            fill.quantile_ms(0.99)
        );
    }
    if let Some(e) = &m.fill_error {
        let _ = writeln!(out, "Fill failed: {}", md(e));
    }
    if let Some((per, e0, e1)) = m.marginal() {
        let _ = write!(
            out,
            "Marginal cost: {:.0} bytes of RSS per cached key (between {} and {} cached)",
            per,
            group(e0 as u64),
            group(e1 as u64)
        );
        if m.all_cached() {
            out.push_str(".\n");
        } else {
            let _ = writeln!(
                out,
                "; at that rate {} cached keys would need about {:.0} MiB ({:.0} MiB idle + {:.0} MiB).",
                group(m.keys),
                m.projected_mib(per),
                m.idle.rss_mib(),
                per * m.keys as f64 / 1048576.0
            );
        }
    }
    if let (true, Some(per)) = (m.all_cached(), m.per_key_overall()) {
        let rss = m.after_fill.rss_mib();
        let _ = writeln!(
            out,
            "Measured with all {} keys cached (`--api-key-cache-entries {}`): VmRSS {:.1} MiB = {:.1} MiB idle + {:.1} MiB, {:.0} bytes per cached key overall; target < 300 MiB {}.",
            group(m.keys),
            m.capacity,
            rss,
            m.idle.rss_mib(),
            rss - m.idle.rss_mib(),
            per,
            match (m.keys >= TARGET_KEYS, rss < 300.0) {
                (false, _) => "not judged (fewer keys than the target's)",
                (true, true) => "met",
                (true, false) => "missed",
            }
        );
    }
    if let Some((sampled, looked_up)) = m.sample {
        let _ = writeln!(
            out,
            "Re-reading {} of the filled keys (evenly spread) needed {} new lookups: {:.1}% of them were still cached.",
            group(sampled),
            group(looked_up),
            100.0 * (sampled.saturating_sub(looked_up)) as f64 / sampled.max(1) as f64
        );
    }
    out
}

pub fn header(machine: &Machine, settings: &Settings, command: &str) -> String {
    format!(
        "Machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}; node {}, {}.\n\
         Load: the Kong emulator (crates/kong-emulator) as {} nginx workers, {} events in flight in total, \
         each request one full `access` event with every PDK round trip; {:.0} s warm-up, then at most {:.0} s measured per scenario.\n\
         Command: `{command}`\n",
        machine.cpus,
        machine.model,
        machine.mem_gib,
        machine.kernel,
        machine.node,
        machine.python,
        settings.workers,
        settings.concurrency,
        settings.warmup,
        settings.seconds,
    )
}
