//! What one first (uncached) JWT verification costs on the product's own path:
//! `verify_signature`, i.e. jsonwebtoken on the crypto backend the product is built with,
//! per algorithm the dev auth-service signs with. A micro-benchmark without the event loop,
//! the verified-token cache or the protocol around it (the `jwt-rs256`/`jwt-es256` scenarios of
//! the main harness measure those); it prints figures and asserts nothing about speed.
//!
//!     cargo run -p ghasi-bench --release --example jwt_verify [-- TOKENS [ROUNDS]]

use std::time::{Duration, Instant};

use dev_auth_service::{Alg, SigningKey};
use ghasi_plugin_server::plugins::jwt::jwks::JwkKey;
use ghasi_plugin_server::plugins::jwt::verify::verify_signature;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let tokens = args.next().transpose()?.unwrap_or(2_000).max(1);
    let rounds = args.next().transpose()?.unwrap_or(5).max(1);
    println!("first verifications: {tokens} distinct tokens per round, best and median of {rounds} rounds");
    for alg in Alg::ALL {
        let key = SigningKey::generate(alg)?;
        let verifying = JwkKey::from_jwk(serde_json::from_value(key.jwk().clone())?).map_err(anyhow::Error::msg)?;
        // Distinct tokens, as a cache miss sees them (the signature check itself keeps no state).
        let signed: Vec<String> = (0..tokens)
            .map(|i| key.sign(Some(key.kid()), &json!({ "sub": format!("user-{i}"), "exp": 4_000_000_000u64 })))
            .collect::<anyhow::Result<_>>()?;
        let mut per_token: Vec<Duration> = Vec::with_capacity(rounds);
        // One unmeasured round warms caches and the allocator.
        for round in 0..=rounds {
            let start = Instant::now();
            for token in &signed {
                verify_signature(token, alg.jwt_algorithm(), &verifying)
                    .map_err(|d| anyhow::anyhow!("{alg}: a token of our own key did not verify: {d:?}"))?;
            }
            if round > 0 {
                per_token.push(start.elapsed() / tokens as u32);
            }
        }
        per_token.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("{alg:6} best {:8.1} µs   median {:8.1} µs", us(per_token[0]), us(per_token[per_token.len() / 2]));
    }
    Ok(())
}
