//! Resilience strategies: what a call through a breaker does when it cannot
//! return the operation's value.
//!
//! A [`ResilientExecutor`] runs an operation through a [`CircuitBreaker`]
//! (or, keyed by endpoint, through one breaker per endpoint) under a
//! [`ResilienceStrategy`]:
//!
//! | strategy | circuit open | call failed |
//! | --- | --- | --- |
//! | [`FailFast`](ResilienceStrategy::FailFast) | [`CircuitError::Open`] at once | the error |
//! | [`Fallback`](ResilienceStrategy::Fallback) / [`FallbackWith`](ResilienceStrategy::FallbackWith) | the fallback value | the error, or the fallback with [`with_fallback_on_failure`](ResilientExecutor::with_fallback_on_failure) |
//! | [`RetryWithBreaker`](ResilienceStrategy::RetryWithBreaker) | [`CircuitError::Open`] at once | retried with backoff, then the last error |
//!
//! Strategies combine: [`with_fallback`](ResilientExecutor::with_fallback)
//! adds a fallback to any of them, so a retrying executor can still answer
//! with a default once the circuit is open or the attempts are spent.
//!
//! # Retries
//!
//! * **Through the breaker.** Every attempt is a call through the breaker:
//!   its outcome counts in the window, and a breaker that opens stops the
//!   retries.
//! * **Never against a rejection.** An attempt the breaker refuses
//!   ([`CircuitError::Open`]) is never retried: retrying would only be
//!   refused again. When a failed attempt that would be retried has opened
//!   the breaker, the executor stops at once, without waiting, and returns
//!   [`CircuitError::Open`] with the breaker's `retry_after`: what the next
//!   attempt would have got, and what the caller needs to defer the work.
//!   (After the last attempt, its own error is returned.)
//! * **Never a permanent error.** [`execute_with`](ResilientExecutor::execute_with)
//!   takes a classifier `Fn(&E) -> Retry` that says whether an error is worth
//!   retrying ([`Retry::Transient`]), is not ([`Retry::Permanent`]), or asks
//!   for a given wait ([`Retry::After`], e.g. an HTTP `Retry-After`). A
//!   closure rather than a trait, so that it works for foreign error types.
//!   A permanent error says nothing about the service's health: the breaker
//!   ignores it (counts it neither way). [`execute`](ResilientExecutor::execute)
//!   treats every error, and every timeout, as transient.
//! * **Backoff.** The wait after the n-th failed attempt is drawn uniformly
//!   from the whole milliseconds of `[0, min(backoff * 2^(n-1), max_backoff)]`
//!   ("full jitter": callers
//!   that failed together do not come back together). A [`Retry::After`] hint
//!   is waited exactly; a hint longer than `max_backoff`, or than what is left
//!   of `max_total_delay`, ends the retries at once, since retrying sooner
//!   would ignore it. The sum of all waits never exceeds `max_total_delay`.
//! * **Time.** Waits use `tokio::time::sleep`, so paused-clock tests see the
//!   exact delays. Backoff waits are whole milliseconds, the resolution of
//!   tokio's timers, never longer than their cap. All arithmetic on
//!   durations saturates: `Duration::MAX` hints and caps are fine.
//!
//! # Cancel safety
//!
//! Dropping the future of an `execute*` method cancels it: the attempt in
//! progress records nothing in the breaker (its probe slot, if any, is
//! freed) and no further attempt starts.
//!
//! # Examples
//!
//! The plan's example, with the real signatures:
//!
//! ```
//! use std::sync::Arc;
//! use breakwater::{CircuitBreaker, CircuitBreakerConfig};
//! use breakwater::resilience::strategies::{ResilienceStrategy, ResilientExecutor};
//!
//! async fn external_service_call() -> Result<String, std::io::Error> {
//!     Ok("live value".to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Create circuit breaker
//! let config = CircuitBreakerConfig::default();
//! let circuit_breaker = Arc::new(CircuitBreaker::new(config));
//!
//! // Use with resilience strategy
//! let resilient = ResilientExecutor::new(
//!     circuit_breaker.clone(),
//!     ResilienceStrategy::Fallback("default_value".to_string()),
//! );
//!
//! // Execute with automatic circuit breaker protection
//! let result = resilient
//!     .execute(|| Box::pin(async { external_service_call().await }))
//!     .await?;
//! assert_eq!(result, "live value");
//!
//! // While the circuit is open, the fallback answers and the service is spared.
//! circuit_breaker.force_open();
//! let result = resilient
//!     .execute(|| Box::pin(async { external_service_call().await }))
//!     .await?;
//! assert_eq!(result, "default_value");
//! # Ok(())
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod retry;

