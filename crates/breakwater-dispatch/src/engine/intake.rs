//! Intake: storing new events and queueing their actions, each into its
//! endpoint's window or its backlog (see [`window`](super::window)).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use breakwater::CircuitState;

use super::lane::Lane;
use super::window::{Caps, Load};
use super::{schedule, unix_ms, Engine};
use crate::metrics::Metrics;
use crate::store::{Inserted, NewEvent, PendingAction, StoreError};

/// Why intake was refused: only for reasons of the whole service, never
/// because some endpoint is down or slow (its actions wait in its backlog).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The engine is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// Storage failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What intake does with one action.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Into its endpoint's window, counted for this load.
    Window(Load),
    /// Into its endpoint's backlog.
    Backlog,
    /// Dead-lettered at once: its endpoint's backlog is over its quota.
    OverQuota,
}

impl Engine {
    /// Stores `events` with their actions and queues the new actions.
    /// Duplicate ids are accepted again without a second delivery.
    ///
    /// An action whose endpoint's window is full (or whose endpoint has a
    /// backlog already) is stored in that endpoint's backlog, to be read
    /// back as the window makes room; one whose endpoint's backlog is over
    /// `max_backlog_per_endpoint` is stored dead-lettered with the reason.
    /// The events are accepted either way.
    ///
    /// # Errors
    ///
    /// A store failure (nothing of the request is stored), or shutdown.
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

    async fn accept_now(&self, mut events: Vec<NewEvent>) -> Result<Vec<Inserted>, AcceptError> {
        if self.is_stopping() {
            return Err(AcceptError::ShuttingDown);
        }
        let delivery = self.settings().delivery;
        let caps = Caps::of(&delivery);
        let quota = delivery.max_backlog_per_endpoint;
        // The endpoints asked for (with how long their open circuit parks
        // an action), and each action's fate with its endpoint's place in
        // `lanes`, event by event.
        let mut lanes: Vec<Arc<Lane>> = Vec::new();
        let mut parks: Vec<Option<i64>> = Vec::new();
        let mut spilled: Vec<usize> = Vec::new();
        let mut fates: Vec<Vec<(usize, Fate)>> = Vec::with_capacity(events.len());
        for event in &mut events {
            if event.actions.is_empty() {
                fates.push(Vec::new());
                continue;
            }
            let size = event.event.size();
            let mut mine = Vec::with_capacity(event.actions.len());
            for action in &mut event.actions {
                let at = match lanes.iter().position(|l| l.endpoint == action.endpoint()) {
                    Some(at) => at,
                    None => {
                        lanes.push(self.lane(action.endpoint()));
                        parks.push(self.park_until(action.endpoint()));
                        spilled.push(0);
                        lanes.len() - 1
                    }
                };
                let lane = &lanes[at];
                if let Some(reason) = over_quota(lane, quota) {
                    *action = action.clone().dead_lettered(reason);
                    mine.push((at, Fate::OverQuota));
                    continue;
                }
                let load = Load::one(size);
                if lane.backlog.admit_or_spill(
                    &lane.held,
                    &self.inner.held,
                    &caps,
                    load,
                    lane.delivering(),
                ) {
                    if let Some(until) = parks[at] {
                        *action = action.clone().parked_until(until);
                    }
                    mine.push((at, Fate::Window(load)));
                } else {
                    spilled[at] += 1;
                    *action = action.clone().backlogged();
                    mine.push((at, Fate::Backlog));
                }
            }
            fates.push(mine);
        }
        self.publish_depth();
        let result = self.inner.store.insert(events).await;
        for (lane, n) in lanes.iter().zip(&spilled) {
            // Stored or not, they are no longer being written.
            lane.backlog.stored(*n);
        }
        // What was taken into windows for actions that were not stored.
        let give_back = |fates: &[(usize, Fate)]| {
            for (at, fate) in fates {
                if let Fate::Window(load) = fate {
                    lanes[*at].let_go(*load);
                    self.release(*load);
                }
            }
        };
        // Stored where no restart finds it (the file deleted, say) is not
        // stored: refused, like a failed write.
        let result = result.and_then(|i| self.inner.store.check().map(|()| i));
        let inserted = match result {
            Ok(i) => i,
            Err(e) => {
                fates.iter().for_each(|f| give_back(f));
                return Err(e.into());
            }
        };
        for (outcome, fates) in inserted.iter().zip(&fates) {
            match outcome {
                Inserted::New(actions) => {
                    self.inner.metrics.events_accepted.inc();
                    let mut claimed = actions.iter();
                    for (at, fate) in fates {
                        let lane = &lanes[*at];
                        match *fate {
                            Fate::Window(load) => {
                                lane.backlog.add_waiting(1);
                                if let Some(a) = claimed.next() {
                                    let mut a = a.clone();
                                    a.size = load.bytes;
                                    self.queue_new(a);
                                }
                            }
                            Fate::Backlog => lane.backlog.add_waiting(1),
                            Fate::OverQuota => self.count_over_quota(lane),
                        }
                    }
                }
                Inserted::Duplicate => {
                    self.inner.metrics.events_duplicate.inc();
                    give_back(fates);
                }
            }
        }
        for (lane, n) in lanes.iter().zip(&spilled) {
            if *n > 0 {
                lane.backlog.wake.notify_one();
            }
        }
        Ok(inserted)
    }

