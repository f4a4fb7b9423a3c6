//! ⑦ Process-wide state shared by every connection: plugins, instances, parked events, id
//! counters, and the [`Services`] plugins start with. Kong sends one event's Steps over
//! different pooled connections, so nothing lives in a connection
//! (docs/protocol.md#connections). Cheap to clone (an `Arc`), like
//! mini-redis's `Db`. Locks are held only for map operations, never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::event::ParkedEvent;
use crate::instance::Instance;
use crate::plugins::PluginSpec;
use crate::services::Services;

#[derive(Clone)]
pub struct Registry(Arc<Inner>);

struct Inner {
    plugins: Vec<&'static PluginSpec>,
    services: Arc<Services>,
    instances: RwLock<HashMap<u64, Arc<Instance>>>,
    events: Mutex<HashMap<u64, ParkedEvent>>,
    next_instance: AtomicU64,
    next_event: AtomicU64,
    /// Events alive (running plugin code or parked waiting for Kong).
    live_events: AtomicUsize,
    /// RPCs being served right now (drain waits for them too).
    busy_requests: AtomicUsize,
    reaped_events: AtomicU64,
    event_timeout: Duration,
}

/// A start value for id counters that a restarted process will not repeat: Kong caches
/// instance ids per worker and a restarted server that reuses them would run another
/// route's config for a stale id (Kong issue #8370). Seconds since the epoch in the high
/// bits, random low bits; stays below 2^53 so Lua numbers hold it exactly.
fn fresh_id_base() -> u64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    ((secs & 0x7fff_ffff) << 21) | (rand::random::<u64>() & 0xf_ffff)
}

impl Registry {
    pub fn new(plugins: Vec<&'static PluginSpec>, services: Arc<Services>, event_timeout: Duration) -> Self {
        Registry(Arc::new(Inner {
            plugins,
            services,
            instances: RwLock::new(HashMap::new()),
            events: Mutex::new(HashMap::new()),
            next_instance: AtomicU64::new(fresh_id_base()),
            next_event: AtomicU64::new(fresh_id_base()),
            live_events: AtomicUsize::new(0),
            busy_requests: AtomicUsize::new(0),
            reaped_events: AtomicU64::new(0),
            event_timeout,
        }))
    }

    /// The caches, clients, clock and health every plugin instance starts with.
    pub fn services(&self) -> &Arc<Services> {
        &self.0.services
    }

    pub fn plugins(&self) -> &[&'static PluginSpec] {
        &self.0.plugins
    }
    pub fn plugin(&self, name: &str) -> Option<&'static PluginSpec> {
        self.0.plugins.iter().copied().find(|p| p.name == name)
    }

    pub fn next_instance_id(&self) -> u64 {
        self.0.next_instance.fetch_add(1, Ordering::Relaxed)
    }
    pub fn next_event_id(&self) -> u64 {
        self.0.next_event.fetch_add(1, Ordering::Relaxed)
    }

    pub fn add_instance(&self, instance: Arc<Instance>) {
        self.0.instances.write().insert(instance.id, instance);
    }
    pub fn instance(&self, id: u64) -> Option<Arc<Instance>> {
        self.0.instances.read().get(&id).cloned()
    }
    pub fn remove_instance(&self, id: u64) -> Option<Arc<Instance>> {
        self.0.instances.write().remove(&id)
    }
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.0.instances.read().values().cloned().collect()
    }

    pub fn park(&self, event_id: u64, event: ParkedEvent) {
        self.0.events.lock().insert(event_id, event);
    }
    pub fn unpark(&self, event_id: u64) -> Option<ParkedEvent> {
        self.0.events.lock().remove(&event_id)
    }
    pub fn parked_events(&self) -> usize {
        self.0.events.lock().len()
    }

    /// Drops events Kong has stopped talking about (a PDK call threw, the request was
    /// aborted, Kong's 60 s read timeout fired…). Dropping the parked future ends the event.
    pub fn reap_abandoned(&self) -> usize {
        let timeout = self.0.event_timeout;
        let expired: Vec<ParkedEvent> = {
            let mut events = self.0.events.lock();
            let ids: Vec<u64> = events.iter().filter(|(_, e)| e.parked_for() >= timeout).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| events.remove(&id)).collect()
        };
        let n = expired.len();
        self.0.reaped_events.fetch_add(n as u64, Ordering::Relaxed);
        crate::metrics::global().events_reaped.inc_by(n as u64);
        drop(expired);
        n
    }
    pub fn reaped_events(&self) -> u64 {
        self.0.reaped_events.load(Ordering::Relaxed)
    }
    pub fn event_timeout(&self) -> Duration {
        self.0.event_timeout
    }

    /// Counts a live event until the guard drops.
    pub fn live_event_guard(&self) -> CountGuard {
        CountGuard::new(self.clone(), Counter::LiveEvents)
    }
    /// Counts an RPC being served until the guard drops.
    pub fn busy_guard(&self) -> CountGuard {
        CountGuard::new(self.clone(), Counter::Busy)
    }
    pub fn live_events(&self) -> usize {
        self.0.live_events.load(Ordering::Acquire)
    }
    /// True when no event is alive and no RPC is being answered: safe to exit.
    pub fn is_idle(&self) -> bool {
        self.live_events() == 0 && self.0.busy_requests.load(Ordering::Acquire) == 0
    }
}

enum Counter {
    LiveEvents,
    Busy,
}

pub struct CountGuard {
    registry: Registry,
    counter: Counter,
}

impl CountGuard {
    fn new(registry: Registry, counter: Counter) -> Self {
        registry.atomic(&counter).fetch_add(1, Ordering::AcqRel);
        CountGuard { registry, counter }
    }
}

impl Registry {
    fn atomic(&self, c: &Counter) -> &AtomicUsize {
        match c {
            Counter::LiveEvents => &self.0.live_events,
            Counter::Busy => &self.0.busy_requests,
        }
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.registry.atomic(&self.counter).fetch_sub(1, Ordering::AcqRel);
    }
}
