//! `ghasi-jwt` end to end: the real binary, driven through the Kong emulator, against the dev
//! auth-service's JWKS with its fault switches. Lifetimes are crossed by moving the server's
//! clock over the socket (`plugin.GhasiTestAdvanceClock`), never by sleeping; the only waits
//! are for a background refresh to have reached the auth-service (a condition, not a time).
//!
//! How the tests observe the server: PDK calls and their count from the emulator; JWKS
//! fetches from the auth-service's counter; signature verifications from the server's debug
//! log (`signature checked`, one line per verification).

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use dev_auth_service::{fixtures, forge, Alg, DevAuthService, DevConfig, Fault, Target, TokenSpec};
use kong_emulator::{EventOutcome, Kong, Plugin, Request, Value};
use serde_json::json;

const GET_HEADER: &str = "kong.request.get_header";
const GET_HEADERS: &str = "kong.request.get_headers";
const SET_HEADERS: &str = "kong.service.request.set_headers";
const CTX_SET: &str = "kong.ctx.shared.set";
const EXIT: &str = "kong.response.exit";
const AUTHENTICATE: &str = "kong.client.authenticate";
/// Ours, and the consumer/credential headers Kong's own auth plugins set (upstreams written for
/// Kong trust them): no client-sent value of any may reach the upstream.
const RESERVED: [&str; 11] = [
    "x-account-id",
    "x-user-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-groups",
    "x-anonymous-consumer",
    "x-authenticated-groups",
    "x-authenticated-scope",
    "x-authenticated-userid",
];

fn real_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// One server process, one auth-service, one emulated Kong worker.
struct Env {
    server: Server,
    auth: DevAuthService,
    kong: Kong,
    /// Seconds the server's clock is ahead of the real one.
    offset: AtomicI64,
    /// Every token handed to the server, to prove none reaches its log.
    tokens: Mutex<Vec<String>>,
}

impl Env {
    async fn start() -> Env {
        let server = Server::start();
        let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
        let kong = Kong::new(server.socket());
        Env { server, auth, kong, offset: AtomicI64::new(0), tokens: Mutex::new(Vec::new()) }
    }

    /// A `ghasi-jwt` plugin on its own route: the dev service's JWKS and issuer plus `extra`.
    fn plugin(&self, extra: serde_json::Value) -> Plugin {
        let mut config = json!({"jwks_url": self.auth.jwks_url(), "issuer": self.auth.issuer()});
        for (k, v) in extra.as_object().expect("extra config is an object") {
            config[k] = v.clone();
        }
        self.kong.plugin("ghasi-jwt", config)
    }

    async fn run(&self, plugin: &Plugin, mut req: Request) -> (EventOutcome, Request) {
        let out = self.kong.run_event(plugin, "access", &mut req).await.expect("the event runs");
        (out, req)
    }

    async fn run_bearer(&self, plugin: &Plugin, token: &str) -> (EventOutcome, Request) {
        self.run(plugin, bearer(token)).await
    }

    /// Moves the server's clock forward.
    async fn advance(&self, secs: u64) {
        let param = Value::Map(vec![(Value::from("Seconds"), Value::from(secs))]);
        let now = self.kong.call("ghasi-jwt", "plugin.GhasiTestAdvanceClock", &param).await.expect("advance clock");
        let server_now = now.as_u64().expect("the RPC answers the server's unix time") as i64;
        self.offset.store(server_now - real_now(), Ordering::SeqCst);
    }

    /// The server's unix time.
    fn now(&self) -> i64 {
        real_now() + self.offset.load(Ordering::SeqCst)
    }

    /// `spec` with `iat`/`nbf`/`exp` on the server's clock (unless the spec sets them).
    fn timed(&self, mut spec: TokenSpec, ttl: i64) -> TokenSpec {
        let now = self.now();
        for (claim, value) in [("iat", now), ("nbf", now), ("exp", now + ttl)] {
            spec.claims.entry(claim).or_insert(json!(value));
        }
        spec
    }

    fn record(&self, token: String) -> String {
        self.tokens.lock().unwrap().push(token.clone());
        token
    }

    /// A correctly signed token valid for an hour on the server's clock.
    fn token(&self, spec: TokenSpec) -> String {
        let spec = self.timed(spec, 3600);
        self.record(self.auth.mint(&spec))
    }

    fn alice(&self) -> TokenSpec {
        TokenSpec::for_user(fixtures::USER_ALICE)
    }

    fn fetches(&self) -> u64 {
        self.auth.jwks_fetches()
    }

