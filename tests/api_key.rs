//! `ghasi-api-key-lookup` end to end: the real binary, driven through the Kong emulator,
//! against the in-process dev auth-service (which implements the auth-service contract).
//!
//! Lifetimes are tested by moving the server's clock (`plugin.GhasiTestAdvanceClock`), never
//! by sleeping; auth-service calls are counted by the dev auth-service itself.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Server;
use dev_auth_service::fixtures::*;
use dev_auth_service::{ApiKey, DevAuthService, DevConfig, Fault, Target};
use kong_emulator::{EventOutcome, Kong, KongVersion, Plugin, PluginSpec, Request, Value};
use serde_json::{json, Value as Json};

const PLUGIN: &str = "ghasi-api-key-lookup";
const GET_HEADERS: &str = "kong.request.get_headers";
const SET_HEADERS: &str = "kong.service.request.set_headers";
const CTX_SET: &str = "kong.ctx.shared.set";
const CTX_GET: &str = "kong.ctx.shared.get";
const EXIT: &str = "kong.response.exit";
const IDENTITY_HEADERS: [&str; 4] = ["x-account-id", "x-user-id", "x-consumer-username", "x-credential-identifier"];
/// Every key of the test data set: none may ever show up in a body or a log line.
const ALL_KEYS: [&str; 8] =
    [KEY_ALICE, KEY_SERVICE, KEY_GLOBEX, KEY_EXPIRING, KEY_EXPIRED, KEY_REVOKED, KEY_SUSPENDED, KEY_UNKNOWN];

/// A plugin server, a dev auth-service and one emulated Kong worker.
struct Env {
    server: Server,
    auth: DevAuthService,
    kong: Kong,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(common::Options::default()).await
    }

    async fn start_with(options: common::Options) -> Env {
        let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
        let server = Server::start_with(options);
        let kong = Kong::new(server.socket());
        Env { server, auth, kong }
    }

    /// The metrics listener's address, once the server announced it.
    fn metrics_addr(&self) -> String {
        self.server.metrics_addr()
    }

    /// The plugin with the auth-service settings plus `extra`.
    fn plugin(&self, extra: Json) -> Plugin {
        self.kong.plugin(PLUGIN, self.config(extra))
    }

    fn config(&self, extra: Json) -> Json {
        let mut config = json!({"auth_service_url": self.auth.url(), "service_token": SERVICE_TOKEN});
        for (k, v) in extra.as_object().expect("extra config is an object") {
            config[k] = v.clone();
        }
        config
    }

    /// Moves the server's clock forward.
    async fn advance(&self, seconds: u64) {
        let param = Value::Map(vec![(Value::from("Seconds"), Value::from(seconds))]);
        self.kong.call(PLUGIN, "plugin.GhasiTestAdvanceClock", &param).await.expect("advancing the test clock");
    }

    /// Asserts that no API key of the data set appears in the server's log.
    fn assert_no_key_logged(&self) {
        let logs = self.server.logs();
        for key in ALL_KEYS {
            assert!(!logs.contains(key), "the log contains an API key:\n{logs}");
        }
    }
}

async fn run(kong: &Kong, plugin: &Plugin, mut req: Request) -> (EventOutcome, Request) {
    let outcome = kong.run_event(plugin, "access", &mut req).await.expect("the event runs");
    (outcome, req)
}

fn with_key(key: &str) -> Request {
    Request::new("GET", "/v1/messages").with_header("X-API-Key", key)
}

async fn ask(env: &Env, plugin: &Plugin, key: &str) -> (EventOutcome, Request) {
    run(&env.kong, plugin, with_key(key)).await
}

/// The status of the exit, or 200 when the request went on upstream.
fn status(outcome: &EventOutcome) -> u16 {
    assert!(outcome.abandoned.is_none(), "a PDK call raised: {:?}", outcome.abandoned);
    outcome.exit.as_ref().map_or(200, |e| e.status)
}

/// Asserts a problem+json refusal and returns its body.
fn assert_refused(outcome: &EventOutcome, want_status: u16, want_code: &str) -> Json {
    let exit =
        outcome.exit.as_ref().unwrap_or_else(|| panic!("expected {want_status} {want_code}, the request went on"));
    assert_eq!(exit.status, want_status, "{}", exit.body_text());
    assert_eq!(exit.header("content-type").as_deref(), Some("application/problem+json"));
    let body = exit.body_json().expect("a JSON body");
    assert_eq!(body["code"], want_code);
    assert_eq!(body["status"], want_status);
    for key in ALL_KEYS {
        assert!(!exit.body_text().contains(key), "the body contains an API key");
    }
    body
}

fn calls(outcome: &EventOutcome) -> Vec<&str> {
    outcome.pdk_calls.iter().map(String::as_str).collect()
}

fn groups(req: &Request) -> Option<Vec<String>> {
    let groups = req.ctx_shared_get("authenticated_groups")?.as_array()?;
    Some(groups.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect())
}

