//! Reading breakers into the rows a scrape exports, and choosing which
//! endpoints are exported on their own.

use std::sync::Arc;

use super::{BreakerCollector, BUCKETS, OTHER_ENDPOINT};
use crate::resilience::{CircuitBreaker, CircuitState};

impl BreakerCollector {
    /// Reads every breaker once: the rows exported on their own, sorted by
    /// endpoint, and the sum of the others.
    pub(super) fn rows(&self) -> (Vec<Row>, Option<Row>) {
        let from_registry = self.registry.iter().flat_map(|r| r.breakers());
        let mut rows: Vec<Row> = self
            .breakers
            .iter()
            .map(|(name, b)| Row::read(name.clone(), b))
            .chain(from_registry.map(|b| {
                let name = b.name_arc().cloned().unwrap_or_else(|| Arc::from(""));
                Row::read(name, &b)
            }))
            .collect();
        // Stable: of two rows with one name, the named breaker comes first
        // and keeps it.
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut rest = Vec::new();
        let mut mine: Vec<Row> = Vec::with_capacity(rows.len());
        for row in rows {
            let taken = mine.last().is_some_and(|last| last.name == row.name);
            if taken || &*row.name == OTHER_ENDPOINT {
                rest.push(row);
            } else {
                mine.push(row);
            }
        }
        if mine.len() > self.max_endpoints {
            // Open and HalfOpen first, then the busiest.
            let rank = |r: &Row| (r.state != Some(CircuitState::Closed), r.requests);
            if self.max_endpoints > 0 {
                mine.select_nth_unstable_by(self.max_endpoints - 1, |a, b| rank(b).cmp(&rank(a)));
            }
            rest.extend(mine.drain(self.max_endpoints..));
            mine.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        }
        let other = (!rest.is_empty()).then(|| Row::sum(rest));
        (mine, other)
    }
}

/// What one exported endpoint (or `_other`) shows.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) name: Arc<str>,
    pub(super) state: Option<CircuitState>,
    /// Indexed by `CircuitState::as_gauge`.
    pub(super) transitions: [[u64; 3]; 3],
    pub(super) requests: u64,
    pub(super) allowed: u64,
    pub(super) blocked: u64,
    pub(super) half_open_tests: u64,
    pub(super) failures: u64,
    pub(super) slow_calls: u64,
    /// Failures in the window, and its length.
    pub(super) window_failures: f64,
    pub(super) window_len: u64,
    pub(super) threshold: Option<f64>,
    pub(super) last_change: Option<f64>,
    pub(super) open_buckets: [u64; BUCKETS],
    pub(super) open_count: u64,
    pub(super) open_sum_us: u64,
}

impl Row {
    pub(super) fn read(name: Arc<str>, b: &CircuitBreaker) -> Self {
        let m = b.metrics();
        let mut open_buckets = [0; BUCKETS];
        let (open_count, open_sum_us) = b.add_open_durations(&mut open_buckets);
        Self {
            name,
            state: Some(m.state),
            transitions: m.transitions,
            requests: m.requests,
            allowed: m.allowed,
            blocked: m.blocked,
            half_open_tests: m.half_open_tests,
            failures: m.failures,
            slow_calls: m.slow_calls,
            window_failures: m.failure_rate * m.window_len as f64,
            window_len: m.window_len,
            threshold: Some(b.config().failure_threshold),
            last_change: b.last_state_change_unix_secs(),
            open_buckets,
            open_count,
            open_sum_us,
        }
    }

    pub(super) fn sum(rows: Vec<Row>) -> Self {
        let mut sum = Self {
            name: Arc::from(OTHER_ENDPOINT),
            state: None,
            transitions: [[0; 3]; 3],
            requests: 0,
            allowed: 0,
            blocked: 0,
            half_open_tests: 0,
            failures: 0,
            slow_calls: 0,
            window_failures: 0.0,
            window_len: 0,
            threshold: None,
            last_change: None,
            open_buckets: [0; BUCKETS],
            open_count: 0,
            open_sum_us: 0,
        };
        for r in rows {
            for (s, t) in sum
                .transitions
                .iter_mut()
                .flatten()
                .zip(r.transitions.iter().flatten())
            {
                *s += t;
            }
            sum.requests += r.requests;
            sum.allowed += r.allowed;
            sum.blocked += r.blocked;
            sum.half_open_tests += r.half_open_tests;
            sum.failures += r.failures;
            sum.slow_calls += r.slow_calls;
            sum.window_failures += r.window_failures;
            sum.window_len += r.window_len;
            sum.last_change = match (sum.last_change, r.last_change) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            for (s, n) in sum.open_buckets.iter_mut().zip(r.open_buckets) {
                *s += n;
            }
            sum.open_count += r.open_count;
            sum.open_sum_us += r.open_sum_us;
        }
        sum
    }

    pub(super) fn failure_percent(&self) -> f64 {
        if self.window_len == 0 {
            0.0
        } else {
            self.window_failures / self.window_len as f64 * 100.0
        }
    }
}
