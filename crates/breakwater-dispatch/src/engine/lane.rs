//! Lanes: each endpoint's queue, worker and concurrency limit, and the
//! routing of actions to them (now, or through the timer).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use super::window::{pager_task, Backlog, Load, Usage};
use super::{unix_ms, Engine};
use crate::metrics::Metrics;
use crate::store::PendingAction;

#[derive(Debug, Default)]
pub(super) struct LaneStats {
    pub(super) delivered: AtomicU64,
    pub(super) deferred: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
}

/// One endpoint's queue, worker and concurrency limit.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) endpoint: String,
    pub(super) tx: mpsc::UnboundedSender<PendingAction>,
    pub(super) limit: Arc<Semaphore>,
    /// Permits the semaphore was sized with (changed on reload, and in a
    /// fleet with this instance's share). 0: this instance delivers nothing
    /// to the endpoint now (a fleet with more instances than the limit);
    /// its actions go to the backlog for the instances that do.
    pub(super) size: AtomicUsize,
    /// Woken when `size` changes.
    pub(super) resized: tokio::sync::Notify,
    /// Until when the store was last told this endpoint's circuit parks
    /// its actions (Unix ms; 0: not parked).
    pub(super) parked_until: std::sync::atomic::AtomicI64,
    pub(super) disabled: Mutex<Option<String>>,
    pub(super) stats: LaneStats,
    /// This endpoint's window: its actions held in memory (queued, parked,
    /// waiting to retry or running), against `max_pending_per_endpoint` and
    /// `max_pending_bytes_per_endpoint`.
    pub(super) held: Usage,
    /// Its backlog: whether it has one, how large it is.
    pub(super) backlog: Backlog,
    /// Actions refused by a forced-open breaker: no timer, no retry; they
    /// wait here until the breaker leaves Open (see [`Engine::wake_released`]).
    pub(super) until_released: Mutex<Vec<PendingAction>>,
}

impl Lane {
    /// `l` of this endpoint's window is no longer held; its pager is woken
    /// when it has a backlog to read into the room.
    pub(super) fn let_go(&self, l: Load) {
        self.held.sub(l);
        if self.backlog.is_on_disk() {
            self.backlog.wake.notify_one();
        }
    }

    /// An action of `l` is delivered, dead-lettered or held: it leaves the
    /// window and stops waiting.
    pub(super) fn finish(&self, l: Load) {
        self.backlog.finished();
        self.let_go(l);
    }