    /// Waits until the auth-service has seen `n` JWKS requests (a background refresh).
    async fn wait_fetches(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.fetches() < n {
            assert!(Instant::now() < deadline, "JWKS fetch #{n} never happened (saw {})", self.fetches());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The fetch was answered; give the server the moment it needs to swap the set in.
        self.settle().await;
    }

    /// Lets a background refresh that already reached the auth-service finish on the server:
    /// waits for the server's own log line about it.
    async fn settle(&self) {
        let want = self.fetches() as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.server.logs();
            let done = logs.matches("JWKS fetched").count() + logs.matches("JWKS fetch failed").count();
            if done >= want {
                return;
            }
            assert!(Instant::now() < deadline, "the server never finished fetch #{want}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn signature_checks(&self) -> usize {
        self.server.logs().matches("signature checked").count()
    }

    fn assert_no_token_logged(&self) {
        let logs = self.server.logs();
        for token in self.tokens.lock().unwrap().iter() {
            for part in token.split('.').filter(|p| p.len() > 16) {
                assert!(!logs.contains(part), "a token segment appears in the server log");
            }
        }
    }
}

/// A token with any header, the spec's claims and a junk signature (never verifiable).
fn unsigned(header: serde_json::Value, spec: &TokenSpec) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), json!(dev_auth_service::DEFAULT_ISSUER));
    claims.insert("sub".into(), json!(fixtures::USER_ALICE));
    claims.insert("account_id".into(), json!(fixtures::ACCOUNT_ACME));
    claims.extend(spec.claims.clone());
    let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{}", enc(&header), enc(&serde_json::Value::Object(claims)), URL_SAFE_NO_PAD.encode([7u8; 64]))
}

fn bearer(token: &str) -> Request {
    Request::new("GET", "/v1/messages").with_header("Authorization", format!("Bearer {token}"))
}

fn calls(out: &EventOutcome) -> Vec<&str> {
    out.pdk_calls.iter().map(String::as_str).collect()
}

/// Let through with exactly the three PDK calls of docs/design.md#round-trips-are-the-cost.
#[track_caller]
fn assert_admitted(out: &EventOutcome) {
    assert!(out.continues(), "refused: {:?}", out.exit.as_ref().map(|e| e.body_text()));
    assert_eq!(calls(out), [GET_HEADER, SET_HEADERS, CTX_SET]);
}

/// Refused with `status`/`code`, problem+json, and exactly two PDK calls (read, exit).
#[track_caller]
fn assert_denied(out: &EventOutcome, status: u16, code: &str) {
    let exit = out.exit.as_ref().unwrap_or_else(|| panic!("expected {status} {code}, the request went through"));
    let body = exit.body_json().expect("a JSON body");
    assert_eq!((exit.status, body["code"].as_str()), (status, Some(code)), "{}", exit.body_text());
    assert_eq!(exit.header("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(out.pdk_calls.len(), 2, "read + exit: {:?}", out.pdk_calls);
    assert_eq!(out.pdk_calls.last().map(String::as_str), Some(EXIT));
    if status == 401 {
        let challenge = exit.header("www-authenticate").expect("RFC 6750 challenge");
        assert!(challenge.starts_with("Bearer realm=\"ghasi\""), "{challenge}");
        if code != "credential_missing" && code != "credential_ambiguous" {
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        }
    }
}

fn groups(req: &Request) -> Vec<String> {
    let v = req.ctx_shared_get("authenticated_groups").expect("authenticated_groups published");
    v.as_array().expect("an array").iter().map(|g| g.as_str().expect("a string").to_owned()).collect()
}

fn upstream(req: &Request, name: &str) -> Option<String> {
    req.upstream_header(name)
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_pass_with_the_identity_contract() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    for alg in [Alg::RS256, Alg::ES256, Alg::EdDSA] {
        let minted = env.auth.try_mint(&env.timed(env.alice().alg(alg), 3600)).unwrap();
        let token = env.record(minted.token.clone());
        let req = bearer(&token)
            .with_header("X-Account-Id", "acc_spoofed")
            .with_header("X-User-Id", "usr_spoofed")
            .with_header("X-Consumer-Username", "spoofed")
            .with_header("X-Credential-Identifier", "spoofed");
        let (out, req) = env.run(&plugin, req).await;
        assert_admitted(&out);
        assert_eq!(upstream(&req, "x-account-id").as_deref(), Some(fixtures::ACCOUNT_ACME), "{alg}");
        assert_eq!(upstream(&req, "x-user-id").as_deref(), Some(fixtures::USER_ALICE));
        assert_eq!(upstream(&req, "x-consumer-username").as_deref(), Some(fixtures::EMAIL_ALICE));
        assert_eq!(upstream(&req, "x-credential-identifier").as_deref(), minted.claims["jti"].as_str());
        for name in &RESERVED[..4] {
            assert_eq!(req.upstream_headers().get_all(name).len(), 1, "{name}: the client's value is replaced");
        }
        assert_eq!(groups(&req), ["ghasi-authenticated", "admin", "billing"]);
        assert!(req.consumer().is_none(), "set_kong_consumer is off by default");
        assert!(upstream(&req, "authorization").is_some(), "hide_credentials is off by default");
    }
    assert_eq!(env.fetches(), 1, "one JWKS fetch for all three algorithms");

    // No email: the username falls back to account_id. No jti: a client-sent identifier is removed.
    let token = env.token(env.alice().without("email").without("jti"));
    let (out, req) = env.run(&plugin, bearer(&token).with_header("X-Credential-Identifier", "spoofed")).await;
    assert_admitted(&out);
    assert_eq!(upstream(&req, "x-consumer-username").as_deref(), Some(fixtures::ACCOUNT_ACME));
    assert_eq!(upstream(&req, "x-credential-identifier"), None);

    // consumer_username_claim names another claim.
    let custom = env.plugin(json!({"consumer_username_claim": "nickname"}));
    let token = env.token(env.alice().claim("nickname", "ali"));
    let (out, req) = env.run(&custom, bearer(&token)).await;
    assert_admitted(&out);
    assert_eq!(upstream(&req, "x-consumer-username").as_deref(), Some("ali"));
    env.assert_no_token_logged();
}

#[tokio::test]
async fn first_request_fetches_the_jwks_within_the_three_pdk_calls() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let token = env.token(env.alice());
    assert_eq!(env.fetches(), 0, "fetched at first use, not at StartInstance");
    let (out, _) = env.run_bearer(&plugin, &token).await;
    assert_admitted(&out);
    assert_eq!(env.fetches(), 1);
    // A denial that needed the JWKS is still two calls.
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let bad = env.record(env.auth.forge().wrong_key(&env.timed(env.alice(), 3600)));
    let (out, _) = env.run_bearer(&plugin, &bad).await;
    assert_denied(&out, 401, "credential_invalid");
    assert_eq!(env.fetches(), 1);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn set_kong_consumer_authenticates_a_virtual_consumer() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"set_kong_consumer": true}));
    let token = env.token(env.alice());
    let (out, req) = env.run_bearer(&plugin, &token).await;
    assert!(out.continues());
    assert_eq!(calls(&out), [GET_HEADER, SET_HEADERS, CTX_SET, AUTHENTICATE]);
    let consumer = req.consumer().expect("a consumer");
    let field = |k: &str| {
        consumer
            .as_map()
            .unwrap()
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.as_str().unwrap().to_owned())
    };
    assert_eq!(field("id").as_deref(), Some(fixtures::ACCOUNT_ACME));
    assert_eq!(field("username").as_deref(), Some(fixtures::EMAIL_ALICE));
    assert!(req.credential().is_none(), "no credential, on purpose (docs/design.md#identity-contract)");
}

