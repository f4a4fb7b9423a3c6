//! The figures of the Kong-client benchmark as markdown: one table per Kong version, and the
//! targets (hit cells against the zero-work floor and the JS server) per connection count.

/// One measured cell's figures (medians over the rounds), or why it failed.
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

fn num(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.digits$}")
    }
}

/// The markdown table of one Kong version, and the targets of project issue 13.
pub fn report(results: &[CellResult], conns: &[usize]) -> String {
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
        for &c in conns {
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
