//! Pure timing decisions: how long a failed action waits before its next
//! attempt, and how long a circuit-refused action is parked. Nothing here
//! reads a clock or a random source; callers pass them in.

use std::time::Duration;

use crate::config::RetryConfig;

/// The shortest park, so that a refusal without a `retry_after` does not spin.
pub const MIN_PARK: Duration = Duration::from_millis(50);
/// The park used when an open circuit gives no `retry_after`.
pub const DEFAULT_PARK: Duration = Duration::from_secs(1);
/// The longest any action waits in the timer: one year.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// A `Retry-After` hint is honoured up to this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The exponential ceiling for the wait after `attempts` failed attempts
/// (`attempts >= 1`): `backoff * 2^(attempts - 1)`, capped at `max_backoff`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater_dispatch::config::RetryConfig;
/// use breakwater_dispatch::engine::schedule::ceiling;
///
/// let retry = RetryConfig { max_attempts: 5, backoff_ms: 100, max_backoff_ms: 500 };
/// assert_eq!(ceiling(&retry, 1), Duration::from_millis(100));
/// assert_eq!(ceiling(&retry, 3), Duration::from_millis(400));
/// assert_eq!(ceiling(&retry, 30), Duration::from_millis(500));
/// ```
pub fn ceiling(retry: &RetryConfig, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let ms = retry.backoff_ms.saturating_mul(1u64 << exp);
    Duration::from_millis(ms.min(retry.max_backoff_ms))
}

/// The wait before the next attempt with full jitter: `unit * ceiling`,
/// where `unit` is a uniform sample in `[0, 1)`; never shorter than a
/// `Retry-After` hint, which is honoured up to [`MAX_RETRY_AFTER`] whatever
/// `max_backoff` is (the receiver asked for it; `max_backoff` caps the
/// service's own backoff).
pub fn retry_delay(
    retry: &RetryConfig,
    attempts: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let jittered = ceiling(retry, attempts).mul_f64(unit);
    match retry_after {
        Some(hint) => jittered.max(hint.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// What to do with an action after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after this long.
    RetryIn(Duration),
    /// Out of attempts: dead-letter it.
    GiveUp,
}

/// Decides between another attempt and the dead-letter table, `attempts`
/// being the attempts used so far (this failure included).
pub fn after_failure(
    retry: &RetryConfig,
    attempts: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> AfterFailure {
    if attempts >= retry.max_attempts {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryIn(retry_delay(retry, attempts, unit, retry_after))
    }
}

/// How long a circuit-refused action is parked: the breaker's `retry_after`
/// (at least [`MIN_PARK`]), or [`DEFAULT_PARK`] when it gave none.
pub fn park_for(retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(DEFAULT_PARK, |d| d.max(MIN_PARK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            backoff_ms: 200,
            max_backoff_ms: 1000,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = retry();
        let got: Vec<_> = (1..=5).map(|a| ceiling(&r, a).as_millis()).collect();
        assert_eq!(got, [200, 400, 800, 1000, 1000]);
        assert_eq!(ceiling(&r, u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let r = retry();
        assert_eq!(retry_delay(&r, 2, 0.0, None), Duration::ZERO);
        assert_eq!(retry_delay(&r, 2, 0.5, None), Duration::from_millis(200));
        assert!(retry_delay(&r, 2, 0.999, None) < Duration::from_millis(400));
        assert_eq!(retry_delay(&r, 2, f64::NAN, None), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor_within_bounds() {
        let r = retry();
        assert_eq!(
            retry_delay(&r, 1, 0.0, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        // A huge hint is capped by its own ceiling, an hour.
        assert_eq!(
            retry_delay(&r, 1, 0.0, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }

    /// Regression: with `max_backoff_ms = 100`, a 429 with `Retry-After: 3`
    /// was retried after 0.1 s; the documented promise is never sooner than
    /// the hint.
    #[test]
    fn a_retry_after_longer_than_max_backoff_is_honoured() {
        let r = RetryConfig {
            max_attempts: 5,
            backoff_ms: 50,
            max_backoff_ms: 100,
        };
        assert_eq!(
            retry_delay(&r, 1, 0.99, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn attempts_run_out_into_the_dead_letter_table() {
        let r = retry();
        assert!(matches!(
            after_failure(&r, 3, 0.5, None),
            AfterFailure::RetryIn(_)
        ));
        assert_eq!(after_failure(&r, 4, 0.5, None), AfterFailure::GiveUp);
    }

    #[test]
    fn parking_follows_the_breaker() {
        assert_eq!(park_for(None), DEFAULT_PARK);
        assert_eq!(park_for(Some(Duration::ZERO)), MIN_PARK);
        assert_eq!(
            park_for(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }
}