/// An RFC 3339 UTC date-time for Unix second `secs` (civil-from-days, H. Hinnant).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ---- success ------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_key_goes_upstream_with_the_identity_in_three_pdk_calls() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let req = with_key(KEY_ALICE).with_header("X-Account-Id", "acc_spoofed").with_header("X-Other", "kept");
    let (outcome, req) = run(&env.kong, &plugin, req).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, SET_HEADERS, CTX_SET]);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
    assert_eq!(req.upstream_headers().get_all("x-account-id").len(), 1, "the spoofed value is overwritten");
    assert_eq!(req.upstream_header("x-user-id").as_deref(), Some(USER_ALICE));
    assert_eq!(req.upstream_header("x-consumer-username").as_deref(), Some(CONSUMER_ALICE));
    assert_eq!(req.upstream_header("x-credential-identifier").as_deref(), Some(KEY_ID_ALICE));
    assert_eq!(req.upstream_header("x-other").as_deref(), Some("kept"));
    assert!(!req.upstream_headers().contains("x-api-key"), "hide_credentials removes the key");
    assert_eq!(groups(&req), Some(vec!["ghasi-authenticated".to_string()]));
    assert!(req.consumer().is_none(), "no consumer without set_kong_consumer");

    // Cache hit: the same three calls, no second lookup.
    let (outcome, _) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!((status(&outcome), calls(&outcome)), (200, vec![GET_HEADERS, SET_HEADERS, CTX_SET]));
    assert_eq!(env.auth.lookups(), 1);
    env.assert_no_key_logged();
}

#[tokio::test]
async fn a_key_without_user_or_username_falls_back_to_the_account() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"authenticated_group": "api-clients"}));
    let req = with_key(KEY_SERVICE).with_header("X-User-Id", "usr_spoofed").with_header("X-Consumer-Username", "evil");
    let (outcome, req) = run(&env.kong, &plugin, req).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
    assert!(!req.upstream_headers().contains("x-user-id"), "no user: the client's X-User-Id is removed");
    assert_eq!(req.upstream_header("x-consumer-username").as_deref(), Some(ACCOUNT_ACME));
    assert_eq!(req.upstream_header("x-credential-identifier").as_deref(), Some(KEY_ID_SERVICE));
    assert_eq!(groups(&req), Some(vec!["api-clients".to_string()]));
}

#[tokio::test]
async fn hide_credentials_false_keeps_the_key_and_set_kong_consumer_authenticates() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"hide_credentials": false, "set_kong_consumer": true}));
    let (outcome, req) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, SET_HEADERS, CTX_SET, "kong.client.authenticate"]);
    assert_eq!(req.upstream_header("x-api-key").as_deref(), Some(KEY_ALICE));
    let consumer = req.consumer().expect("a virtual consumer");
    let field = |name: &str| {
        consumer.as_map().and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name))).and_then(|(_, v)| v.as_str())
    };
    assert_eq!(field("id"), Some(ACCOUNT_ACME));
    assert_eq!(field("username"), Some(CONSUMER_ALICE));
    assert!(req.credential().is_none(), "no credential (acl on Kong 3.4–3.7)");
}

#[tokio::test]
async fn instances_and_workers_share_one_cache() {
    let env = Env::start().await;
    let a = env.plugin(json!({}));
    let b = env.plugin(json!({"cache_ttl": 30}));
    let other_worker = Kong::new(env.server.socket());
    let c = other_worker.plugin(PLUGIN, env.config(json!({})));
    assert_eq!(status(&ask(&env, &a, KEY_ALICE).await.0), 200);
    assert_eq!(status(&ask(&env, &b, KEY_ALICE).await.0), 200);
    assert_eq!(status(&run(&other_worker, &c, with_key(KEY_ALICE)).await.0), 200);
    assert_eq!(env.auth.lookups(), 1, "three instances, one auth-service call");
    // Each instance applies its own TTL to the shared entry.
    env.advance(31).await;
    assert_eq!(status(&ask(&env, &a, KEY_ALICE).await.0), 200);
    assert_eq!(env.auth.lookups(), 1, "still fresh for cache_ttl 60");
    assert_eq!(status(&ask(&env, &b, KEY_ALICE).await.0), 200);
    assert_eq!(env.auth.lookups(), 2, "expired for cache_ttl 30");
}

// ---- refusals -----------------------------------------------------------------------------

