//! The circuit breaker: its semantics, and the core types (also at the
//! crate root).
//!
//! ```text
//!   Closed ──(failure rate >= threshold over >= minimum_calls)──▶ Open
//!     ▲                                                            │ open timeout
//!     │                                                            ▼ (backoff, jitter)
//!     └──(half_open_max_requests probes succeeded)────────── HalfOpen
//!                                                  a probe failed ──▶ Open (longer)
//! ```
//!
//! # Guarantees
//!
//! * **Closed is free.** A Closed call reads one atomic word to be admitted
//!   and, with the default count window, records its outcome with one atomic
//!   add and one load of its window slot: no lock, no allocation, no clock.
//!   While the window holds only successes (a healthy service), a success
//!   adds to a counter of its thread's stripe instead, one of two on cache
//!   lines of their own, so that threads sharing a breaker do not pass one
//!   counter's line back and forth.
//! * **Open is exact.** A rejection reads the state, the deadline and a
//!   clock, and allocates nothing. No call after the deadline is ever
//!   refused, however late a timer task runs or however busy the runtime
//!   is, and `retry_after` is the time left. The clock is the processor's
//!   time-stamp counter when the kernel itself keeps time with it (x86-64
//!   Linux, clock source `tsc`): it costs less than half a system clock
//!   read. A rejection trusts it only while it shows the deadline certainly
//!   ahead, allowing twice the drift NTP may give the system clock, so in
//!   the last thousandth of an opening (and for an opening's first
//!   rejection, and until the counter's rate has been measured once per
//!   process, on a background thread, in at most 0.2 s) the system clock
//!   decides. A `retry_after` from the counter is the time left at the
//!   measured rate, never more than the opening lasts. A small timer task (one
//!   per opening) moves the breaker to HalfOpen at the deadline so that the
//!   transition is published even when no call comes, and
//!   [`CircuitBreaker::state`] reports HalfOpen from that moment even if
//!   the timer has not run yet.
//! * **Generations.** Every change of state bumps a generation number that
//!   each permit remembers. An outcome from an older generation (a slow call
//!   admitted while Closed that finishes after the breaker opened, a probe
//!   that outlived its HalfOpen period) describes a state that is gone and is
//!   ignored, so a late success cannot close a breaker and a late failure
//!   cannot land in a fresh window.
//! * **Cancellation.** Dropping the future of [`CircuitBreaker::call`] (or a
//!   [`Permit`]) records nothing and frees its probe slot.
//! * **Panics.** A call that panics counts as a failure and the panic goes on
//!   to the caller. The breaker holds no lock that a panic could poison.
//! * **Time.** All time is read through `tokio::time`, so tests can pause and
//!   advance it. The counter above runs apart from paused time, so an
//!   opening follows it only when its first rejection happens outside any
//!   tokio runtime or in a multi-thread one (tokio pauses time only in a
//!   current-thread runtime); an opening rejected first in a current-thread
//!   runtime reads tokio's clock on every rejection. Only a test that
//!   pauses time in a current-thread runtime while calling a breaker whose
//!   opening was first rejected elsewhere would see the counter's time.
//!
//! # Why a count window by default
//!
//! "The last 100 calls" needs no clock, so the Closed path stays free, and it
//! judges a quiet endpoint and a busy one by the same number of calls. A time
//! window (`window_ms`) judges "the last minute" instead: better when traffic
//! is bursty and old failures should age out, at the price of a clock read
//! per outcome.
//!
//! # Memory ordering
//!
//! The breaker's state is one atomic word (state, generation, probes in
//! flight). Every transition is a compare-and-swap of that word with
//! `AcqRel` ordering, and every reader loads it with `Acquire`; what a
//! transition prepares before its swap (a cleared window, an opening's
//! deadline, which is itself stored with `Release` and loaded with
//! `Acquire`) is therefore visible to every thread that sees the new word.
//! A caller who observes `state() == Open` also observes the deadline that
//! `retry_after` reports.
//!
//! Everything else is a statistic or a setting read on its own: the window
//! slots, the counters of [`CircuitMetrics`] and of `ExecutorMetrics`, and
//! the tuning that [`CircuitBreaker::update_config`] stores, use `Relaxed`.
//! A metrics snapshot is thus a set of individually exact counters, not one
//! instant: two counters read together may differ by the calls that finished
//! between the two loads. An outcome is attributed by the generation its
//! permit remembers, never by a later read of the state, so a relaxed
//! counter can never move the breaker.
//!
//! The models under `cfg(breakwater_loom)` check these claims with loom
//! (`scripts/loom.sh`): a transition racing an outcome, a reset, or another
//! transition.

