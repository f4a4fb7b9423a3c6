//! Route matching, approximating Kong's `traditional_compatible` router.
//!
//! A route matches when its `methods` (if any) contain the request method, its `hosts` (if
//! any) match the Host header (exact or `*.` wildcard), and one of its `paths` matches:
//! `~`-prefixed paths are regexes anchored at the start of the path, others are prefixes.
//! Candidates are tried as Kong orders them: regex paths first (higher `regex_priority`
//! first), then prefix paths, longest first; declaration order breaks ties. Routes without
//! paths match any path after all routes with paths.

use super::deck::{Gateway, Route};
use anyhow::{Context, Result};
use regex::Regex;

/// One path of one route, compiled.
#[derive(Debug)]
struct Candidate {
    route: usize,
    matcher: Matcher,
    /// Sort key: (class, priority, length) with lower class first.
    order: (u8, i64, usize),
}

#[derive(Debug)]
enum Matcher {
    Regex(Regex),
    Prefix(String),
    Any,
}

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub route: usize,
    /// The request path with the matched part removed when `strip_path` is on.
    pub stripped_path: String,
}

#[derive(Debug)]
pub struct Router {
    candidates: Vec<Candidate>,
}

impl Router {
    pub fn new(gw: &Gateway) -> Result<Router> {
        let mut candidates = Vec::new();
        for (index, route) in gw.routes.iter().enumerate() {
            if route.paths.is_empty() {
                candidates.push(Candidate { route: index, matcher: Matcher::Any, order: (2, 0, 0) });
            }
            for path in &route.paths {
                let candidate = match path.strip_prefix('~') {
                    Some(re) => {
                        let anchored = format!("^(?:{re})");
                        let regex = Regex::new(&anchored)
                            .with_context(|| format!("route {:?}: bad regex path {path}", route.name))?;
                        Candidate { route: index, matcher: Matcher::Regex(regex), order: (0, -route.regex_priority, 0) }
                    }
                    None => Candidate {
                        route: index,
                        matcher: Matcher::Prefix(path.clone()),
                        order: (1, 0, usize::MAX - path.len()),
                    },
                };
                candidates.push(candidate);
            }
        }
        // Stable sort keeps declaration order among equals.
        candidates.sort_by_key(|c| c.order);
        Ok(Router { candidates })
    }

    /// The first route matching `method`, `host` and `path`.
    pub fn find(&self, gw: &Gateway, method: &str, host: Option<&str>, path: &str) -> Option<Match> {
        self.candidates.iter().find_map(|c| {
            let route = &gw.routes[c.route];
            if !method_matches(route, method) || !host_matches(route, host) {
                return None;
            }
            let matched_len = match &c.matcher {
                Matcher::Regex(re) => re.find(path).map(|m| m.end())?,
                Matcher::Prefix(p) => path.starts_with(p.as_str()).then_some(p.len())?,
                Matcher::Any => 0,
            };
            let stripped_path = if route.strip_path {
                let rest = &path[matched_len..];
                if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                }
            } else {
                path.to_string()
            };
            Some(Match { route: c.route, stripped_path })
        })
    }
}

fn method_matches(route: &Route, method: &str) -> bool {
    route.methods.is_empty() || route.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
}

fn host_matches(route: &Route, host: Option<&str>) -> bool {
    if route.hosts.is_empty() {
        return true;
    }
    let Some(host) = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase()) else {
        return false;
    };
    route.hosts.iter().any(|h| {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => h == host,
        }
    })
}

/// Joins the service path and the (stripped) request path like Kong's `path_handling: v0`.
pub fn upstream_path(service_path: Option<&str>, request_path: &str) -> String {
    match service_path {
        None | Some("") => request_path.to_string(),
        Some(base) if request_path == "/" => base.to_string(),
        Some(base) => format!("{}{}", base.trim_end_matches('/'), request_path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(yaml: &str) -> Gateway {
        Gateway::parse(yaml).expect("decK")
    }

    const ROUTES: &str = r#"
services:
  - name: s
    url: http://u:1/
    routes:
      - name: prefix-short
        paths: [/v1]
      - name: prefix-long
        paths: [/v1/messages]
        strip_path: false
      - name: regex-get
        methods: [GET]
        paths: ["~/v1/messages/[^/]+$"]
        strip_path: false
      - name: regex-post
        methods: [POST]
        paths: ["~/v1/messages$"]
        strip_path: false
      - name: hosted
        hosts: ["*.example.com"]
        paths: [/h]
"#;

    fn route_name(gw: &Gateway, m: Option<Match>) -> Option<String> {
        m.and_then(|m| gw.routes[m.route].name.clone())
    }

    #[test]
    fn regex_first_then_longest_prefix() {
        let gw = gw(ROUTES);
        let r = Router::new(&gw).unwrap();
        let find = |m: &str, p: &str| route_name(&gw, r.find(&gw, m, None, p));
        assert_eq!(find("GET", "/v1/messages/abc").as_deref(), Some("regex-get"));
        assert_eq!(find("POST", "/v1/messages").as_deref(), Some("regex-post"));
        assert_eq!(find("GET", "/v1/messages").as_deref(), Some("prefix-long"));
        assert_eq!(find("GET", "/v1/other").as_deref(), Some("prefix-short"));
        assert_eq!(find("GET", "/v2"), None);
        // Regexes are anchored at the start.
        assert_eq!(find("POST", "/x/v1/messages"), None);
        assert_eq!(route_name(&gw, r.find(&gw, "GET", Some("a.example.com:8000"), "/h")).as_deref(), Some("hosted"));
        assert_eq!(r.find(&gw, "GET", Some("example.org"), "/h"), None);
    }

    #[test]
    fn strip_path_and_service_path() {
        let gw = gw(ROUTES);
        let r = Router::new(&gw).unwrap();
        assert_eq!(r.find(&gw, "GET", None, "/v1/abc").unwrap().stripped_path, "/abc");
        assert_eq!(r.find(&gw, "GET", None, "/v1").unwrap().stripped_path, "/");
        assert_eq!(r.find(&gw, "GET", None, "/v1/messages/x").unwrap().stripped_path, "/v1/messages/x");
        assert_eq!(upstream_path(Some("/base"), "/abc"), "/base/abc");
        assert_eq!(upstream_path(Some("/base/"), "/"), "/base/");
        assert_eq!(upstream_path(None, "/abc"), "/abc");
    }
}
