//! Every fault switch, the counters, and down/up on the same port.

mod common;

use std::time::{Duration, Instant};

use common::{client, lookup, service};
use dev_auth_service::{fixtures::*, Fault, Target};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn jwks(svc: &dev_auth_service::DevAuthService) -> reqwest::Response {
    client().get(svc.jwks_url()).send().await.unwrap()
}

#[tokio::test]
async fn slow_delays_then_answers_normally() {
    let svc = service().await;
    let delay = Duration::from_millis(800);
    svc.set_fault(Target::Lookup, Fault::Slow(delay));
    let start = Instant::now();
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
    assert!(start.elapsed() >= delay);
    // A client with a shorter timeout times out.
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let err = quick
        .post(svc.lookup_url())
        .bearer_auth(SERVICE_TOKEN)
        .json(&serde_json::json!({"api_key": KEY_ALICE}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // JWKS is unaffected.
    let start = Instant::now();
    assert_eq!(jwks(&svc).await.status(), 200);
    assert!(start.elapsed() < delay);
}

#[tokio::test]
async fn status_fault_per_target() {
    let svc = service().await;
    svc.set_fault(Target::Lookup, Fault::Status(503));
    let resp = lookup(&svc, KEY_ALICE).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("date"));
    assert_eq!(jwks(&svc).await.status(), 200);
    svc.set_fault(Target::Both, Fault::Status(502));
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 502);
    assert_eq!(jwks(&svc).await.status(), 502);
    svc.set_fault(Target::Jwks, Fault::Status(500));
    assert_eq!(jwks(&svc).await.status(), 500);
    svc.clear_faults();
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
    assert_eq!(jwks(&svc).await.status(), 200);
    assert_eq!((svc.lookups(), svc.jwks_fetches()), (3, 4));
}

#[tokio::test]
async fn garbage_is_200_and_not_json() {
    let svc = service().await;
    svc.set_fault(Target::Both, Fault::Garbage);
    for resp in [lookup(&svc, KEY_ALICE).await, jwks(&svc).await] {
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("date"));
        let text = resp.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
}

#[tokio::test]
async fn empty_jwks() {
    let svc = service().await;
    svc.set_fault(Target::Jwks, Fault::EmptyJwks);
    let doc: Value = jwks(&svc).await.json().await.unwrap();
    assert_eq!(doc, serde_json::json!({"keys": []}));
    svc.set_fault(Target::Lookup, Fault::EmptyJwks);
    let resp = lookup(&svc, KEY_ALICE).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({}));
}

/// Sends one raw HTTP/1.1 request and reads until the server closes.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("server neither answered nor closed")?;
    Ok(out)
}

#[tokio::test]
async fn refuse_closes_without_a_response() {
    let svc = service().await;
    svc.set_fault(Target::Lookup, Fault::Refuse);
    let body = format!(r#"{{"api_key":"{KEY_ALICE}"}}"#);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        svc.lookup_path(),
        body.len()
    );
    match raw_request(svc.addr(), &req).await {
        Ok(bytes) => assert!(bytes.is_empty(), "got a response: {}", String::from_utf8_lossy(&bytes)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(svc.lookups(), 1, "refused requests are counted");
    // reqwest sees an error that is not a connect error (the connection was accepted).
    let err = client().post(svc.lookup_url()).bearer_auth(SERVICE_TOKEN).body(body.clone()).send().await.unwrap_err();
    assert!(!err.is_connect() && !err.is_timeout(), "{err:?}");
    // JWKS still answers on the same server.
    assert_eq!(jwks(&svc).await.status(), 200);
    svc.set_fault(Target::Jwks, Fault::Refuse);
    let req = "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(raw_request(svc.addr(), req).await.map(|b| b.is_empty()).unwrap_or(true));
    svc.clear_faults();
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
}

#[tokio::test]
async fn down_refuses_connections_and_up_listens_on_the_same_port() {
    let svc = service().await;
    let addr = svc.addr();
    let pooled = client();
    let send = |c: &reqwest::Client| c.get(svc.jwks_url()).send();
    assert_eq!(send(&pooled).await.unwrap().status(), 200); // leaves a keep-alive connection
    assert!(svc.is_up().await);

    svc.down().await;
    assert!(!svc.is_up().await);
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = send(&pooled).await.unwrap_err();
    assert!(err.is_connect(), "pooled client must see the outage: {err:?}");
    svc.down().await; // idempotent

    svc.up().await;
    assert_eq!(svc.addr(), addr);
    assert!(svc.is_up().await);
    assert_eq!(send(&pooled).await.unwrap().status(), 200);
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
    svc.up().await; // idempotent

    // Several cycles in a row still bind the same port.
    for _ in 0..3 {
        svc.down().await;
        assert!(send(&client()).await.is_err());
        svc.up().await;
        assert_eq!(send(&client()).await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn down_cuts_requests_in_flight() {
    let svc = service().await;
    svc.set_fault(Target::Lookup, Fault::Slow(Duration::from_secs(30)));
    let url = svc.lookup_url();
    let pending = tokio::spawn(async move {
        client().post(url).bearer_auth(SERVICE_TOKEN).json(&serde_json::json!({"api_key": KEY_ALICE})).send().await
    });
    while svc.lookups() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    svc.down().await;
    let res = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("in-flight request hung").unwrap();
    assert!(res.is_err(), "in-flight request should fail when the service goes down");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn counters_count_every_arrival_and_reset() {
    let svc = service().await;
    lookup(&svc, KEY_ALICE).await;
    lookup(&svc, KEY_UNKNOWN).await;
    client().post(svc.lookup_url()).body("{").send().await.unwrap(); // 401, still counted
    jwks(&svc).await;
    assert_eq!((svc.lookups(), svc.jwks_fetches()), (3, 1));
    svc.reset_counters();
    assert_eq!((svc.lookups(), svc.jwks_fetches()), (0, 0));
    svc.set_fault(Target::Jwks, Fault::Status(500));
    jwks(&svc).await;
    assert_eq!(svc.jwks_fetches(), 1);
}

#[tokio::test]
async fn dropping_the_service_closes_its_port() {
    let svc = service().await;
    let addr = svc.addr();
    drop(svc);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