mod backoff;
mod call;
mod core;
mod counter_clock;
#[cfg(feature = "resilience")]
pub(crate) mod degradation;
pub(crate) mod events;
pub(crate) mod metrics;
pub(crate) mod per_endpoint;
pub(crate) mod permit;
pub(crate) mod snapshot;
pub(crate) mod state;
#[cfg(feature = "resilience")]
pub(crate) mod strategies;
mod ticker;
mod window;

#[cfg(all(test, breakwater_loom))]
mod loom_tests;
#[cfg(all(test, not(breakwater_loom)))]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use self::call::CallFuture;
pub(crate) use self::events::{Transition, TransitionListener};
pub(crate) use self::metrics::CircuitMetrics;
pub(crate) use self::permit::{OwnedPermit, Permit, Verdict};
pub(crate) use self::snapshot::CircuitSnapshot;
pub(crate) use crate::config::ConfigError;
pub(crate) use crate::error::CircuitError;

// The core types under their module name too (`breakwater::resilience::*`).
#[cfg(feature = "resilience")]
#[doc(no_inline)]
pub use self::degradation::{DegradationLevel, GracefulDegradation};
#[doc(no_inline)]
pub use self::per_endpoint::PerEndpointCircuitBreaker;
#[doc(no_inline)]
pub use self::state::CircuitState;
#[cfg(feature = "resilience")]
#[doc(no_inline)]
pub use self::strategies::{ResilienceStrategy, ResilientExecutor};
#[doc(no_inline)]
pub use crate::config::CircuitBreakerConfig;

use self::core::{Change, Core, LazyNow, Refusal};
use self::events::Events;
pub(crate) use self::events::Listeners;
#[cfg(feature = "prometheus")]
pub(crate) use self::events::OPEN_DURATION_BOUNDS;

/// A circuit breaker: runs calls while the service behind it is healthy,
/// refuses them at once while it is not, and probes for its recovery.
///
/// `Send + Sync`; share it with an `Arc`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
///     sample_size: 4,
///     open_timeout_ms: 1_000,
///     jitter_ratio: 0.0,
///     ..Default::default()
/// }));
///
/// // Two failures in a window of four: 50% >= the 0.5 threshold.
/// for ok in [true, false, true, false] {
///     let _ = breaker.call(|| async move { if ok { Ok(()) } else { Err("boom") } }).await;
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
///
/// // Open: calls are refused without running.
/// let err = breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap_err();
/// assert_eq!(err, CircuitError::Open { retry_after: Some(std::time::Duration::from_secs(1)) });
///
/// // After the open timeout, probes run; enough successes close it again.
/// tokio::time::advance(std::time::Duration::from_secs(1)).await;
/// assert_eq!(breaker.state(), CircuitState::HalfOpen);
/// for _ in 0..5 {
///     breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap();
/// }
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// # }
/// ```
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// What a breaker and its timer tasks share.
pub(crate) struct Shared {
    core: Core,
    epoch: Instant,
    /// Shared with other breakers built from the same configuration (a
    /// registry's default), replaced by `update_config`.
    config: RwLock<Arc<CircuitBreakerConfig>>,
    events: Events,
    me: Weak<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("word", &self.core.word())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.shared.core.word();
        f.debug_struct("CircuitBreaker")
            .field("state", &w.state())
            .field("generation", &w.generation())
            .field("open_streak", &w.streak())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Microseconds since the breaker's epoch of `t`.
    fn us_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn now_us(&self) -> u64 {
        self.us_of(Instant::now())
    }