#[tokio::test]
async fn missing_unknown_revoked_expired_and_suspended_keys_are_refused_in_two_pdk_calls() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let (outcome, _) = run(&env.kong, &plugin, Request::new("GET", "/v1/messages")).await;
    assert_refused(&outcome, 401, "credential_missing");
    assert_eq!(calls(&outcome), [GET_HEADERS, EXIT]);
    let exit = outcome.exit.as_ref().expect("exit");
    assert_eq!(exit.header("www-authenticate").as_deref(), Some(r#"ApiKey realm="ghasi""#));
    assert_eq!(env.auth.lookups(), 0);

    let (outcome, _) = run(&env.kong, &plugin, with_key("")).await;
    assert_refused(&outcome, 401, "credential_missing");

    for key in [KEY_UNKNOWN, KEY_REVOKED, KEY_EXPIRED, KEY_SUSPENDED] {
        let (outcome, req) = ask(&env, &plugin, key).await;
        assert_refused(&outcome, 401, "credential_invalid");
        assert_eq!(calls(&outcome), [GET_HEADERS, EXIT], "{key}");
        let exit = outcome.exit.as_ref().expect("exit");
        assert_eq!(exit.header("www-authenticate").as_deref(), Some(r#"ApiKey realm="ghasi""#));
        assert!(groups(&req).is_none(), "nothing published for a refused key");
    }
    assert_eq!(env.auth.lookups(), 4);
    env.assert_no_key_logged();
}

#[tokio::test]
async fn different_keys_are_ambiguous_and_identical_duplicates_are_not() {
    let env = Env::start().await;
    let two_names = env.plugin(json!({"key_names": ["x-api-key", "apikey"]}));
    let req = with_key(KEY_ALICE).with_header("ApiKey", KEY_GLOBEX);
    let (outcome, _) = run(&env.kong, &two_names, req).await;
    assert_refused(&outcome, 401, "credential_ambiguous");
    assert_eq!(calls(&outcome), [GET_HEADERS, EXIT], "several key names: one get_headers");

    let req = with_key(KEY_ALICE).with_header("ApiKey", KEY_ALICE);
    let (outcome, req) = run(&env.kong, &two_names, req).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, SET_HEADERS, CTX_SET]);
    assert!(!req.upstream_headers().contains("x-api-key") && !req.upstream_headers().contains("apikey"));

    // One key name: Kong's get_header would answer only the first of repeated headers (on
    // 3.4 and 3.9 alike), so the plugin reads them all: two different values are ambiguous,
    // whatever the order, and no copy of either goes upstream.
    let one_name = env.plugin(json!({}));
    for kong in [&env.kong, &Kong::builder(env.server.socket()).version(KongVersion::V3_4).build()] {
        let plugin = kong.plugin(PLUGIN, env.config(json!({})));
        for (first, second) in [(KEY_ALICE, KEY_GLOBEX), (KEY_UNKNOWN, KEY_ALICE)] {
            let (outcome, _) = run(kong, &plugin, with_key(first).with_header("X-API-Key", second)).await;
            assert_refused(&outcome, 401, "credential_ambiguous");
            assert_eq!(calls(&outcome), [GET_HEADERS, EXIT], "the common path's one read");
        }
    }
    let (outcome, req) = run(&env.kong, &one_name, with_key(KEY_ALICE).with_header("X-API-Key", KEY_ALICE)).await;
    assert_eq!(status(&outcome), 200);
    assert!(!req.upstream_headers().contains("x-api-key"), "every copy of the key is removed");
    assert_eq!(env.auth.lookups(), 1, "ambiguous requests never reach auth-service");
    env.assert_no_key_logged();
}

// ---- spoofed identity headers ---------------------------------------------------------------

#[tokio::test]
async fn reject_mode_answers_400_to_a_spoofed_identity_header() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"on_spoofed_identity_header": "reject"}));
    for header in ["X-Account-Id", "x-user-id", "X-Consumer-Username", "X-Credential-Identifier"] {
        let (outcome, _) = run(&env.kong, &plugin, with_key(KEY_ALICE).with_header(header, "spoof")).await;
        let body = assert_refused(&outcome, 400, "spoofed_identity_header");
        assert_eq!(body["status"], 400);
        // Reject mode reads all headers; before answering 400 it checks that no earlier
        // plugin (ghasi-jwt) set the header (see the next test): one call more on this path.
        assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET, EXIT]);
    }
    assert_eq!(env.auth.lookups(), 0);
    let (outcome, req) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, SET_HEADERS, CTX_SET]);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
}

#[tokio::test]
async fn credential_optional_passes_a_keyless_request_without_client_identity() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"credential_optional": true}));
    let mut req = Request::new("GET", "/v1/messages").with_header("X-Other", "kept");
    for h in IDENTITY_HEADERS {
        req = req.with_header(h, "spoofed");
    }
    let (outcome, req) = run(&env.kong, &plugin, req).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET, SET_HEADERS]);
    for h in IDENTITY_HEADERS {
        assert!(!req.upstream_headers().contains(h), "{h} reached the upstream");
    }
    assert_eq!(req.upstream_header("x-other").as_deref(), Some("kept"));
    assert!(groups(&req).is_none(), "an anonymous request is not authenticated");

    // A wrong key is still refused.
    let (outcome, _) = ask(&env, &plugin, KEY_REVOKED).await;
    assert_refused(&outcome, 401, "credential_invalid");

    // After an earlier plugin (ghasi-jwt) authenticated, its identity headers stand.
    let mut req = Request::new("GET", "/v1/messages").with_header("X-Account-Id", ACCOUNT_GLOBEX);
    req.ctx_shared_set("authenticated_groups", Value::Array(vec![Value::from("ghasi-authenticated")]));
    let (outcome, req) = run(&env.kong, &plugin, req).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET]);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_GLOBEX));
}

// ---- keys in the query ------------------------------------------------------------------------

const GET_RAW_QUERY: &str = "kong.request.get_raw_query";
const SET_RAW_QUERY: &str = "kong.service.request.set_raw_query";

fn query(raw: String) -> Request {
    Request::new("GET", "/v1/messages").with_query(raw)
}

