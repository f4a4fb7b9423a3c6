//! ⑧ Events: one boxed future per `HandleEvent`, driven by the RPCs of that event.
//!
//! The future runs the plugin's phase handler with a [`Pdk`]. HandleEvent polls it until it
//! leaves a PDK call in its [`Mailbox`] (or finishes); that call becomes the RPC's result and
//! the future is *parked* in the registry until Kong's next Step (on whichever connection)
//! brings the answer and polls it again, right there in that connection's task. The event
//! ends when the handler returns (`"ret"`) or makes a terminal call
//! (`kong.response.exit`/`error`, never answered by Kong, docs/protocol.md#terminal-calls). Parked
//! events that Kong abandons are reaped ([`Registry::reap_abandoned`]): dropping the future ends
//! them.
//!
//! Why not a task per event: every Step would then hop task to task twice (hand the answer
//! over, wait for the next call), each hop a wake-up and often a thread switch. Those hops
//! cost more CPU than the plugin work itself (benchmarked, docs/benchmark.md). While the
//! plugin awaits real I/O (auth-service, JWKS) the connection task serving the RPC awaits
//! with it, which is what it would do anyway: Kong never pipelines (docs/protocol.md#connections).
//!
//! A handler that fails or panics must still answer, or Kong's request would stall for
//! 60 s and then proceed without the plugin (docs/protocol.md#connections): in `access` it answers
//! 500 (fail closed).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

// Parking is timed on tokio's clock (the same instant type in production), so tests with
// paused time can age parked events without sleeping.
use tokio::time::Instant as ParkClock;

use futures::FutureExt;

use crate::instance::Instance;
use crate::pdk::{Outgoing, Pdk, SharedMailbox, StepReply};
use crate::plugins::Phase;
use crate::registry::{CountGuard, Registry};
use crate::rpc::{StepData, StepResult};

/// The body of the 500 sent when a plugin fails unexpectedly (RFC 9457 problem details).
const INTERNAL_ERROR_BODY: &[u8] =
    br#"{"type":"about:blank","title":"Internal Server Error","status":500,"code":"internal_error","detail":"The authentication plugin failed unexpectedly."}"#;

type EventFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An event waiting for Kong's answer to a PDK call.
pub struct ParkedEvent {
    future: EventFuture,
    mailbox: SharedMailbox,
    since: ParkClock,
}

impl ParkedEvent {
    pub fn parked_for(&self) -> Duration {
        self.since.elapsed()
    }
}

/// Starts an event and runs it up to its first PDK call (or its end).
pub async fn start(registry: &Registry, instance: Arc<Instance>, phase: Phase) -> StepResult {
    let event_id = registry.next_event_id();
    let mailbox = SharedMailbox::default();
    let guard = registry.live_event_guard();
    let pdk = Pdk::new(mailbox.clone(), instance.spec.name, instance.route.clone());
    let future = Box::pin(run(instance, phase, pdk, event_id, guard));
    advance(registry, event_id, future, mailbox).await
}

/// Why a Step cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Never started, already ended (`"ret"`, exit) or reaped: Kong gives up on the request.
    #[error("no running event {event_id}")]
    NotRunning { event_id: u64 },
}

/// Hands Kong's answer to the parked event and runs it up to its next PDK call.
pub async fn step(registry: &Registry, event_id: u64, reply: StepReply) -> Result<StepResult, EventError> {
    let ParkedEvent { future, mailbox, .. } = registry.unpark(event_id).ok_or(EventError::NotRunning { event_id })?;
    mailbox.lock().put_reply(reply);
    Ok(advance(registry, event_id, future, mailbox).await)
}

/// Polls the event until it leaves a call in its mailbox or finishes. While it waits on
/// anything else (auth-service, a timer) it is pending with our waker, as any future is.
async fn advance(registry: &Registry, event_id: u64, mut future: EventFuture, mailbox: SharedMailbox) -> StepResult {
    let (outgoing, finished) = std::future::poll_fn(|cx| {
        let finished = future.as_mut().poll(cx).is_ready();
        match mailbox.lock().take_outgoing() {
            None if !finished => Poll::Pending,
            outgoing => Poll::Ready((outgoing, finished)),
        }
    })
    .await;
    let data = match outgoing {
        Some(Outgoing::Call { method, args }) if !finished => {
            registry.park(event_id, ParkedEvent { future, mailbox, since: ParkClock::now() });
            StepData::Call { method, args }
        }
        // A call the handler gave up on before returning (a dropped future): nobody awaits
        // its answer, so the event is over.
        Some(Outgoing::Call { .. }) | None => StepData::Ret,
        Some(Outgoing::Terminal { method, args }) => {
            if !finished {
                // Whatever the handler still does after the exit (Kong has moved on).
                tokio::spawn(future);
            }
            StepData::Call { method, args }
        }
    };
    StepResult { event_id, data }
}

async fn run(instance: Arc<Instance>, phase: Phase, mut pdk: Pdk, event_id: u64, _live: CountGuard) {
    let started = Instant::now();
    let outcome = AssertUnwindSafe(instance.plugin.handle(phase, &mut pdk)).catch_unwind().await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(panic_message(&panic)),
    };
    let plugin = instance.spec.name;
    let (outcome, cache) = pdk.notes();
    match failure {
        None => tracing::debug!(
            plugin,
            route = &*instance.route,
            phase = phase.as_str(),
            event_id,
            outcome = outcome.unwrap_or("none"),
            cache = cache.unwrap_or("none"),
            elapsed_us = started.elapsed().as_micros() as u64,
            "event done"
        ),
        Some(why) if pdk.is_finished() => {
            tracing::debug!(plugin, phase = phase.as_str(), event_id, "event ended without Kong: {why}")
        }
        Some(why) => {
            tracing::error!(plugin, phase = phase.as_str(), event_id, "plugin failed, failing closed: {why}");
            if phase == Phase::Access {
                pdk.record_outcome("internal_error");
                let headers = [("Content-Type", "application/problem+json")];
                let _ = pdk.response().exit(500, INTERNAL_ERROR_BODY, &headers).await;
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panic: {text}")
}