#[tokio::test]
async fn required_roles_any_and_all() {
    let env = Env::start().await;
    let alice = env.token(env.alice()); // admin, billing
    let bob = env.token(TokenSpec::for_user(fixtures::USER_BOB)); // viewer
    let dave = env.token(TokenSpec::for_user(fixtures::USER_DAVE)); // no roles
    let any = env.plugin(json!({"required_roles": ["admin", "viewer"]}));
    let all = env.plugin(json!({"required_roles": ["admin", "billing"], "roles_match": "all"}));
    let all_missing = env.plugin(json!({"required_roles": ["admin", "owner"], "roles_match": "all"}));

    assert_admitted(&env.run_bearer(&any, &alice).await.0);
    assert_admitted(&env.run_bearer(&any, &bob).await.0);
    let (out, _) = env.run_bearer(&any, &dave).await;
    assert_denied(&out, 403, "insufficient_role");
    let challenge = out.exit.as_ref().unwrap().header("www-authenticate").unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");

    assert_admitted(&env.run_bearer(&all, &alice).await.0);
    assert_denied(&env.run_bearer(&all, &bob).await.0, 403, "insufficient_role");
    assert_denied(&env.run_bearer(&all_missing, &alice).await.0, 403, "insufficient_role");

    // roles_claim names the claim.
    let custom = env.plugin(json!({"roles_claim": "perms", "required_roles": ["write"]}));
    let with_perms = env.token(TokenSpec::for_user(fixtures::USER_DAVE).claim("perms", json!(["write"])));
    let (out, req) = env.run_bearer(&custom, &with_perms).await;
    assert_admitted(&out);
    assert_eq!(groups(&req), ["ghasi-authenticated", "write"]);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn forged_and_broken_tokens_are_refused_with_the_design_codes() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let spec = env.timed(env.alice(), 3600);
    let forge = env.auth.forge();
    // Load the JWKS first so that every case below is about the token alone.
    assert_admitted(&env.run_bearer(&plugin, &env.token(env.alice())).await.0);

    let mut cases: Vec<(&str, String, u16, &str)> = vec![
        ("alg none", forge.alg_none(&spec), 401, "token_invalid"),
        ("alg None", forge.alg_none_spelled(&spec, "None"), 401, "token_invalid"),
        ("alg NONE", forge.alg_none_spelled(&spec, "NONE"), 401, "token_invalid"),
        ("HS256 keyed with the RSA public key PEM", forge.hs256_with_public_key_pem(&spec), 401, "token_invalid"),
        ("missing kid", forge.without_kid(&spec), 401, "token_invalid"),
        ("bad signature", forge.wrong_key(&spec), 401, "credential_invalid"),
        ("bad ES256 signature", forge.wrong_key(&spec.clone().alg(Alg::ES256)), 401, "credential_invalid"),
        ("tampered payload", forge.tampered_payload(&spec), 401, "credential_invalid"),
        ("ES256 header on the RSA kid", forge.alg_kid_mismatch(&spec), 401, "credential_invalid"),
        ("expired beyond the leeway", env.auth.mint(&env.timed(env.alice(), -60)), 401, "token_expired"),
        (
            "not yet valid",
            env.auth.mint(&env.timed(env.alice().claim("nbf", env.now() + 120), 3600)),
            401,
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            env.auth.mint(&env.timed(env.alice().claim("iat", env.now() + 120), 3600)),
            401,
            "token_not_yet_valid",
        ),
        ("wrong iss", env.auth.mint(&env.timed(env.alice().iss("https://evil.example"), 3600)), 401, "token_invalid"),
        ("no iss", env.auth.mint(&env.timed(env.alice().without("iss"), 3600)), 401, "token_invalid"),
        ("no exp", env.auth.mint(&env.timed(env.alice().without("exp"), 3600)), 401, "token_invalid"),
        ("missing sub", env.auth.mint(&env.timed(env.alice().without("sub"), 3600)), 401, "token_invalid"),
        (
            "missing account_id",
            env.auth.mint(&env.timed(env.alice().without("account_id"), 3600)),
            401,
            "token_invalid",
        ),
        (
            "account_id not a string",
            env.auth.mint(&env.timed(env.alice().claim("account_id", 7), 3600)),
            401,
            "token_invalid",
        ),
        (
            "roles not an array",
            env.auth.mint(&env.timed(env.alice().claim("roles", "admin"), 3600)),
            401,
            "token_invalid",
        ),
        (
            "lifetime over max_token_lifetime",
            env.auth.mint(&env.timed(env.alice(), 86_400 + 3600)),
            401,
            "token_invalid",
        ),
        ("empty bearer", String::new(), 401, "token_invalid"),
    ];
    for (name, token, _) in forge::malformed().into_iter().map(|(n, t)| (n, t, ())) {
        cases.push((name, token, 401, "token_invalid"));
    }
    for (name, token, status, code) in &cases {
        let token = env.record(token.clone());
        let (out, req) = env.run_bearer(&plugin, &token).await;
        assert!(out.exit.is_some(), "{name}: let through");
        assert_denied(&out, *status, code);
        assert!(req.ctx_shared_get("authenticated_groups").is_none(), "{name}");
    }
    // Within the leeway (30 s) both ends still pass.
    assert_admitted(&env.run_bearer(&plugin, &env.record(env.auth.mint(&env.timed(env.alice(), -10)))).await.0);
    let soon = env.auth.mint(&env.timed(env.alice().claim("nbf", env.now() + 10), 3600));
    assert_admitted(&env.run_bearer(&plugin, &env.record(soon)).await.0);
    // Without leeway, 10 s late is expired and 10 s early is not yet valid.
    let strict = env.plugin(json!({"leeway": 0}));
    let late = env.record(env.auth.mint(&env.timed(env.alice(), -10)));
    assert_denied(&env.run_bearer(&strict, &late).await.0, 401, "token_expired");
    let early = env.record(env.auth.mint(&env.timed(env.alice().claim("nbf", env.now() + 10), 3600)));
    assert_denied(&env.run_bearer(&strict, &early).await.0, 401, "token_not_yet_valid");

    // A disallowed algorithm: this route accepts RS256 only.
    let rs_only = env.plugin(json!({"algorithms": ["RS256"]}));
    let es = env.token(env.alice().alg(Alg::ES256));
    assert_denied(&env.run_bearer(&rs_only, &es).await.0, 401, "token_invalid");
    assert_admitted(&env.run_bearer(&rs_only, &env.token(env.alice())).await.0);

    // Audiences, when set, must match.
    let aud = env.plugin(json!({"audiences": ["api://portal"]}));
    assert_admitted(&env.run_bearer(&aud, &env.token(env.alice().aud("api://portal"))).await.0);
    assert_admitted(&env.run_bearer(&aud, &env.token(env.alice().aud(json!(["x", "api://portal"])))).await.0);
    assert_denied(&env.run_bearer(&aud, &env.token(env.alice().aud("api://other"))).await.0, 401, "token_invalid");
    assert_denied(&env.run_bearer(&aud, &env.token(env.alice())).await.0, 401, "token_invalid");
    // max_token_lifetime is configurable (0 disables it).
    let long = env.record(env.auth.mint(&env.timed(env.alice(), 7200)));
    assert_denied(
        &env.run_bearer(&env.plugin(json!({"max_token_lifetime": 3600})), &long).await.0,
        401,
        "token_invalid",
    );
    let longer = env.record(env.auth.mint(&env.timed(env.alice(), 86_400 * 3)));
    assert_admitted(&env.run_bearer(&env.plugin(json!({"max_token_lifetime": 0})), &longer).await.0);

    assert_eq!(env.fetches(), 1, "none of these needed another JWKS fetch");
    env.assert_no_token_logged();
}

