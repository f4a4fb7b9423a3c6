//! The live account/user/key data and the lookup decision of the verify endpoint.
//!
//! Why separate from the HTTP layer: the verdict for a key (valid, unknown, revoked, suspended,
//! expired) is the heart of the contract, and tests change the data at run time (add a key, revoke
//! it, suspend an account) while the server is serving.

use std::collections::HashMap;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{check_api_key, Account, AccountStatus, ApiKey, DevConfig, KnowsIds, User};

/// The `200` body of the lookup endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedKey {
    /// Owning account.
    pub account_id: String,
    /// Public id of the key.
    pub key_id: String,
    /// Owning user, `null` if none.
    pub user_id: Option<String>,
    /// Consumer username, `null` if none.
    pub consumer_username: Option<String>,
    /// RFC 3339 expiry, `null` if the key does not expire.
    pub expires_at: Option<String>,
}

/// What the lookup endpoint answers for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `200` with the body.
    Valid(VerifiedKey),
    /// `404`: no such key.
    Unknown,
    /// `403`: the key was revoked.
    Revoked,
    /// `403`: the key's account is suspended.
    Suspended,
    /// `403`: the key's `expires_at` has passed.
    Expired,
}

/// Accounts, users and keys, indexed.
#[derive(Debug, Default)]
pub struct Directory {
    accounts: HashMap<String, Account>,
    users: HashMap<String, User>,
    keys: HashMap<String, ApiKey>,
}

impl KnowsIds for Directory {
    fn has_account(&self, id: &str) -> bool {
        self.accounts.contains_key(id)
    }
    fn user_account(&self, user_id: &str) -> Option<&str> {
        self.users.get(user_id).map(|u| u.account_id.as_str())
    }
}

impl Directory {
    /// Indexes a validated config.
    pub fn from_config(config: &DevConfig) -> Self {
        Directory {
            accounts: config.accounts.iter().map(|a| (a.id.clone(), a.clone())).collect(),
            users: config.users.iter().map(|u| (u.id.clone(), u.clone())).collect(),
            keys: config.api_keys.iter().map(|k| (k.key.clone(), k.clone())).collect(),
        }
    }

    /// The lookup decision for `key` at time `now`. Revocation wins over suspension, which wins
    /// over expiry (all are 403 anyway).
    pub fn verify(&self, key: &str, now: OffsetDateTime) -> Verdict {
        let Some(k) = self.keys.get(key) else {
            return Verdict::Unknown;
        };
        if k.revoked {
            return Verdict::Revoked;
        }
        match self.accounts.get(&k.account_id).map(|a| a.status) {
            Some(AccountStatus::Active) => {}
            // A key whose account vanished is unusable; treat it like a suspended one.
            Some(AccountStatus::Suspended) | None => return Verdict::Suspended,
        }
        if matches!(k.expires_at, Some(exp) if exp <= now) {
            return Verdict::Expired;
        }
        Verdict::Valid(VerifiedKey {
            account_id: k.account_id.clone(),
            key_id: k.key_id.clone(),
            user_id: k.user_id.clone(),
            consumer_username: k.consumer_username.clone(),
            expires_at: k.expires_at.map(|t| t.format(&Rfc3339).expect("RFC 3339 formatting")),
        })
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }

    /// Adds or replaces an account.
    pub fn upsert_account(&mut self, account: Account) {
        self.accounts.insert(account.id.clone(), account);
    }

    /// Adds or replaces a user (its account must exist).
    pub fn upsert_user(&mut self, user: User) -> anyhow::Result<()> {
        anyhow::ensure!(self.has_account(&user.account_id), "user {:?}: unknown account", user.id);
        self.users.insert(user.id.clone(), user);
        Ok(())
    }

    /// Adds or replaces a key (its account and user must exist, and its key_id must not belong to
    /// another key).
    pub fn upsert_api_key(&mut self, key: ApiKey) -> anyhow::Result<()> {
        check_api_key(&key, self)?;
        anyhow::ensure!(
            !self.keys.values().any(|k| k.key_id == key.key_id && k.key != key.key),
            "key_id {:?} already belongs to another key",
            key.key_id
        );
        self.keys.insert(key.key.clone(), key);
        Ok(())
    }

