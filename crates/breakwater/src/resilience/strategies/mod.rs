//! Resilience strategies (the public documentation is on the types).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod fallback;
mod retry;

pub use self::fallback::{Fallback, FallbackFn, FallbackWhen, Outcome};
use self::retry::Schedule;
use super::backoff::Jitter;
use super::{CircuitBreaker, CircuitError, CircuitState, Verdict};

/// The longest single wait between attempts unless configured otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a [`ResilientExecutor`] does when the circuit is open or a call
/// fails. `T` is the operation's value type.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::ResilienceStrategy;
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
    /// An open circuit yields a clone of this value; a failed call returns
    /// its error. The same as [`Fallback::on_open`]; for a fallback that
    /// also answers failed calls, use [`Fallback::on_open_or_failure`] with
    /// [`ResilientExecutor::with_fallback`].
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

impl Retry {
    /// The classifier for the crate's own action errors (feature
    /// `actions`): a permanent error ([`Error::is_permanent`], a `410 Gone`
    /// too) is [`Permanent`](Retry::Permanent); a transient one or an inner
    /// breaker's rejection that names a wait ([`Error::retry_after`]) is
    /// [`After`](Retry::After) that wait; any other error (a timeout, a
    /// transient failure without a hint) is [`Transient`](Retry::Transient).
    ///
    /// A function, so that it is passed as it is to
    /// [`ResilientExecutor::execute_with`].
    ///
    /// [`Error::is_permanent`]: crate::traits::Error::is_permanent
    /// [`Error::retry_after`]: crate::traits::Error::retry_after
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use breakwater::traits::Error;
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, ResilientExecutor, Retry};
    ///
    /// let busy = Error::from_status(429, "slow down", Some(Duration::from_secs(2)));
    /// assert_eq!(Retry::of_action_error(&busy), Retry::After(Duration::from_secs(2)));
    /// assert_eq!(Retry::of_action_error(&Error::permanent("bad payload")), Retry::Permanent);
    /// assert_eq!(Retry::of_action_error(&Error::transient("reset")), Retry::Transient);
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let executor = ResilientExecutor::<()>::retrying(
    ///     CircuitBreaker::new(CircuitBreakerConfig::default()),
    ///     3,
    ///     Duration::from_millis(10),
    /// );
    /// let mut calls = 0;
    /// let err = executor
    ///     .execute_with(Retry::of_action_error, || {
    ///         calls += 1;
    ///         async { Err(Error::from_status(404, "no such hook", None)) }
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, CircuitError::Inner(e) if e.is_permanent()));
    /// assert_eq!(calls, 1);
    /// # }
    /// ```
    #[cfg(feature = "actions")]
    pub fn of_action_error(err: &crate::traits::Error) -> Self {
        if err.is_permanent() || err.is_gone() {
            return Self::Permanent;
        }
        match err.retry_after() {
            Some(wait) => Self::After(wait),
            None => Self::Transient,
        }
    }
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

/// A value a fixed fallback can be cloned from: every `Clone` type.
///
/// [`ResilientExecutor::new`] and [`ResilientExecutor::per_endpoint`] take
/// any [`ResilienceStrategy`], whose [`Fallback`](ResilienceStrategy::Fallback)
/// is a value cloned for each answer, so they need it. Executors without a
/// fixed fallback value ([`ResilientExecutor::retrying`],
/// [`ResilientExecutor::fail_fast`]) do not: a `reqwest::Response` is fine
/// there.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `Clone`, and this constructor may clone a fallback value of it",
    label = "not `Clone`",
    note = "without a fixed fallback value, build the executor with `ResilientExecutor::retrying` or `ResilientExecutor::fail_fast` (or their `per_endpoint_*` forms): they need no `Clone`"
)]
pub trait FallbackValue: Clone {}

impl<T: Clone> FallbackValue for T {}

