//! Configuration of the dev auth-service: the accounts, users and API keys it knows, the token
//! issuer and the optional service token, read from a small YAML file (see
//! `dev/auth-service.yaml`) or built in code ([`DevConfig::for_tests`]).
//!
//! Why `Debug` is hand-written here: API keys and the service token are secrets even in a stand-in
//! (the product's rule is that no key ever reaches a log line), so printing a config redacts them.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Default `iss` of minted tokens.
pub const DEFAULT_ISSUER: &str = "https://api.ghasi.io";
/// Default path of the API-key lookup endpoint.
pub const DEFAULT_LOOKUP_PATH: &str = "/internal/v1/api-keys/verify";
/// Default lifetime of minted tokens, seconds.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 3600;

/// Whether an account may use its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Keys of the account verify.
    #[default]
    Active,
    /// Every key of the account answers 403.
    Suspended,
}

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Account id (`account_id` in lookups and tokens).
    pub id: String,
    /// Active or suspended.
    #[serde(default)]
    pub status: AccountStatus,
}

/// A user of an account; minted tokens carry its id as `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User id (`sub`, `user_id`).
    pub id: String,
    /// The account the user belongs to.
    pub account_id: String,
    /// `email` claim.
    pub email: String,
    /// `roles` claim.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A customer API key as auth-service stores it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The secret key a client presents.
    pub key: String,
    /// Public identifier of the key (`key_id` in lookups).
    pub key_id: String,
    /// Owning account.
    pub account_id: String,
    /// Owning user, if the key belongs to one.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Kong consumer username to report, if any.
    #[serde(default)]
    pub consumer_username: Option<String>,
    /// Expiry (RFC 3339 in YAML); past it the key answers 403.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Revoked keys answer 403.
    #[serde(default)]
    pub revoked: bool,
}

impl ApiKey {
    /// A plain active key of `account_id` with no user, consumer username or expiry.
    pub fn new(key: impl Into<String>, key_id: impl Into<String>, account_id: impl Into<String>) -> Self {
        ApiKey {
            key: key.into(),
            key_id: key_id.into(),
            account_id: account_id.into(),
            user_id: None,
            consumer_username: None,
            expires_at: None,
            revoked: false,
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"<redacted>")
            .field("key_id", &self.key_id)
            .field("account_id", &self.account_id)
            .field("user_id", &self.user_id)
            .field("consumer_username", &self.consumer_username)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// Everything the dev auth-service serves.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// `iss` of minted tokens.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` put in minted tokens by default (none when unset).
    #[serde(default)]
    pub audience: Option<String>,
    /// When set, lookups must carry `Authorization: Bearer <service_token>` (else 401).
    #[serde(default)]
    pub service_token: Option<String>,
    /// Path of the lookup endpoint.
    #[serde(default = "default_lookup_path")]
    pub lookup_path: String,
    /// Default lifetime of minted tokens, seconds.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: i64,
    /// Accounts.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// API keys.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
}

fn default_issuer() -> String {
    DEFAULT_ISSUER.to_owned()
}
fn default_lookup_path() -> String {
    DEFAULT_LOOKUP_PATH.to_owned()
}
fn default_token_ttl() -> i64 {
    DEFAULT_TOKEN_TTL_SECS
}

impl Default for DevConfig {
    /// No accounts, users or keys; default issuer and lookup path; no service token.
    fn default() -> Self {
        DevConfig {
            issuer: default_issuer(),
            audience: None,
            service_token: None,
            lookup_path: default_lookup_path(),
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            accounts: Vec::new(),
            users: Vec::new(),
            api_keys: Vec::new(),
        }
    }
}

impl fmt::Debug for DevConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("service_token", &self.service_token.as_ref().map(|_| "<redacted>"))
            .field("lookup_path", &self.lookup_path)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("accounts", &self.accounts)
            .field("users", &self.users)
            .field("api_keys", &self.api_keys)
            .finish()
    }
}

impl DevConfig {
    /// Parses and validates a YAML document.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let config: DevConfig = serde_yaml::from_str(text).context("parsing dev auth-service YAML")?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks references and uniqueness, so that a typo in the YAML fails at start rather than
    /// as a puzzling 404 later. Error messages name key ids, never keys.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.lookup_path.starts_with('/') {
            bail!("lookup_path must start with '/': {:?}", self.lookup_path);
        }
        if ["/.well-known/", "/dev/", "/_dev/"].iter().any(|p| self.lookup_path.starts_with(p)) {
            bail!("lookup_path {:?} collides with the service's own routes", self.lookup_path);
        }
        // A literal path: axum reads `{name}` as a capture and refuses segments starting with
        // `:` or `*` (its pre-0.8 capture syntax), so such a path would not mean itself.
        if self.lookup_path.contains(['{', '}']) || self.lookup_path.split('/').any(|s| s.starts_with([':', '*'])) {
            bail!(
                "lookup_path {:?} must be a literal path (no `{{`, `}}`, `:name` or `*name` segments)",
                self.lookup_path
            );
        }
        if self.service_token.as_deref() == Some("") {
            bail!("service_token is empty (omit it to accept lookups without one)");
        }
        let mut accounts = HashSet::new();
        for a in &self.accounts {
            if !accounts.insert(a.id.as_str()) {
                bail!("duplicate account {:?}", a.id);
            }
        }
        let mut users = HashSet::new();
        for u in &self.users {
            if !users.insert(u.id.as_str()) {
                bail!("duplicate user {:?}", u.id);
            }
            if !accounts.contains(u.account_id.as_str()) {
                bail!("user {:?}: unknown account {:?}", u.id, u.account_id);
            }
        }
        let mut keys = HashSet::new();
        let mut key_ids = HashSet::new();
        for k in &self.api_keys {
            check_api_key(k, self)?;
            if !keys.insert(k.key.as_str()) {
                bail!("api key {:?}: the same key string is configured twice", k.key_id);
            }
            if !key_ids.insert(k.key_id.as_str()) {
                bail!("duplicate key_id {:?}", k.key_id);
            }
        }
        Ok(())
    }
}

