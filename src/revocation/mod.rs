//! Revocation push (`--revocation-redis-url`): a Redis pub/sub subscriber that applies
//! auth-service's revocation messages ([`message`]) to this process's caches, so that a revoked
//! key stops working on every node within about a second instead of after `cache_ttl`.
//!
//! * **Its own task.** The subscriber never runs on the request path: a message takes the
//!   caches' locks only briefly (eviction in chunks), and a Redis that hangs or answers garbage
//!   stalls only this task. A ping every [`PING_EVERY`] that gets no answer within
//!   [`PING_TIMEOUT`] counts as a lost connection.
//! * **Flush on every (re)subscription.** Pub/sub loses what is published while nobody is
//!   subscribed, so after each successful SUBSCRIBE every cached API-key verdict is dropped (the
//!   next request looks its key up again).
//! * **Reconnects with backoff**, capped at [`MAX_BACKOFF`] and jittered, so a fleet does not
//!   reconnect in lock step. Meanwhile requests are served with the normal cache lifetimes;
//!   `/health` (`revocation`) and the metrics say so; `/ready` does not depend on it.

pub mod message;

use std::time::Duration;

use futures::StreamExt;
use rand::RngExt;
use redis::aio::{PubSubSink, PubSubStream};

use crate::health::RevocationHealth;
use crate::metrics::{self, KindLabels};
pub use message::{Malformed, Message, Targets};

/// Default channel (`--revocation-channel`).
pub const DEFAULT_CHANNEL: &str = "ghasi:revocations";
/// Connecting and subscribing must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a quiet subscription checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A setting that stops the start (the message names the flag; never the URL, which may hold
/// a password).
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error(
        "--revocation-redis-url (GHASI_REVOCATION_REDIS_URL): not a usable Redis URL \
         (expected redis://[user:password@]host[:port][/db], rediss://… for TLS, or unix:///path)"
    )]
    BadUrl,
    #[error("--revocation-channel (GHASI_REVOCATION_CHANNEL): must not be empty")]
    EmptyChannel,
}

/// The subscriber's settings.
pub struct Subscription {
    client: redis::Client,
    channel: String,
}

impl Subscription {
    /// `None` when `url` is unset or empty (revocation push off).
    pub fn from_settings(url: Option<&str>, channel: &str) -> Result<Option<Subscription>, SettingError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| url.starts_with(s));
        let client = redis::Client::open(url).ok().filter(|_| scheme_ok).ok_or(SettingError::BadUrl)?;
        if channel.is_empty() {
            return Err(SettingError::EmptyChannel);
        }
        Ok(Some(Subscription { client, channel: channel.to_owned() }))
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Connects and subscribes, once.
    async fn subscribe(&self) -> Result<(PubSubSink, PubSubStream), String> {
        let connect = async {
            let pubsub = self.client.get_async_pubsub().await?;
            let (mut sink, stream) = pubsub.split();
            sink.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(subscribed)) => Ok(subscribed),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        }
    }
}

/// A Redis error for the log and `/health`: its kind and detail, which carry no URL.
fn describe(e: &redis::RedisError) -> String {
    format!("{:?}: {e}", e.kind())
}

