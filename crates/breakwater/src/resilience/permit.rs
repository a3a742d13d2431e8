//! Permits: the right to run one call, and the duty to report its outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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

/// What both kinds of permit (and the future of `call`) hold besides the
/// breaker. The ticket's fields are kept flat, next to the flags, so that a
/// claim is two words.
#[derive(Debug)]
pub(super) struct Claim {
    /// When the call started (microseconds since the breaker's epoch), if
    /// calls are timed for the slow-call rule or this one has a time limit;
    /// `UNTIMED` if neither. A plain word keeps the permit small.
    started: u64,
    generation: u32,
    probe: bool,
    /// Whether `started` is for the slow-call rule.
    slow_timed: bool,
    armed: bool,
}

impl Claim {
    /// A claim that holds nothing (not armed): what the future of `call`
    /// holds before it is admitted.
    pub(super) const fn unarmed() -> Self {
        Self {
            started: UNTIMED,
            generation: 0,
            probe: false,
            slow_timed: false,
            armed: false,
        }
    }

    #[inline]
    pub(super) fn new(shared: &Shared, ticket: Ticket) -> Self {
        let slow_timed = shared.core.times_calls();
        Self {
            started: if slow_timed {
                Self::start(shared)
            } else {
                UNTIMED
            },
            generation: ticket.generation,
            probe: ticket.probe,
            slow_timed,
            armed: true,
        }
    }

    /// The clock read of a timed call, out of line so that the untimed
    /// path stays small.
    #[inline(never)]
    fn start(shared: &Shared) -> u64 {
        shared.now_us()
    }

    /// Arms an unarmed claim for a call run by the future of `call`, in
    /// place; returns the deadline of its time limit, if it has one (`None`
    /// also when the limit is too far to be represented: such a call is not
    /// limited).
    #[inline]
    pub(super) fn arm(&mut self, shared: &Shared, ticket: Ticket) -> Option<Instant> {
        self.generation = ticket.generation;
        self.probe = ticket.probe;
        self.armed = true;
        if ticket.probe || shared.core.limits_calls() || shared.core.times_calls() {
            return self.arm_timed(shared, ticket);
        }
        None
    }

    /// [`arm`](Self::arm) of a call that is timed or may have a time
    /// limit: one clock read serves the limit and the slow-call rule.
    #[inline(never)]
    fn arm_timed(&mut self, shared: &Shared, ticket: Ticket) -> Option<Instant> {
        self.slow_timed = shared.core.times_calls();
        let limit = shared.core.time_limit_us(ticket);
        let now = (self.slow_timed || limit.is_some()).then(Instant::now);
        self.started = now.map_or(UNTIMED, |now| shared.us_of(now));
        // As `tokio::time::timeout` computes it.
        limit
            .zip(now)
            .and_then(|(limit, now)| now.checked_add(Duration::from_micros(limit)))
    }

    /// The time limit of a call whose timer was made by
    /// the call future to end at `deadline` (the one [`arm`](Self::arm) returned).
    pub(super) fn limit_of(&self, shared: &Shared, deadline: Instant) -> Duration {
        Duration::from_micros(shared.us_of(deadline).saturating_sub(self.started))
    }

    #[inline]
    pub(super) fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation,
            probe: self.probe,
        }
    }

    fn time_limit(&self, shared: &Shared) -> Option<Duration> {
        shared
            .core
            .time_limit_us(self.ticket())
            .map(Duration::from_micros)
    }

    // Always: the success path is a few instructions, and a call to it
    // costs more than they do.
    #[inline(always)]
    pub(super) fn record(&mut self, shared: &Shared, verdict: Verdict) {
        self.armed = false;
        if self.slow_timed {
            return self.finish(shared, verdict);
        }
        match verdict {
            // The hot path: no timing, nothing but the success to record.
            Verdict::Success => {
                shared
                    .core
                    .complete_success(self.ticket(), &mut shared.lazy_now(), &mut |c| {
                        shared.publish(c)
                    })
            }
            // Straight to the core: no timing to look at.
            Verdict::Failure => shared.core.complete_slow(
                self.ticket(),
                FAILURE,
                &mut shared.lazy_now(),
                &mut |c| shared.publish(c),
            ),
            Verdict::Ignore => shared.core.release(self.ticket(), false),
        }
    }

    #[inline(never)]
    fn finish(&self, shared: &Shared, verdict: Verdict) {
        let outcome = match verdict {
            Verdict::Success => SUCCESS,
            Verdict::Failure => FAILURE,
            Verdict::Ignore => return shared.core.release(self.ticket(), false),
        };
        let mut now = shared.lazy_now();
        let slow = self.slow_timed && {
            let elapsed = now.get().saturating_sub(self.started);
            elapsed > shared.core.slow_us()
        };
        let outcome = if slow { outcome | SLOW } else { outcome };
        shared
            .core
            .complete(self.ticket(), outcome, &mut now, &mut |c| shared.publish(c));
    }

    /// Whether the claim holds a call whose outcome is not recorded yet.
    #[inline]
    pub(super) fn is_armed(&self) -> bool {
        self.armed
    }

    /// What dropping an armed claim means: a failure if the thread panics
    /// (the call panicked; the panic goes on), a cancellation if not.
    /// Disarms the claim.
    #[inline]
    pub(super) fn on_drop(&mut self, shared: &Shared) {
        if self.armed {
            self.drop_armed(shared);
        }
    }

    #[inline(never)]
    fn drop_armed(&mut self, shared: &Shared) {
        self.armed = false;
        if std::thread::panicking() {
            // The call panicked: that is a failure. The panic goes on.
            self.finish(shared, Verdict::Failure);
        } else {
            // The call was cancelled: it says nothing about the service.
            shared.core.release(self.ticket(), true);
        }
    }
}

macro_rules! permit_methods {
    ($done:path) => {
        /// Whether this permit is one of a HalfOpen breaker's probes.
        pub fn is_probe(&self) -> bool {
            self.claim.probe
        }

        /// The longest the call may run (`call_timeout_ms`, or for a probe
        /// `probe_timeout_ms` / the length of the opening that just ended).
        pub fn time_limit(&self) -> Option<Duration> {
            self.claim.time_limit(&self.shared)
        }

        /// The call succeeded.
        #[inline(always)]
        pub fn success(self) {
            self.record(Verdict::Success);
        }

        /// The call failed.
        #[inline(always)]
        pub fn failure(self) {
            self.record(Verdict::Failure);
        }

        /// The call's outcome says nothing about the service: it is not
        /// counted either way (its probe slot, if any, is freed).
        pub fn ignore(self) {
            self.record(Verdict::Ignore);
        }

        /// Records `verdict`.
        // Always inline, so that the permit's fields stay in registers: a
        // permit written to memory field by field and read back by an out
        // of line call costs more than the whole success path.
        #[inline(always)]
        pub fn record(mut self, verdict: Verdict) {
            self.claim.record(&self.shared, verdict);
            $done(self);
        }
    };
}

impl<'a> Permit<'a> {
    #[inline]
    pub(super) fn new(shared: &'a Shared, ticket: Ticket) -> Self {
        Self {
            claim: Claim::new(shared, ticket),
            shared,
        }
    }

    // Recorded, the permit holds nothing to release and no handle to drop:
    // its `drop` is skipped.
    permit_methods!(std::mem::forget);
}

impl OwnedPermit {
    pub(super) fn new(shared: Arc<Shared>, ticket: Ticket) -> Self {
        Self {
            claim: Claim::new(&shared, ticket),
            shared,
        }
    }

    // Dropped as usual, to release its handle to the breaker.
    permit_methods!(std::mem::drop);
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
