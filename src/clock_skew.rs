//! Clock drift guard: every auth-service and JWKS response carries a `Date` header; the
//! difference to our clock is exported, and a warning is logged when it approaches the JWT
//! leeway (skew is the first cause of "valid token rejected" reports).

use crate::warn_limiter::WarnLimiter;
use crate::{clock, metrics, warn_limited};

/// Warn when |skew| exceeds this many seconds (half of the default 30 s leeway).
pub const WARN_SKEW_SECS: f64 = 15.0;

static LIMIT: WarnLimiter = WarnLimiter::new(60);

/// Records the skew seen in a response's `Date` header (ignored when absent or unparsable).
pub fn observe(target: &'static str, date_header: Option<&str>) -> Option<f64> {
    let remote = httpdate::parse_http_date(date_header?).ok()?;
    let remote = remote.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as f64;
    let skew = clock::unix_now() as f64 - remote;
    metrics::global().clock_skew.get_or_create(&metrics::TargetLabels { target }).set(skew);
    if skew.abs() > WARN_SKEW_SECS {
        warn_limited!(
            LIMIT,
            target,
            skew_seconds = skew,
            "clock skew with {target} approaches the JWT leeway; check NTP"
        );
    }
    Some(skew)
}
