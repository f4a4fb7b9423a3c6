//! A full run of both plugins with the operations listener on: the metrics move as the
//! requests dictate, /ready waits for the warmed JWKS, /health tells what an SRE needs,
//! and no key or token used anywhere in the run appears in the logs or the metrics.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, sample, sum};
use common::Server;
use dev_auth_service::fixtures::*;
use dev_auth_service::{DevAuthService, DevConfig, TokenSpec};
use kong_emulator::{Kong, Request};
use serde_json::json;

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || get(&addr, &path)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_logs_after_a_mixed_run() {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.unwrap();
    auth.down().await;
    let mut options = common::Options {
        args: vec!["--metrics-listen".into(), "127.0.0.1:0".into(), "--warm-jwks".into(), auth.jwks_url()],
        ..Default::default()
    };
    options.env.push(("GHASI_LOG".into(), "trace".into()));
    let server = Server::start_with(options);
    let addr = server.metrics_addr();

    // Not ready while the warmed JWKS cannot be loaded; ready as soon as it can.
    let (status, body) = http_get(&addr, "/ready").await;
    assert_eq!(status, 503, "{body}");
    auth.up().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = http_get(&addr, "/ready").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warm_fetches = auth.jwks_fetches();

    let kong = Kong::new(server.socket());
    let keys =
        kong.plugin("ghasi-api-key-lookup", json!({"auth_service_url": auth.url(), "service_token": SERVICE_TOKEN}));
    let jwt = kong.plugin("ghasi-jwt", json!({"jwks_url": auth.jwks_url(), "issuer": auth.issuer()}));
    let mut used: Vec<String> = vec![SERVICE_TOKEN.into()];
    let mut run = |plugin, header: &'static str, value: String| {
        used.push(value.clone());
        let kong = kong.clone();
        async move {
            let mut req = Request::new("GET", "/v1/messages").with_header(header, value);
            kong.run_event(plugin, "access", &mut req).await.unwrap()
        }
    };
    for _ in 0..3 {
        assert!(run(&keys, "x-api-key", KEY_ALICE.into()).await.continues());
    }
    assert_eq!(run(&keys, "x-api-key", KEY_UNKNOWN.into()).await.exit.unwrap().status, 401);
    assert_eq!(run(&keys, "x-api-key", KEY_REVOKED.into()).await.exit.unwrap().status, 401);
    let token = auth.mint(&TokenSpec::for_user(USER_ALICE));
    for _ in 0..2 {
        assert!(run(&jwt, "authorization", format!("Bearer {token}")).await.continues(), "valid token");
    }
    let expired = auth.mint(&TokenSpec::for_user(USER_ALICE).ttl_secs(-3600));
    assert_eq!(run(&jwt, "authorization", format!("Bearer {expired}")).await.exit.unwrap().status, 401);
    assert_eq!(auth.jwks_fetches(), warm_fetches, "the warmed set served the tokens");

    let (status, metrics) = http_get(&addr, "/metrics").await;
    assert_eq!(status, 200);
    let route = keys.route_id().map(|r| format!(r#"route="{r}""#));
    let mut labels = vec![r#"plugin="ghasi-api-key-lookup""#, r#"code="ok""#];
    if let Some(r) = &route {
        labels.push(r);
    }
    assert_eq!(sample(&metrics, "ghasi_decisions_total", &labels), Some(3.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "ghasi_decisions_total",
            &[r#"plugin="ghasi-api-key-lookup""#, r#"code="credential_invalid""#]
        ),
        Some(2.0)
    );
    assert_eq!(sample(&metrics, "ghasi_decisions_total", &[r#"plugin="ghasi-jwt""#, r#"code="ok""#]), Some(2.0));
    assert_eq!(
        sample(&metrics, "ghasi_decisions_total", &[r#"plugin="ghasi-jwt""#, r#"code="token_expired""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "ghasi_cache_requests_total", &[r#"plugin="ghasi-api-key-lookup""#, r#"result="hit""#]),
        Some(2.0)
    );
    assert!(
        sample(&metrics, "ghasi_cache_requests_total", &[r#"plugin="ghasi-api-key-lookup""#, r#"result="miss""#])
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        sample(&metrics, "ghasi_upstream_request_duration_seconds_count", &[r#"target="auth_service""#]),
        Some(3.0),
        "one lookup per distinct key"
    );
    assert!(
        sample(&metrics, "ghasi_jwks_refreshes_total", &[r#"reason="initial""#, r#"result="ok""#]).unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sum(&metrics, "ghasi_upstream_failures_total", &[r#"target="jwks""#]).unwrap_or(0.0) >= 1.0,
        "the warm-up met the outage"
    );
    assert_eq!(sample(&metrics, "ghasi_jwks_state", &[r#"state="fresh""#]), Some(1.0));

    let (_, health) = http_get(&addr, "/health").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["jwks"][auth.jwks_url()]["state"], "fresh", "{health}");
    assert_eq!(health["auth_services"][auth.url()]["reachable"], true, "{health}");

    let logs = server.logs();
    assert!(logs.contains("event done"), "one line per event");
    for secret in &used {
        let bare = secret.trim_start_matches("Bearer ");
        assert!(!logs.contains(bare), "a credential leaked into the log");
        assert!(!metrics.contains(bare), "a credential leaked into the metrics");
        assert!(!health.to_string().contains(bare));
    }
}
