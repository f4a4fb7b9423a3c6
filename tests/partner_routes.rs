//! Partner consumers (Kong's key-auth) must never share a route with the ghasi plugins.
//!
//! On a shared route, key-auth without `anonymous` refuses every request without a partner
//! key: every customer (JWT or API key) would get 401. With `anonymous`, key-auth (priority
//! 1250) ties with ghasi-api-key-lookup (1250); Kong OSS orders equal priorities arbitrarily,
//! and in either order one plugin overwrites or clears the identity headers the other set.
//! So partners get routes of their own (`auth = "partner_key"` in kong/gateway.toml).
//!
//! Why not the emulator front: it does not emulate key-auth, consumers or credentials (see
//! docs/development.md#kong-emulator, *Not emulated*), and the hazard rests on Kong's undefined
//! order of equal priorities, which no emulation would reproduce faithfully. So these tests check
//! the shape of what kong/generate.py renders.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plugins_of(v: &Value) -> Vec<&Value> {
    v["plugins"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn names(plugins: &[&Value]) -> Vec<String> {
    plugins.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
}

/// Every route of a decK document with the plugins that apply to it (route, service, global).
fn routes_with_plugins(doc: &Value) -> Vec<(String, Vec<Value>)> {
    let global = plugins_of(doc);
    let mut out = vec![];
    for service in doc["services"].as_array().into_iter().flatten() {
        for route in service["routes"].as_array().into_iter().flatten() {
            let mut all: Vec<Value> = plugins_of(route).into_iter().cloned().collect();
            for p in plugins_of(service).into_iter().chain(global.iter().copied()) {
                if !names(&all.iter().collect::<Vec<_>>()).contains(&p["name"].as_str().unwrap_or("").to_owned()) {
                    all.push(p.clone());
                }
            }
            out.push((route["name"].as_str().unwrap_or("?").to_owned(), all));
        }
    }
    out
}

/// The rules, for one decK document: key-auth never next to a ghasi plugin, never with
/// `anonymous`, and a partner route's acl never admits the ghasi group.
fn assert_partner_rules(file: &str, doc: &Value) {
    for (route, plugins) in routes_with_plugins(doc) {
        let refs: Vec<&Value> = plugins.iter().collect();
        let n = names(&refs);
        if !n.iter().any(|x| x == "key-auth") {
            continue;
        }
        assert!(
            !n.iter().any(|x| x.starts_with("ghasi-")),
            "{file}: route {route} mixes key-auth with a ghasi plugin: {n:?}"
        );
        let key_auth = plugins.iter().find(|p| p["name"] == "key-auth").unwrap();
        assert!(
            key_auth["config"]["anonymous"].is_null(),
            "{file}: route {route}: key-auth with anonymous lets keyless requests in"
        );
        let acl = plugins
            .iter()
            .find(|p| p["name"] == "acl")
            .unwrap_or_else(|| panic!("{file}: route {route}: key-auth without acl"));
        let allow: Vec<&str> = acl["config"]["allow"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(
            !allow.is_empty() && !allow.contains(&"ghasi-authenticated"),
            "{file}: route {route}: acl allow {allow:?}"
        );
    }
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn no_committed_deck_file_puts_key_auth_on_a_customer_route() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("kong")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") && !path.ends_with("consumers.yaml") {
            assert_partner_rules(&path.display().to_string(), &yaml_file(&path));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} decK files found");
}

/// Renders kong/gateway.toml plus `extra_routes` (TOML) for the production environment.
fn render_with(extra_toml: &str) -> Result<Value, String> {
    let script = r#"
import json, sys, tomllib
sys.path.insert(0, "kong")
import generate
src = tomllib.loads(open("kong/gateway.toml").read() + sys.argv[1])
env = src["environments"]["production"]
try:
    generate.validate_source(src)
    print(json.dumps(generate.deck_state(src, "production", env, env["outputs"][0]["kong"])))
except generate.SourceError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
"#;
    let out = Command::new("python3").current_dir(root()).args(["-c", script, extra_toml]).output().expect("python3");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_partner_route_is_key_auth_and_acl_on_a_route_of_its_own() {
    let partner = r#"
[[routes]]
method = "POST"
path = "/partner/v1/messages"
service = "sms-orchestrator"
auth = "partner_key"
rate_limit = "message_send"
"#;
    let doc = render_with(partner).expect("renders");
    assert_partner_rules("rendered", &doc);
    let routes = routes_with_plugins(&doc);
    let (_, plugins) = routes.iter().find(|(n, _)| n.contains("partner")).expect("the partner route");
    let refs: Vec<&Value> = plugins.iter().collect();
    assert_eq!(names(&refs), ["key-auth", "acl", "request-transformer", "rate-limiting"]);
    assert_eq!(plugins[0]["config"]["key_names"], serde_json::json!(["x-partner-key"]));
    assert_eq!(plugins[1]["config"]["allow"], serde_json::json!(["partners"]));
    // No ghasi plugin writes X-Account-Id on this route: the limit counts per consumer.
    assert_eq!(plugins[3]["config"]["limit_by"], "consumer");
    assert!(plugins[3]["config"]["header_name"].is_null());
    // The customers' route for the same API is untouched: no key-auth next to the ghasi plugins.
    let (_, customer) = routes.iter().find(|(n, _)| n == "post-v1-messages").expect("post-v1-messages");
    let refs: Vec<&Value> = customer.iter().collect();
    assert_eq!(names(&refs)[..3], ["ghasi-jwt", "ghasi-api-key-lookup", "acl"]);
}

#[test]
fn the_generator_refuses_a_partner_group_that_opens_customer_routes() {
    // [partner_key] cannot be redefined by appending TOML, so render a rewritten copy.
    let text = std::fs::read_to_string(root().join("kong/gateway.toml")).unwrap();
    assert!(text.contains(r#"allow = ["partners"]"#));
    let bad = text.replace(r#"allow = ["partners"]"#, r#"allow = ["partners", "ghasi-authenticated"]"#);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("gateway.toml");
    std::fs::write(&source, bad).unwrap();
    let check = "import sys, tomllib; sys.path.insert(0, 'kong'); import generate; \
                 generate.validate_source(tomllib.loads(open(sys.argv[1]).read()))";
    let out = Command::new("python3").current_dir(root()).args(["-c", check]).arg(&source).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("partner_key.allow must not contain guard.group"), "{err}");
}
