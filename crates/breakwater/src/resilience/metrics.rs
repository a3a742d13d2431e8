//! A breaker's counters, as read by [`CircuitBreaker::metrics`](super::CircuitBreaker::metrics).

use std::fmt;

use tokio::time::Instant;

use super::state::CircuitState;

/// A snapshot of one breaker's counters and state.
///
/// Counters only grow (from the breaker's creation); an admitted call is
/// counted in `allowed` once it has finished, been cancelled or ignored.
///
/// Its `Debug` output names the transitions that happened
/// (`"Closed -> Open": 2`) and says how long ago the last one was, rather
/// than printing the raw matrix and a runtime `Instant`.
///
/// # Examples
///
/// ```
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
/// breaker.force_open();
/// tokio::time::advance(std::time::Duration::from_secs(2)).await;
/// let shown = format!("{:?}", breaker.metrics());
/// assert!(shown.contains(r#"transitions: {"Closed -> Open": 1}"#), "{shown}");
/// assert!(shown.contains("last_state_change: 2s ago"), "{shown}");
/// # }
/// ```
#[derive(Clone, PartialEq)]
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

impl fmt::Debug for CircuitMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// The transitions that happened, by name.
        struct Transitions<'a>(&'a [[u64; 3]; 3]);
        impl fmt::Debug for Transitions<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let states = [
                    CircuitState::Closed,
                    CircuitState::Open,
                    CircuitState::HalfOpen,
                ];
                let mut map = f.debug_map();
                for from in states {
                    for to in states {
                        let n = self.0[from.as_gauge() as usize][to.as_gauge() as usize];
                        if n > 0 {
                            map.entry(&format_args!("\"{from:?} -> {to:?}\""), &n);
                        }
                    }
                }
                map.finish()
            }
        }
        /// How long ago, to the millisecond.
        struct Ago(Option<Instant>);
        impl fmt::Debug for Ago {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    None => f.write_str("never"),
                    Some(t) => {
                        let ago = t.elapsed();
                        let ms = std::time::Duration::from_millis(
                            u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
                        );
                        write!(f, "{ms:?} ago")
                    }
                }
            }
        }
        f.debug_struct("CircuitMetrics")
            .field("state", &self.state)
            .field("requests", &self.requests)
            .field("allowed", &self.allowed)
            .field("blocked", &self.blocked)
            .field("successes", &self.successes)
            .field("failures", &self.failures)
            .field("slow_calls", &self.slow_calls)
            .field("ignored", &self.ignored)
            .field("cancelled", &self.cancelled)
            .field("half_open_tests", &self.half_open_tests)
            .field("state_changes", &self.state_changes)
            .field("transitions", &Transitions(&self.transitions))
            .field("open_streak", &self.open_streak)
            .field("failure_rate", &self.failure_rate)
            .field("window_len", &self.window_len)
            .field("last_state_change", &Ago(self.last_state_change))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Closed breaker's metrics with every counter at zero.
    fn zero() -> CircuitMetrics {
        CircuitMetrics {
            state: CircuitState::Closed,
            requests: 0,
            allowed: 0,
            blocked: 0,
            successes: 0,
            failures: 0,
            slow_calls: 0,
            ignored: 0,
            cancelled: 0,
            half_open_tests: 0,
            state_changes: 0,
            transitions: [[0; 3]; 3],
            open_streak: 0,
            failure_rate: 0.0,
            window_len: 0,
            last_state_change: None,
        }
    }

    #[test]
    fn debug_names_transitions_and_hides_the_raw_instant() {
        let mut transitions = [[0; 3]; 3];
        transitions[CircuitState::Closed.as_gauge() as usize]
            [CircuitState::Open.as_gauge() as usize] = 2;
        transitions[CircuitState::HalfOpen.as_gauge() as usize]
            [CircuitState::Closed.as_gauge() as usize] = 1;
        let m = CircuitMetrics {
            state_changes: 3,
            transitions,
            ..zero()
        };
        assert_eq!(
            m.transitions_between(CircuitState::Closed, CircuitState::Open),
            2
        );
        assert_eq!(
            m.transitions_between(CircuitState::HalfOpen, CircuitState::Closed),
            1
        );
        assert_eq!(
            m.transitions_between(CircuitState::Open, CircuitState::Closed),
            0
        );
        let shown = format!("{m:?}");
        assert!(
            shown.contains(r#"transitions: {"Closed -> Open": 2, "HalfOpen -> Closed": 1}"#),
            "{shown}"
        );
        assert!(shown.contains("last_state_change: never"), "{shown}");
        assert!(!shown.contains("Instant"), "{shown}");
    }

    #[test]
    fn rates_in_percent_follow_the_failure_rate() {
        let mut m = CircuitMetrics {
            requests: 4,
            allowed: 4,
            successes: 3,
            failures: 1,
            failure_rate: 0.25,
            window_len: 4,
            ..zero()
        };
        assert_eq!(m.failure_rate_percent(), 25.0);
        assert_eq!(m.success_rate_percent(), 75.0);
        m.failure_rate = 0.0;
        assert_eq!(m.failure_rate_percent(), 0.0);
        assert_eq!(m.success_rate_percent(), 100.0, "an empty window");
    }

    #[tokio::test(start_paused = true)]
    async fn debug_says_how_long_ago_the_last_change_was() {
        let m = CircuitMetrics {
            state: CircuitState::Open,
            state_changes: 1,
            open_streak: 1,
            failure_rate: 1.0,
            window_len: 1,
            last_state_change: Some(Instant::now()),
            ..zero()
        };
        tokio::time::advance(std::time::Duration::from_micros(1_500_700)).await;
        let shown = format!("{m:?}");
        assert!(shown.contains("last_state_change: 1.5s ago"), "{shown}");
    }
}
