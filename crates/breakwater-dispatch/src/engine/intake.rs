//! Intake: storing new events and queueing their actions, within the
//! `max_pending` and `max_pending_per_endpoint` limits.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use breakwater::CircuitState;

use super::lane::Lane;
use super::{schedule, unix_ms, Engine};
use crate::metrics::Metrics;
use crate::store::{Inserted, NewEvent, StoreError};

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

impl Engine {
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

    pub(super) fn release(&self, n: usize) {
        if n > 0 {
            self.inner.held.fetch_sub(n, Ordering::AcqRel);
            self.publish_depth();
        }
    }

    pub(super) fn publish_depth(&self) {
        let held = self.inner.held.load(Ordering::Acquire);
        self.inner
            .metrics
            .queue_depth
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}
