//! Revocation push end to end, with a real Redis: two plugin-server processes (two "nodes",
//! each behind its own emulated Kong worker), the dev auth-service publishing revocations on
//! Redis, and `redis-server` started and stopped by the test on a free loopback port.
//!
//! No clock is moved here: every refusal below happens long before the 60 s cache lifetime or
//! the 300 s JWKS lifetime would have ended it, so it can only come from the pushed message.
//! Latencies are printed, not asserted (the benchmark reports them over many revocations).

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{http, Options, Server};
use dev_auth_service::fixtures::*;
use dev_auth_service::{DevAuthService, DevConfig, TokenSpec};
use kong_emulator::{Kong, Plugin, Request};
use serde_json::{json, Value as Json};

const CHANNEL: &str = "ghasi:revocations";
/// Generous: a loaded 2-core CI machine; the design target is about a second.
const DEADLINE: Duration = Duration::from_secs(10);

struct Node {
    server: Server,
    kong: Kong,
    metrics: String,
}

impl Node {
    fn start(redis: &RedisServer) -> Node {
        let mut options = Options { args: vec!["--metrics-listen".into(), "127.0.0.1:0".into()], ..Options::default() };
        options.env.push(("GHASI_REVOCATION_REDIS_URL".into(), redis.url()));
        let server = Server::start_with(options);
        let kong = Kong::new(server.socket());
        let metrics = server.metrics_addr();
        Node { server, kong, metrics }
    }

    fn health(&self) -> Json {
        let (status, body) = http::get(&self.metrics, "/health");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("/health is JSON")
    }

    fn metric(&self, prefix: &str, labels: &[&str]) -> f64 {
        http::sample(&http::get(&self.metrics, "/metrics").1, prefix, labels).unwrap_or(0.0)
    }

