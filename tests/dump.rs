//! `--dump`: what Kong's query_cmd parser accepts on Kong ≤3.8 and 3.9+
//! (docs/protocol.md#plugin-discovery-the-dump).

use std::process::Command;

use serde_json::Value;

fn dump(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ghasi-plugin-server"))
        .args(args)
        .env_remove("GHASI_TEST_PLUGINS")
        .output()
        .expect("run");
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// The checks Kong applies to one plugin-info entry (3.0+: integer priority, x.y.z version).
fn assert_kong_accepts(info: &Value) {
    let name = info["Name"].as_str().expect("Name");
    assert!(info["Priority"].is_i64(), "{name}: Priority must be an integer");
    let version = info["Version"].as_str().expect("Version");
    let parts: Vec<_> = version.split('.').collect();
    assert!(parts.len() <= 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()), "{name}: version {version}");
    assert_eq!(info["Phases"], serde_json::json!(["access"]));
    let schema = &info["Schema"];
    assert_eq!(schema["name"], name, "2.8 treats a schema without name as legacy");
    let config = schema["fields"].as_array().unwrap().iter().find_map(|f| f.get("config")).expect("config record");
    assert_eq!(config["type"], "record");
    for field in config["fields"].as_array().unwrap() {
        let (fname, def) = field.as_object().unwrap().iter().next().unwrap();
        let ty = def["type"].as_str().unwrap_or_else(|| panic!("{name}.{fname}: type"));
        assert!(["string", "integer", "boolean", "array"].contains(&ty), "{fname}: {ty}");
        if ty == "array" {
            assert!(def.get("elements").is_some(), "{fname}: arrays need elements");
        }
        // Kong refuses oversized or control-character values before they reach us.
        let bounded = if ty == "array" { &def["elements"] } else { def };
        if ["string", "array"].contains(&ty) {
            assert!(def["len_max"].as_u64().is_some_and(|n| n <= 4096), "{name}.{fname}: len_max");
            if bounded["type"] == "string" {
                assert!(bounded["len_max"].as_u64().is_some_and(|n| n <= 4096), "{name}.{fname}: string len_max");
                assert_eq!(bounded["not_match"], "%c", "{name}.{fname}: control characters refused");
            }
        }
        assert!(def.get("required").is_some(), "{fname}: required flag");
        let required = def["required"].as_bool().unwrap();
        assert!(
            required || def.get("default").is_some() || ["service_token"].contains(&fname.as_str()),
            "{name}.{fname}: optional fields show their default"
        );
        let text = def.to_string();
        assert!(!text.contains("null"), "{fname}: JSON null becomes a Lua sentinel in Kong");
        if let Some(d) = def.get("description").and_then(Value::as_str) {
            assert!((10..=500).contains(&d.len()), "{fname}: Kong wants 10-500 char descriptions");
        }
    }
}

#[test]
fn dump_lists_both_plugins_jwt_first_in_kongs_format() {
    let (ok, stdout, _) = dump(&["--dump"]);
    assert!(ok);
    let all: Value = serde_json::from_str(&stdout).expect("stdout is exactly one JSON document");
    let names: Vec<_> = all.as_array().unwrap().iter().map(|p| p["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ghasi-jwt", "ghasi-api-key-lookup"]);
    for info in all.as_array().unwrap() {
        assert_kong_accepts(info);
    }
    assert_eq!(all[0]["Priority"], 1450);
    assert_eq!(all[1]["Priority"], 1250);
}

#[test]
fn single_dash_dump_and_per_plugin_dump_for_kong_3_9() {
    // Kong 3.9's default query_cmd is `<bin> -dump`.
    let (ok, stdout, _) = dump(&["-dump"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap().as_array().unwrap().len(), 2);
    for name in ["ghasi-jwt", "ghasi-api-key-lookup"] {
        let (ok, stdout, _) = dump(&["--dump", "--plugin", name]);
        assert!(ok);
        let one: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(one.as_array().unwrap().len(), 1, "3.9 registers only the first entry");
        assert_eq!(one[0]["Name"], name);
    }
}

#[test]
fn dump_schema_shows_every_config_field_with_its_default() {
    let (_, stdout, _) = dump(&["--dump"]);
    let all: Value = serde_json::from_str(&stdout).unwrap();
    let field = |plugin: usize, name: &str| -> Value {
        let config =
            all[plugin]["Schema"]["fields"].as_array().unwrap().iter().find_map(|f| f.get("config")).unwrap().clone();
        config["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get(name).cloned())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(field(0, "leeway")["default"], 30);
    assert_eq!(field(0, "algorithms")["default"], serde_json::json!(["RS256", "ES256", "EdDSA"]));
    assert_eq!(field(0, "jwks_cache_ttl")["default"], 300);
    assert_eq!(field(0, "jwks_url")["required"], true);
    assert_eq!(field(1, "key_names")["default"], serde_json::json!(["x-api-key"]));
    assert_eq!(field(1, "cache_ttl")["default"], 60);
    assert_eq!(field(1, "negative_cache_ttl")["default"], 15);
    assert_eq!(field(1, "timeout_ms")["default"], 500);
    assert_eq!(field(1, "hide_credentials")["default"], true);
    assert_eq!(field(1, "on_spoofed_identity_header")["one_of"], serde_json::json!(["strip", "reject"]));
    assert_eq!(field(1, "service_token")["referenceable"], true);
}

#[test]
fn unknown_plugin_is_a_usage_error_and_test_plugins_stay_hidden() {
    let (ok, stdout, stderr) = dump(&["--dump", "--plugin", "ghasi-nope"]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(stderr.contains("ghasi-jwt, ghasi-api-key-lookup"), "{stderr}");
    let (_, stdout, _) = dump(&["--dump"]);
    assert!(!stdout.contains("ghasi-test-script"));
}