use self::retry::Schedule;
use super::backoff::Jitter;
use super::{CircuitBreaker, CircuitError, CircuitState, Verdict};

/// A fallback computed on demand, for [`ResilienceStrategy::FallbackWith`].
pub type FallbackFn<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// The longest single wait between attempts unless configured otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a [`ResilientExecutor`] does when the circuit is open or a call
/// fails. `T` is the operation's value type.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::resilience::strategies::ResilienceStrategy;
///
/// let fail_fast = ResilienceStrategy::<u32>::FailFast;
/// let fixed = ResilienceStrategy::Fallback(0_u32);
/// let computed = ResilienceStrategy::fallback_with(|| 0_u32);
/// let retry = ResilienceStrategy::<u32>::retry(3, Duration::from_millis(100));
/// assert!(matches!(retry, ResilienceStrategy::RetryWithBreaker { max_attempts: 3, backoff_ms: 100 }));
/// # let _ = (fail_fast, fixed, computed);
/// ```
#[derive(Clone)]
pub enum ResilienceStrategy<T> {
    /// An open circuit returns [`CircuitError::Open`] at once; a failed call
    /// returns its error. Nothing is retried.
    FailFast,
    /// An open circuit yields a clone of this value (and so does a failed
    /// call, with [`ResilientExecutor::with_fallback_on_failure`]).
    Fallback(T),
    /// As [`Fallback`](Self::Fallback), with the value computed by a closure
    /// each time one is needed.
    FallbackWith(FallbackFn<T>),
    /// Retries failed calls through the breaker with exponential backoff and
    /// full jitter; stops at once when the breaker refuses a call or opens,
    /// or when an error is permanent.
    RetryWithBreaker {
        /// Attempts in all, the first included (`0` counts as `1`).
        max_attempts: u32,
        /// The nominal wait after the first failure, doubled after each
        /// further one (before jitter, up to the executor's `max_backoff`).
        backoff_ms: u64,
    },
}

impl<T> ResilienceStrategy<T> {
    /// [`FallbackWith`](Self::FallbackWith) from a closure.
    pub fn fallback_with(f: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::FallbackWith(Arc::new(f))
    }

    /// [`RetryWithBreaker`](Self::RetryWithBreaker) with a [`Duration`]
    /// (whole milliseconds; sub-millisecond parts are dropped).
    pub fn retry(max_attempts: u32, backoff: Duration) -> Self {
        Self::RetryWithBreaker {
            max_attempts,
            backoff_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ResilienceStrategy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FailFast => f.write_str("FailFast"),
            Self::Fallback(v) => f.debug_tuple("Fallback").field(v).finish(),
            Self::FallbackWith(_) => f.write_str("FallbackWith(..)"),
            Self::RetryWithBreaker {
                max_attempts,
                backoff_ms,
            } => f
                .debug_struct("RetryWithBreaker")
                .field("max_attempts", max_attempts)
                .field("backoff_ms", backoff_ms)
                .finish(),
        }
    }
}

/// Whether an error is worth another attempt: the answer of the classifier
/// given to [`ResilientExecutor::execute_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Another attempt may succeed: retry after the backoff. The breaker
    /// counts the error as a failure.
    Transient,
    /// Another attempt would fail the same way (e.g. a rejected payload):
    /// do not retry. The breaker ignores the error.
    Permanent,
    /// Retry after exactly this long (e.g. an HTTP `Retry-After`). The
    /// breaker counts the error as a failure.
    After(Duration),
}