    /// Waits until the subscriber reports `subscriptions` successful subscriptions and is
    /// subscribed now.
    fn wait_subscribed(&self, subscriptions: u64) {
        wait_for(&format!("subscription #{subscriptions}"), || {
            let h = &self.health()["revocation"];
            h["state"] == "subscribed" && h["subscriptions"].as_u64() >= Some(subscriptions)
        });
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {DEADLINE:?}");
}

async fn status(kong: &Kong, plugin: &Plugin, mut req: Request) -> u16 {
    let outcome = kong.run_event(plugin, "access", &mut req).await.expect("the event runs");
    assert!(outcome.abandoned.is_none(), "a PDK call raised: {:?}", outcome.abandoned);
    outcome.exit.as_ref().map_or(200, |e| e.status)
}

fn with_key(key: &str) -> Request {
    Request::new("GET", "/v1/messages").with_header("X-API-Key", key)
}

fn with_token(token: &str) -> Request {
    Request::new("GET", "/v1/messages").with_header("Authorization", format!("Bearer {token}"))
}

/// Polls both nodes until `key` is refused on each; returns how long that took on each.
async fn until_refused(nodes: &[(&Node, Plugin)], req: impl Fn() -> Request, since: Instant) -> Vec<Duration> {
    let mut took = Vec::new();
    for (node, plugin) in nodes {
        loop {
            if status(&node.kong, plugin, req()).await == 401 {
                took.push(since.elapsed());
                break;
            }
            assert!(since.elapsed() < DEADLINE, "still accepted after {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    took
}

async fn post(url: String, body: Json) {
    let resp = reqwest::Client::new().post(&url).json(&body).send().await.expect("admin API");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_node_without_waiting_for_the_cache() {
    let Some(redis) = RedisServer::start("revocations_reach_every_node_without_waiting_for_the_cache") else {
        return;
    };
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    auth.publish_revocations(&redis.url(), CHANNEL).expect("revocation push");
    let nodes = [Node::start(&redis), Node::start(&redis)];
    for node in &nodes {
        node.wait_subscribed(1);
    }
    let api_key = |n: &Node| {
        n.kong.plugin("ghasi-api-key-lookup", json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN}))
    };
    let keys: Vec<_> = nodes.iter().map(|n| (n, api_key(n))).collect();

    // Every key cached on both nodes: asking again costs auth-service nothing.
    for (node, plugin) in &keys {
        for key in [KEY_ALICE, KEY_SERVICE, KEY_GLOBEX] {
            assert_eq!(status(&node.kong, plugin, with_key(key)).await, 200);
        }
    }
    let lookups = auth.lookups();
    for (node, plugin) in &keys {
        for key in [KEY_ALICE, KEY_SERVICE, KEY_GLOBEX] {
            assert_eq!(status(&node.kong, plugin, with_key(key)).await, 200);
        }
    }
    assert_eq!(auth.lookups(), lookups, "all six answered from the caches");

    // A key revoked through the admin API: refused on both nodes at once.
    let since = Instant::now();
    post(format!("{}/_dev/api-keys/revoke", auth.url()), json!({"key": KEY_ALICE})).await;
    let took = until_refused(&keys, || with_key(KEY_ALICE), since).await;
    eprintln!("key revocation reached the nodes after {took:?}");
    let lookups = auth.lookups();
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_SERVICE)).await, 200);
    }
    assert_eq!(auth.lookups(), lookups, "the account's other key is still cached");

    // An account suspended: each of its keys refused on both nodes; other accounts untouched.
    let since = Instant::now();
    post(format!("{}/_dev/accounts", auth.url()), json!({"id": ACCOUNT_ACME, "status": "suspended"})).await;
    let took = until_refused(&keys, || with_key(KEY_SERVICE), since).await;
    eprintln!("account suspension reached the nodes after {took:?}");
    let lookups = auth.lookups();
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_GLOBEX)).await, 200);
    }
    assert_eq!(auth.lookups(), lookups, "another account's key is still cached");
    for node in &nodes {
        assert_eq!(node.metric("ghasi_revocation_messages", &["kind=\"api_key\""]), 1.0);
        assert_eq!(node.metric("ghasi_revocation_messages", &["kind=\"account\""]), 1.0);
        assert!(node.metric("ghasi_revocation_evictions", &["kind=\"account\""]) >= 1.0);
    }

    // Signing keys rotated (the old one withdrawn): every node fetches the new set on its
    // own, and a token of the withdrawn key is refused everywhere.
    let jwt = |n: &Node| n.kong.plugin("ghasi-jwt", json!({"jwks_url": auth.jwks_url(), "issuer": auth.issuer()}));
    let jwts: Vec<_> = nodes.iter().map(|n| (n, jwt(n))).collect();
    let old_token = auth.mint(&TokenSpec::for_user(USER_BOB));
    for (node, plugin) in &jwts {
        assert_eq!(status(&node.kong, plugin, with_token(&old_token)).await, 200);
    }
    let fetches = auth.jwks_fetches();
    let since = Instant::now();
    post(format!("{}/dev/rotate", auth.url()), json!({"alg": "RS256", "keep_old": false})).await;
    let took = wait_for("both nodes fetching the rotated JWKS", || auth.jwks_fetches() >= fetches + 2);
    eprintln!("key rotation: both nodes refetched the JWKS after {took:?}");
    until_refused(&jwts, || with_token(&old_token), since).await;
    let new_token = auth.mint(&TokenSpec::for_user(USER_BOB));
    for (node, plugin) in &jwts {
        assert_eq!(status(&node.kong, plugin, with_token(&new_token)).await, 200);
    }

    // Garbage on the channel is counted and ignored; the subscription stays up.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for garbage in ["not json", r#"{"type":"reboot"}"#, r#"{"type":"api_key"}"#] {
        let _: i64 = redis::cmd("PUBLISH").arg(CHANNEL).arg(garbage).query_async(&mut conn).await.unwrap();
    }
    for node in &nodes {
        wait_for("malformed messages counted", || {
            node.metric("ghasi_revocation_malformed_messages", &["kind=\"not_json\""]) == 1.0
                && node.metric("ghasi_revocation_malformed_messages", &["kind=\"unknown_type\""]) == 1.0
                && node.metric("ghasi_revocation_malformed_messages", &["kind=\"missing_field\""]) == 1.0
        });
        assert_eq!(node.health()["revocation"]["subscriptions"], 1, "still the first subscription");
    }
    let lookups = auth.lookups();
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_GLOBEX)).await, 200);
    }
    assert_eq!(auth.lookups(), lookups, "garbage evicts nothing");
    for (node, _) in &keys {
        assert!(!node.server.logs().contains(KEY_ALICE), "a key in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_nodes_keep_serving_and_resubscribe_with_a_flush() {
    let Some(mut redis) = RedisServer::start("without_redis_the_nodes_keep_serving_and_resubscribe_with_a_flush")
    else {
        return;
    };
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let nodes = [Node::start(&redis), Node::start(&redis)];
    for node in &nodes {
        node.wait_subscribed(1);
        assert_eq!(node.metric("ghasi_revocation_connected", &[]), 1.0);
    }
    let config = json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN});
    let keys: Vec<_> = nodes.iter().map(|n| (n, n.kong.plugin("ghasi-api-key-lookup", config.clone()))).collect();
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_ALICE)).await, 200);
    }

    redis.kill();
    for node in &nodes {
        wait_for("/health reporting the lost subscription", || node.health()["revocation"]["state"] != "subscribed");
        let health = node.health();
        assert!(health["revocation"]["last_error"].is_string(), "{health}");
        assert_eq!(http::get(&node.metrics, "/ready").0, 200, "readiness does not depend on Redis");
        assert_eq!(node.metric("ghasi_revocation_connected", &[]), 0.0);
    }
    // Serving goes on with the normal lifetimes: the cached key is still a hit, others work.
    let lookups = auth.lookups();
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_ALICE)).await, 200);
    }
    assert_eq!(auth.lookups(), lookups, "cached keys stay cached while Redis is away");
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_GLOBEX)).await, 200);
        assert_eq!(status(&node.kong, plugin, with_key(KEY_UNKNOWN)).await, 401);
    }

    // Redis back: both resubscribe and flush (what was published meanwhile is lost), so the
    // next request for a cached key asks auth-service again.
    redis.restart();
    for node in &nodes {
        node.wait_subscribed(2);
        assert!(
            node.metric("ghasi_revocation_evictions", &["kind=\"subscribe\""]) >= 2.0,
            "the flush dropped the keys"
        );
    }
    let lookups = auth.lookups();
    for (node, plugin) in &keys {
        assert_eq!(status(&node.kong, plugin, with_key(KEY_ALICE)).await, 200);
    }
    assert_eq!(auth.lookups(), lookups + 2, "one lookup per node after the flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_or_answers_garbage_never_holds_up_a_request() {
    // Two fake "Redis" servers: one accepts and never answers, one answers garbage.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = [silent.local_addr().unwrap(), rude.local_addr().unwrap()].map(|a| format!("redis://{a}"));
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    std::thread::spawn(move || {
        for mut conn in rude.incoming().flatten() {
            use std::io::Write;
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n\x00\xff garbage");
        }
    });
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    for url in urls {
        let mut options = Options { args: vec!["--metrics-listen".into(), "127.0.0.1:0".into()], ..Options::default() };
        options.env.push(("GHASI_REVOCATION_REDIS_URL".into(), url));
        let server = Server::start_with(options);
        let node = Node { kong: Kong::new(server.socket()), metrics: server.metrics_addr(), server };
        let plugin = node
            .kong
            .plugin("ghasi-api-key-lookup", json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN}));
        for _ in 0..3 {
            assert_eq!(status(&node.kong, &plugin, with_key(KEY_GLOBEX)).await, 200);
        }
        let health = node.health();
        assert_ne!(health["revocation"]["state"], "subscribed", "{health}");
        assert_eq!(health["ready"], true);
    }
}

#[test]
fn a_bad_redis_url_stops_the_start_naming_the_flag_not_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .env("GHASI_REVOCATION_REDIS_URL", "http://:hunter2@redis:6379")
        .env_remove("GHASI_METRICS_LISTEN")
        .output()
        .expect("running the server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--revocation-redis-url"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
    assert!(!dir.path().join("s.sock").exists(), "nothing was served");
}
