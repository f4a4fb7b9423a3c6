//! The clock every TTL and token-time check reads: a value the [`Services`] hold and hand to
//! the caches, not a process-wide static, so a test can run against its own clock.
//!
//! Production reads the system clocks. Tests of cache lifetimes (60 s API-key TTL, 300 s
//! JWKS lifetime, token expiry) must not sleep, and they drive the real binary, so its clock
//! can be moved forward: in a build with the `test-hooks` feature and `GHASI_TEST_CLOCK=1`,
//! the hidden RPC `plugin.GhasiTestAdvanceClock {Seconds}` calls `Clock::advance`, which adds
//! an offset to both readings below. Otherwise the offset stays zero: a release build has
//! neither the RPC nor `advance`.
//!
//! A clone shares the offset (one `Arc`); reading costs what reading a static did: one
//! `Instant::elapsed` and one relaxed atomic load, no lock.
//!
//! [`Services`]: crate::services::Services

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct Clock(Arc<Inner>);

struct Inner {
    start: Instant,
    offset_ms: AtomicU64,
    /// [`Clock::advance`] is allowed (read only by `advance`, which only test builds have).
    #[cfg_attr(not(any(test, feature = "test-hooks")), allow(dead_code))]
    adjustable: bool,
}

impl Clock {
    /// The system clocks, never moved.
    pub fn system() -> Clock {
        Clock::new(false)
    }

    /// The system clocks plus an offset [`Clock::advance`] may grow (tests only).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn adjustable() -> Clock {
        Clock::new(true)
    }

    /// With the `test-hooks` feature, an adjustable clock when `GHASI_TEST_CLOCK=1`;
    /// otherwise [`Clock::system`].
    pub fn from_env() -> Clock {
        #[cfg(feature = "test-hooks")]
        if std::env::var("GHASI_TEST_CLOCK").as_deref() == Ok("1") {
            tracing::warn!("GHASI_TEST_CLOCK=1: the test clock RPC is enabled; never use this in production");
            return Clock::adjustable();
        }
        Clock::system()
    }

    fn new(adjustable: bool) -> Clock {
        Clock(Arc::new(Inner { start: Instant::now(), offset_ms: AtomicU64::new(0), adjustable }))
    }

    /// Moves the clock forward; refused unless it is adjustable.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn advance(&self, by: Duration) -> Result<(), &'static str> {
        if !self.0.adjustable {
            return Err("the test clock is disabled (GHASI_TEST_CLOCK is not set)");
        }
        self.0.offset_ms.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(())
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.0.offset_ms.load(Ordering::Relaxed))
    }

    /// Monotonic time since the clock was made (at startup): use it for lifetimes and
    /// deadlines.
    pub fn now(&self) -> Duration {
        self.0.start.elapsed() + self.offset()
    }

    /// Wall-clock seconds since the Unix epoch: use it to compare with token `exp`/`nbf`/`iat`.
    pub fn unix_now(&self) -> u64 {
        (SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + self.offset()).as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_adjustable_clock_moves_and_clones_share_the_move() {
        let system = Clock::system();
        assert!(system.advance(Duration::from_secs(60)).is_err());
        assert!(system.now() < Duration::from_secs(60));
        let clock = Clock::adjustable();
        let other = Clock::adjustable();
        let (wall, shared) = (clock.unix_now(), clock.clone());
        clock.advance(Duration::from_secs(3600)).unwrap();
        assert!(shared.now() >= Duration::from_secs(3600), "a clone sees the offset");
        assert!(shared.unix_now() >= wall + 3600);
        assert!(other.now() < Duration::from_secs(3600), "another clock does not");
    }
}
