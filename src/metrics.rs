//! Prometheus metrics: what the server decides and why, for SREs who never read the code.
//!
//! One process-wide set ([`global`]). Label values are bounded by configuration (plugin
//! names, Kong route ids, JWKS URLs, fixed outcome/kind vocabularies): never a key, a token,
//! a user or an account id.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub plugin: &'static str,
    pub route: String,
    /// `ok`, `anonymous`, or an error code of README.md#error-codes.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub plugin: &'static str,
    /// `hit`, `miss`, `coalesced`, `negative_hit`, `stale`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheNameLabels {
    pub plugin: &'static str,
    /// `positive`, `negative`, `verified_tokens`.
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// `auth_service` or `jwks`.
    pub target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub target: &'static str,
    /// `timeout`, `connect`, `status`, `body`, `empty_set`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    pub jwks_url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksStateLabels {
    pub jwks_url: String,
    /// `fresh`, `refreshing`, `stale`, `expired`, `empty`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksRefreshLabels {
    pub jwks_url: String,
    /// `initial`, `ahead`, `kid_miss`.
    pub reason: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    pub decisions: Family<DecisionLabels, Counter>,
    pub cache_requests: Family<CacheLabels, Counter>,
    pub cache_evictions: Family<CacheNameLabels, Counter>,
    pub cache_entries: Family<CacheNameLabels, Gauge>,
    pub upstream_duration: Family<TargetLabels, Histogram>,
    pub upstream_failures: Family<FailureLabels, Counter>,
    pub clock_skew: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    pub jwks_age: Family<JwksLabels, Gauge<f64, AtomicU64>>,
    pub jwks_state: Family<JwksStateLabels, Gauge>,
    pub jwks_refreshes: Family<JwksRefreshLabels, Counter>,
    pub jwks_refresh_throttled: Family<JwksLabels, Counter>,
    pub events_in_flight: Gauge,
    pub events_reaped: Counter,
    pub rpc_errors: Family<KindLabels, Counter>,
    pub connections_open: Gauge,
    pub connection_errors: Family<KindLabels, Counter>,
    /// 1 when `/ready` would answer 200 (set at scrape time), for the `GhasiNotReady` alert.
    pub ready: Gauge,
    pub incomplete_frame_bytes: Gauge,
    pub revocation: RevocationMetrics,
    pub api_key_revalidations: Family<CacheLabels, Counter>,
    registry: Registry,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0].into_iter()
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            decisions: Family::default(),
            cache_requests: Family::default(),
            cache_evictions: Family::default(),
            cache_entries: Family::default(),
            upstream_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            upstream_failures: Family::default(),
            clock_skew: Family::default(),
            jwks_age: Family::default(),
            jwks_state: Family::default(),
            jwks_refreshes: Family::default(),
            jwks_refresh_throttled: Family::default(),
            events_in_flight: Gauge::default(),
            events_reaped: Counter::default(),
            rpc_errors: Family::default(),
            connections_open: Gauge::default(),
            connection_errors: Family::default(),
            ready: Gauge::default(),
            incomplete_frame_bytes: Gauge::default(),
            revocation: RevocationMetrics::default(),
            api_key_revalidations: Family::default(),
            registry: Registry::default(),
        };
        // process_* carry no prefix (the client libraries' convention); ours are `ghasi_*`.
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("ghasi");
        registry.register(
            "decisions",
            "Authentication decisions by plugin, Kong route and outcome code",
            m.decisions.clone(),
        );
        registry.register("cache_requests", "Credential cache lookups by result", m.cache_requests.clone());
        registry.register("cache_evictions", "Entries evicted for lack of room", m.cache_evictions.clone());
        registry.register("cache_entries", "Entries currently cached", m.cache_entries.clone());
        registry.register(
            "upstream_request_duration_seconds",
            "auth-service and JWKS request latency",
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_failures",
            "Failed auth-service/JWKS requests by kind",
            m.upstream_failures.clone(),
        );
        registry.register(
            "clock_skew_seconds",
            "Local clock minus the Date header of the last upstream response",
            m.clock_skew.clone(),
        );
        registry.register("jwks_age_seconds", "Seconds since the JWKS in use was fetched", m.jwks_age.clone());
        registry.register("jwks_state", "1 for the current state of each JWKS", m.jwks_state.clone());
        registry.register("jwks_refreshes", "JWKS fetches by reason and result", m.jwks_refreshes.clone());
        registry.register(
            "jwks_refresh_throttled",
            "Unknown-kid refreshes refused by the rate limit",
            m.jwks_refresh_throttled.clone(),
        );
        registry.register(
            "events_in_flight",
            "Kong events alive (running or waiting for Kong)",
            m.events_in_flight.clone(),
        );
        registry.register("events_reaped", "Events abandoned by Kong and reaped", m.events_reaped.clone());
        registry.register("rpc_errors", "RPC requests answered with an error, by kind", m.rpc_errors.clone());
        registry.register("connections_open", "Open Kong connections", m.connections_open.clone());
        registry.register(
            "connection_errors",
            "Connections closed on a protocol or I/O error, by kind",
            m.connection_errors.clone(),
        );
        registry.register(
            "incomplete_frame_bytes",
            "Bytes buffered for frames still arriving, all connections (bounded by --buffer-budget-bytes)",
            m.incomplete_frame_bytes.clone(),
        );
        registry.register(
            "ready",
            "1 when /ready answers 200 (socket listening, every JWKS in use loaded), else 0",
            m.ready.clone(),
        );
        m.revocation.register(registry);
        registry.register(
            "api_key_revalidations",
            "Background revalidations of hot API keys shortly before their cache lifetime ends, by result",
            m.api_key_revalidations.clone(),
        );
        registry.register(
            "build",
            "Version of this plugin server (value always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("protocol", "MsgPack:1")]),
        );
        m.preregister();
        Metrics { registry: root, ..m }
    }

    /// Creates at 0 every series whose labels are known before traffic, so a scrape of a
    /// fresh server lists them and `rate()`/`increase()` see their first increment (a
    /// series born at 1 loses it). Series labelled by a Kong route or a JWKS URL
    /// (`decisions`, `jwks_*`) appear with their first event: their label values come from
    /// Kong's configuration at run time.
    fn preregister(&self) {
        const API_KEY: &str = "ghasi-api-key-lookup";
        const JWT: &str = "ghasi-jwt";
        for result in ["hit", "miss", "coalesced", "negative_hit", "stale"] {
            let _ = self.cache_requests.get_or_create(&CacheLabels { plugin: API_KEY, result });
        }
        for result in ["hit", "miss"] {
            let _ = self.cache_requests.get_or_create(&CacheLabels { plugin: JWT, result });
        }
        for (plugin, cache) in [(API_KEY, "positive"), (API_KEY, "negative"), (JWT, "verified_tokens")] {
            let _ = self.cache_evictions.get_or_create(&CacheNameLabels { plugin, cache });
            let _ = self.cache_entries.get_or_create(&CacheNameLabels { plugin, cache });
        }
        for kind in ["timeout", "connect", "status", "service_token_refused", "body"] {
            let _ = self.upstream_failures.get_or_create(&FailureLabels { target: "auth_service", kind });
        }
        for kind in ["timeout", "connect", "status", "body", "empty_set"] {
            let _ = self.upstream_failures.get_or_create(&FailureLabels { target: "jwks", kind });
        }
        for target in ["auth_service", "jwks"] {
            let _ = self.upstream_duration.get_or_create(&TargetLabels { target });
        }
        for kind in ["no_instance", "no_event", "bad_config", "bad_request", "bad_envelope", "unknown_plugin"] {
            let _ = self.rpc_errors.get_or_create(&KindLabels { kind });
        }
        for kind in ["bad_frame", "frame_too_large", "bad_envelope", "truncated", "io", "buffer_budget"] {
            let _ = self.connection_errors.get_or_create(&KindLabels { kind });
        }
        for kind in ["api_key", "account", "jwks", "flush"] {
            let _ = self.revocation.messages.get_or_create(&KindLabels { kind });
            let _ = self.revocation.evictions.get_or_create(&KindLabels { kind });
        }
        let _ = self.revocation.evictions.get_or_create(&KindLabels { kind: "subscribe" });
        for kind in ["not_json", "unknown_type", "missing_field", "too_large"] {
            let _ = self.revocation.malformed.get_or_create(&KindLabels { kind });
        }
        for result in ["valid", "invalid", "unavailable"] {
            let _ = self.api_key_revalidations.get_or_create(&CacheLabels { plugin: API_KEY, result });
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn decision(&self, plugin: &'static str, route: &str, code: &'static str) {
        self.decisions.get_or_create(&DecisionLabels { plugin, route: route.to_owned(), code }).inc();
    }

    pub fn cache(&self, plugin: &'static str, result: &'static str) {
        self.cache_requests.get_or_create(&CacheLabels { plugin, result }).inc();
    }

    pub fn upstream(&self, target: &'static str, seconds: f64) {
        self.upstream_duration.get_or_create(&TargetLabels { target }).observe(seconds);
    }

    pub fn upstream_failure(&self, target: &'static str, kind: &'static str) {
        self.upstream_failures.get_or_create(&FailureLabels { target, kind }).inc();
    }
}

/// The revocation subscriber's metrics (`--revocation-redis-url`).
#[derive(Default)]
pub struct RevocationMetrics {
    /// By message type: `api_key`, `account`, `jwks`, `flush`.
    pub messages: Family<KindLabels, Counter>,
    /// Ignored messages, by why: `too_large`, `not_json`, `unknown_type`, `missing_field`.
    pub malformed: Family<KindLabels, Counter>,
    /// 1 while subscribed.
    pub connected: Gauge,
    pub subscriptions: Counter,
    /// Cached API-key verdicts dropped, by message type (`subscribe` for the flush that
    /// follows every (re)subscription).
    pub evictions: Family<KindLabels, Counter>,
}

impl RevocationMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("revocation_messages", "Revocation messages applied, by type", self.messages.clone());
        registry.register(
            "revocation_malformed_messages",
            "Revocation messages ignored as malformed or of an unknown type",
            self.malformed.clone(),
        );
        registry.register(
            "revocation_connected",
            "1 while subscribed to the revocation channel, else 0",
            self.connected.clone(),
        );
        registry.register(
            "revocation_subscriptions",
            "(Re)subscriptions to the revocation channel; each flushes the API-key verdicts",
            self.subscriptions.clone(),
        );
        registry.register(
            "revocation_evictions",
            "Cached API-key verdicts dropped by revocation, by message type",
            self.evictions.clone(),
        );
    }
}

/// The process-wide metrics: the one static the services do not replace, on purpose. They
/// are write-only counters and gauges (nothing in the product reads them back to decide
/// anything), they are touched by every layer down to the connection and the frame buffer
/// (which never see the services), and the exposition is one registry per process by
/// definition: Prometheus scrapes the process. This is the `prometheus-client` pattern; tests
/// never isolate on metrics values (they scrape the binary they started).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