/// Where a keyed [`ResilientExecutor`] finds the breaker for a key (an
/// endpoint).
///
/// Implemented for every `Fn(&str) -> Arc<CircuitBreaker> + Send + Sync`
/// (annotate the argument, `|endpoint: &str| ...`) and for `Arc`s of
/// sources; a per-endpoint registry implements it with its `get_or_create`.
pub trait BreakerSource: Send + Sync {
    /// The breaker guarding `key`.
    fn breaker_for(&self, key: &str) -> Arc<CircuitBreaker>;
}

impl<F> BreakerSource for F
where
    F: Fn(&str) -> Arc<CircuitBreaker> + Send + Sync,
{
    fn breaker_for(&self, key: &str) -> Arc<CircuitBreaker> {
        self(key)
    }
}

impl<S: BreakerSource + ?Sized> BreakerSource for Arc<S> {
    fn breaker_for(&self, key: &str) -> Arc<CircuitBreaker> {
        (**self).breaker_for(key)
    }
}

/// A [`ResilientExecutor`]'s counters, from [`ResilientExecutor::metrics`].
///
/// They count what the executor did; what the breaker saw (requests,
/// blocked, failures) is in [`CircuitBreaker::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecutorMetrics {
    /// Executions that returned the operation's value.
    pub successes: u64,
    /// Executions that returned a fallback value.
    pub fallbacks: u64,
    /// Executions that returned an error.
    pub errors: u64,
    /// Times the operation ran (first attempts and retries).
    pub attempts: u64,
    /// Times the executor waited and tried again.
    pub retries: u64,
    /// Executions the breaker stopped: it refused an attempt, or it opened
    /// before a retry.
    pub rejections: u64,
}

#[derive(Debug, Default)]
struct Counters {
    successes: AtomicU64,
    fallbacks: AtomicU64,
    errors: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    rejections: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    // Relaxed: independent statistics, read only as a snapshot.
    counter.fetch_add(1, Ordering::Relaxed);
}

enum Fallback<T> {
    Value(T),
    With(FallbackFn<T>),
}

impl<T: Clone> Fallback<T> {
    fn get(&self) -> T {
        match self {
            Self::Value(v) => v.clone(),
            Self::With(f) => f(),
        }
    }
}

/// Runs operations through a circuit breaker under a [`ResilienceStrategy`].
///
/// `S` is where the breaker comes from: one shared breaker by default
/// ([`new`](Self::new), [`execute`](Self::execute)), or one per endpoint
/// from a [`BreakerSource`] ([`per_endpoint`](Self::per_endpoint),
/// [`execute_on`](Self::execute_on)). The builder methods (`with_*`) tune
/// any strategy; their defaults: no fallback on failure, `max_backoff` of
/// [`DEFAULT_MAX_BACKOFF`], no total budget beyond what `max_backoff` and
/// `max_attempts` imply, jitter on.
///
/// `Send + Sync` when `T` and `S` are; share it with an `Arc`.
pub struct ResilientExecutor<T, S = Arc<CircuitBreaker>> {
    breakers: S,
    max_attempts: u32,
    backoff: Duration,
    fallback: Option<Fallback<T>>,
    fallback_on_failure: bool,
    max_backoff: Duration,
    max_total_delay: Option<Duration>,
    jitter: Option<Jitter>,
    counters: Counters,
}

