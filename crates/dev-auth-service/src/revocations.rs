//! Revocation push: publishes the plugin server's revocation messages on a Redis channel when
//! the data changes through the admin API or the in-process handle (off unless
//! `--redis-url` / [`crate::DevAuthService::publish_revocations`] is given).
//!
//! | change | message |
//! |---|---|
//! | a key revoked, replaced or removed | `{"type":"api_key","key_id":"…"}` |
//! | an account suspended | `{"type":"account","account_id":"…"}` |
//! | signing keys rotated, or a kid unpublished | `{"type":"jwks"}` (no URL: the service cannot know under which URL the plugin servers reach it) |
//!
//! Why a task and a queue: the in-process handle's methods are synchronous, and messages should
//! go out in the order of the changes; the HTTP handlers wait for the publish to finish so that
//! an admin call returns after its message is out.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// A publish that takes longer than this is given up (logged).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

type Job = (String, Option<oneshot::Sender<()>>);

/// The publishing side of the revocation channel.
pub(crate) struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    /// Checks the URL and starts the publishing task (connects on first use, reconnects after
    /// a failure).
    pub fn start(redis_url: &str, channel: &str) -> anyhow::Result<Publisher> {
        let client = redis::Client::open(redis_url).context("--redis-url: not a usable Redis URL")?;
        anyhow::ensure!(!channel.is_empty(), "--revocation-channel must not be empty");
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_task(client, channel.to_owned(), rx));
        Ok(Publisher { jobs })
    }

    /// Queues `message`; the returned receiver fires once it was published (or given up).
    pub fn send(&self, message: Value) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let _ = self.jobs.send((message.to_string(), Some(done)));
        rx
    }
}

pub(crate) fn api_key(key_id: &str) -> Value {
    json!({"type": "api_key", "key_id": key_id})
}

pub(crate) fn account(account_id: &str) -> Value {
    json!({"type": "account", "account_id": account_id})
}

pub(crate) fn jwks() -> Value {
    json!({"type": "jwks"})
}

async fn publish_task(client: redis::Client, channel: String, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    while let Some((payload, done)) = jobs.recv().await {
        // One retry on a fresh connection: the kept one may have died since the last message.
        for attempt in 0..2 {
            let result = tokio::time::timeout(PUBLISH_TIMEOUT, async {
                if conn.is_none() {
                    conn = Some(client.get_multiplexed_async_connection().await?);
                }
                let c = conn.as_mut().expect("just connected");
                redis::cmd("PUBLISH").arg(&channel).arg(&payload).query_async::<i64>(c).await
            })
            .await;
            match result {
                Ok(Ok(receivers)) => {
                    tracing::info!(%channel, receivers, message = %payload, "revocation published");
                    break;
                }
                Ok(Err(e)) => {
                    conn = None;
                    tracing::warn!(%channel, attempt, "revocation publish failed: {e}");
                }
                Err(_) => {
                    conn = None;
                    tracing::warn!(%channel, attempt, "revocation publish timed out");
                }
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}
