//! Graceful degradation (the public documentation is on the types).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{CircuitBreaker, CircuitState};

/// Default high watermark over many endpoints.
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.25;
/// Default low watermark over many endpoints.
pub const DEFAULT_LOW_WATERMARK: f64 = 0.125;
/// Default fraction of Open endpoints that makes the level Critical.
pub const DEFAULT_CRITICAL_FRACTION: f64 = 0.5;

/// How degraded the services behind the breakers are, from best to worst
/// (so `max` gives the worse of two levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DegradationLevel {
    /// Healthy: full behaviour.
    Normal,
    /// Failing more than usual, or recovering: prefer cheaper behaviour.
    Degraded,
    /// Down: calls are refused; answer without it.
    Critical,
}

impl DegradationLevel {
    /// Lower-case name, as used in health checks and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Degraded => "degraded",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for DegradationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint's breaker, as seen by [`GracefulDegradation::per_endpoint`].
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointHealth {
    /// The endpoint's key.
    pub endpoint: String,
    /// Its breaker's state.
    pub state: CircuitState,
    /// Its breaker's failure rate, `0.0..=1.0`, as judged: 0.0 until the
    /// breaker's window holds `minimum_calls` outcomes.
    pub failure_rate: f64,
}

/// Where [`GracefulDegradation::per_endpoint`] reads the endpoints' health.
///
/// Implemented for every `Fn() -> Vec<EndpointHealth> + Send + Sync` and for
/// `Arc`s of sources; a per-endpoint registry implements it from its
/// breakers' `state()` and `failure_rate()`.
pub trait EndpointHealthSource: Send + Sync {
    /// Every endpoint's state and failure rate, now.
    fn endpoint_health(&self) -> Vec<EndpointHealth>;
}

impl<F> EndpointHealthSource for F
where
    F: Fn() -> Vec<EndpointHealth> + Send + Sync,
{
    fn endpoint_health(&self) -> Vec<EndpointHealth> {
        self()
    }
}

impl<S: EndpointHealthSource + ?Sized> EndpointHealthSource for Arc<S> {
    fn endpoint_health(&self) -> Vec<EndpointHealth> {
        (**self).endpoint_health()
    }
}

#[derive(Clone)]
enum Source {
    Breaker(Arc<CircuitBreaker>),
    Endpoints(Arc<dyn EndpointHealthSource>),
}

/// The degradation level of one breaker or of a set of endpoints' breakers
/// (see the [type docs](GracefulDegradation) for the rules).
///
/// Cheap to clone; clones share the enabled flag and the hysteresis state.
///
/// Graceful degradation: one word for how healthy the services behind the
/// breakers are, so that callers can choose cheaper behaviour in time.
///
/// # Levels
///
/// Over one breaker, [`GracefulDegradation::get_degradation_level`] is:
///
/// | breaker | level |
/// | --- | --- |
/// | Open | [`Critical`](DegradationLevel::Critical) |
/// | HalfOpen | [`Degraded`](DegradationLevel::Degraded) |
/// | Closed, failure rate `>= high` watermark | [`Degraded`](DegradationLevel::Degraded) |
/// | Closed, failure rate `< low` watermark | [`Normal`](DegradationLevel::Normal) |
/// | Closed, rate in `[low, high)` | unchanged: hysteresis |
///
/// # Hysteresis
///
/// A Closed breaker enters Degraded when its failure rate reaches the high
/// watermark and leaves it only once the rate falls below the low one, so a
/// rate hovering around either watermark does not make the level flap (and
/// callers switch between full and cheap behaviour only on real changes).
/// The defaults over one breaker are half and a quarter of its
/// `failure_threshold` (the one in force: they follow `update_config`): a
/// service is Degraded well before its breaker opens. A rate is judged only
/// once the breaker's window holds `minimum_calls` outcomes, as the breaker
/// itself judges it: one failed call on a fresh breaker degrades nothing.
/// The level is judged when asked, from the breaker's state and rate at that
/// moment; reading it costs a state load and a window tally, and takes no
/// lock.
///
/// # Over many endpoints
///
/// [`GracefulDegradation::per_endpoint`] judges a set of breakers (a
/// per-endpoint registry) by this rule, one dead endpoint among many being
/// a degradation, not a crisis:
///
/// * **Critical** when at least `critical_fraction` (default one half) of the
///   endpoints are Open;
/// * else **Degraded** when any endpoint is Open or HalfOpen, or when the
///   highest failure rate among the Closed endpoints is at or above the high
///   watermark (with the same hysteresis: it stays Degraded until that
///   highest rate falls below the low watermark);
/// * else **Normal** (also with no endpoints at all).
///
/// Over one breaker this is the table above: the one-breaker case is the
/// rule with a single endpoint.
///
/// # Disabling
///
/// A disabled [`GracefulDegradation`] ([`set_enabled(false)`](GracefulDegradation::set_enabled))
/// always reports Normal. Clones share the enabled flag and the hysteresis
/// state.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
/// use breakwater::{DegradationLevel, GracefulDegradation};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
/// let degradation = GracefulDegradation::new(breaker.clone());
/// assert_eq!(degradation.get_degradation_level(), DegradationLevel::Normal);
///
/// let answer = degradation
///     .with_degradation(|level| async move {
///         match level {
///             DegradationLevel::Normal => "full answer",
///             DegradationLevel::Degraded => "answer without extras",
///             DegradationLevel::Critical => "cached answer",
///         }
///     })
///     .await;
/// assert_eq!(answer, "full answer");
///
/// breaker.force_open();
/// assert_eq!(degradation.get_degradation_level(), DegradationLevel::Critical);
/// assert!(degradation.is_degraded());
/// # }
/// ```
#[derive(Clone)]
pub struct GracefulDegradation {
    source: Source,
    enabled: Arc<AtomicBool>,
    /// The hysteresis latch: a Closed rate reached the high watermark and
    /// has not yet fallen below the low one.
    degraded_mode: Arc<AtomicBool>,
    /// `None`: over one breaker, a quarter and half of its current
    /// `failure_threshold` (read at each judgement, so they follow
    /// `update_config`).
    watermarks: Option<(f64, f64)>,
    critical_fraction: f64,
}

impl fmt::Debug for GracefulDegradation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GracefulDegradation")
            .field("enabled", &self.is_enabled())
            .field("degraded_mode", &self.degraded_mode.load(Ordering::Relaxed))
            .field("watermarks", &self.watermarks())
            .field("critical_fraction", &self.critical_fraction)
            .finish_non_exhaustive()
    }
}