impl<T, S> fmt::Debug for ResilientExecutor<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientExecutor")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("fallback", &self.fallback.is_some())
            .field("fallback_on_failure", &self.fallback_on_failure)
            .field("max_backoff", &self.max_backoff)
            .field("max_total_delay", &self.max_total_delay)
            .field("jitter", &self.jitter.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> ResilientExecutor<T> {
    /// An executor over one breaker (an `Arc<CircuitBreaker>`, or a
    /// `CircuitBreaker` it takes over).
    pub fn new(breaker: impl Into<Arc<CircuitBreaker>>, strategy: ResilienceStrategy<T>) -> Self {
        Self::build(breaker.into(), strategy)
    }

    /// The breaker the calls go through.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breakers
    }

    /// Runs `f` through the breaker under the strategy; every error is
    /// transient (see [`execute_with`](Self::execute_with) to classify them).
    ///
    /// `f` is called once per attempt, so it is `FnMut`; the plan's boxed
    /// style, `|| Box::pin(async { ... })`, works unchanged.
    ///
    /// # Errors
    ///
    /// Unless a fallback answers instead: [`CircuitError::Open`] when the
    /// breaker refused the call (or opened before a retry), otherwise the
    /// last attempt's [`CircuitError::Inner`] or [`CircuitError::Timeout`].
    ///
    /// # Panics
    ///
    /// If `f` or its future panics (the breaker counts a failure first).
    /// Retrying needs a tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future records nothing for the attempt in progress and
    /// starts no other.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
    /// use breakwater::resilience::strategies::{ResilienceStrategy, ResilientExecutor};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let executor = ResilientExecutor::new(
    ///     CircuitBreaker::new(CircuitBreakerConfig::default()),
    ///     ResilienceStrategy::retry(3, Duration::from_millis(100)),
    /// );
    /// let mut calls = 0;
    /// let started = tokio::time::Instant::now();
    /// let value = executor
    ///     .execute(|| {
    ///         calls += 1;
    ///         let n = calls;
    ///         async move { if n < 3 { Err("flaky") } else { Ok(n) } }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(value, 3);
    /// // Two waits, at most 100 ms and 200 ms (full jitter).
    /// assert!(started.elapsed() < Duration::from_millis(300));
    /// # }
    /// ```
    pub async fn execute<F, Fut, E>(&self, f: F) -> Result<T, CircuitError<E>>
    where
        T: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(&self.breakers, |_: &E| Retry::Transient, f).await
    }

    /// As [`execute`](Self::execute), with `classify` saying which errors
    /// are worth a retry ([`Retry`]). Only [`RetryWithBreaker`] retries;
    /// under every strategy a [`Retry::Permanent`] error is ignored by the
    /// breaker.
    ///
    /// [`RetryWithBreaker`]: ResilienceStrategy::RetryWithBreaker
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute).
    ///
    /// # Panics
    ///
    /// As [`execute`](Self::execute).
    ///
    /// # Cancel safety
    ///
    /// As [`execute`](Self::execute).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError};
    /// use breakwater::resilience::strategies::{ResilienceStrategy, ResilientExecutor, Retry};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let executor = ResilientExecutor::new(
    ///     CircuitBreaker::new(CircuitBreakerConfig::default()),
    ///     ResilienceStrategy::<()>::retry(5, Duration::from_millis(100)),
    /// );
    /// // An HTTP-ish status: 4xx is permanent, 503 carries a Retry-After.
    /// let classify = |status: &u16| match *status {
    ///     400..=499 => Retry::Permanent,
    ///     503 => Retry::After(Duration::from_secs(2)),
    ///     _ => Retry::Transient,
    /// };
    /// let mut calls = 0;
    /// let err = executor.execute_with(classify, || { calls += 1; async { Err(404) } }).await;
    /// assert_eq!(err, Err(CircuitError::Inner(404)));
    /// assert_eq!(calls, 1); // never retried
    /// assert_eq!(executor.breaker().metrics().failures, 0); // nor counted
    /// # }
    /// ```
    pub async fn execute_with<F, Fut, E, C>(&self, classify: C, f: F) -> Result<T, CircuitError<E>>
    where
        T: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        self.run(&self.breakers, classify, f).await
    }
}

impl<T, S: BreakerSource> ResilientExecutor<T, S> {
    /// An executor over one breaker per endpoint, each found through
    /// `breakers` (a per-endpoint registry, or a closure
    /// `|endpoint: &str| -> Arc<CircuitBreaker>`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
    /// use breakwater::resilience::strategies::{ResilienceStrategy, ResilientExecutor};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry: Mutex<HashMap<String, Arc<CircuitBreaker>>> = Mutex::default();
    /// let executor = ResilientExecutor::per_endpoint(
    ///     move |endpoint: &str| {
    ///         let mut map = registry.lock().unwrap();
    ///         map.entry(endpoint.to_owned())
    ///             .or_insert_with(|| Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default())))
    ///             .clone()
    ///     },
    ///     ResilienceStrategy::Fallback("cached"),
    /// );
    /// executor.breaker_for("down.example").force_open();
    /// let up = executor.execute_on("up.example", || async { Ok::<_, ()>("live") }).await;
    /// let down = executor.execute_on("down.example", || async { Ok::<_, ()>("live") }).await;
    /// assert_eq!((up, down), (Ok("live"), Ok("cached")));
    /// assert_eq!(executor.breaker_for("up.example").state(), CircuitState::Closed);
    /// # }
    /// ```
    pub fn per_endpoint(breakers: S, strategy: ResilienceStrategy<T>) -> Self {
        Self::build(breakers, strategy)
    }

