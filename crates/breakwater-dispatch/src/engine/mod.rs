//! The delivery engine.
//!
//! Every endpoint (breaker key) has its own *lane*: an unbounded channel of
//! ready actions, a worker, and a semaphore of
//! `max_in_flight_per_endpoint` permits. Lanes share nothing but the
//! runtime, so a dead endpoint never slows a healthy one: its worker waits
//! on its own permits while the others keep going.
//!
//! Memory is bounded by `max_pending`: an action counts from the moment
//! intake reserves room for it until it is delivered, dead-lettered or held.
//! When the reservation fails, intake answers 503 and nothing is stored.
//!
//! Waiting actions (retry backoff, or parked by an open circuit until its
//! `retry_after`) sit in one [`DelayQueue`](tokio_util::time::DelayQueue),
//! grouped by the millisecond they are due (one timer entry for all the
//! actions parked until the end of one opening): no task and no polling
//! while they wait.
//!
//! Every action runs through a [`CircuitBreakerActionExecutor`] over the engine's [`PerEndpointCircuitBreaker`]. Outcomes:
//! delivered; refused by an open circuit (parked, no attempt used);
//! transient failure (exponential backoff with full jitter up to
//! `max_attempts`, then the dead-letter table); permanent failure
//! (dead-letter table at once); `410 Gone` (the endpoint is disabled, its
//! actions are held in the store until an operator enables it again).

mod delivery;
pub mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use breakwater::traits::{ActionExecutor, CircuitBreakerActionExecutor, EntityEvent, EventKind};
use breakwater::RegistryLimits;
use breakwater::{
    CircuitSnapshot, CircuitState, DegradationLevel, GracefulDegradation, PerEndpointCircuitBreaker,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DeliveryConfig, RetryConfig};
use crate::metrics::Metrics;
use crate::store::{Inserted, NewAction, NewEvent, PendingAction, Store, StoreError, Update};

/// Actions claimed from the store in one go.
const CLAIM_BATCH: usize = 1000;
/// How often the store is swept for unclaimed work (after a restart, a
/// replay, or an endpoint enabled again).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often delivered events past `keep_delivered_hours` are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The most events removed in one store call (one transaction), so that a
/// large backlog of old events does not hold the writer for long.
const PRUNE_BATCH: usize = 1000;
/// The most delivery outcomes written to the store in one call.
const RECORD_BATCH: usize = 1024;
/// Below this many outcomes, the recorder waits [`RECORD_LINGER`] for more
/// before writing them.
const RECORD_LINGER_BELOW: usize = 128;
/// How long the recorder waits for more outcomes when it has few.
const RECORD_LINGER: Duration = Duration::from_millis(1);
/// How long shutdown waits for the last outcomes to be written.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// A message to the outcome recorder.
enum Record {
    /// Write `update`; then `release` actions stop counting as held.
    Update { update: Update, release: usize },
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// Why intake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// Too many actions are held in memory; try again later.
    #[error("the delivery queue is full ({pending} actions pending)")]
    Full {
        /// Actions currently held.
        pending: usize,
    },
    /// The request asks for more actions than the queue holds at all: it
    /// can never be taken whole, so it is not worth retrying as it is.
    #[error(
        "the request asks for {wanted} actions, more than the {cap} the delivery queue \
         holds ({setting}); send its events in smaller arrays"
    )]
    TooManyActions {
        /// Actions the request asks for (of one endpoint, for
        /// `max_pending_per_endpoint`).
        wanted: usize,
        /// The limit.
        cap: usize,
        /// The setting that makes it: `delivery.max_pending` or
        /// `delivery.max_pending_per_endpoint`.
        setting: &'static str,
    },
    /// One endpoint holds as many actions as it may; the request asks for
    /// more of them. Other endpoints' events are still taken.
    #[error(
        "the endpoint {endpoint} holds {pending} actions, as many as it may \
         (delivery.max_pending_per_endpoint); it is probably down or slow"
    )]
    EndpointFull {
        /// The endpoint.
        endpoint: String,
        /// Its actions currently held.
        pending: usize,
    },
    /// The engine is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// Storage failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An admin operation on one endpoint's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    /// Back to a fresh Closed breaker; enables a disabled endpoint.
    Reset,
    /// Forced Open until reset or closed.
    Open,
    /// Forced Closed; enables a disabled endpoint.
    Close,
}

/// One endpoint as shown by `GET /breakers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerView {
    /// The breaker key.
    pub endpoint: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Failure rate of the current window, `0.0..=1.0`.
    pub failure_rate: f64,
    /// Milliseconds until an Open breaker lets a probe through.
    pub retry_after_ms: Option<u64>,
    /// Disabled by `410 Gone` (its actions are held).
    pub disabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Calls the breaker refused.
    pub blocked: u64,
    /// Actions delivered.
    pub delivered: u64,
    /// Actions parked by the open circuit (each once, however often re-parked).
    pub deferred: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Actions dead-lettered.
    pub dead_lettered: u64,
    /// Deliveries running now.
    pub in_flight: usize,
    /// Actions held in memory for it (queued, parked, waiting to retry or
    /// running), against `max_pending_per_endpoint`.
    pub pending: usize,
}