#[tokio::test]
async fn missing_and_ambiguous_credentials() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let (out, _) = env.run(&plugin, Request::new("GET", "/")).await;
    assert_denied(&out, 401, "credential_missing");
    assert_eq!(out.exit.as_ref().unwrap().header("www-authenticate").as_deref(), Some("Bearer realm=\"ghasi\""));
    let (out, _) = env.run(&plugin, Request::new("GET", "/").with_header("Authorization", "Basic dTpw")).await;
    assert_denied(&out, 401, "credential_missing");

    let a = env.token(env.alice());
    let b = env.token(TokenSpec::for_user(fixtures::USER_BOB));
    // Two Authorization lines never reach a plugin (nginx answers 400 to a repeated unique
    // header); several tokens folded into one value do.
    let folded = Request::new("GET", "/").with_header("Authorization", format!("Bearer {a}, Bearer {b}"));
    assert_denied(&env.run(&plugin, folded).await.0, 401, "credential_ambiguous");
    // The same token twice is not ambiguous.
    let same = Request::new("GET", "/").with_header("Authorization", format!("Bearer {a}, Bearer {a}"));
    assert_admitted(&env.run(&plugin, same).await.0);
    // get_headers mode (reject) sees the lines separately: still ambiguous.
    let reject = env.plugin(json!({"on_spoofed_identity_header": "reject"}));
    let two_lines = Request::new("GET", "/")
        .with_header("Authorization", format!("Bearer {a}"))
        .with_header("Authorization", format!("Bearer {b}"));
    let (out, _) = env.run(&reject, two_lines).await;
    assert_denied(&out, 401, "credential_ambiguous");
    assert_eq!(calls(&out), [GET_HEADERS, EXIT]);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn credential_optional_lets_anonymous_requests_through_without_identity_headers() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"credential_optional": true}));
    let mut req = Request::new("GET", "/");
    for name in RESERVED {
        req = req.with_header(name, "spoofed");
    }
    let (out, req) = env.run(&plugin, req).await;
    assert!(out.continues());
    assert_eq!(calls(&out), [GET_HEADER, SET_HEADERS]);
    for name in RESERVED {
        assert!(req.upstream_headers().get_all(name).is_empty(), "{name} reached the upstream");
    }
    assert!(req.ctx_shared_get("authenticated_groups").is_none(), "anonymous is not authenticated");
    // A presented but bad token is still refused; a good one still authenticates.
    let bad = env.record(env.auth.mint(&env.timed(env.alice(), -100)));
    assert_denied(&env.run_bearer(&plugin, &bad).await.0, 401, "token_expired");
    assert_admitted(&env.run_bearer(&plugin, &env.token(env.alice())).await.0);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn a_valid_token_never_carries_client_sent_consumer_headers_upstream() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"extra_reserved_headers": ["X-Tenant-Id"]}));
    let mut req = bearer(&env.token(env.alice())).with_header("X-Tenant-Id", "spoofed");
    for name in RESERVED {
        req = req.with_header(name, "spoofed");
    }
    let (out, req) = env.run(&plugin, req).await;
    assert_admitted(&out); // still the one set_headers
    assert_eq!(upstream(&req, "x-account-id").as_deref(), Some(fixtures::ACCOUNT_ACME));
    for name in RESERVED.iter().chain(&["x-tenant-id"]) {
        for value in req.upstream_headers().get_all(name) {
            assert_ne!(value, &b"spoofed"[..], "a client-sent {name} reached the upstream");
        }
    }
    // The credential itself cannot be reserved away.
    let bad = env.kong.plugin(
        "ghasi-jwt",
        json!({"jwks_url": env.auth.jwks_url(), "issuer": env.auth.issuer(), "extra_reserved_headers": ["Authorization"]}),
    );
    let err = env.kong.run_event(&bad, "access", &mut bearer("x")).await.expect_err("StartInstance must fail");
    assert!(err.to_string().contains("field 'extra_reserved_headers'"), "{err}");
    env.assert_no_token_logged();
}