/// Runs operations through a circuit breaker under a [`ResilienceStrategy`].
///
/// `S` is where the breaker comes from: one shared breaker by default
/// ([`new`](Self::new), [`retrying`](Self::retrying),
/// [`execute`](Self::execute)), or one per endpoint from a
/// [`BreakerSource`] ([`per_endpoint`](Self::per_endpoint),
/// [`execute_on`](Self::execute_on)). The builder methods (`with_*`,
/// `without_*`) tune any strategy; their defaults: no fallback unless the
/// strategy has one, `max_backoff` of [`DEFAULT_MAX_BACKOFF`], no total
/// budget beyond what `max_backoff` and `max_attempts` imply, jitter on.
///
/// Only a fixed fallback value needs `T: Clone`: a retrying or fail-fast
/// executor works with any `T`.
///
/// `Send + Sync` when `T` and `S` are; share it with an `Arc`.
///
/// # Examples
///
/// A retrying executor over a value that is not `Clone`, with a fallback
/// computed on demand that tells itself apart from a live answer:
///
/// ```
/// use std::time::Duration;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig, Fallback, ResilientExecutor, Retry};
///
/// struct Reply(String); // not Clone
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let executor = ResilientExecutor::retrying(
///     CircuitBreaker::new(CircuitBreakerConfig::default()),
///     3,
///     Duration::from_millis(100),
/// )
/// .with_fallback(Fallback::on_open_or_failure_with(|| Reply("stale".into())));
///
/// let outcome = executor
///     .execute_outcome(|_: &&str| Retry::Transient, || async { Err::<Reply, _>("down") })
///     .await
///     .unwrap();
/// assert!(outcome.is_fallback());
/// assert_eq!(outcome.into_value().0, "stale");
/// assert_eq!(executor.metrics().attempts, 3);
/// # }
/// ```
///
/// Resilience strategies: what a call through a breaker does when it cannot
/// return the operation's value.
///
/// A [`ResilientExecutor`] runs an operation through a [`CircuitBreaker`]
/// (or, keyed by endpoint, through one breaker per endpoint) under a
/// [`ResilienceStrategy`]:
///
/// | strategy | circuit open | call failed |
/// | --- | --- | --- |
/// | [`FailFast`](ResilienceStrategy::FailFast) | [`CircuitError::Open`] at once | the error |
/// | [`Fallback`](ResilienceStrategy::Fallback) / [`FallbackWith`](ResilienceStrategy::FallbackWith) | the fallback value | the error |
/// | [`RetryWithBreaker`](ResilienceStrategy::RetryWithBreaker) | [`CircuitError::Open`] at once | retried with backoff, then the last error |
///
/// Strategies combine: [`with_fallback`](ResilientExecutor::with_fallback)
/// adds a [`Fallback`] to any of them, and the fallback says when it
/// answers: [`Fallback::on_open`] (only when the breaker refused the call,
/// like [`ResilienceStrategy::Fallback`]) or [`Fallback::on_open_or_failure`]
/// (also when the call ran and failed, after its retries). So a retrying
/// executor can still answer with a default once the circuit is open or the
/// attempts are spent. [`execute_outcome`](ResilientExecutor::execute_outcome)
/// says whether an answer is live or a fallback ([`Outcome`]).
///
/// Only a fixed fallback value is cloned, so only it needs `T: Clone`:
/// [`ResilientExecutor::retrying`] and [`ResilientExecutor::fail_fast`]
/// take any `T` (a `reqwest::Response`, say).
///
/// # Retries
///
/// * **Through the breaker.** Every attempt is a call through the breaker:
///   its outcome counts in the window, and a breaker that opens stops the
///   retries.
/// * **Never against a rejection.** An attempt the breaker refuses
///   ([`CircuitError::Open`]) is never retried: retrying would only be
///   refused again. When a failed attempt that would be retried has opened
///   the breaker, the executor stops at once, without waiting, and returns
///   [`CircuitError::Open`] with the breaker's `retry_after`: what the next
///   attempt would have got, and what the caller needs to defer the work.
///   (After the last attempt, its own error is returned.)
/// * **Never a permanent error.** [`execute_with`](ResilientExecutor::execute_with)
///   takes a classifier `Fn(&E) -> Retry` that says whether an error is worth
///   retrying ([`Retry::Transient`]), is not ([`Retry::Permanent`]), or asks
///   for a given wait ([`Retry::After`], e.g. an HTTP `Retry-After`). A
///   closure rather than a trait, so that it works for foreign error types.
///   A permanent error says nothing about the service's health: the breaker
///   ignores it (counts it neither way). [`execute`](ResilientExecutor::execute)
///   treats every error, and every timeout, as transient. With the
///   `actions` feature, [`Retry::of_action_error`] classifies the crate's
///   own [`traits::Error`](crate::traits::Error).
/// * **Backoff.** The wait after the n-th failed attempt is drawn uniformly
///   from the whole milliseconds of `[0, min(backoff * 2^(n-1), max_backoff)]`
///   ("full jitter": callers
///   that failed together do not come back together). A [`Retry::After`] hint
///   is waited exactly; a hint longer than `max_backoff`, or than what is left
///   of `max_total_delay`, ends the retries at once, since retrying sooner
///   would ignore it. The sum of all waits never exceeds `max_total_delay`.
/// * **Time.** Waits use `tokio::time::sleep`, so paused-clock tests see the
///   exact delays. Backoff waits are whole milliseconds, the resolution of
///   tokio's timers, never longer than their cap. All arithmetic on
///   durations saturates: `Duration::MAX` hints and caps are fine.
///
/// # Cancel safety
///
/// Dropping the future of an `execute*` method cancels it: the attempt in
/// progress records nothing in the breaker (its probe slot, if any, is
/// freed) and no further attempt starts.
///
/// # Examples
///
/// An open circuit answered by a fallback:
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
/// use breakwater::{ResilienceStrategy, ResilientExecutor};
///
/// async fn external_service_call() -> Result<String, std::io::Error> {
///     Ok("live value".to_string())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Create circuit breaker
/// let config = CircuitBreakerConfig::default();
/// let circuit_breaker = Arc::new(CircuitBreaker::new(config));
///
/// // Use with resilience strategy
/// let resilient = ResilientExecutor::new(
///     circuit_breaker.clone(),
///     ResilienceStrategy::Fallback("default_value".to_string()),
/// );
///
/// // Execute with automatic circuit breaker protection
/// let result = resilient
///     .execute(|| Box::pin(async { external_service_call().await }))
///     .await?;
/// assert_eq!(result, "live value");
///
/// // While the circuit is open, the fallback answers and the service is spared.
/// circuit_breaker.force_open();
/// let result = resilient
///     .execute(|| Box::pin(async { external_service_call().await }))
///     .await?;
/// assert_eq!(result, "default_value");
/// # Ok(())
/// # }
/// ```
pub struct ResilientExecutor<T, S = Arc<CircuitBreaker>> {
    breakers: S,
    max_attempts: u32,
    backoff: Duration,
    fallback: Option<Fallback<T>>,
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
            .field("fallback", &self.fallback)
            .field("max_backoff", &self.max_backoff)
            .field("max_total_delay", &self.max_total_delay)
            .field("jitter", &self.jitter.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> ResilientExecutor<T> {
    /// An executor over one breaker (an `Arc<CircuitBreaker>`, or a
    /// `CircuitBreaker` it takes over), under any strategy.
    ///
    /// Needs `T: Clone` because [`ResilienceStrategy::Fallback`] clones its
    /// value; [`retrying`](Self::retrying) and [`fail_fast`](Self::fail_fast)
    /// do not.
    pub fn new(breaker: impl Into<Arc<CircuitBreaker>>, strategy: ResilienceStrategy<T>) -> Self
    where
        T: FallbackValue,
    {
        Self::build(breaker.into(), strategy)
    }

    /// An executor over one breaker that retries failed calls
    /// ([`ResilienceStrategy::RetryWithBreaker`]) and has no fallback; any
    /// `T`, `Clone` or not.
    pub fn retrying(
        breaker: impl Into<Arc<CircuitBreaker>>,
        max_attempts: u32,
        backoff: Duration,
    ) -> Self {
        Self::bare(breaker.into()).with_retry(max_attempts, backoff)
    }

    /// An executor over one breaker that neither retries nor falls back
    /// ([`ResilienceStrategy::FailFast`]); any `T`.
    pub fn fail_fast(breaker: impl Into<Arc<CircuitBreaker>>) -> Self {
        Self::bare(breaker.into())
    }

    /// The breaker the calls go through.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breakers
    }

    /// Runs `f` through the breaker under the strategy; every error is
    /// transient (see [`execute_with`](Self::execute_with) to classify them).
    ///
    /// `f` is called once per attempt, so it is `FnMut`; the boxed style,
    /// `|| Box::pin(async { ... })`, works too. A fallback answer looks
    /// like a live one here; [`execute_outcome`](Self::execute_outcome)
    /// tells them apart.
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
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, ResilientExecutor};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let executor = ResilientExecutor::retrying(
    ///     CircuitBreaker::new(CircuitBreakerConfig::default()),
    ///     3,
    ///     Duration::from_millis(100),
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
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(&self.breakers, |_: &E| Retry::Transient, f)
            .await
            .map(Outcome::into_value)
    }

    /// As [`execute`](Self::execute), with `classify` saying which errors
    /// are worth a retry ([`Retry`]). Only a retrying executor retries;
    /// under every strategy a [`Retry::Permanent`] error is ignored by the
    /// breaker.
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
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, ResilientExecutor, Retry};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let executor = ResilientExecutor::<()>::retrying(
    ///     CircuitBreaker::new(CircuitBreakerConfig::default()),
    ///     5,
    ///     Duration::from_millis(100),
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
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        self.run(&self.breakers, classify, f)
            .await
            .map(Outcome::into_value)
    }

    /// As [`execute_with`](Self::execute_with), saying whether the answer
    /// is live or a fallback, and what the fallback stands in for.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute): the errors no fallback covers.
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
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, Outcome, ResilienceStrategy, ResilientExecutor, Retry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let executor = ResilientExecutor::new(
    ///     CircuitBreaker::new(CircuitBreakerConfig::default()),
    ///     ResilienceStrategy::Fallback("cached"),
    /// );
    /// let live = executor.execute_outcome(|_: &()| Retry::Transient, || async { Ok("fresh") }).await;
    /// assert_eq!(live, Ok(Outcome::Live("fresh")));
    ///
    /// executor.breaker().force_open();
    /// let stale = executor.execute_outcome(|_: &()| Retry::Transient, || async { Ok("fresh") }).await.unwrap();
    /// assert!(stale.is_fallback());
    /// assert_eq!(stale.value(), &"cached");
    /// # }
    /// ```
    pub async fn execute_outcome<F, Fut, E, C>(
        &self,
        classify: C,
        f: F,
    ) -> Result<Outcome<T, E>, CircuitError<E>>
    where
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
    /// `|endpoint: &str| -> Arc<CircuitBreaker>`), under any strategy.
    ///
    /// Needs `T: Clone` as [`ResilientExecutor::new`] does;
    /// [`per_endpoint_retrying`](Self::per_endpoint_retrying) does not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    /// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState, ResilienceStrategy, ResilientExecutor};
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
    pub fn per_endpoint(breakers: S, strategy: ResilienceStrategy<T>) -> Self
    where
        T: FallbackValue,
    {
        Self::build(breakers, strategy)
    }

    /// As [`ResilientExecutor::retrying`], with one breaker per endpoint
    /// from `breakers`; any `T`.
    pub fn per_endpoint_retrying(breakers: S, max_attempts: u32, backoff: Duration) -> Self {
        Self::bare(breakers).with_retry(max_attempts, backoff)
    }

    /// As [`ResilientExecutor::fail_fast`], with one breaker per endpoint
    /// from `breakers`; any `T`.
    pub fn per_endpoint_fail_fast(breakers: S) -> Self {
        Self::bare(breakers)
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
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let breaker = self.breakers.breaker_for(endpoint);
        self.run(&breaker, |_: &E| Retry::Transient, f)
            .await
            .map(Outcome::into_value)
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
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        let breaker = self.breakers.breaker_for(endpoint);
        self.run(&breaker, classify, f)
            .await
            .map(Outcome::into_value)
    }

    /// As [`ResilientExecutor::execute_outcome`], through the breaker of
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
    pub async fn execute_on_outcome<F, Fut, E, C>(
        &self,
        endpoint: &str,
        classify: C,
        f: F,
    ) -> Result<Outcome<T, E>, CircuitError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        let breaker = self.breakers.breaker_for(endpoint);
        self.run(&breaker, classify, f).await
    }
}

