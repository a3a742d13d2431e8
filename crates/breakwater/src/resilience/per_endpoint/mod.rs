//! Per-endpoint circuit breakers: the registry (the public documentation is on the types).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

mod eviction;
mod slot;

use self::slot::{Slot, Sweeps, USED};
use super::{
    CircuitBreaker, CircuitBreakerConfig, CircuitMetrics, CircuitSnapshot, CircuitState,
    ConfigError, Listeners, Transition, TransitionListener, Verdict,
};
use crate::error::CircuitError;

/// The hasher of the registry's maps: fast on short strings, and seeded at
/// random per map so that keys cannot be chosen to collide in advance.
type Hasher = foldhash::fast::RandomState;

/// Per-endpoint configurations.
type Overrides = HashMap<Box<str>, CircuitBreakerConfig, Hasher>;

/// How many breakers a [`PerEndpointCircuitBreaker`] keeps, and for how long.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::CircuitBreakerConfig;
/// use breakwater::{PerEndpointCircuitBreaker, RegistryLimits};
///
/// let breakers = PerEndpointCircuitBreaker::with_limits(
///     CircuitBreakerConfig::default(),
///     RegistryLimits { idle_ttl: Duration::from_secs(60), ..Default::default() },
/// );
/// assert_eq!(breakers.limits().max_endpoints, 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// A Closed breaker nobody used or held for this long is evicted.
    /// Default: 10 minutes.
    pub idle_ttl: Duration,
    /// The most breakers retained at once, `>= 1`. Default: 10 000.
    pub max_endpoints: usize,
    /// A HalfOpen breaker with no probe in flight that nobody used or held
    /// for this long is evicted: its endpoint was abandoned while failing
    /// (nobody probes it), and it must not hold a place forever. Taken as
    /// at least `idle_ttl`. Default: 1 hour.
    pub abandoned_ttl: Duration,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(600),
            max_endpoints: 10_000,
            abandoned_ttl: Duration::from_secs(3_600),
        }
    }
}

/// How many shared breakers serve the endpoints that find the registry
/// full (see the module documentation).
const OVERFLOW_LANES: usize = 16;

/// One endpoint's counters and state, from
/// [`PerEndpointCircuitBreaker::statistics`].
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatistics {
    /// The endpoint, as given to the registry.
    pub endpoint: String,
    /// Its breaker's counters and state.
    pub metrics: CircuitMetrics,
}