#[tokio::test]
async fn spoofed_identity_headers_in_reject_mode() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"on_spoofed_identity_header": "reject"}));
    let token = env.token(env.alice());
    for name in RESERVED {
        let (out, _) = env.run(&plugin, bearer(&token).with_header(name.to_uppercase(), "x")).await;
        assert_denied(&out, 400, "spoofed_identity_header");
        assert_eq!(calls(&out), [GET_HEADERS, EXIT]);
        assert!(out.exit.as_ref().unwrap().header("www-authenticate").is_none());
    }
    let (out, req) = env.run_bearer(&plugin, &token).await;
    assert!(out.continues());
    assert_eq!(calls(&out), [GET_HEADERS, SET_HEADERS, CTX_SET]);
    assert_eq!(upstream(&req, "x-account-id").as_deref(), Some(fixtures::ACCOUNT_ACME));
    // Reject applies before anything else, also to anonymous requests.
    let optional = env.plugin(json!({"on_spoofed_identity_header": "reject", "credential_optional": true}));
    let (out, _) = env.run(&optional, Request::new("GET", "/").with_header("X-Account-Id", "acc_x")).await;
    assert_denied(&out, 400, "spoofed_identity_header");
    env.assert_no_token_logged();
}

#[tokio::test]
async fn cookies_and_hide_credentials() {
    let env = Env::start().await;
    let token = env.token(env.alice());
    let cookie = env.plugin(json!({"cookie_names": ["access_token"], "hide_credentials": true}));
    let req = Request::new("GET", "/").with_header("Cookie", format!("theme=dark; access_token={token}; lang=en"));
    let (out, req) = env.run(&cookie, req).await;
    assert!(out.continues(), "{:?}", out.exit);
    assert_eq!(calls(&out), [GET_HEADERS, SET_HEADERS, CTX_SET]);
    assert_eq!(upstream(&req, "cookie").as_deref(), Some("theme=dark; lang=en"), "the token cookie is hidden");
    assert_eq!(upstream(&req, "x-account-id").as_deref(), Some(fixtures::ACCOUNT_ACME));
    // Only the token cookie: the Cookie header goes.
    let (out, req) =
        env.run(&cookie, Request::new("GET", "/").with_header("Cookie", format!("access_token={token}"))).await;
    assert!(out.continues());
    assert_eq!(upstream(&req, "cookie"), None);
    // The Authorization header wins over a cookie, and is the one hidden.
    let (out, req) = env.run(&cookie, bearer(&token).with_header("Cookie", "access_token=garbage; a=1")).await;
    assert!(out.continues());
    assert_eq!(upstream(&req, "authorization"), None);
    assert_eq!(upstream(&req, "cookie").as_deref(), Some("access_token=garbage; a=1"));
    // Two different token cookies are ambiguous.
    let other = env.token(TokenSpec::for_user(fixtures::USER_BOB));
    let two = Request::new("GET", "/").with_header("Cookie", format!("access_token={token}; access_token={other}"));
    assert_denied(&env.run(&cookie, two).await.0, 401, "credential_ambiguous");
    // hide_credentials on the header path.
    let hide = env.plugin(json!({"hide_credentials": true}));
    let (out, req) = env.run_bearer(&hide, &token).await;
    assert_admitted(&out);
    assert_eq!(upstream(&req, "authorization"), None);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn one_jwks_fetch_is_shared_by_every_instance_and_concurrent_request() {
    let env = Env::start().await;
    let token = env.token(env.alice());
    // Two routes, two Kong workers, twenty concurrent first requests: one fetch.
    let worker2 = Kong::new(env.server.socket());
    let route_a = env.plugin(json!({}));
    let route_b = env.plugin(json!({"required_roles": ["admin"]}));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let kong = if i % 2 == 0 { env.kong.clone() } else { worker2.clone() };
        let plugin = if i % 4 < 2 { route_a.clone() } else { route_b.clone() };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = bearer(&token);
            kong.run_event(&plugin, "access", &mut req).await.expect("event")
        }));
    }
    for t in tasks {
        assert_admitted(&t.await.unwrap());
    }
    assert_eq!(env.fetches(), 1);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn jwks_refreshes_ahead_serves_the_last_known_set_while_down_then_503_then_recovers() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let token = env.token(env.alice());
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    assert_eq!(env.fetches(), 1);

    env.advance(100).await; // age 100: fresh
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    assert_eq!(env.fetches(), 1, "fresh: no refresh");

    env.advance(150).await; // age 250 ≥ 300 - 60: refresh ahead, in the background
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.wait_fetches(2).await;
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    assert_eq!(env.fetches(), 2, "one background refresh");

    // auth-service goes down; the set fetched at t=250 keeps working until t=550.
    env.auth.down().await;
    env.advance(250).await; // age 250: refresh due, fails in the background
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.advance(49).await; // age 299
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.advance(2).await; // age 301 > 300 + jwks_max_stale 0
    let (out, _) = env.run_bearer(&plugin, &token).await;
    assert_denied(&out, 503, "authority_unavailable");
    let retry_after: u64 = out.exit.as_ref().unwrap().header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");

    // Back up: validation recovers at the next attempt (backoff is at most 30 s).
    env.auth.up().await;
    env.advance(31).await;
    let before = env.fetches();
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    assert_eq!(env.fetches(), before + 1);
    assert!(env.server.logs().contains("JWKS fetch failed"), "the outage was logged");
    env.assert_no_token_logged();
}

