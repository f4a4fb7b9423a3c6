//! Kong's `env` vault: `{vault://env/NAME}` and `{vault://env/NAME/KEY}` references.
//!
//! Kong maps the reference name to an environment variable by upper-casing it and turning
//! `-` into `_` (`{vault://env/ghasi-edge-service-token}` → `GHASI_EDGE_SERVICE_TOKEN`); with
//! a `/KEY` suffix the variable holds JSON and the key's value is used. Like Kong, an
//! unresolvable reference does not stop the gateway: the field becomes null and a warning is
//! logged. Only whole-string references are resolved; other vault backends are unsupported.

use anyhow::Result;

/// Returns `value` with every resolvable reference replaced.
pub fn resolve(value: serde_json::Value) -> Result<serde_json::Value> {
    resolve_with(value, &|name| std::env::var(name).ok())
}

/// [`resolve`] with an injectable environment (for tests).
pub fn resolve_with(value: serde_json::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match value {
        J::String(s) => match reference(&s) {
            Some(Reference::Env { name, key }) => lookup(&name, key.as_deref(), env).unwrap_or_else(|| {
                tracing::warn!(reference = %s, "unable to resolve vault reference; the field is null");
                J::Null
            }),
            Some(Reference::Other) => {
                tracing::warn!(reference = %s, "only {{vault://env/...}} references are supported; the field is null");
                J::Null
            }
            None => J::String(s),
        },
        J::Array(items) => J::Array(items.into_iter().map(|v| resolve_with(v, env)).collect::<Result<_>>()?),
        J::Object(map) => {
            J::Object(map.into_iter().map(|(k, v)| Ok((k, resolve_with(v, env)?))).collect::<Result<_>>()?)
        }
        other => other,
    })
}

enum Reference {
    Env { name: String, key: Option<String> },
    Other,
}

fn reference(s: &str) -> Option<Reference> {
    let inner = s.strip_prefix("{vault://")?.strip_suffix('}')?;
    let Some(rest) = inner.strip_prefix("env/") else { return Some(Reference::Other) };
    let mut parts = rest.splitn(2, '/');
    let name = parts.next().unwrap_or_default().to_string();
    let key = parts.next().map(str::to_string).filter(|k| !k.is_empty());
    Some(Reference::Env { name, key })
}

fn lookup(name: &str, key: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Option<serde_json::Value> {
    let var = name.to_ascii_uppercase().replace('-', "_");
    let raw = env(&var)?;
    match key {
        None => Some(serde_json::Value::String(raw)),
        Some(key) => {
            let json: serde_json::Value = serde_json::from_str(&raw).ok()?;
            match json.get(key)? {
                serde_json::Value::String(s) => Some(serde_json::Value::String(s.clone())),
                other => Some(serde_json::Value::String(other.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "GHASI_EDGE_SERVICE_TOKEN" => Some("tok".into()),
            "JSON_SECRETS" => Some(r#"{"a": "x", "n": 5}"#.into()),
            _ => None,
        }
    }

    #[test]
    fn env_references_follow_kongs_naming() {
        let v = resolve_with(
            json!({
                "service_token": "{vault://env/ghasi-edge-service-token}",
                "nested": ["{vault://env/json-secrets/a}", "{vault://env/json-secrets/n}", "plain {vault://env/x}"],
                "missing": "{vault://env/nope}",
                "other": "{vault://aws/x}",
            }),
            &env,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "service_token": "tok",
                "nested": ["x", "5", "plain {vault://env/x}"],
                "missing": null,
                "other": null,
            })
        );
    }
}