#[tokio::test]
async fn key_in_query_costs_one_read_more_and_is_hidden_on_every_kong_version() {
    let env = Env::start().await;
    let v3_4 = Kong::builder(env.server.socket()).version(KongVersion::V3_4).build();
    for kong in [&env.kong, &v3_4] {
        let plugin = kong.plugin(PLUGIN, env.config(json!({"key_names": ["apikey"], "key_in_query": true})));
        // Whatever the case or encoding of the name, the key authenticates *and* is removed:
        // matching and removal use one parser, and PDK functions every Kong 3.x has.
        for (raw, rest) in [
            (format!("apikey={KEY_ALICE}&page=2"), "page=2"),
            (format!("page=2&APIKEY={KEY_ALICE}"), "page=2"),
            (format!("ApiKey={KEY_ALICE}&q=a%20b&apikey={KEY_ALICE}"), "q=a%20b"),
            (format!("api%4Bey={KEY_ALICE}"), ""),
        ] {
            let (outcome, req) = run(kong, &plugin, query(raw.clone())).await;
            assert_eq!(status(&outcome), 200, "{raw}");
            assert_eq!(calls(&outcome), [GET_HEADERS, GET_RAW_QUERY, SET_HEADERS, CTX_SET, SET_RAW_QUERY], "{raw}");
            assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
            assert_eq!(req.raw_query(), rest, "{raw}: the key is removed upstream, the rest kept as sent");
            assert!(!req.logs().iter().any(|l| l.message.contains("could not find pdk method")), "{raw}");
        }
        // A repeated query key with different values is ambiguous, as is header + query.
        let (outcome, _) = run(kong, &plugin, query(format!("apikey={KEY_ALICE}&apikey={KEY_GLOBEX}"))).await;
        assert_refused(&outcome, 401, "credential_ambiguous");
        let req = Request::new("GET", "/v1/messages")
            .with_header("apikey", KEY_ALICE)
            .with_query(format!("APIKEY={KEY_GLOBEX}"));
        assert_refused(&run(kong, &plugin, req).await.0, 401, "credential_ambiguous");
        // No key-named argument: nothing to send back.
        let req = Request::new("GET", "/v1/messages").with_header("apikey", KEY_ALICE).with_query("page=2");
        let (outcome, req) = run(kong, &plugin, req).await;
        assert_eq!(calls(&outcome), [GET_HEADERS, GET_RAW_QUERY, SET_HEADERS, CTX_SET]);
        assert_eq!(req.raw_query(), "page=2");
    }

    let keep = env.plugin(json!({"key_names": ["apikey"], "key_in_query": true, "hide_credentials": false}));
    let (outcome, req) = run(&env.kong, &keep, query(format!("apikey={KEY_ALICE}&page=2"))).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, GET_RAW_QUERY, SET_HEADERS, CTX_SET]);
    assert_eq!(req.raw_query(), format!("apikey={KEY_ALICE}&page=2"), "hide_credentials: false keeps the key");

    let header_only = env.plugin(json!({"key_names": ["apikey"]}));
    let (outcome, _) = run(&env.kong, &header_only, query(format!("apikey={KEY_ALICE}"))).await;
    assert_refused(&outcome, 401, "credential_missing");
    assert_eq!(calls(&outcome), [GET_HEADERS, EXIT], "no query read without key_in_query");
    env.assert_no_key_logged();
}

#[tokio::test]
async fn the_emulator_answers_a_pdk_method_kong_3_4_lacks_as_kong_does() {
    // The emulator must show this class of bug: `clear_query_arg` is 3.9+; on 3.4 Kong logs
    // "could not find pdk method" and answers the Step as if the call returned nothing.
    let env = Env::start().await;
    let v3_4 = Kong::builder(env.server.socket()).version(KongVersion::V3_4).build();
    for (kong, exists) in [(&env.kong, true), (&v3_4, false)] {
        let plugin = kong.plugin(
            "ghasi-test-script",
            json!({"steps": [
                {"call": "kong.service.request.clear_query_arg", "args": ["apikey"]},
                {"call": "kong.service.request.set_header", "args": ["x-after", "1"]}
            ]}),
        );
        let (outcome, req) = run(kong, &plugin, query("apikey=k&page=2".into())).await;
        assert!(outcome.continues(), "{:?}", outcome.abandoned);
        let missing = req
            .logs()
            .iter()
            .any(|l| l.message.contains("could not find pdk method: kong.service.request.clear_query_arg"));
        assert_eq!(missing, !exists);
        assert_eq!(req.raw_query(), if exists { "page=2" } else { "apikey=k&page=2" });
        assert_eq!(req.upstream_header("x-after").as_deref(), Some("1"), "the event goes on after a nil answer");
    }
}

// ---- auth-service trouble ------------------------------------------------------------------

fn assert_unavailable(outcome: &EventOutcome) {
    assert_refused(outcome, 503, "authority_unavailable");
    let exit = outcome.exit.as_ref().expect("exit");
    let retry_after: u64 = exit.header("retry-after").expect("Retry-After").parse().expect("Retry-After seconds");
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(calls(outcome), [GET_HEADERS, EXIT]);
}

#[tokio::test]
async fn every_auth_service_failure_is_a_503_that_is_never_cached() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"timeout_ms": 200}));
    let faults = [
        Fault::Status(500),
        Fault::Status(502),
        Fault::Status(503),
        Fault::Status(429),
        Fault::Garbage,
        Fault::EmptyJwks, // lookup: 200 {}
        Fault::Refuse,
        Fault::Slow(Duration::from_millis(3000)),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        env.auth.set_fault(Target::Lookup, fault);
        let (outcome, req) = ask(&env, &plugin, KEY_ALICE).await;
        assert_unavailable(&outcome);
        assert!(groups(&req).is_none());
        assert_eq!(env.auth.lookups(), i as u64 + 1, "{fault:?}: one call per request, nothing cached");
    }
    env.auth.clear_faults();
    let (outcome, _) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200, "the first request after recovery succeeds");

    // Warnings are rate-limited: the outage above produced far fewer than one per request.
    let warnings = env.server.logs().matches("auth-service unavailable").count();
    assert!((1..=4).contains(&warnings), "{warnings} warnings for 8 failures");
    env.assert_no_key_logged();
}

