//! A scrape of a fresh server already lists every metric docs/operations.md documents (counters at
//! 0, so alerts on `rate()` see the first increment), the `process_*` metrics an SRE watches,
//! the build info, and `ghasi_ready` agreeing with `/ready`.

mod common;

use common::http::{get, sample};
use common::start_with_metrics;

/// The rows of the metrics reference (docs/operations.md, linked from the README): (metric
/// names, whole row).
fn documented_metric_rows() -> Vec<(Vec<String>, String)> {
    let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let table = reference.split("\n### Metrics\n").nth(1).expect("docs/operations.md has a Metrics section");
    let table = table.split("\n### ").next().unwrap();
    let rows: Vec<_> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let first = row.split('|').nth(1).unwrap();
            let names = first.split('`').skip(1).step_by(2).map(str::to_owned).collect();
            (names, row.to_owned())
        })
        .collect();
    assert!(rows.len() >= 12, "the metrics table was not found: {rows:?}");
    rows
}

/// Whether the exposition has a sample of `name` (a histogram's `_bucket`/`_count` count).
fn has_sample(metrics: &str, name: &str) -> bool {
    metrics.lines().filter(|l| !l.starts_with('#')).any(|l| {
        let series = l.split([' ', '{']).next().unwrap_or("");
        series == name || series == format!("{name}_bucket") || series == format!("{name}_count")
    })
}

#[test]
fn a_fresh_server_exposes_every_documented_metric() {
    let (_server, addr) = start_with_metrics(&[]);
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    let mut checked = 0;
    for (names, row) in documented_metric_rows() {
        // Series labelled by a Kong route id or a JWKS URL cannot exist before Kong's first
        // request names them; the reference says so in the row.
        if row.contains("appears with") {
            continue;
        }
        for name in names {
            assert!(
                has_sample(&metrics, &name),
                "docs/operations.md lists {name}, a fresh scrape lacks it:\n{metrics}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} metrics checked");

    // Counters with known label values start at 0.
    for (name, label) in [
        ("ghasi_rpc_errors_total", r#"kind="no_instance""#),
        ("ghasi_connection_errors_total", r#"kind="bad_frame""#),
        ("ghasi_upstream_failures_total", r#"kind="timeout",target="auth_service""#),
        ("ghasi_upstream_failures_total", r#"kind="empty_set",target="jwks""#),
        ("ghasi_cache_requests_total", r#"plugin="ghasi-api-key-lookup",result="stale""#),
        ("ghasi_cache_evictions_total", r#"cache="verified_tokens""#),
    ] {
        let labels: Vec<&str> = label.split(',').collect();
        assert_eq!(sample(&metrics, name, &labels), Some(0.0), "{name}{{{label}}}:\n{metrics}");
    }

    // Build info and the process metrics, with plausible values.
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&metrics, "ghasi_build_info", &[&version]), Some(1.0), "{metrics}");
    let rss = sample(&metrics, "process_resident_memory_bytes", &[]).expect("RSS");
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss}");
    assert!(sample(&metrics, "process_cpu_seconds_total", &[]).expect("CPU") >= 0.0);
    let open = sample(&metrics, "process_open_fds", &[]).expect("open fds");
    let max = sample(&metrics, "process_max_fds", &[]).expect("max fds");
    assert!(open >= 3.0 && open < max, "open {open}, max {max}");
    let start = sample(&metrics, "process_start_time_seconds", &[]).expect("start time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - start).abs() < 600.0, "started at {start}, now {now}");
    assert_eq!(sample(&metrics, "ghasi_ready", &[]), Some(1.0));
}

#[test]
fn ghasi_ready_is_0_while_ready_answers_503() {
    // A JWKS that never loads (nothing listens on port 1) keeps /ready at 503: the alert must
    // see that on /metrics, which still answers.
    let (_server, addr) = start_with_metrics(&["--warm-jwks", "http://127.0.0.1:1/jwks.json"]);
    let (status, _) = get(&addr, "/ready");
    assert_eq!(status, 503);
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "ghasi_ready", &[]), Some(0.0), "{metrics}");
}

fn probe(urls: &[String]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"))
        .arg("--probe")
        .arg(urls.join(","))
        .output()
        .expect("running --probe");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_exec_probe_passes_only_when_every_url_answers_200() {
    // The Kubernetes readiness probe of deploy/kubernetes: Kong's /status/ready and our /ready.
    let (_ready, ready_addr) = start_with_metrics(&[]);
    let (_not_ready, not_ready_addr) = start_with_metrics(&["--warm-jwks", "http://127.0.0.1:1/jwks.json"]);
    let ok = format!("http://{ready_addr}/ready");
    let unavailable = format!("http://{not_ready_addr}/ready");
    assert_eq!(probe(&[ok.clone(), format!("http://{ready_addr}/health")]), (true, String::new()));
    let (passed, stderr) = probe(&[ok.clone(), unavailable.clone()]);
    assert!(!passed && stderr.contains(&unavailable) && stderr.contains("answered 503"), "{stderr}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // dropped: nothing listens
    let (passed, stderr) = probe(&[format!("http://{closed}/status/ready"), ok]);
    assert!(!passed && stderr.contains(&closed.to_string()), "{stderr}");
}
