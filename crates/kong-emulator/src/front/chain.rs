//! The plugins that run for each route, in Kong's order.
//!
//! For every route Kong picks at most one configuration per plugin name, the most specific
//! one (route, then service, then global), and runs them by descending priority. External
//! plugins (names starting with `ghasi-`, or listed by the plugin server's `--dump`) run
//! through the emulated plugin-server client; `acl` is emulated; every other bundled plugin
//! is ignored (reported once at startup).

use super::acl::AclConfig;
use super::deck::{Gateway, Scope};
use crate::{Kong, Plugin, PluginSpec};
use std::collections::{BTreeMap, HashMap};

/// Kong's priority for bundled `acl`.
pub const ACL_PRIORITY: i64 = 950;

/// Priorities of our plugins when no dump is available (docs/design.md#what-we-build).
pub fn default_priorities() -> HashMap<String, i64> {
    HashMap::from([("ghasi-jwt".to_string(), 1450), ("ghasi-api-key-lookup".to_string(), 1250)])
}

#[derive(Debug, Clone)]
pub enum Step {
    External(Plugin),
    Acl(AclConfig),
}

#[derive(Debug, Clone)]
pub struct ChainEntry {
    pub name: String,
    pub priority: i64,
    pub step: Step,
}

/// Per-route plugin chains plus what was ignored.
#[derive(Debug)]
pub struct Chains {
    pub per_route: Vec<Vec<ChainEntry>>,
    /// Ignored bundled plugin name → number of configurations.
    pub ignored: BTreeMap<String, usize>,
    /// External plugins without a known priority (they run with 0, after acl).
    pub unprioritised: Vec<String>,
}

impl Chains {
    pub fn build(gw: &Gateway, kong: &Kong, priorities: &HashMap<String, i64>) -> Chains {
        let is_external = |name: &str| name.starts_with("ghasi-") || priorities.contains_key(name);
        // One Kong plugin handle per plugins row, shared by every route it applies to.
        let handles: Vec<Option<Plugin>> = gw
            .plugins
            .iter()
            .map(|p| {
                (p.enabled && is_external(&p.name)).then(|| {
                    let mut spec = PluginSpec::new(&p.name, p.config.clone());
                    spec.id = p.id.clone();
                    match p.scope {
                        Scope::Route(r) => spec.route_id = Some(gw.routes[r].id.clone()),
                        Scope::Service(s) => spec.service_id = Some(gw.services[s].id.clone()),
                        Scope::Global => spec.global = true,
                    }
                    kong.plugin_from(spec)
                })
            })
            .collect();
        let mut ignored = BTreeMap::new();
        for p in gw.plugins.iter().filter(|p| p.enabled && !is_external(&p.name) && p.name != "acl") {
            *ignored.entry(p.name.clone()).or_insert(0) += 1;
        }
        let per_route = gw
            .routes
            .iter()
            .enumerate()
            .map(|(r, route)| {
                // Most specific configuration per name.
                let mut chosen: BTreeMap<&str, (u8, usize)> = BTreeMap::new();
                // Disabled rows are not in Kong's plugins iterator at all.
                for (i, p) in gw.plugins.iter().enumerate().filter(|(_, p)| p.enabled) {
                    let rank = match p.scope {
                        Scope::Route(x) if x == r => 0,
                        Scope::Service(s) if s == route.service => 1,
                        Scope::Global => 2,
                        _ => continue,
                    };
                    let slot = chosen.entry(&p.name).or_insert((rank, i));
                    if rank < slot.0 {
                        *slot = (rank, i);
                    }
                }
                let mut chain: Vec<ChainEntry> = chosen
                    .into_values()
                    .filter_map(|(_, i)| {
                        let p = &gw.plugins[i];
                        let (priority, step) = if let Some(handle) = &handles[i] {
                            (priorities.get(&p.name).copied().unwrap_or(0), Step::External(handle.clone()))
                        } else if p.name == "acl" {
                            (ACL_PRIORITY, Step::Acl(AclConfig::from_json(&p.config)))
                        } else {
                            return None;
                        };
                        Some(ChainEntry { name: p.name.clone(), priority, step })
                    })
                    .collect();
                chain.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
                chain
            })
            .collect();
        let mut unprioritised: Vec<String> = gw
            .plugins
            .iter()
            .filter(|p| p.enabled && is_external(&p.name) && !priorities.contains_key(&p.name))
            .map(|p| p.name.clone())
            .collect();
        unprioritised.sort();
        unprioritised.dedup();
        Chains { per_route, ignored, unprioritised }
    }
}

/// Reads `Name`/`Priority` pairs from a plugin-server dump (a JSON array, or an object with
/// `Plugins`).
pub fn priorities_from_dump(dump: &serde_json::Value) -> HashMap<String, i64> {
    let list = dump.as_array().or_else(|| dump["Plugins"].as_array());
    list.into_iter()
        .flatten()
        .filter_map(|p| Some((p["Name"].as_str()?.to_string(), p["Priority"].as_i64()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_config_wins_and_priority_orders() {
        let gw = Gateway::parse(
            r#"
services:
  - name: s
    url: http://u:1
    plugins:
      - name: ghasi-jwt
        config: {from: service}
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: acl
            config: {allow: [g]}
          - name: ghasi-api-key-lookup
            config: {}
          - name: rate-limiting
            config: {minute: 1}
          - name: ghasi-jwt
            config: {from: route}
plugins:
  - name: ghasi-jwt
    config: {from: global}
  - name: cors
"#,
        )
        .unwrap();
        let kong = Kong::new("/nonexistent.sock");
        let chains = Chains::build(&gw, &kong, &default_priorities());
        let names: Vec<(&str, i64)> = chains.per_route[0].iter().map(|e| (e.name.as_str(), e.priority)).collect();
        assert_eq!(names, vec![("ghasi-jwt", 1450), ("ghasi-api-key-lookup", 1250), ("acl", 950)]);
        let Step::External(jwt) = &chains.per_route[0][0].step else { panic!("external") };
        assert_eq!(jwt.config()["from"], "route");
        assert_eq!(jwt.route_id(), Some(gw.routes[0].id.as_str()));
        assert_eq!(chains.ignored.keys().collect::<Vec<_>>(), vec!["cors", "rate-limiting"]);
    }

    #[test]
    fn dump_priorities() {
        let dump = serde_json::json!({"Protocol": "MsgPack:1", "Plugins": [{"Name": "a", "Priority": 7}]});
        assert_eq!(priorities_from_dump(&dump).get("a"), Some(&7));
        let arr = serde_json::json!([{"Name": "b", "Priority": 9}]);
        assert_eq!(priorities_from_dump(&arr).get("b"), Some(&9));
    }
}
