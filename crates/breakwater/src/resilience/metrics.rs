//! A breaker's counters, as read by [`CircuitBreaker::metrics`](super::CircuitBreaker::metrics).

use tokio::time::Instant;

use super::state::CircuitState;

/// A snapshot of one breaker's counters and state.
///
/// Counters only grow (from the breaker's creation); an admitted call is
/// counted in `allowed` once it has finished, been cancelled or ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitMetrics {
    /// The state when the snapshot was taken.
    pub state: CircuitState,
    /// Calls asked for that have been decided: `allowed + blocked` (a call
    /// still running is counted once it finishes).
    pub requests: u64,
    /// Calls that ran and finished (succeeded, failed, were ignored or cancelled).
    pub allowed: u64,
    /// Calls refused without running.
    pub blocked: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (errors, timeouts, panics, failed probes).
    pub failures: u64,
    /// Calls slower than `slow_call_ms` (successes or failures).
    pub slow_calls: u64,
    /// Calls whose outcome the classifier ignored.
    pub ignored: u64,
    /// Calls cancelled (their future dropped) before they finished.
    pub cancelled: u64,
    /// Probe calls admitted in HalfOpen.
    pub half_open_tests: u64,
    /// All state changes.
    pub state_changes: u64,
    /// State changes by (from, to), indexed by [`CircuitState::as_gauge`].
    pub transitions: [[u64; 3]; 3],
    /// Consecutive openings since the last close.
    pub open_streak: u32,
    /// Failure rate of the current window, 0.0..=1.0.
    pub failure_rate: f64,
    /// Outcomes in the current window.
    pub window_len: u64,
    /// When the state last changed, if it ever did.
    pub last_state_change: Option<Instant>,
}

impl CircuitMetrics {
    /// How many times the breaker went from `from` to `to`.
    pub fn transitions_between(&self, from: CircuitState, to: CircuitState) -> u64 {
        self.transitions[from.as_gauge() as usize][to.as_gauge() as usize]
    }

    /// Success rate of the current window in percent (100 for an empty window).
    pub fn success_rate_percent(&self) -> f64 {
        100.0 - self.failure_rate_percent()
    }

    /// Failure rate of the current window in percent.
    pub fn failure_rate_percent(&self) -> f64 {
        self.failure_rate * 100.0
    }
}
