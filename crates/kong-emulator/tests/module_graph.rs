//! The emulator's layering, pinned: its modules form a DAG, and the protocol client never uses
//! the HTTP front (the `front` feature can be switched off and the client still stands).

#[path = "support/module_graph.rs"]
mod module_graph;

use module_graph::Graph;
use std::path::Path;

fn graph() -> Graph {
    Graph::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Modules that belong to the HTTP front (feature `front`).
fn is_front(module: &str) -> bool {
    module == "front" || module.starts_with("front::") || module == "echo"
}

#[test]
fn the_modules_form_a_dag() {
    let cycles = graph().cycles();
    assert!(cycles.is_empty(), "modules on an import cycle (module, the modules on its cycles): {cycles:#?}");
}

#[test]
fn the_protocol_client_never_uses_the_http_front() {
    let g = graph();
    for module in g.edges.keys().filter(|m| !is_front(m)) {
        let front: Vec<_> = g.reachable(module).into_iter().filter(|m| is_front(m)).collect();
        assert!(front.is_empty(), "client module `{module}` reaches the HTTP front: {front:?}");
    }
}

#[test]
fn the_reader_sees_the_known_edges() {
    // Guards the two tests above against a reader that sees nothing.
    let g = graph();
    let deps = |m: &str| g.edges.get(m).cloned().unwrap_or_default();
    assert!(deps("event").contains("kong"), "{:?}", deps("event"));
    assert!(deps("front").contains("kong"), "a root re-export (crate::Kong) counts: {:?}", deps("front"));
    assert!(deps("front::chain").contains("front::acl"), "super:: paths count: {:?}", deps("front::chain"));
    assert!(deps("pdk").contains("pdk::request"), "child modules count: {:?}", deps("pdk"));
    assert!(deps("wire").contains("wire::decode"), "{:?}", deps("wire"));
    assert!(g.reachable("event").contains("wire::encode"));
}

#[test]
fn the_reader_finds_a_cycle_and_ignores_tests_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\npub use c::Thing;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{b::{self, X}, Thing};\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub fn f() { super::a::g() }\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "// crate::a::x in a comment\npub struct Thing;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let g = Graph::read(src);
    assert_eq!(g.edges["a"], ["b", "c"].map(String::from).into());
    assert!(g.edges["c"].is_empty(), "{:?}", g.edges["c"]);
    let cycles: Vec<_> = g.cycles().into_iter().map(|(m, _)| m).collect();
    assert_eq!(cycles, ["a", "b"]);
}
