//! The Kong configuration in kong/ against the customer portal's route table and rate limits.
//!
//! Expectations come from tests/fixtures/seed-003-customer-portal-routes.txt, a verbatim copy
//! of the portal team's document (compared with the original, SEED_ORIGINAL, only when the team's
//! shared folder is beside the repository). The few decisions the seed leaves open are the
//! constants below, each documented in docs/gateway.md#routes-and-rate-limits-kongkongyaml.

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "tests/fixtures/seed-003-customer-portal-routes.txt";
const SEED_ORIGINAL: &str = "../shared/seeds/003_edf6ee1873174c17.txt"; // doc-refs: allow (optional provenance check)

/// Every decK state file with routes, and whether it targets Kong 3.8+ (acl option
/// `always_use_authenticated_groups`, which 3.4–3.7 reject).
const DECK_FILES: &[(&str, bool)] = &[
    ("kong/kong.yaml", true),
    ("kong/kong-3.4-3.7.yaml", false),
    ("kong/staging.kong.yaml", true),
    ("kong/production.kong.yaml", true),
    ("kong/staging-3.4-3.7.kong.yaml", false),
    ("kong/production-3.4-3.7.kong.yaml", false),
];

/// The public messages API: these routes also take a customer API key (decision, not in the
/// seed): both ghasi plugins run with credential_optional, and the acl guard requires one.
const API_KEY_ROUTES: &[(&str, &str)] =
    &[("POST", "/v1/messages"), ("GET", "/v1/messages"), ("GET", "/v1/messages/{messageId}")];

const IDENTITY_HEADERS: &[&str] = &["X-Account-Id", "X-User-Id", "X-Consumer-Username", "X-Credential-Identifier"];
const GUARD_GROUP: &str = "ghasi-authenticated";
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ------------------------------------------------------------------------------------------
// The seed

#[derive(Debug, Clone)]
struct SeedRoute {
    method: String,
    path: String,
    /// "message-store / sms-orchestrator" means either.
    upstreams: Vec<String>,
    auth: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Per {
    Ip,
    Account,
}

#[derive(Debug, Clone)]
struct SeedLimit {
    group: String,
    per_minute: u64,
    per: Per,
}

struct Seed {
    routes: Vec<SeedRoute>,
    limits: Vec<SeedLimit>,
    required_role: String,
}

fn cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()
}

fn parse_seed(text: &str) -> Seed {
    let mut routes = Vec::new();
    let mut limits = Vec::new();
    let mut required_role = None;
    let mut section = String::new();
    for line in text.lines() {
        if let Some((num, title)) = line.split_once(". ") {
            if num.chars().all(|c| c.is_ascii_digit()) && !num.is_empty() {
                section = title.trim().to_string();
                continue;
            }
        }
        if line.contains("Must include") {
            // JWT contract: `roles | string[] | Must include customer for portal access |`
            let after = line.split("Must include").nth(1).unwrap().trim();
            required_role = Some(after.split_whitespace().next().unwrap().to_string());
        }
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let c = cells(line);
        if section == "Kong Routes Consumed" && c.len() == 4 && METHODS.contains(&c[0].as_str()) {
            routes.push(SeedRoute {
                method: c[0].clone(),
                path: c[1].clone(),
                upstreams: c[2].split('/').map(|s| s.trim().to_string()).collect(),
                auth: c[3].clone(),
            });
        }
        if section == "Rate Limits" && c.len() == 3 && c[1].ends_with(" req") {
            let per_minute = c[1].trim_end_matches(" req").parse().expect("limit");
            let window = c[2].to_lowercase();
            assert!(window.starts_with("per minute"), "unsupported window {window}");
            let per = if window.ends_with("per ip") {
                Per::Ip
            } else if window.ends_with("per account") {
                Per::Account
            } else {
                panic!("unsupported window {window}")
            };
            limits.push(SeedLimit { group: c[0].clone(), per_minute, per });
        }
    }
    Seed { routes, limits, required_role: required_role.expect("JWT role contract in seed") }
}

fn seed() -> Seed {
    parse_seed(&read(FIXTURE))
}

#[derive(Debug, PartialEq)]
enum AuthKind {
    /// No credential checked at the gateway: pre-login, and the refresh-token cookie, which
    /// auth-service validates itself.
    Public,
    Jwt,
    JwtOrApiKey,
}