impl GracefulDegradation {
    /// The degradation of one breaker, with watermarks at half (high) and a
    /// quarter (low) of its `failure_threshold`, the one in force at each
    /// judgement (they follow [`CircuitBreaker::update_config`]).
    pub fn new(circuit_breaker: Arc<CircuitBreaker>) -> Self {
        Self::build(Source::Breaker(circuit_breaker), None)
    }

    /// The degradation of a set of endpoints, judged by the rule in the
    /// [type docs](GracefulDegradation) with watermarks [`DEFAULT_LOW_WATERMARK`] and
    /// [`DEFAULT_HIGH_WATERMARK`].
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::CircuitState;
    /// use breakwater::{
    ///     DegradationLevel, EndpointHealth, GracefulDegradation,
    /// };
    ///
    /// let health = |endpoint: &str, state| EndpointHealth {
    ///     endpoint: endpoint.to_owned(),
    ///     state,
    ///     failure_rate: 0.0,
    /// };
    /// // One of three endpoints is down: degraded, not critical.
    /// let degradation = GracefulDegradation::per_endpoint(move || {
    ///     vec![
    ///         health("a", CircuitState::Closed),
    ///         health("b", CircuitState::Open),
    ///         health("c", CircuitState::Closed),
    ///     ]
    /// });
    /// assert_eq!(degradation.get_degradation_level(), DegradationLevel::Degraded);
    /// ```
    pub fn per_endpoint(source: impl EndpointHealthSource + 'static) -> Self {
        Self::build(
            Source::Endpoints(Arc::new(source)),
            Some((DEFAULT_LOW_WATERMARK, DEFAULT_HIGH_WATERMARK)),
        )
    }

    fn build(source: Source, watermarks: Option<(f64, f64)>) -> Self {
        Self {
            source,
            enabled: Arc::new(AtomicBool::new(true)),
            degraded_mode: Arc::new(AtomicBool::new(false)),
            watermarks,
            critical_fraction: DEFAULT_CRITICAL_FRACTION,
        }
    }

    /// Sets the watermarks: a Closed failure rate `>= high` enters Degraded,
    /// and only a rate `< low` leaves it. `low == high` turns hysteresis off.
    /// Set so, they no longer follow the breaker's configuration.
    ///
    /// # Panics
    ///
    /// Unless `0.0 < low <= high <= 1.0`.
    pub fn with_watermarks(mut self, low: f64, high: f64) -> Self {
        assert!(
            0.0 < low && low <= high && high <= 1.0,
            "watermarks must satisfy 0 < low <= high <= 1, got low {low}, high {high}"
        );
        self.watermarks = Some((low, high));
        self
    }

