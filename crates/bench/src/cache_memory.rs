//! `ghasi-bench cache-memory [KEYS]`: bytes per cached API key, our cache against `moka`.
//!
//! Why the API-key cache is hand-written instead of `moka` (the cache the design card names):
//! at 1,000,000 keys it holds each for about a third of moka's memory. This subcommand keeps
//! that comparison reproducible. Each cache is filled in a child process of its own (a fresh
//! heap, so neither inherits the other's freed memory) with `KEYS` (default 1,000,000)
//! distinct valid keys of one shape: a 128-bit keyed digest as the key, a 42-byte identity
//! (account id, key id, user id, consumer username) plus the times it was learnt and expires
//! as the value. The child prints its `VmRSS` growth over the fill divided by `KEYS`.
//!
//! * **ours**: `KeyCache` filled the way the plugin fills it (`resolve` with a lookup that
//!   answers "valid"), capacity `KEYS`;
//! * **moka**: `moka::sync::Cache<Digest, (KeyIdentity, u64, u64)>` with `max_capacity` `KEYS`,
//!   its pending maintenance run before measuring.
//!
//! Nothing is asserted: the figures are printed (and differ a little by allocator and machine).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ghasi_plugin_server::clock::Clock;
use ghasi_plugin_server::keyed_hash::KeyedHash;
use ghasi_plugin_server::plugins::api_key::cache::{KeyCache, KeyIdentity, Lifetimes, NEGATIVE_CAPACITY};
use ghasi_plugin_server::plugins::api_key::client::{Answer, KeyInfo};

use crate::procfs;

const DEFAULT_KEYS: usize = 1_000_000;

/// The implementations compared, as the child takes them.
const CACHES: [&str; 2] = ["ours", "moka"];

/// Parent: runs one child per cache and prints the comparison.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("--child") {
        let which = args.get(1).context("--child needs ours|moka")?;
        let keys = parse_keys(args.get(2))?;
        return child(which, keys);
    }
    let keys = parse_keys(args.first())?;
    let me = std::env::current_exe().context("locating ghasi-bench")?;
    println!("API-key cache memory at {keys} valid keys (42-byte identities), each filled in its own process:\n");
    println!("| cache | VmRSS growth MiB | bytes per key | fill s |");
    println!("|---|--:|--:|--:|");
    for which in CACHES {
        let out = Command::new(&me)
            .args(["cache-memory", "--child", which, &keys.to_string()])
            .output()
            .with_context(|| format!("running the {which} child"))?;
        anyhow::ensure!(out.status.success(), "{which} child failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout);
        let [grown_kib, secs]: [f64; 2] = line
            .split_whitespace()
            .map(|f| f.parse::<f64>())
            .collect::<Result<Vec<_>, _>>()?
            .try_into()
            .map_err(|_| anyhow::anyhow!("unexpected child output {line:?}"))?;
        let per_key = grown_kib * 1024.0 / keys as f64;
        println!("| {which} | {:.1} | {per_key:.0} | {secs:.1} |", grown_kib / 1024.0);
    }
    Ok(())
}

fn parse_keys(arg: Option<&String>) -> anyhow::Result<usize> {
    match arg {
        None => Ok(DEFAULT_KEYS),
        Some(n) => n.parse().with_context(|| format!("KEYS must be a number, got {n:?}")),
    }
}

/// The `i`-th key's identity: 10 + 12 + 10 + 10 = 42 bytes, accounts shared by 100 keys.
fn info(i: usize) -> KeyInfo {
    KeyInfo {
        account_id: format!("acc_{:06}", i / 100),
        key_id: format!("key_{i:08}"),
        user_id: Some(format!("usr_{:06}", i / 10)),
        consumer_username: Some(format!("shop_{:05}", i % 100_000)),
        expires_at: None,
    }
}

/// Child: fills one cache and prints `<VmRSS growth KiB> <fill seconds>`.
fn child(which: &str, keys: usize) -> anyhow::Result<()> {
    let keyed = KeyedHash::random();
    let rss = || procfs::memory(std::process::id()).map(|m| m.rss_kib).context("reading VmRSS");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let before = rss()?;
    let started = Instant::now();
    let grown = match which {
        "ours" => {
            let cache = Arc::new(KeyCache::new(keys, NEGATIVE_CAPACITY, Clock::system()));
            let lifetimes = Lifetimes {
                positive: Duration::from_secs(3600),
                negative: Duration::from_secs(15),
                stale_if_error: Duration::ZERO,
                refresh_ahead: Duration::ZERO,
            };
            rt.block_on(async {
                for i in 0..keys {
                    let answer = Answer::Valid(info(i));
                    let digest = keyed.digest(format!("key-{i}").as_bytes());
                    cache.resolve(digest, lifetimes, move || async move { answer }).await;
                }
            });
            anyhow::ensure!(cache.len().0 == keys, "ours kept {} of {keys} keys", cache.len().0);
            let grown = rss()? - before;
            drop(cache);
            grown
        }
        "moka" => {
            let cache: moka::sync::Cache<[u8; 16], (KeyIdentity, u64, u64)> =
                moka::sync::Cache::builder().max_capacity(keys as u64).build();
            let now = Clock::system();
            for i in 0..keys {
                let learnt = now.now().as_millis() as u64;
                cache.insert(
                    keyed.digest(format!("key-{i}").as_bytes()),
                    (KeyIdentity::new(&info(i)), learnt, u64::MAX),
                );
            }
            cache.run_pending_tasks();
            anyhow::ensure!(cache.entry_count() == keys as u64, "moka kept {} of {keys} keys", cache.entry_count());
            let grown = rss()? - before;
            drop(cache);
            grown
        }
        other => anyhow::bail!("unknown cache {other:?} (ours, moka)"),
    };
    println!("{grown} {:.2}", started.elapsed().as_secs_f64());
    Ok(())
}