fn auth_kind(r: &SeedRoute) -> AuthKind {
    if API_KEY_ROUTES.contains(&(r.method.as_str(), r.path.as_str())) {
        assert_eq!(r.auth, "Bearer JWT", "{} {}", r.method, r.path);
        return AuthKind::JwtOrApiKey;
    }
    match r.auth.as_str() {
        "Bearer JWT" => AuthKind::Jwt,
        a if a.starts_with("No") || a.contains("Refresh token cookie") => AuthKind::Public,
        a => panic!("{} {}: unknown auth column {a:?}", r.method, r.path),
    }
}

/// Which of the seed's rate-limit groups a route belongs to
/// (docs/gateway.md#routes-and-rate-limits-kongkongyaml).
fn limit_for<'a>(seed: &'a Seed, r: &SeedRoute) -> Option<&'a SeedLimit> {
    let group = |prefix: &str| {
        seed.limits
            .iter()
            .find(|l| l.group.starts_with(prefix))
            .unwrap_or_else(|| panic!("no rate-limit group {prefix:?} in the seed"))
    };
    if r.path.starts_with("/v1/auth/") && auth_kind(r) == AuthKind::Public {
        Some(group("Auth endpoints"))
    } else if r.method == "POST" && r.path == "/v1/api-keys" {
        Some(group("API key creation"))
    } else if r.method == "POST" && r.path == "/v1/messages" {
        Some(group("Message send"))
    } else if r.method == "GET" {
        Some(group("Read endpoints"))
    } else {
        None
    }
}

/// `/v1/api-keys/{keyId}` -> `~/v1/api-keys/(?P<keyId>[^/]+)$`: exact, anchored regex paths
/// (`(?P<name>…)`: the named-group syntax both PCRE and the Rust regex of Kong's ATC router accept).
fn expected_path(path: &str) -> String {
    let mut out = String::from("~");
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(&rest[..start]);
        out.push_str(&format!("(?P<{}>[^/]+)", &rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.push('$');
    out
}

// ------------------------------------------------------------------------------------------
// decK files

struct DeckRoute {
    service: String,
    route: Value,
}

fn load(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|seq| seq.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn deck_routes(doc: &Value) -> Vec<DeckRoute> {
    let mut out = Vec::new();
    for svc in doc.get("services").and_then(Value::as_sequence).expect("services") {
        let name = s(svc, "name").expect("service name").to_string();
        for route in svc.get("routes").and_then(Value::as_sequence).into_iter().flatten() {
            out.push(DeckRoute { service: name.clone(), route: route.clone() });
        }
    }
    assert!(doc.get("routes").is_none(), "top-level routes: keep routes nested in services");
    assert!(doc.get("plugins").is_none(), "global plugins would change every route");
    out
}

fn plugin<'a>(route: &'a Value, name: &str) -> Option<&'a Value> {
    route.get("plugins").and_then(Value::as_sequence).and_then(|ps| ps.iter().find(|p| s(p, "name") == Some(name)))
}

fn config(plugin: &Value) -> &Value {
    plugin.get("config").expect("plugin config")
}

fn flag(cfg: &Value, key: &str) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn find<'a>(routes: &'a [DeckRoute], r: &SeedRoute) -> &'a DeckRoute {
    let path = expected_path(&r.path);
    let hits: Vec<&DeckRoute> = routes
        .iter()
        .filter(|d| {
            strings(d.route.get("methods")) == [r.method.clone()] && strings(d.route.get("paths")) == [path.clone()]
        })
        .collect();
    assert_eq!(hits.len(), 1, "route {} {} (path {path}) must appear exactly once", r.method, r.path);
    hits[0]
}