    /// Sets the fraction of Open endpoints at or above which a set of
    /// endpoints is Critical. Over one breaker any value gives the same
    /// answer.
    ///
    /// # Panics
    ///
    /// Unless `0.0 < fraction <= 1.0`.
    pub fn with_critical_fraction(mut self, fraction: f64) -> Self {
        assert!(
            0.0 < fraction && fraction <= 1.0,
            "critical_fraction must be in (0, 1], got {fraction}"
        );
        self.critical_fraction = fraction;
        self
    }

    /// The watermarks in force, `(low, high)`.
    pub fn watermarks(&self) -> (f64, f64) {
        match (&self.watermarks, &self.source) {
            (Some(w), _) => *w,
            (None, Source::Breaker(b)) => {
                let threshold = b.failure_threshold();
                (threshold / 4.0, threshold / 2.0)
            }
            (None, Source::Endpoints(_)) => (DEFAULT_LOW_WATERMARK, DEFAULT_HIGH_WATERMARK),
        }
    }

    /// Turns degradation reporting on or off; off, the level is always
    /// [`Normal`](DegradationLevel::Normal).
    pub fn set_enabled(&self, enabled: bool) {
        // Relaxed: a flag on its own; no other data is published with it.
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether degradation is reported.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether the level is worse than [`Normal`](DegradationLevel::Normal).
    pub fn is_degraded(&self) -> bool {
        self.get_degradation_level() != DegradationLevel::Normal
    }

    /// The level now (always [`Normal`](DegradationLevel::Normal) when
    /// disabled).
    pub fn get_degradation_level(&self) -> DegradationLevel {
        if !self.is_enabled() {
            return DegradationLevel::Normal;
        }
        match &self.source {
            Source::Breaker(b) => self.judge([(b.state(), b.judged_failure_rate())]),
            Source::Endpoints(s) => self.judge(
                s.endpoint_health()
                    .into_iter()
                    .map(|h| (h.state, h.failure_rate)),
            ),
        }
    }

    /// Runs `f` with the current level, so that it can choose cheaper
    /// behaviour when degraded; returns what `f`'s future returns.
    ///
    /// # Cancel safety
    ///
    /// As cancel-safe as `f`'s future: the level is read before `f` runs and
    /// nothing else is held.
    ///
    /// # Examples
    ///
    /// See the [type docs](GracefulDegradation).
    pub async fn with_degradation<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce(DegradationLevel) -> Fut,
        Fut: Future,
    {
        f(self.get_degradation_level()).await
    }

    /// The level of `(state, failure rate)` pairs, updating the latch.
    fn judge(&self, breakers: impl IntoIterator<Item = (CircuitState, f64)>) -> DegradationLevel {
        let (mut total, mut open, mut unsettled) = (0_usize, 0_usize, false);
        let mut worst_rate: f64 = 0.0;
        for (state, rate) in breakers {
            total += 1;
            match state {
                CircuitState::Open => {
                    open += 1;
                    unsettled = true;
                }
                CircuitState::HalfOpen => unsettled = true,
                CircuitState::Closed => worst_rate = worst_rate.max(rate),
            }
        }
        let (low, high) = self.watermarks();
        // Relaxed: the latch is a hint shared by readers; two readers racing
        // judge the same rate and store the same answer.
        let was = self.degraded_mode.load(Ordering::Relaxed);
        let latched = if was {
            worst_rate >= low
        } else {
            worst_rate >= high
        };
        if latched != was {
            self.degraded_mode.store(latched, Ordering::Relaxed);
        }
        if total > 0 && open as f64 / total as f64 >= self.critical_fraction {
            DegradationLevel::Critical
        } else if unsettled || latched {
            DegradationLevel::Degraded
        } else {
            DegradationLevel::Normal
        }
    }
}

impl EndpointHealthSource for crate::resilience::per_endpoint::PerEndpointCircuitBreaker {
    /// Every retained breaker's state and judged failure rate. Sweeps
    /// first when a sweep is due, so that endpoints abandoned while failing
    /// (see [`RegistryLimits::abandoned_ttl`](crate::resilience::per_endpoint::RegistryLimits::abandoned_ttl))
    /// stop counting once they are evicted.
    fn endpoint_health(&self) -> Vec<EndpointHealth> {
        self.sweep_if_due();
        self.handles()
            .into_iter()
            .map(|(endpoint, breaker)| EndpointHealth {
                endpoint,
                state: breaker.state(),
                failure_rate: breaker.judged_failure_rate(),
            })
            .collect()
    }
}
