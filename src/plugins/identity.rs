//! The identity contract both plugins honour (docs/design.md#identity-contract) and the
//! round-trip-frugal way of applying it (docs/design.md#round-trips-are-the-cost).
//!
//! On success exactly one `kong.service.request.set_headers` writes the identity headers
//! *and* removes every reserved header we do not set plus the credential headers to hide
//! (an empty array removes a header), which also defeats client-sent spoofs; then one
//! `kong.ctx.shared.set("authenticated_groups", …)` feeds the fail-closed acl guard; and,
//! only with `set_kong_consumer`, one `kong.client.authenticate`.

use std::sync::Arc;

use crate::pdk::client::Consumer;
use crate::pdk::request::Headers;
use crate::pdk::service::HeaderChanges;
use crate::pdk::{Pdk, PdkError};
use crate::plugins::schema::{self, Field};
use crate::plugins::StartError;

/// The identity headers we write (lower-case).
pub const IDENTITY_HEADERS: [&str; 4] = ["x-account-id", "x-user-id", "x-consumer-username", "x-credential-identifier"];

/// Headers no client may send upstream through a route we protect (lower-case): ours, plus
/// the consumer and credential headers Kong's own auth plugins set (Kong's `constants.lua`
/// `HEADERS`, and the OAuth2 plugin's two), because upstreams written for Kong trust exactly
/// these. Reserved headers we do not set are removed in the same `set_headers` call.
pub const RESERVED_HEADERS: [&str; 11] = [
    "x-account-id",
    "x-user-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-groups",
    "x-anonymous-consumer",
    "x-authenticated-groups",
    "x-authenticated-scope",
    "x-authenticated-userid",
];

/// `extra_reserved_headers`, the same in both plugins' config tables.
pub const EXTRA_RESERVED_FIELD: Field = Field::strings("extra_reserved_headers")
    .default(schema::Default::Strs(&[]))
    .token()
    .describe("More request headers no client may send upstream on this route (removed, or 400 in reject mode), in addition to the identity headers and Kong's X-Consumer-*/X-Credential-Identifier/X-Anonymous-Consumer/X-Authenticated-* headers.");

/// The reserved set of one instance: [`RESERVED_HEADERS`] plus the route's extra names,
/// lower-case and deduplicated, built once at StartInstance.
#[derive(Debug, Clone)]
pub struct Reserved(Arc<[String]>);