#[derive(Debug, Default)]
struct LaneStats {
    delivered: AtomicU64,
    deferred: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
}

/// One endpoint's queue, worker and concurrency limit.
#[derive(Debug)]
struct Lane {
    endpoint: String,
    tx: mpsc::UnboundedSender<PendingAction>,
    limit: Arc<Semaphore>,
    /// Permits the semaphore was sized with (changed on reload).
    size: AtomicUsize,
    disabled: Mutex<Option<String>>,
    stats: LaneStats,
    /// This endpoint's actions held in memory (queued, parked, waiting to
    /// retry or running), against `max_pending_per_endpoint`.
    held: AtomicUsize,
    /// Actions refused by a forced-open breaker: no timer, no retry; they
    /// wait here until the breaker leaves Open (see [`Engine::wake_released`]).
    until_released: Mutex<Vec<PendingAction>>,
}

impl Lane {
    /// `n` of this endpoint's actions are no longer held.
    fn let_go(&self, n: usize) {
        // Never below zero, even if an action were let go twice.
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(n))
            });
    }

    fn disabled(&self) -> Option<String> {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn resize(&self, want: usize) {
        let have = self.size.swap(want, Ordering::AcqRel);
        if want > have {
            self.limit.add_permits(want - have);
        } else if have > want {
            // Permits in use come back and are forgotten as they return.
            let limit = self.limit.clone();
            let mut excess = have - want;
            tokio::spawn(async move {
                while excess > 0 {
                    match limit.acquire().await {
                        Ok(p) => {
                            p.forget();
                            excess -= 1;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    retry: RetryConfig,
    delivery: DeliveryConfig,
}

struct Inner {
    store: Arc<dyn Store>,
    executor: CircuitBreakerActionExecutor<Arc<dyn ActionExecutor>>,
    breakers: Arc<PerEndpointCircuitBreaker>,
    degradation: GracefulDegradation,
    settings: RwLock<Settings>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    timer: mpsc::UnboundedSender<(PendingAction, Duration)>,
    snapshots: mpsc::UnboundedSender<String>,
    records: mpsc::UnboundedSender<Record>,
    /// Actions held in memory (reserved, queued, parked or running).
    held: AtomicUsize,
    sweep: Notify,
    metrics: Metrics,
    stop: CancellationToken,
    deliveries: TaskTracker,
}

/// The delivery engine (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("held", &self.inner.held.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The actions a configuration's observers ask for, by entity type and
/// event kind, each made into a [`NewAction`] once: intake keeps one
/// `Routes` per configuration and finds an event's actions without
/// parsing a URL or writing JSON.
///
/// ```
/// use breakwater::traits::{EntityEvent, EventKind};
/// use breakwater_dispatch::config::Config;
/// use breakwater_dispatch::engine::Routes;
///
/// let config = Config::parse(r#"
/// [[observers]]
/// name = "orders"
/// entity_type = "Order"
/// event_type = "INSERT"
/// [[observers.actions]]
/// type = "webhook"
/// url = "http://127.0.0.1:9000/hooks/orders"
/// "#).unwrap();
/// let routes = Routes::new(&config);
/// let insert = EntityEvent::new(EventKind::Insert, "Order", uuid::Uuid::new_v4(), serde_json::json!({}));
/// let actions = routes.actions_for(&insert);
/// assert_eq!(actions.len(), 1);
/// assert_eq!(actions[0].endpoint(), "http://127.0.0.1:9000");
/// let delete = EntityEvent { event_type: EventKind::Delete, ..insert };
/// assert!(routes.actions_for(&delete).is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Routes {
    observers: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    entity_type: String,
    event_type: EventKind,
    actions: Vec<NewAction>,
}

impl Routes {
    /// The routes of `config`'s observers.
    pub fn new(config: &Config) -> Self {
        let observers = config
            .observers
            .iter()
            .map(|o| {
                let name: Arc<str> = o.name.as_str().into();
                Route {
                    entity_type: o.entity_type.clone(),
                    event_type: o.event_type,
                    actions: o
                        .actions
                        .iter()
                        .map(|a| NewAction::new(name.clone(), a.clone()))
                        .collect(),
                }
            })
            .collect();
        Self { observers }
    }

    /// The actions the observers ask for on `event`, in the order of the
    /// configuration.
    pub fn actions_for(&self, event: &EntityEvent) -> Vec<NewAction> {
        self.observers
            .iter()
            .filter(|o| o.entity_type == event.entity_type && o.event_type == event.event_type)
            .flat_map(|o| o.actions.iter().cloned())
            .collect()
    }
}

/// The actions `config`'s observers ask for on `event` (the routes are
/// made anew on every call: keep a [`Routes`] to ask more than once).
pub fn actions_for(config: &Config, event: &EntityEvent) -> Vec<NewAction> {
    Routes::new(config).actions_for(event)
}

fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Engine {
    /// Starts the engine: restores breaker snapshots and disabled
    /// endpoints, claims the store's pending work and starts the workers.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store cannot be read.
    pub async fn start(
        store: Arc<dyn Store>,
        executor: Arc<dyn ActionExecutor>,
        config: &Config,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let limits = RegistryLimits {
            // Endpoints come from the configuration, so they are few; keeping
            // their breakers keeps their transition listeners.
            idle_ttl: Duration::from_secs(100 * 365 * 24 * 3600),
            ..RegistryLimits::default()
        };
        let breakers = Arc::new(PerEndpointCircuitBreaker::with_limits(
            config.circuit_breaker.defaults.clone(),
            limits,
        ));
        for (endpoint, cfg) in &config.circuit_breaker.endpoints {
            if let Err(e) = breakers.set_config(endpoint, cfg.clone()) {
                tracing::warn!(%endpoint, error = %e, "breaker override refused");
            }
        }
        // Judged rates: an endpoint is not degraded before its window holds
        // `minimum_calls` outcomes.
        let degradation = GracefulDegradation::per_endpoint(breakers.clone());
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let (snap_tx, snap_rx) = mpsc::unbounded_channel();
        let (record_tx, record_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store: store.clone(),
            executor: CircuitBreakerActionExecutor::per_endpoint(executor, breakers.clone()),
            breakers: breakers.clone(),
            degradation,
            settings: RwLock::new(Settings {
                retry: config.retry.clone(),
                delivery: config.delivery.clone(),
            }),
            lanes: Mutex::new(HashMap::new()),
            timer: timer_tx,
            snapshots: snap_tx,
            records: record_tx,
            held: AtomicUsize::new(0),
            sweep: Notify::new(),
            metrics,
            stop: CancellationToken::new(),
            deliveries: TaskTracker::new(),
        });
        let engine = Self { inner };
        for (endpoint, json) in store.snapshots().await? {
            match serde_json::from_str::<CircuitSnapshot>(&json) {
                Ok(snap) => {
                    if let Err(e) = breakers.restore(&endpoint, snap) {
                        tracing::warn!(%endpoint, error = %e, "breaker snapshot not restored");
                    }
                }
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "unreadable breaker snapshot ignored")
                }
            }
        }
        for (endpoint, reason) in store.disabled_endpoints().await? {
            let lane = engine.lane(&endpoint);
            *lane.disabled.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
            engine
                .inner
                .metrics
                .endpoint_disabled
                .get_or_create(&Metrics::endpoint(&endpoint))
                .set(1);
        }
        for endpoint in config.endpoints() {
            engine.lane(&endpoint);
        }
        tokio::spawn(timer_task(engine.clone(), timer_rx));
        tokio::spawn(snapshot_task(engine.clone(), snap_rx));
        tokio::spawn(sweep_task(engine.clone()));
        tokio::spawn(prune_task(engine.clone()));
        tokio::spawn(record_task(engine.clone(), record_rx));
        Ok(engine)
    }

    /// The breakers, one per endpoint.
    pub fn breakers(&self) -> &Arc<PerEndpointCircuitBreaker> {
        &self.inner.breakers
    }

    /// The service's own metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Actions held in memory now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Acquire)
    }

    /// The degradation level over every endpoint's breaker.
    pub fn degradation_level(&self) -> DegradationLevel {
        self.inner.degradation.get_degradation_level()
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// The lane of `endpoint`, created (with its worker and its breaker's
    /// snapshot listener) on first use.
    fn lane(&self, endpoint: &str) -> Arc<Lane> {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = lanes.get(endpoint) {
            return l.clone();
        }
        let size = self
            .inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .delivery
            .max_in_flight_per_endpoint;
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            endpoint: endpoint.to_string(),
            tx,
            limit: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            disabled: Mutex::new(None),
            stats: LaneStats::default(),
            held: AtomicUsize::new(0),
            until_released: Mutex::new(Vec::new()),
        });
        lanes.insert(endpoint.to_string(), lane.clone());
        drop(lanes);
        // Every endpoint's series exist from the start, at zero, so that
        // rates and alerts see them before the first event.
        let m = &self.inner.metrics;
        let label = Metrics::endpoint(endpoint);
        drop(m.delivered.get_or_create(&label));
        drop(m.deferred.get_or_create(&label));
        drop(m.retried.get_or_create(&label));
        drop(m.dead_lettered.get_or_create(&label));
        drop(m.endpoint_disabled.get_or_create(&label));
        let snapshots = self.inner.snapshots.clone();
        let key = endpoint.to_string();
        self.inner.breakers.get_or_create(endpoint).add_listener(
            move |_: &breakwater::Transition| {
                let _ = snapshots.send(key.clone());
            },
        );
        tokio::spawn(lane_task(self.clone(), lane.clone(), rx));
        lane
    }

    /// Stores `events` with their actions and queues the new actions.
    /// Duplicate ids are accepted again without a second delivery.
    ///
    /// # Errors
    ///
    /// [`AcceptError::Full`] when the actions would not fit in
    /// `max_pending` (nothing is stored), a store failure, or shutdown.
    ///
    /// # Cancel safety
    ///
    /// The work runs in its own task: once called, the events are stored and
    /// their actions queued even if this future is dropped (a client that
    /// hangs up does not leave stored actions behind).
    pub async fn accept(&self, events: Vec<NewEvent>) -> Result<Vec<Inserted>, AcceptError> {
        let this = self.clone();
        tokio::spawn(async move { this.accept_now(events).await })
            .await
            .map_err(|e| AcceptError::Store(StoreError::Backend(e.to_string())))?
    }

    async fn accept_now(&self, events: Vec<NewEvent>) -> Result<Vec<Inserted>, AcceptError> {
        if self.is_stopping() {
            return Err(AcceptError::ShuttingDown);
        }
        let wanted: usize = events.iter().map(|e| e.actions.len()).sum();
        let delivery = self.settings().delivery;
        let cap = delivery.max_pending;
        if wanted > cap {
            return Err(AcceptError::TooManyActions {
                wanted,
                cap,
                setting: "delivery.max_pending",
            });
        }
        // Each endpoint's share, and which event asks for which (to give
        // back a duplicate's share).
        let mut lanes: Vec<(Arc<Lane>, usize)> = Vec::new();
        let mut asks: Vec<(usize, usize)> = Vec::with_capacity(wanted);
        for (i, e) in events.iter().enumerate() {
            for a in &e.actions {
                let at = match lanes.iter().position(|(l, _)| l.endpoint == a.endpoint()) {
                    Some(at) => at,
                    None => {
                        lanes.push((self.lane(a.endpoint()), 0));
                        lanes.len() - 1
                    }
                };
                lanes[at].1 += 1;
                asks.push((i, at));
            }
        }
        let per = delivery.endpoint_cap();
        for (lane, n) in &lanes {
            if *n > per {
                return Err(AcceptError::TooManyActions {
                    wanted: *n,
                    cap: per,
                    setting: "delivery.max_pending_per_endpoint",
                });
            }
            let pending = lane.held.load(Ordering::Acquire);
            if pending + n > per {
                return Err(AcceptError::EndpointFull {
                    endpoint: lane.endpoint.clone(),
                    pending,
                });
            }
        }
        let mut held = self.inner.held.load(Ordering::Acquire);
        loop {
            if held + wanted > cap && wanted > 0 {
                return Err(AcceptError::Full { pending: held });
            }
            match self.inner.held.compare_exchange_weak(
                held,
                held + wanted,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => held = now,
            }
        }
        self.publish_depth();
        for (lane, n) in &lanes {
            lane.held.fetch_add(*n, Ordering::AcqRel);
        }
        let events = self.park_refused(events);
        let result = self.inner.store.insert(events).await;
        let inserted = match result {
            Ok(i) => i,
            Err(e) => {
                self.release(wanted);
                for (lane, n) in &lanes {
                    lane.let_go(*n);
                }
                return Err(e.into());
            }
        };
        for (i, outcome) in inserted.iter().enumerate() {
            if matches!(outcome, Inserted::Duplicate) {
                for (_, at) in asks.iter().filter(|(e, _)| *e == i) {
                    lanes[*at].0.let_go(1);
                }
            }
        }
        let mut used = 0;
        for outcome in &inserted {
            match outcome {
                Inserted::New(actions) => {
                    self.inner.metrics.events_accepted.inc();
                    used += actions.len();
                    for a in actions {
                        let mut a = a.clone();
                        if a.parked {
                            if self.refused(&a.endpoint) {
                                self.count_deferred(&a.endpoint);
                                if self.forced_open(&a.endpoint) {
                                    let lane = self.lane(&a.endpoint);
                                    self.wait_for_release(&lane, a);
                                    continue;
                                }
                            } else {
                                a.not_before_ms = None;
                            }
                        }
                        self.route(a);
                    }
                }
                Inserted::Duplicate => {
                    self.inner.metrics.events_duplicate.inc();
                }
            }
        }
        self.release(wanted - used);
        Ok(inserted)
    }

    /// Marks the actions whose endpoint's circuit is open to be stored
    /// parked until it may let a call through, so that they wait in the
    /// timer without a delivery task, an executor call or a second write to
    /// park them. The breaker is asked for each once it is stored
    /// ([`Engine::refused`]).
    fn park_refused(&self, mut events: Vec<NewEvent>) -> Vec<NewEvent> {
        for event in &mut events {
            for action in &mut event.actions {
                let Some(breaker) = self.inner.breakers.get(action.endpoint()) else {
                    continue;
                };
                if breaker.state() != CircuitState::Open {
                    continue;
                }
                let wait = schedule::park_for(breaker.retry_after());
                let until_ms = unix_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                *action = action.clone().parked_until(until_ms);
            }
        }
        events
    }

    /// Asks `endpoint`'s breaker for a call, as a delivery would, for an
    /// action stored parked at intake: `true` when it refuses (it counts the
    /// refusal; the action stays parked), `false` when the opening has ended
    /// meanwhile and the action may go now.
    fn refused(&self, endpoint: &str) -> bool {
        let Some(breaker) = self.inner.breakers.get(endpoint) else {
            return false;
        };
        let refused = match breaker.try_acquire() {
            Ok(permit) => {
                // The delivery asks again; this call is not one.
                permit.ignore();
                false
            }
            Err(_) => true,
        };
        refused
    }

    /// Whether `endpoint`'s breaker is held Open by an operator: Open with
    /// no end it could advise. (A HalfOpen breaker with every probe slot
    /// busy advises no wait either, but is not Open.)
    fn forced_open(&self, endpoint: &str) -> bool {
        self.inner
            .breakers
            .get(endpoint)
            .is_some_and(|b| b.state() == CircuitState::Open && b.retry_after().is_none())
    }

    /// Counts one action deferred by `endpoint`'s open circuit.
    fn count_deferred(&self, endpoint: &str) {
        self.inner
            .metrics
            .deferred
            .get_or_create(&Metrics::endpoint(endpoint))
            .inc();
        self.lane(endpoint)
            .stats
            .deferred
            .fetch_add(1, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.inner.held.fetch_sub(n, Ordering::AcqRel);
            self.publish_depth();
        }
    }

    fn publish_depth(&self) {
        let held = self.inner.held.load(Ordering::Acquire);
        self.inner
            .metrics
            .queue_depth
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    fn settings(&self) -> Settings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a held action to its lane now, or to the timer when it must wait.
    fn route(&self, action: PendingAction) {
        let wait = action
            .not_before_ms
            .map(|t| t.saturating_sub(unix_ms()))
            .filter(|ms| *ms > 0);
        match wait {
            Some(ms) => self.later(action, Duration::from_millis(ms.unsigned_abs())),
            None => {
                let lane = self.lane(&action.endpoint);
                if let Err(e) = lane.tx.send(action) {
                    // The lane's worker stopped (shutdown): the action stays stored.
                    drop(e);
                    self.release(1);
                    lane.let_go(1);
                }
            }
        }
    }

    /// Queues again the actions that waited for `lane`'s forced-open breaker,
    /// once it is no longer Open.
    fn wake_released(&self, lane: &Lane) {
        if self.forced_open(&lane.endpoint) {
            return;
        }
        let waiting = std::mem::take(
            &mut *lane
                .until_released
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for mut action in waiting {
            action.not_before_ms = None;
            self.route(action);
        }
    }

    fn later(&self, action: PendingAction, wait: Duration) {
        if let Err(e) = self.inner.timer.send((action, wait)) {
            self.release(1);
            self.lane(&e.0 .0.endpoint).let_go(1);
        }
    }

    /// Claims unclaimed work from the store while there is room.
    async fn sweep(&self) {
        loop {
            let cap = self.settings().delivery.max_pending;
            let free = cap.saturating_sub(self.held()).min(CLAIM_BATCH);
            if free == 0 || self.is_stopping() {
                return;
            }
            // Counted once claimed, not reserved ahead: intake racing with
            // a sweep may overshoot `max_pending` by at most one batch, but
            // an empty sweep never makes intake refuse.
            let claimed = match self.inner.store.claim(free).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming pending work failed");
                    return;
                }
            };
            let n = claimed.len();
            if n > 0 {
                self.inner.held.fetch_add(n, Ordering::AcqRel);
                self.publish_depth();
            }
            for a in &claimed {
                self.lane(&a.endpoint).held.fetch_add(1, Ordering::AcqRel);
            }
            for a in claimed {
                self.route(a);
            }
            if n < free {
                return;
            }
        }
    }

    /// Removes the delivered events older than `keep_delivered_hours` (none
    /// when it is 0), batch by batch; returns how many.
    pub async fn prune(&self) -> u64 {
        let hours = self.settings().delivery.keep_delivered_hours;
        if hours == 0 {
            return 0;
        }
        let keep_ms = i64::try_from(hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
        let before_ms = unix_ms().saturating_sub(keep_ms);
        let mut total = 0;
        while !self.is_stopping() {
            match self
                .inner
                .store
                .prune_delivered(before_ms, PRUNE_BATCH)
                .await
            {
                Ok(n) => {
                    total += n;
                    self.inner.metrics.events_pruned.inc_by(n);
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "removing old delivered events failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                events = total,
                hours,
                "removed delivered events past their keeping time"
            );
        }
        total
    }

    /// Applies a new configuration's retry, delivery and breaker settings;
    /// every breaker keeps its state.
    ///
    /// # Errors
    ///
    /// The breaker configurations that were refused, as (endpoint, reason);
    /// everything else has been applied.
    pub fn reload(&self, config: &Config) -> Result<(), Vec<(String, String)>> {
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Settings {
            retry: config.retry.clone(),
            delivery: config.delivery.clone(),
        };
        let mut endpoints = config.endpoints();
        endpoints.extend(
            self.inner
                .lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        endpoints.extend(config.circuit_breaker.endpoints.keys().cloned());
        endpoints.sort();
        endpoints.dedup();
        let mut refused = Vec::new();
        for endpoint in endpoints {
            let cfg = config.circuit_breaker.for_endpoint(&endpoint).clone();
            if let Err(e) = self.inner.breakers.set_config(&endpoint, cfg) {
                refused.push((endpoint.clone(), e.to_string()));
            }
            self.lane(&endpoint)
                .resize(config.delivery.max_in_flight_per_endpoint);
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refused)
        }
    }

    /// Runs an admin operation on `endpoint`'s breaker; `false` when the
    /// endpoint is unknown.
    pub async fn admin(&self, endpoint: &str, op: AdminOp) -> Result<bool, StoreError> {
        let known = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(endpoint);
        if !known {
            return Ok(false);
        }
        let breaker = self.inner.breakers.get_or_create(endpoint);
        match op {
            AdminOp::Reset => breaker.reset(),
            AdminOp::Open => breaker.force_open(),
            AdminOp::Close => breaker.force_closed(),
        }
        if matches!(op, AdminOp::Reset | AdminOp::Close) {
            self.enable(endpoint).await?;
        }
        Ok(true)
    }

    /// Enables a disabled endpoint again; its held actions are queued.
    async fn enable(&self, endpoint: &str) -> Result<(), StoreError> {
        let lane = self.lane(endpoint);
        let was = lane
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if was.is_some() {
            tracing::info!(%endpoint, "endpoint enabled again");
            self.inner
                .store
                .apply(vec![Update::EndpointDisabled {
                    endpoint: endpoint.to_string(),
                    disabled: false,
                    reason: None,
                }])
                .await?;
            self.inner
                .metrics
                .endpoint_disabled
                .get_or_create(&Metrics::endpoint(endpoint))
                .set(0);
        }
        let released = self.inner.store.release_held(endpoint).await?;
        if released > 0 {
            self.inner.sweep.notify_one();
        }
        Ok(())
    }

    /// Queues `update` for the outcome recorder; `release` actions stop
    /// counting as held once it is written.
    fn record(&self, update: Update, release: usize) {
        if self
            .inner
            .records
            .send(Record::Update { update, release })
            .is_err()
        {
            // The recorder stopped (shutdown): the action stays as stored.
            self.release(release);
        }
    }

    /// Waits until every outcome queued so far is written.
    async fn flush_records(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.records.send(Record::Flush(tx)).is_ok()
            && tokio::time::timeout(FLUSH_GRACE, rx).await.is_err()
        {
            tracing::warn!("delivery outcomes not written by the shutdown deadline");
        }
    }

    /// Asks the engine to look for unclaimed work in the store now.
    pub fn wake(&self) {
        self.inner.sweep.notify_one();
    }

    /// Every endpoint's breaker and delivery counters, sorted by endpoint.
    pub fn breaker_views(&self) -> Vec<BreakerView> {
        let lanes: Vec<Arc<Lane>> = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<BreakerView> = lanes
            .iter()
            .map(|lane| {
                let breaker = self.inner.breakers.get_or_create(&lane.endpoint);
                let m = breaker.metrics();
                let disabled_reason = lane.disabled();
                BreakerView {
                    endpoint: lane.endpoint.clone(),
                    state: match m.state {
                        CircuitState::Closed => "closed",
                        CircuitState::Open => "open",
                        CircuitState::HalfOpen => "half_open",
                    },
                    failure_rate: m.failure_rate,
                    retry_after_ms: breaker
                        .retry_after()
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    disabled: disabled_reason.is_some(),
                    disabled_reason,
                    blocked: m.blocked,
                    delivered: lane.stats.delivered.load(Ordering::Relaxed),
                    deferred: lane.stats.deferred.load(Ordering::Relaxed),
                    retried: lane.stats.retried.load(Ordering::Relaxed),
                    dead_lettered: lane.stats.dead_lettered.load(Ordering::Relaxed),
                    in_flight: lane
                        .size
                        .load(Ordering::Relaxed)
                        .saturating_sub(lane.limit.available_permits()),
                    pending: lane.held.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }

    /// Refreshes the gauges read from the store (oldest pending age).
    pub async fn refresh_gauges(&self) {
        self.publish_depth();
        if let Ok(oldest) = self.inner.store.oldest_pending_ms().await {
            let age = oldest.map_or(0, |t| (unix_ms() - t).max(0) / 1000);
            self.inner.metrics.oldest_pending_age_seconds.set(age);
        }
    }

    /// Stops taking work, waits up to `grace` for running deliveries, then
    /// closes the store. What was not delivered stays stored.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.deliveries.close();
        if tokio::time::timeout(grace, self.inner.deliveries.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.inner.deliveries.len(),
                "deliveries still running at the shutdown deadline stay pending in the store"
            );
        }
        self.flush_records().await;
        self.inner.store.close().await;
    }
}

/// Writes delivery outcomes in batches: whatever has queued up while the
/// previous batch was being written goes to the store in one call (one
/// transaction), and only then do its actions stop counting as held.
///
/// A batch of fewer than [`RECORD_LINGER_BELOW`] outcomes waits
/// [`RECORD_LINGER`] for more (not when a flush is asked for). Without that,
/// deliveries that finish one by one while no events come in (a backlog
/// being worked off) were written about a dozen a commit, each commit with
/// its own fsync and thread hand-offs (some 2 000 commits a second under
/// load, against 300 to 700 with the wait).
///
/// A delivery does not wait for its outcome to be written, so its
/// concurrency permit is free for the next action during the commit. An
/// outcome lost in a crash leaves its action pending in the store, and it
/// is delivered again after the restart (at-least-once).
async fn record_task(engine: Engine, mut rx: mpsc::UnboundedReceiver<Record>) {
    let mut buf = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut buf, RECORD_BATCH).await > 0 {
        if buf.len() < RECORD_LINGER_BELOW && !buf.iter().any(|r| matches!(r, Record::Flush(_))) {
            tokio::time::sleep(RECORD_LINGER).await;
            while buf.len() < RECORD_BATCH {
                match rx.try_recv() {
                    Ok(r) => buf.push(r),
                    Err(_) => break,
                }
            }
        }
        let mut updates = Vec::with_capacity(buf.len());
        let mut release = 0;
        let mut flushed = Vec::new();
        for r in buf.drain(..) {
            match r {
                Record::Update { update, release: n } => {
                    updates.push(update);
                    release += n;
                }
                Record::Flush(done) => flushed.push(done),
            }
        }
        if !updates.is_empty() {
            if let Err(e) = engine.inner.store.apply(updates).await {
                tracing::error!(error = %e, "recording delivery outcomes failed");
            }
        }
        engine.release(release);
        let last = !flushed.is_empty() && engine.is_stopping();
        for done in flushed {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

async fn lane_task(
    engine: Engine,
    lane: Arc<Lane>,
    mut rx: mpsc::UnboundedReceiver<PendingAction>,
) {
    let stop = engine.inner.stop.clone();
    loop {
        let action = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            a = rx.recv() => match a {
                Some(a) => a,
                None => return,
            },
        };
        if lane.disabled().is_some() {
            engine.hold(action, None);
            continue;
        }
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            p = lane.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let e = engine.clone();
        let l = lane.clone();
        engine.inner.deliveries.spawn(async move {
            e.deliver(&l, action).await;
            drop(permit);
        });
    }
}

async fn timer_task(engine: Engine, mut rx: mpsc::UnboundedReceiver<(PendingAction, Duration)>) {
    let mut timer = Timer::new(tokio::time::Instant::now());
    let stop = engine.inner.stop.clone();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            msg = rx.recv() => match msg {
                Some((action, wait)) => timer.insert(action, wait, tokio::time::Instant::now()),
                None => return,
            },
            Some(due) = std::future::poll_fn(|cx| timer.poll_due(cx)), if !timer.is_empty() => {
                for mut action in due.into_iter().flatten() {
                    action.not_before_ms = None;
                    engine.route(action);
                }
            }
        }
    }
}

/// The waiting actions, grouped by the millisecond they are due: one
/// [`DelayQueue`](tokio_util::time::DelayQueue) entry for each group. The
/// actions an open circuit parks during one opening all wait for its end,
/// so thousands of them cost one timer entry and a slot each.
struct Timer {
    /// Time zero of the group keys.
    start: tokio::time::Instant,
    /// One entry for each group, keyed by its due time in milliseconds
    /// after `start`.
    queue: tokio_util::time::DelayQueue<u64>,
    /// Each group in chunks of [`TIMER_CHUNK`], in the order they came: a
    /// group of a hundred thousand grows without copying what it holds.
    groups: HashMap<u64, Vec<Vec<PendingAction>>>,
}

/// The actions in one chunk of a [`Timer`] group.
const TIMER_CHUNK: usize = 256;

impl Timer {
    fn new(start: tokio::time::Instant) -> Self {
        Self {
            start,
            queue: tokio_util::time::DelayQueue::new(),
            groups: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Holds `action` until `wait` after `now`, rounded up to the next
    /// millisecond (the timer's resolution).
    fn insert(&mut self, action: PendingAction, wait: Duration, now: tokio::time::Instant) {
        // The timer wheel holds about two years; the configuration allows
        // one at most.
        let due = now.saturating_duration_since(self.start) + wait.min(schedule::MAX_WAIT);
        let key = u64::try_from(due.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        match self.groups.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut group) => {
                let chunks = group.get_mut();
                match chunks.last_mut() {
                    Some(last) if last.len() < TIMER_CHUNK => last.push(action),
                    _ => {
                        let mut chunk = Vec::with_capacity(TIMER_CHUNK);
                        chunk.push(action);
                        chunks.push(chunk);
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(vec![vec![action]]);
                self.queue
                    .insert_at(key, self.start + Duration::from_millis(key));
            }
        }
    }

    /// The next group whose time has come, if any.
    fn poll_due(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<Vec<PendingAction>>>> {
        match self.queue.poll_expired(cx) {
            std::task::Poll::Ready(Some(expired)) => std::task::Poll::Ready(Some(
                self.groups.remove(expired.get_ref()).unwrap_or_default(),
            )),
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// On each breaker transition (the endpoints come from the breakers'
/// listeners): wakes the actions a forced opening kept waiting, and saves
/// the breakers' snapshots.
async fn snapshot_task(engine: Engine, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut endpoints = vec![first];
        while let Ok(more) = rx.try_recv() {
            endpoints.push(more);
        }
        endpoints.sort();
        endpoints.dedup();
        // A breaker that left Open lets go of the actions its forced
        // opening kept waiting.
        for endpoint in &endpoints {
            let lane = engine
                .inner
                .lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(endpoint)
                .cloned();
            if let Some(lane) = lane {
                engine.wake_released(&lane);
            }
        }
        let updates = endpoints
            .into_iter()
            .filter_map(|endpoint| {
                let snap = engine.inner.breakers.get(&endpoint)?.snapshot();
                let snapshot = serde_json::to_string(&snap).ok()?;
                Some(Update::Snapshot { endpoint, snapshot })
            })
            .collect();
        if let Err(e) = engine.inner.store.apply(updates).await {
            tracing::warn!(error = %e, "saving breaker snapshots failed");
        }
        if engine.is_stopping() {
            return;
        }
    }
}

async fn sweep_task(engine: Engine) {
    let stop = engine.inner.stop.clone();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            () = engine.inner.sweep.notified() => {}
        }
        engine.sweep().await;
    }
}

/// Removes delivered events older than `keep_delivered_hours` every
/// [`PRUNE_EVERY`], in batches of [`PRUNE_BATCH`] (the first run is one
/// period after the start, so a restart loop does not prune in a loop).
async fn prune_task(engine: Engine) {
    let stop = engine.inner.stop.clone();
    let start = tokio::time::Instant::now() + PRUNE_EVERY;
    let mut tick = tokio::time::interval_at(start, PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        engine.prune().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater::traits::{ActionConfig, WebhookAction};
    use tokio::time::Instant;

    fn action(id: i64) -> PendingAction {
        PendingAction {
            id,
            event: Arc::new(EntityEvent::new(
                EventKind::Insert,
                "Order",
                uuid::Uuid::new_v4(),
                serde_json::json!({}),
            )),
            observer: "o".into(),
            endpoint: "e".into(),
            action: Arc::new(ActionConfig::Webhook(WebhookAction {
                url: "http://127.0.0.1:9/hook".into(),
                method: "POST".into(),
                headers: Default::default(),
                body_template: None,
                signing_secret: None,
            })),
            attempts: 0,
            accepted_at_ms: 0,
            not_before_ms: None,
            parked: false,
        }
    }

    /// The groups that come due within `within`, in order, as action ids.
    async fn due(timer: &mut Timer, within: Duration) -> Vec<(u128, Vec<i64>)> {
        let start = Instant::now();
        let mut out = Vec::new();
        let deadline = tokio::time::sleep(within);
        tokio::pin!(deadline);
        while !timer.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                Some(group) = std::future::poll_fn(|cx| timer.poll_due(cx)) => {
                    let ids = group.iter().flatten().map(|a| a.id).collect();
                    out.push((start.elapsed().as_millis(), ids));
                }
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_actions_due_in_one_millisecond_share_one_timer_entry() {
        let now = Instant::now();
        let mut timer = Timer::new(now);
        let ms = Duration::from_millis;
        timer.insert(action(1), ms(100), now);
        timer.insert(action(2), ms(50), now);
        // Parked during one opening: the same end, asked at other times.
        timer.insert(action(3), ms(99), now + ms(1));
        timer.insert(action(4), Duration::from_micros(99_600), now);
        // Not due in time: stays.
        timer.insert(action(5), ms(10_000), now);
        assert_eq!(timer.queue.len(), 3, "three due times");
        let got = due(&mut timer, ms(1_000)).await;
        assert_eq!(got, vec![(50, vec![2]), (100, vec![1, 3, 4])]);
        assert!(!timer.is_empty());
        assert_eq!(due(&mut timer, ms(10_000)).await, vec![(9_000, vec![5])]);
        assert!(timer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_parked_actions_take_one_timer_entry() {
        let now = Instant::now();
        let mut timer = Timer::new(now);
        for id in 0..10_000 {
            timer.insert(action(id), Duration::from_secs(5), now);
        }
        assert_eq!(timer.queue.len(), 1);
        let got = due(&mut timer, Duration::from_secs(6)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 5_000);
        assert_eq!(got[0].1, (0..10_000).collect::<Vec<_>>());
    }
}