/// Checks one key's references against `config` (shared with keys added at run time).
pub(crate) fn check_api_key(k: &ApiKey, config_or_directory: &impl KnowsIds) -> anyhow::Result<()> {
    if k.key.is_empty() || k.key_id.is_empty() {
        bail!("api key {:?}: key and key_id must not be empty", k.key_id);
    }
    if !config_or_directory.has_account(&k.account_id) {
        bail!("api key {:?}: unknown account {:?}", k.key_id, k.account_id);
    }
    if let Some(user) = &k.user_id {
        match config_or_directory.user_account(user) {
            None => bail!("api key {:?}: unknown user {:?}", k.key_id, user),
            Some(acc) if acc != k.account_id => {
                bail!("api key {:?}: user {:?} belongs to account {:?}", k.key_id, user, acc)
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What [`check_api_key`] needs to know about accounts and users.
pub(crate) trait KnowsIds {
    fn has_account(&self, id: &str) -> bool;
    fn user_account(&self, user_id: &str) -> Option<&str>;
}

impl KnowsIds for DevConfig {
    fn has_account(&self, id: &str) -> bool {
        self.accounts.iter().any(|a| a.id == id)
    }
    fn user_account(&self, user_id: &str) -> Option<&str> {
        self.users.iter().find(|u| u.id == user_id).map(|u| u.account_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
issuer: https://issuer.test
service_token: tok
accounts:
  - id: acc1
  - id: acc2
    status: suspended
users:
  - id: u1
    account_id: acc1
    email: u1@example.test
    roles: [admin]
api_keys:
  - key: secret-one
    key_id: k1
    account_id: acc1
    user_id: u1
    expires_at: 2030-01-02T03:04:05Z
  - key: secret-two
    key_id: k2
    account_id: acc2
    revoked: true
"#;

    #[test]
    fn parses_yaml_with_defaults() {
        let c = DevConfig::from_yaml(YAML).unwrap();
        assert_eq!(c.issuer, "https://issuer.test");
        assert_eq!(c.lookup_path, DEFAULT_LOOKUP_PATH);
        assert_eq!(c.token_ttl_secs, DEFAULT_TOKEN_TTL_SECS);
        assert_eq!(c.accounts[0].status, AccountStatus::Active);
        assert_eq!(c.accounts[1].status, AccountStatus::Suspended);
        assert_eq!(c.api_keys[0].expires_at.unwrap().unix_timestamp(), 1_893_553_445);
        assert!(c.api_keys[1].revoked);
        assert_eq!(DevConfig::from_yaml("{}").unwrap().issuer, DEFAULT_ISSUER);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = DevConfig::from_yaml(YAML).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-one") && !shown.contains("secret-two"), "{shown}");
        assert!(!shown.contains("\"tok\""), "{shown}");
        assert!(shown.contains("k1"));
    }

    #[test]
    fn rejects_broken_references_and_typos() {
        for (bad, why) in [
            (YAML.replace("account_id: acc1\n    email", "account_id: nope\n    email"), "user account"),
            (YAML.replace("user_id: u1", "user_id: u9"), "key user"),
            (YAML.replace("key_id: k2", "key_id: k1"), "duplicate key_id"),
            (YAML.replace("secret-two", "secret-one"), "duplicate key"),
            (YAML.replace("revoked: true", "revokd: true"), "unknown field"),
            (YAML.replace("status: suspended", "status: frozen"), "bad status"),
            (format!("{YAML}lookup_path: /dev/verify\n"), "route collision"),
        ] {
            let err = DevConfig::from_yaml(&bad).err().unwrap_or_else(|| panic!("accepted: {why}"));
            assert!(!format!("{err:#}").contains("secret-one"), "{why}: error leaks a key");
        }
    }

    #[test]
    fn lookup_path_must_be_literal() {
        for bad in ["/keys/{id}", "/keys/:id", "/keys/*rest", "/:verify"] {
            let err = DevConfig::from_yaml(&format!("{YAML}lookup_path: {bad:?}\n")).expect_err(bad);
            assert!(format!("{err:#}").contains("must be a literal path"), "{bad}: {err:#}");
        }
        let ok = DevConfig::from_yaml(&format!("{YAML}lookup_path: /v1/api-keys:verify\n")).unwrap();
        assert_eq!(ok.lookup_path, "/v1/api-keys:verify");
    }

    #[test]
    fn a_key_of_another_accounts_user_is_rejected() {
        let mut c = DevConfig::from_yaml(YAML).unwrap();
        c.api_keys[1].user_id = Some("u1".into());
        assert!(c.validate().is_err());
    }
}
