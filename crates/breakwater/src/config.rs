//! Configuration of a circuit breaker.
//!
//! One type, [`CircuitBreakerConfig`], with plain public fields so that
//! `..Default::default()` works, serde support that rejects unknown keys, and
//! [`CircuitBreakerConfig::validate`] which reports every problem at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest any duration in the configuration may be: one year.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;
/// The longest count window: 2^20 outcomes (one byte each).
pub const MAX_SAMPLE_SIZE: usize = 1 << 20;
/// The most concurrent probes a HalfOpen breaker admits.
pub const MAX_HALF_OPEN_REQUESTS: usize = 16_383;

/// How a [`CircuitBreaker`](crate::CircuitBreaker) judges failures and recovers.
///
/// Durations are in milliseconds (`_ms`) so that configuration files stay
/// plain; the Rust API of the breaker speaks [`Duration`].
///
/// # Examples
///
/// ```
/// use breakwater::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig {
///     failure_threshold: 0.25,
///     sample_size: 20,
///     open_timeout_ms: 5_000,
///     ..Default::default()
/// };
/// assert!(config.validate().is_ok());
///
/// // From a file: unknown keys are refused, missing ones take their default.
/// let parsed: CircuitBreakerConfig =
///     serde_json::from_str(r#"{ "sample_size": 20, "minimum_calls": 10 }"#).unwrap();
/// assert_eq!(parsed.minimum_calls(), 10);
/// assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{ "sample_sise": 20 }"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// `false` turns the breaker into a counter: every call runs, outcomes are
    /// still counted, the state never changes. Default `true`.
    pub enabled: bool,
    /// Failure rate in `(0, 1]` at or above which a Closed breaker opens. Default `0.5`.
    pub failure_threshold: f64,
    /// Length of the count-based window, `>= 1`. Default `100`.
    pub sample_size: usize,
    /// Outcomes the window must hold before its rate is judged,
    /// `1..=sample_size`. Default: `sample_size`.
    pub minimum_calls: Option<usize>,
    /// How long the first opening lasts, `> 0`. Default `30000`.
    pub open_timeout_ms: u64,
    /// Probes a HalfOpen breaker runs at once, and the successes it needs to
    /// close, `>= 1`. Default `5`.
    pub half_open_max_requests: usize,
    /// Each consecutive opening lasts this many times the previous one,
    /// `>= 1.0`. Default `2.0`.
    pub backoff_multiplier: f64,
    /// Cap on the open duration, `>= open_timeout_ms`. Default `300000`.
    pub max_open_timeout_ms: u64,
    /// Open durations are scaled by a random factor in
    /// `[1 - jitter_ratio, 1 + jitter_ratio]`, `0.0..1.0`. Default `0.1`.
    pub jitter_ratio: f64,
    /// When set, the window holds the outcomes of the last `window_ms`
    /// milliseconds (in ten buckets) instead of the last `sample_size`.
    pub window_ms: Option<u64>,
    /// When set, a call taking longer than this counts as slow.
    pub slow_call_ms: Option<u64>,
    /// Fraction in `(0, 1]` of slow calls at or above which the breaker
    /// opens. Default `1.0`.
    pub slow_call_rate_threshold: f64,
    /// A probe still running after this long is cancelled and counts as a
    /// failure. Default: the length of the opening that just ended.
    pub probe_timeout_ms: Option<u64>,
    /// A call still running after this long is cancelled and counts as a
    /// failure ([`CircuitError::Timeout`](crate::CircuitError::Timeout)).
    pub call_timeout_ms: Option<u64>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 0.5,
            sample_size: 100,
            minimum_calls: None,
            open_timeout_ms: 30_000,
            half_open_max_requests: 5,
            backoff_multiplier: 2.0,
            max_open_timeout_ms: 300_000,
            jitter_ratio: 0.1,
            window_ms: None,
            slow_call_ms: None,
            slow_call_rate_threshold: 1.0,
            probe_timeout_ms: None,
            call_timeout_ms: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// The outcomes needed before the rate is judged (`minimum_calls`, or
    /// `sample_size` when absent).
    pub fn minimum_calls(&self) -> usize {
        self.minimum_calls.unwrap_or(self.sample_size)
    }

    /// The first open duration.
    pub fn open_timeout(&self) -> Duration {
        Duration::from_millis(self.open_timeout_ms)
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem, each naming its field.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::CircuitBreakerConfig;
    ///
    /// let bad = CircuitBreakerConfig { failure_threshold: 1.5, sample_size: 0, ..Default::default() };
    /// let err = bad.validate().unwrap_err();
    /// let fields: Vec<_> = err.problems().iter().map(|p| p.field).collect();
    /// assert_eq!(fields, ["failure_threshold", "sample_size"]);
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |field: &'static str, message: String| {
            problems.push(ConfigProblem { field, message });
        };

        if !(self.failure_threshold > 0.0 && self.failure_threshold <= 1.0) {
            bad(
                "failure_threshold",
                format!("must be in (0, 1], got {}", self.failure_threshold),
            );
        }
        if self.sample_size == 0 || self.sample_size > MAX_SAMPLE_SIZE {
            bad(
                "sample_size",
                format!("must be in 1..={MAX_SAMPLE_SIZE}, got {}", self.sample_size),
            );
        }
        if let Some(min) = self.minimum_calls {
            if min == 0 || min > self.sample_size.max(1) {
                bad(
                    "minimum_calls",
                    format!(
                        "must be in 1..=sample_size ({}), got {min}",
                        self.sample_size
                    ),
                );
            }
        }
        check_duration(&mut bad, "open_timeout_ms", Some(self.open_timeout_ms));
        if self.half_open_max_requests == 0 || self.half_open_max_requests > MAX_HALF_OPEN_REQUESTS
        {
            bad(
                "half_open_max_requests",
                format!(
                    "must be in 1..={MAX_HALF_OPEN_REQUESTS}, got {}",
                    self.half_open_max_requests
                ),
            );
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            bad(
                "backoff_multiplier",
                format!(
                    "must be a finite number >= 1.0, got {}",
                    self.backoff_multiplier
                ),
            );
        }
        if self.max_open_timeout_ms < self.open_timeout_ms {
            bad(
                "max_open_timeout_ms",
                format!(
                    "must be >= open_timeout_ms ({}), got {}",
                    self.open_timeout_ms, self.max_open_timeout_ms
                ),
            );
        } else {
            check_duration(
                &mut bad,
                "max_open_timeout_ms",
                Some(self.max_open_timeout_ms),
            );
        }
        if !(self.jitter_ratio >= 0.0 && self.jitter_ratio < 1.0) {
            bad(
                "jitter_ratio",
                format!("must be in 0.0..1.0, got {}", self.jitter_ratio),
            );
        }
        check_duration(&mut bad, "window_ms", self.window_ms);
        check_duration(&mut bad, "slow_call_ms", self.slow_call_ms);
        if !(self.slow_call_rate_threshold > 0.0 && self.slow_call_rate_threshold <= 1.0) {
            bad(
                "slow_call_rate_threshold",
                format!("must be in (0, 1], got {}", self.slow_call_rate_threshold),
            );
        }
        check_duration(&mut bad, "probe_timeout_ms", self.probe_timeout_ms);
        check_duration(&mut bad, "call_timeout_ms", self.call_timeout_ms);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn check_duration(
    bad: &mut impl FnMut(&'static str, String),
    field: &'static str,
    ms: Option<u64>,
) {
    match ms {
        Some(0) => bad(field, "must be greater than 0".to_string()),
        Some(ms) if ms > MAX_DURATION_MS => bad(
            field,
            format!("must be at most {MAX_DURATION_MS} (one year), got {ms}"),
        ),
        _ => {}
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigProblem {
    /// The field at fault, as spelled in the configuration.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem found in a configuration.
///
/// Displays as `invalid circuit breaker config: field: problem; field: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid circuit breaker config: {}", join_problems(.problems))]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// The problems, in field order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    /// Whether `field` is among the fields at fault.
    pub fn names(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }

    pub(crate) fn single(field: &'static str, message: String) -> Self {
        Self {
            problems: vec![ConfigProblem { field, message }],
        }
    }
}

fn join_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
