//! The auth-service client of `ghasi-api-key-lookup`: one POST per lookup, its answer turned
//! into a typed [`Answer`] (design.md §3, README "ghasi-api-key-lookup").
//!
//! The contract: `POST {auth_service_url}{lookup_path}` with `{"api_key": "…"}` (and
//! `Authorization: Bearer <service_token>` when configured); `200` with the key's identity →
//! valid; `403`/`404` → invalid; `401` → unavailable: it means auth-service refused *our*
//! service token (wrong or rotated), which says nothing about the customer's key, and caching
//! it as "invalid" would lock every customer out for the negative TTL. Anything else, a
//! timeout, a connection error or a body that does not parse → unavailable. Only "valid" and
//! "invalid" are verdicts the cache may keep; "unavailable" is transient by definition.
//!
//! The HTTP client (connection pool) is process-wide per `auth_service_url`: Kong creates one
//! plugin instance per config per nginx worker, and they must share connections, not open N
//! pools against the same service (design.md §5). Trouble is reported here, as a warning that
//! is rate-limited per auth-service so an outage does not flood the logs. Nothing logged here
//! contains the key: it only travels in the request body.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;

use crate::warn_limiter::WarnLimiter;
use crate::{clock_skew, metrics, warn_limited};

/// Largest response body read from auth-service; a bigger one is "unavailable", not a
/// reason to buffer without bound.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest identity value accepted from auth-service: they become upstream headers.
pub(super) const MAX_IDENTITY_LEN: usize = 256;

/// At most one auth-service warning per this many seconds and auth-service (the rest is
/// counted and reported with the next one).
const WARN_INTERVAL_SECS: u64 = 10;

/// The `target` label of this client's metrics.
const TARGET: &str = "auth_service";

/// What auth-service says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `200`: the key is valid and belongs to this identity.
    Valid(KeyInfo),
    /// `403` or `404`: the key is unknown, revoked, expired or its account suspended.
    Invalid { status: u16 },
    /// No usable answer: auth-service is down, slow, refusing, failing or talking nonsense.
    Unavailable(Trouble),
}

/// The identity auth-service reports for a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub account_id: String,
    /// Public identifier of the key (never the key).
    pub key_id: String,
    pub user_id: Option<String>,
    pub consumer_username: Option<String>,
    /// The key's own expiry, Unix seconds.
    pub expires_at: Option<i64>,
}

/// Why auth-service gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Trouble {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    /// `401`: auth-service refused our `service_token` (a misconfiguration of this edge).
    #[error("refused our service_token (HTTP 401): check the route's service_token")]
    ServiceTokenRefused,
    #[error("unusable 200 body: {0}")]
    Body(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl Trouble {
    /// The `kind` label of the failure metric.
    fn kind(&self) -> &'static str {
        match self {
            Trouble::Timeout(_) => "timeout",
            Trouble::Connect(_) | Trouble::Request(_) => "connect",
            Trouble::Status(_) => "status",
            Trouble::ServiceTokenRefused => "service_token_refused",
            Trouble::Body(_) => "body",
        }
    }
}

/// The JSON request body.
#[derive(serde::Serialize)]
struct LookupRequest<'a> {
    api_key: &'a str,
}

/// The `200` body. Optional fields may be `null` or (leniently) absent.
#[derive(Deserialize)]
struct LookupBody {
    account_id: String,
    key_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    consumer_username: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// One instance's view of auth-service: the shared pool plus this config's URL, token and
/// timeout.
pub struct AuthClient {
    shared: Arc<SharedClient>,
    lookup_url: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

/// What every instance talking to one `auth_service_url` shares.
struct SharedClient {
    http: reqwest::Client,
    base_url: String,
    warnings: WarnLimiter,
    /// Service-token refusals are errors, limited separately so an outage's warnings do not
    /// hide them.
    refusals: WarnLimiter,
}

impl AuthClient {
    /// Builds the client of one instance, reusing the process-wide pool of `base_url`.
    pub fn new(
        base_url: &str,
        lookup_path: &str,
        service_token: Option<&str>,
        timeout: Duration,
    ) -> Result<AuthClient, String> {
        let authorization = match service_token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    "field 'service_token': contains characters not allowed in an HTTP header".to_string()
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let base = base_url.trim_end_matches('/');
        Ok(AuthClient {
            shared: shared_client(base, timeout)?,
            lookup_url: format!("{base}{lookup_path}"),
            authorization,
            timeout,
        })
    }

