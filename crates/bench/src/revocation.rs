//! Scenario `revocation` (project issue 14): what revocation push and refresh-ahead cost and
//! buy, printed as figures (nothing asserted):
//!
//! * **latency**: two plugin-server processes subscribed to one `redis-server`; for each of
//!   many keys, cached on both, the dev auth-service revokes it (publishing on Redis) and the
//!   time until both nodes refuse it is measured: p50, p99, max;
//! * **hot keys**: one server with the test clock; a key asked every simulated second for ten
//!   simulated minutes: auth-service calls per key per minute, and how many requests waited for
//!   a lookup, with `refresh_ahead` at its default (10 s) and off;
//! * **eviction scan**: the API-key cache itself (in this process) with 1,000,000 keys: how
//!   long an eviction by account (a scan; no per-account index) takes, and the longest a cache
//!   hit waited meanwhile.
//!
//! Needs `redis-server` (Debian package) for the latency part; skipped with a note without it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_auth_service::{fixtures, DevAuthService, DevConfig};
use ghasi_plugin_server::clock::Clock;
use ghasi_plugin_server::keyed_hash::KeyedHash;
use ghasi_plugin_server::plugins::api_key::cache::{KeyCache, Lifetimes};
use ghasi_plugin_server::plugins::api_key::client::{Answer, KeyInfo};
use kong_emulator::{Kong, Request, Value};
use serde_json::json;

/// Runs the three parts; returns the report section (markdown).
pub fn run(server: &Path, revocations: usize) -> String {
    let mut md = String::new();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    match rt.block_on(latency(server, revocations)) {
        Ok(line) => md.push_str(&line),
        Err(e) => {
            let _ = writeln!(md, "- revocation latency: not measured ({e:#})");
        }
    }
    for refresh_ahead in [10, 0] {
        match rt.block_on(hot_key(server, refresh_ahead)) {
            Ok(line) => md.push_str(&line),
            Err(e) => {
                let _ = writeln!(md, "- hot key (refresh_ahead {refresh_ahead}): not measured ({e:#})");
            }
        }
    }
    md.push_str(&rt.block_on(scan(1_000_000)));
    md
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn redis() -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("redis-server not available: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((Proc(child), format!("redis://127.0.0.1:{port}")))
}

/// Starts our server on its own socket with extra environment; waits for the socket.
fn node(server: &Path, dir: &Path, name: &str, env: &[(&str, &str)]) -> anyhow::Result<(Proc, PathBuf)> {
    let socket = dir.join(format!("{name}.sock"));
    let mut cmd = Command::new(server);
    cmd.arg("--socket").arg(&socket).env("GHASI_LOG", "warn");
    for var in ["GHASI_METRICS_LISTEN", "GHASI_TEST_CLOCK", "GHASI_REVOCATION_REDIS_URL", "GHASI_LOG_FORMAT"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::null());
    let child = Proc(cmd.spawn()?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{name}: socket never accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, socket))
}

/// The value of the sample of `name` whose labels contain `label`, from `/metrics`.
fn scrape(addr: &str, name: &str, label: &str) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let line = text.lines().find(|l| l.starts_with(name) && l.contains(label));
    Ok(line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0) as u64)
}

