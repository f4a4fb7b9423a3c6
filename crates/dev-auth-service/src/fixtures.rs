//! The deterministic data set of [`DevConfig::for_tests`], as named constants, so that the
//! plugin server's integration tests can refer to "the revoked key" instead of repeating strings.
//!
//! | key constant | key_id | account | user | consumer_username | lookup answer |
//! |---|---|---|---|---|---|
//! | [`KEY_ALICE`] | [`KEY_ID_ALICE`] | [`ACCOUNT_ACME`] | [`USER_ALICE`] | [`CONSUMER_ALICE`] | 200 |
//! | [`KEY_SERVICE`] | [`KEY_ID_SERVICE`] | [`ACCOUNT_ACME`] | none | none | 200, `user_id` and `consumer_username` null |
//! | [`KEY_GLOBEX`] | [`KEY_ID_GLOBEX`] | [`ACCOUNT_GLOBEX`] | [`USER_DAVE`] | none | 200 (a second account, for per-account limits) |
//! | [`KEY_EXPIRING`] | [`KEY_ID_EXPIRING`] | [`ACCOUNT_ACME`] | [`USER_BOB`] | none | 200 with `expires_at` ≈ [`EXPIRING_KEY_LIFETIME`] after `for_tests()` ran, then 403 |
//! | [`KEY_EXPIRED`] | [`KEY_ID_EXPIRED`] | [`ACCOUNT_ACME`] | none | none | 403 (expired 2020-01-01) |
//! | [`KEY_REVOKED`] | [`KEY_ID_REVOKED`] | [`ACCOUNT_ACME`] | [`USER_ALICE`] | none | 403 (revoked) |
//! | [`KEY_SUSPENDED`] | [`KEY_ID_SUSPENDED`] | [`ACCOUNT_SUSPENDED`] | [`USER_CAROL`] | none | 403 (account suspended) |
//! | [`KEY_UNKNOWN`] | — | — | — | — | 404 (never configured) |
//!
//! Users: [`USER_ALICE`] (acme, `alice@acme.test`, roles `admin`, `billing`), [`USER_BOB`] (acme,
//! `bob@acme.test`, role `viewer`), [`USER_CAROL`] (suspended account, `carol@suspended.test`,
//! role `admin`), [`USER_DAVE`] (globex, `dave@globex.test`, no roles).
//! Service token: [`SERVICE_TOKEN`]. Issuer: [`crate::DEFAULT_ISSUER`]. No audience. Minted
//! tokens live 300 s by default.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::{Account, AccountStatus, ApiKey, DevConfig, User, DEFAULT_ISSUER, DEFAULT_LOOKUP_PATH};

/// Active account with most of the keys.
pub const ACCOUNT_ACME: &str = "acc_test_acme";
/// A second active account.
pub const ACCOUNT_GLOBEX: &str = "acc_test_globex";
/// A suspended account.
pub const ACCOUNT_SUSPENDED: &str = "acc_test_suspended";

/// User of acme, roles `admin`, `billing`.
pub const USER_ALICE: &str = "usr_test_alice";
/// Email of [`USER_ALICE`].
pub const EMAIL_ALICE: &str = "alice@acme.test";
/// User of acme, role `viewer`.
pub const USER_BOB: &str = "usr_test_bob";
/// User of the suspended account, role `admin`.
pub const USER_CAROL: &str = "usr_test_carol";
/// User of globex, no roles.
pub const USER_DAVE: &str = "usr_test_dave";

/// Valid key of acme owned by alice, with a consumer username.
pub const KEY_ALICE: &str = "test_key_alice_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_ALICE: &str = "key_test_alice";
/// The consumer username reported for [`KEY_ALICE`].
pub const CONSUMER_ALICE: &str = "acme-alice";
/// Valid key of acme with no user and no consumer username.
pub const KEY_SERVICE: &str = "test_key_service_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_SERVICE: &str = "key_test_service";
/// Valid key of globex owned by dave.
pub const KEY_GLOBEX: &str = "test_key_globex_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_GLOBEX: &str = "key_test_globex";
/// Key of acme (user bob) that expires [`EXPIRING_KEY_LIFETIME`] after `for_tests()` ran.
pub const KEY_EXPIRING: &str = "test_key_expiring_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_EXPIRING: &str = "key_test_expiring";
/// Key of acme that expired on 2020-01-01.
pub const KEY_EXPIRED: &str = "test_key_expired_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_EXPIRED: &str = "key_test_expired";
/// Revoked key of acme (user alice).
pub const KEY_REVOKED: &str = "test_key_revoked_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_REVOKED: &str = "key_test_revoked";
/// Key of the suspended account (user carol).
pub const KEY_SUSPENDED: &str = "test_key_suspended_0123456789abcdef";
/// Its key_id.
pub const KEY_ID_SUSPENDED: &str = "key_test_suspended";
/// A key that is not configured.
pub const KEY_UNKNOWN: &str = "test_key_unknown_0123456789abcdef";