    /// Queues a new action taken into its window: an action stored parked
    /// (its circuit was open) asks the breaker first, as a delivery would.
    fn queue_new(&self, mut a: PendingAction) {
        if a.parked {
            if self.refused(&a.endpoint) {
                self.count_deferred(&a.endpoint);
                if self.forced_open(&a.endpoint) {
                    let lane = self.lane(&a.endpoint);
                    self.wait_for_release(&lane, a);
                    return;
                }
            } else {
                a.not_before_ms = None;
            }
        }
        self.route(a);
    }

    /// Counts an action dead-lettered at intake because its endpoint's
    /// backlog is over its quota; warns once a crossing.
    fn count_over_quota(&self, lane: &Lane) {
        let label = Metrics::endpoint(&lane.endpoint);
        let m = &self.inner.metrics;
        m.over_quota.get_or_create(&label).inc();
        m.dead_lettered.get_or_create(&label).inc();
        lane.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if !lane.backlog.over_quota.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                endpoint = %lane.endpoint,
                waiting = lane.backlog.waiting(),
                quota = self.settings().delivery.max_backlog_per_endpoint,
                "the endpoint's backlog is over delivery.max_backlog_per_endpoint: its new actions \
                 are dead-lettered until it shrinks (their events are accepted)"
            );
        }
    }

    /// Until when an action for `endpoint` taken into its window now is
    /// stored parked, when its circuit is open: it then waits in the timer
    /// without a delivery task, an executor call or a second write to park
    /// it. The breaker is asked for it once it is stored
    /// ([`Engine::refused`]). (An action that joins the backlog is not
    /// parked: it waits in the store, in the order accepted.)
    fn park_until(&self, endpoint: &str) -> Option<i64> {
        let breaker = self.inner.breakers.get(endpoint)?;
        if breaker.state() != CircuitState::Open {
            return None;
        }
        let wait = schedule::park_for(breaker.retry_after());
        Some(unix_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
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
    pub(super) fn forced_open(&self, endpoint: &str) -> bool {
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

    /// `l` no longer counts against all windows together.
    pub(super) fn release(&self, l: Load) {
        if l != Load::default() {
            self.inner.held.sub(l);
            self.publish_depth();
        }
    }

    pub(super) fn publish_depth(&self) {
        let held = self.inner.held.get().actions;
        self.inner
            .metrics
            .queue_depth
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

/// Why `lane`'s new actions are dead-lettered, when its backlog is over
/// `quota` (0: no quota); clears the crossing when it is back under.
fn over_quota(lane: &Lane, quota: u64) -> Option<String> {
    if quota == 0 {
        return None;
    }
    let waiting = lane.backlog.waiting();
    if waiting < quota {
        if lane.backlog.over_quota.swap(false, Ordering::AcqRel) {
            tracing::info!(endpoint = %lane.endpoint, waiting, quota,
                "the endpoint's backlog is back under delivery.max_backlog_per_endpoint");
        }
        return None;
    }
    Some(format!(
        "not attempted: the endpoint's backlog held {waiting} actions, at its quota \
         (delivery.max_backlog_per_endpoint = {quota}); replay it once the endpoint is back"
    ))
}