/// A registry of independent circuit breakers, one per endpoint.
///
/// `Send + Sync`: share it with an `Arc` (or a `static`). Lookups,
/// eviction and the cap are described below.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreakerConfig, CircuitState};
/// use breakwater::PerEndpointCircuitBreaker;
///
/// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
/// let a = breakers.get_or_create("payments");
/// assert!(Arc::ptr_eq(&a, &breakers.get_or_create("payments")));
/// a.force_open();
/// assert_eq!(breakers.get_or_create("search").state(), CircuitState::Closed);
/// ```
///
/// Per-endpoint circuit breakers: one independent [`CircuitBreaker`] per
/// endpoint (a host, a service, any string), created on first use and
/// forgotten once idle.
///
/// ```
/// use breakwater::{CircuitBreakerConfig, CircuitState};
/// use breakwater::PerEndpointCircuitBreaker;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig {
///     sample_size: 2,
///     ..Default::default()
/// });
/// for _ in 0..2 {
///     let _ = breakers.call("https://flaky.example", || async { Err::<(), _>("503") }).await;
/// }
/// let reply = breakers.call("https://healthy.example", || async { Ok::<_, &str>("pong") }).await;
/// assert_eq!(reply, Ok("pong"));
/// assert_eq!(
///     breakers.get_all_states(),
///     [
///         ("https://flaky.example".to_string(), CircuitState::Open),
///         ("https://healthy.example".to_string(), CircuitState::Closed),
///     ]
/// );
/// # }
/// ```
///
/// # Guarantees
///
/// * **Independence.** Every endpoint has its own breaker: its own window,
///   state, backoff and counters. One endpoint's calls never change another
///   endpoint's state. Keys are compared as exact strings, so any string
///   (empty, Unicode, megabytes long) is a valid key of its own.
/// * **Cheap lookups.** Finding an existing endpoint's breaker hashes the key,
///   takes a *shared* lock on one shard of the map and clones an `Arc`: no
///   write lock, no clock read, no allocation. Only a new endpoint (a miss)
///   allocates, write-locks its shard, reads the clock and may sweep.
/// * **Bounded memory.** At most [`RegistryLimits::max_endpoints`] breakers
///   are retained, and idle Closed breakers are evicted after
///   [`RegistryLimits::idle_ttl`] (see below).
/// * **Open breakers are kept.** An Open breaker, a HalfOpen one with a
///   probe in flight, and any breaker somebody still holds (a call running
///   through the registry, an `Arc` kept by a caller), is never evicted:
///   forgetting it would let traffic through to a service that is known to
///   be failing. A HalfOpen breaker that nobody probes (its endpoint was
///   abandoned while failing) goes after [`RegistryLimits::abandoned_ttl`],
///   so it cannot hold its place forever.
/// * **Service is never refused** by the registry itself: every call gets a
///   breaker that can trip, even when the registry is full (see below).
///
/// No breaker method that can run transition listeners is called while a
/// lock of the map is held, so a listener may use the registry freely.
///
/// # Idle eviction
///
/// Reading the clock on every lookup would cost more than the lookup, so
/// idleness is found by sweeps instead. A lookup through the registry
/// ([`get_or_create`](PerEndpointCircuitBreaker::get_or_create),
/// [`get`](PerEndpointCircuitBreaker::get),
/// [`call`](PerEndpointCircuitBreaker::call)) only sets a "used" bit in the
/// endpoint's slot (one load, and one store per sweep period). A sweep
/// stamps with its own time every slot that was looked up since the
/// previous sweep or whose breaker somebody else holds (a running call, a
/// caller's `Arc`), clearing the bit; then it evicts every breaker that is
/// Closed, held by nobody, and stamped at least `idle_ttl` ago. So a breaker
/// is never evicted sooner than `idle_ttl` after it was last used or held;
/// while sweeps run regularly, it goes within about a sweep period after
/// that.
///
/// A sweep runs on a miss, at most once every `idle_ttl / 4`, and whenever
/// [`evict_idle`](PerEndpointCircuitBreaker::evict_idle) is called. Without
/// misses nothing new is retained, so memory cannot grow between sweeps;
/// call `evict_idle` periodically (e.g. on every metrics scrape) to let idle
/// breakers go even when no new endpoint shows up. Sweeps are single-flight:
/// one running sweep makes the others skip.
///
/// An evicted endpoint that is used again gets a fresh breaker: Closed, an
/// empty window, counters from zero (a counter reset, to Prometheus), and
/// without the listeners that were added to the old one.
///
/// # When the registry is full
///
/// A new endpoint that finds `max_endpoints` breakers retained makes room
/// first: idle breakers go (and abandoned HalfOpen ones), then the least
/// recently used Closed breakers that nobody holds, until a sixteenth of the
/// cap is free (so that the next new endpoints need no sweep). If nothing can
/// go, because the cap is full of Open, HalfOpen or held breakers, the new
/// endpoint's calls go through one of 16 shared **overflow breakers**, picked
/// by the key's hash, with the default configuration. Such a breaker trips
/// like any other (a failing new endpoint is still cut off, possibly with
/// the other overflowing endpoints of its lane) and a call through it
/// allocates nothing. [`overflows`](PerEndpointCircuitBreaker::overflows)
/// counts the lookups served so and a warning is logged (at most once per
/// sweep period); making room is retried a sweep period later. (A new
/// endpoint that finds the registry full while another thread is sweeping
/// is treated the same way, rather than made to wait.) This keeps both
/// promises, never evicting an open breaker and never refusing a call,
/// while memory stays bounded even when an unbounded number of distinct
/// endpoints fail. Size `max_endpoints` well above the number of endpoints
/// that can fail at once, and key breakers by something of low cardinality
/// (a `scheme://host:port`, not a full URL).
///
/// # Configuration
///
/// Every breaker starts with the registry's default configuration unless
/// [`set_config`](PerEndpointCircuitBreaker::set_config) gave its endpoint
/// an override. An override applies at once to the endpoint's breaker, if
/// it has one (through [`CircuitBreaker::update_config`], which keeps its
/// state), and to every breaker the endpoint gets later, including after an
/// eviction.
pub struct PerEndpointCircuitBreaker {
    breakers: DashMap<Box<str>, Slot, Hasher>,
    /// Shared by every breaker made with it (not copied into each).
    default_config: Arc<CircuitBreakerConfig>,
    /// Per-endpoint configurations. Lock order: a shard of `breakers`
    /// first, then this; nothing user-supplied runs under either.
    overrides: RwLock<Overrides>,
    limits: RegistryLimits,
    /// Slots in `breakers`, reserved before an insertion (exact, unlike
    /// the sum of the shards' lengths under concurrent inserts).
    retained: AtomicUsize,
    overflows: AtomicU64,
    /// Breakers shared by the endpoints that find the registry full, by
    /// hash of the key; each made on first use.
    lanes: [OnceLock<Arc<CircuitBreaker>>; OVERFLOW_LANES],
    epoch: Instant,
    sweeps: Sweeps,
    /// Every breaker's transitions, named by endpoint; outlives evictions.
    hub: Arc<Listeners>,
}

