//! The process clock every TTL and token-time check reads.
//!
//! Production reads the system clocks. Tests of cache lifetimes (60 s API-key TTL, 300 s
//! JWKS lifetime, token expiry) must not sleep, and they drive the real binary, so its clock
//! can be moved forward: in a build with the `test-hooks` feature and `GHASI_TEST_CLOCK=1`,
//! the hidden RPC `plugin.GhasiTestAdvanceClock {Seconds}` adds an offset to both readings
//! below. Otherwise the offset stays zero (a release build has no such RPC at all).

#[cfg(feature = "test-hooks")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static OFFSET_MS: AtomicU64 = AtomicU64::new(0);
#[cfg(feature = "test-hooks")]
static TEST_MODE: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();

/// Enables [`advance`] (called once at startup when `GHASI_TEST_CLOCK=1`).
#[cfg(feature = "test-hooks")]
pub fn enable_test_mode() {
    TEST_MODE.store(true, Ordering::Relaxed);
}

/// Moves the clock forward; refused unless test mode is on.
#[cfg(feature = "test-hooks")]
pub fn advance(by: Duration) -> Result<(), &'static str> {
    if !TEST_MODE.load(Ordering::Relaxed) {
        return Err("the test clock is disabled (GHASI_TEST_CLOCK is not set)");
    }
    OFFSET_MS.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    Ok(())
}

fn offset() -> Duration {
    Duration::from_millis(OFFSET_MS.load(Ordering::Relaxed))
}

/// Monotonic time since the process started: use it for lifetimes and deadlines.
pub fn now() -> Duration {
    START.get_or_init(Instant::now).elapsed() + offset()
}

/// Wall-clock seconds since the Unix epoch: use it to compare with token `exp`/`nbf`/`iat`.
pub fn unix_now() -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + offset()).as_secs()
}