    /// Asks auth-service about `key`. Never takes longer than the configured timeout.
    pub async fn lookup(&self, key: &str) -> Answer {
        // Latency is measured on the real clock: the test clock only jumps.
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.timeout, self.exchange(key)).await {
            Ok(answer) => answer,
            Err(_) => Answer::Unavailable(Trouble::Timeout(self.timeout.as_millis() as u64)),
        };
        let m = metrics::global();
        m.upstream(TARGET, started.elapsed().as_secs_f64());
        let failure = match &answer {
            Answer::Unavailable(trouble) => Some(trouble.kind()),
            _ => None,
        };
        crate::health::report_auth_service(&self.shared.base_url, failure.is_none(), failure);
        if let Answer::Unavailable(trouble) = &answer {
            m.upstream_failure(TARGET, trouble.kind());
            if *trouble == Trouble::ServiceTokenRefused {
                // Not an outage but our own misconfiguration: an error, so it is seen.
                if let Some(suppressed) = self.shared.refusals.allow() {
                    tracing::error!(
                        suppressed,
                        plugin = super::NAME,
                        auth_service = %self.shared.base_url,
                        "auth-service refused the service_token, answering 503: {trouble}"
                    );
                }
                return answer;
            }
            warn_limited!(
                self.shared.warnings,
                plugin = super::NAME,
                auth_service = %self.shared.base_url,
                "auth-service unavailable, answering 503: {trouble}"
            );
        }
        answer
    }