impl<T, S> ResilientExecutor<T, S> {
    /// Fail fast, no fallback, the default tuning.
    fn bare(breakers: S) -> Self {
        Self {
            breakers,
            max_attempts: 1,
            backoff: Duration::ZERO,
            fallback: None,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_total_delay: None,
            jitter: Some(Jitter::new(RandomState::new().hash_one(0_u8))),
            counters: Counters::default(),
        }
    }

    fn build(breakers: S, strategy: ResilienceStrategy<T>) -> Self
    where
        T: Clone,
    {
        let bare = Self::bare(breakers);
        match strategy {
            ResilienceStrategy::FailFast => bare,
            ResilienceStrategy::Fallback(v) => bare.with_fallback(Fallback::on_open(v)),
            ResilienceStrategy::FallbackWith(f) => {
                bare.with_fallback(Fallback::computed(f, FallbackWhen::Open))
            }
            ResilienceStrategy::RetryWithBreaker {
                max_attempts,
                backoff_ms,
            } => bare.with_retry(max_attempts, Duration::from_millis(backoff_ms)),
        }
    }

    /// Retries failed calls: `max_attempts` in all, the first included
    /// (`0` counts as `1`), waiting `backoff` after the first failure and
    /// twice as long after each further one (up to
    /// [`with_max_backoff`](Self::with_max_backoff), with full jitter
    /// unless [`without_jitter`](Self::without_jitter)). Keeps any fallback.
    pub fn with_retry(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// One attempt per execution, no retries. Keeps any fallback.
    pub fn without_retry(mut self) -> Self {
        self.max_attempts = 1;
        self.backoff = Duration::ZERO;
        self
    }

    /// Answers with `fallback` instead of the errors it covers
    /// ([`Fallback::on_open`]: only a refused call;
    /// [`Fallback::on_open_or_failure`]: a failed one too), whatever the
    /// strategy: this is how a retrying executor gets a fallback. Replaces
    /// any fallback set before.
    pub fn with_fallback(mut self, fallback: Fallback<T>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// No fallback: every error reaches the caller.
    pub fn without_fallback(mut self) -> Self {
        self.fallback = None;
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

    /// No budget for all waits together (the default).
    pub fn without_max_total_delay(mut self) -> Self {
        self.max_total_delay = None;
        self
    }

    /// Waits drawn at random up to their nominal length (full jitter, the
    /// default: uniform over the whole milliseconds from 0 to the nominal
    /// wait), so that callers that failed together do not retry together.
    pub fn with_jitter(mut self) -> Self {
        if self.jitter.is_none() {
            self.jitter = Some(Jitter::new(RandomState::new().hash_one(0_u8)));
        }
        self
    }

    /// Waits of exactly `backoff * 2^(n-1)` (capped), for tests and
    /// schedules that must be predictable.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = None;
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
    ) -> Result<Outcome<T, E>, CircuitError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Retry,
    {
        let err = match self.attempts(breaker, &classify, &mut f).await {
            Ok(value) => {
                bump(&self.counters.successes);
                return Ok(Outcome::Live(value));
            }
            Err(err) => err,
        };
        match &self.fallback {
            Some(fallback) if fallback.covers(&err) => {
                bump(&self.counters.fallbacks);
                Ok(Outcome::Fallback {
                    value: fallback.get(),
                    cause: err,
                })
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
