//! The engine alone, on paused time, over an in-memory store and test
//! executors: parking costs no attempt, and a dead endpoint never holds up
//! a healthy one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use breakwater::traits::{
    ActionConfig, ActionExecutor, ActionResult, EntityEvent, Error, EventKind,
};
use breakwater::CircuitState;
use breakwater_dispatch::config::Config;
use breakwater_dispatch::engine::{actions_for, AdminOp, BreakerView, Engine};
use breakwater_dispatch::metrics::Metrics;
use breakwater_dispatch::store::{
    ActionFilter, ActionId, ActionPage, ActionRecord, ActionStatus, AttemptRecord, AuditEntry,
    Backlog, Claimed, DeadLetter, EndpointCounts, EventRecord, Inserted, NewEvent, PendingAction,
    ReplayJob, ReplayState, Store, StoreError, StoreResult, Update,
};
use uuid::Uuid;

/// A store in memory: enough of the trait for the engine.
#[derive(Debug, Default)]
struct MemoryStore {
    next: Mutex<ActionId>,
    events: Mutex<HashMap<Uuid, usize>>,
    status: Mutex<HashMap<ActionId, (ActionStatus, u32)>>,
    /// `Update::Parked` and `Update::EndpointParked` writes applied.
    park_writes: AtomicUsize,
    /// Each action's endpoint.
    endpoint_of: Mutex<HashMap<ActionId, String>>,
    /// Each endpoint's park (`Update::EndpointParked`), Unix ms.
    parked_until: Mutex<HashMap<String, i64>>,
    /// The cutoff of every `prune_delivered` call.
    prunes: Mutex<Vec<i64>>,
    /// Backlogged actions, unclaimed, in the order stored.
    backlog: Mutex<Vec<PendingAction>>,
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>> {
        let mut out = Vec::new();
        for e in events {
            if self
                .events
                .lock()
                .unwrap()
                .insert(e.event.id(), e.actions.len())
                .is_some()
            {
                out.push(Inserted::Duplicate);
                continue;
            }
            let event = e.event;
            let mut pending = Vec::new();
            for a in e.actions {
                let id = {
                    let mut n = self.next.lock().unwrap();
                    *n += 1;
                    *n
                };
                self.status.lock().unwrap().insert(id, (a.status(), 0));
                self.endpoint_of
                    .lock()
                    .unwrap()
                    .insert(id, a.endpoint().to_string());
                if a.dead_letter_reason().is_some() {
                    continue;
                }
                let action = PendingAction {
                    id,
                    event: event.clone(),
                    observer: a.observer().to_string(),
                    endpoint: a.endpoint().to_string(),
                    action: a.action().clone(),
                    attempts: 0,
                    replays: 0,
                    accepted_at_ms: 0,
                    not_before_ms: a.parked_until_ms(),
                    parked: a.parked_until_ms().is_some(),
                    size: 0,
                    claim_epoch: 0,
                };
                if a.is_backlogged() {
                    self.backlog.lock().unwrap().push(action);
                } else {
                    pending.push(action);
                }
            }
            out.push(Inserted::New(pending));
        }
        Ok(out)
    }
    async fn prune_delivered(&self, before_ms: i64, _limit: usize) -> StoreResult<u64> {
        self.prunes.lock().unwrap().push(before_ms);
        Ok(0)
    }
    async fn claim_backlog(
        &self,
        endpoint: &str,
        limit: usize,
        due_by_ms: i64,
    ) -> StoreResult<Claimed> {
        let mut backlog = self.backlog.lock().unwrap();
        let due = |a: &PendingAction| a.not_before_ms.unwrap_or(a.accepted_at_ms);
        let mut mine: Vec<usize> = (0..backlog.len())
            .filter(|i| backlog[*i].endpoint == endpoint && due(&backlog[*i]) <= due_by_ms)
            .collect();
        mine.sort_by_key(|i| (due(&backlog[*i]), backlog[*i].id));
        let more = mine.len() > limit;
        mine.truncate(limit);
        let ids: Vec<ActionId> = mine.iter().map(|i| backlog[*i].id).collect();
        let mut actions: Vec<PendingAction> = Vec::new();
        backlog.retain(|a| {
            if ids.contains(&a.id) {
                actions.push(a.clone());
                false
            } else {
                true
            }
        });
        actions.sort_by_key(|a| (due(a), a.id));
        Ok(Claimed { actions, more })
    }
    async fn backlogged_endpoints(&self, due_by_ms: i64) -> StoreResult<Vec<String>> {
        let mut out: Vec<String> = self
            .backlog
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.not_before_ms.unwrap_or(a.accepted_at_ms) <= due_by_ms)
            .map(|a| a.endpoint.clone())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    async fn backlogs(&self) -> StoreResult<Vec<Backlog>> {
        Ok(Vec::new())
    }
    async fn apply(&self, updates: Vec<Update>) -> StoreResult<()> {
        let mut s = self.status.lock().unwrap();
        for u in updates {
            match u {
                Update::Delivered { id, attempts, .. } => {
                    s.insert(id, (ActionStatus::Delivered, attempts));
                }
                Update::Retry { id, attempts, .. } => {
                    s.insert(id, (ActionStatus::Pending, attempts));
                }
                Update::Parked { id, .. } => {
                    self.park_writes.fetch_add(1, Ordering::SeqCst);
                    let a = s.get(&id).map_or(0, |v| v.1);
                    s.insert(id, (ActionStatus::Parked, a));
                }
                Update::DeadLetter { id, attempts, .. } => {
                    s.insert(id, (ActionStatus::DeadLettered, attempts));
                }
                Update::EndpointParked { endpoint, until_ms } => {
                    self.park_writes.fetch_add(1, Ordering::SeqCst);
                    self.parked_until.lock().unwrap().insert(endpoint, until_ms);
                }
                _ => {}
            }
        }
        Ok(())
    }
    async fn event(&self, _id: Uuid) -> StoreResult<Option<EventRecord>> {
        Ok(None)
    }
    async fn snapshots(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    async fn disabled_endpoints(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    async fn release_held(&self, _endpoint: &str) -> StoreResult<u64> {
        Ok(0)
    }
    async fn dead_letters(&self, _limit: usize) -> StoreResult<Vec<DeadLetter>> {
        Ok(Vec::new())
    }
    async fn replay_dead_letters(&self, _ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        Ok(0)
    }
    async fn purge_dead_letters(&self, _ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        Ok(0)
    }
    async fn oldest_pending_ms(&self) -> StoreResult<Option<i64>> {
        Ok(None)
    }
    async fn counts(&self) -> StoreResult<Vec<(ActionStatus, u64)>> {
        Ok(Vec::new())
    }
    async fn actions(
        &self,
        _filter: &ActionFilter,
        _before: Option<ActionId>,
        _limit: usize,
    ) -> StoreResult<ActionPage> {
        Ok(ActionPage::default())
    }
    async fn count_actions(&self, _filter: &ActionFilter) -> StoreResult<u64> {
        Ok(0)
    }
    async fn action(&self, _id: ActionId) -> StoreResult<Option<ActionRecord>> {
        Ok(None)
    }
    async fn replay_actions(&self, _ids: &[ActionId], _job: Option<i64>) -> StoreResult<u64> {
        Ok(0)
    }
    async fn purge_actions(&self, _ids: &[ActionId]) -> StoreResult<u64> {
        Ok(0)
    }
    async fn endpoint_attempts(
        &self,
        _endpoint: &str,
        _before: Option<i64>,
        _limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        Ok(Vec::new())
    }
    async fn endpoint_counts(&self) -> StoreResult<Vec<EndpointCounts>> {
        Ok(Vec::new())
    }
    async fn audit(&self, _entry: AuditEntry) -> StoreResult<i64> {
        Ok(0)
    }
    async fn audit_log(&self, _before: Option<i64>, _limit: usize) -> StoreResult<Vec<AuditEntry>> {
        Ok(Vec::new())
    }
    async fn create_replay_job(
        &self,
        _filter: &ActionFilter,
        _actor: &str,
        _total: u64,
        _adoptable: bool,
    ) -> StoreResult<ReplayJob> {
        Err(StoreError::Backend("no replay jobs here".into()))
    }
    async fn update_replay_job(
        &self,
        _id: i64,
        _replayed: u64,
        _cursor: Option<i64>,
        state: ReplayState,
        _error: Option<String>,
    ) -> StoreResult<Option<ReplayState>> {
        Ok(Some(state))
    }
    async fn cancel_replay_job(&self, _id: i64) -> StoreResult<Option<ReplayJob>> {
        Ok(None)
    }
    async fn replay_job(&self, _id: i64) -> StoreResult<Option<ReplayJob>> {
        Ok(None)
    }
    async fn replay_jobs(&self, _limit: usize) -> StoreResult<Vec<ReplayJob>> {
        Ok(Vec::new())
    }
    async fn close(&self) {}
}

impl MemoryStore {
    /// The actions of `status` as a store shows them: a pending action of
    /// an endpoint parked until later shows parked.
    fn with_status(&self, status: ActionStatus) -> Vec<(ActionId, u32)> {
        let now = chrono::Utc::now().timestamp_millis();
        let parked = self.parked_until.lock().unwrap().clone();
        let endpoint_of = self.endpoint_of.lock().unwrap().clone();
        self.status
            .lock()
            .unwrap()
            .iter()
            .map(|(id, v)| {
                let shown = match v.0 {
                    ActionStatus::Pending
                        if endpoint_of
                            .get(id)
                            .and_then(|e| parked.get(e))
                            .is_some_and(|until| *until > now) =>
                    {
                        ActionStatus::Parked
                    }
                    s => s,
                };
                (*id, shown, v.1)
            })
            .filter(|(_, shown, _)| *shown == status)
            .map(|(id, _, attempts)| (id, attempts))
            .collect()
    }
}

/// Succeeds for the healthy host; fails (503) for the dead one until `heal`.
#[derive(Debug, Default)]
struct TestExecutor {
    calls: Mutex<HashMap<String, usize>>,
    healed: AtomicUsize,
    /// The `data.i` of each event delivered to the dead endpoint, in order.
    dead_order: Mutex<Vec<u64>>,
}

#[async_trait]
impl ActionExecutor for TestExecutor {
    async fn execute(&self, e: &EntityEvent, action: &ActionConfig) -> Result<ActionResult, Error> {
        let endpoint = action.endpoint();
        *self
            .calls
            .lock()
            .unwrap()
            .entry(endpoint.clone())
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        if endpoint.contains("dead") {
            if self.healed.load(Ordering::SeqCst) == 0 {
                return Err(Error::from_status(503, "HTTP 503", None));
            }
            if let Some(i) = e.data["i"].as_u64() {
                self.dead_order.lock().unwrap().push(i);
            }
        }
        Ok(ActionResult {
            action_type: "webhook".into(),
            success: true,
            message: "ok".into(),
            duration_ms: 5,
            status_code: Some(200),
        })
    }
}

fn config() -> Config {
    Config::parse(&config_text()).unwrap()
}

fn config_text() -> String {
    String::from(
        r#"
[circuit_breaker]
sample_size = 10
minimum_calls = 5
open_timeout_ms = 10000
max_open_timeout_ms = 10000
half_open_max_requests = 1
jitter_ratio = 0.0
[retry]
max_attempts = 50
backoff_ms = 10
max_backoff_ms = 100
[delivery]
max_in_flight_per_endpoint = 4
[[observers]]
name = "o"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "webhook"
url = "http://healthy.test/h"
[[observers.actions]]
type = "webhook"
url = "http://dead.test/h"
"#,
    )
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened");
}

#[tokio::test(start_paused = true)]
async fn parked_actions_use_no_attempt_and_the_healthy_endpoint_is_not_held_up() {
    let store = Arc::new(MemoryStore::default());
    let exec = Arc::new(TestExecutor::default());
    let config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    engine.accept(events(&config, 1000)).await.unwrap();
    let healthy = "http://healthy.test:80";
    let dead = "http://dead.test:80";
    // Every healthy action is delivered while the dead endpoint's breaker is open.
    until(|| {
        engine
            .breaker_views()
            .iter()
            .any(|v| v.endpoint == healthy && v.delivered == 1000)
    })
    .await;
    let dead_breaker = engine.breakers().get(dead).unwrap();
    assert_eq!(dead_breaker.state(), breakwater::CircuitState::Open);
    let dead_calls = exec.calls.lock().unwrap()[dead];
    assert!(
        dead_calls < 20,
        "the open breaker kept {dead_calls} calls away"
    );
    let parked = store.with_status(ActionStatus::Parked);
    assert!(parked.len() > 900, "{} parked", parked.len());
    // Only actions that really ran (before the breaker opened) have used an
    // attempt; being parked used none.
    let attempted = parked.iter().filter(|(_, attempts)| *attempts > 0).count();
    assert!(
        attempted <= dead_calls,
        "{attempted} parked actions have attempts, {dead_calls} calls"
    );
    // While they wait nothing runs: ten more seconds of paused time, no calls.
    let before = exec.calls.lock().unwrap()[dead];
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(exec.calls.lock().unwrap()[dead] <= before + 1);
    exec.healed.store(1, Ordering::SeqCst);
    until(|| {
        engine
            .breaker_views()
            .iter()
            .any(|v| v.endpoint == dead && v.delivered == 1000)
    })
    .await;
    // Outcomes are written, and their actions let go, a moment after delivery.
    until(|| engine.held() == 0).await;
    assert_eq!(store.with_status(ActionStatus::Delivered).len(), 2000);
    assert!(store.with_status(ActionStatus::DeadLettered).is_empty());
}

/// A dead endpoint holds at most its window in memory however many of its
/// actions wait: the rest wait in the store's backlog, and once it heals they
/// are read back a page at a time, oldest first, the window never over its
/// size.
#[tokio::test(start_paused = true)]
async fn a_dead_endpoints_window_stays_bounded_and_its_backlog_is_read_back_oldest_first() {
    let store = Arc::new(MemoryStore::default());
    let exec = Arc::new(TestExecutor::default());
    let config = Config::parse(&config_text().replace(
        "max_in_flight_per_endpoint = 4",
        "max_in_flight_per_endpoint = 4\nmax_pending_per_endpoint = 50",
    ))
    .unwrap();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    let all = events(&config, 1000);
    for chunk in all.chunks(100) {
        engine.accept(chunk.to_vec()).await.unwrap();
    }
    let healthy = "http://healthy.test:80";
    let dead = "http://dead.test:80";
    until(|| view(&engine, healthy).delivered == 1000).await;
    let v = view(&engine, dead);
    assert!(v.pending <= 50, "{v:?}");
    assert_eq!(v.backlog, 1000, "{v:?}");
    assert!(store.backlog.lock().unwrap().len() >= 950);
    // A long outage: the window stays as it is, nothing is read back.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(view(&engine, dead).pending <= 50);
    assert!(store.backlog.lock().unwrap().len() >= 950);
    exec.healed.store(1, Ordering::SeqCst);
    let mut largest = 0;
    until(|| {
        let v = view(&engine, dead);
        largest = largest.max(v.pending);
        v.delivered == 1000
    })
    .await;
    assert!(largest <= 50, "the window held {largest}");
    until(|| view(&engine, dead).backlog == 0).await;
    let order = exec.dead_order.lock().unwrap().clone();
    assert_eq!(order.len(), 1000, "each once");
    for (at, i) in order.iter().enumerate() {
        assert!(
            *i as usize <= at + 50,
            "event {i} was delivered {at}th, ahead of older ones"
        );
    }
    until(|| engine.held() == 0).await;
    assert_eq!(store.with_status(ActionStatus::Delivered).len(), 2000);
}

/// `endpoint`'s row of `/breakers`.
fn view(engine: &Engine, endpoint: &str) -> BreakerView {
    engine
        .breaker_views()
        .into_iter()
        .find(|v| v.endpoint == endpoint)
        .unwrap()
}

fn events(config: &Config, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let event = EntityEvent::new(
                EventKind::Insert,
                "Order",
                Uuid::new_v4(),
                serde_json::json!({ "i": i }),
            );
            NewEvent::new(&event, actions_for(config, &event))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn actions_for_an_open_circuit_are_stored_parked_at_intake() {
    let store = Arc::new(MemoryStore::default());
    let exec = Arc::new(TestExecutor::default());
    let config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    let (healthy, dead) = ("http://healthy.test:80", "http://dead.test:80");
    let view = |endpoint: &str| view(&engine, endpoint);
    // The dead endpoint's failures open its breaker.
    engine.accept(events(&config, 20)).await.unwrap();
    until(|| view(healthy).delivered == 20).await;
    let dead_breaker = engine.breakers().get(dead).unwrap();
    until(|| dead_breaker.state() == CircuitState::Open).await;
    // Retries that failed before it opened come back to it and are parked.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(engine.held(), 20);
    let calls = exec.calls.lock().unwrap()[dead];
    let (blocked, deferred) = (dead_breaker.metrics().blocked, view(dead).deferred);
    let park_writes = store.park_writes.load(Ordering::SeqCst);

    // While it is open, new actions for it are stored parked: the breaker
    // counts each refusal, none is attempted or written a second time.
    let batch = events(&config, 100);
    let inserted = engine.accept(batch.clone()).await.unwrap();
    for outcome in &inserted {
        let Inserted::New(actions) = outcome else {
            panic!("a new event was taken for a duplicate");
        };
        let (to_healthy, to_dead): (Vec<_>, Vec<_>) =
            actions.iter().partition(|a| a.endpoint == healthy);
        assert!(!to_healthy[0].parked && to_healthy[0].not_before_ms.is_none());
        assert!(to_dead[0].parked && to_dead[0].not_before_ms.is_some());
    }
    until(|| view(healthy).delivered == 120).await;
    assert_eq!(exec.calls.lock().unwrap()[dead], calls);
    assert_eq!(dead_breaker.metrics().blocked, blocked + 100);
    assert_eq!(view(dead).deferred, deferred + 100);
    assert_eq!(store.park_writes.load(Ordering::SeqCst), park_writes);
    assert!(store.with_status(ActionStatus::Parked).len() >= 100);
    // The same events again are duplicates: nothing is stored, and the
    // breaker is asked nothing.
    let again = engine.accept(batch).await.unwrap();
    assert!(again.iter().all(|i| matches!(i, Inserted::Duplicate)));
    assert_eq!(dead_breaker.metrics().blocked, blocked + 100);
    assert_eq!(view(dead).deferred, deferred + 100);

    // They wait for the breaker's opening to end, then are delivered.
    assert!(view(dead).pending >= 100);
    exec.healed.store(1, Ordering::SeqCst);
    until(|| view(dead).delivered == 120).await;
    // Outcomes are written, and their actions let go, a moment after delivery.
    until(|| engine.held() == 0).await;
    assert_eq!((view(dead).pending, view(healthy).pending), (0, 0));
    assert_eq!(store.with_status(ActionStatus::Delivered).len(), 240);
}

/// Regression: behind a forced-open breaker every parked action was
/// parked again each second and counted as deferred each time (and then
/// still refused by the breaker each second).
#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_defers_each_action_once_and_close_delivers_them() {
    let store = Arc::new(MemoryStore::default());
    let exec = Arc::new(TestExecutor::default());
    exec.healed.store(1, Ordering::SeqCst);
    let config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    let healthy = "http://healthy.test:80";
    let view = |endpoint: &str| view(&engine, endpoint);
    engine.accept(events(&config, 1)).await.unwrap();
    until(|| view(healthy).delivered == 1).await;
    assert!(engine.admin(healthy, AdminOp::Open).await.unwrap());
    engine.accept(events(&config, 10)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(view(healthy).deferred, 10, "each action once");
    assert_eq!(view(healthy).delivered, 1);
    // While they wait, nothing asks the breaker again: no requeue loop.
    let breaker = engine.breakers().get(healthy).unwrap();
    let blocked = breaker.metrics().blocked;
    assert!(blocked <= 10, "{blocked} refusals for 10 actions");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        breaker.metrics().blocked,
        blocked,
        "refused again while waiting"
    );
    assert_eq!(engine.held(), 10);
    assert!(engine.admin(healthy, AdminOp::Close).await.unwrap());
    until(|| view(healthy).delivered == 11).await;
    assert_eq!(view(healthy).deferred, 10);
}

#[tokio::test(start_paused = true)]
async fn delivered_events_are_pruned_every_minute_past_their_keeping_time() {
    let store = Arc::new(MemoryStore::default());
    let mut config = config();
    config.delivery.keep_delivered_hours = 2;
    let engine = Engine::start(
        store.clone(),
        Arc::new(TestExecutor::default()),
        &config,
        Metrics::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(store.prunes.lock().unwrap().is_empty(), "not at start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wall_ms = chrono::Utc::now().timestamp_millis();
    let cutoffs = store.prunes.lock().unwrap().clone();
    assert_eq!(cutoffs.len(), 1);
    assert!(
        (wall_ms - 2 * 3_600_000 - cutoffs[0]).abs() < 10_000,
        "cutoff {} for now {wall_ms}",
        cutoffs[0]
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(store.prunes.lock().unwrap().len(), 2);

    // 0 keeps everything: the store is not asked.
    config.delivery.keep_delivered_hours = 0;
    engine.reload(&config).unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(store.prunes.lock().unwrap().len(), 2);
    assert_eq!(engine.prune().await, 0);
}

/// A [`MemoryStore`] whose every `apply` takes `delay` (a slow disk) and
/// that refuses writes once closed.
#[derive(Debug)]
struct SlowStore {
    inner: MemoryStore,
    delay: Duration,
    applies: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    refused: AtomicUsize,
}

impl SlowStore {
    fn new(delay: Duration) -> Self {
        Self {
            inner: MemoryStore::default(),
            delay,
            applies: AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            refused: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Store for SlowStore {
    async fn insert(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>> {
        self.inner.insert(events).await
    }
    async fn claim_backlog(
        &self,
        endpoint: &str,
        limit: usize,
        due_by_ms: i64,
    ) -> StoreResult<Claimed> {
        self.inner.claim_backlog(endpoint, limit, due_by_ms).await
    }
    async fn backlogged_endpoints(&self, due_by_ms: i64) -> StoreResult<Vec<String>> {
        self.inner.backlogged_endpoints(due_by_ms).await
    }
    async fn backlogs(&self) -> StoreResult<Vec<Backlog>> {
        self.inner.backlogs().await
    }
    async fn apply(&self, updates: Vec<Update>) -> StoreResult<()> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if self.closed.load(Ordering::SeqCst) {
            self.refused.fetch_add(updates.len(), Ordering::SeqCst);
            return Err(breakwater_dispatch::store::StoreError::Closed);
        }
        self.inner.apply(updates).await
    }
    async fn event(&self, id: Uuid) -> StoreResult<Option<EventRecord>> {
        self.inner.event(id).await
    }
    async fn snapshots(&self) -> StoreResult<Vec<(String, String)>> {
        self.inner.snapshots().await
    }
    async fn disabled_endpoints(&self) -> StoreResult<Vec<(String, String)>> {
        self.inner.disabled_endpoints().await
    }
    async fn release_held(&self, endpoint: &str) -> StoreResult<u64> {
        self.inner.release_held(endpoint).await
    }
    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        self.inner.dead_letters(limit).await
    }
    async fn replay_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        self.inner.replay_dead_letters(ids).await
    }
    async fn purge_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        self.inner.purge_dead_letters(ids).await
    }
    async fn oldest_pending_ms(&self) -> StoreResult<Option<i64>> {
        self.inner.oldest_pending_ms().await
    }
    async fn counts(&self) -> StoreResult<Vec<(ActionStatus, u64)>> {
        self.inner.counts().await
    }
    async fn actions(
        &self,
        _filter: &ActionFilter,
        _before: Option<ActionId>,
        _limit: usize,
    ) -> StoreResult<ActionPage> {
        Ok(ActionPage::default())
    }
    async fn count_actions(&self, _filter: &ActionFilter) -> StoreResult<u64> {
        Ok(0)
    }
    async fn action(&self, _id: ActionId) -> StoreResult<Option<ActionRecord>> {
        Ok(None)
    }
    async fn replay_actions(&self, _ids: &[ActionId], _job: Option<i64>) -> StoreResult<u64> {
        Ok(0)
    }
    async fn purge_actions(&self, _ids: &[ActionId]) -> StoreResult<u64> {
        Ok(0)
    }
    async fn endpoint_attempts(
        &self,
        _endpoint: &str,
        _before: Option<i64>,
        _limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        Ok(Vec::new())
    }
    async fn endpoint_counts(&self) -> StoreResult<Vec<EndpointCounts>> {
        Ok(Vec::new())
    }
    async fn audit(&self, _entry: AuditEntry) -> StoreResult<i64> {
        Ok(0)
    }
    async fn audit_log(&self, _before: Option<i64>, _limit: usize) -> StoreResult<Vec<AuditEntry>> {
        Ok(Vec::new())
    }
    async fn create_replay_job(
        &self,
        _filter: &ActionFilter,
        _actor: &str,
        _total: u64,
        _adoptable: bool,
    ) -> StoreResult<ReplayJob> {
        Err(StoreError::Backend("no replay jobs here".into()))
    }
    async fn update_replay_job(
        &self,
        _id: i64,
        _replayed: u64,
        _cursor: Option<i64>,
        state: ReplayState,
        _error: Option<String>,
    ) -> StoreResult<Option<ReplayState>> {
        Ok(Some(state))
    }
    async fn cancel_replay_job(&self, _id: i64) -> StoreResult<Option<ReplayJob>> {
        Ok(None)
    }
    async fn replay_job(&self, _id: i64) -> StoreResult<Option<ReplayJob>> {
        Ok(None)
    }
    async fn replay_jobs(&self, _limit: usize) -> StoreResult<Vec<ReplayJob>> {
        Ok(Vec::new())
    }
    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

fn healthy_events(config: &Config, n: usize) -> Vec<NewEvent> {
    let mut events = events(config, n);
    for e in &mut events {
        e.actions.retain(|a| a.endpoint().contains("healthy"));
    }
    events
}

/// Group commit of outcomes: a delivery frees its concurrency permit
/// without waiting for its outcome's commit, outcomes are written in
/// batches, and an action counts as held until its outcome is written.
#[tokio::test(start_paused = true)]
async fn deliveries_do_not_wait_for_their_outcome_to_be_written() {
    let store = Arc::new(SlowStore::new(Duration::from_secs(1)));
    let exec = Arc::new(TestExecutor::default());
    let config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    engine.accept(healthy_events(&config, 40)).await.unwrap();
    let healthy = "http://healthy.test:80";
    // 40 calls through 4 permits at 5 ms each: well under one slow commit.
    until(|| exec.calls.lock().unwrap().get(healthy).copied() == Some(40)).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "deliveries waited for the store: {:?}",
        started.elapsed()
    );
    // Not written yet, so still held (memory stays bounded by max_pending).
    assert!(engine.held() > 0);
    until(|| engine.held() == 0).await;
    assert_eq!(store.inner.with_status(ActionStatus::Delivered).len(), 40);
    // Batched: far fewer writes than outcomes.
    let applies = store.applies.load(Ordering::SeqCst);
    assert!(applies < 10, "{applies} writes for 40 outcomes");
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(store.refused.load(Ordering::SeqCst), 0);
}

/// Shutdown writes the outcomes still queued before it closes the store.
#[tokio::test(start_paused = true)]
async fn shutdown_writes_queued_outcomes_before_closing_the_store() {
    let store = Arc::new(SlowStore::new(Duration::from_millis(300)));
    let exec = Arc::new(TestExecutor::default());
    let config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    engine.accept(healthy_events(&config, 40)).await.unwrap();
    let healthy = "http://healthy.test:80";
    until(|| exec.calls.lock().unwrap().get(healthy).copied() == Some(40)).await;
    assert!(engine.held() > 0, "outcomes already written");
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(store.refused.load(Ordering::SeqCst), 0);
    assert_eq!(store.inner.with_status(ActionStatus::Delivered).len(), 40);
}

/// Regression: an outcome whose write failed (the disk full for a few
/// seconds) was dropped: its action stayed pending and claimed in the store
/// with nothing in memory to finish it, until a restart. Now the write is
/// tried again until the store takes it, and the action counts as held
/// until then.
#[tokio::test(start_paused = true)]
async fn an_outcome_that_cannot_be_written_is_kept_and_written_once_the_store_is_back() {
    let store = Arc::new(SlowStore::new(Duration::from_millis(1)));
    let exec = Arc::new(TestExecutor::default());
    let config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    // The store refuses every write of outcomes from now on.
    store.closed.store(true, Ordering::SeqCst);
    engine.accept(healthy_events(&config, 10)).await.unwrap();
    let healthy = "http://healthy.test:80";
    until(|| view(&engine, healthy).delivered == 10).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(store.refused.load(Ordering::SeqCst) >= 20, "tried again");
    assert!(store.inner.with_status(ActionStatus::Delivered).is_empty());
    assert_eq!(engine.held(), 10, "kept until written");
    store.closed.store(false, Ordering::SeqCst);
    until(|| store.inner.with_status(ActionStatus::Delivered).len() == 10).await;
    until(|| engine.held() == 0).await;
    assert_eq!(
        exec.calls.lock().unwrap()[healthy],
        10,
        "delivered once each"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_with_longer_windows_applies_to_live_breakers_and_keeps_their_state() {
    let store = Arc::new(MemoryStore::default());
    let exec = Arc::new(TestExecutor::default());
    let mut config = config();
    let engine = Engine::start(store.clone(), exec.clone(), &config, Metrics::default())
        .await
        .unwrap();
    let (healthy, dead) = ("http://healthy.test:80", "http://dead.test:80");
    engine.accept(events(&config, 20)).await.unwrap();
    until(|| view(&engine, healthy).delivered == 20).await;
    let dead_breaker = engine.breakers().get(dead).unwrap();
    until(|| dead_breaker.state() == CircuitState::Open).await;
    let kept = engine.breakers().get(healthy).unwrap().snapshot().outcomes;

    // Longer windows than the breakers were built with, by default and for
    // one endpoint.
    config.circuit_breaker.defaults.sample_size = 50;
    config.circuit_breaker.defaults.minimum_calls = Some(50);
    let mut longer = config.circuit_breaker.defaults.clone();
    longer.sample_size = 200;
    longer.minimum_calls = Some(200);
    config
        .circuit_breaker
        .endpoints
        .insert(healthy.to_string(), longer);
    engine.reload(&config).unwrap();
    let healthy_breaker = engine.breakers().get(healthy).unwrap();
    assert_eq!(healthy_breaker.config().sample_size, 200);
    assert_eq!(healthy_breaker.snapshot().outcomes, kept, "outcomes kept");
    assert_eq!(dead_breaker.config().sample_size, 50);
    assert_eq!(dead_breaker.state(), CircuitState::Open, "state kept");
}