#[tokio::test]
async fn jwks_max_stale_extends_the_last_known_set() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"jwks_max_stale": 120}));
    let token = env.token(env.alice());
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.auth.set_fault(Target::Jwks, Fault::Status(503));
    env.advance(410).await; // past the 300 s lifetime, within +120
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.advance(15).await; // age 425 > 420
    assert_denied(&env.run_bearer(&plugin, &token).await.0, 503, "authority_unavailable");
    env.auth.clear_faults();
    env.advance(31).await;
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn failed_or_unusable_refreshes_never_replace_a_good_set() {
    for fault in [Fault::Status(500), Fault::Garbage, Fault::EmptyJwks, Fault::Refuse] {
        let env = Env::start().await;
        let plugin = env.plugin(json!({}));
        let token = env.token(env.alice());
        assert_admitted(&env.run_bearer(&plugin, &token).await.0);
        env.auth.set_fault(Target::Jwks, fault);
        env.advance(250).await; // refresh due
        assert_admitted(&env.run_bearer(&plugin, &token).await.0);
        env.wait_fetches(2).await; // the bad refresh happened…
        assert_admitted(&env.run_bearer(&plugin, &token).await.0); // …and the set survived it
        let es = env.token(env.alice().alg(Alg::ES256));
        assert_admitted(&env.run_bearer(&plugin, &es).await.0);
        // Once the good set expires with no good replacement: 503.
        env.advance(60).await;
        assert_denied(&env.run_bearer(&plugin, &token).await.0, 503, "authority_unavailable");
        env.auth.clear_faults();
        env.advance(31).await;
        assert_admitted(&env.run_bearer(&plugin, &token).await.0);
        env.assert_no_token_logged();
    }
}

#[tokio::test]
async fn first_fetch_failing_answers_503_and_recovers() {
    for down in [false, true] {
        let env = Env::start().await;
        let plugin = env.plugin(json!({}));
        let token = env.token(env.alice());
        if down {
            env.auth.down().await;
        } else {
            env.auth.set_fault(Target::Jwks, Fault::Garbage);
        }
        let (out, _) = env.run_bearer(&plugin, &token).await;
        assert_denied(&out, 503, "authority_unavailable");
        assert!(out.exit.as_ref().unwrap().header("retry-after").is_some());
        // Backoff: an immediate retry does not call auth-service again.
        let before = env.fetches();
        assert_denied(&env.run_bearer(&plugin, &token).await.0, 503, "authority_unavailable");
        assert_eq!(env.fetches(), before);
        if down {
            env.auth.up().await;
        } else {
            env.auth.clear_faults();
        }
        env.advance(31).await;
        assert_admitted(&env.run_bearer(&plugin, &token).await.0);
        env.assert_no_token_logged();
    }
}