/// The service token lookups must present.
pub const SERVICE_TOKEN: &str = "test-service-token";
/// How long after `for_tests()` [`KEY_EXPIRING`] expires (rounded up to a whole second).
pub const EXPIRING_KEY_LIFETIME: Duration = Duration::from_secs(3);
/// Default lifetime of tokens minted with the test config, seconds.
pub const TEST_TOKEN_TTL_SECS: i64 = 300;

impl DevConfig {
    /// The deterministic test data set described in [`crate::fixtures`]; with
    /// `service_token` = [`SERVICE_TOKEN`] (set it to `None` to accept lookups without one).
    pub fn for_tests() -> Self {
        let user = |id: &str, account: &str, email: &str, roles: &[&str]| User {
            id: id.into(),
            account_id: account.into(),
            email: email.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let key = |key: &str, key_id: &str, account: &str, user: Option<&str>| ApiKey {
            user_id: user.map(str::to_owned),
            ..ApiKey::new(key, key_id, account)
        };
        let now = OffsetDateTime::now_utc();
        let expiring = now.replace_nanosecond(0).expect("0 ns is valid")
            + time::Duration::seconds(EXPIRING_KEY_LIFETIME.as_secs() as i64 + 1);
        let expired = OffsetDateTime::from_unix_timestamp(1_577_836_800).expect("2020-01-01");
        DevConfig {
            issuer: DEFAULT_ISSUER.into(),
            audience: None,
            service_token: Some(SERVICE_TOKEN.into()),
            lookup_path: DEFAULT_LOOKUP_PATH.into(),
            token_ttl_secs: TEST_TOKEN_TTL_SECS,
            accounts: vec![
                Account { id: ACCOUNT_ACME.into(), status: AccountStatus::Active },
                Account { id: ACCOUNT_GLOBEX.into(), status: AccountStatus::Active },
                Account { id: ACCOUNT_SUSPENDED.into(), status: AccountStatus::Suspended },
            ],
            users: vec![
                user(USER_ALICE, ACCOUNT_ACME, EMAIL_ALICE, &["admin", "billing"]),
                user(USER_BOB, ACCOUNT_ACME, "bob@acme.test", &["viewer"]),
                user(USER_CAROL, ACCOUNT_SUSPENDED, "carol@suspended.test", &["admin"]),
                user(USER_DAVE, ACCOUNT_GLOBEX, "dave@globex.test", &[]),
            ],
            api_keys: vec![
                ApiKey {
                    consumer_username: Some(CONSUMER_ALICE.into()),
                    ..key(KEY_ALICE, KEY_ID_ALICE, ACCOUNT_ACME, Some(USER_ALICE))
                },
                key(KEY_SERVICE, KEY_ID_SERVICE, ACCOUNT_ACME, None),
                key(KEY_GLOBEX, KEY_ID_GLOBEX, ACCOUNT_GLOBEX, Some(USER_DAVE)),
                ApiKey {
                    expires_at: Some(expiring),
                    ..key(KEY_EXPIRING, KEY_ID_EXPIRING, ACCOUNT_ACME, Some(USER_BOB))
                },
                ApiKey { expires_at: Some(expired), ..key(KEY_EXPIRED, KEY_ID_EXPIRED, ACCOUNT_ACME, None) },
                ApiKey { revoked: true, ..key(KEY_REVOKED, KEY_ID_REVOKED, ACCOUNT_ACME, Some(USER_ALICE)) },
                key(KEY_SUSPENDED, KEY_ID_SUSPENDED, ACCOUNT_SUSPENDED, Some(USER_CAROL)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{Directory, Verdict};

    #[test]
    fn the_test_set_is_valid_and_answers_as_documented() {
        let c = DevConfig::for_tests();
        c.validate().unwrap();
        let d = Directory::from_config(&c);
        let now = OffsetDateTime::now_utc();
        for k in [KEY_ALICE, KEY_SERVICE, KEY_GLOBEX, KEY_EXPIRING] {
            assert!(matches!(d.verify(k, now), Verdict::Valid(_)), "{k}");
        }
        assert_eq!(d.verify(KEY_EXPIRED, now), Verdict::Expired);
        assert_eq!(d.verify(KEY_REVOKED, now), Verdict::Revoked);
        assert_eq!(d.verify(KEY_SUSPENDED, now), Verdict::Suspended);
        assert_eq!(d.verify(KEY_UNKNOWN, now), Verdict::Unknown);
        let later = now + time::Duration::seconds(EXPIRING_KEY_LIFETIME.as_secs() as i64 + 2);
        assert_eq!(d.verify(KEY_EXPIRING, later), Verdict::Expired);
    }
}