#[tokio::test]
async fn auth_service_down_then_up() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    assert_eq!(status(&ask(&env, &plugin, KEY_GLOBEX).await.0), 200, "pooled connection established");
    env.auth.down().await;
    let (outcome, _) = ask(&env, &plugin, KEY_ALICE).await;
    assert_unavailable(&outcome);
    let (outcome, _) = ask(&env, &plugin, KEY_UNKNOWN).await;
    assert_unavailable(&outcome);
    env.auth.up().await;
    let (outcome, req) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
    assert_refused(&ask(&env, &plugin, KEY_UNKNOWN).await.0, 401, "credential_invalid");
}

// ---- cache --------------------------------------------------------------------------------

#[tokio::test]
async fn valid_keys_are_cached_60_s_and_invalid_ones_15_s() {
    let env = Env::start().await;
    // The lifetimes alone: no background revalidation near the end (tests/refresh_ahead.rs).
    let plugin = env.plugin(json!({"refresh_ahead": 0}));
    assert_eq!(status(&ask(&env, &plugin, KEY_ALICE).await.0), 200);
    assert_refused(&ask(&env, &plugin, KEY_UNKNOWN).await.0, 401, "credential_invalid");
    assert_eq!(env.auth.lookups(), 2);

    env.advance(14).await;
    assert_eq!(status(&ask(&env, &plugin, KEY_ALICE).await.0), 200);
    assert_refused(&ask(&env, &plugin, KEY_UNKNOWN).await.0, 401, "credential_invalid");
    assert_eq!(env.auth.lookups(), 2, "both cached");

    env.advance(2).await; // 16 s
    assert_refused(&ask(&env, &plugin, KEY_UNKNOWN).await.0, 401, "credential_invalid");
    assert_eq!(env.auth.lookups(), 3, "the negative entry expired after 15 s");

    // auth-service is the authority: a revoke shows once the cached verdict expires.
    assert!(env.auth.revoke_key(KEY_ALICE));
    env.advance(43).await; // 59 s
    assert_eq!(status(&ask(&env, &plugin, KEY_ALICE).await.0), 200);
    assert_eq!(env.auth.lookups(), 3, "still cached at 59 s");
    env.advance(2).await; // 61 s
    assert_refused(&ask(&env, &plugin, KEY_ALICE).await.0, 401, "credential_invalid");
    assert_eq!(env.auth.lookups(), 4);
}

#[tokio::test]
async fn a_key_expiry_shortens_the_cache_ttl() {
    let env = Env::start().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let key: ApiKey = serde_json::from_value(json!({
        "key": "test_key_short_lived_0123456789", "key_id": "key_short", "account_id": ACCOUNT_ACME,
        "expires_at": rfc3339(now + 30),
    }))
    .expect("an API key");
    env.auth.add_api_key(key).expect("adding the key");
    let plugin = env.plugin(json!({}));
    let (outcome, _) = ask(&env, &plugin, "test_key_short_lived_0123456789").await;
    assert_eq!(status(&outcome), 200);
    env.advance(20).await;
    assert_eq!(status(&ask(&env, &plugin, "test_key_short_lived_0123456789").await.0), 200);
    assert_eq!(env.auth.lookups(), 1, "cached before expires_at");
    env.advance(12).await; // past expires_at, well before cache_ttl
    ask(&env, &plugin, "test_key_short_lived_0123456789").await;
    assert_eq!(env.auth.lookups(), 2, "expires_at ended the cached verdict before cache_ttl");
    assert!(!env.server.logs().contains("test_key_short_lived"));
}

#[tokio::test]
async fn one_hundred_concurrent_requests_for_one_key_make_one_lookup() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"timeout_ms": 10000}));
    // Slow enough that every request arrives while the first lookup is still in flight.
    env.auth.set_fault(Target::Lookup, Fault::Slow(Duration::from_millis(1500)));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (kong, plugin) = (env.kong.clone(), plugin.clone());
        tasks.push(tokio::spawn(async move { run(&kong, &plugin, with_key(KEY_ALICE)).await }));
    }
    for task in tasks {
        let (outcome, req) = task.await.expect("task");
        assert_eq!(status(&outcome), 200);
        assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
    }
    assert_eq!(env.auth.lookups(), 1);
    assert!(env.server.logs().contains("coalesced"), "requests waited on the lookup in flight");
}

