//! The delivery engine.
//!
//! Every endpoint (breaker key) has its own *lane*: an unbounded channel of
//! ready actions, a worker, and a semaphore of
//! `max_in_flight_per_endpoint` permits. Lanes share nothing but the
//! runtime, so a dead endpoint never slows a healthy one: its worker waits
//! on its own permits while the others keep going.
//!
//! Memory is bounded per endpoint and in all, in actions and in bytes: each
//! endpoint keeps a *window* of its actions in memory, and the rest of its
//! work waits in the store as its *backlog*, read back as the window makes
//! room (`engine/window.rs`). An action counts from the moment intake takes it into
//! a window until it is delivered, dead-lettered or held. Intake never
//! refuses because an endpoint is down: only when the store fails or the
//! service stops.
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

mod attempt;
mod delivery;
mod intake;
mod lane;
mod prune;
mod record;
mod routes;
pub mod schedule;
mod snapshot;
mod sweep;
mod timer;
mod window;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use breakwater::traits::{ActionExecutor, CircuitBreakerActionExecutor};
use breakwater::RegistryLimits;
use breakwater::{
    CircuitSnapshot, CircuitState, DegradationLevel, GracefulDegradation, PerEndpointCircuitBreaker,
};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DeliveryConfig, RetryConfig};
use crate::metrics::Metrics;
use crate::store::{PendingAction, Store, StoreError, Update};

pub use intake::AcceptError;
pub use routes::{actions_for, Routes};

use attempt::History;
use lane::Lane;
use prune::prune_task;
use record::{record_task, Record};
use snapshot::snapshot_task;
use sweep::sweep_task;
use timer::timer_task;
use window::Usage;

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

