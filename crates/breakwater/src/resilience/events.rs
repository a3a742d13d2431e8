//! Transition events, names and the record kept for metrics.
//!
//! Every change of state is published once, after the compare-exchange that
//! made it, to the registered listeners and to the broadcast channel of
//! [`CircuitBreaker::subscribe`](super::CircuitBreaker::subscribe), and, for
//! a breaker of a [`PerEndpointCircuitBreaker`](super::per_endpoint::PerEndpointCircuitBreaker),
//! to the registry's own stream as well. Nothing is published under a lock,
//! a breaker with no listener pays one load per transition (and one pointer
//! of memory), and a listener that panics is logged and skipped: it can
//! neither stop the transition nor leave the breaker unusable.
//!
//! Each transition is also logged with `tracing` (an opening at `warn`, the
//! others at `info`) and noted in a small record read by metrics at scrape
//! time: how long each opening lasted (histogram buckets) and the wall-clock
//! time of the last transition. All of this happens at transition time; a
//! call that changes no state pays nothing for it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::state::CircuitState;
use super::CircuitBreaker;
use crate::config::{CircuitBreakerConfig, ConfigError};

/// One change of a breaker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// When it happened, on the tokio clock.
    pub at: Instant,
    /// For a transition to Open that will end by itself: how long it lasts.
    pub open_for: Option<Duration>,
    /// The breaker's name, if it has one; a registry names each breaker by
    /// its endpoint.
    pub name: Option<Arc<str>>,
}

impl Transition {
    /// The breaker's name (for a registry's breaker: its endpoint), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// Receives a breaker's transitions.
///
/// Implemented for every `Fn(&Transition) + Send + Sync`. Called on the
/// thread that made the transition, after it happened and outside any lock;
/// keep it short (hand work to a channel if it is not).
pub trait TransitionListener: Send + Sync + 'static {
    /// Called once per transition.
    fn on_transition(&self, transition: &Transition);
}

impl<F: Fn(&Transition) + Send + Sync + 'static> TransitionListener for F {
    fn on_transition(&self, transition: &Transition) {
        self(transition)
    }
}

/// Capacity of the broadcast channel behind `subscribe`.
const CHANNEL_CAPACITY: usize = 64;

type ListenerList = Arc<[Arc<dyn TransitionListener>]>;

/// A set of listeners and a broadcast channel, allocated on the first `add`
/// or `subscribe`: a set nobody listens to is one pointer. A breaker has
/// one; a registry has one shared by all its breakers.
#[derive(Default)]
pub(crate) struct Listeners {
    inner: OnceLock<Box<Inner>>,
}

