//! Hot keys never wait (`refresh_ahead`): a key used near the end of its cache lifetime is
//! looked up again in the background, once per lifetime, so its requests keep hitting the
//! cache. The real binary, the Kong emulator and the dev auth-service; the server's clock is
//! moved (`plugin.GhasiTestAdvanceClock`), auth-service calls are counted by the dev service.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use dev_auth_service::fixtures::*;
use dev_auth_service::{DevAuthService, DevConfig};
use kong_emulator::{Kong, Plugin, Request, Value};
use serde_json::json;

const PLUGIN: &str = "ghasi-api-key-lookup";

struct Env {
    _server: Server,
    auth: DevAuthService,
    kong: Kong,
}

impl Env {
    async fn start() -> Env {
        let auth = DevAuthService::start(DevConfig::for_tests()).await.expect("dev auth-service");
        let server = Server::start();
        let kong = Kong::new(server.socket());
        Env { _server: server, auth, kong }
    }

    fn plugin(&self, extra: serde_json::Value) -> Plugin {
        let mut config = json!({"auth_service_url": self.auth.url(), "service_token": SERVICE_TOKEN});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        self.kong.plugin(PLUGIN, config)
    }

    async fn advance(&self, seconds: u64) {
        let param = Value::Map(vec![(Value::from("Seconds"), Value::from(seconds))]);
        self.kong.call(PLUGIN, "plugin.GhasiTestAdvanceClock", &param).await.expect("advancing the test clock");
    }

    async fn status(&self, plugin: &Plugin, key: &str) -> u16 {
        let mut req = Request::new("GET", "/v1/messages").with_header("X-API-Key", key);
        let outcome = self.kong.run_event(plugin, "access", &mut req).await.expect("the event runs");
        outcome.exit.as_ref().map_or(200, |e| e.status)
    }

    /// Waits for the background lookup to reach auth-service, then a little longer to be
    /// sure no second one follows.
    async fn lookups_settle_at(&self, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.auth.lookups() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(self.auth.lookups(), want);
    }
}

#[tokio::test]
async fn a_busy_key_is_revalidated_in_the_background_once_per_lifetime() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({}));
    assert_eq!(env.status(&plugin, KEY_ALICE).await, 200);
    assert_eq!(env.auth.lookups(), 1);
    env.advance(49).await;
    for _ in 0..10 {
        assert_eq!(env.status(&plugin, KEY_ALICE).await, 200);
    }
    assert_eq!(env.auth.lookups(), 1, "before the last 10 s: plain hits");
    env.advance(2).await; // 51 s: within refresh_ahead (10 s) of cache_ttl (60 s)
    for _ in 0..20 {
        assert_eq!(env.status(&plugin, KEY_ALICE).await, 200);
    }
    env.lookups_settle_at(2).await;
    // The lifetime restarted at 51 s: at 70 s (past the first 60 s) the key is still a hit.
    env.advance(19).await;
    assert_eq!(env.status(&plugin, KEY_ALICE).await, 200);
    assert_eq!(env.auth.lookups(), 2, "no request ever waited for a lookup");

    // Revoked meanwhile (no Redis here): the next background revalidation finds out, before
    // the lifetime ends.
    env.auth.revoke_key(KEY_ALICE);
    env.advance(32).await; // 102 s: the window of the lifetime learnt at 51 s
    assert_eq!(env.status(&plugin, KEY_ALICE).await, 200, "this request still uses the cached verdict");
    env.lookups_settle_at(3).await;
    assert_eq!(env.status(&plugin, KEY_ALICE).await, 401, "revocation picked up early");
}

#[tokio::test]
async fn refresh_ahead_zero_switches_it_off() {
    let env = Env::start().await;
    let plugin = env.plugin(json!({"refresh_ahead": 0}));
    assert_eq!(env.status(&plugin, KEY_GLOBEX).await, 200);
    env.advance(55).await;
    for _ in 0..5 {
        assert_eq!(env.status(&plugin, KEY_GLOBEX).await, 200);
    }
    env.lookups_settle_at(1).await;
    env.advance(6).await; // 61 s: expired, the request pays the lookup
    assert_eq!(env.status(&plugin, KEY_GLOBEX).await, 200);
    assert_eq!(env.auth.lookups(), 2);
}
