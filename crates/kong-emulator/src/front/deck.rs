//! The subset of decK's declarative format (`_format_version: "3.0"`) the front needs.
//!
//! Services (with `url` or `protocol`/`host`/`port`/`path`), their routes (`paths`, `methods`,
//! `hosts`, `strip_path`, `preserve_host`, `regex_priority`) and plugins attached to a route,
//! a service or globally (top-level `plugins`, optionally naming a `service`/`route`).
//! Consumers and everything else are ignored; [`Gateway::ignored`] lists what was skipped.
//! Plugin configs get their `{vault://env/...}` references resolved on load, as Kong
//! resolves references before a plugin sees its config.

use super::vault;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// Where a plugin is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Global,
    Service(usize),
    Route(usize),
}

#[derive(Debug, Clone)]
pub struct PluginConf {
    pub id: Option<String>,
    pub name: String,
    pub config: serde_json::Value,
    pub enabled: bool,
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub name: Option<String>,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub name: Option<String>,
    pub service: usize,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
}

/// A loaded declarative configuration.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub plugins: Vec<PluginConf>,
    /// Top-level sections that were ignored (e.g. `consumers`).
    pub ignored: Vec<String>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
    #[serde(flatten)]
    other: serde_yaml::Mapping,
}

#[derive(Deserialize)]
struct RawService {
    id: Option<String>,
    name: Option<String>,
    url: Option<String>,
    protocol: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    connect_timeout: Option<u64>,
    read_timeout: Option<u64>,
    write_timeout: Option<u64>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
}

#[derive(Deserialize)]
struct RawRoute {
    id: Option<String>,
    name: Option<String>,
    /// Only for top-level routes: the service name or id.
    service: Option<RawRef>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    strip_path: Option<bool>,
    preserve_host: Option<bool>,
    regex_priority: Option<i64>,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRef {
    Name(String),
    Object { name: Option<String>, id: Option<String> },
}

impl RawRef {
    fn key(&self) -> Option<&str> {
        match self {
            RawRef::Name(n) => Some(n),
            RawRef::Object { name, id } => name.as_deref().or(id.as_deref()),
        }
    }
}

#[derive(Deserialize)]
struct RawPlugin {
    id: Option<String>,
    name: String,
    #[serde(default)]
    config: serde_yaml::Value,
    enabled: Option<bool>,
    service: Option<RawRef>,
    route: Option<RawRef>,
}

impl Gateway {
    /// Reads and resolves a decK file.
    pub fn load(path: &Path) -> Result<Gateway> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Gateway::parse(&text).with_context(|| format!("loading decK file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Gateway> {
        let raw: RawFile = serde_yaml::from_str(text).context("parsing decK YAML")?;
        let mut gw = Gateway {
            ignored: raw
                .other
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| !k.starts_with('_'))
                .map(str::to_string)
                .collect(),
            ..Gateway::default()
        };
        let mut pending_plugins = Vec::new();
        for s in raw.services {
            let index = gw.services.len();
            gw.services.push(service(&s).with_context(|| format!("service {:?}", s.name))?);
            for p in s.plugins {
                pending_plugins.push((p, Scope::Service(index)));
            }
            for r in s.routes {
                add_route(&mut gw, r, index, &mut pending_plugins);
            }
        }
        for r in raw.routes {
            let Some(key) = r.service.as_ref().and_then(RawRef::key) else {
                bail!("top-level route {:?} names no service", r.name);
            };
            let index = gw.find_service(key).with_context(|| format!("route {:?}: unknown service {key}", r.name))?;
            add_route(&mut gw, r, index, &mut pending_plugins);
        }
        for p in raw.plugins {
            let scope = match (&p.route, &p.service) {
                (Some(r), _) => {
                    let key = r.key().unwrap_or_default();
                    Scope::Route(gw.find_route(key).with_context(|| format!("plugin {}: unknown route {key}", p.name))?)
                }
                (None, Some(s)) => {
                    let key = s.key().unwrap_or_default();
                    Scope::Service(
                        gw.find_service(key).with_context(|| format!("plugin {}: unknown service {key}", p.name))?,
                    )
                }
                (None, None) => Scope::Global,
            };
            pending_plugins.push((p, scope));
        }
        for (p, scope) in pending_plugins {
            let config = vault::resolve(yaml_to_json(&p.config))
                .with_context(|| format!("resolving vault references of plugin {}", p.name))?;
            let config = if config.is_null() { serde_json::json!({}) } else { config };
            gw.plugins.push(PluginConf { id: p.id, name: p.name, config, enabled: p.enabled.unwrap_or(true), scope });
        }
        Ok(gw)
    }