#[tokio::test]
async fn ten_thousand_invalid_keys_do_not_evict_a_valid_one() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    assert_eq!(status(&ask(&env, &plugin, KEY_ALICE).await.0), 200);
    let mut tasks = Vec::new();
    for worker in 0..25 {
        let (kong, plugin) = (env.kong.clone(), plugin.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..400 {
                let (outcome, _) = run(&kong, &plugin, with_key(&format!("flood_{worker}_{i}"))).await;
                assert_eq!(outcome.exit.as_ref().map(|e| e.status), Some(401));
            }
        }));
    }
    for task in tasks {
        task.await.expect("flood task");
    }
    assert_eq!(env.auth.lookups(), 10_001);
    let (outcome, _) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(env.auth.lookups(), 10_001, "the valid key is still cached");
    // The invalid keys' budget is bounded (4,096): the oldest were evicted.
    assert_refused(&run(&env.kong, &plugin, with_key("flood_0_0")).await.0, 401, "credential_invalid");
    assert_eq!(env.auth.lookups(), 10_002);
}

#[tokio::test]
async fn stale_if_error_serves_a_valid_verdict_only_while_auth_service_is_unavailable() {
    let env = Env::start().await;
    let stale = env.plugin(json!({"stale_if_error": 30}));
    let strict = env.plugin(json!({}));
    assert_eq!(status(&ask(&env, &stale, KEY_ALICE).await.0), 200);
    assert_eq!(status(&ask(&env, &stale, KEY_GLOBEX).await.0), 200);
    env.advance(61).await;
    env.auth.set_fault(Target::Lookup, Fault::Status(503));
    let (outcome, req) = ask(&env, &stale, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200, "served stale");
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
    assert_eq!(env.auth.lookups(), 3, "it asked auth-service first");
    assert_unavailable(&ask(&env, &strict, KEY_ALICE).await.0);

    env.advance(30).await; // 91 s: past cache_ttl + stale_if_error
    assert_unavailable(&ask(&env, &stale, KEY_ALICE).await.0);

    // A definitive "invalid" ends stale serving for good.
    env.auth.clear_faults();
    assert_eq!(status(&ask(&env, &stale, KEY_GLOBEX).await.0), 200); // learnt again at 91 s
    env.advance(61).await; // 152 s: stale-servable until 181 s
    assert!(env.auth.revoke_key(KEY_GLOBEX));
    assert_refused(&ask(&env, &stale, KEY_GLOBEX).await.0, 401, "credential_invalid");
    env.advance(16).await; // 168 s: the negative entry expired, the old valid one would be stale-servable
    env.auth.set_fault(Target::Lookup, Fault::Status(500));
    assert_unavailable(&ask(&env, &stale, KEY_GLOBEX).await.0);
    assert!(env.server.logs().contains("stale"));
}

#[tokio::test]
async fn a_refused_service_token_is_a_503_never_an_invalid_key() {
    // auth-service answers 401 when *our* service_token is wrong or rotated: that says
    // nothing about the customer's key, so it must not be cached as "invalid".
    let args = vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()];
    let env = Env::start_with(common::Options { args, ..Default::default() }).await;
    let wrong = env.plugin(json!({"service_token": "rotated-away"}));
    for i in 0..3 {
        let (outcome, req) = ask(&env, &wrong, KEY_ALICE).await;
        assert_unavailable(&outcome);
        assert!(groups(&req).is_none());
        assert_eq!(env.auth.lookups(), i + 1, "never cached: every request asks again");
    }
    // Fixing the token (e.g. the vault reference resolves anew) works at once: nothing stale.
    let right = env.plugin(json!({}));
    assert_eq!(status(&ask(&env, &right, KEY_ALICE).await.0), 200);
    let logs = env.server.logs();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("refused the service_token")).collect();
    assert_eq!(errors.len(), 1, "one rate-limited error line for three refusals:\n{logs}");
    assert!(errors[0].contains("ERROR"), "{}", errors[0]);
    assert!(!logs.contains("rotated-away"), "the token is never logged");
    let (_, metrics) = common::http::get(&env.metrics_addr(), "/metrics");
    let refused = [r#"target="auth_service""#, r#"kind="service_token_refused""#];
    assert_eq!(common::http::sample(&metrics, "ghasi_upstream_failures_total", &refused), Some(3.0), "{metrics}");
    env.assert_no_key_logged();
}

// ---- reserved headers ----------------------------------------------------------------------

/// Kong's consumer and credential headers (kong/constants.lua), which upstreams written for
/// Kong trust, plus our identity headers.
const KONG_CONSUMER_HEADERS: [&str; 7] = [
    "X-Consumer-ID",
    "X-Consumer-Custom-ID",
    "X-Consumer-Groups",
    "X-Anonymous-Consumer",
    "X-Authenticated-Groups",
    "X-Authenticated-Scope",
    "X-Authenticated-Userid",
];

fn spoofing(mut req: Request, extra: &[&str]) -> Request {
    for h in KONG_CONSUMER_HEADERS.iter().chain(extra) {
        req = req.with_header(*h, "spoofed");
    }
    req
}

