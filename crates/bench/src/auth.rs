//! The fake auth-service (`crates/dev-auth-service`) in this process, on a runtime of its
//! own (one thread), so that its work never runs on the emulator's worker threads.
//!
//! Keys are given in the config at start: `DevAuthService::add_api_key` checks `key_id`
//! uniqueness by scanning every key, which is fine for tests and quadratic for a million.

use dev_auth_service::{Account, AccountStatus, Alg, ApiKey, DevAuthService, DevConfig, TokenSpec, User};

pub const ACCOUNT: &str = "acc_bench_0001";
pub const USER: &str = "usr_bench_0001";
pub const SERVICE_TOKEN: &str = "bench-only-service-token-not-a-secret";

/// A valid key string: `ghk_<set>_<index>` padded to the length of a real key (~44 chars).
pub fn key(set: &str, i: u64) -> String {
    format!("ghk_{set}_{i:012}_bench0123456789abcdef")
}

pub struct Auth {
    svc: DevAuthService,
    runtime: tokio::runtime::Runtime,
}

impl Auth {
    /// Starts the service knowing the keys `key(set, 0..n)` for each `(set, n)`.
    pub fn start(key_sets: &[(&str, u64)]) -> anyhow::Result<Auth> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dev-auth-service")
            .enable_all()
            .build()?;
        let mut api_keys = Vec::new();
        for &(set, n) in key_sets {
            api_keys.extend((0..n).map(|i| ApiKey {
                user_id: Some(USER.into()),
                ..ApiKey::new(key(set, i), format!("key_{set}_{i}"), ACCOUNT)
            }));
        }
        let config = DevConfig {
            service_token: Some(SERVICE_TOKEN.into()),
            accounts: vec![Account { id: ACCOUNT.into(), status: AccountStatus::Active }],
            users: vec![User {
                id: USER.into(),
                account_id: ACCOUNT.into(),
                email: "bench@bench.invalid".into(),
                roles: vec!["customer".into()],
            }],
            api_keys,
            ..DevConfig::default()
        };
        let svc = runtime.block_on(DevAuthService::start(config))?;
        Ok(Auth { svc, runtime })
    }

    /// `ghasi-api-key-lookup` config against this service.
    pub fn api_key_config(&self) -> serde_json::Value {
        serde_json::json!({
            "auth_service_url": self.svc.url(),
            "service_token": SERVICE_TOKEN,
        })
    }

    /// `ghasi-jwt` config against this service.
    pub fn jwt_config(&self) -> serde_json::Value {
        serde_json::json!({
            "jwks_url": self.svc.jwks_url(),
            "issuer": self.svc.issuer(),
        })
    }

    pub fn lookups(&self) -> u64 {
        self.svc.lookups()
    }

    /// `n` distinct valid tokens of `alg` (each has its own `jti`), minted on every core.
    pub fn mint(&self, alg: Alg, n: usize) -> Vec<String> {
        let threads = std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1).max(1);
        let spec = TokenSpec::for_user(USER).alg(alg);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let spec = spec.clone();
                    let count = n / threads + usize::from(t < n % threads);
                    s.spawn(move || (0..count).map(|_| self.svc.mint(&spec)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("minting thread")).collect()
        })
    }

    pub fn shutdown(self) {
        drop(self.svc);
        self.runtime.shutdown_background();
    }
}