    /// The breaker of `endpoint`.
    pub fn breaker_for(&self, endpoint: &str) -> Arc<CircuitBreaker> {
        self.breakers.breaker_for(endpoint)
    }

    /// As [`ResilientExecutor::execute`], through the breaker of `endpoint`.
    ///
    /// # Errors
    ///
    /// As [`ResilientExecutor::execute`].
    ///
    /// # Panics
    ///
    /// As [`ResilientExecutor::execute`].
    ///
    /// # Cancel safety
    ///
    /// As [`ResilientExecutor::execute`].
    pub async fn execute_on<F, Fut, E>(&self, endpoint: &str, f: F) -> Result<T, CircuitError<E>>
    where
        T: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let breaker = self.breakers.breaker_for(endpoint);
        self.run(&breaker, |_: &E| Retry::Transient, f).await
    }

    /// As [`ResilientExecutor::execute_with`], through the breaker of
    /// `endpoint`.
    ///
    /// # Errors
    ///
    /// As [`ResilientExecutor::execute`].
    ///
    /// # Panics
    ///
    /// As [`ResilientExecutor::execute`].
    ///
    /// # Cancel safety
    ///
    /// As [`ResilientExecutor::execute`].
    pub async fn execute_on_with<F, Fut, E, C>(
        &self,
        endpoint: &str,
        classify: C,
        f: F,
    ) -> Result<T, CircuitError<E>>
    where
        T: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        let breaker = self.breakers.breaker_for(endpoint);
        self.run(&breaker, classify, f).await
    }
}

impl<T, S> ResilientExecutor<T, S> {
    fn build(breakers: S, strategy: ResilienceStrategy<T>) -> Self {
        let (max_attempts, backoff, fallback) = match strategy {
            ResilienceStrategy::FailFast => (1, Duration::ZERO, None),
            ResilienceStrategy::Fallback(v) => (1, Duration::ZERO, Some(Fallback::Value(v))),
            ResilienceStrategy::FallbackWith(f) => (1, Duration::ZERO, Some(Fallback::With(f))),
            ResilienceStrategy::RetryWithBreaker {
                max_attempts,
                backoff_ms,
            } => (max_attempts.max(1), Duration::from_millis(backoff_ms), None),
        };
        Self {
            breakers,
            max_attempts,
            backoff,
            fallback,
            fallback_on_failure: false,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_total_delay: None,
            jitter: Some(Jitter::new(RandomState::new().hash_one(0_u8))),
            counters: Counters::default(),
        }
    }

    /// Answers with a clone of `value` instead of an error when the circuit
    /// is open (and, with [`with_fallback_on_failure`](Self::with_fallback_on_failure),
    /// when the call failed), whatever the strategy: this is how a retrying
    /// executor gets a fallback. Replaces any fallback set before.
    pub fn with_fallback(mut self, value: T) -> Self {
        self.fallback = Some(Fallback::Value(value));
        self
    }

    /// As [`with_fallback`](Self::with_fallback), with the value computed by
    /// `f` each time one is needed.
    pub fn with_fallback_fn(mut self, f: impl Fn() -> T + Send + Sync + 'static) -> Self {
        self.fallback = Some(Fallback::With(Arc::new(f)));
        self
    }

    /// Whether a failed call (after its retries) also yields the fallback,
    /// not only an open circuit. Default `false`.
    pub fn with_fallback_on_failure(mut self, yes: bool) -> Self {
        self.fallback_on_failure = yes;
        self
    }

    /// The longest single wait between attempts (the cap of the exponential
    /// backoff). A [`Retry::After`] hint longer than this ends the retries.
    /// Default [`DEFAULT_MAX_BACKOFF`].
    pub fn with_max_backoff(mut self, cap: Duration) -> Self {
        self.max_backoff = cap;
        self
    }