    fn lazy_now(&self) -> LazyNow<impl FnMut() -> u64 + '_> {
        LazyNow::new(move || self.now_us())
    }

    fn instant_of(&self, us: u64) -> Instant {
        // At most 2^52 µs (142 years) in practice; saturate rather than
        // panic on a platform whose `Instant` cannot reach that far.
        let mut d = Duration::from_micros(us);
        loop {
            if let Some(t) = self.epoch.checked_add(d) {
                return t;
            }
            d /= 2;
        }
    }

    /// Announces a transition: events, logs and, for an opening with a
    /// deadline, the timer that ends it.
    fn publish(&self, c: Change) {
        let open_for = c
            .open_until_us
            .map(|until| Duration::from_micros(until.saturating_sub(c.at_us)));
        if let Some(until) = c.open_until_us {
            self.arm_ticker(c.generation, until);
        }
        // For the log line: the rate that tripped an opening (the window is
        // cleared only on closing).
        let failure_rate = self.core.tally(&mut self.lazy_now()).failure_rate();
        let t = Transition {
            from: c.from,
            to: c.to,
            at: self.instant_of(c.at_us),
            open_for,
            name: self.events.name().cloned(),
        };
        self.events.publish(t, c.at_us, failure_rate);
    }

    /// Starts the timer task of an opening, if a tokio runtime is at hand.
    /// Without one, rejections read the clock themselves and the move to
    /// HalfOpen happens on the first call or `state()` after the deadline.
    fn arm_ticker(&self, generation: u32, until_us: u64) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(ticker::ticker(self.me.clone(), generation, until_us));
        }
    }
}