    async fn exchange(&self, key: &str) -> Answer {
        let body = match serde_json::to_vec(&LookupRequest { api_key: key }) {
            Ok(body) => body,
            Err(e) => return Answer::Unavailable(Trouble::Request(format!("encoding the request: {e}"))),
        };
        let mut request = self.shared.http.post(&self.lookup_url).header(CONTENT_TYPE, "application/json").body(body);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Answer::Unavailable(classify(&e)),
        };
        let status = response.status().as_u16();
        let date = response.headers().get(reqwest::header::DATE).and_then(|v| v.to_str().ok());
        clock_skew::observe(TARGET, date);
        let body = read_capped(&mut response).await;
        match (status, body) {
            (200, Ok(bytes)) => match parse_valid(&bytes) {
                Ok(info) => Answer::Valid(info),
                Err(why) => Answer::Unavailable(Trouble::Body(why)),
            },
            (200, Err(trouble)) => Answer::Unavailable(trouble),
            // The body of a refusal does not matter; it was read only to keep the connection.
            (403 | 404, _) => Answer::Invalid { status },
            (401, _) => Answer::Unavailable(Trouble::ServiceTokenRefused),
            (other, _) => Answer::Unavailable(Trouble::Status(other)),
        }
    }
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`].
async fn read_capped(response: &mut reqwest::Response) -> Result<Vec<u8>, Trouble> {
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(Trouble::Body(format!("larger than {MAX_BODY_BYTES} bytes")));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(Trouble::Request(format!("reading the body: {}", chain(&e)))),
        }
    }
}

/// Parses and checks a `200` body. Identity values become upstream headers, so they must
/// be short, non-empty where required and free of control characters.
fn parse_valid(bytes: &[u8]) -> Result<KeyInfo, String> {
    let body: LookupBody = serde_json::from_slice(bytes).map_err(|e| format!("not the contract's JSON: {e}"))?;
    let required = |name: &str, v: String| -> Result<String, String> {
        if v.is_empty() {
            return Err(format!("{name} is empty"));
        }
        header_safe(name, &v)?;
        Ok(v)
    };
    let optional = |name: &str, v: Option<String>| -> Result<Option<String>, String> {
        match v.filter(|s| !s.is_empty()) {
            Some(s) => header_safe(name, &s).map(|()| Some(s)),
            None => Ok(None),
        }
    };
    let expires_at = match body.expires_at {
        Some(text) => Some(parse_rfc3339(&text).ok_or("expires_at is not an RFC 3339 date-time")?),
        None => None,
    };
    Ok(KeyInfo {
        account_id: required("account_id", body.account_id)?,
        key_id: required("key_id", body.key_id)?,
        user_id: optional("user_id", body.user_id)?,
        consumer_username: optional("consumer_username", body.consumer_username)?,
        expires_at,
    })
}

fn header_safe(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_IDENTITY_LEN {
        return Err(format!("{name} is longer than {MAX_IDENTITY_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{name} contains control characters"));
    }
    Ok(())
}

/// Parses an RFC 3339 date-time (`2026-01-31T12:00:00Z`, `…T12:00:00.5+02:00`) into Unix
/// seconds (fractions dropped). Hand-written because this is the only date the crate parses.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let frac = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        rest = &rest[1 + frac..];
    }
    let two_digits = |at: usize| -> Option<i64> {
        let pair = rest.get(at..at + 2)?;
        pair.iter().all(u8::is_ascii_digit).then(|| i64::from(pair[0] - b'0') * 10 + i64::from(pair[1] - b'0'))
    };
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two_digits(1)?, two_digits(4)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 3600 + m * 60
            } else {
                -(h * 3600 + m * 60)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Sorts a transport error into [`Trouble`], with its causes (they name the address, never
/// the body, so never the key).
fn classify(e: &reqwest::Error) -> Trouble {
    if e.is_timeout() {
        Trouble::Request(format!("timed out: {}", chain(e)))
    } else if e.is_connect() {
        Trouble::Connect(chain(e))
    } else {
        Trouble::Request(chain(e))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The process-wide pools, one per auth-service base URL.
fn shared_client(base_url: &str, connect_timeout: Duration) -> Result<Arc<SharedClient>, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<SharedClient>>>> = OnceLock::new();
    let mut clients = CLIENTS.get_or_init(Default::default).lock();
    if let Some(client) = clients.get(base_url) {
        return Ok(client.clone());
    }
    // The connect timeout of the first instance bounds connecting for all; every call is
    // also bounded as a whole by its own instance's timeout_ms (see `AuthClient::lookup`).
    let http = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        // A redirect would re-send the key somewhere else: treat it as "unavailable".
        .redirect(reqwest::redirect::Policy::none())
        // auth-service is internal; an HTTP(S)_PROXY from the environment must not see keys.
        .no_proxy()
        .tls_certs_only(crate::trust_roots::mozilla())
        .user_agent(concat!("ghasi-plugin-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("field 'auth_service_url': cannot build the HTTP client: {}", chain(&e)))?;
    let client = Arc::new(SharedClient {
        http,
        base_url: base_url.to_owned(),
        warnings: WarnLimiter::new(WARN_INTERVAL_SECS),
        refusals: WarnLimiter::new(WARN_INTERVAL_SECS),
    });
    clients.insert(base_url.to_owned(), client.clone());
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2020-01-01T00:00:00Z"), Some(1_577_836_800));
        assert_eq!(parse_rfc3339("2020-01-01T02:00:00+02:00"), Some(1_577_836_800));
        assert_eq!(parse_rfc3339("2019-12-31T23:00:00.123456-01:00"), Some(1_577_836_800));
        assert_eq!(parse_rfc3339("2024-02-29t12:00:00z"), Some(1_709_208_000));
        for bad in [
            "",
            "2020-01-01",
            "2020-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2020-01-01T00:00:00",
            "2020-01-01T00:00:00.Z",
            "2020-01-01T00:00:00+2:00",
            "2020-01-01T24:00:00Z",
            "20x0-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn valid_bodies_follow_the_contract() {
        let info = parse_valid(
            br#"{"account_id":"acc","key_id":"k1","user_id":null,"consumer_username":"","expires_at":"2020-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            KeyInfo {
                account_id: "acc".into(),
                key_id: "k1".into(),
                user_id: None,
                consumer_username: None,
                expires_at: Some(1_577_836_800)
            }
        );
        let info = parse_valid(br#"{"account_id":"acc","key_id":"k1","user_id":"u","consumer_username":"c"}"#).unwrap();
        assert_eq!(
            (info.user_id.as_deref(), info.consumer_username.as_deref(), info.expires_at),
            (Some("u"), Some("c"), None)
        );
    }

    #[test]
    fn unusable_bodies_are_refused_with_a_reason() {
        for (body, why) in [
            (&br#"{}"#[..], "not the contract's JSON"),
            (br#"<html>"#, "not the contract's JSON"),
            (br#"{"account_id":"","key_id":"k"}"#, "account_id is empty"),
            (br#"{"account_id":"a\r\nX-Evil: 1","key_id":"k"}"#, "control characters"),
            (br#"{"account_id":"a","key_id":"k","expires_at":"tomorrow"}"#, "RFC 3339"),
            (br#"{"account_id":"a","key_id":5}"#, "not the contract's JSON"),
        ] {
            let err = parse_valid(body).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn instances_with_one_auth_service_share_one_pool() {
        let t = Duration::from_millis(500);
        let a = AuthClient::new("http://shared.invalid:1/", "/p", None, t).unwrap();
        let b = AuthClient::new("http://shared.invalid:1", "/q", Some("tok"), t).unwrap();
        let c = AuthClient::new("http://other.invalid:1", "/p", None, t).unwrap();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        assert!(!Arc::ptr_eq(&a.shared, &c.shared));
        assert_eq!(a.lookup_url, "http://shared.invalid:1/p");
        assert!(b.authorization.as_ref().is_some_and(HeaderValue::is_sensitive));
        assert!(AuthClient::new("http://x", "/p", Some("bad\ntoken"), t).is_err());
    }
}
