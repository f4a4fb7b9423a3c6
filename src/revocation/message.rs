//! The revocation message contract (auth-service publishes, every plugin server applies): one
//! JSON object per Redis pub/sub message.
//!
//! | message | effect |
//! |---|---|
//! | `{"type":"api_key","key_id":"…"}` | drops the cached verdict of that key (its id as the lookup returned it) |
//! | `{"type":"account","account_id":"…"}` | drops every cached verdict of that account |
//! | `{"type":"jwks"}`, optionally `"jwks_url":"…"` | refreshes that JWKS (every JWKS in use without a URL) now and forgets its unknown kids |
//! | `{"type":"flush"}` | drops every cached API-key verdict |
//!
//! Other members are ignored (room for later additions); an unknown type or a message without
//! its field is counted and ignored, never an error for the subscriber.

use std::sync::Arc;

use serde_json::Value;

use crate::plugins::jwt::config::JwksTiming;
use crate::services::Services;

/// A message larger than this is not ours (a real one is < 300 bytes): ignored unread.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// One revocation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    ApiKey { key_id: String },
    Account { account_id: String },
    Jwks { jwks_url: Option<String> },
    Flush,
}

/// Why a message was ignored (the `kind` label of `ghasi_revocation_malformed_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON object")]
    NotJson,
    #[error("unknown type")]
    UnknownType,
    #[error("a required member is missing, empty or not a string")]
    MissingField,
}

impl Malformed {
    pub fn label(self) -> &'static str {
        match self {
            Malformed::TooLarge => "too_large",
            Malformed::NotJson => "not_json",
            Malformed::UnknownType => "unknown_type",
            Malformed::MissingField => "missing_field",
        }
    }
}

impl Message {
    pub fn parse(payload: &[u8]) -> Result<Message, Malformed> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(Malformed::TooLarge);
        }
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(payload) else {
            return Err(Malformed::NotJson);
        };
        let text = |name: &str| match doc.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(Malformed::MissingField),
        };
        match text("type")?.as_str() {
            "api_key" => Ok(Message::ApiKey { key_id: text("key_id")? }),
            "account" => Ok(Message::Account { account_id: text("account_id")? }),
            "jwks" => match doc.get("jwks_url") {
                None | Some(Value::Null) => Ok(Message::Jwks { jwks_url: None }),
                Some(_) => Ok(Message::Jwks { jwks_url: Some(text("jwks_url")?) }),
            },
            "flush" => Ok(Message::Flush),
            _ => Err(Malformed::UnknownType),
        }
    }

    /// The `kind` label of `ghasi_revocation_messages`.
    pub fn label(&self) -> &'static str {
        match self {
            Message::ApiKey { .. } => "api_key",
            Message::Account { .. } => "account",
            Message::Jwks { .. } => "jwks",
            Message::Flush => "flush",
        }
    }
}

/// The caches messages act on: those of one [`Services`] (the process's; a test's own).
#[derive(Clone)]
pub struct Targets(Arc<Services>);

impl Targets {
    pub fn new(services: Arc<Services>) -> Targets {
        Targets(services)
    }

    /// Applies `message`; returns the API-key verdicts dropped. Cache eviction takes the
    /// caches' locks briefly (in chunks); JWKS refreshes run on their own tasks, so a slow
    /// JWKS endpoint never holds up the next message.
    pub fn apply(&self, message: &Message) -> usize {
        let caches = || self.0.api_key_caches().into_iter();
        match message {
            Message::ApiKey { key_id } => caches().map(|c| c.evict_key_id(key_id)).sum(),
            Message::Account { account_id } => caches().map(|c| c.evict_account(account_id)).sum(),
            Message::Flush => self.flush(),
            Message::Jwks { jwks_url } => {
                let wanted = jwks_url.as_deref().map(|u| u.trim_end_matches('/'));
                for (url, cache) in self.0.jwks_caches() {
                    if wanted.is_none_or(|w| w == url.trim_end_matches('/')) {
                        tokio::spawn(async move { cache.refresh_now(&JwksTiming::defaults()).await });
                    }
                }
                0
            }
        }
    }