    fn find_service(&self, key: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name.as_deref() == Some(key) || s.id == key)
    }

    fn find_route(&self, key: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.name.as_deref() == Some(key) || r.id == key)
    }
}

fn add_route(gw: &mut Gateway, r: RawRoute, service: usize, plugins: &mut Vec<(RawPlugin, Scope)>) {
    let index = gw.routes.len();
    gw.routes.push(Route {
        id: r.id.unwrap_or_else(crate::uuid_like),
        name: r.name,
        service,
        paths: r.paths,
        methods: r.methods.into_iter().map(|m| m.to_ascii_uppercase()).collect(),
        hosts: r.hosts,
        strip_path: r.strip_path.unwrap_or(true),
        preserve_host: r.preserve_host.unwrap_or(false),
        regex_priority: r.regex_priority.unwrap_or(0),
    });
    for p in r.plugins {
        plugins.push((p, Scope::Route(index)));
    }
}

fn service(s: &RawService) -> Result<Service> {
    let (protocol, host, port, path) = match &s.url {
        Some(url) => {
            let u = reqwest::Url::parse(url).with_context(|| format!("service url {url}"))?;
            let host = u.host_str().context("service url has no host")?.to_string();
            let port = u.port_or_known_default().unwrap_or(80);
            let path = (u.path() != "/" || url.ends_with('/')).then(|| u.path().to_string());
            (u.scheme().to_string(), host, port, path)
        }
        None => {
            let protocol = s.protocol.clone().unwrap_or_else(|| "http".into());
            let default_port = if protocol == "https" { 443 } else { 80 };
            let host = s.host.clone().context("service has neither url nor host")?;
            (protocol, host, s.port.unwrap_or(default_port), s.path.clone())
        }
    };
    Ok(Service {
        id: s.id.clone().unwrap_or_else(crate::uuid_like),
        name: s.name.clone(),
        protocol,
        host,
        port,
        path,
        connect_timeout_ms: s.connect_timeout.unwrap_or(60_000),
        read_timeout_ms: s.read_timeout.unwrap_or(60_000),
        write_timeout_ms: s.write_timeout.unwrap_or(60_000),
    })
}

/// YAML → JSON (non-string keys stringified).
pub fn yaml_to_json(v: &serde_yaml::Value) -> serde_json::Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => (*b).into(),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                n.as_f64().map(serde_json::Value::from).unwrap_or(serde_json::Value::Null)
            }
        }
        Y::String(s) => s.clone().into(),
        Y::Sequence(items) => items.iter().map(yaml_to_json).collect(),
        Y::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let key = match k {
                    Y::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                (key, yaml_to_json(v))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Y::Tagged(t) => yaml_to_json(&t.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_top_level_entities() {
        let gw = Gateway::parse(
            r#"
_format_version: "3.0"
services:
  - name: portal
    url: http://127.0.0.1:9000/base
    plugins:
      - name: rate-limiting
        config: {minute: 5}
    routes:
      - name: r1
        paths: ["~/v1/x$"]
        methods: [get]
        plugins:
          - name: ghasi-jwt
            enabled: false
            config: {issuer: "https://i"}
routes:
  - name: r2
    service: portal
    paths: [/v2]
plugins:
  - name: acl
    route: r2
    config: {allow: [g]}
  - name: cors
consumers:
  - username: x
"#,
        )
        .expect("parse");
        assert_eq!(gw.services[0].host, "127.0.0.1");
        assert_eq!(gw.services[0].port, 9000);
        assert_eq!(gw.services[0].path.as_deref(), Some("/base"));
        assert_eq!(gw.routes.len(), 2);
        assert_eq!(gw.routes[0].methods, vec!["GET"]);
        assert!(gw.routes[1].strip_path, "Kong's default");
        let scopes: Vec<(&str, &Scope, bool)> =
            gw.plugins.iter().map(|p| (p.name.as_str(), &p.scope, p.enabled)).collect();
        assert_eq!(
            scopes,
            vec![
                ("rate-limiting", &Scope::Service(0), true),
                ("ghasi-jwt", &Scope::Route(0), false),
                ("acl", &Scope::Route(1), true),
                ("cors", &Scope::Global, true),
            ]
        );
        assert_eq!(gw.ignored, vec!["consumers"]);
    }

    #[test]
    fn unknown_references_are_errors() {
        let err = Gateway::parse("plugins:\n  - name: acl\n    route: nope\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown route nope"), "{err:#}");
    }
}
