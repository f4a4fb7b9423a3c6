//! `ghasi-jwt`: validates a Bearer JWT against auth-service's JWKS (docs/design.md#ghasi-jwt) and
//! hands the upstream the identity contract (docs/design.md#identity-contract).
//!
//! One request, in PDK calls (docs/design.md#round-trips-are-the-cost; the JWKS fetch is HTTP, not
//! a PDK call):
//!
//! | path | calls |
//! |---|---|
//! | valid token | read, `set_headers` (identity + remove reserved/hidden headers), `ctx.shared.set` = 3 (+1 `set_kong_consumer`) |
//! | any denial (401/403/400/503) | read, `response.exit` = 2 |
//! | no token, `credential_optional` | read, `set_headers` (remove reserved headers) = 2 |
//!
//! "read" is `get_header("authorization")`, or `get_headers` when `cookie_names` is set or
//! `on_spoofed_identity_header` is `reject` (both need more than one header). nginx refuses a
//! request with two `Authorization` lines itself (a unique header line, 400), so one value is
//! all there is; several credentials can still arrive folded in it (`Bearer a, Bearer b`).
//!
//! The decision, cheapest first (a forged token must not cost an auth-service call):
//! parse ([`token`]) → alg allow-list → kid present → iss exact → exp/nbf/iat/lifetime → aud
//! → key lookup ([`jwks`]; an unknown kid may refresh) → signature ([`verify`], skipped when
//! [`verified_cache`] holds the token for the very same key) → claims sub/account_id/roles.

pub mod config;
pub mod jwks;
pub mod token;
pub mod verified_cache;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;

use self::config::Policy;
use self::jwks::{JwksCache, Lookup};
use self::token::{Presented, Source, Token};
use self::verified_cache::VerifiedCache;
use super::identity::{self, Admission, Identity, Reserved, SpoofPolicy};
use super::outcome::{self, AuthError, Scheme};
use super::{Phase, Plugin, PluginSpec, StartError};
use crate::clock::Clock;
use crate::keyed_hash::KeyedHash;
use crate::metrics;
use crate::pdk::service::HeaderChanges;
use crate::pdk::Pdk;
use crate::services::Services;

pub const NAME: &str = "ghasi-jwt";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: 1450,
    version: "0.1.0",
    phases: &[Phase::Access],
    fields: config::FIELDS,
    start,
};

/// Why a request is refused: the client-facing error and a fixed reason for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub error: AuthError,
    pub reason: &'static str,
}

impl Denial {
    pub const fn new(error: AuthError, reason: &'static str) -> Denial {
        Denial { error, reason }
    }
}

/// One configured instance; everything computable from the config is computed here, once.
pub struct Jwt {
    policy: Policy,
    jwks_url: String,
    jwks: Arc<JwksCache>,
    admission: Admission,
    hide_credentials: bool,
    /// `get_headers` instead of `get_header("authorization")`.
    read_all_headers: bool,
    /// The services' verified-token cache, its keyed hash and signature counter.
    verified: Arc<VerifiedCache>,
    keyed: KeyedHash,
    signature_checks: Arc<AtomicU64>,
    clock: Clock,
}

fn start(json: &[u8], services: &Services) -> Result<Plugin, StartError> {
    let config = config::Config::parse(json)?;
    let policy = config.policy()?;
    let read_all_headers = !policy.cookie_names.is_empty() || policy.spoof == SpoofPolicy::Reject;
    let reserved = Reserved::new(&config.extra_reserved_headers, &["authorization", "cookie"])?;
    let jwks = services.jwks(&config.jwks_url).map_err(|e| {
        StartError::field("jwks_url", format!("cannot build the HTTP client: {}", crate::upstream::chain(&e)))
    })?;
    Ok(Plugin::Jwt(Arc::new(Jwt {
        jwks,
        verified: Arc::clone(&services.verified_tokens),
        keyed: services.keyed.clone(),
        signature_checks: Arc::clone(&services.signature_checks),
        clock: services.clock.clone(),
        jwks_url: config.jwks_url,
        admission: Admission { set_kong_consumer: config.set_kong_consumer, hide: Vec::new(), reserved },
        hide_credentials: config.hide_credentials,
        read_all_headers,
        policy,
    })))
}

/// What the one read of the request found.
struct Request {
    presented: Presented,
    spoofed: bool,
    /// `Cookie` values, kept only when a token cookie may have to be hidden.
    cookies: Vec<Vec<u8>>,
}

impl Jwt {
    pub async fn access(&self, pdk: &mut Pdk) -> anyhow::Result<()> {
        let request = self.read(pdk).await.context("reading the credential")?;
        if request.spoofed && self.policy.spoof == SpoofPolicy::Reject {
            return self.deny(pdk, Denial::new(AuthError::SpoofedIdentityHeader, "reserved header sent")).await;
        }
        let (token, source) = match request.presented {
            Presented::One { token, source } => (token, source),
            Presented::Ambiguous => {
                return self.deny(pdk, Denial::new(AuthError::CredentialAmbiguous, "different tokens")).await
            }
            Presented::Nothing if self.policy.credential_optional => {
                return self.pass_anonymous(pdk).await;
            }
            Presented::Nothing => return self.deny(pdk, Denial::new(AuthError::CredentialMissing, "no token")).await,
        };
        match self.authenticate(pdk, &token).await {
            Ok(identity) => self.admit(pdk, &identity, source, &request.cookies).await,
            Err(denial) => self.deny(pdk, denial).await,
        }
    }

