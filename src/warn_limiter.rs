//! Rate-limited warnings: during an auth-service outage every request fails the same way,
//! and one warning per request would flood Kong's error log. A limiter lets one message
//! through per interval and counts what it suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct WarnLimiter {
    interval_ms: u64,
    /// Millisecond timestamp (process clock) of the last message let through, +1 (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    pub const fn new(interval_secs: u64) -> WarnLimiter {
        WarnLimiter { interval_ms: interval_secs * 1000, last: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` when a message may be logged at `now` (a [`crate::clock::Clock::now`]
    /// reading; `n` = messages suppressed since the last one), `None` when it should be
    /// dropped.
    pub fn allow(&self, now: Duration) -> Option<u64> {
        let now = now.as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// `tracing::warn!` at most once per limiter interval, with the count of dropped repeats.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $now:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limiter.allow($now) {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval_and_counts_the_rest() {
        let l = WarnLimiter::new(3600);
        let at = Duration::from_secs;
        assert_eq!(l.allow(at(10)), Some(0));
        assert_eq!(l.allow(at(11)), None);
        assert_eq!(l.allow(at(3609)), None);
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 2);
        assert_eq!(l.allow(at(3610)), Some(2), "the next interval, with the count");
    }
}
