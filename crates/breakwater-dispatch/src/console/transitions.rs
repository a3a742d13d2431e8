//! The last few breaker transitions of each endpoint, for the console.
//!
//! Fed by a listener on the engine's breaker registry (called on the thread
//! that made the transition, outside the registry's locks): a short lock of
//! a map, only when a breaker changes state. Kept in memory only: a
//! restart starts with none.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Transitions kept per endpoint.
const KEPT: usize = 20;

/// One transition as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionRecord {
    /// When (RFC 3339, UTC, wall clock).
    pub at: String,
    /// The state before: `closed`, `open`, `half_open`.
    pub from: &'static str,
    /// The state after.
    pub to: &'static str,
    /// For an opening that ends by itself: how long it lasts, ms.
    pub open_for_ms: Option<u64>,
}

/// Each endpoint's recent transitions, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Transitions {
    by_endpoint: Mutex<HashMap<String, VecDeque<TransitionRecord>>>,
}

impl Transitions {
    /// Notes `t` (a transition of the registry's breaker named by its
    /// endpoint).
    pub(crate) fn record(&self, t: &breakwater::Transition) {
        let Some(endpoint) = t.name() else {
            return;
        };
        let record = TransitionRecord {
            at: crate::store::rfc3339(chrono::Utc::now().timestamp_millis()),
            from: t.from.as_str(),
            to: t.to.as_str(),
            open_for_ms: t
                .open_for
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let mut map = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        let ring = map.entry(endpoint.to_string()).or_default();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// `endpoint`'s recent transitions, newest first.
    pub(crate) fn of(&self, endpoint: &str) -> Vec<TransitionRecord> {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(endpoint)
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater::{CircuitBreakerConfig, PerEndpointCircuitBreaker};
    use std::sync::Arc;

    #[test]
    fn keeps_the_last_transitions_newest_first() {
        let ring = Arc::new(Transitions::default());
        let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
        let r = ring.clone();
        breakers.add_listener(move |t: &breakwater::Transition| r.record(t));
        let b = breakers.get_or_create("http://a:1");
        for _ in 0..15 {
            b.force_open();
            b.force_closed();
        }
        let seen = ring.of("http://a:1");
        assert_eq!(seen.len(), KEPT);
        assert_eq!((seen[0].from, seen[0].to), ("open", "closed"));
        assert_eq!((seen[1].from, seen[1].to), ("closed", "open"));
        assert!(ring.of("http://b:1").is_empty());
    }
}