#[tokio::test]
async fn a_rotated_kid_causes_one_refresh_and_passes() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let old = env.token(env.alice());
    assert_admitted(&env.run_bearer(&plugin, &old).await.0);
    assert_eq!(env.fetches(), 1);
    let new_kid = env.auth.rotate(Alg::RS256, true).await;
    let new = env.token(env.alice());
    assert!(new.len() > 10 && env.auth.is_published(&new_kid));
    assert_admitted(&env.run_bearer(&plugin, &new).await.0);
    assert_eq!(env.fetches(), 2, "one out-of-band refresh");
    assert_admitted(&env.run_bearer(&plugin, &new).await.0);
    assert_admitted(&env.run_bearer(&plugin, &old).await.0);
    assert_eq!(env.fetches(), 2);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn a_forged_next_kid_does_not_lock_out_real_tokens_after_the_rotation() {
    // Attack: before auth-service rotates, one unauthenticated request carries the *next*
    // key's kid (kids like "rsa-2" are guessable) with a garbage signature. After the
    // rotation, tokens signed with that key must be accepted within the kid-refresh interval.
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    assert_admitted(&env.run_bearer(&plugin, &env.token(env.alice())).await.0);
    let next_kid = env.auth.rotate(Alg::RS256, true).await;
    assert!(env.auth.set_published(&next_kid, false), "the next key exists but is not published yet");
    let forged =
        env.record(unsigned(json!({"alg": "RS256", "kid": next_kid, "typ": "JWT"}), &env.timed(env.alice(), 3600)));
    assert_denied(&env.run_bearer(&plugin, &forged).await.0, 401, "credential_invalid");
    assert_eq!(env.fetches(), 2, "the forged kid caused one refresh");

    assert!(env.auth.set_published(&next_kid, true), "auth-service rotates to the key");
    let real = env.token(env.alice()); // signed with the new current key
    env.advance(10).await; // the kid-refresh interval
    let (out, req) = env.run_bearer(&plugin, &real).await;
    assert_admitted(&out);
    assert_eq!(upstream(&req, "x-account-id").as_deref(), Some(fixtures::ACCOUNT_ACME));
    assert_eq!(env.fetches(), 3);
    env.assert_no_token_logged();
}

#[tokio::test]
async fn an_unknown_kid_is_remembered_no_longer_than_each_routes_own_refresh_interval() {
    // Two routes share one JWKS cache; one allows an unknown-kid refresh only once an hour.
    // A forged kid seen there must not lock the other route's real tokens out for an hour.
    let env = Env::start().await;
    let slow = env.plugin(json!({"jwks_kid_refresh_interval": 3600}));
    let fast = env.plugin(json!({}));
    assert_admitted(&env.run_bearer(&slow, &env.token(env.alice())).await.0);
    let next_kid = env.auth.rotate(Alg::RS256, true).await;
    env.auth.set_published(&next_kid, false);
    let forged = env.record(unsigned(json!({"alg": "RS256", "kid": next_kid}), &env.timed(env.alice(), 3600)));
    assert_denied(&env.run_bearer(&slow, &forged).await.0, 401, "credential_invalid");
    assert_eq!(env.fetches(), 2);
    env.auth.set_published(&next_kid, true);
    let real = env.token(env.alice());
    env.advance(10).await;
    assert_admitted(&env.run_bearer(&fast, &real).await.0);
    assert_eq!(env.fetches(), 3);
    assert_admitted(&env.run_bearer(&slow, &real).await.0); // the set has it now
    env.assert_no_token_logged();
}

#[tokio::test]
async fn a_flood_of_forged_kids_costs_at_most_one_refresh_per_window() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    assert_admitted(&env.run_bearer(&plugin, &env.token(env.alice())).await.0);
    assert_eq!(env.fetches(), 1);
    let forge = env.auth.forge();
    let spec = env.timed(env.alice().alg(Alg::ES256), 3600);
    let first: Vec<String> = (0..1000).map(|_| env.record(forge.unknown_kid(&spec))).collect();
    for token in &first {
        assert_denied(&env.run_bearer(&plugin, token).await.0, 401, "credential_invalid");
    }
    assert_eq!(env.fetches(), 2, "at most one refresh in the window");

    // Next window (jwks_kid_refresh_interval = 10 s): another thousand, one more refresh at most.
    env.advance(10).await;
    let spec = env.timed(env.alice().alg(Alg::ES256), 3600);
    for _ in 0..1000 {
        let token = env.record(forge.unknown_kid(&spec));
        assert_denied(&env.run_bearer(&plugin, &token).await.0, 401, "credential_invalid");
    }
    assert_eq!(env.fetches(), 3);

    // A kid that caused a refresh is remembered as unknown only until the next refresh may
    // run anyway; repeating it then still costs at most one refresh per window.
    assert_denied(&env.run_bearer(&plugin, &first[0]).await.0, 401, "credential_invalid");
    assert_eq!(env.fetches(), 3, "remembered within the window");
    env.advance(10).await;
    for token in first.iter().take(100) {
        assert_denied(&env.run_bearer(&plugin, token).await.0, 401, "credential_invalid");
    }
    assert_eq!(env.fetches(), 4, "one refresh in the next window, however many forged kids");

    // Forged kids on tokens that fail the cheap checks never reach the key lookup.
    env.advance(10).await;
    let cheap_failures = [
        forge.unknown_kid(&env.timed(env.alice().alg(Alg::ES256).iss("https://evil.example"), 3600)),
        forge.unknown_kid(&env.timed(env.alice().alg(Alg::ES256), -3600)),
        forge.unknown_kid(&env.timed(env.alice().alg(Alg::ES256).claim("nbf", env.now() + 600), 3600)),
        unsigned(json!({"alg": "none", "kid": "forged-none"}), &env.timed(env.alice(), 3600)),
        unsigned(json!({"alg": "RS512", "kid": "forged-rs512"}), &env.timed(env.alice(), 3600)),
    ];
    for token in cheap_failures {
        let token = env.record(token);
        let (out, _) = env.run_bearer(&plugin, &token).await;
        assert!(out.exit.is_some());
        assert_ne!(out.exit.as_ref().unwrap().body_json().unwrap()["code"], "credential_invalid");
    }
    let hs = env.record(forge.hs256_with_secret(&env.timed(env.alice(), 3600), b"secret", Some("forged-hs-kid")));
    assert_denied(&env.run_bearer(&plugin, &hs).await.0, 401, "token_invalid");
    assert_eq!(env.fetches(), 4, "cheap-check failures cause no fetch");
    env.assert_no_token_logged();
}

