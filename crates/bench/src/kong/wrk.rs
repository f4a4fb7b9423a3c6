//! The load side: one probe request through the rig, and wrk runs with their output read back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Status of one GET through the rig.
pub(super) fn status_of(port: u16, headers: &[(String, String)]) -> anyhow::Result<u16> {
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

/// Runs wrk with `conns` connections and `headers` for `seconds`; its output and how long it took.
pub(super) fn run(
    port: u16,
    conns: usize,
    headers: &[(String, String)],
    seconds: f64,
    threads: usize,
) -> anyhow::Result<(String, Duration)> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", threads.min(conns).max(1)))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", seconds.max(1.0).round() as u64))
        .arg("--latency");
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://127.0.0.1:{port}/bench"));
    let started = Instant::now();
    let out = cmd.output().context("running wrk")?;
    anyhow::ensure!(out.status.success(), "wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), started.elapsed()))
}

/// (req/s, p50 ms, p99 ms, requests, non-2xx/3xx responses) from wrk's `--latency` output.
pub(super) fn parse(text: &str) -> Option<(f64, f64, f64, u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 1s test @ http://127.0.0.1:8000/bench
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   90.00%
    Req/Sec    20.00k     1.00k   22.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    2.00ms
     99%    3.21ms
  40000 requests in 1.00s, 5.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  39999.50
Transfer/sec:      5.00MB
";

    #[test]
    fn reads_rate_percentiles_and_counts() {
        let (rps, p50, p99, requests, non2xx) = parse(OUTPUT).expect("a complete wrk output");
        assert_eq!((rps, requests, non2xx), (39999.5, 40000, 12));
        assert!((p50 - 0.812).abs() < 1e-9 && (p99 - 3.21).abs() < 1e-9, "{p50} {p99}");
        assert_eq!(ms("2.00s"), Some(2000.0));
        assert_eq!(ms("12"), None);
    }

    #[test]
    fn an_output_without_the_latency_distribution_is_unreadable() {
        let cut: String = OUTPUT.lines().filter(|l| !l.contains("99%")).collect::<Vec<_>>().join("\n");
        assert_eq!(parse(&cut), None);
    }
}
