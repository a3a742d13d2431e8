//! Permits: the right to run one call, and the duty to report its outcome.

use std::time::Duration;

use tokio::time::Instant;

use super::core::Ticket;
use super::window::{FAILURE, SLOW, SUCCESS};
use super::Shared;

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
    ticket: Ticket,
    started: Option<Instant>,
    armed: bool,
}

impl<'a> Permit<'a> {
    pub(super) fn new(shared: &'a Shared, ticket: Ticket) -> Self {
        let started = shared.core.times_calls().then(Instant::now);
        Self {
            shared,
            ticket,
            started,
            armed: true,
        }
    }

    /// Whether this permit is one of a HalfOpen breaker's probes.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// The longest the call may run (`call_timeout_ms`, or for a probe
    /// `probe_timeout_ms` / the length of the opening that just ended).
    pub fn time_limit(&self) -> Option<Duration> {
        self.shared
            .core
            .time_limit_us(self.ticket)
            .map(Duration::from_micros)
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

    /// The call's outcome says nothing about the service: it is not counted
    /// either way (its probe slot, if any, is freed).
    pub fn ignore(self) {
        self.record(Verdict::Ignore);
    }

    /// Records `verdict`.
    #[inline]
    pub fn record(mut self, verdict: Verdict) {
        self.armed = false;
        self.finish(verdict);
    }

    fn finish(&self, verdict: Verdict) {
        let outcome = match verdict {
            Verdict::Success => SUCCESS,
            Verdict::Failure => FAILURE,
            Verdict::Ignore => return self.shared.core.release(self.ticket, false),
        };
        let shared = self.shared;
        let mut now = shared.lazy_now();
        let slow = match self.started {
            Some(started) => {
                let elapsed = now.get().saturating_sub(shared.us_of(started));
                elapsed > shared.core.slow_us()
            }
            None => false,
        };
        let outcome = if slow { outcome | SLOW } else { outcome };
        shared
            .core
            .complete(self.ticket, outcome, &mut now, &mut |c| shared.publish(c));
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if std::thread::panicking() {
            // The call panicked: that is a failure. The panic goes on.
            self.finish(Verdict::Failure);
        } else {
            // The call was cancelled: it says nothing about the service.
            self.shared.core.release(self.ticket, true);
        }
    }
}
