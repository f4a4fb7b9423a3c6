//! Fault switches and request counters: the knobs the plugin server's tests turn to see how it
//! behaves when auth-service is slow, broken or gone.
//!
//! Why per target: the two things the plugins call (the key lookup and the JWKS) fail
//! independently in the tests ("JWKS refresh keeps failing while lookups work"). The
//! whole-service outage ("Down": the port refuses connections) is not a per-target fault; it is
//! [`crate::DevAuthService::down`] / [`crate::DevAuthService::up`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The API-key lookup endpoint.
    Lookup,
    /// `/.well-known/jwks.json`.
    Jwks,
    /// Both.
    Both,
}

/// How an endpoint misbehaves. Every answered request still carries a `Date` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answers per the contract.
    #[default]
    Normal,
    /// Waits this long, then answers per the contract.
    Slow(Duration),
    /// Answers this status with a small JSON error body (e.g. 500, 502, 503, or 429).
    Status(u16),
    /// Answers `200` with `Content-Type: application/json` and a body that is not JSON.
    Garbage,
    /// JWKS: answers `200 {"keys": []}`. Lookup: answers `200 {}` (valid JSON, no fields).
    EmptyJwks,
    /// Reads the request, then closes the connection without any response.
    Refuse,
}

/// The wire form of a fault in the `/_dev/faults` admin API:
/// `{"fault": "normal" | "garbage" | "empty_jwks" | "refuse"}`, `{"fault": "slow", "ms": 800}`,
/// `{"fault": "status", "status": 503}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultWire {
    /// [`Fault::Normal`]
    Normal,
    /// [`Fault::Slow`]
    Slow {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// [`Fault::Status`]
    Status {
        /// HTTP status to answer.
        status: u16,
    },
    /// [`Fault::Garbage`]
    Garbage,
    /// [`Fault::EmptyJwks`]
    EmptyJwks,
    /// [`Fault::Refuse`]
    Refuse,
}

impl From<FaultWire> for Fault {
    fn from(w: FaultWire) -> Self {
        match w {
            FaultWire::Normal => Fault::Normal,
            FaultWire::Slow { ms } => Fault::Slow(Duration::from_millis(ms)),
            FaultWire::Status { status } => Fault::Status(status),
            FaultWire::Garbage => Fault::Garbage,
            FaultWire::EmptyJwks => Fault::EmptyJwks,
            FaultWire::Refuse => Fault::Refuse,
        }
    }
}

impl From<Fault> for FaultWire {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Normal => FaultWire::Normal,
            Fault::Slow(d) => FaultWire::Slow { ms: d.as_millis() as u64 },
            Fault::Status(status) => FaultWire::Status { status },
            Fault::Garbage => FaultWire::Garbage,
            Fault::EmptyJwks => FaultWire::EmptyJwks,
            Fault::Refuse => FaultWire::Refuse,
        }
    }
}

/// The current fault of each target.
#[derive(Debug, Default)]
pub struct FaultBoard {
    lookup: Mutex<Fault>,
    jwks: Mutex<Fault>,
}

impl FaultBoard {
    /// Sets the fault of `target` (both for [`Target::Both`]).
    pub fn set(&self, target: Target, fault: Fault) {
        if matches!(target, Target::Lookup | Target::Both) {
            *self.lookup.lock() = fault;
        }
        if matches!(target, Target::Jwks | Target::Both) {
            *self.jwks.lock() = fault;
        }
    }

    /// The fault of one endpoint. [`Target::Both`] reports the lookup's.
    pub fn get(&self, target: Target) -> Fault {
        match target {
            Target::Lookup | Target::Both => *self.lookup.lock(),
            Target::Jwks => *self.jwks.lock(),
        }
    }
}

/// Requests received per endpoint, counted on arrival (before any fault), so a refused or failed
/// call counts too.
#[derive(Debug, Default)]
pub struct Counters {
    lookups: AtomicU64,
    jwks_fetches: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, target: Target) {
        match target {
            Target::Lookup => self.lookups.fetch_add(1, Ordering::SeqCst),
            Target::Jwks => self.jwks_fetches.fetch_add(1, Ordering::SeqCst),
            Target::Both => unreachable!("a request hits one endpoint"),
        };
    }

    /// Lookup requests received.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }

    /// JWKS requests received.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Sets both counters to zero.
    pub fn reset(&self) {
        self.lookups.store(0, Ordering::SeqCst);
        self.jwks_fetches.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_sets_targets_independently() {
        let b = FaultBoard::default();
        b.set(Target::Jwks, Fault::Garbage);
        assert_eq!(b.get(Target::Lookup), Fault::Normal);
        assert_eq!(b.get(Target::Jwks), Fault::Garbage);
        b.set(Target::Both, Fault::Status(502));
        assert_eq!(b.get(Target::Lookup), Fault::Status(502));
        assert_eq!(b.get(Target::Jwks), Fault::Status(502));
    }

    #[test]
    fn wire_form_round_trips() {
        for (json, fault) in [
            (r#"{"fault":"normal"}"#, Fault::Normal),
            (r#"{"fault":"slow","ms":800}"#, Fault::Slow(Duration::from_millis(800))),
            (r#"{"fault":"status","status":503}"#, Fault::Status(503)),
            (r#"{"fault":"garbage"}"#, Fault::Garbage),
            (r#"{"fault":"empty_jwks"}"#, Fault::EmptyJwks),
            (r#"{"fault":"refuse"}"#, Fault::Refuse),
        ] {
            let wire: FaultWire = serde_json::from_str(json).unwrap();
            assert_eq!(Fault::from(wire), fault);
            assert_eq!(serde_json::to_string(&FaultWire::from(fault)).unwrap(), json);
        }
        assert!(serde_json::from_str::<FaultWire>(r#"{"fault":"down"}"#).is_err());
    }

    #[test]
    fn counters_count_and_reset() {
        let c = Counters::default();
        c.count(Target::Lookup);
        c.count(Target::Lookup);
        c.count(Target::Jwks);
        assert_eq!((c.lookups(), c.jwks_fetches()), (2, 1));
        c.reset();
        assert_eq!((c.lookups(), c.jwks_fetches()), (0, 0));
    }
}