fn check_deck_file(rel: &str, kong_38_plus: bool, seed: &Seed) {
    let doc = load(rel);
    assert_eq!(s(&doc, "_format_version"), Some("3.0"), "{rel}: _format_version");
    let routes = deck_routes(&doc);
    assert_eq!(
        routes.len(),
        seed.routes.len(),
        "{rel}: exactly the seed's routes, no others (every route is an exact path)"
    );

    for r in &seed.routes {
        let what = format!("{rel}: {} {}", r.method, r.path);
        let d = find(&routes, r);
        let route = &d.route;
        assert!(r.upstreams.contains(&d.service), "{what}: service {} not in {:?}", d.service, r.upstreams);
        assert_eq!(route.get("strip_path").and_then(Value::as_bool), Some(false), "{what}: strip_path");

        let jwt = plugin(route, "ghasi-jwt");
        let key = plugin(route, "ghasi-api-key-lookup");
        let acl = plugin(route, "acl");
        match auth_kind(r) {
            AuthKind::Public => {
                assert!(jwt.is_none() && key.is_none() && acl.is_none(), "{what}: no auth at the gateway");
                let rt = plugin(route, "request-transformer")
                    .unwrap_or_else(|| panic!("{what}: request-transformer must strip identity headers"));
                let removed: BTreeSet<String> = strings(config(rt).get("remove").and_then(|r| r.get("headers")))
                    .into_iter()
                    .map(|h| h.to_lowercase())
                    .collect();
                for h in IDENTITY_HEADERS {
                    assert!(removed.contains(&h.to_lowercase()), "{what}: {h} not stripped");
                }
            }
            kind => {
                let jwt = jwt.unwrap_or_else(|| panic!("{what}: ghasi-jwt missing"));
                let jc = config(jwt);
                assert!(s(jc, "jwks_url").is_some_and(|u| u.starts_with("http")), "{what}: jwks_url");
                assert!(s(jc, "issuer").is_some_and(|i| !i.is_empty()), "{what}: issuer");
                assert!(
                    strings(jc.get("required_roles")).contains(&seed.required_role),
                    "{what}: required_roles must contain {}",
                    seed.required_role
                );
                let jwt_group = s(jc, "authenticated_group").unwrap_or(GUARD_GROUP);
                let optional = kind == AuthKind::JwtOrApiKey;
                assert_eq!(flag(jc, "credential_optional"), optional, "{what}: ghasi-jwt credential_optional");
                if optional {
                    let key = key.unwrap_or_else(|| panic!("{what}: ghasi-api-key-lookup missing"));
                    let kc = config(key);
                    assert!(flag(kc, "credential_optional"), "{what}: api key credential_optional");
                    assert!(
                        s(kc, "auth_service_url").is_some_and(|u| u.starts_with("http")),
                        "{what}: auth_service_url"
                    );
                    if let Some(token) = s(kc, "service_token") {
                        assert!(token.starts_with("{vault://"), "{what}: service_token must be a vault reference");
                    }
                    assert_eq!(s(kc, "authenticated_group").unwrap_or(GUARD_GROUP), jwt_group, "{what}: groups differ");
                } else {
                    assert!(key.is_none(), "{what}: Bearer-only route takes no API key");
                }
                // The fail-closed guard (docs/design.md#fail-closed-guard).
                let acl = acl.unwrap_or_else(|| panic!("{what}: acl guard missing"));
                let ac = config(acl);
                assert_eq!(strings(ac.get("allow")), [jwt_group.to_string()], "{what}: acl allow");
                assert!(ac.get("deny").is_none(), "{what}: acl deny");
                if kong_38_plus {
                    assert!(flag(ac, "always_use_authenticated_groups"), "{what}: Kong 3.8+ acl option");
                } else {
                    assert!(
                        ac.get("always_use_authenticated_groups").is_none(),
                        "{what}: Kong 3.4–3.7 acl rejects always_use_authenticated_groups"
                    );
                }
            }
        }

        let rl = plugin(route, "rate-limiting");
        match limit_for(seed, r) {
            None => assert!(rl.is_none(), "{what}: the seed sets no limit here"),
            Some(limit) => {
                let rc = config(rl.unwrap_or_else(|| panic!("{what}: rate-limiting missing ({})", limit.group)));
                assert_eq!(rc.get("minute").and_then(Value::as_u64), Some(limit.per_minute), "{what}: {}", limit.group);
                for other in ["second", "hour", "day", "month", "year"] {
                    assert!(rc.get(other).is_none(), "{what}: only a per-minute window");
                }
                match limit.per {
                    Per::Ip => assert_eq!(s(rc, "limit_by"), Some("ip"), "{what}: per IP"),
                    Per::Account => {
                        assert_eq!(s(rc, "limit_by"), Some("header"), "{what}: per account");
                        assert_eq!(s(rc, "header_name"), Some("X-Account-Id"), "{what}: per account");
                    }
                }
            }
        }
    }
    check_no_plaintext_secrets(rel, &doc);
}

/// Any field that holds a secret must be a vault reference (Kong) or a decK env reference.
fn check_no_plaintext_secrets(rel: &str, v: &Value) {
    const SECRET_KEYS: &[&str] = &["service_token", "password", "redis_password", "secret", "key", "token"];
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                if let (Some(k), Some(text)) = (k.as_str(), val.as_str()) {
                    if SECRET_KEYS.contains(&k) {
                        assert!(
                            text.starts_with("{vault://") || text.starts_with("${{ env \"DECK_"),
                            "{rel}: {k} holds a literal secret"
                        );
                    }
                }
                check_no_plaintext_secrets(rel, val);
            }
        }
        Value::Sequence(seq) => seq.iter().for_each(|x| check_no_plaintext_secrets(rel, x)),
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------