impl AdminOp {
    /// `reset`, `open` or `close`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Open => "open",
            Self::Close => "close",
        }
    }

    /// The command named `name` ([`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "reset" => Some(Self::Reset),
            "open" => Some(Self::Open),
            "close" => Some(Self::Close),
            _ => None,
        }
    }
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
    /// running): its window, against `max_pending_per_endpoint`.
    pub pending: usize,
    /// Its waiting actions in the store (pending or parked, in memory or
    /// not), against `max_backlog_per_endpoint`.
    pub backlog: u64,
    /// Milliseconds since the oldest of them was accepted.
    pub backlog_oldest_age_ms: Option<u64>,
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
    /// `[history]`: whether attempts are recorded, and how much of a body.
    history: History,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    timer: mpsc::UnboundedSender<(PendingAction, Duration)>,
    snapshots: mpsc::UnboundedSender<String>,
    records: mpsc::UnboundedSender<Record>,
    /// Actions held in memory by every window together.
    held: Usage,
    /// The generation of the last operator command applied to each
    /// endpoint (fleet: commands given on other instances come through the
    /// store).
    admin_seen: Mutex<HashMap<String, i64>>,
    sweep: Notify,
    /// Set when the store's backlogs changed behind the engine's back (a
    /// replay): the next sweep counts them again.
    recount: std::sync::atomic::AtomicBool,
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
            .field("held", &self.inner.held.get())
            .finish_non_exhaustive()
    }
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
            history: History::new(&config.history),
            lanes: Mutex::new(HashMap::new()),
            timer: timer_tx,
            snapshots: snap_tx,
            records: record_tx,
            held: Usage::default(),
            admin_seen: Mutex::new(HashMap::new()),
            sweep: Notify::new(),
            recount: std::sync::atomic::AtomicBool::new(false),
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
        // Each endpoint's backlog is counted before the first event, so
        // that its quota holds from the start.
        engine.count_backlogs().await;
        engine.inner.metrics.store_up.set(1);
        let _ = engine.check_store();
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

    /// Actions held in memory now (every endpoint's window together).
    pub fn held(&self) -> usize {
        self.inner.held.get().actions
    }

    /// Bytes of events held in memory now, as the windows count them.
    pub fn held_bytes(&self) -> usize {
        self.inner.held.get().bytes
    }

    /// Every lane, in no order.
    fn lanes(&self) -> Vec<Arc<Lane>> {
        self.inner
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The degradation level over every endpoint's breaker.
    pub fn degradation_level(&self) -> DegradationLevel {
        self.inner.degradation.get_degradation_level()
    }

    /// What is wrong with the store, if it cannot keep events now (its file
    /// deleted, say); also published as `store_up` and logged.
    pub fn store_problem(&self) -> Option<String> {
        self.check_store().err()
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    fn settings(&self) -> Settings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a new configuration's retry, delivery, history and breaker
    /// settings; every breaker keeps its state.
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
        self.inner.history.set(&config.history);
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
                .resize(self.in_flight_share(config.delivery.max_in_flight_per_endpoint));
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
        if !self.apply_admin(endpoint, op).await? {
            return Ok(false);
        }
        // Every other instance sharing the store applies it too, within a
        // second.
        let generation = self
            .inner
            .store
            .publish_admin(endpoint, op.as_str())
            .await?;
        self.admin_applied(endpoint, generation);
        Ok(true)
    }

    /// Notes that the command of `generation` on `endpoint` is in force
    /// here.
    fn admin_applied(&self, endpoint: &str, generation: i64) {
        let mut seen = self
            .inner
            .admin_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let at = seen.entry(endpoint.to_string()).or_insert(0);
        *at = (*at).max(generation);
    }

    /// Applies the operator commands given on other instances since they
    /// were last looked at.
    pub(super) async fn follow_admin(&self) {
        let commands = match self.inner.store.admin_commands().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the fleet's operator commands failed");
                return;
            }
        };
        for (endpoint, generation, op) in commands {
            let seen = self
                .inner
                .admin_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&endpoint)
                .copied();
            let Some(op) = AdminOp::parse(&op).filter(|_| seen.is_none_or(|g| g < generation))
            else {
                continue;
            };
            // First look (this instance just started): a forced state is
            // taken up, an old reset is not replayed over the breaker's
            // restored snapshot.
            if seen.is_none() && op == AdminOp::Reset {
                self.admin_applied(&endpoint, generation);
                continue;
            }
            match self.apply_admin(&endpoint, op).await {
                Ok(known) => {
                    if known {
                        tracing::info!(%endpoint, op = op.as_str(), generation,
                            "an operator command given on another instance is applied here");
                    }
                    self.admin_applied(&endpoint, generation);
                }
                Err(e) => tracing::warn!(%endpoint, error = %e,
                    "applying an operator command from the fleet failed; tried again"),
            }
        }
    }

    /// Applies `op` to `endpoint`'s breaker here; false for an endpoint no
    /// observer calls.
    async fn apply_admin(&self, endpoint: &str, op: AdminOp) -> Result<bool, StoreError> {
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
            lane.backlog.add_waiting(released);
            lane.backlog.mark();
            lane.backlog.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the engine to look for unclaimed work in the store now (the
    /// engine looks every second anyway).
    pub fn wake(&self) {
        self.inner.sweep.notify_one();
    }

    /// Tells the engine that actions were replayed in the store (made
    /// pending and unclaimed, in their endpoints' backlogs): it looks for
    /// them now rather than at its next sweep, and counts the backlogs
    /// again. Windows, lanes and breakers pace their delivery as any
    /// backlog's (an open endpoint's replayed actions park).
    pub fn replayed(&self) {
        // Relaxed: the sweep's wake-up orders it (the notify happens after).
        self.inner.recount.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Every endpoint's breaker and delivery counters, sorted by endpoint.
    pub fn breaker_views(&self) -> Vec<BreakerView> {
        let now = unix_ms();
        let mut out: Vec<BreakerView> = self
            .lanes()
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
                    pending: lane.held.get().actions,
                    backlog: lane.backlog.waiting(),
                    backlog_oldest_age_ms: lane.backlog.oldest_age_ms(now),
                }
            })
            .collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }

    /// Refreshes the gauges read from the store (oldest pending age) and
    /// each endpoint's backlog gauges.
    pub async fn refresh_gauges(&self) {
        self.publish_depth();
        let now = unix_ms();
        let m = &self.inner.metrics;
        for lane in self.lanes() {
            let label = Metrics::endpoint(&lane.endpoint);
            m.backlog
                .get_or_create(&label)
                .set(i64::try_from(lane.backlog.waiting()).unwrap_or(i64::MAX));
            let age = lane.backlog.oldest_age_ms(now).map_or(0, |ms| ms / 1000);
            m.backlog_oldest_age_seconds
                .get_or_create(&label)
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
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