/// Subscribes for the life of the process (spawn it), applying messages to `targets`.
pub async fn run(subscription: Subscription, targets: Targets) {
    let m = &metrics::global().revocation;
    let mut failures: u32 = 0;
    let mut subscriptions: u64 = 0;
    let mut last_error: Option<String> = None;
    let report = |state: &'static str, last_error: &Option<String>, subscriptions: u64| {
        targets.health().report_revocation(RevocationHealth {
            state,
            channel: subscription.channel.clone(),
            last_error: last_error.clone(),
            subscriptions,
        })
    };
    loop {
        report("connecting", &last_error, subscriptions);
        match subscription.subscribe().await {
            Ok((sink, stream)) => {
                failures = 0;
                subscriptions += 1;
                m.subscriptions.inc();
                m.connected.set(1);
                report("subscribed", &last_error, subscriptions);
                // After SUBSCRIBE, not before: a message published in between is then either
                // received or made moot by the flush.
                let flushed = targets.flush();
                m.evictions.get_or_create(&KindLabels { kind: "subscribe" }).inc_by(flushed as u64);
                tracing::info!(channel = %subscription.channel, flushed, "subscribed to the revocation channel");
                let why = listen(sink, stream, &targets).await;
                m.connected.set(0);
                tracing::warn!(
                    channel = %subscription.channel,
                    "revocation channel lost ({why}); cached API keys live their normal cache_ttl until resubscribed"
                );
                last_error = Some(why);
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(channel = %subscription.channel, "cannot subscribe to the revocation channel: {why}; retrying with backoff");
                } else {
                    tracing::debug!(channel = %subscription.channel, failures, "cannot subscribe to the revocation channel: {why}");
                }
                last_error = Some(why);
            }
        }
        report("disconnected", &last_error, subscriptions);
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Applies messages until the connection ends or stops answering pings; returns why.
async fn listen(mut sink: PubSubSink, mut stream: PubSubStream, targets: &Targets) -> String {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => handle(msg.get_payload_bytes(), targets),
                None => return "connection closed".into(),
            },
            _ = ping.tick() => match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("ping failed: {}", describe(&e)),
                Err(_) => return format!("no answer to a ping within {} s", PING_TIMEOUT.as_secs()),
            },
        }
    }
}

/// One message: applied, or counted and ignored.
pub fn handle(payload: &[u8], targets: &Targets) {
    let m = &metrics::global().revocation;
    match Message::parse(payload) {
        Ok(message) => {
            let kind = message.label();
            let evicted = targets.apply(&message);
            m.messages.get_or_create(&KindLabels { kind }).inc();
            m.evictions.get_or_create(&KindLabels { kind }).inc_by(evicted as u64);
            tracing::debug!(kind, evicted, "revocation message applied");
        }
        Err(why) => {
            m.malformed.get_or_create(&KindLabels { kind: why.label() }).inc();
            tracing::debug!(bytes = payload.len(), "revocation message ignored: {why}");
        }
    }
}

/// Wait before the next attempt after `failures` consecutive failed ones: quick after a lost
/// subscription (0), then 0.5, 1, 2, … s up to [`MAX_BACKOFF`]; each −50 %…+0 % jittered.
fn backoff(failures: u32) -> Duration {
    let base = match failures {
        0 => Duration::from_millis(200),
        n => (Duration::from_millis(500) * (1u32 << (n - 1).min(10))).min(MAX_BACKOFF),
    };
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_the_flag_and_hide_the_url() {
        assert!(Subscription::from_settings(None, DEFAULT_CHANNEL).unwrap().is_none());
        assert!(Subscription::from_settings(Some(""), DEFAULT_CHANNEL).unwrap().is_none(), "empty env = off");
        let ok = Subscription::from_settings(Some("redis://:pw@127.0.0.1:6379/0"), DEFAULT_CHANNEL).unwrap().unwrap();
        assert_eq!(ok.channel(), "ghasi:revocations");
        assert!(Subscription::from_settings(Some("rediss://redis.internal:6380"), "c").unwrap().is_some());
        for bad in ["http://:s3cret@host:6379", "s3cret@host", "redis://:s3cret@[::1"] {
            let err = Subscription::from_settings(Some(bad), DEFAULT_CHANNEL).err().unwrap().to_string();
            assert!(err.contains("--revocation-redis-url"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        let err = Subscription::from_settings(Some("redis://h"), "").err().unwrap().to_string();
        assert!(err.contains("--revocation-channel"), "{err}");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert!(backoff(0) <= Duration::from_millis(200));
        assert!(backoff(1) >= Duration::from_millis(250) && backoff(1) <= Duration::from_millis(500));
        for n in [7, 20, u32::MAX] {
            let b = backoff(n);
            assert!(b <= MAX_BACKOFF && b >= MAX_BACKOFF / 2, "{b:?}");
        }
    }
}