#[test]
fn fixture_is_a_verbatim_copy_of_the_seed() {
    let original = root().join(SEED_ORIGINAL);
    if Path::new(&original).exists() {
        assert_eq!(read(FIXTURE), read(SEED_ORIGINAL), "{FIXTURE} differs from {SEED_ORIGINAL}");
    }
    let seed = seed();
    assert_eq!(seed.routes.len(), 16, "the seed's route table has 16 rows");
    assert_eq!(seed.limits.len(), 4, "the seed has 4 rate-limit groups");
    assert_eq!(seed.required_role, "customer");
}

#[test]
fn every_deck_file_implements_the_seed() {
    let seed = seed();
    for (rel, kong_38_plus) in DECK_FILES {
        check_deck_file(rel, *kong_38_plus, &seed);
    }
}

#[test]
fn every_rate_limit_group_of_the_seed_is_used() {
    let seed = seed();
    for limit in &seed.limits {
        assert!(
            seed.routes.iter().any(|r| limit_for(&seed, r).is_some_and(|l| l.group == limit.group)),
            "no route in group {}",
            limit.group
        );
    }
}

#[test]
fn environments_use_decks_select_tags_and_consumers_match() {
    let consumers = load("kong/consumers.yaml");
    let tags = |doc: &Value| strings(doc.get("_info").and_then(|i| i.get("select_tags")));
    let want = tags(&consumers);
    assert!(!want.is_empty(), "consumers.yaml needs select_tags");
    for rel in [
        "kong/staging.kong.yaml",
        "kong/production.kong.yaml",
        "kong/staging-3.4-3.7.kong.yaml",
        "kong/production-3.4-3.7.kong.yaml",
    ] {
        assert_eq!(tags(&load(rel)), want, "{rel}: select_tags must equal consumers.yaml's");
    }
    // Kong loads kong.yaml itself in DB-less mode: no decK-only keys there.
    assert!(load("kong/kong.yaml").get("_info").is_none());

    let list = consumers.get("consumers").and_then(Value::as_sequence).expect("consumers");
    assert!(!list.is_empty());
    for c in list {
        let who = s(c, "username").expect("username");
        let creds = c.get("keyauth_credentials").and_then(Value::as_sequence).expect("keyauth_credentials");
        for cred in creds {
            let key = s(cred, "key").unwrap_or("");
            assert!(
                key.starts_with("${{ env \"DECK_") && key.ends_with("\" }}"),
                "{who}: key must be a decK env reference"
            );
        }
        for g in c.get("acls").and_then(Value::as_sequence).into_iter().flatten() {
            assert_ne!(s(g, "group"), Some(GUARD_GROUP), "{who}: static consumers must not get the guard group");
        }
    }
    check_no_plaintext_secrets("kong/consumers.yaml", &consumers);
}

fn env_file(rel: &str) -> Vec<(String, String)> {
    read(rel)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{rel}: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn conf_file(rel: &str) -> Vec<(String, String)> {
    read(rel)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap_or_else(|| panic!("{rel}: {l}"));
            (format!("KONG_{}", k.to_uppercase()), v.to_string())
        })
        .collect()
}

/// decK environment templating (`${{ env "DECK_X" }}`), filled in at sync time.
fn is_deck_env(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|t| t.starts_with("${{ env \"DECK_") && t.ends_with("\" }}"))
}

