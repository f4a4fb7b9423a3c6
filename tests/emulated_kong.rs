//! The core driven the way Kong drives it (through the Kong emulator): pooled connections,
//! Steps rotated across connections, Kong 3.4 and 3.9 wire differences, config changes,
//! and recovery after the plugin server restarts.

mod common;

use common::Server;
use kong_emulator::{Kong, KongVersion, PoolPolicy, Request};
use serde_json::json;

fn echo_script() -> serde_json::Value {
    json!({"steps": [{"read": "x-api-key"}, {"set_headers": {"X-Account-Id": "$read", "X-Api-Key": null}},
                     {"call": "kong.ctx.shared.set", "args": ["authenticated_groups", ["g"]]}]})
}

async fn many_events(kong: &Kong, n: usize) {
    let plugin = kong.plugin("ghasi-test-script", echo_script());
    let runs = (0..n).map(|i| {
        let (kong, plugin) = (kong.clone(), plugin.clone());
        async move {
            let mut req = Request::new("GET", "/v1/messages").with_header("x-api-key", format!("acct-{i}"));
            let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("event");
            (i, outcome, req)
        }
    });
    for (i, outcome, req) in futures::future::join_all(runs).await {
        assert!(outcome.continues(), "{outcome:?}");
        assert_eq!(
            outcome.pdk_calls,
            ["kong.request.get_header", "kong.service.request.set_headers", "kong.ctx.shared.set"]
        );
        assert_eq!(req.upstream_header("x-account-id").as_deref(), Some(format!("acct-{i}").as_str()));
        assert_eq!(req.upstream_header("x-api-key"), None, "removed by an empty array");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_over_a_rotating_pool_on_kong_3_4_and_3_9() {
    let server = Server::start();
    for version in [KongVersion::V3_4, KongVersion::V3_9] {
        let kong = Kong::builder(server.socket()).version(version).pool_policy(PoolPolicy::Rotate).pool_size(8).build();
        many_events(&kong, 64).await;
        assert!(kong.connections_opened() > 1, "{version:?}: the pool was exercised");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_recovered_by_kongs_no_plugin_instance_retry() {
    let mut server = Server::start();
    let kong = Kong::builder(server.socket()).pool_policy(PoolPolicy::Lifo).build();
    let plugin = kong.plugin("ghasi-test-script", echo_script());
    let mut req = Request::new("GET", "/").with_header("x-api-key", "a");
    assert!(kong.run_event(&plugin, "access", &mut req).await.unwrap().continues());
    let old_id = kong.cached_instance_id(&plugin).expect("cached id");

    server.restart();
    // Kong still holds the old id and pooled connections to the dead process.
    let mut req = Request::new("GET", "/").with_header("x-api-key", "b");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.expect("event after restart");
    assert!(outcome.continues(), "{outcome:?}");
    assert_eq!(req.upstream_header("x-account-id").as_deref(), Some("b"));
    let new_id = kong.cached_instance_id(&plugin).expect("re-created");
    assert_ne!(old_id, new_id, "the new process must not hand out the old id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_starts_a_new_instance_and_closes_the_old_one() {
    let server = Server::start();
    let kong = Kong::new(server.socket());
    let plugin = kong.plugin("ghasi-test-script", echo_script());
    let mut req = Request::new("GET", "/").with_header("x-api-key", "a");
    kong.run_event(&plugin, "access", &mut req).await.unwrap();
    let old_id = kong.cached_instance_id(&plugin).unwrap();

    kong.update_config(&plugin, json!({"steps": [{"exit": 418, "body": "teapot"}]}));
    let mut req = Request::new("GET", "/");
    let outcome = kong.run_event(&plugin, "access", &mut req).await.unwrap();
    assert_eq!(outcome.exit.as_ref().map(|e| e.status), Some(418));
    assert_eq!(outcome.exit.unwrap().body_text(), "teapot");
    assert_ne!(kong.cached_instance_id(&plugin).unwrap(), old_id);
    let err = kong.call("ghasi-test-script", "plugin.InstanceStatus", &old_id).await.unwrap_err();
    assert!(err.is_no_plugin_instance(), "old instance closed: {err:?}");
}