async fn status(kong: &Kong, plugin: &kong_emulator::Plugin, key: &str) -> anyhow::Result<u16> {
    let mut req = Request::new("GET", "/v1/messages").with_header("x-api-key", key.to_string());
    let outcome = kong.run_event(plugin, "access", &mut req).await?;
    Ok(outcome.exit.as_ref().map_or(200, |e| e.status))
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn latency(server: &Path, n: usize) -> anyhow::Result<String> {
    let (_redis, url) = redis()?;
    let auth = DevAuthService::start(DevConfig::for_tests()).await?;
    auth.publish_revocations(&url, "ghasi:revocations")?;
    let dir = tempfile::tempdir()?;
    let env = [("GHASI_REVOCATION_REDIS_URL", url.as_str())];
    let (_a, sock_a) = node(server, dir.path(), "a", &env)?;
    let (_b, sock_b) = node(server, dir.path(), "b", &env)?;
    let kongs = [Kong::new(sock_a), Kong::new(sock_b)];
    let config = json!({"auth_service_url": auth.url(), "service_token": fixtures::SERVICE_TOKEN});
    let plugins: Vec<_> = kongs.iter().map(|k| k.plugin("ghasi-api-key-lookup", config.clone())).collect();
    // Give both subscribers time to subscribe (a flush on subscription would also refuse).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("bench_revocation_key_{i:06}_0123456789abcdef");
        auth.add_api_key(dev_auth_service::ApiKey::new(key.clone(), format!("key_rev_{i}"), fixtures::ACCOUNT_GLOBEX))?;
        for (kong, plugin) in kongs.iter().zip(&plugins) {
            anyhow::ensure!(status(kong, plugin, &key).await? == 200, "key {i} not admitted");
        }
        let since = Instant::now();
        auth.revoke_key(&key);
        for (kong, plugin) in kongs.iter().zip(&plugins) {
            while status(kong, plugin, &key).await? != 401 {
                anyhow::ensure!(since.elapsed() < Duration::from_secs(30), "key {i} never refused");
            }
        }
        took.push(since.elapsed());
    }
    took.sort();
    let ms = |q| quantile(&took, q);
    eprintln!("   revocation latency over {n}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms(0.5), ms(0.99), ms(1.0));
    Ok(format!(
        "- revocation latency (key revoked at the dev auth-service → refused on both of 2 nodes, via Redis pub/sub), {n} revocations: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    ))
}

async fn hot_key(server: &Path, refresh_ahead: u64) -> anyhow::Result<String> {
    let auth = DevAuthService::start(DevConfig::for_tests()).await?;
    let dir = tempfile::tempdir()?;
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let env = [("GHASI_TEST_CLOCK", "1"), ("GHASI_METRICS_LISTEN", metrics.as_str())];
    let (_node, socket) = node(server, dir.path(), "hot", &env)?;
    let kong = Kong::new(socket);
    let config = json!({"auth_service_url": auth.url(), "service_token": fixtures::SERVICE_TOKEN, "refresh_ahead": refresh_ahead});
    let plugin = kong.plugin("ghasi-api-key-lookup", config);
    let minutes = 10;
    let mut requests = 0u64;
    for _second in 0..minutes * 60 {
        anyhow::ensure!(status(&kong, &plugin, fixtures::KEY_ALICE).await? == 200, "hot key refused");
        requests += 1;
        // Let a background revalidation finish before the clock moves on.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let param = Value::Map(vec![(Value::from("Seconds"), Value::from(1u64))]);
        kong.call("ghasi-api-key-lookup", "plugin.GhasiTestAdvanceClock", &param).await?;
    }
    let per_minute = auth.lookups() as f64 / minutes as f64;
    // Requests that waited for a lookup: the cache's misses (a background revalidation is not one).
    let waited = scrape(&metrics, "ghasi_cache_requests_total", "result=\"miss\"")?;
    eprintln!("   hot key, refresh_ahead {refresh_ahead}: {per_minute:.2} auth-service calls/min, {waited} of {requests} requests waited");
    Ok(format!(
        "- hot key (one request per second for {minutes} simulated minutes, cache_ttl 60 s, refresh_ahead {refresh_ahead} s): {per_minute:.2} auth-service calls per key per minute; {waited} of {requests} requests waited for a lookup\n"
    ))
}

async fn scan(keys: usize) -> String {
    let cache = Arc::new(KeyCache::new(keys, 16, Clock::system()));
    let keyed = KeyedHash::random();
    let lifetimes = Lifetimes {
        positive: Duration::from_secs(3600),
        negative: Duration::from_secs(15),
        stale_if_error: Duration::ZERO,
        refresh_ahead: Duration::ZERO,
    };
    let fill = Instant::now();
    for i in 0..keys {
        let info = KeyInfo {
            account_id: format!("acc_{:05}", i % 10_000),
            key_id: format!("key_{i:07}"),
            user_id: Some("usr_0001".into()),
            consumer_username: None,
            expires_at: None,
        };
        cache
            .resolve(
                keyed.digest(format!("scan-{i}").as_bytes()),
                lifetimes,
                move || async move { Answer::Valid(info) },
            )
            .await;
    }
    eprintln!("   eviction scan: {keys} keys cached in {:.1} s", fill.elapsed().as_secs_f64());
    // A reader hitting the cache in a loop records the longest a hit took during the scans.
    let stop = Arc::new(AtomicBool::new(false));
    let worst_ns = Arc::new(AtomicU64::new(0));
    let reader = {
        let (cache, stop, worst_ns, keyed) = (cache.clone(), stop.clone(), worst_ns.clone(), keyed.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let d = keyed.digest(b"scan-1");
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                rt.block_on(cache.resolve(d, lifetimes, || async { Answer::Invalid { status: 404 } }));
                worst_ns.fetch_max(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The same reader without a scan: what the machine itself costs a hit (preemption).
    worst_ns.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let idle_worst_us = worst_ns.load(Ordering::Relaxed) as f64 / 1000.0;
    worst_ns.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let by_account = cache.evict_account("acc_00007");
    let account_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let by_key = cache.evict_key_id("key_0500000");
    let key_ms = t.elapsed().as_secs_f64() * 1000.0;
    let worst_us = worst_ns.load(Ordering::Relaxed) as f64 / 1000.0;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let t = Instant::now();
    let flushed = cache.flush();
    eprintln!("   flush dropped {flushed}");
    let flush_ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "   eviction scan over {keys}: by account {account_ms:.1} ms ({by_account} dropped), by key id {key_ms:.1} ms ({by_key}), longest hit meanwhile {worst_us:.0} µs (without a scan {idle_worst_us:.0} µs); flush {flush_ms:.1} ms"
    );
    format!(
        "- eviction scan, {keys} cached keys (no per-account index): by account {account_ms:.1} ms ({by_account} dropped), by key id {key_ms:.1} ms; the longest cache hit during the scans {worst_us:.0} µs, over as long without a scan {idle_worst_us:.0} µs (the lock is taken per chunk of 16,384 entries); flush of everything {flush_ms:.1} ms\n"
    )
}