    /// The most time one execution may spend waiting between attempts, all
    /// waits together. A jittered wait is shortened to fit; a hinted one
    /// that does not fit ends the retries. Default: no budget beyond
    /// `max_backoff` per wait.
    pub fn with_max_total_delay(mut self, budget: Duration) -> Self {
        self.max_total_delay = Some(budget);
        self
    }

    /// Whether waits are drawn at random up to their nominal length (full
    /// jitter, the default: uniform over the whole milliseconds from 0 to
    /// the nominal wait) or are exactly `backoff * 2^(n-1)` (capped).
    pub fn with_jitter(mut self, on: bool) -> Self {
        self.jitter = match (on, self.jitter.take()) {
            (true, Some(j)) => Some(j),
            (true, None) => Some(Jitter::new(RandomState::new().hash_one(0_u8))),
            (false, _) => None,
        };
        self
    }

    /// The executor's counters.
    pub fn metrics(&self) -> ExecutorMetrics {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExecutorMetrics {
            successes: load(&c.successes),
            fallbacks: load(&c.fallbacks),
            errors: load(&c.errors),
            attempts: load(&c.attempts),
            retries: load(&c.retries),
            rejections: load(&c.rejections),
        }
    }

    /// The wait before the attempt after the `failures`-th failed one, or
    /// `None` when a hinted wait does not fit the caps or the budget is spent.
    fn wait_before(&self, failures: u32, advice: Retry, waited: Duration) -> Option<Duration> {
        let schedule = Schedule {
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            max_total_delay: self.max_total_delay,
        };
        schedule.wait_before(
            failures,
            advice,
            waited,
            self.jitter.as_ref().map(Jitter::unit),
        )
    }

    /// The strategy's answer: the operation's value, a fallback, or the error.
    async fn run<F, Fut, E, C>(
        &self,
        breaker: &CircuitBreaker,
        classify: C,
        mut f: F,
    ) -> Result<T, CircuitError<E>>
    where
        T: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        let err = match self.attempts(breaker, &classify, &mut f).await {
            Ok(value) => {
                bump(&self.counters.successes);
                return Ok(value);
            }
            Err(err) => err,
        };
        match &self.fallback {
            Some(fallback) if err.is_open() || self.fallback_on_failure => {
                bump(&self.counters.fallbacks);
                Ok(fallback.get())
            }
            _ => {
                bump(&self.counters.errors);
                Err(err)
            }
        }
    }

    /// Attempts until a success, a stop, or the last attempt.
    async fn attempts<F, Fut, E, C>(
        &self,
        breaker: &CircuitBreaker,
        classify: &C,
        f: &mut F,
    ) -> Result<T, CircuitError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            // A timeout (no `E` to classify) stays transient.
            let mut advice = Retry::Transient;
            let result = breaker
                .call_with(
                    |r: &Result<T, E>| match r {
                        Ok(_) => Verdict::Success,
                        Err(e) => {
                            advice = classify(e);
                            match advice {
                                Retry::Permanent => Verdict::Ignore,
                                Retry::Transient | Retry::After(_) => Verdict::Failure,
                            }
                        }
                    },
                    &mut *f,
                )
                .await;
            let err = match result {
                Ok(value) => {
                    bump(&self.counters.attempts);
                    return Ok(value);
                }
                Err(err) if err.is_open() => {
                    bump(&self.counters.rejections);
                    return Err(err);
                }
                Err(err) => {
                    bump(&self.counters.attempts);
                    err
                }
            };
            if attempt >= self.max_attempts || advice == Retry::Permanent {
                return Err(err);
            }
            if breaker.state() == CircuitState::Open {
                // The failure opened the breaker: the next attempt would be
                // refused, so do not wait for it.
                bump(&self.counters.rejections);
                return Err(CircuitError::Open {
                    retry_after: breaker.retry_after(),
                });
            }
            let Some(wait) = self.wait_before(attempt, advice, waited) else {
                return Err(err);
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            waited = waited.saturating_add(wait);
            attempt += 1;
            bump(&self.counters.retries);
        }
    }
}

impl BreakerSource for crate::resilience::per_endpoint::PerEndpointCircuitBreaker {
    fn breaker_for(&self, key: &str) -> Arc<CircuitBreaker> {
        self.get_or_create(key)
    }
}