#[derive(Default)]
struct Inner {
    listeners: RwLock<Option<ListenerList>>,
    channel: OnceLock<broadcast::Sender<Transition>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("listening", &self.inner.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Listeners {
    fn inner(&self) -> &Inner {
        self.inner.get_or_init(Box::default)
    }

    pub(crate) fn add(&self, listener: Arc<dyn TransitionListener>) {
        // A poisoned lock only means a panic elsewhere while it was held;
        // the list itself is always whole, so keep using it.
        let mut guard = self
            .inner()
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = guard.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        list.push(listener);
        *guard = Some(list.into());
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner()
            .channel
            .get_or_init(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, t: &Transition) {
        let Some(inner) = self.inner.get() else {
            return;
        };
        // Cloned out of the lock, so a listener may add listeners.
        let listeners = inner
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for l in listeners.iter().flat_map(|l| l.iter()) {
            if catch_unwind(AssertUnwindSafe(|| l.on_transition(t))).is_err() {
                tracing::error!(
                    endpoint = t.name().unwrap_or(""),
                    from = %t.from,
                    to = %t.to,
                    "a transition listener panicked"
                );
            }
        }
        if let Some(tx) = inner.channel.get() {
            // No receiver is not an error: nobody is listening right now.
            let _ = tx.send(t.clone());
        }
    }
}

/// Upper bounds, in seconds, of the buckets of the open-duration histogram
/// (a last bucket, `+Inf`, takes the rest).
pub(crate) const OPEN_DURATION_BOUNDS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// How long a breaker's openings lasted, from
/// [`CircuitBreaker::open_durations`].
///
/// An opening lasts from the transition to Open to the next transition out
/// of it (to HalfOpen when its timeout elapsed, or to Closed on a reset); an
/// opening still in progress is not counted yet.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenDurations {
    /// Per bucket: its upper bound in seconds (`f64::INFINITY` for the last)
    /// and how many openings fell in it and in no smaller one (not
    /// cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// How many openings ended.
    pub count: u64,
    /// Their total length.
    pub sum: Duration,
}

/// What metrics read at scrape time, written at transition time.
#[derive(Debug, Default)]
struct Record {
    /// 1 + microseconds since the breaker's epoch at which the current
    /// opening began; 0 when not Open.
    opened_at_us: AtomicU64,
    /// Unix time of the last transition, in microseconds; 0 before the first.
    last_change_unix_us: AtomicU64,
    /// Non-cumulative counts per bucket of `OPEN_DURATION_BOUNDS`, then +Inf.
    buckets: [AtomicU64; OPEN_DURATION_BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

/// A breaker's name, and the stream of the registry it belongs to.
#[derive(Debug)]
struct Label {
    name: Arc<str>,
    hub: Option<Arc<Listeners>>,
}

/// Everything a breaker does about its transitions besides making them:
/// its listeners, name, logs and metrics record.
#[derive(Debug, Default)]
pub(crate) struct Events {
    own: Listeners,
    label: OnceLock<Label>,
    /// Allocated at the first transition.
    record: OnceLock<Box<Record>>,
}

impl Events {
    pub(crate) fn add(&self, listener: Arc<dyn TransitionListener>) {
        self.own.add(listener);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.own.subscribe()
    }

    /// Names the breaker (once; later calls change nothing) and, for a
    /// registry's breaker, joins the registry's stream.
    pub(crate) fn label(&self, name: Arc<str>, hub: Option<Arc<Listeners>>) {
        let _ = self.label.set(Label { name, hub });
    }

    pub(crate) fn name(&self) -> Option<&Arc<str>> {
        self.label.get().map(|l| &l.name)
    }

    /// Logs, records and publishes one transition that happened at `at_us`
    /// (microseconds since the breaker's epoch), with the window's failure
    /// rate at that moment.
    pub(crate) fn publish(&self, t: Transition, at_us: u64, failure_rate: f64) {
        let endpoint = t.name().unwrap_or("");
        let retry_after = t.open_for;
        match t.to {
            CircuitState::Open => tracing::warn!(
                endpoint,
                from = %t.from,
                to = %t.to,
                failure_rate,
                retry_after = ?retry_after,
                "circuit breaker opened"
            ),
            CircuitState::HalfOpen => tracing::info!(
                endpoint,
                from = %t.from,
                to = %t.to,
                failure_rate,
                "circuit breaker half-open"
            ),
            CircuitState::Closed => tracing::info!(
                endpoint,
                from = %t.from,
                to = %t.to,
                failure_rate,
                "circuit breaker closed"
            ),
        }
        self.note(&t, at_us);
        self.own.publish(&t);
        if let Some(hub) = self.label.get().and_then(|l| l.hub.as_deref()) {
            hub.publish(&t);
        }
    }

    fn note(&self, t: &Transition, at_us: u64) {
        let r = self.record.get_or_init(Box::default);
        // Relaxed throughout: each value is read on its own by scrapes, and
        // transitions of one breaker are published one after the other.
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        r.last_change_unix_us.store(unix_us, Ordering::Relaxed);
        if t.from == CircuitState::Open {
            let began = r.opened_at_us.swap(0, Ordering::Relaxed);
            if began != 0 {
                let us = at_us.saturating_sub(began - 1);
                let secs = us as f64 / 1e6;
                let i = OPEN_DURATION_BOUNDS
                    .iter()
                    .position(|&b| secs <= b)
                    .unwrap_or(OPEN_DURATION_BOUNDS.len());
                r.buckets[i].fetch_add(1, Ordering::Relaxed);
                r.sum_us.fetch_add(us, Ordering::Relaxed);
            }
        }
        if t.to == CircuitState::Open {
            r.opened_at_us.store(at_us + 1, Ordering::Relaxed);
        }
    }

    fn open_durations(&self) -> OpenDurations {
        let mut buckets: Vec<(f64, u64)> = OPEN_DURATION_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|b| (b, 0))
            .collect();
        let mut sum = Duration::ZERO;
        if let Some(r) = self.record.get() {
            for (b, n) in buckets.iter_mut().zip(&r.buckets) {
                b.1 = n.load(Ordering::Relaxed);
            }
            sum = Duration::from_micros(r.sum_us.load(Ordering::Relaxed));
        }
        OpenDurations {
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
            sum,
        }
    }

    /// As `open_durations`, added into `into` without allocating (same
    /// layout as `OPEN_DURATION_BOUNDS` + Inf); returns (count, sum in µs).
    pub(crate) fn add_open_durations(&self, into: &mut [u64]) -> (u64, u64) {
        let Some(r) = self.record.get() else {
            return (0, 0);
        };
        let mut count = 0;
        for (slot, n) in into.iter_mut().zip(&r.buckets) {
            let n = n.load(Ordering::Relaxed);
            *slot += n;
            count += n;
        }
        (count, r.sum_us.load(Ordering::Relaxed))
    }

    fn last_change_unix_us(&self) -> Option<u64> {
        let us = self
            .record
            .get()?
            .last_change_unix_us
            .load(Ordering::Relaxed);
        (us != 0).then_some(us)
    }
}

/// Names, events and the metrics record.
impl CircuitBreaker {
    /// A breaker with `config` and a name, which its transition events,
    /// logs and metrics carry.
    ///
    /// # Panics
    ///
    /// If `config` is invalid, as [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
    ///
    /// let breaker = CircuitBreaker::named("payments", CircuitBreakerConfig::default());
    /// assert_eq!(breaker.name(), Some("payments"));
    /// let mut events = breaker.subscribe();
    /// breaker.force_open();
    /// assert_eq!(events.try_recv().unwrap().name(), Some("payments"));
    /// ```
    pub fn named(name: impl Into<Arc<str>>, config: CircuitBreakerConfig) -> Self {
        match Self::try_named(name, config) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// A breaker with `config` and a name.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field.
    pub fn try_named(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, ConfigError> {
        let breaker = Self::try_new(config)?;
        breaker.shared.events.label(name.into(), None);
        Ok(breaker)
    }

    /// Names a breaker of a registry and joins it to the registry's stream.
    pub(crate) fn join(self, name: Arc<str>, hub: &Arc<Listeners>) -> Self {
        self.shared.events.label(name, Some(hub.clone()));
        self
    }

    /// The breaker's name, if it has one (a registry's breakers are named
    /// by their endpoint).
    pub fn name(&self) -> Option<&str> {
        self.shared.events.name().map(|n| &**n)
    }

    /// How long the breaker's finished openings lasted, in histogram
    /// buckets; read from counters written at each transition.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    /// breaker.force_open();
    /// tokio::time::advance(Duration::from_secs(3)).await;
    /// breaker.reset();
    /// let d = breaker.open_durations();
    /// assert_eq!((d.count, d.sum), (1, Duration::from_secs(3)));
    /// assert_eq!(d.buckets[4], (5.0, 1)); // in (2.5 s, 5 s]
    /// # }
    /// ```
    pub fn open_durations(&self) -> OpenDurations {
        self.shared.events.open_durations()
    }

    /// The wall-clock time of the last transition, if there was one.
    pub fn last_state_change_time(&self) -> Option<SystemTime> {
        let us = self.shared.events.last_change_unix_us()?;
        Some(UNIX_EPOCH + Duration::from_micros(us))
    }

    /// Unix seconds of the last transition (for metrics).
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))] // read by the collector only
    pub(crate) fn last_state_change_unix_secs(&self) -> Option<f64> {
        Some(self.shared.events.last_change_unix_us()? as f64 / 1e6)
    }

    /// Adds the open-duration bucket counts into `into` (the layout of
    /// `OPEN_DURATION_BOUNDS`, then +Inf); returns (count, sum in µs).
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))] // read by the collector only
    pub(crate) fn add_open_durations(&self, into: &mut [u64]) -> (u64, u64) {
        self.shared.events.add_open_durations(into)
    }

    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))] // read by the collector only
    pub(crate) fn name_arc(&self) -> Option<&Arc<str>> {
        self.shared.events.name()
    }
}