impl Reserved {
    /// `extra` must be validated header names; `credentials` are the names the plugin reads
    /// its credential from, which cannot also be reserved (they would be removed before use).
    pub fn new(extra: &[String], credentials: &[&str]) -> Result<Reserved, StartError> {
        let mut names: Vec<String> = RESERVED_HEADERS.iter().map(|n| (*n).to_owned()).collect();
        for name in extra {
            let name = name.to_ascii_lowercase();
            if credentials.iter().any(|c| c.eq_ignore_ascii_case(&name)) {
                return Err(StartError::field(
                    "extra_reserved_headers",
                    format!("{name:?} carries the credential this plugin reads"),
                ));
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(Reserved(names.into()))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Whether the client sent any reserved header.
    pub fn any_in(&self, headers: &Headers) -> bool {
        self.0.iter().any(|r| headers.contains(r))
    }

    /// One batch removing every reserved header.
    fn removals(&self) -> HeaderChanges {
        let mut changes = HeaderChanges::new();
        for name in self.0.iter() {
            changes.remove(name);
        }
        changes
    }
}

/// `set_kong_consumer`, the same in both plugins' config tables.
pub const SET_KONG_CONSUMER_FIELD: Field = Field::boolean("set_kong_consumer")
    .default(schema::Default::Bool(false))
    .describe("Also call kong.client.authenticate with a virtual consumer (one more round trip).");

/// `on_spoofed_identity_header`, the same in both plugins' config tables.
pub const SPOOF_POLICY_FIELD: Field = Field::string("on_spoofed_identity_header")
    .default(schema::Default::Str("strip"))
    .one_of(&["strip", "reject"])
    .describe("What to do when the client sends a reserved header itself (X-Account-Id, X-User-Id, X-Consumer-*, X-Credential-Identifier, X-Anonymous-Consumer, X-Authenticated-*, extra_reserved_headers): strip it, or answer 400.");

/// `on_spoofed_identity_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoofPolicy {
    Strip,
    Reject,
}

impl SpoofPolicy {
    pub fn parse(s: &str) -> SpoofPolicy {
        if s == "reject" {
            SpoofPolicy::Reject
        } else {
            SpoofPolicy::Strip
        }
    }
}

/// Who the request is, as the upstream will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account_id: String,
    pub user_id: Option<String>,
    pub consumer_username: String,
    pub credential_identifier: Option<String>,
    /// Published in `kong.ctx.shared.authenticated_groups` (the configured group first).
    pub groups: Vec<String>,
}

/// What an instance decided once at StartInstance about admitting requests.
#[derive(Debug, Clone)]
pub struct Admission {
    pub set_kong_consumer: bool,
    /// Credential headers removed upstream on success (`hide_credentials`), lower-case.
    pub hide: Vec<String>,
    /// Removed upstream on every path that lets a request through, unless we set them.
    pub reserved: Reserved,
}

impl Identity {
    /// The header batch for a successful request: the identity, every other reserved header
    /// removed, and the credential headers in `hide` removed.
    pub fn header_changes(&self, reserved: &Reserved, hide: &[String]) -> HeaderChanges {
        let mut changes = HeaderChanges::new();
        changes.set("X-Account-Id", &self.account_id);
        match &self.user_id {
            Some(u) => changes.set("X-User-Id", u),
            None => changes.remove("X-User-Id"),
        };
        changes.set("X-Consumer-Username", &self.consumer_username);
        match &self.credential_identifier {
            Some(c) => changes.set("X-Credential-Identifier", c),
            None => changes.remove("X-Credential-Identifier"),
        };
        for name in reserved.names().iter().filter(|n| !IDENTITY_HEADERS.contains(&n.as_str())) {
            changes.remove(name);
        }
        for name in hide {
            changes.remove(name);
        }
        changes
    }
}

/// Lets an authenticated request through: 2 PDK calls, 3 with `set_kong_consumer`.
pub async fn admit(pdk: &mut Pdk, identity: &Identity, admission: &Admission) -> Result<(), PdkError> {
    admit_with(pdk, identity, admission, identity.header_changes(&admission.reserved, &admission.hide)).await
}

/// [`admit`] with a caller-built header batch: `identity.header_changes(…)` plus changes that
/// `hide` cannot express (e.g. a `Cookie` header rewritten without the token cookie), still
/// in the one `set_headers` call.
pub async fn admit_with(
    pdk: &mut Pdk,
    identity: &Identity,
    admission: &Admission,
    changes: HeaderChanges,
) -> Result<(), PdkError> {
    pdk.record_outcome("ok");
    pdk.service_request().set_headers(changes).await?;
    pdk.ctx_shared().set_strings(AUTHENTICATED_GROUPS, &identity.groups).await?;
    if admission.set_kong_consumer {
        // A virtual consumer and no credential: on Kong 3.4–3.7 acl honours authenticated
        // groups only for a consumer without a credential (docs/design.md#identity-contract).
        let consumer = Consumer { id: &identity.account_id, username: &identity.consumer_username };
        pdk.client().authenticate(&consumer).await?;
    }
    Ok(())
}

/// Lets a request without this plugin's credential through (`credential_optional`).
///
/// If a plugin that ran earlier (ghasi-jwt has the higher priority) already authenticated
/// the request, its identity headers stand: it has overwritten or removed every reserved
/// header, and stripping them now would leave a JWT-authenticated request on an "API key
/// or JWT" route without `X-Account-Id`. Otherwise every reserved header is removed, so no
/// client-sent identity reaches the upstream. 2 PDK calls (1 when already authenticated).
pub async fn pass_anonymous(pdk: &mut Pdk, reserved: &Reserved) -> Result<(), PdkError> {
    if already_authenticated(pdk).await? {
        pdk.record_outcome("already_authenticated");
        return Ok(());
    }
    strip_reserved(pdk, reserved).await
}

/// Lets an anonymous request through with every reserved header removed: 1 PDK call.
pub async fn strip_reserved(pdk: &mut Pdk, reserved: &Reserved) -> Result<(), PdkError> {
    pdk.record_outcome("anonymous");
    pdk.service_request().set_headers(reserved.removals()).await
}

/// The `kong.ctx.shared` key the acl plugin reads the request's groups from.
pub const AUTHENTICATED_GROUPS: &str = "authenticated_groups";

/// Whether a plugin that ran earlier authenticated the request: it published a non-empty
/// [`AUTHENTICATED_GROUPS`] list. 1 PDK call.
pub async fn already_authenticated(pdk: &mut Pdk) -> Result<bool, PdkError> {
    let groups = pdk.ctx_shared().get_strings(AUTHENTICATED_GROUPS).await?;
    Ok(groups.is_some_and(|g| !g.is_empty()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pdk::testing::drive_json;

    fn alice() -> Identity {
        Identity {
            account_id: "acc_1".into(),
            user_id: Some("usr_1".into()),
            consumer_username: "alice".into(),
            credential_identifier: None,
            groups: vec!["ghasi-authenticated".into(), "admin".into()],
        }
    }

    #[test]
    fn admitting_costs_two_calls_and_a_third_for_a_kong_consumer() {
        for set_kong_consumer in [false, true] {
            let admission = Admission { set_kong_consumer, hide: vec![], reserved: Reserved::new(&[], &[]).unwrap() };
            let answers = vec![json!(null); 2 + usize::from(set_kong_consumer)];
            let (calls, result) = drive_json(answers, move |mut pdk| {
                Box::pin(async move {
                    let done = admit(&mut pdk, &alice(), &admission).await;
                    (done, pdk.notes().0)
                })
            });
            assert!(matches!(result, (Ok(()), Some("ok"))), "{result:?}");
            let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
            let mut expected = vec!["kong.service.request.set_headers", "kong.ctx.shared.set"];
            if set_kong_consumer {
                expected.push("kong.client.authenticate");
                assert_eq!(calls[2].1, json!([{"id": "acc_1", "username": "alice"}]), "a consumer, no credential");
            }
            assert_eq!(methods, expected);
            assert_eq!(calls[0].1[0]["X-Account-Id"], "acc_1");
            assert_eq!(calls[0].1[0]["X-Credential-Identifier"], json!([]), "removed: the client may have sent one");
            assert_eq!(calls[1].1, json!(["authenticated_groups", ["ghasi-authenticated", "admin"]]));
        }
    }

    #[test]
    fn passing_anonymously_keeps_an_earlier_plugins_identity_only() {
        let reserved = Reserved::new(&[], &[]).unwrap();
        for (published, expected_calls, outcome) in [
            (json!(["ghasi-authenticated"]), 1, "already_authenticated"),
            (json!([]), 2, "anonymous"),
            (json!(null), 2, "anonymous"),
        ] {
            let mut answers = vec![published.clone()];
            answers.resize(expected_calls, json!(null));
            let reserved = reserved.clone();
            let (calls, result) = drive_json(answers, move |mut pdk| {
                Box::pin(async move {
                    let done = pass_anonymous(&mut pdk, &reserved).await;
                    (done, pdk.notes().0)
                })
            });
            assert!(matches!(result, (Ok(()), Some(o)) if o == outcome), "{published}: {result:?}");
            assert_eq!(calls[0], ("kong.ctx.shared.get".to_owned(), json!(["authenticated_groups"])));
            if expected_calls == 2 {
                let removed = calls[1].1[0].as_object().unwrap();
                assert_eq!(calls[1].0, "kong.service.request.set_headers");
                assert_eq!(removed.len(), RESERVED_HEADERS.len(), "every reserved header is removed");
                assert!(removed.values().all(|v| *v == json!([])));
            }
        }
    }

    #[test]
    fn success_batch_sets_identity_and_removes_the_rest() {
        let id = Identity {
            account_id: "acc".into(),
            user_id: None,
            consumer_username: "acc".into(),
            credential_identifier: Some("key-1".into()),
            groups: vec!["ghasi-authenticated".into()],
        };
        let reserved = Reserved::new(&["X-Tenant".into()], &["x-api-key"]).unwrap();
        let changes = id.header_changes(&reserved, &["x-api-key".into()]);
        let entries: Vec<(String, Option<&str>)> =
            changes.entries().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        // `Some(Some(value))` is set, `Some(None)` removed, `None` untouched.
        let get = |n: &str| entries.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("x-account-id"), Some(Some("acc")));
        assert_eq!(get("x-user-id"), Some(None), "absent user id removes a spoofed one");
        assert_eq!(get("x-credential-identifier"), Some(Some("key-1")));
        assert_eq!(get("x-api-key"), Some(None));
        for name in RESERVED_HEADERS.iter().chain(&["x-tenant"]) {
            assert!(get(name).is_some(), "{name} must be written or removed");
        }
        assert_eq!(get("x-consumer-id"), Some(None), "Kong's consumer headers are removed");
        assert_eq!(get("x-consumer-username"), Some(Some("acc")), "ours is set, not removed");
    }

    #[test]
    fn the_reserved_set_takes_extra_names_but_never_the_credential() {
        let r = Reserved::new(&["X-Tenant".into(), "x-consumer-id".into()], &["x-api-key"]).unwrap();
        assert_eq!(r.names().len(), RESERVED_HEADERS.len() + 1, "lower-cased and deduplicated");
        assert!(r.names().iter().any(|n| n == "x-tenant") && r.names().iter().any(|n| n == "x-anonymous-consumer"));
        let err = Reserved::new(&["X-API-Key".into()], &["x-api-key"]).unwrap_err();
        assert_eq!(
            err,
            StartError::field("extra_reserved_headers", "\"x-api-key\" carries the credential this plugin reads")
        );
    }
}