/// docs/gateway.md#scale-out-redis: every rate limit of a multi-node environment counts per
/// cluster, in Redis, with the address and TLS from decK's environment and the password from a Kong
/// vault; the nested `redis` record on Kong 3.6+, the flat `redis_*` fields for the 3.4–3.7 files.
/// The single-node files (compose, quick start) count locally.
#[test]
fn multi_node_rate_limits_count_in_redis_and_single_node_ones_locally() {
    let files = [
        ("kong/staging.kong.yaml", Some(true)),
        ("kong/production.kong.yaml", Some(true)),
        ("kong/staging-3.4-3.7.kong.yaml", Some(false)),
        ("kong/production-3.4-3.7.kong.yaml", Some(false)),
        ("kong/kong.yaml", None),
        ("kong/kong-3.4-3.7.yaml", None),
        ("kong/quickstart.kong.yaml", None),
    ];
    for (rel, redis) in files {
        let doc = load(rel);
        let mut limits = 0;
        for d in deck_routes(&doc) {
            let Some(rl) = plugin(&d.route, "rate-limiting") else { continue };
            limits += 1;
            let c = config(rl);
            let what = format!("{rel}: {}", s(&d.route, "name").unwrap_or("?"));
            let Some(nested) = redis else {
                assert_eq!(s(c, "policy"), Some("local"), "{what}: one node counts locally");
                continue;
            };
            assert_eq!(s(c, "policy"), Some("redis"), "{what}: counted per cluster");
            let field = |name: &str| {
                if nested {
                    c.get("redis").and_then(|r| r.get(name))
                } else {
                    c.get(format!("redis_{name}"))
                }
            };
            if nested {
                assert!(c.get("redis_host").is_none(), "{what}: Kong 3.6+ takes the nested redis record");
            } else {
                assert!(c.get("redis").is_none(), "{what}: Kong 3.4/3.5 reject the nested redis record");
            }
            for name in ["host", "port", "ssl", "server_name"] {
                assert!(is_deck_env(field(name)), "{what}: redis {name} from decK's environment");
            }
            assert!(
                field("password").and_then(Value::as_str).is_some_and(|p| p.starts_with("{vault://")),
                "{what}: the Redis password is a vault reference"
            );
            assert_eq!(field("ssl_verify").and_then(Value::as_bool), Some(true), "{what}: TLS is verified");
            assert!(flag(c, "fault_tolerant"), "{what}: Redis down must not fail requests");
        }
        assert!(limits > 0, "{rel}: no rate limits");
    }
}

#[test]
fn kong_conf_fragments_take_the_client_address_from_the_balancer() {
    for variant in ["3.4-3.8", "3.9"] {
        let env = env_file(&format!("kong/conf/kong-{variant}.env"));
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert!(get("KONG_REAL_IP_HEADER").is_some_and(|h| !h.is_empty()), "{variant}: real_ip_header");
        assert_eq!(get("KONG_REAL_IP_RECURSIVE"), Some("on"), "{variant}: real_ip_recursive");
        let trusted = get("KONG_TRUSTED_IPS").unwrap_or_else(|| panic!("{variant}: trusted_ips"));
        assert!(
            !trusted.split(',').any(|c| c == "0.0.0.0/0" || c == "::/0"),
            "{variant}: trusting everyone lets clients pick their IP"
        );
    }
}

#[test]
fn kong_conf_fragments_match_their_env_files_and_the_version_rules() {
    for variant in ["3.4-3.8", "3.9"] {
        let env = env_file(&format!("kong/conf/kong-{variant}.env"));
        assert_eq!(conf_file(&format!("kong/conf/kong-{variant}.conf")), env, "{variant}: .conf vs .env");
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KONG_PLUGINS"), Some("bundled,ghasi-jwt,ghasi-api-key-lookup"));
        for t in ["CONNECT", "SEND", "READ"] {
            assert!(get(&format!("KONG_NGINX_HTTP_LUA_SOCKET_{t}_TIMEOUT")).is_some(), "{variant}: {t} timeout");
        }
        let starts: Vec<&(String, String)> = env.iter().filter(|(k, _)| k.ends_with("_START_CMD")).collect();
        assert_eq!(starts.len(), 1, "{variant}: exactly one start_cmd (one server process)");
        if variant == "3.4-3.8" {
            assert_eq!(get("KONG_PLUGINSERVER_NAMES"), Some("ghasi"));
            let q = get("KONG_PLUGINSERVER_GHASI_QUERY_CMD").expect("query_cmd");
            assert!(q.ends_with(" --dump"), "3.4-3.8: one dump with both plugins");
            assert!(get("KONG_PLUGINSERVER_GHASI_START_CMD").is_some(), "3.4 readiness gate needs start_cmd");
        } else {
            assert_eq!(get("KONG_PLUGINSERVER_NAMES"), Some("ghasi-jwt,ghasi-api-key-lookup"));
            let socket = get("KONG_PLUGINSERVER_GHASI_JWT_SOCKET").expect("socket");
            assert_eq!(get("KONG_PLUGINSERVER_GHASI_API_KEY_LOOKUP_SOCKET"), Some(socket), "one shared socket");
            assert!(get("KONG_PLUGINSERVER_GHASI_JWT_START_CMD").is_some_and(|c| c.contains(socket)));
            for (name, key) in [("ghasi-jwt", "GHASI_JWT"), ("ghasi-api-key-lookup", "GHASI_API_KEY_LOOKUP")] {
                let q = get(&format!("KONG_PLUGINSERVER_{key}_QUERY_CMD")).expect("query_cmd");
                assert!(q.ends_with(&format!(" --dump --plugin {name}")), "3.9 registers one plugin per dump");
            }
        }
    }
}
