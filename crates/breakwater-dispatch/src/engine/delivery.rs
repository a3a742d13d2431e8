//! One delivery attempt and what follows from its outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use breakwater::traits::{ActionExecutor, ActionResult, Error};

use super::lane::Lane;
use super::record::Noted;
use super::schedule::{self, AfterFailure};
use super::window::Load;
use super::{unix_ms, Engine};
use crate::metrics::{AttemptLabel, Metrics};
use crate::store::{GoneAttempt, PendingAction, Update};

/// Parks of one opening within this much of the one written are not
/// written again (each computes its end from the breaker at its moment).
const PARK_SLACK_MS: i64 = 1_000;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Delivered {
        status: Option<u16>,
    },
    CircuitOpen {
        retry_after: Option<Duration>,
    },
    Transient {
        message: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
        timeout: bool,
    },
    Permanent {
        message: String,
        status: Option<u16>,
    },
    Gone {
        message: String,
    },
}

/// Sorts an executor's answer into an [`Outcome`].
pub(crate) fn classify(result: Result<ActionResult, Error>) -> Outcome {
    match result {
        Ok(r) if r.success => Outcome::Delivered {
            status: r.status_code,
        },
        Ok(r) => Outcome::Transient {
            message: r.message,
            status: r.status_code,
            retry_after: None,
            timeout: false,
        },
        Err(e) if e.is_circuit_open() => Outcome::CircuitOpen {
            retry_after: e.retry_after(),
        },
        Err(e) if e.is_gone() => Outcome::Gone {
            message: e.to_string(),
        },
        Err(e) if e.is_permanent() => Outcome::Permanent {
            status: e.status(),
            message: e.to_string(),
        },
        Err(e) => Outcome::Transient {
            status: e.status(),
            retry_after: e.retry_after(),
            timeout: matches!(e, Error::Timeout(_)),
            message: e.to_string(),
        },
    }
}

impl Engine {
    /// Keeps `action`, refused by a forced-open breaker (Open with no wait
    /// to advise: an operator forced it), with no timer and no retry until
    /// the breaker leaves Open; the transition then wakes it
    /// ([`Engine::wake_released`]).
    pub(super) fn wait_for_release(&self, lane: &Lane, action: PendingAction) {
        lane.until_released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(action);
        // Released meanwhile (the wake-up may have come before the push):
        // let it go now.
        self.wake_released(lane);
    }

    /// Records that `lane`'s circuit parks its actions until `until_ms`,
    /// once an opening (a later park of the same opening, a few
    /// milliseconds apart, writes nothing).
    pub(super) fn park_endpoint(&self, lane: &Lane, until_ms: i64) {
        let written = lane.parked_until.load(Ordering::Acquire);
        if until_ms > written.saturating_add(PARK_SLACK_MS)
            && lane
                .parked_until
                .compare_exchange(written, until_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.record(
                Update::EndpointParked {
                    endpoint: lane.endpoint.clone(),
                    until_ms,
                },
                Load::default(),
            );
        }
    }

    /// `lane`'s circuit closed: its actions are no longer parked.
    pub(super) fn unpark_endpoint(&self, lane: &Lane) {
        if lane.parked_until.swap(0, Ordering::AcqRel) != 0 {
            self.record(
                Update::EndpointParked {
                    endpoint: lane.endpoint.clone(),
                    until_ms: 0,
                },
                Load::default(),
            );
        }
    }

    /// Lets go of `action` without an attempt or a write: it was claimed
    /// under a lease this instance has lost (another instance took it
    /// over, and has the action now). It stays waiting in the store.
    pub(super) fn let_go_lost(&self, lane: &Lane, action: &PendingAction) {
        let l = action.load();
        lane.let_go(l);
        self.release(l);
        if self.inner.metrics.claims_lost.inc() == 0 {
            tracing::warn!(endpoint = %lane.endpoint, action = action.id,
                "this instance lost its lease while it held actions: it lets them go \
                 undelivered (another instance took them over); counted in claims_lost_total");
        }
    }

