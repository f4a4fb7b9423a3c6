//! The runtime model through the real socket: `--threads N` event loops ("shards"), each
//! owning the connections dealt to it round-robin, while instances and events stay
//! process-wide, so a Step may arrive on a connection of another shard, and an auth-service
//! call started on one shard completes while that shard is otherwise idle.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::raw::{get, map, start_script, Conn};
use common::{Options, Server};
use dev_auth_service::fixtures::*;
use dev_auth_service::{DevAuthService, DevConfig};
use rmpv::Value;
use serde_json::json;

/// Names of the server's shard threads (from /proc: the threads name themselves).
fn shard_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("ghasi-shard-"))
        .collect();
    names.sort();
    names
}

fn with(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut options = Options::default();
    options.args.extend(args.iter().map(|a| a.to_string()));
    options.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Server::start_with(options)
}

/// The shard threads once they are all up (they start just after the socket is bound).
fn wait_shards(pid: u32, want: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = shard_threads(pid);
        if names == want || Instant::now() > deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn threads_sets_the_number_of_event_loops() {
    let server = with(&["--threads", "3"], &[]);
    let want = ["ghasi-shard-0", "ghasi-shard-1", "ghasi-shard-2"];
    assert_eq!(wait_shards(server.pid(), &want), want);
    let server = with(&[], &[("GHASI_THREADS", "1")]);
    assert_eq!(wait_shards(server.pid(), &["ghasi-shard-0"]), ["ghasi-shard-0"]);
}

fn event_id(result: &Value) -> u64 {
    get(result, "EventId").and_then(Value::as_u64).expect("EventId")
}

fn pdk_method(result: &Value) -> &str {
    get(get(result, "Data").expect("Data"), "Method").and_then(Value::as_str).expect("a PDK call")
}

/// Connections are dealt round-robin: with 2 shards, consecutive connections land on
/// different event loops. Every Step below arrives on the other shard than the one before.
#[test]
fn steps_of_one_event_cross_shards() {
    let server = with(&["--threads", "2"], &[]);
    let mut a = Conn::open(server.socket());
    let mut b = Conn::open(server.socket());
    let id = start_script(&mut a, 1, json!([{"read": "x-api-key"}, {"set_headers": {"X-Account-Id": "$read"}}]));
    for round in 0..20u64 {
        let (first, second) = if round % 2 == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
        let r = first.ok(
            10 + round,
            "plugin.HandleEvent",
            map(&[("InstanceId", id.into()), ("EventName", "access".into())]),
        );
        let eid = event_id(&r);
        let r =
            second.ok(10 + round, "plugin.Step", map(&[("EventId", eid.into()), ("Data", format!("k{round}").into())]));
        assert_eq!(pdk_method(&r), "kong.service.request.set_headers");
        let headers = &get(get(&r, "Data").unwrap(), "Args").and_then(Value::as_array).unwrap()[0];
        assert_eq!(get(headers, "X-Account-Id").and_then(Value::as_str), Some(format!("k{round}").as_str()));
        let r = first.ok(100 + round, "plugin.Step", map(&[("EventId", eid.into())]));
        assert_eq!(get(&r, "Data").and_then(Value::as_str), Some("ret"));
    }
}

/// One API-key event: HandleEvent on `first`, the key on `second` (whose shard then asks
/// auth-service), and returns the PDK call that follows the lookup.
fn lookup(first: &mut Conn, second: &mut Conn, instance: u64, msgid: u64, key: &str) -> String {
    let r =
        first.ok(msgid, "plugin.HandleEvent", map(&[("InstanceId", instance.into()), ("EventName", "access".into())]));
    // The plugin reads every header (Kong's get_header would show only a repeated key's first value).
    assert_eq!(pdk_method(&r), "kong.request.get_headers");
    let headers = map(&[("x-api-key", Value::Array(vec![key.into()]))]);
    let r = second.ok(msgid, "plugin.StepMultiMap", map(&[("EventId", event_id(&r).into()), ("Data", headers)]));
    pdk_method(&r).to_owned()
}

fn start_api_key(conn: &mut Conn, auth_url: &str) -> u64 {
    let config = json!({
        "auth_service_url": auth_url, "service_token": SERVICE_TOKEN,
        "__seq__": 1, "__key__": "plugins:ghasi-api-key-lookup::::", "route_id": "r1",
    });
    let res = conn.ok(
        1,
        "plugin.StartInstance",
        map(&[("Name", "ghasi-api-key-lookup".into()), ("Config", config.to_string().into())]),
    );
    get(&res, "Id").and_then(Value::as_u64).expect("instance Id")
}

/// The HTTP client's pooled connection to auth-service is driven by the shard that opened
/// it; a lookup made later from the other shard must still complete while that shard has
/// nothing else to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_service_calls_complete_from_either_shard() {
    let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
    let server = with(&["--threads", "2"], &[]);
    let socket = server.socket().to_owned();
    let url = auth.url();
    let keys = [KEY_ALICE, KEY_GLOBEX, KEY_SERVICE];
    let results = tokio::task::spawn_blocking(move || run_lookups(&socket, &url, &keys)).await.unwrap();
    for (key, method) in keys.iter().zip(&results) {
        assert_eq!(
            method,
            "kong.service.request.set_headers",
            "key #{} was not admitted",
            keys.iter().position(|k| k == key).unwrap()
        );
    }
    assert_eq!(auth.lookups(), 3, "each key looked up once, on alternating shards");
}

fn run_lookups(socket: &Path, url: &str, keys: &[&str]) -> Vec<String> {
    let mut a = Conn::open(socket);
    let mut b = Conn::open(socket);
    let id = start_api_key(&mut a, url);
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let msgid = 10 + i as u64;
            if i % 2 == 0 {
                lookup(&mut a, &mut b, id, msgid, key)
            } else {
                lookup(&mut b, &mut a, id, msgid, key)
            }
        })
        .collect()
}
