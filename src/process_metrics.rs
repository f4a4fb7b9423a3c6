//! The standard `process_*` metrics (resident memory, CPU seconds, open and maximum file
//! descriptors, start time), read from `/proc/self` at scrape time.
//!
//! prometheus-client has no process collector, and these are what an SRE watches first: the
//! memory target of the API-key cache (`process_resident_memory_bytes`), CPU taken from the
//! Kong node, and descriptor exhaustion (each Kong worker keeps a pool of connections to us).
//! Names and units follow the Prometheus client libraries' convention, so existing
//! dashboards work unchanged. A value that cannot be read (not Linux) is left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What `/proc/self/stat` tells, already in seconds and bytes.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    /// Seconds after boot the process started.
    start_after_boot: f64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(text: &str, ticks_per_second: f64, page_bytes: f64) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // after_name's fields start at field 3 (state): field N is at index N - 3.
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<f64>().ok();
    Some(Stat {
        cpu_seconds: (num(14)? + num(15)?) / ticks_per_second,
        start_after_boot: num(22)? / ticks_per_second,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page_bytes,
    })
}

/// `btime` of `/proc/stat`: the boot time in Unix seconds.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as f64)
}

fn max_fds() -> Option<f64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as f64)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = match (sysconf(libc::_SC_CLK_TCK), sysconf(libc::_SC_PAGESIZE)) {
            (Some(ticks), Some(page)) => {
                std::fs::read_to_string("/proc/self/stat").ok().and_then(|t| parse_stat(&t, ticks, page))
            }
            _ => None,
        };
        if let Some(s) = &stat {
            let cpu = ConstCounter::new(s.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", s.resident_bytes)?;
            gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size in bytes", s.virtual_bytes)?;
            if let Some(boot) = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time) {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    boot + s.start_after_boot,
                )?;
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Counting includes the descriptor read_dir itself holds, as every client library does.
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", dir.count() as f64)?;
        }
        if let Some(max) = max_fds() {
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks, starttime
        // 1000 ticks, vsize 4096000, rss 300 pages.
        let line =
            "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 4096000 300 18446744073709551615";
        let s = parse_stat(line, 100.0, 4096.0).unwrap();
        assert_eq!(
            s,
            Stat { cpu_seconds: 3.0, resident_bytes: 1_228_800.0, virtual_bytes: 4_096_000.0, start_after_boot: 10.0 }
        );
        assert_eq!(parse_stat("42 (x) S 1", 100.0, 4096.0), None);
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000.0));
    }
}
