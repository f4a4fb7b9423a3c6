//! Kong's bundled `acl` plugin (priority 950), as far as it concerns this project: the
//! fail-closed guard behind the external plugins (docs/design.md#fail-closed-guard).
//!
//! Groups come from `kong.ctx.shared.authenticated_groups` (what our plugins publish);
//! there is no database, so a consumer's own groups are always empty. Decision as in
//! Kong's handler: no consumer and no authenticated groups → 401 `Unauthorized` (403 when a
//! credential exists); groups not in `allow` (or in `deny`) → 403 `You cannot consume this
//! service`. With a consumer, authenticated groups count only when there is no credential,
//! unless `always_use_authenticated_groups` (Kong ≥3.8) is set. Allowed requests get
//! `X-Consumer-Groups` upstream unless `hide_groups_header`.

use crate::{Request, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub hide_groups_header: bool,
    pub always_use_authenticated_groups: bool,
}

impl AclConfig {
    pub fn from_json(config: &serde_json::Value) -> AclConfig {
        let list = |k: &str| -> Vec<String> {
            config[k]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        AclConfig {
            allow: list("allow"),
            deny: list("deny"),
            hide_groups_header: config["hide_groups_header"].as_bool().unwrap_or(false),
            always_use_authenticated_groups: config["always_use_authenticated_groups"].as_bool().unwrap_or(false),
        }
    }
}

/// What acl decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclDecision {
    Allow,
    Deny { status: u16, message: &'static str },
}

const FORBIDDEN: AclDecision = AclDecision::Deny { status: 403, message: "You cannot consume this service" };

/// Runs acl's access handler against the request.
pub fn check(config: &AclConfig, req: &mut Request) -> AclDecision {
    let consumer_id = consumer_id(req);
    let has_credential = req.credential().is_some();
    let authenticated = authenticated_groups(req);
    let groups = if config.always_use_authenticated_groups || consumer_id.is_none() {
        match (authenticated, consumer_id.is_some()) {
            (Some(groups), _) => groups,
            // A consumer without authenticated groups: its database groups (none here).
            (None, true) => Vec::new(),
            (None, false) if has_credential => return FORBIDDEN,
            (None, false) => return AclDecision::Deny { status: 401, message: "Unauthorized" },
        }
    } else if !has_credential {
        authenticated.unwrap_or_default()
    } else {
        Vec::new()
    };
    let blocked = if !config.allow.is_empty() {
        !groups.iter().any(|g| config.allow.contains(g))
    } else {
        groups.iter().any(|g| config.deny.contains(g))
    };
    if blocked {
        return FORBIDDEN;
    }
    if !config.hide_groups_header && !groups.is_empty() {
        req.headers_mut().set("X-Consumer-Groups", vec![groups.join(", ").into_bytes()]);
    }
    AclDecision::Allow
}

fn consumer_id(req: &Request) -> Option<Value> {
    let from = |v: Option<&Value>, path: &[&str]| -> Option<Value> {
        let mut cur = v?;
        for key in path {
            cur = crate::wire::map_get(cur, key)?;
        }
        Some(cur.clone())
    };
    from(req.consumer(), &["id"]).or_else(|| from(req.credential(), &["consumer", "id"]))
}

fn authenticated_groups(req: &Request) -> Option<Vec<String>> {
    match req.ctx_shared_get("authenticated_groups")? {
        Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allow: &[&str], always: bool) -> AclConfig {
        AclConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            always_use_authenticated_groups: always,
            ..AclConfig::default()
        }
    }

    fn groups(req: Request, g: &[&str]) -> Request {
        let mut req = req;
        req.ctx_shared_set("authenticated_groups", Value::Array(g.iter().map(|s| Value::from(*s)).collect()));
        req
    }

    #[test]
    fn no_identity_is_401_and_wrong_group_is_403() {
        let mut req = Request::new("GET", "/");
        assert_eq!(check(&cfg(&["g"], true), &mut req), AclDecision::Deny { status: 401, message: "Unauthorized" });
        let mut req = groups(Request::new("GET", "/"), &["other"]);
        assert_eq!(check(&cfg(&["g"], true), &mut req), FORBIDDEN);
        let mut req = groups(Request::new("GET", "/"), &["g", "x"]);
        assert_eq!(check(&cfg(&["g"], true), &mut req), AclDecision::Allow);
        assert_eq!(req.upstream_header("x-consumer-groups").as_deref(), Some("g, x"));
    }
}
