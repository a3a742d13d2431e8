//! What a breaker remembers across a restart.

use serde::{Deserialize, Serialize};

use super::state::CircuitState;
use super::window::{FAILURE, SLOW, SUCCESS};

/// A breaker's state in a form that survives a restart, from
/// [`CircuitBreaker::snapshot`](super::CircuitBreaker::snapshot), for
/// [`CircuitBreaker::restore`](super::CircuitBreaker::restore).
///
/// An Open breaker records the time it had left and the wall-clock time of
/// the snapshot, so a restored breaker stays Open only for what remains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitSnapshot {
    /// The state.
    pub state: CircuitState,
    /// `Open` or `Closed` when the state was forced by an operator.
    #[serde(default)]
    pub forced: Option<CircuitState>,
    /// Consecutive openings since the last close (drives the backoff).
    #[serde(default)]
    pub open_streak: u32,
    /// For an Open breaker: milliseconds left until HalfOpen.
    #[serde(default)]
    pub open_remaining_ms: Option<u64>,
    /// Length of the latest opening, in milliseconds (the default probe timeout).
    #[serde(default)]
    pub open_length_ms: Option<u64>,
    /// Wall-clock time of the snapshot, milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
    /// The outcomes of the count window, oldest first: `S` success, `F`
    /// failure, `s` slow success, `f` slow failure.
    #[serde(default)]
    pub outcomes: String,
}

pub(crate) fn encode(outcomes: &[u8]) -> String {
    outcomes
        .iter()
        .map(|&o| match o {
            SUCCESS => 'S',
            FAILURE => 'F',
            o if o == SUCCESS | SLOW => 's',
            _ => 'f',
        })
        .collect()
}

/// The outcomes of `text`, or the position and character that is not one.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, (usize, char)> {
    text.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'S' => Ok(SUCCESS),
            'F' => Ok(FAILURE),
            's' => Ok(SUCCESS | SLOW),
            'f' => Ok(FAILURE | SLOW),
            other => Err((i, other)),
        })
        .collect()
}

#[cfg(all(test, not(breakwater_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resilience::{CircuitBreaker, CircuitBreakerConfig};

    #[test]
    fn each_outcome_is_one_letter_and_reads_back() {
        let all = [SUCCESS, FAILURE, SUCCESS | SLOW, FAILURE | SLOW];
        assert_eq!(encode(&all), "SFsf");
        assert_eq!(decode("SFsf"), Ok(all.to_vec()));
        assert_eq!(decode(""), Ok(vec![]));
        assert_eq!(decode("SFxS"), Err((2, 'x')));
    }

    /// Slow successes and slow failures keep both their kind and their
    /// slowness across a snapshot and a restore.
    #[tokio::test(start_paused = true)]
    async fn slow_outcomes_survive_a_restore() {
        let config = CircuitBreakerConfig {
            sample_size: 4,
            failure_threshold: 1.0,
            slow_call_ms: Some(100),
            slow_call_rate_threshold: 1.0,
            ..Default::default()
        };
        let cb = CircuitBreaker::new(config.clone());
        let call = |slow: bool, fail: bool| async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            if fail {
                Err("down")
            } else {
                Ok(())
            }
        };
        for (slow, fail) in [(false, false), (false, true), (true, false), (true, true)] {
            let _ = cb.call(|| call(slow, fail)).await;
        }
        let snap = cb.snapshot();
        assert_eq!(snap.outcomes, "SFsf");
        let restored = CircuitBreaker::restore(config, snap.clone()).unwrap();
        assert_eq!(restored.snapshot().outcomes, "SFsf");
        assert_eq!(restored.failure_rate(), 0.5);
    }
}
