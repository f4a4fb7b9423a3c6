//! The HTTP control surface (`/dev/…`, `/_dev/…`) the binary offers to non-Rust tests and curl.

mod common;

use std::time::Duration;

use common::{client, fetch_jwks, lookup, service, verify};
use dev_auth_service::{fixtures::*, Fault, Target, DEFAULT_ISSUER};
use serde_json::{json, Value};

async fn post(svc: &dev_auth_service::DevAuthService, path: &str, body: Value) -> reqwest::Response {
    client().post(format!("{}{path}", svc.url())).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn dev_tokens_mints_verifiable_tokens() {
    let svc = service().await;
    let jwks = fetch_jwks(&svc).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let resp = post(
            &svc,
            "/dev/tokens",
            json!({"user_id": USER_BOB, "alg": alg, "ttl_secs": 60, "claims": {"aud": "portal"}}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let token = body["token"].as_str().unwrap();
        assert_eq!(body["alg"], alg);
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.kid.as_deref(), body["kid"].as_str());
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&["portal"]);
        v.set_issuer(&[DEFAULT_ISSUER]);
        let jwk = jwks.find(&header.kid.unwrap()).unwrap();
        let data =
            jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v).unwrap();
        assert_eq!(data.claims["sub"], USER_BOB);
        assert_eq!(data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap(), 60);
    }
    // Default alg is RS256; an empty body is a claims-less token.
    let body: Value = post(&svc, "/dev/tokens", json!({"user_id": USER_ALICE})).await.json().await.unwrap();
    assert_eq!(body["alg"], "RS256");
    assert!(verify(body["token"].as_str().unwrap(), &jwks, DEFAULT_ISSUER).is_ok());
    for bad in [json!({"user_id": "usr_nobody"}), json!({"alg": "HS256"}), json!({"ttl": 5})] {
        assert_eq!(post(&svc, "/dev/tokens", bad.clone()).await.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn dev_rotate() {
    let svc = service().await;
    let old = svc.current_kid(Alg::EdDSA);
    let body: Value = post(&svc, "/dev/rotate", json!({"alg": "EdDSA", "keep_old": false})).await.json().await.unwrap();
    let new = body["kid"].as_str().unwrap();
    assert_eq!(svc.current_kid(Alg::EdDSA), new);
    let kids: Vec<&str> = body["jwks_kids"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(kids.contains(&new) && !kids.contains(&old.as_str()));
    assert_eq!(fetch_jwks(&svc).await.keys.len(), 3);
}

use dev_auth_service::Alg;

#[tokio::test]
async fn fault_switches_over_http() {
    let svc = service().await;
    let resp = post(&svc, "/_dev/faults", json!({"target": "lookup", "fault": "status", "status": 503})).await;
    assert_eq!(resp.status(), 200);
    let state: Value = resp.json().await.unwrap();
    assert_eq!(state["faults"]["lookup"], json!({"fault": "status", "status": 503}));
    assert_eq!(svc.fault(Target::Lookup), Fault::Status(503));
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 503);

    post(&svc, "/_dev/faults", json!({"target": "both", "fault": "slow", "ms": 250})).await;
    assert_eq!(svc.fault(Target::Jwks), Fault::Slow(Duration::from_millis(250)));
    post(&svc, "/_dev/faults", json!({"target": "jwks", "fault": "empty_jwks"})).await;
    post(&svc, "/_dev/faults", json!({"target": "lookup", "fault": "refuse"})).await;
    assert_eq!(svc.fault(Target::Lookup), Fault::Refuse);
    assert_eq!(post(&svc, "/_dev/faults", json!({"target": "lookup", "fault": "down"})).await.status(), 400);
    assert_eq!(post(&svc, "/_dev/faults", json!({"target": "x", "fault": "normal"})).await.status(), 400);
    assert_eq!(
        post(&svc, "/_dev/faults", json!({"target": "jwks", "fault": "status", "status": 42})).await.status(),
        400
    );

    let state: Value = post(&svc, "/_dev/reset", json!({})).await.json().await.unwrap();
    assert_eq!(state["faults"]["lookup"], json!({"fault": "normal"}));
    assert_eq!(state["counters"], json!({"lookups": 0, "jwks_fetches": 0}));
    assert_eq!(svc.fault(Target::Jwks), Fault::Normal);
}

#[tokio::test]
async fn counters_over_http() {
    let svc = service().await;
    lookup(&svc, KEY_ALICE).await;
    let counters: Value =
        client().get(format!("{}/_dev/counters", svc.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(counters, json!({"lookups": 1, "jwks_fetches": 0}));
    let counters: Value = post(&svc, "/_dev/counters/reset", json!(null)).await.json().await.unwrap();
    assert_eq!(counters["lookups"], 0);
    assert_eq!(svc.lookups(), 0);
}

/// Polls `is_up()` until it equals `want` (5 s at most).
async fn wait_up(svc: &dev_auth_service::DevAuthService, want: bool) -> bool {
    for _ in 0..250 {
        if svc.is_up().await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn timed_down_over_http_answers_first_then_comes_back() {
    let svc = service().await;
    let start = std::time::Instant::now();
    let resp = post(&svc, "/_dev/down", json!({"for_ms": 1000})).await;
    assert_eq!(resp.status(), 202, "the request that takes the service down still gets its answer");
    assert!(wait_up(&svc, false).await);
    assert!(tokio::net::TcpStream::connect(svc.addr()).await.is_err());
    assert!(wait_up(&svc, true).await);
    assert!(start.elapsed() >= Duration::from_millis(1000), "came back too early");
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
}

#[tokio::test]
async fn data_changes_over_http() {
    let svc = service().await;
    let key = json!({"key": "k_http_1", "key_id": "kid_http_1", "account_id": ACCOUNT_GLOBEX, "user_id": USER_DAVE,
                     "expires_at": "2031-02-03T04:05:06Z"});
    assert_eq!(post(&svc, "/_dev/api-keys", key).await.status(), 204);
    let body: Value = lookup(&svc, "k_http_1").await.json().await.unwrap();
    assert_eq!(body["expires_at"], "2031-02-03T04:05:06Z");
    assert_eq!(body["user_id"], USER_DAVE);
    assert_eq!(post(&svc, "/_dev/api-keys/revoke", json!({"key": "k_http_1"})).await.status(), 204);
    assert_eq!(lookup(&svc, "k_http_1").await.status(), 403);
    assert_eq!(post(&svc, "/_dev/api-keys/revoke", json!({"key": "k_http_1", "revoked": false})).await.status(), 204);
    assert_eq!(lookup(&svc, "k_http_1").await.status(), 200);
    assert_eq!(post(&svc, "/_dev/api-keys/revoke", json!({"key": "nope"})).await.status(), 404);
    assert_eq!(post(&svc, "/_dev/accounts", json!({"id": ACCOUNT_GLOBEX, "status": "suspended"})).await.status(), 204);
    assert_eq!(lookup(&svc, "k_http_1").await.status(), 403);
    let user = json!({"id": "usr_http", "account_id": "acc_missing", "email": "x@y.test"});
    assert_eq!(post(&svc, "/_dev/users", user).await.status(), 400);
}

#[tokio::test]
async fn control_router_serves_only_control_routes() {
    let svc = service().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let router = svc.control_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    svc.down().await;
    let resp = client().post(format!("{admin}/_dev/up")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert!(wait_up(&svc, true).await);
    assert_eq!(client().get(format!("{admin}/.well-known/jwks.json")).send().await.unwrap().status(), 404);
}