    /// Drops every cached API-key verdict (also done on every (re)subscription).
    pub fn flush(&self) -> usize {
        self.0.api_key_caches().iter().map(|c| c.flush()).sum()
    }

    /// Where the subscriber reports its state.
    pub fn health(&self) -> &crate::health::Health {
        &self.0.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_act_on_the_caches_of_the_services_they_were_given() {
        use crate::plugins::api_key::cache::{Lifetimes, Verdict};
        use crate::plugins::api_key::client::{Answer, KeyInfo};
        use std::time::Duration;
        let lifetimes = Lifetimes {
            positive: Duration::from_secs(60),
            negative: Duration::from_secs(15),
            stale_if_error: Duration::ZERO,
            refresh_ahead: Duration::ZERO,
        };
        let fill = |services: &Services, key_id: &'static str| {
            let cache = services.api_key_cache("http://auth/lookup#");
            let digest = services.keyed.digest(key_id.as_bytes());
            let info = KeyInfo {
                account_id: "acc".into(),
                key_id: key_id.into(),
                user_id: None,
                consumer_username: None,
                expires_at: None,
            };
            async move {
                let (verdict, _) = cache.resolve(digest, lifetimes, move || async move { Answer::Valid(info) }).await;
                assert!(matches!(verdict, Verdict::Valid(_)));
            }
        };
        let (ours, theirs) = (Services::for_tests(), Services::for_tests());
        fill(&ours, "key_1").await;
        fill(&ours, "key_2").await;
        fill(&theirs, "key_1").await;
        let targets = Targets::new(ours.clone());
        assert_eq!(targets.apply(&Message::ApiKey { key_id: "key_1".into() }), 1);
        assert_eq!(targets.apply(&Message::Flush), 1, "key_2 was left");
        assert_eq!(theirs.api_key_caches()[0].len(), (1, 0), "other services are not touched");
    }

    #[test]
    fn the_four_messages_of_the_contract_parse() {
        let parse = |s: &str| Message::parse(s.as_bytes());
        assert_eq!(parse(r#"{"type":"api_key","key_id":"key_1"}"#), Ok(Message::ApiKey { key_id: "key_1".into() }));
        assert_eq!(
            parse(r#"{"type":"account","account_id":"acc_1","at":"2026-01-01T00:00:00Z"}"#),
            Ok(Message::Account { account_id: "acc_1".into() }),
            "extra members are ignored"
        );
        assert_eq!(parse(r#"{"type":"jwks"}"#), Ok(Message::Jwks { jwks_url: None }));
        assert_eq!(
            parse(r#"{"type":"jwks","jwks_url":"http://a/jwks"}"#),
            Ok(Message::Jwks { jwks_url: Some("http://a/jwks".into()) })
        );
        assert_eq!(parse(r#"{"type":"flush"}"#), Ok(Message::Flush));
    }

    #[test]
    fn malformed_messages_say_why() {
        let parse = |s: &str| Message::parse(s.as_bytes());
        assert_eq!(parse("revoke key_1"), Err(Malformed::NotJson));
        assert_eq!(parse(r#"["api_key","key_1"]"#), Err(Malformed::NotJson));
        assert_eq!(parse(r#"{"type":"reboot"}"#), Err(Malformed::UnknownType));
        assert_eq!(parse(r#"{"key_id":"key_1"}"#), Err(Malformed::MissingField));
        assert_eq!(parse(r#"{"type":"api_key"}"#), Err(Malformed::MissingField));
        assert_eq!(parse(r#"{"type":"api_key","key_id":""}"#), Err(Malformed::MissingField));
        assert_eq!(parse(r#"{"type":"account","account_id":7}"#), Err(Malformed::MissingField));
        assert_eq!(parse(r#"{"type":"jwks","jwks_url":7}"#), Err(Malformed::MissingField));
        let huge = format!(r#"{{"type":"flush","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(parse(&huge), Err(Malformed::TooLarge));
    }
}
