//! Permits: the right to run one call, and the duty to report its outcome.

use std::sync::Arc;
use std::time::Duration;

use super::core::Ticket;
use super::window::{FAILURE, SLOW, SUCCESS};
use super::Shared;

/// `Claim::started` of a call that is not timed.
const UNTIMED: u64 = u64::MAX;

/// How a finished call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The call succeeded.
    Success,
    /// The call failed: it counts towards opening the breaker.
    Failure,
    /// The call neither succeeded nor failed in a way that says anything
    /// about the service (e.g. a request rejected for its own bad input).
    Ignore,
}

impl Verdict {
    /// The default classification: every `Err` is a failure.
    pub fn of<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            Self::Success
        } else {
            Self::Failure
        }
    }
}

/// Admission to run one call through a breaker, from
/// [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire).
///
/// Report the outcome with [`success`](Self::success),
/// [`failure`](Self::failure) or [`ignore`](Self::ignore). Dropping a permit
/// records nothing and frees its probe slot, which is what cancellation of a
/// call does; dropping it while the thread panics counts as a failure.
#[must_use = "a permit that is dropped records nothing; call success() or failure()"]
#[derive(Debug)]
pub struct Permit<'a> {
    shared: &'a Shared,
    claim: Claim,
}

/// A [`Permit`] that owns a handle to its breaker, so it can live in a
/// `'static` future (a tower service's response future, a spawned task).
/// From [`CircuitBreaker::try_acquire_owned`](super::CircuitBreaker::try_acquire_owned).
#[must_use = "a permit that is dropped records nothing; call success() or failure()"]
#[derive(Debug)]
pub struct OwnedPermit {
    shared: Arc<Shared>,
    claim: Claim,
}

/// What both kinds of permit hold besides the breaker.
#[derive(Debug)]
struct Claim {
    ticket: Ticket,
    /// When the call started (microseconds since the breaker's epoch), if
    /// calls are timed; `UNTIMED` if not. A plain word keeps the permit small.
    started: u64,
    armed: bool,
}

impl Claim {
    #[inline]
    fn new(shared: &Shared, ticket: Ticket) -> Self {
        Self {
            ticket,
            started: if shared.core.times_calls() {
                shared.now_us()
            } else {
                UNTIMED
            },
            armed: true,
        }
    }

    fn time_limit(&self, shared: &Shared) -> Option<Duration> {
        shared
            .core
            .time_limit_us(self.ticket)
            .map(Duration::from_micros)
    }

    #[inline]
    fn record(&mut self, shared: &Shared, verdict: Verdict) {
        self.armed = false;
        if verdict == Verdict::Success && self.started == UNTIMED {
            // The hot path: no timing, nothing but the success to record.
            shared
                .core
                .complete_success(self.ticket, &mut shared.lazy_now(), &mut |c| {
                    shared.publish(c)
                });
        } else {
            self.finish(shared, verdict);
        }
    }

    #[inline(never)]
    fn finish(&self, shared: &Shared, verdict: Verdict) {
        let outcome = match verdict {
            Verdict::Success => SUCCESS,
            Verdict::Failure => FAILURE,
            Verdict::Ignore => return shared.core.release(self.ticket, false),
        };
        let mut now = shared.lazy_now();
        let slow = match self.started {
            UNTIMED => false,
            started => {
                let elapsed = now.get().saturating_sub(started);
                elapsed > shared.core.slow_us()
            }
        };
        let outcome = if slow { outcome | SLOW } else { outcome };
        shared
            .core
            .complete(self.ticket, outcome, &mut now, &mut |c| shared.publish(c));
    }

    fn on_drop(&mut self, shared: &Shared) {
        if !self.armed {
            return;
        }
        if std::thread::panicking() {
            // The call panicked: that is a failure. The panic goes on.
            self.finish(shared, Verdict::Failure);
        } else {
            // The call was cancelled: it says nothing about the service.
            shared.core.release(self.ticket, true);
        }
    }
}

macro_rules! permit_methods {
    () => {
        /// Whether this permit is one of a HalfOpen breaker's probes.
        pub fn is_probe(&self) -> bool {
            self.claim.ticket.probe
        }

        /// The longest the call may run (`call_timeout_ms`, or for a probe
        /// `probe_timeout_ms` / the length of the opening that just ended).
        pub fn time_limit(&self) -> Option<Duration> {
            self.claim.time_limit(&self.shared)
        }

        /// The call succeeded.
        #[inline]
        pub fn success(self) {
            self.record(Verdict::Success);
        }

        /// The call failed.
        #[inline]
        pub fn failure(self) {
            self.record(Verdict::Failure);
        }

        /// The call's outcome says nothing about the service: it is not
        /// counted either way (its probe slot, if any, is freed).
        pub fn ignore(self) {
            self.record(Verdict::Ignore);
        }

        /// Records `verdict`.
        #[inline]
        pub fn record(mut self, verdict: Verdict) {
            self.claim.record(&self.shared, verdict);
        }
    };
}

impl<'a> Permit<'a> {
    pub(super) fn new(shared: &'a Shared, ticket: Ticket) -> Self {
        Self {
            claim: Claim::new(shared, ticket),
            shared,
        }
    }

    permit_methods!();
}

impl OwnedPermit {
    pub(super) fn new(shared: Arc<Shared>, ticket: Ticket) -> Self {
        Self {
            claim: Claim::new(&shared, ticket),
            shared,
        }
    }

    permit_methods!();
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.claim.on_drop(self.shared);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.claim.on_drop(&self.shared);
    }
}
