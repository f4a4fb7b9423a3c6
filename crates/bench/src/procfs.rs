//! What the benchmark reads from `/proc`: CPU time (utime + stime) of a process or of one
//! thread, and its resident memory (`VmRSS`, peak `VmHWM`).

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time split into user and kernel (system) time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
}

impl Cpu {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

/// utime and stime from a `stat` file (`/proc/<pid>/stat` covers every thread of the
/// process; `/proc/<pid>/task/<tid>/stat` one thread).
fn cpu_of_stat_file(path: &str) -> Option<Cpu> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields start after the
    // last ')'. utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let tick = ticks_per_second();
    Some(Cpu {
        user: Duration::from_secs_f64(utime as f64 / tick),
        system: Duration::from_secs_f64(stime as f64 / tick),
    })
}

/// CPU time used so far by process `pid` (all its threads).
pub fn process_cpu(pid: u32) -> Option<Cpu> {
    cpu_of_stat_file(&format!("/proc/{pid}/stat"))
}

/// Busy CPU time of the whole machine so far (every CPU: all but idle and iowait), from
/// `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user.
    let busy =
        v.first()? + v.get(1)? + v.get(2)? + v.get(5).unwrap_or(&0) + v.get(6).unwrap_or(&0) + v.get(7).unwrap_or(&0);
    Some(Duration::from_secs_f64(busy as f64 / ticks_per_second()))
}

/// CPU time used so far by thread `tid` of this process.
pub fn thread_cpu(tid: i32) -> Option<Duration> {
    cpu_of_stat_file(&format!("/proc/self/task/{tid}/stat")).map(|c| c.total())
}

/// The calling thread's id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// `VmRSS` and `VmHWM` (peak RSS) of process `pid`.
pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(process_cpu(pid).is_some());
        assert!(machine_busy().is_some());
        assert!(thread_cpu(current_tid()).is_some());
        let m = memory(pid).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
