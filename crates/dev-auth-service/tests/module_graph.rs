//! The dev auth-service's layering, pinned: its modules form a DAG that reads top-down
//! (server → router → handlers → state and the shared leaves), with no module using one
//! that uses it back.

// The emulator's reader, so that both tooling crates are held to one definition of an edge
// (its own tests check the reader itself).
#[path = "../../kong-emulator/tests/support/module_graph.rs"]
mod module_graph;

use module_graph::Graph;
use std::path::Path;

fn graph() -> Graph {
    Graph::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn the_modules_form_a_dag() {
    let cycles = graph().cycles();
    assert!(cycles.is_empty(), "modules on an import cycle (module, the modules on its cycles): {cycles:#?}");
}

#[test]
fn handlers_sit_below_the_server() {
    let g = graph();
    assert!(g.reachable("server").contains("contract"), "the reader sees server → router → contract");
    for handler in ["contract", "dev_api", "admin"] {
        let up: Vec<_> = g.reachable(handler).into_iter().filter(|m| m == "server" || m == "router").collect();
        assert!(up.is_empty(), "handler `{handler}` reaches {up:?}");
    }
}