impl fmt::Debug for PerEndpointCircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerEndpointCircuitBreaker")
            .field("endpoints", &self.len())
            .field("overrides", &self.read_overrides().len())
            .field("overflows", &self.overflows())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for PerEndpointCircuitBreaker {
    /// A registry with the default configuration and limits.
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl PerEndpointCircuitBreaker {
    /// A registry whose breakers start with `default_config`, with the
    /// default [`RegistryLimits`] (idle TTL 10 minutes, 10 000 breakers).
    ///
    /// # Panics
    ///
    /// If `default_config` is invalid, with the message of
    /// [`CircuitBreakerConfig::validate`]; [`try_new`](Self::try_new)
    /// returns the error instead.
    pub fn new(default_config: CircuitBreakerConfig) -> Self {
        Self::with_limits(default_config, RegistryLimits::default())
    }

    /// A registry whose breakers start with `default_config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field of `default_config`.
    pub fn try_new(default_config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::try_with_limits(default_config, RegistryLimits::default())
    }

    /// A registry whose breakers start with `default_config`, keeping at
    /// most `limits.max_endpoints` of them and evicting idle ones after
    /// `limits.idle_ttl`.
    ///
    /// # Panics
    ///
    /// When [`try_with_limits`](Self::try_with_limits) would fail, with its
    /// error's message.
    pub fn with_limits(default_config: CircuitBreakerConfig, limits: RegistryLimits) -> Self {
        match Self::try_with_limits(default_config, limits) {
            Ok(registry) => registry,
            Err(e) => panic!("{e}"),
        }
    }

    /// A registry whose breakers start with `default_config`, keeping at
    /// most `limits.max_endpoints` of them and evicting idle ones after
    /// `limits.idle_ttl`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field of `default_config`;
    /// once that is valid, one naming `max_endpoints` when it is 0.
    pub fn try_with_limits(
        default_config: CircuitBreakerConfig,
        limits: RegistryLimits,
    ) -> Result<Self, ConfigError> {
        default_config.validate()?;
        if limits.max_endpoints == 0 {
            return Err(ConfigError::single(
                "max_endpoints",
                "must be at least 1, got 0".to_string(),
            ));
        }
        Ok(Self {
            breakers: DashMap::with_hasher(Hasher::default()),
            default_config: Arc::new(default_config),
            overrides: RwLock::new(HashMap::with_hasher(Hasher::default())),
            limits,
            retained: AtomicUsize::new(0),
            overflows: AtomicU64::new(0),
            lanes: Default::default(),
            epoch: Instant::now(),
            sweeps: Sweeps::default(),
            hub: Arc::default(),
        })
    }

    /// The configuration of endpoints without an override.
    pub fn default_config(&self) -> &CircuitBreakerConfig {
        &self.default_config
    }

    /// The registry's limits.
    pub fn limits(&self) -> RegistryLimits {
        self.limits
    }

    /// The breaker of `endpoint`, created (with the endpoint's configuration)
    /// if it has none. Every call with the same endpoint returns the same
    /// breaker for as long as it is retained.
    ///
    /// An existing endpoint costs a read lock on one shard and an `Arc`
    /// clone. While you hold the returned `Arc`, the breaker is not evicted.
    /// When the registry is full of breakers it must keep, the breaker is a
    /// shared overflow breaker (see the [type documentation](PerEndpointCircuitBreaker)).
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::CircuitBreakerConfig;
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// let breaker = breakers.get_or_create("https://api.example:443");
    /// let permit = breaker.try_acquire().expect("a new breaker is closed");
    /// permit.success();
    /// assert_eq!(breakers.statistics_for("https://api.example:443").unwrap().metrics.successes, 1);
    /// ```
    #[inline]
    pub fn get_or_create(&self, endpoint: &str) -> Arc<CircuitBreaker> {
        match self.breakers.get(endpoint) {
            Some(slot) => slot.touch(),
            None => self.create(endpoint),
        }
    }

    /// The breaker of `endpoint`, if it has one; creates nothing.
    pub fn get(&self, endpoint: &str) -> Option<Arc<CircuitBreaker>> {
        self.breakers.get(endpoint).map(|slot| slot.touch())
    }

    /// Runs `f` through the breaker of `endpoint` (created if needed); every
    /// `Err` counts as a failure.
    ///
    /// # Errors
    ///
    /// As [`CircuitBreaker::call`]: [`CircuitError::Open`] without running
    /// `f` when the endpoint's breaker refuses the call,
    /// [`CircuitError::Inner`] with `f`'s error, [`CircuitError::Timeout`]
    /// when a configured time limit elapsed first.
    ///
    /// # Panics
    ///
    /// As [`CircuitBreaker::call`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future cancels the call: nothing is recorded
    /// and a probe slot, if it held one, is freed. From its first poll until
    /// it completes or is dropped, the future holds the endpoint's breaker,
    /// which is therefore not evicted.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreakerConfig, CircuitError};
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// // The boxed style works too.
    /// let n = breakers.call("db", || Box::pin(async { Ok::<_, std::io::Error>(7) })).await;
    /// assert_eq!(n.unwrap(), 7);
    ///
    /// breakers.get_or_create("db").force_open();
    /// let err = breakers.call("db", || async { Ok::<_, std::io::Error>(7) }).await.unwrap_err();
    /// assert!(matches!(err, CircuitError::Open { .. }));
    /// # }
    /// ```
    pub async fn call<F, Fut, T, E>(&self, endpoint: &str, f: F) -> Result<T, CircuitError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.get_or_create(endpoint).call(f).await
    }

    /// Runs `f` through the breaker of `endpoint` (created if needed), with
    /// `classify` deciding how its result counts, as
    /// [`CircuitBreaker::call_with`].
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
    pub async fn call_with<F, Fut, T, E, C>(
        &self,
        endpoint: &str,
        classify: C,
        f: F,
    ) -> Result<T, CircuitError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Verdict,
    {
        self.get_or_create(endpoint).call_with(classify, f).await
    }

    /// Resets the breaker of `endpoint` to a normal Closed breaker with an
    /// empty window and no backoff streak ([`CircuitBreaker::reset`]).
    /// Returns whether the endpoint had a breaker; creates none.
    pub fn reset_endpoint(&self, endpoint: &str) -> bool {
        let Some(breaker) = self.breakers.get(endpoint).map(|s| s.breaker.clone()) else {
            return false;
        };
        // Outside the shard lock: a reset runs transition listeners.
        breaker.reset();
        true
    }

    /// Drops the breaker of `endpoint`, whatever its state; returns whether
    /// it had one. The endpoint's next call gets a fresh Closed breaker (with
    /// its override, if any: overrides are kept). Calls running through the
    /// old breaker finish on it, and a handle to it stays usable.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreakerConfig, CircuitState};
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// breakers.get_or_create("gone.example").force_open();
    /// assert!(breakers.remove("gone.example"));
    /// assert!(!breakers.remove("gone.example"));
    /// assert_eq!(breakers.get_or_create("gone.example").state(), CircuitState::Closed);
    /// ```
    pub fn remove(&self, endpoint: &str) -> bool {
        // The breaker is dropped after the shard lock is released.
        let removed = self.breakers.remove(endpoint).is_some();
        if removed {
            self.retained.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Puts a breaker for `endpoint` into the registry in the state
    /// `snapshot` recorded (see [`CircuitBreaker::restore`]: an Open breaker
    /// stays Open for the time it had left, less the wall-clock time since
    /// the snapshot), with the endpoint's override or the default
    /// configuration. Meant for start-up, after a restart: it replaces any
    /// breaker the endpoint already has (calls running through the old one
    /// finish on it). The restored breaker is named by the endpoint and
    /// publishes on the registry's stream like every other. If the registry
    /// is full of breakers that cannot be evicted, the restored breaker is
    /// returned but not kept.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the snapshot's outcomes cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreakerConfig, CircuitState, PerEndpointCircuitBreaker};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let before = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// before.get_or_create("https://down.example").force_open();
    /// let saved = before.get("https://down.example").unwrap().snapshot();
    ///
    /// // After a restart:
    /// let after = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// after.restore("https://down.example", saved).unwrap();
    /// assert_eq!(after.get_all_states(), [("https://down.example".to_string(), CircuitState::Open)]);
    /// # }
    /// ```
    pub fn restore(
        &self,
        endpoint: &str,
        snapshot: CircuitSnapshot,
    ) -> Result<Arc<CircuitBreaker>, ConfigError> {
        let config = self.config_for(endpoint);
        let breaker =
            Arc::new(CircuitBreaker::restore(config, snapshot)?.join(endpoint.into(), &self.hub));
        let now = self.now_us();
        if let Some(mut slot) = self.breakers.get_mut(endpoint) {
            *slot = Slot::new(breaker.clone(), now);
            return Ok(breaker);
        }
        if !(self.reserve() || (self.make_room(now) && self.reserve())) {
            return Ok(breaker);
        }
        // The old slot, if another thread made one meanwhile, is dropped
        // after the shard lock is released.
        if self
            .breakers
            .insert(endpoint.into(), Slot::new(breaker.clone(), now))
            .is_some()
        {
            self.retained.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(breaker)
    }

    /// Resets every retained breaker, as [`reset_endpoint`](Self::reset_endpoint),
    /// and the overflow breakers.
    pub fn reset_all(&self) {
        for (_, breaker) in self.handles() {
            breaker.reset();
        }
        for lane in self.lanes.iter().filter_map(OnceLock::get) {
            lane.reset();
        }
    }

    /// The state of every retained breaker, sorted by endpoint (by bytes,
    /// which for UTF-8 is by code point).
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreakerConfig, CircuitState};
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// breakers.get_or_create("b").force_open();
    /// breakers.get_or_create("a");
    /// assert_eq!(
    ///     breakers.get_all_states(),
    ///     [("a".to_string(), CircuitState::Closed), ("b".to_string(), CircuitState::Open)]
    /// );
    /// ```
    pub fn get_all_states(&self) -> Vec<(String, CircuitState)> {
        self.handles()
            .into_iter()
            .map(|(endpoint, breaker)| (endpoint, breaker.state()))
            .collect()
    }

    /// The counters and state of every retained breaker, sorted by endpoint.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::CircuitBreakerConfig;
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// let _ = breakers.call("mail", || async { Err::<(), _>("down") }).await;
    /// let _ = breakers.call("chat", || async { Ok::<_, ()>(()) }).await;
    /// let stats = breakers.statistics();
    /// assert_eq!(stats[0].endpoint, "chat");
    /// assert_eq!((stats[0].metrics.successes, stats[0].metrics.failures), (1, 0));
    /// assert_eq!((stats[1].metrics.successes, stats[1].metrics.failures), (0, 1));
    /// # }
    /// ```
    pub fn statistics(&self) -> Vec<EndpointStatistics> {
        self.handles()
            .into_iter()
            .map(|(endpoint, breaker)| EndpointStatistics {
                endpoint,
                metrics: breaker.metrics(),
            })
            .collect()
    }

    /// The counters and state of the breaker of `endpoint`, if it has one;
    /// creates none.
    pub fn statistics_for(&self, endpoint: &str) -> Option<EndpointStatistics> {
        let breaker = self.breakers.get(endpoint).map(|s| s.breaker.clone())?;
        Some(EndpointStatistics {
            endpoint: endpoint.to_string(),
            metrics: breaker.metrics(),
        })
    }

    /// A receiver of every future transition of every breaker of the
    /// registry, each named by its endpoint ([`Transition::name`]); a
    /// broadcast channel of 64 (a receiver that falls behind skips the
    /// oldest). It lives as long as the registry, across evictions.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::{CircuitBreakerConfig, CircuitState};
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// let mut events = breakers.subscribe();
    /// breakers.get_or_create("https://a.example").force_open();
    /// let t = events.try_recv().unwrap();
    /// assert_eq!((t.name(), t.to), (Some("https://a.example"), CircuitState::Open));
    /// ```
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Transition> {
        self.hub.subscribe()
    }

    /// Calls `listener` on every future transition of every breaker of the
    /// registry (each named by its endpoint), across evictions. It runs
    /// outside the registry's locks, so it may call back into the registry.
    pub fn add_listener(&self, listener: impl TransitionListener) {
        self.hub.add(Arc::new(listener));
    }

    /// Every retained breaker, in no particular order; each is named by
    /// its endpoint ([`CircuitBreaker::name`]). Cheaper than
    /// [`statistics`](Self::statistics) when only some figures are needed.
    pub fn breakers(&self) -> Vec<Arc<CircuitBreaker>> {
        self.breakers
            .iter()
            .map(|r| r.value().breaker.clone())
            .collect()
    }

    /// Gives `endpoint` its own configuration: applied at once to its
    /// breaker, if it has one (keeping its state, as
    /// [`CircuitBreaker::update_config`]), and to every breaker it gets
    /// later, including after an eviction. Overrides are kept until
    /// [`remove_config`](Self::remove_config), whether or not the endpoint
    /// has a breaker.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every invalid field. Nothing changes on
    /// error.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::CircuitBreakerConfig;
    /// use breakwater::PerEndpointCircuitBreaker;
    ///
    /// let breakers = PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default());
    /// let strict = CircuitBreakerConfig { failure_threshold: 0.1, ..Default::default() };
    /// breakers.set_config("billing", strict.clone()).unwrap();
    /// assert_eq!(breakers.get_or_create("billing").config(), strict);
    ///
    /// let bad = CircuitBreakerConfig { failure_threshold: 2.0, ..Default::default() };
    /// assert!(breakers.set_config("billing", bad).unwrap_err().names("failure_threshold"));
    /// assert_eq!(breakers.config_for("billing"), strict);
    /// ```
    pub fn set_config(
        &self,
        endpoint: &str,
        config: CircuitBreakerConfig,
    ) -> Result<(), ConfigError> {
        config.validate()?;
        // The override first, then the breaker: a breaker created meanwhile
        // reads the overrides under its shard's lock and is in the map
        // before that lock is released, so either it got the new
        // configuration or the lookup below finds it. No map lock is held
        // while `update_config` runs (it can open the breaker and run
        // listeners, which may call back into the registry).
        let previous = self
            .write_overrides()
            .insert(endpoint.into(), config.clone());
        if let Some(breaker) = self.get_untouched(endpoint) {
            if let Err(e) = breaker.update_config(config) {
                self.restore_override(endpoint, previous);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes the configuration [`set_config`](Self::set_config) gave
    /// `endpoint`, returning it; its breaker, if any, goes back to the
    /// default configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the endpoint's breaker refuses the default
    /// configuration, which a configuration the registry was built with
    /// never makes it do. Nothing changes on error.
    pub fn remove_config(
        &self,
        endpoint: &str,
    ) -> Result<Option<CircuitBreakerConfig>, ConfigError> {
        let Some(removed) = self.write_overrides().remove(endpoint) else {
            return Ok(None);
        };
        // Outside every map lock, as in `set_config`.
        if let Some(breaker) = self.get_untouched(endpoint) {
            let default = CircuitBreakerConfig::clone(&self.default_config);
            if let Err(e) = breaker.update_config(default) {
                self.restore_override(endpoint, Some(removed));
                return Err(e);
            }
        }
        Ok(Some(removed))
    }

    /// Puts back the override `endpoint` had before a failed change.
    fn restore_override(&self, endpoint: &str, previous: Option<CircuitBreakerConfig>) {
        let mut overrides = self.write_overrides();
        match previous {
            Some(config) => overrides.insert(endpoint.into(), config),
            None => overrides.remove(endpoint),
        };
    }

    /// The breaker of `endpoint`, cloned out of the map without marking it
    /// used (an operator's look is not a use).
    fn get_untouched(&self, endpoint: &str) -> Option<Arc<CircuitBreaker>> {
        self.breakers.get(endpoint).map(|s| s.breaker.clone())
    }

    /// The configuration `endpoint`'s breakers get: its override, or the
    /// default.
    pub fn config_for(&self, endpoint: &str) -> CircuitBreakerConfig {
        self.read_overrides()
            .get(endpoint)
            .unwrap_or(&*self.default_config)
            .clone()
    }

    /// Evicts every Closed breaker that nobody used or held for at least
    /// `idle_ttl`, now; returns how many went. Returns 0 at once if another
    /// sweep is running.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use breakwater::CircuitBreakerConfig;
    /// use breakwater::{PerEndpointCircuitBreaker, RegistryLimits};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breakers = PerEndpointCircuitBreaker::with_limits(
    ///     CircuitBreakerConfig::default(),
    ///     RegistryLimits { idle_ttl: Duration::from_secs(60), ..Default::default() },
    /// );
    /// breakers.get_or_create("idle");
    /// breakers.get_or_create("open").force_open();
    ///
    /// tokio::time::advance(Duration::from_secs(59)).await;
    /// assert_eq!(breakers.evict_idle(), 0);
    /// tokio::time::advance(Duration::from_secs(1)).await;
    /// assert_eq!(breakers.evict_idle(), 1);
    /// assert_eq!(breakers.len(), 1); // the open breaker stays
    /// # }
    /// ```
    pub fn evict_idle(&self) -> usize {
        self.sweep(self.now_us(), false).unwrap_or(0)
    }

    /// How many breakers the registry retains.
    pub fn len(&self) -> usize {
        self.retained.load(Ordering::Relaxed)
    }

    /// Whether the registry retains no breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many lookups were served by an overflow breaker (not retained
    /// for the endpoint), because the registry was full of breakers it must
    /// keep.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// Every retained breaker with its endpoint, sorted by endpoint. The
    /// `Arc`s are cloned under the shard locks so that the breakers can be
    /// asked for their state (which may run listeners) outside them.
    pub(super) fn handles(&self) -> Vec<(String, Arc<CircuitBreaker>)> {
        let mut all: Vec<_> = self
            .breakers
            .iter()
            .map(|r| (r.key().to_string(), r.value().breaker.clone()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn now_us(&self) -> u64 {
        let us = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_micros();
        us.min(u128::from(!USED)) as u64
    }

    fn ttl_us(&self) -> u64 {
        self.limits.idle_ttl.as_micros().min(u128::from(!USED)) as u64
    }

    fn abandoned_ttl_us(&self) -> u64 {
        self.limits
            .abandoned_ttl
            .max(self.limits.idle_ttl)
            .as_micros()
            .min(u128::from(!USED)) as u64
    }

    /// The least time between two sweeps: a quarter of the TTL, at least 1 ms.
    fn period_us(&self) -> u64 {
        (self.ttl_us() / 4).max(1_000)
    }

    /// A breaker for `endpoint`: with its override, or sharing the default
    /// configuration.
    fn new_breaker(&self, endpoint: &str) -> CircuitBreaker {
        let breaker = match self.read_overrides().get(endpoint) {
            Some(config) => CircuitBreaker::new(config.clone()),
            None => CircuitBreaker::with_shared_config(self.default_config.clone())
                .expect("the default configuration was validated by the constructor"),
        };
        breaker.join(endpoint.into(), &self.hub)
    }

    fn read_overrides(&self) -> RwLockReadGuard<'_, Overrides> {
        // A poisoned lock only means a panic elsewhere while it was held;
        // the map itself is always whole, so keep using it.
        self.overrides.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_overrides(&self) -> RwLockWriteGuard<'_, Overrides> {
        self.overrides.write().unwrap_or_else(|p| p.into_inner())
    }
}