    pub(super) fn disabled(&self) -> Option<String> {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this instance delivers to the endpoint now.
    pub(super) fn delivering(&self) -> bool {
        self.size.load(Ordering::Acquire) > 0
    }

    pub(super) fn resize(&self, want: usize) {
        let have = self.size.swap(want, Ordering::AcqRel);
        if have != want {
            self.resized.notify_waiters();
        }
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

impl Engine {
    /// This instance's share of an endpoint's `limit` calls in flight: all
    /// of it for a store of one process; in a fleet, `limit` divided among
    /// the live instances by rank (the first `limit % live` take one more),
    /// so that together they never exceed it; 0 while this instance is not
    /// yet counted, or when there are more instances than `limit` and its
    /// rank is past it.
    pub(super) fn in_flight_share(&self, limit: usize) -> usize {
        match self.inner.store.fleet_share() {
            None => limit,
            Some((rank, live)) => share_of(limit, rank, live),
        }
    }

    /// Sizes every lane to this instance's share (the fleet changed).
    pub(super) fn reshare(&self) {
        if self.inner.store.fleet_share().is_none() {
            return;
        }
        let limit = self
            .inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .delivery
            .max_in_flight_per_endpoint;
        let share = self.in_flight_share(limit);
        for lane in self.lanes() {
            if lane.size.load(Ordering::Acquire) != share {
                lane.resize(share);
                if share > 0 {
                    lane.backlog.mark();
                    lane.backlog.wake.notify_one();
                }
            }
        }
    }

    /// Gives `action` back to its endpoint's backlog without an attempt.
    pub(super) fn hand_back(&self, lane: &Lane, action: &PendingAction) {
        let l = action.load();
        lane.let_go(l);
        self.record(crate::store::Update::Released { id: action.id }, l);
    }

    /// The lane of `endpoint`, created (with its worker and its breaker's
    /// snapshot listener) on first use.
    pub(super) fn lane(&self, endpoint: &str) -> Arc<Lane> {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = lanes.get(endpoint) {
            return l.clone();
        }
        let size = self.in_flight_share(
            self.inner
                .settings
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .delivery
                .max_in_flight_per_endpoint,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            endpoint: endpoint.to_string(),
            tx,
            limit: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            resized: tokio::sync::Notify::new(),
            parked_until: std::sync::atomic::AtomicI64::new(0),
            disabled: Mutex::new(None),
            stats: LaneStats::default(),
            held: Usage::default(),
            backlog: Backlog::default(),
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
        drop(m.over_quota.get_or_create(&label));
        drop(m.endpoint_disabled.get_or_create(&label));
        let snapshots = self.inner.snapshots.clone();
        let key = endpoint.to_string();
        self.inner.breakers.get_or_create(endpoint).add_listener(
            move |_: &breakwater::Transition| {
                let _ = snapshots.send(key.clone());
            },
        );
        tokio::spawn(lane_task(self.clone(), lane.clone(), rx));
        tokio::spawn(pager_task(self.clone(), lane.clone()));
        lane
    }

    /// Sends a held action to its lane now, or to the timer when it must wait.
    pub(super) fn route(&self, action: PendingAction) {
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
                    let l = e.0.load();
                    self.release(l);
                    lane.let_go(l);
                }
            }
        }
    }

    /// Queues again the actions that waited for `lane`'s forced-open breaker,
    /// once it is no longer Open.
    pub(super) fn wake_released(&self, lane: &Lane) {
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

    pub(super) fn later(&self, action: PendingAction, wait: Duration) {
        if let Err(e) = self.inner.timer.send((action, wait)) {
            let l = e.0 .0.load();
            self.release(l);
            self.lane(&e.0 .0.endpoint).let_go(l);
        }
    }
}

/// How long an action waits, while the store cannot confirm this
/// instance's lease, before it is looked at again.
const LEASE_WAIT: Duration = Duration::from_millis(100);

/// The share of `limit` taken by the instance of rank `rank` among `live`:
/// the shares of ranks `0..live` add up to `limit` exactly.
fn share_of(limit: usize, rank: usize, live: usize) -> usize {
    match live {
        0 => 0,
        _ => limit / live + usize::from(rank < limit % live),
    }
}

pub(super) async fn lane_task(
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
        if !engine.inner.store.lease_confirmed() {
            // A pause or an outage longer than the lease: nothing goes out
            // until the store knows whether the claims are still ours.
            engine.later(action, LEASE_WAIT);
            continue;
        }
        if action.claim_epoch != engine.inner.store.claim_epoch() {
            engine.let_go_lost(&lane, &action);
            continue;
        }
        if lane.disabled().is_some() {
            engine.hold(action, None);
            continue;
        }
        let permit = loop {
            if !lane.delivering() {
                break None;
            }
            let resized = lane.resized.notified();
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                p = lane.limit.clone().acquire_owned() => match p {
                    Ok(p) => break Some(p),
                    Err(_) => return,
                },
                () = resized => {}
            }
        };
        let Some(permit) = permit else {
            // This instance has no share of the endpoint now: the action
            // goes back to its backlog, for the instances that have one.
            engine.hand_back(&lane, &action);
            continue;
        };
        let e = engine.clone();
        let l = lane.clone();
        engine.inner.deliveries.spawn(async move {
            e.deliver(&l, action).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::share_of;

    #[test]
    fn the_shares_of_a_fleet_add_up_to_the_limit() {
        for limit in 0..40 {
            for live in 1..12 {
                let shares: Vec<usize> = (0..live).map(|r| share_of(limit, r, live)).collect();
                assert_eq!(shares.iter().sum::<usize>(), limit, "{limit} over {live}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{shares:?}");
            }
        }
        assert_eq!(share_of(8, 0, 0), 0, "not yet counted");
        assert_eq!(share_of(1, 1, 3), 0, "past the limit");
    }
}