#[tokio::test]
async fn verified_tokens_are_not_verified_again_until_their_kid_or_lifetime_ends() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    let other_route = env.plugin(json!({"required_roles": ["admin"]}));
    let token = env.token(env.alice());
    for _ in 0..5 {
        assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    }
    assert_admitted(&env.run_bearer(&other_route, &token).await.0);
    assert_eq!(env.signature_checks(), 1, "one verification for six uses on two routes");
    let es = env.token(env.alice().alg(Alg::ES256));
    assert_admitted(&env.run_bearer(&plugin, &es).await.0);
    assert_admitted(&env.run_bearer(&plugin, &es).await.0);
    assert_eq!(env.signature_checks(), 2);
    // A refresh that keeps the same keys keeps the entries.
    env.advance(250).await;
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    env.wait_fetches(2).await;
    assert_admitted(&env.run_bearer(&plugin, &token).await.0);
    assert_eq!(env.signature_checks(), 2, "same key after the refresh: still cached");

    // The per-route rules still apply on a hit.
    let bob_route = env.plugin(json!({"required_roles": ["viewer"]}));
    assert_denied(&env.run_bearer(&bob_route, &token).await.0, 403, "insufficient_role");

    // The kid leaves the JWKS: the cached token stops working once the set is refreshed.
    let rs_kid = env.auth.current_kid(Alg::RS256);
    assert!(env.auth.set_published(&rs_kid, false));
    env.advance(250).await;
    assert_admitted(&env.run_bearer(&plugin, &es).await.0); // starts the background refresh
    env.wait_fetches(3).await;
    assert_denied(&env.run_bearer(&plugin, &token).await.0, 401, "credential_invalid");

    // Expiry: a short-lived token is cached, then refused once it expires.
    let short = env.record(env.auth.mint(&env.timed(env.alice().alg(Alg::EdDSA), 60)));
    assert_admitted(&env.run_bearer(&plugin, &short).await.0);
    assert_admitted(&env.run_bearer(&plugin, &short).await.0);
    env.advance(100).await;
    assert_denied(&env.run_bearer(&plugin, &short).await.0, 401, "token_expired");
    env.assert_no_token_logged();
}

#[tokio::test]
async fn every_config_field_is_validated_dumped_with_its_default_and_documented() {
    use ghasi_plugin_server::plugins::jwt::config::FIELDS;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"))
        .args(["--dump", "--plugin", "ghasi-jwt"])
        .output()
        .expect("--dump runs");
    assert!(out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON dump");
    assert_eq!(dump[0]["Name"], "ghasi-jwt");
    assert_eq!(dump[0]["Priority"], 1450);
    let fields = dump[0]["Schema"]["fields"][1]["config"]["fields"].as_array().expect("config fields");
    assert_eq!(fields.len(), FIELDS.len());
    // The configuration reference (the README links to it) documents every field.
    let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let section = reference.split("\n## ghasi-jwt").nth(1).expect("docs/configuration.md has a '## ghasi-jwt' section");
    let section = section.split("\n## ").next().unwrap();
    for field in FIELDS {
        let def = fields.iter().find_map(|f| f.get(field.name)).unwrap_or_else(|| panic!("{} not dumped", field.name));
        assert!(def.get("default").is_some() || def["required"] == true, "{}: no default", field.name);
        assert!(
            section.contains(&format!("`{}`", field.name)),
            "{} is not documented in docs/configuration.md ## ghasi-jwt",
            field.name
        );
    }

    // StartInstance refuses a bad value and names the field.
    let env = Env::start().await;
    let bad = env.plugin(json!({"leeway": "soon", "roles_match": "some"}));
    let err = env.kong.run_event(&bad, "access", &mut Request::new("GET", "/")).await.expect_err("refused");
    let message = err.rpc_message().unwrap_or_default().to_owned();
    assert!(message.contains("field 'leeway'") && message.contains("field 'roles_match'"), "{err}");
}
