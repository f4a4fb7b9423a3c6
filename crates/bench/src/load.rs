//! The load generator: the Kong emulator playing `workers` nginx workers, each a thread with
//! its own single-threaded runtime, its own connection pool to the socket and its own
//! StartInstance (as in Kong, where every worker holds a pool and an instance per plugin),
//! and `concurrency / workers` requests in flight per worker. Each request is one full
//! `access` event with every PDK round trip executed against an in-memory request.
//!
//! A run has a warm-up (not measured: instances started, connections opened, caches
//! filled) and a measured window bounded by time and by request count. During the window
//! it records each event's latency, the RPCs and PDK calls the emulator sent, and, from
//! `/proc`, the CPU time of the server process and of the emulator's worker threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kong_emulator::{EventOutcome, Kong, Request};

use crate::procfs;
use crate::servers::Server;

/// Builds request number `i` (0, 1, 2, … across all workers and across the runs that share
/// a [`LoadSpec::next`] counter); `None` when the supply of distinct requests (e.g.
/// pre-minted tokens) is used up.
pub type RequestGen = Arc<dyn Fn(u64) -> Option<Request> + Send + Sync>;

/// What a correct answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The request goes on upstream with `X-Account-Id` set.
    Admitted,
    /// `kong.response.exit` with this status.
    Exit(u16),
}

/// One load run.
#[derive(Clone)]
pub struct LoadSpec {
    pub plugin: String,
    pub config: serde_json::Value,
    pub gen: RequestGen,
    /// Index of the next request; shared by the runs (rounds) of one scenario, so that a
    /// scenario of distinct keys or tokens never repeats one.
    pub next: Arc<AtomicU64>,
    pub expect: Expect,
    /// Warm-up lasts at least this long …
    pub warmup: Duration,
    /// … and at least this many requests.
    pub warmup_requests: u64,
    /// The measured window ends after this long …
    pub duration: Duration,
    /// … or this many measured requests, or when `gen` runs out.
    pub max_requests: u64,
    pub workers: usize,
    pub concurrency: usize,
}