impl CircuitBreaker {
    /// A breaker with `config`.
    ///
    /// # Panics
    ///
    /// If `config` is invalid, with the message of
    /// [`CircuitBreakerConfig::validate`]; use [`try_new`](Self::try_new) to
    /// get the error instead.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        match Self::try_new(config) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// A breaker with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field.
    pub fn try_new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::with_shared_config(Arc::new(config))
    }

    /// A breaker whose configuration is shared (not copied) with other
    /// breakers until one of them is reconfigured: what a registry of many
    /// endpoints with one default configuration wants.
    pub(crate) fn with_shared_config(
        config: Arc<CircuitBreakerConfig>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        // Each breaker draws its own jitter. The seed comes from std's
        // randomly keyed hasher (new keys for every `RandomState`) over a
        // process-wide count, so breakers made in the same instant, or in
        // two processes started together, do not share one.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let seed = hasher.finish();
        let shared = Arc::new_cyclic(|me| Shared {
            core: Core::new(&config, seed),
            epoch: Instant::now(),
            config: RwLock::new(config),
            events: Events::default(),
            me: me.clone(),
        });
        Ok(Self { shared })
    }

    /// The configuration in force.
    pub fn config(&self) -> CircuitBreakerConfig {
        CircuitBreakerConfig::clone(&self.shared.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current state. One atomic load when Closed; never blocks, changes
    /// no counter. An Open breaker whose timeout has elapsed is reported (and
    /// becomes) HalfOpen.
    #[inline]
    pub fn state(&self) -> CircuitState {
        if self.shared.core.word().state() == CircuitState::Closed {
            return CircuitState::Closed;
        }
        self.state_slow()
    }

    /// `state()` of an Open or HalfOpen breaker: may read the clock.
    #[cold]
    #[inline(never)]
    fn state_slow(&self) -> CircuitState {
        let s = &*self.shared;
        s.core.state(&mut s.lazy_now(), &mut |c| s.publish(c))
    }

    /// The failure rate of the current window, `0.0..=1.0` (0.0 when empty).
    pub fn failure_rate(&self) -> f64 {
        self.shared
            .core
            .tally(&mut self.shared.lazy_now())
            .failure_rate()
    }

    /// Time left until an Open breaker lets probes through (`None` unless
    /// Open with a deadline, e.g. forced open).
    pub fn retry_after(&self) -> Option<Duration> {
        let core = &self.shared.core;
        let until = core.open_deadline(core.word())?;
        Some(Duration::from_micros(
            until.saturating_sub(self.shared.now_us()),
        ))
    }

    /// The breaker's counters and state.
    pub fn metrics(&self) -> CircuitMetrics {
        let s = &*self.shared;
        let state = self.state();
        let w = s.core.word();
        let t = &s.core.totals;
        let load = |a: &crate::sync::AtomicU64| a.load(crate::sync::Ordering::Relaxed);
        let recorded = s.core.recorded();
        let failures = load(&t.failures);
        let ignored = load(&t.ignored);
        let cancelled = load(&t.cancelled);
        let blocked = s.core.blocked();
        let allowed = recorded.saturating_add(ignored).saturating_add(cancelled);
        let mut transitions = [[0; 3]; 3];
        for (i, n) in t.transitions.iter().enumerate() {
            transitions[i / 3][i % 3] = load(n);
        }
        let tally = s.core.tally(&mut s.lazy_now());
        let last = load(&t.last_change_us);
        CircuitMetrics {
            state,
            requests: allowed.saturating_add(blocked),
            allowed,
            blocked,
            successes: recorded.saturating_sub(failures),
            failures,
            slow_calls: load(&t.slow),
            ignored,
            cancelled,
            half_open_tests: load(&t.probes),
            state_changes: transitions.iter().flatten().sum(),
            transitions,
            open_streak: w.streak(),
            failure_rate: tally.failure_rate(),
            window_len: tally.len,
            last_state_change: (last != 0).then(|| s.instant_of(last - 1)),
        }
    }

    /// Holds the breaker Open: every call is refused with
    /// `retry_after: None` until [`reset`](Self::reset) or
    /// [`force_closed`](Self::force_closed).
    pub fn force_open(&self) {
        let s = &*self.shared;
        s.core.force_open(s.now_us(), &mut |c| s.publish(c));
    }

    /// Holds the breaker Closed: calls run and are counted, nothing opens
    /// it, until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        let s = &*self.shared;
        s.core.force_closed(s.now_us(), &mut |c| s.publish(c));
    }

    /// Returns to a normal Closed breaker with an empty window and no
    /// backoff streak.
    pub fn reset(&self) {
        let s = &*self.shared;
        s.core.reset(s.now_us(), &mut |c| s.publish(c));
    }

    /// Asks to run one call, without running anything.
    ///
    /// # Errors
    ///
    /// [`CircuitError::Open`] when the breaker refuses the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
    ///
    /// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    /// let permit = breaker.try_acquire().expect("a new breaker is closed");
    /// let answer = 6 * 7; // the protected work, sync or async
    /// if answer == 42 { permit.success() } else { permit.failure() }
    /// assert_eq!(breaker.metrics().successes, 1);
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, CircuitError<Infallible>> {
        let s = &*self.shared;
        match s.core.acquire(&mut s.lazy_now(), &mut |c| s.publish(c)) {
            Ok(ticket) => Ok(Permit::new(s, ticket)),
            Err(refusal) => Err(self.refused(refusal)),
        }
    }

    /// As [`try_acquire`](Self::try_acquire), for a permit that owns a
    /// handle to the breaker and so can move into a `'static` future.
    ///
    /// # Errors
    ///
    /// [`CircuitError::Open`] when the breaker refuses the call.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, CircuitError<Infallible>> {
        let s = &*self.shared;
        match s.core.acquire(&mut s.lazy_now(), &mut |c| s.publish(c)) {
            Ok(ticket) => Ok(OwnedPermit::new(self.shared.clone(), ticket)),
            Err(refusal) => Err(self.refused(refusal)),
        }
    }

    /// Whether a call now would be refused, and the `retry_after` it would
    /// get: takes no probe slot and counts nothing (see
    /// [`count_refusal`](Self::count_refusal)).
    #[cfg(feature = "tower")]
    pub(crate) fn peek_refusal(&self) -> Option<Option<Duration>> {
        if self.shared.core.word().state() == CircuitState::Closed {
            return None;
        }
        let s = &*self.shared;
        s.core
            .peek(&mut s.lazy_now())
            .map(|r| r.retry_after_us().map(Duration::from_micros))
    }

    /// Counts a refusal that [`peek_refusal`](Self::peek_refusal) decided.
    #[cfg(feature = "tower")]
    pub(crate) fn count_refusal(&self) {
        self.shared.core.count_refusal();
    }

    fn refused(&self, refusal: Refusal) -> CircuitError<Infallible> {
        refused(refusal)
    }

    /// Runs `f` through the breaker; every `Err` counts as a failure.
    ///
    /// # Errors
    ///
    /// [`CircuitError::Open`] without running `f` when the breaker refuses
    /// the call; [`CircuitError::Inner`] with `f`'s error;
    /// [`CircuitError::Timeout`] when `call_timeout_ms` (or, for a probe,
    /// `probe_timeout_ms`) elapsed first.
    ///
    /// # Panics
    ///
    /// If `f` or its future panics (counted as a failure first). A time limit
    /// needs a tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future cancels the call: nothing is recorded
    /// and its probe slot, if any, is freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    /// // The boxed style works too: `|| Box::pin(async { ... })`.
    /// let n = breaker.call(|| Box::pin(async { Ok::<_, std::io::Error>(7) })).await.unwrap();
    /// assert_eq!(n, 7);
    /// # }
    /// ```
    // Not an `async fn`: the future is a small one written by hand (see
    // `call.rs`).
    #[inline]
    pub fn call<'a, F, Fut, T: 'a, E: 'a>(
        &'a self,
        f: F,
    ) -> impl Future<Output = Result<T, CircuitError<E>>> + 'a
    where
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<T, E>> + 'a,
    {
        self.call_with(Verdict::of, f)
    }

    /// Runs `f` through the breaker, with `classify` deciding how its result
    /// counts (e.g. ignore a 400 caused by a bad payload, count a 503 that
    /// came back as `Ok` as a failure).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, Verdict};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    /// let status = breaker
    ///     .call_with(
    ///         |r: &Result<u16, ()>| match r {
    ///             Ok(s) if *s >= 500 => Verdict::Failure,
    ///             Ok(s) if *s >= 400 => Verdict::Ignore,
    ///             Ok(_) => Verdict::Success,
    ///             Err(_) => Verdict::Failure,
    ///         },
    ///         || async { Ok(404) },
    ///     )
    ///     .await
    ///     .unwrap();
    /// assert_eq!(status, 404);
    /// assert_eq!(breaker.metrics().ignored, 1);
    /// # }
    /// ```
    #[inline]
    pub fn call_with<'a, F, Fut, T, E, C>(
        &'a self,
        classify: C,
        f: F,
    ) -> impl Future<Output = Result<T, CircuitError<E>>> + 'a
    where
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<T, E>> + 'a,
        C: FnOnce(&Result<T, E>) -> Verdict + 'a,
    {
        CallFuture::new(&self.shared, classify, f)
    }

    /// Applies a new configuration while calls run. The state, the backoff
    /// streak and the window's outcomes are kept (all of them in a longer
    /// window, the most recent ones that fit a shorter one; a time window
    /// starts empty when its length changes); an opening in progress keeps its deadline. A Closed
    /// breaker whose window already crosses the new thresholds opens at once.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field. Nothing changes on
    /// error.
    pub fn update_config(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut guard = self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner());
        self.shared.core.configure(&config);
        *guard = Arc::new(config);
        drop(guard);
        // The window is judged under the new rules at once (not only at the
        // next outcome, which may leave the window as it was); outside the
        // lock, since a listener may read the configuration.
        let s = &*self.shared;
        s.core.rejudge(&mut s.lazy_now(), &mut |c| s.publish(c));
        Ok(())
    }

    /// The failure rate as the breaker judges it: 0.0 until the window holds
    /// `minimum_calls` outcomes.
    // Read by graceful degradation (feature `resilience`).
    #[cfg_attr(not(feature = "resilience"), allow(dead_code))]
    pub(crate) fn judged_failure_rate(&self) -> f64 {
        let tally = self.shared.core.tally(&mut self.shared.lazy_now());
        if tally.len < self.shared.core.minimum_calls() {
            0.0
        } else {
            tally.failure_rate()
        }
    }

    /// The `failure_threshold` in force.
    // Read by graceful degradation (feature `resilience`).
    #[cfg_attr(not(feature = "resilience"), allow(dead_code))]
    pub(crate) fn failure_threshold(&self) -> f64 {
        self.shared.core.failure_threshold()
    }

    /// Whether the breaker is HalfOpen (by its own timing, not forced) with
    /// no probe in flight.
    pub(crate) fn is_idle_half_open(&self) -> bool {
        let w = self.shared.core.word();
        w.state() == CircuitState::HalfOpen && w.is_automatic() && w.in_flight() == 0
    }

    /// The breaker's state in a serialisable form, to survive a restart.
    pub fn snapshot(&self) -> CircuitSnapshot {
        let s = &*self.shared;
        let w = s.core.word();
        let remaining = s
            .core
            .open_deadline(w)
            .map(|until| until.saturating_sub(s.now_us()) / 1000);
        let forced = if w.is_forced_open() {
            Some(CircuitState::Open)
        } else if w.is_forced_closed() {
            Some(CircuitState::Closed)
        } else {
            None
        };
        let length = s.core.open_for_us();
        CircuitSnapshot {
            state: w.state(),
            forced,
            open_streak: w.streak(),
            open_remaining_ms: remaining,
            open_length_ms: (length != 0).then_some(length / 1000),
            taken_at_unix_ms: unix_ms(),
            outcomes: snapshot::encode(&s.core.outcomes()),
        }
    }

    /// A breaker with `config` in the state `snapshot` recorded. An Open
    /// breaker stays Open for the time it had left, less the wall-clock time
    /// since the snapshot; a HalfOpen one starts with no probe in flight.
    /// The time left and the length of the latest opening are cut to the
    /// longest opening `config` can make (`max_open_timeout_ms`, stretched
    /// by the jitter), so that a damaged or hand-edited snapshot cannot hold
    /// a breaker open for longer than its configuration allows.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field of `config`, or
    /// `snapshot.outcomes` when it holds a character that is not an outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let before = CircuitBreaker::new(CircuitBreakerConfig::default());
    /// before.force_open();
    /// let saved = serde_json::to_string(&before.snapshot()).unwrap();
    ///
    /// let after = CircuitBreaker::restore(
    ///     CircuitBreakerConfig::default(),
    ///     serde_json::from_str(&saved).unwrap(),
    /// ).unwrap();
    /// assert_eq!(after.state(), CircuitState::Open);
    /// # }
    /// ```
    pub fn restore(
        config: CircuitBreakerConfig,
        snapshot: CircuitSnapshot,
    ) -> Result<Self, ConfigError> {
        let outcomes = snapshot::decode(&snapshot.outcomes).map_err(|(i, c)| {
            ConfigError::single(
                "snapshot.outcomes",
                format!("character {i} is {c:?}, expected one of S, F, s, f"),
            )
        })?;
        // The longest opening this configuration makes, in milliseconds.
        let longest_ms = (config.max_open_timeout_ms as f64 * (1.0 + config.jitter_ratio))
            .ceil()
            .min(u64::MAX as f64) as u64;
        let breaker = Self::try_new(config)?;
        let s = &*breaker.shared;
        let t = s.now_us();
        let elapsed_ms = unix_ms().saturating_sub(snapshot.taken_at_unix_ms);
        let length = snapshot
            .open_length_ms
            .unwrap_or(0)
            .min(longest_ms)
            .saturating_mul(1000);
        let open = match (snapshot.state, snapshot.open_remaining_ms) {
            (CircuitState::Open, Some(remaining)) => {
                let left = remaining
                    .min(longest_ms)
                    .saturating_sub(elapsed_ms)
                    .saturating_mul(1000);
                Some((t.saturating_add(left), length))
            }
            _ => (length != 0).then_some((t, length)),
        };
        s.core.install(
            snapshot.state,
            snapshot.open_streak,
            snapshot.forced,
            open,
            &outcomes,
        );
        let w = s.core.word();
        if let Some(until) = s.core.open_deadline(w) {
            s.arm_ticker(w.generation(), until);
        }
        Ok(breaker)
    }

    /// A receiver of every future transition (a broadcast channel of 64;
    /// a receiver that falls behind skips the oldest).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// Calls `listener` on every future transition.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Transition};
    ///
    /// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    /// let opened = Arc::new(AtomicUsize::new(0));
    /// let seen = opened.clone();
    /// breaker.add_listener(move |t: &Transition| {
    ///     if t.to == CircuitState::Open {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// });
    /// breaker.force_open();
    /// assert_eq!(opened.load(Ordering::Relaxed), 1);
    /// ```
    pub fn add_listener(&self, listener: impl TransitionListener) {
        self.shared.events.add(Arc::new(listener));
    }
}

/// The error of a refused call.
#[inline]
fn refused<E>(refusal: Refusal) -> CircuitError<E> {
    CircuitError::Open {
        retry_after: refusal.retry_after_us().map(Duration::from_micros),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
