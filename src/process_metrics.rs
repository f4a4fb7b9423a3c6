//! The standard `process_*` metrics (resident memory, CPU seconds, open and maximum file
//! descriptors, start time), read from `/proc/self` at scrape time.
//!
//! prometheus-client has no process collector, and these are what an SRE watches first: the
//! memory target of the API-key cache (`process_resident_memory_bytes`), CPU taken from the
//! Kong node, and descriptor exhaustion (each Kong worker keeps a pool of connections to us).
//! Names and units follow the Prometheus client libraries' convention, so existing
//! dashboards work unchanged. A value that cannot be read (not Linux) is left out. Everything
//! comes from `/proc` text, so no `unsafe` system call is needed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// The unit of the clock-tick fields of `/proc/*/stat`: the kernel's `USER_HZ`, fixed at 100
/// by the Linux ABI on every architecture we build for (it is not the kernel's `HZ`).
const USER_HZ: f64 = 100.0;

/// What `/proc/self/stat` tells, already in seconds and bytes.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    virtual_bytes: f64,
    /// Seconds after boot the process started.
    start_after_boot: f64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // after_name's fields start at field 3 (state): field N is at index N - 3.
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<f64>().ok();
    Some(Stat {
        cpu_seconds: (num(14)? + num(15)?) / USER_HZ,
        start_after_boot: num(22)? / USER_HZ,
        virtual_bytes: num(23)?,
    })
}

/// `VmRSS` of `/proc/self/status`, in bytes (the file says kB; no page size needed).
fn resident_bytes(status: &str) -> Option<f64> {
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024.0)
}

/// The soft "Max open files" of `/proc/self/limits`; `None` when unlimited.
fn max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// `btime` of `/proc/stat`: the boot time in Unix seconds.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok().and_then(|t| parse_stat(&t));
        if let Some(s) = &stat {
            let cpu = ConstCounter::new(s.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            if let Some(rss) = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(resident_bytes) {
                gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", rss)?;
            }
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
        if let Some(max) = std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(max_fds) {
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
        let s = parse_stat(line).unwrap();
        assert_eq!(s, Stat { cpu_seconds: 3.0, virtual_bytes: 4_096_000.0, start_after_boot: 10.0 });
        assert_eq!(parse_stat("42 (x) S 1"), None);
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000.0));
    }

    #[test]
    fn rss_and_the_descriptor_limit_come_from_proc_text() {
        assert_eq!(resident_bytes("Name:\tx\nVmRSS:\t   10240 kB\nThreads:\t3\n"), Some(10_485_760.0));
        assert_eq!(resident_bytes("Name:\tkthreadd\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_fds(limits), Some(1024.0));
        assert_eq!(max_fds("Max open files            unlimited            unlimited            files\n"), None);
        // This very process, when on Linux.
        if let Ok(own) = std::fs::read_to_string("/proc/self/limits") {
            assert!(max_fds(&own).is_some_and(|n| n >= 1.0), "{own}");
        }
    }
}