    /// The one PDK read: the Authorization header, or every header when cookies or the
    /// reserved-header check need them.
    async fn read(&self, pdk: &mut Pdk) -> anyhow::Result<Request> {
        if !self.read_all_headers {
            let value = pdk.request().get_header("authorization").await?;
            let bearer = token::bearer_tokens(value.as_deref());
            return Ok(Request { presented: token::choose(bearer, Vec::new()), spoofed: false, cookies: Vec::new() });
        }
        let headers = pdk.request().get_headers().await?;
        let bearer = token::bearer_tokens(headers.get_all("authorization").iter().map(Vec::as_slice));
        let cookies = headers.get_all("cookie");
        let from_cookies = if self.policy.cookie_names.is_empty() {
            Vec::new()
        } else {
            token::cookie_tokens(cookies.iter().map(Vec::as_slice), &self.policy.cookie_names)
        };
        let spoofed = self.admission.reserved.any_in(&headers);
        let cookies = if self.hide_credentials && !from_cookies.is_empty() { cookies.to_vec() } else { Vec::new() };
        Ok(Request { presented: token::choose(bearer, from_cookies), spoofed, cookies })
    }

    /// Decides about one token; no PDK call (the JWKS may be fetched over HTTP).
    async fn authenticate(&self, pdk: &mut Pdk, raw: &str) -> Result<Identity, Denial> {
        let now = self.clock.unix_now() as i64;
        let cache = &self.verified;
        let cache_key = verified_cache::cache_key(&self.keyed, &self.jwks_url, raw);
        let (token, verified_by) = match cache.get(&cache_key, now) {
            Some((token, key)) => (token, Some(key)),
            None => (Arc::new(Token::parse(raw)?), None),
        };
        let (alg, kid) = token.check_unverified(&self.policy, now)?;
        let key = match self.jwks.key_for(kid, &self.policy.jwks).await {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => {
                if verified_by.is_some() {
                    cache.remove(&cache_key);
                }
                return Err(Denial::new(AuthError::CredentialInvalid, "kid not in the JWKS"));
            }
            Lookup::Unavailable { retry_after_secs } => {
                return Err(Denial::new(AuthError::AuthorityUnavailable { retry_after_secs }, "JWKS unavailable"))
            }
        };
        let hit = verified_by.is_some_and(|k| Arc::ptr_eq(&k, &key));
        let status = if hit { "hit" } else { "miss" };
        pdk.note_cache(status);
        metrics::global().cache(NAME, status);
        if !hit {
            let checks = self.signature_checks.fetch_add(1, Ordering::Relaxed) + 1;
            let verified = verify::verify_signature_aside(raw, alg, &key).await;
            tracing::debug!(plugin = NAME, kid = %key.kid, ok = verified.is_ok(), signature_checks = checks, "signature checked");
            verified?;
            cache.insert(cache_key, token.clone(), key, now);
        }
        verify::identity(&token, &self.policy)
    }

    async fn admit(
        &self,
        pdk: &mut Pdk,
        identity: &Identity,
        source: Source,
        cookies: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let mut changes: HeaderChanges = identity.header_changes(&self.admission.reserved, &[]);
        if self.hide_credentials {
            match source {
                Source::Authorization => {
                    changes.remove("Authorization");
                }
                Source::Cookie => {
                    match token::cookie_header_without(cookies.iter().map(Vec::as_slice), &self.policy.cookie_names) {
                        Some(rest) => changes.set("Cookie", &rest),
                        None => changes.remove("Cookie"),
                    };
                }
            }
        }
        tracing::debug!(plugin = NAME, outcome = "ok", "token accepted");
        identity::admit_with(pdk, identity, &self.admission, changes).await.context("admitting the request")
    }

    /// `credential_optional` without a token: every reserved header removed, 2 PDK calls.
    /// Unlike [`identity::pass_anonymous`] this does not first ask `kong.ctx.shared` whether
    /// an earlier plugin authenticated the request: ghasi-jwt (1450) runs before
    /// ghasi-api-key-lookup (1250), so no plugin of ours can have, and the question would
    /// cost a round trip on every anonymous request.
    async fn pass_anonymous(&self, pdk: &mut Pdk) -> anyhow::Result<()> {
        tracing::debug!(plugin = NAME, outcome = "anonymous", "no token, credential_optional");
        identity::strip_reserved(pdk, &self.admission.reserved).await.context("passing the anonymous request")
    }

    async fn deny(&self, pdk: &mut Pdk, denial: Denial) -> anyhow::Result<()> {
        tracing::debug!(plugin = NAME, outcome = denial.error.code(), reason = denial.reason, "token refused");
        outcome::reject(pdk, Scheme::Bearer, denial.error).await.context("answering the refusal")
    }
}