/// What a run measured (measured window only).
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Correctly answered events.
    pub requests: u64,
    pub wall: Duration,
    /// Event latencies in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    pub rpcs: u64,
    pub pdk_calls: u64,
    /// Events that failed or answered wrongly (warm-up included).
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_cpu: procfs::Cpu,
    pub emulator_cpu: Duration,
    /// CPU time the rest of the machine used meanwhile (other processes; not the server, not
    /// this harness): what disturbed the run.
    pub other_cpu: Duration,
    /// Busy CPU time of the whole machine during the window.
    pub machine_busy: Duration,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Latency quantile `q` (0..1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let n = self.latencies_ns.len();
        let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        self.latencies_ns[idx] as f64 / 1e6
    }
    pub fn per_request(&self, total: u64) -> f64 {
        total as f64 / self.requests.max(1) as f64
    }
    /// Server CPU time per request, microseconds.
    pub fn server_us(&self) -> f64 {
        self.server_cpu.total().as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
    /// Share of the server's CPU time spent in the kernel.
    pub fn server_kernel_share(&self) -> f64 {
        self.server_cpu.system.as_secs_f64() / self.server_cpu.total().as_secs_f64().max(1e-9)
    }
    /// Adds another window of the same scenario.
    pub fn merge(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.wall += other.wall;
        self.latencies_ns.extend(other.latencies_ns);
        self.latencies_ns.sort_unstable();
        self.rpcs += other.rpcs;
        self.pdk_calls += other.pdk_calls;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.server_cpu.user += other.server_cpu.user;
        self.server_cpu.system += other.server_cpu.system;
        self.emulator_cpu += other.emulator_cpu;
        self.other_cpu += other.other_cpu;
        self.machine_busy += other.machine_busy;
    }
    /// Share of the machine's CPUs busy during the window (everything, not only the server).
    pub fn machine_busy_share(&self) -> f64 {
        let cpus = std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1) as f64;
        self.machine_busy.as_secs_f64() / (self.wall.as_secs_f64().max(1e-9) * cpus)
    }
    /// Cores the rest of the machine kept busy during the window.
    pub fn other_cores(&self) -> f64 {
        self.other_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
    /// Emulator (load generator) CPU time per request, microseconds.
    pub fn emulator_us(&self) -> f64 {
        self.emulator_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Shared {
    phase: AtomicU8,
    warm_done: AtomicU64,
    measured: AtomicU64,
    live_tasks: AtomicUsize,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct TaskResult {
    latencies_ns: Vec<u64>,
    requests: u64,
    rpcs: u64,
    pdk_calls: u64,
}

impl TaskResult {
    fn merge(&mut self, other: TaskResult) {
        self.latencies_ns.extend(other.latencies_ns);
        self.requests += other.requests;
        self.rpcs += other.rpcs;
        self.pdk_calls += other.pdk_calls;
    }
}

/// Runs `spec` against `server` and returns the measured window's figures.
pub fn run(server: &Server, spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARM),
        warm_done: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        live_tasks: AtomicUsize::new(spec.concurrency.max(spec.workers)),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let workers = spec.workers.max(1);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    // Workers stay alive until their CPU time has been read (a finished thread's
    // /proc/self/task/<tid> is gone).
    let release = Arc::new(std::sync::Barrier::new(workers + 1));
    let mut threads = Vec::new();
    for w in 0..workers {
        // Spread the tasks: the first `concurrency % workers` workers take one more.
        let tasks = spec.concurrency.max(workers) / workers + usize::from(w < spec.concurrency.max(workers) % workers);
        let socket = server.socket.clone();
        let (shared, spec, tid_tx, release) = (shared.clone(), spec.clone(), tid_tx.clone(), release.clone());
        let thread = std::thread::Builder::new()
            .name(format!("kong-worker-{w}"))
            .spawn(move || {
                let result = worker(socket, spec, tasks, shared, tid_tx);
                release.wait();
                result
            })
            .context("spawning an emulator worker")?;
        threads.push(thread);
    }
    drop(tid_tx);
    let tids: Vec<i32> = tid_rx.iter().take(workers).collect();
    let emulator_cpu = || tids.iter().map(|&t| procfs::thread_cpu(t).unwrap_or_default()).sum::<Duration>();

    // Warm-up.
    let warm_start = Instant::now();
    // (The request count is given up after a minute: a server answering only errors never
    // reaches it.)
    let warm_limit = spec.warmup + Duration::from_secs(60);
    while shared.live_tasks.load(Ordering::Relaxed) > 0
        && (warm_start.elapsed() < spec.warmup
            || (shared.warm_done.load(Ordering::Relaxed) < spec.warmup_requests && warm_start.elapsed() < warm_limit))
    {
        std::thread::sleep(Duration::from_millis(2));
    }

    // Measured window.
    let own = || procfs::process_cpu(std::process::id()).unwrap_or_default().total();
    let busy = || procfs::machine_busy().unwrap_or_default();
    let (cpu0, emu0, own0, busy0) = (server.cpu(), emulator_cpu(), own(), busy());
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::SeqCst);
    while shared.live_tasks.load(Ordering::Relaxed) > 0
        && t0.elapsed() < spec.duration
        && shared.measured.load(Ordering::Relaxed) < spec.max_requests
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    shared.phase.store(STOP, Ordering::SeqCst);
    let wall = t0.elapsed();
    let (cpu1, emu1, own1, busy1) = (server.cpu(), emulator_cpu(), own(), busy());
    release.wait();
    let server_cpu = cpu1.since(&cpu0);
    let machine_busy = busy1.saturating_sub(busy0);
    let other_cpu = machine_busy.saturating_sub(server_cpu.total()).saturating_sub(own1.saturating_sub(own0));

    let mut total = TaskResult::default();
    for t in threads {
        let r = t.join().map_err(|_| anyhow::anyhow!("an emulator worker panicked"))??;
        total.merge(r);
    }
    total.latencies_ns.sort_unstable();
    let first_error = shared.first_error.lock().unwrap().clone();
    Ok(LoadResult {
        requests: total.requests,
        wall,
        latencies_ns: total.latencies_ns,
        rpcs: total.rpcs,
        pdk_calls: total.pdk_calls,
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
        server_cpu,
        emulator_cpu: emu1.saturating_sub(emu0),
        other_cpu,
        machine_busy,
    })
}

/// One emulated nginx worker.
fn worker(
    socket: PathBuf,
    spec: LoadSpec,
    tasks: usize,
    shared: Arc<Shared>,
    tid_tx: std::sync::mpsc::Sender<i32>,
) -> anyhow::Result<TaskResult> {
    let _ = tid_tx.send(procfs::current_tid());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let kong = Kong::builder(socket).read_timeout(Duration::from_secs(10)).build();
        let plugin = kong.plugin(&spec.plugin, spec.config.clone());
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (kong, plugin, shared, gen) = (kong.clone(), plugin.clone(), shared.clone(), spec.gen.clone());
                let next = spec.next.clone();
                let expect = spec.expect;
                tokio::spawn(async move {
                    let mut result = TaskResult::default();
                    loop {
                        if shared.phase.load(Ordering::Relaxed) == STOP {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(mut req) = gen(i) else { break };
                        let started = Instant::now();
                        let outcome = kong.run_event(&plugin, "access", &mut req).await;
                        let elapsed = started.elapsed();
                        let verdict = check(expect, &outcome, &req);
                        match (shared.phase.load(Ordering::Relaxed), verdict) {
                            (_, Err(why)) => {
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                                shared.first_error.lock().unwrap().get_or_insert(why);
                            }
                            (WARM, Ok(_)) => {
                                shared.warm_done.fetch_add(1, Ordering::Relaxed);
                            }
                            (MEASURE, Ok(o)) => {
                                shared.measured.fetch_add(1, Ordering::Relaxed);
                                result.requests += 1;
                                result.rpcs += o.rpcs as u64;
                                result.pdk_calls += o.pdk_calls.len() as u64;
                                result.latencies_ns.push(elapsed.as_nanos() as u64);
                            }
                            _ => break,
                        }
                    }
                    shared.live_tasks.fetch_sub(1, Ordering::Relaxed);
                    result
                })
            })
            .collect();
        let mut total = TaskResult::default();
        for h in handles {
            total.merge(h.await?);
        }
        Ok(total)
    })
}

/// Whether the event ended the way the scenario expects.
fn check<'a>(
    expect: Expect,
    outcome: &'a Result<EventOutcome, kong_emulator::Error>,
    req: &Request,
) -> Result<&'a EventOutcome, String> {
    let o = outcome.as_ref().map_err(|e| format!("event failed: {e}"))?;
    if let Some(why) = &o.abandoned {
        return Err(format!("event abandoned: {why}"));
    }
    match (expect, &o.exit) {
        (Expect::Admitted, None) if req.upstream_header("x-account-id").is_some() => Ok(o),
        (Expect::Admitted, None) => Err("admitted without X-Account-Id".into()),
        (Expect::Exit(s), Some(exit)) if exit.status == s => Ok(o),
        (_, Some(exit)) => Err(format!("answered {} {}", exit.status, truncate(&exit.body_text(), 200))),
        (Expect::Exit(s), None) => Err(format!("admitted, expected {s}")),
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