#[tokio::test]
async fn no_client_sent_consumer_header_reaches_the_upstream_on_any_path() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"extra_reserved_headers": ["X-Tenant-Id"], "credential_optional": true}));
    for kong in [&env.kong, &Kong::builder(env.server.socket()).version(KongVersion::V3_4).build()] {
        let plugin = kong.plugin(PLUGIN, plugin.config());
        // Success: still one set_headers, which writes ours and removes the rest.
        let (outcome, req) = run(kong, &plugin, spoofing(with_key(KEY_ALICE), &["x-tenant-id"])).await;
        assert_eq!(status(&outcome), 200);
        assert_eq!(calls(&outcome), [GET_HEADERS, SET_HEADERS, CTX_SET]);
        // Optional credential, no key: removed as well.
        let (outcome, anonymous) =
            run(kong, &plugin, spoofing(Request::new("GET", "/v1/messages"), &["X-Tenant-Id"])).await;
        assert_eq!(status(&outcome), 200);
        assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET, SET_HEADERS]);
        for req in [&req, &anonymous] {
            for h in KONG_CONSUMER_HEADERS.iter().chain(&["x-tenant-id"]) {
                assert!(!req.upstream_headers().contains(&h.to_ascii_lowercase()), "{h} reached the upstream");
            }
        }
        assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
    }
    // Reject mode refuses any of them.
    let reject = env.plugin(json!({"on_spoofed_identity_header": "reject", "extra_reserved_headers": ["X-Tenant-Id"]}));
    for h in KONG_CONSUMER_HEADERS.iter().chain(&["X-Tenant-Id"]) {
        let (outcome, _) = run(&env.kong, &reject, with_key(KEY_ALICE).with_header(*h, "spoofed")).await;
        assert_refused(&outcome, 400, "spoofed_identity_header");
    }
}

// ---- hostile configs ----------------------------------------------------------------------

#[tokio::test]
async fn hostile_configs_are_refused_naming_the_field_without_echoing_it() {
    let env = Env::start().await;
    let huge = format!("http://{}.example", "a".repeat(4 << 20));
    let huge_token = "t".repeat(4 << 20);
    let cases = [
        (json!({"auth_service_url": huge}), "field 'auth_service_url'"),
        (json!({"auth_service_url": env.auth.url(), "service_token": huge_token}), "field 'service_token'"),
        (json!({"auth_service_url": env.auth.url(), "lookup_path": "/verify\r\nX-Evil: 1"}), "field 'lookup_path'"),
        (json!({"auth_service_url": format!("{}\n", env.auth.url())}), "field 'auth_service_url'"),
        (json!({"auth_service_url": env.auth.url(), "key_names": ["x-api-key;x"]}), "field 'key_names'"),
        (
            json!({"auth_service_url": env.auth.url(), "extra_reserved_headers": ["a\u{0}b"]}),
            "field 'extra_reserved_headers'",
        ),
        (
            json!({"auth_service_url": env.auth.url(), "authenticated_group": "g".repeat(100_000)}),
            "field 'authenticated_group'",
        ),
    ];
    for (config, wanted) in cases {
        let plugin = env.kong.plugin(PLUGIN, config.clone());
        let err =
            env.kong.run_event(&plugin, "access", &mut with_key(KEY_ALICE)).await.expect_err("StartInstance must fail");
        let message = err.rpc_message().unwrap_or_else(|| panic!("not a server error: {err}")).to_string();
        assert!(message.contains(wanted), "{message:?} lacks {wanted:?}");
        assert!(message.len() < 400, "the error does not echo the value: {} bytes", message.len());
    }
    // The server is unharmed.
    assert_eq!(status(&ask(&env, &env.plugin(json!({})), KEY_ALICE).await.0), 200);
}

// ---- config -------------------------------------------------------------------------------

#[tokio::test]
async fn a_bad_config_fails_start_instance_naming_each_field() {
    let env = Env::start().await;
    let cases = [
        (json!({"lookup_path": "/x"}), vec!["field 'auth_service_url': required"]),
        (
            json!({"auth_service_url": "ftp://auth", "timeout_ms": 0, "cache_ttl": "60"}),
            vec!["field 'auth_service_url'", "field 'timeout_ms'", "field 'cache_ttl'"],
        ),
        (json!({"auth_service_url": env.auth.url(), "lookup_path": "verify"}), vec!["field 'lookup_path'"]),
        (json!({"auth_service_url": env.auth.url(), "key_names": []}), vec!["field 'key_names'"]),
        (json!({"auth_service_url": env.auth.url(), "key_names": ["X-Account-Id"]}), vec!["field 'key_names'"]),
        (
            json!({"auth_service_url": env.auth.url(), "on_spoofed_identity_header": "log"}),
            vec!["field 'on_spoofed_identity_header'"],
        ),
        (json!({"auth_service_url": env.auth.url(), "stale_if_error": -1}), vec!["field 'stale_if_error'"]),
        (json!({"auth_service_url": env.auth.url(), "hide_credentials": "yes"}), vec!["field 'hide_credentials'"]),
    ];
    for (config, wanted) in cases {
        let plugin = env.kong.plugin(PLUGIN, config.clone());
        let err =
            env.kong.run_event(&plugin, "access", &mut with_key(KEY_ALICE)).await.expect_err("StartInstance must fail");
        let message = err.rpc_message().unwrap_or_else(|| panic!("{config}: not a server error: {err}")).to_string();
        for w in wanted {
            assert!(message.contains(w), "{config}: {message:?} lacks {w:?}");
        }
    }
    assert_eq!(env.auth.lookups(), 0);
}

#[tokio::test]
async fn kong_injected_config_keys_are_tolerated() {
    let env = Env::start().await;
    // The emulator injects __seq__, __key__, __plugin_id, route_id and __ws_id; add the rest.
    let mut spec = PluginSpec::new(PLUGIN, env.config(json!({"__future_kong_key": {"a": 1}})));
    spec.service_id = Some("6f1c1d57-0000-4000-8000-000000000001".into());
    spec.instance_name = Some("messages-api-key".into());
    let plugin = env.kong.plugin_from(spec);
    let (outcome, req) = ask(&env, &plugin, KEY_ALICE).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_ACME));
}