    fn attempt(&self, endpoint: &str, outcome: &'static str) {
        self.inner
            .metrics
            .attempts
            .get_or_create(&AttemptLabel {
                endpoint: endpoint.to_string(),
                outcome,
            })
            .inc();
    }

    /// Keeps `action` in the store until its endpoint is enabled again;
    /// `gone` is the attempt answered `410 Gone`, if one was made.
    pub(super) fn hold(&self, action: PendingAction, gone: Option<GoneAttempt>) {
        self.hold_noted(action, gone, None);
    }

    /// [`hold`](Self::hold), with the record of the attempt answered `410
    /// Gone`.
    fn hold_noted(&self, action: PendingAction, gone: Option<GoneAttempt>, noted: Noted) {
        let l = action.load();
        self.lane(&action.endpoint).finish(l);
        self.record_with(
            Update::Held {
                id: action.id,
                gone,
            },
            l,
            noted,
        );
    }

    /// Runs one attempt of `action` and acts on the outcome; records the
    /// attempt when `[history]` is enabled (see `engine/attempt.rs`).
    pub(super) async fn deliver(&self, lane: &Arc<Lane>, action: PendingAction) {
        // The breaker is read before the call: a call admitted while it
        // read Open or HalfOpen is the probe.
        let mut trace = self
            .inner
            .history
            .start(|| self.inner.breakers.get_or_create(&lane.endpoint).state());
        // Parsed for this attempt only: held, an event costs its text.
        let result = match action.event.to_event() {
            Ok(event) => match trace.as_mut() {
                Some(t) => {
                    self.inner
                        .executor
                        .execute_recorded(&event, &action.action, &mut t.exchange)
                        .await
                }
                None => self.inner.executor.execute(&event, &action.action).await,
            },
            Err(e) => Err(breakwater::traits::Error::permanent(format!(
                "the stored event cannot be read as an event: {e}"
            ))),
        };
        // The lease it was claimed under was lost while it ran (a pause, an
        // outage): another instance may hold it now, so its outcome is not
        // this instance's to write.
        // (With the lease unconfirmed, the outcome is written anyway: the
        // store applies it only if the lease turns out to be still ours.)
        if self.inner.store.lease_confirmed()
            && action.claim_epoch != self.inner.store.claim_epoch()
        {
            self.let_go_lost(lane, &action);
            return;
        }
        let outcome = classify(result);
        let noted: Noted = trace
            .and_then(|t| t.finish(&action, &outcome))
            .map(|a| (action.id, a));
        self.act_on(lane, action, outcome, noted);
    }