    /// The public id of `key`, if known.
    pub fn key_id(&self, key: &str) -> Option<String> {
        self.keys.get(key).map(|k| k.key_id.clone())
    }

    /// Marks a key revoked (or not). False for an unknown key.
    pub fn set_revoked(&mut self, key: &str, revoked: bool) -> bool {
        self.keys.get_mut(key).map(|k| k.revoked = revoked).is_some()
    }

    /// Forgets a key entirely (lookups then answer 404). False for an unknown key.
    pub fn remove_api_key(&mut self, key: &str) -> bool {
        self.keys.remove(key).is_some()
    }

    /// Sets an account's status. False for an unknown account.
    pub fn set_account_status(&mut self, id: &str, status: AccountStatus) -> bool {
        self.accounts.get_mut(id).map(|a| a.status = status).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn dir() -> Directory {
        let mut c = DevConfig::default();
        c.accounts.push(Account { id: "a".into(), status: AccountStatus::Active });
        c.accounts.push(Account { id: "s".into(), status: AccountStatus::Suspended });
        c.users.push(User { id: "u".into(), account_id: "a".into(), email: "u@x.test".into(), roles: vec![] });
        let mut k = ApiKey::new("k-user", "id-user", "a");
        k.user_id = Some("u".into());
        k.consumer_username = Some("cu".into());
        c.api_keys.push(k);
        c.api_keys.push(ApiKey::new("k-plain", "id-plain", "a"));
        c.api_keys.push(ApiKey { revoked: true, ..ApiKey::new("k-rev", "id-rev", "a") });
        c.api_keys.push(ApiKey::new("k-susp", "id-susp", "s"));
        let exp = OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
        c.api_keys.push(ApiKey { expires_at: Some(exp), ..ApiKey::new("k-exp", "id-exp", "a") });
        c.validate().unwrap();
        Directory::from_config(&c)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
    }

    #[test]
    fn verdicts() {
        let d = dir();
        let Verdict::Valid(v) = d.verify("k-user", now()) else { panic!() };
        assert_eq!(v.account_id, "a");
        assert_eq!(v.key_id, "id-user");
        assert_eq!(v.user_id.as_deref(), Some("u"));
        assert_eq!(v.consumer_username.as_deref(), Some("cu"));
        assert_eq!(v.expires_at, None);
        let Verdict::Valid(v) = d.verify("k-plain", now()) else { panic!() };
        assert_eq!((v.user_id, v.consumer_username), (None, None));
        assert_eq!(d.verify("nope", now()), Verdict::Unknown);
        assert_eq!(d.verify("", now()), Verdict::Unknown);
        assert_eq!(d.verify("k-rev", now()), Verdict::Revoked);
        assert_eq!(d.verify("k-susp", now()), Verdict::Suspended);
        let Verdict::Valid(v) = d.verify("k-exp", now()) else { panic!() };
        assert_eq!(v.expires_at.as_deref(), Some("2033-05-18T03:33:20Z"));
        assert_eq!(d.verify("k-exp", now() + Duration::days(3650)), Verdict::Expired);
    }

    #[test]
    fn run_time_changes() {
        let mut d = dir();
        assert!(d.set_revoked("k-user", true));
        assert_eq!(d.verify("k-user", now()), Verdict::Revoked);
        assert!(d.set_account_status("a", AccountStatus::Suspended));
        assert_eq!(d.verify("k-plain", now()), Verdict::Suspended);
        assert!(!d.set_revoked("nope", true));
        assert!(d.remove_api_key("k-plain"));
        assert_eq!(d.verify("k-plain", now()), Verdict::Unknown);
        d.upsert_api_key(ApiKey::new("k-new", "id-new", "s")).unwrap();
        assert_eq!(d.verify("k-new", now()), Verdict::Suspended);
        assert!(d.upsert_api_key(ApiKey::new("k-x", "id-x", "missing")).is_err());
        assert!(d.upsert_api_key(ApiKey::new("k-y", "id-new", "a")).is_err(), "key_id reuse");
    }
}
