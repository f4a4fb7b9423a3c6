//! ⑧ Events: one Tokio task per `HandleEvent`, connected to the RPCs by a channel pair.
//!
//! The task runs the plugin's phase handler with a [`Pdk`]. Each PDK call arrives here as an
//! [`Outgoing`] message and becomes the result of the RPC currently being served; the reply
//! half is *parked* in the registry until Kong's next Step (on whichever connection) hands
//! in the result. The event ends when the handler returns (`"ret"`) or sends a terminal
//! call (`kong.response.exit`/`error`, never answered by Kong, §5.4). Parked events that
//! Kong abandons are reaped ([`Registry::reap_abandoned`]), which ends their task.
//!
//! A handler that fails or panics must still answer, or Kong's request would stall for
//! 60 s and then proceed without the plugin (§16): in `access` it answers 500 (fail closed).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rmpv::Value;
use tokio::sync::{mpsc, oneshot};

use crate::instance::Instance;
use crate::pdk::{Outgoing, Pdk, StepReply};
use crate::plugins::Phase;
use crate::registry::{CountGuard, Registry};
use crate::rpc::value::map;

/// The body of the 500 sent when a plugin fails unexpectedly (RFC 9457 problem details).
const INTERNAL_ERROR_BODY: &[u8] =
    br#"{"type":"about:blank","title":"Internal Server Error","status":500,"code":"internal_error","detail":"The authentication plugin failed unexpectedly."}"#;

/// An event waiting for Kong's answer to a PDK call.
pub struct ParkedEvent {
    rx: mpsc::Receiver<Outgoing>,
    reply: oneshot::Sender<StepReply>,
    since: Instant,
}

impl ParkedEvent {
    pub fn parked_for(&self) -> Duration {
        self.since.elapsed()
    }
}

/// Spawns the event task; returns its id and the receiving end of its messages.
pub fn start(registry: &Registry, instance: Arc<Instance>, phase: Phase) -> (u64, mpsc::Receiver<Outgoing>) {
    let event_id = registry.next_event_id();
    let (tx, rx) = mpsc::channel(1);
    let guard = registry.live_event_guard();
    let pdk = Pdk::new(tx, instance.spec.name, instance.route.clone());
    tokio::spawn(run(instance, phase, pdk, event_id, guard));
    (event_id, rx)
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

/// Waits for the event's next message and turns it into the step result map for Kong:
/// `{EventId, Data: {Method, Args}}` for a PDK call, `{EventId, Data: "ret"}` at the end.
pub async fn advance(registry: &Registry, event_id: u64, mut rx: mpsc::Receiver<Outgoing>) -> Value {
    let data = match rx.recv().await {
        Some(Outgoing::Call { method, args, reply }) => {
            registry.park(event_id, ParkedEvent { rx, reply, since: Instant::now() });
            call_data(&method, args)
        }
        // Terminal: the receiver is dropped here; later calls of the task fail fast.
        Some(Outgoing::Terminal { method, args }) => call_data(&method, args),
        None => Value::from("ret"),
    };
    map([("EventId", Value::from(event_id)), ("Data", data)])
}

fn call_data(method: &str, args: Vec<Value>) -> Value {
    map([("Method", Value::from(method)), ("Args", Value::Array(args))])
}

/// Hands Kong's answer to the parked event and waits for its next message.
pub async fn step(registry: &Registry, event_id: u64, reply: StepReply) -> Result<Value, String> {
    let ParkedEvent { rx, reply: tx, .. } =
        registry.unpark(event_id).ok_or_else(|| format!("no running event {event_id}"))?;
    // If the task is gone, `advance` sees the closed channel and answers "ret".
    let _ = tx.send(reply);
    Ok(advance(registry, event_id, rx).await)
}