    /// Acts on the `outcome` of an attempt of `action`; `noted` is its
    /// record, written with the outcome.
    fn act_on(&self, lane: &Arc<Lane>, mut action: PendingAction, outcome: Outcome, noted: Noted) {
        let label = Metrics::endpoint(&lane.endpoint);
        let m = &self.inner.metrics;
        match outcome {
            Outcome::Delivered { status } => {
                lane.finish(action.load());
                action.attempts += 1;
                self.attempt(&lane.endpoint, "success");
                self.record_with(
                    Update::Delivered {
                        id: action.id,
                        attempts: action.attempts,
                        status,
                    },
                    action.load(),
                    noted,
                );
                m.delivered.get_or_create(&label).inc();
                lane.stats.delivered.fetch_add(1, Ordering::Relaxed);
                let latency_ms = (unix_ms() - action.accepted_at_ms).max(0);
                m.delivery_latency.observe(latency_ms as f64 / 1000.0);
            }
            Outcome::CircuitOpen { retry_after } => {
                let wait = schedule::park_for(retry_after);
                let until_ms = unix_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                // Counted on the first park only (`deferred` counts
                // actions). Written by endpoint, once an opening: the store
                // then shows every waiting action of the endpoint parked,
                // however many there are.
                if !action.parked {
                    m.deferred.get_or_create(&label).inc();
                    lane.stats.deferred.fetch_add(1, Ordering::Relaxed);
                    action.parked = true;
                }
                self.park_endpoint(lane, until_ms);
                if self.forced_open(&lane.endpoint) {
                    self.wait_for_release(lane, action);
                } else {
                    self.later(action, wait);
                }
            }
            Outcome::Gone { message } => {
                self.attempt(&lane.endpoint, "gone");
                let newly = {
                    let mut d = lane.disabled.lock().unwrap_or_else(|e| e.into_inner());
                    let newly = d.is_none();
                    if newly {
                        *d = Some(message.clone());
                    }
                    newly
                };
                if newly {
                    tracing::warn!(
                        endpoint = %lane.endpoint,
                        reason = %message,
                        "endpoint answered 410 Gone: disabled, its actions are held until an admin enables it"
                    );
                    m.endpoint_disabled.get_or_create(&label).set(1);
                    self.record(
                        Update::EndpointDisabled {
                            endpoint: lane.endpoint.clone(),
                            disabled: true,
                            reason: Some(message.clone()),
                        },
                        Load::default(),
                    );
                }
                action.attempts += 1;
                let gone = GoneAttempt {
                    attempts: action.attempts,
                    error: message,
                };
                self.hold_noted(action, Some(gone), noted);
            }
            Outcome::Permanent { message, status } => {
                action.attempts += 1;
                self.attempt(&lane.endpoint, "permanent");
                self.dead_letter(lane, action, message, status, noted);
            }
            Outcome::Transient {
                message,
                status,
                retry_after,
                timeout,
            } => {
                action.attempts += 1;
                self.attempt(
                    &lane.endpoint,
                    if timeout { "timeout" } else { "transient" },
                );
                let retry = self.settings().retry;
                match schedule::after_failure(
                    &retry,
                    action.attempts,
                    rand::random::<f64>(),
                    retry_after,
                ) {
                    AfterFailure::GiveUp => {
                        self.dead_letter(lane, action, message, status, noted);
                    }
                    AfterFailure::RetryIn(wait) => {
                        let not_before_ms =
                            unix_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                        self.record_with(
                            Update::Retry {
                                id: action.id,
                                attempts: action.attempts,
                                not_before_ms,
                                error: message,
                                status,
                            },
                            Load::default(),
                            noted,
                        );
                        m.retried.get_or_create(&label).inc();
                        lane.stats.retried.fetch_add(1, Ordering::Relaxed);
                        action.not_before_ms = None;
                        action.parked = false;
                        self.later(action, wait);
                    }
                }
            }
        }
    }

    fn dead_letter(
        &self,
        lane: &Arc<Lane>,
        action: PendingAction,
        error: String,
        status: Option<u16>,
        noted: Noted,
    ) {
        let l = action.load();
        lane.finish(l);
        tracing::info!(endpoint = %lane.endpoint, action = action.id, %error, "dead-lettered");
        self.record_with(
            Update::DeadLetter {
                id: action.id,
                attempts: action.attempts,
                error,
                status,
            },
            l,
            noted,
        );
        self.inner
            .metrics
            .dead_lettered
            .get_or_create(&Metrics::endpoint(&lane.endpoint))
            .inc();
        lane.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_error_kinds() {
        let ok = ActionResult {
            action_type: "webhook".into(),
            success: true,
            message: "ok".into(),
            duration_ms: 1,
            status_code: Some(200),
        };
        assert_eq!(
            classify(Ok(ok.clone())),
            Outcome::Delivered { status: Some(200) }
        );
        assert!(matches!(
            classify(Ok(ActionResult {
                success: false,
                ..ok
            })),
            Outcome::Transient { .. }
        ));
        assert!(matches!(
            classify(Err(Error::from_status(503, "x", None))),
            Outcome::Transient {
                status: Some(503),
                ..
            }
        ));
        assert!(matches!(
            classify(Err(Error::from_status(400, "x", None))),
            Outcome::Permanent {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            classify(Err(Error::from_status(410, "x", None))),
            Outcome::Gone { .. }
        ));
        assert!(matches!(
            classify(Err(Error::Timeout(Duration::from_secs(1)))),
            Outcome::Transient { timeout: true, .. }
        ));
        assert_eq!(
            classify(Err(Error::CircuitOpen {
                endpoint: "e".into(),
                retry_after: Some(Duration::from_secs(2))
            })),
            Outcome::CircuitOpen {
                retry_after: Some(Duration::from_secs(2))
            }
        );
    }
}
