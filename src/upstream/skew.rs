//! Clock drift guard: every auth-service and JWKS response carries a `Date` header; the
//! difference to our clock is exported, and a warning is logged when it approaches the JWT
//! leeway (skew is the first cause of "valid token rejected" reports).

use std::sync::Arc;

use crate::clock::Clock;
use crate::warn_limiter::WarnLimiter;
use crate::{metrics, warn_limited};

/// Warn when |skew| exceeds this many seconds (half of the default 30 s leeway).
pub const WARN_SKEW_SECS: f64 = 15.0;

/// At most one skew warning per this many seconds, all upstreams together.
const WARN_INTERVAL_SECS: u64 = 60;

/// The skew check of one process: its clock and its warning limiter (a clone shares both).
#[derive(Clone)]
pub struct DateSkew {
    clock: Clock,
    warnings: Arc<WarnLimiter>,
}

impl DateSkew {
    pub fn new(clock: Clock) -> DateSkew {
        DateSkew { clock, warnings: Arc::new(WarnLimiter::new(WARN_INTERVAL_SECS)) }
    }

    /// Records the skew seen in a response's `Date` header (ignored when absent or
    /// unparsable); returns it, in seconds (positive: our clock is ahead).
    pub fn observe(&self, target: &'static str, response: &reqwest::Response) -> Option<f64> {
        let date = response.headers().get(reqwest::header::DATE)?.to_str().ok()?;
        self.observe_header(target, date)
    }

    fn observe_header(&self, target: &'static str, date: &str) -> Option<f64> {
        let remote = httpdate::parse_http_date(date).ok()?;
        let remote = remote.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as f64;
        let skew = self.clock.unix_now() as f64 - remote;
        metrics::global().clock_skew.get_or_create(&metrics::TargetLabels { target }).set(skew);
        if skew.abs() > WARN_SKEW_SECS {
            warn_limited!(
                self.warnings,
                self.clock.now(),
                target,
                skew_seconds = skew,
                "clock skew with {target} approaches the JWT leeway; check NTP"
            );
        }
        Some(skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn skew_is_our_clock_minus_the_date_header() {
        let clock = Clock::adjustable();
        let skew = DateSkew::new(clock.clone());
        let now = httpdate::fmt_http_date(SystemTime::now());
        assert!(skew.observe_header("jwks", &now).unwrap().abs() <= 1.0);
        clock.advance(Duration::from_secs(120)).unwrap();
        let ahead = skew.observe_header("jwks", &now).unwrap();
        assert!((119.0..=121.0).contains(&ahead), "{ahead}");
        assert_eq!(skew.observe_header("jwks", "yesterday"), None);
    }
}
