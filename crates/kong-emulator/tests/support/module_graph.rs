//! A crate's module graph, read from its sources, for tests that pin the layering: which module
//! names which. An edge `a -> b` is a `crate::b…`, `super::…` or `self::…` path in `a` (use
//! lines, groups like `crate::{b, c::d}`, and inline paths alike; a name re-exported at the crate
//! root, `crate::Kong`, counts as its module), or a child module `b` that `a` names as `b::…`.
//! Comments and `#[cfg(test)]` modules are left out: tests may reach anywhere.
//!
//! Why a source reader rather than a linter: the tooling crates' rule is "the module graph is a
//! DAG that reads top-down", which no lint checks; this reader is small and only has to see paths.
//! The dev auth-service's layering test includes this same file (`#[path]`), so that both tooling
//! crates are held to one definition.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules (by path from the crate root, `"wire::decode"`) and what each one names.
#[derive(Debug, Default)]
pub struct Graph {
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Reads every module of the library rooted at `src/lib.rs` (binaries are left out).
    pub fn read(src: &Path) -> Graph {
        let mut files = BTreeMap::new();
        collect(src, src, &mut files);
        let modules: BTreeSet<String> = files.keys().filter(|m| !m.is_empty()).cloned().collect();
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
        let reexports = root_reexports(&strip(&lib), &modules);
        let mut graph = Graph::default();
        for (module, path) in &files {
            if module.is_empty() {
                continue;
            }
            let text = strip(&std::fs::read_to_string(path).expect("reading a source file"));
            let here: Vec<&str> = module.split("::").collect();
            let deps = graph.edges.entry(module.clone()).or_default();
            for segments in paths(&text, &here) {
                let target = resolve(&segments, &modules, &reexports);
                if let Some(t) = target.filter(|t| t != module) {
                    deps.insert(t);
                }
            }
            for child in
                modules.iter().filter(|m| m.strip_prefix(&format!("{module}::")).is_some_and(|c| !c.contains(':')))
            {
                let name = child.rsplit("::").next().unwrap_or_default();
                if names_child(&text, name) {
                    deps.insert(child.clone());
                }
            }
        }
        graph
    }

    /// Every module that `from` reaches through one or more edges.
    pub fn reachable(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in self.edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    }

    /// The modules that lie on a cycle, each listed with the modules on its cycles (empty for a DAG).
    pub fn cycles(&self) -> Vec<(String, BTreeSet<String>)> {
        self.edges
            .keys()
            .filter(|m| self.reachable(m).contains(*m))
            .map(|m| {
                let back: BTreeSet<String> =
                    self.reachable(m).into_iter().filter(|other| self.reachable(other).contains(m)).collect();
                (m.clone(), back)
            })
            .collect()
    }
}

/// Under a crate's `src`: `a.rs` and `a/mod.rs` are module `a`, `a/b.rs` is `a::b`; `lib.rs` is the root ("").
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("reading src").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).expect("under src").with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        match parts.join("::").as_str() {
            "main" => {}
            "lib" => {
                out.insert(String::new(), path);
            }
            name => {
                out.insert(name.to_string(), path);
            }
        }
    }
}

/// The source without comments and without `#[cfg(test)]` items (a `mod … { … }` block or a
/// `mod …;` line).
fn strip(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find("//") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find('\n').map_or("", |j| &rest[i + j..]);
    }
    out.push_str(rest);
    let mut text = out;
    while let Some(i) = text.find("#[cfg(test)]") {
        let after = &text[i..];
        let end = match (after.find(';'), after.find('{')) {
            (Some(semi), Some(open)) if semi < open => i + semi + 1,
            (_, Some(open)) => {
                let mut depth = 0;
                let mut end = text.len();
                for (k, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i + open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(semi), None) => i + semi + 1,
            (None, None) => text.len(),
        };
        text.replace_range(i..end, "");
    }
    text
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `crate::…`, `super::…` and `self::…` path in `text`, as absolute segments (groups
/// expanded: `crate::{a, b::c}` gives `[a]` and `[b, c]`). `here` is the module being read.
fn paths(text: &str, here: &[&str]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("::") {
        let head_start = text[..i].rfind(|c: char| !is_ident(c)).map_or(0, |j| j + 1);
        let head = &text[head_start..i];
        if text[..head_start].ends_with("::") {
            continue;
        }
        let base: Vec<String> = match head {
            "crate" => Vec::new(),
            "self" => here.iter().map(|s| s.to_string()).collect(),
            "super" => here[..here.len().saturating_sub(1)].iter().map(|s| s.to_string()).collect(),
            _ => continue,
        };
        expand(&text[i + 2..], base, &mut found);
    }
    found
}

/// Reads one path tail (`a::b`, `a::{b, c}`, `{a, b::{c}}`) at the start of `s`.
fn expand(s: &str, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (k, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&inner[start..k], prefix.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..k], prefix.clone(), out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    let (name, rest) = s.split_at(end);
    if !name.is_empty() && name != "self" {
        prefix.push(name.to_string());
    }
    match rest.strip_prefix("::") {
        Some(tail) => expand(tail, prefix, out),
        None => out.push(prefix),
    }
}

/// `pub use module::{A, B};` in lib.rs: `crate::A` means `module`.
fn root_reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else { continue };
        let mut found = Vec::new();
        expand(rest, Vec::new(), &mut found);
        for segments in found {
            if let (Some(first), Some(last)) = (segments.first(), segments.last()) {
                if segments.len() > 1 && modules.contains(first) {
                    map.insert(last.clone(), first.clone());
                }
            }
        }
    }
    map
}

/// The longest prefix of `segments` that is a module, or the module a root re-export names.
fn resolve(segments: &[String], modules: &BTreeSet<String>, reexports: &BTreeMap<String, String>) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|k| segments[..k].join("::"))
        .find(|m| modules.contains(m))
        .or_else(|| segments.first().and_then(|s| reexports.get(s)).cloned())
}

/// Whether `text` names its child module `name` as `name::…` (not as `other::name::…`).
fn names_child(text: &str, name: &str) -> bool {
    let needle = format!("{name}::");
    text.match_indices(&needle).any(|(i, _)| {
        let before = &text[..i];
        !before.ends_with(is_ident) && !before.ends_with("::")
    })
}