// ---- metrics ------------------------------------------------------------------------------

#[tokio::test]
async fn decisions_and_cache_results_are_counted_without_any_key() {
    let args = vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()];
    let env = Env::start_with(common::Options { args, ..Default::default() }).await;
    let plugin = env.plugin(json!({}));
    ask(&env, &plugin, KEY_ALICE).await;
    ask(&env, &plugin, KEY_ALICE).await;
    ask(&env, &plugin, KEY_UNKNOWN).await;
    ask(&env, &plugin, KEY_UNKNOWN).await;
    env.auth.set_fault(Target::Lookup, Fault::Status(502));
    ask(&env, &plugin, KEY_GLOBEX).await;

    let (code, metrics) = common::http::get(&env.metrics_addr(), "/metrics");
    assert_eq!(code, 200);
    let count = |name: &str, labels: &[&str]| common::http::sample(&metrics, name, labels);
    let plugin_label = r#"plugin="ghasi-api-key-lookup""#;
    assert_eq!(count("ghasi_cache_requests_total", &[plugin_label, r#"result="miss""#]), Some(3.0), "{metrics}");
    assert_eq!(count("ghasi_cache_requests_total", &[plugin_label, r#"result="hit""#]), Some(1.0));
    assert_eq!(count("ghasi_cache_requests_total", &[plugin_label, r#"result="negative_hit""#]), Some(1.0));
    assert_eq!(count("ghasi_decisions_total", &[plugin_label, r#"code="ok""#]), Some(2.0));
    assert_eq!(count("ghasi_decisions_total", &[plugin_label, r#"code="credential_invalid""#]), Some(2.0));
    assert_eq!(count("ghasi_decisions_total", &[plugin_label, r#"code="authority_unavailable""#]), Some(1.0));
    assert_eq!(count("ghasi_upstream_failures_total", &[r#"target="auth_service""#, r#"kind="status""#]), Some(1.0));
    assert_eq!(count("ghasi_cache_entries", &[plugin_label, r#"cache="positive""#]), Some(1.0));
    assert_eq!(count("ghasi_cache_entries", &[plugin_label, r#"cache="negative""#]), Some(1.0));
    for key in ALL_KEYS {
        assert!(!metrics.contains(key), "a metric carries an API key");
    }
}

// ---- Kong 3.4 ---------------------------------------------------------------------------------

#[tokio::test]
async fn kong_3_4_gets_the_same_answers() {
    let env = Env::start().await;
    let kong = Kong::builder(env.server.socket()).version(KongVersion::V3_4).build();
    let plugin = kong.plugin(PLUGIN, env.config(json!({})));
    let req = with_key(KEY_ALICE).with_header("X-Credential-Identifier", "spoofed");
    let (outcome, req) = run(&kong, &plugin, req).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, SET_HEADERS, CTX_SET]);
    assert_eq!(req.upstream_header("x-credential-identifier").as_deref(), Some(KEY_ID_ALICE));
    assert!(!req.upstream_headers().contains("x-api-key"));
    let (outcome, _) = run(&kong, &plugin, with_key(KEY_REVOKED)).await;
    assert_refused(&outcome, 401, "credential_invalid");

    // 3.4's get_header returns only the first of repeated headers: a second key name (or
    // reject mode) reads them all and still sees the ambiguity.
    let all = kong.plugin(PLUGIN, env.config(json!({"on_spoofed_identity_header": "reject"})));
    let (outcome, _) = run(&kong, &all, with_key(KEY_ALICE).with_header("X-API-Key", KEY_GLOBEX)).await;
    assert_refused(&outcome, 401, "credential_ambiguous");
}

#[tokio::test]
async fn reject_mode_accepts_identity_headers_an_earlier_plugin_set() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"on_spoofed_identity_header": "reject", "credential_optional": true}));
    // What ghasi-jwt leaves behind on an "API key or JWT" route: its identity headers (Kong's
    // request headers are the rewritten ones) and the published groups.
    let jwt_authenticated = || {
        let mut req = Request::new("GET", "/v1/messages").with_header("X-Account-Id", ACCOUNT_GLOBEX);
        req.ctx_shared_set("authenticated_groups", Value::Array(vec![Value::from("ghasi-authenticated")]));
        req
    };
    let (outcome, req) = run(&env.kong, &plugin, jwt_authenticated()).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET]);
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(ACCOUNT_GLOBEX));

    // The same header without an earlier authentication is a spoof.
    let req = Request::new("GET", "/v1/messages").with_header("X-Account-Id", ACCOUNT_GLOBEX);
    let (outcome, _) = run(&env.kong, &plugin, req).await;
    assert_refused(&outcome, 400, "spoofed_identity_header");
    assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET, EXIT]);

    // Without identity headers the check costs nothing.
    let (outcome, _) = run(&env.kong, &plugin, Request::new("GET", "/v1/messages")).await;
    assert_eq!(calls(&outcome), [GET_HEADERS, CTX_GET, SET_HEADERS], "read + pass_anonymous");
}
