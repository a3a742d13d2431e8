//! Retry timing: how long to wait before the next attempt. Pure arithmetic
//! on durations, no clock and no breaker, so that it is tested on its own.

use std::time::Duration;

use super::Retry;

/// The retry schedule of an executor: the first backoff, its cap, and the
/// budget of all waits together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// The nominal wait after the first failure, doubled after each further one.
    pub(crate) backoff: Duration,
    /// The longest single wait.
    pub(crate) max_backoff: Duration,
    /// The most time all waits of one execution may take together.
    pub(crate) max_total_delay: Option<Duration>,
}

impl Schedule {
    /// The nominal wait after the `failures`-th failed attempt, capped.
    pub(crate) fn nominal_backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// The wait before the attempt after the `failures`-th failed one, or
    /// `None` when a hinted wait does not fit the caps or the budget is
    /// spent. `waited` is the time already spent waiting; `jitter` is a
    /// number uniform in `[0, 1)` for full jitter, or `None` for exact waits.
    pub(crate) fn wait_before(
        &self,
        failures: u32,
        advice: Retry,
        waited: Duration,
        jitter: Option<f64>,
    ) -> Option<Duration> {
        let left = match self.max_total_delay {
            Some(budget) => budget.checked_sub(waited).filter(|d| !d.is_zero())?,
            None => Duration::MAX,
        };
        match advice {
            Retry::After(hint) if hint > self.max_backoff || hint > left => None,
            Retry::After(hint) => Some(hint),
            Retry::Transient | Retry::Permanent => {
                let nominal = self.nominal_backoff(failures).min(left);
                // Whole milliseconds, tokio's timer resolution: a wait of
                // 0.3 ms would sleep 1 ms and overrun the caps.
                Some(match jitter {
                    Some(unit) => full_jitter_ms(nominal, unit),
                    None => whole_ms(nominal),
                })
            }
        }
    }
}

/// Full jitter in whole milliseconds: uniform over `0..=nominal` ms
/// (`unit` uniform in `[0, 1)`), so that a 1 ms backoff waits 0 or 1 ms
/// rather than always 0. Never longer than `nominal`.
fn full_jitter_ms(nominal: Duration, unit: f64) -> Duration {
    let top = u64::try_from(nominal.as_millis()).unwrap_or(u64::MAX);
    // `top + 1` choices; the float product is below `top + 1` and saturates
    // on the cast, and `min` keeps rounding at the top within the cap.
    let ms = (unit * (top as f64 + 1.0)) as u64;
    Duration::from_millis(ms.min(top))
}

/// `d` rounded down to whole milliseconds.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn schedule(backoff: u64, max: u64, budget: Option<u64>) -> Schedule {
        Schedule {
            backoff: ms(backoff),
            max_backoff: ms(max),
            max_total_delay: budget.map(ms),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = schedule(100, 350, None);
        let waits: Vec<_> = (1..=5).map(|n| s.nominal_backoff(n)).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(350), ms(350), ms(350)]);
    }

    #[test]
    fn huge_backoffs_saturate() {
        let s = Schedule {
            backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            max_total_delay: None,
        };
        assert_eq!(s.nominal_backoff(u32::MAX), Duration::MAX);
        let wait = s.wait_before(40, Retry::Transient, Duration::ZERO, None);
        assert_eq!(wait, Some(whole_ms(Duration::MAX)));
    }

    #[test]
    fn exact_waits_are_whole_milliseconds() {
        let s = Schedule {
            backoff: Duration::from_micros(1_500),
            max_backoff: ms(10),
            max_total_delay: None,
        };
        assert_eq!(
            s.wait_before(1, Retry::Transient, Duration::ZERO, None),
            Some(ms(1))
        );
        assert_eq!(
            s.wait_before(2, Retry::Transient, Duration::ZERO, None),
            Some(ms(3))
        );
    }

    #[test]
    fn full_jitter_covers_zero_to_the_nominal_wait() {
        assert_eq!(full_jitter_ms(ms(100), 0.0), ms(0));
        assert_eq!(full_jitter_ms(ms(100), 0.5), ms(50));
        assert_eq!(full_jitter_ms(ms(100), 0.999_999_9), ms(100));
        assert_eq!(full_jitter_ms(ms(1), 0.6), ms(1));
        // No overflow at the top: the cast saturates and stays under the cap.
        assert!(full_jitter_ms(Duration::MAX, 0.999_999_9) <= whole_ms(Duration::MAX));
        assert!(full_jitter_ms(Duration::MAX, 0.999_999_9) > Duration::from_secs(1 << 50));
    }

    #[test]
    fn a_hint_is_waited_exactly_or_ends_the_retries() {
        let s = schedule(100, 1_000, Some(1_500));
        let after = |d| Retry::After(ms(d));
        assert_eq!(
            s.wait_before(1, after(700), Duration::ZERO, Some(0.5)),
            Some(ms(700))
        );
        // Longer than the cap, or than what is left of the budget: stop.
        assert_eq!(s.wait_before(1, after(1_001), Duration::ZERO, None), None);
        assert_eq!(s.wait_before(1, after(900), ms(700), None), None);
    }

    #[test]
    fn the_budget_shortens_waits_and_then_stops_them() {
        let s = schedule(400, 10_000, Some(500));
        assert_eq!(
            s.wait_before(1, Retry::Transient, Duration::ZERO, None),
            Some(ms(400))
        );
        assert_eq!(
            s.wait_before(2, Retry::Transient, ms(400), None),
            Some(ms(100))
        );
        assert_eq!(s.wait_before(3, Retry::Transient, ms(500), None), None);
    }
}