#[cfg(all(test, not(breakwater_loom)))]
mod tests {
    use std::time::{Duration, SystemTime};

    use crate::resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitState};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Openings are counted when they end, each with its exact length, in
    /// the bucket of that length; the wall-clock time of the last change
    /// is kept.
    #[tokio::test(start_paused = true)]
    async fn every_finished_opening_is_counted_with_its_length() {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 1,
            open_timeout_ms: 1_000,
            max_open_timeout_ms: 60_000,
            jitter_ratio: 0.0,
            half_open_max_requests: 1,
            ..Default::default()
        });
        assert_eq!(cb.last_state_change_time(), None);
        assert_eq!(cb.last_state_change_unix_secs(), None);
        assert_eq!(cb.open_durations().count, 0);
        let before = SystemTime::now();
        cb.try_acquire().unwrap().failure();
        assert_eq!(cb.state(), CircuitState::Open);
        let changed = cb.last_state_change_time().expect("a change happened");
        assert!(changed >= before - ms(1) && changed <= SystemTime::now());
        let secs = cb.last_state_change_unix_secs().expect("a change happened");
        let since_epoch = changed.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert!(
            (secs - since_epoch.as_secs_f64()).abs() < 1e-3,
            "{secs} {since_epoch:?}"
        );
        assert_eq!(cb.open_durations().count, 0, "an opening still going");

        tokio::time::advance(ms(1_000)).await;
        // The probe fails: a second opening, twice as long.
        cb.try_acquire().unwrap().failure();
        assert_eq!(cb.state(), CircuitState::Open);
        tokio::time::advance(ms(2_000)).await;
        cb.try_acquire().unwrap().success();
        assert_eq!(cb.state(), CircuitState::Closed);

        let d = cb.open_durations();
        assert_eq!(d.count, 2);
        assert_eq!(d.sum, ms(3_000), "exact lengths");
        let filled: Vec<(f64, u64)> = d.buckets.iter().copied().filter(|b| b.1 > 0).collect();
        assert_eq!(filled, vec![(1.0, 1), (2.5, 1)]);
        assert_eq!(d.buckets.len(), super::OPEN_DURATION_BOUNDS.len() + 1);
        assert_eq!(d.buckets.last().unwrap().0, f64::INFINITY);

        // A forced opening counts when it is lifted.
        cb.force_open();
        tokio::time::advance(ms(400)).await;
        cb.reset();
        let d = cb.open_durations();
        assert_eq!((d.count, d.sum), (3, ms(3_400)));
        assert_eq!(d.buckets[1], (0.5, 1), "400 ms is in (0.1 s, 0.5 s]");

        // What the metrics collector reads: the same counts, added to what
        // it has summed so far over other breakers.
        let mut into = vec![10; super::OPEN_DURATION_BOUNDS.len() + 1];
        assert_eq!(cb.add_open_durations(&mut into), (3, 3_400_000));
        let want: Vec<u64> = d.buckets.iter().map(|b| 10 + b.1).collect();
        assert_eq!(into, want);
        let fresh = CircuitBreaker::new(CircuitBreakerConfig::default());
        assert_eq!(fresh.add_open_durations(&mut into), (0, 0));
        assert_eq!(into, want, "nothing added");
    }

    #[test]
    fn a_named_breaker_shares_its_name() {
        let named = CircuitBreaker::named("billing", CircuitBreakerConfig::default());
        assert_eq!(named.name_arc().map(|n| &**n), Some("billing"));
        assert_eq!(named.name(), Some("billing"));
        let anonymous = CircuitBreaker::new(CircuitBreakerConfig::default());
        assert!(anonymous.name_arc().is_none());
    }
}
