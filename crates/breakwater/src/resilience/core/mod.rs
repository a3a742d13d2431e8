//! The decision core: every atomic of a breaker and every rule that changes
//! them, with no clock, no runtime and no I/O.
//!
//! Time comes in as a lazily evaluated closure returning microseconds since
//! the breaker's epoch, so the hot paths that need no time never read a
//! clock, and the loom models drive the core with a fake one. Transitions are
//! reported to a sink closure; the [`CircuitBreaker`](super::CircuitBreaker)
//! around the core turns them into events, logs and timers.
//!
//! Outcomes in a count window take consecutive window positions from one
//! shared cursor, except the successes that find the window calm (full of
//! plain successes, nothing changing it): those only count themselves in
//! their thread's stripe, so the cursor's cache line stays put while a
//! healthy breaker is shared by threads. Outcomes recorded are the cursor,
//! the stripes and the outcomes recorded outside the window, together.
//!
//! `operator.rs` holds what operators do to a core (force, reset,
//! reconfigure, restore); `transition.rs` the state changes themselves.

mod operator;
mod transition;

use std::sync::OnceLock;

use super::backoff::{Backoff, Jitter};
use super::counter_clock;
use super::state::{CircuitState, Word};
use super::window::{CountWindow, Tally, TimeWindow, FAILURE, SLOW, SUCCESS};
use crate::config::CircuitBreakerConfig;
use crate::sync::{AtomicU64, CachePadded, Ordering};

/// Bits of the deadline word that hold the opening's generation (low bits).
const TAG_BITS: u32 = 12;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// The rest holds the deadline in microseconds (52 bits: 142 years).
const US_MASK: u64 = u64::MAX >> TAG_BITS;
fn tag(generation: u32) -> u64 {
    generation as u64 & TAG_MASK
}

/// A clock read at most once, and only if asked.
pub(crate) struct LazyNow<F> {
    read: F,
    at: Option<u64>,
}

impl<F: FnMut() -> u64> LazyNow<F> {
    pub(crate) fn new(read: F) -> Self {
        Self { read, at: None }
    }

    /// Whether the clock was read already.
    #[inline(always)]
    pub(crate) fn is_read(&self) -> bool {
        self.at.is_some()
    }

    pub(crate) fn get(&mut self) -> u64 {
        match self.at {
            Some(t) => t,
            None => {
                let t = (self.read)();
                self.at = Some(t);
                t
            }
        }
    }
}

/// A transition that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) from: CircuitState,
    pub(crate) to: CircuitState,
    pub(crate) at_us: u64,
    pub(crate) generation: u32,
    /// For an opening with a deadline: when it ends.
    pub(crate) open_until_us: Option<u64>,
}

/// What admission handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) generation: u32,
    pub(crate) probe: bool,
}

/// What a refused admission says, packed in one word so that it travels in
/// a register (a wider value returned through memory stalls the caller's
/// read of it): the wait in microseconds, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(u64);

impl Refusal {
    const NO_WAIT: u64 = u64::MAX;

    #[inline]
    fn wait(us: u64) -> Self {
        Self(us.min(Self::NO_WAIT - 1))
    }

    #[inline]
    fn no_wait() -> Self {
        Self(Self::NO_WAIT)
    }

    /// Time left until the breaker lets probes through, when known.
    #[inline]
    pub(crate) fn retry_after_us(self) -> Option<u64> {
        (self.0 != Self::NO_WAIT).then_some(self.0)
    }
}

/// Configuration values read on hot paths, each in its own atomic so that
/// `update_config` can change them while calls run.
#[derive(Debug)]
struct Hot {
    threshold: AtomicU64,
    slow_threshold: AtomicU64,
    min_calls: AtomicU64,
    half_open_max: AtomicU64,
    window_us: AtomicU64,
    slow_us: AtomicU64,
    call_timeout_us: AtomicU64,
    probe_timeout_us: AtomicU64,
    base_us: AtomicU64,
    max_us: AtomicU64,
    multiplier: AtomicU64,
    jitter: AtomicU64,
}

fn ms_to_us(ms: u64) -> u64 {
    ms.saturating_mul(1000)
}

/// Counters that only ever grow, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) failures: AtomicU64,
    pub(crate) slow: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) probes: AtomicU64,
    /// Outcomes recorded outside the window (probes, stale outcomes).
    pub(crate) unwindowed: AtomicU64,
    pub(crate) transitions: [AtomicU64; 9],
    pub(crate) last_change_us: AtomicU64,
}

/// The counters written on hot paths, on a cache line of their own so
/// that writing them does not evict the state word from other cores.
#[derive(Debug, Default)]
pub(crate) struct Busy {
    /// How many outcomes took a window position; the next one's position.
    pub(crate) cursor: AtomicU64,
    /// Calls refused (written only while Open or HalfOpen).
    pub(crate) blocked: AtomicU64,
    /// Successes of threads of the first stripe that left a calm window
    /// alone (see [`Core::stripe`]).
    stripe: AtomicU64,
}

/// The second stripe, on a cache line of its own, with values that no
/// Closed call in a count window reads (moved here from the rest of the
/// core, so that the line costs no memory).
#[derive(Debug)]
struct Lane {
    /// Successes of threads of the second stripe that left a calm window
    /// alone (see [`Core::stripe`]).
    stripe: AtomicU64,
    /// Allocated the first time a time window is configured.
    time: OnceLock<Box<TimeWindow>>,
    /// Tag of the opening's generation | its deadline in microseconds.
    deadline: AtomicU64,
    /// Length of the latest opening, in microseconds.
    open_for_us: AtomicU64,
}

#[cfg(test)]
thread_local! {
    /// Rejections this thread made by the counter alone, for the tests that
    /// check the counter is used (the clock would give the same answers).
    pub(crate) static COUNTER_REFUSALS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The state word and, on the same cache line, what an Open rejection
/// reads with it: where the processor's counter says the opening's
/// deadline certainly has not come yet (see `counter_clock.rs`). Written
/// once an opening, so the line stays shared by every core that reads it.
#[derive(Debug)]
struct Head {
    /// The state word (see `state.rs`). Read by every call.
    state: AtomicU64,
    /// Tag of an opening's generation | the counter unit before which its
    /// deadline certainly has not come; unit 0: the counter is not used for
    /// this opening.
    certain: AtomicU64,
    /// Tag | the counter unit of the deadline at the measured rate, for the
    /// wait a rejection advises.
    nominal: AtomicU64,
}

/// The atomics of one breaker.
#[derive(Debug)]
pub(crate) struct Core {
    /// The state word, and what an Open rejection reads beside it.
    word: CachePadded<Head>,
    /// The window cursor, the refusals and the first stripe.
    busy: CachePadded<Busy>,
    /// The second stripe, and values a Closed call in a count window never
    /// reads.
    lane: CachePadded<Lane>,
    hot: Hot,
    count: CountWindow,
    pub(crate) totals: Totals,
    jitter: Jitter,
}

impl Core {
    pub(crate) fn new(config: &CircuitBreakerConfig, seed: u64) -> Self {
        let core = Self {
            word: CachePadded(Head {
                state: AtomicU64::new(Word::closed(!config.enabled).0),
                certain: AtomicU64::new(0),
                nominal: AtomicU64::new(0),
            }),
            busy: CachePadded(Busy::default()),
            lane: CachePadded(Lane {
                stripe: AtomicU64::new(0),
                time: OnceLock::new(),
                deadline: AtomicU64::new(0),
                open_for_us: AtomicU64::new(0),
            }),
            hot: Hot {
                threshold: AtomicU64::new(0),
                slow_threshold: AtomicU64::new(0),
                min_calls: AtomicU64::new(0),
                half_open_max: AtomicU64::new(0),
                window_us: AtomicU64::new(0),
                slow_us: AtomicU64::new(0),
                call_timeout_us: AtomicU64::new(0),
                probe_timeout_us: AtomicU64::new(0),
                base_us: AtomicU64::new(0),
                max_us: AtomicU64::new(0),
                multiplier: AtomicU64::new(0),
                jitter: AtomicU64::new(0),
            },
            count: CountWindow::new(config.sample_size),
            totals: Totals::default(),
            jitter: Jitter::new(seed),
        };
        core.configure(config);
        core
    }

    fn backoff(&self) -> Backoff {
        let h = &self.hot;
        Backoff {
            base_us: h.base_us.load(Ordering::Relaxed),
            max_us: h.max_us.load(Ordering::Relaxed),
            multiplier: f64::from_bits(h.multiplier.load(Ordering::Relaxed)),
            jitter: f64::from_bits(h.jitter.load(Ordering::Relaxed)),
        }
    }

    /// The current word. Acquire: pairs with the Release of every
    /// transition, so what a transition published (deadline, cleared
    /// window) is visible to whoever sees its word.
    #[inline]
    pub(crate) fn word(&self) -> Word {
        Word(self.word.state.load(Ordering::Acquire))
    }

    /// Replaces `from` by `to` if the word is still `from`.
    fn swap_word(&self, from: Word, to: Word) -> Result<Word, Word> {
        // AcqRel on success: release what was prepared before, acquire what
        // the previous transition published. Acquire on failure: we re-read.
        self.word
            .state
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| to)
            .map_err(Word)
    }

    /// Calls refused since creation.
    pub(crate) fn blocked(&self) -> u64 {
        self.busy.blocked.load(Ordering::Relaxed)
    }

    /// The calling thread's stripe: one of two counters, each on a cache
    /// line of its own, for the successes that leave a calm window alone.
    /// Threads take stripes in turn, so two threads never share one; more
    /// threads do, and still pass fewer lines around than one counter.
    #[inline(always)]
    fn stripe(&self) -> &AtomicU64 {
        if crate::sync::thread_stripe() == 0 {
            &self.busy.stripe
        } else {
            &self.lane.stripe
        }
    }

    /// Successes that left a calm window alone, every stripe together.
    fn striped(&self) -> u64 {
        self.busy.stripe.load(Ordering::Relaxed) + self.lane.stripe.load(Ordering::Relaxed)
    }

    /// Whether calls are being timed for the slow-call rule.
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.hot.slow_us.load(Ordering::Relaxed) != 0
    }

    /// Whether Closed calls have a time limit (`call_timeout_ms`).
    #[inline]
    pub(crate) fn limits_calls(&self) -> bool {
        self.hot.call_timeout_us.load(Ordering::Relaxed) != 0
    }

    /// Whether outcomes need the time (slow calls or a time window).
    #[inline]
    fn needs_time(&self) -> bool {
        self.hot.window_us.load(Ordering::Relaxed) != 0
    }

    /// Calls slower than this many microseconds are slow (0: off).
    pub(crate) fn slow_us(&self) -> u64 {
        self.hot.slow_us.load(Ordering::Relaxed)
    }

    /// The longest a call admitted by `ticket` may run, in microseconds.
    #[inline]
    pub(crate) fn time_limit_us(&self, ticket: Ticket) -> Option<u64> {
        let call = self.hot.call_timeout_us.load(Ordering::Relaxed);
        let limit = if ticket.probe {
            let probe = match self.hot.probe_timeout_us.load(Ordering::Relaxed) {
                0 => self.lane.open_for_us.load(Ordering::Relaxed),
                p => p,
            };
            match (call, probe) {
                (0, p) => p,
                (c, 0) => c,
                (c, p) => c.min(p),
            }
        } else {
            call
        };
        (limit != 0).then_some(limit)
    }

    /// Admits a call or refuses it.
    #[inline]
    pub(crate) fn acquire(
        &self,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Ticket, Refusal> {
        let w = self.word();
        if w.admits_freely() {
            // Closed: one load, nothing written.
            return Ok(Ticket {
                generation: w.generation(),
                probe: false,
            });
        }
        self.acquire_open(w, now, sink)
    }

    /// Admission when the word is not Closed: the rejection of an Open
    /// breaker that the processor's counter shows certainly before its
    /// deadline (the common case) in a few instructions, in a function of
    /// its own so that it saves few registers; everything else in
    /// [`acquire_open_clock`](Self::acquire_open_clock).
    #[inline(never)]
    fn acquire_open(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Ticket, Refusal> {
        if w.state() == CircuitState::Open && !w.is_forced_open() {
            if let Some(wait) = self.certainly_open(w) {
                // Relaxed: a count.
                self.busy.blocked.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::wait(wait));
            }
        }
        self.acquire_open_clock(w, now, sink)
    }

    /// The rest of [`acquire_open`](Self::acquire_open): an Open rejection
    /// that reads the clock (and may bound the opening by the counter for
    /// the rejections after it); everything else in
    /// [`acquire_slow`](Self::acquire_slow).
    #[inline(never)]
    fn acquire_open_clock(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Ticket, Refusal> {
        if w.state() == CircuitState::Open && !w.is_forced_open() {
            let deadline = self.lane.deadline.load(Ordering::Acquire);
            if deadline & TAG_MASK == tag(w.generation()) {
                // The clock decides, as in `acquire_slow`.
                if let Some(wait) = self.wait_by_clock(w, deadline >> TAG_BITS, now) {
                    // Relaxed: a count.
                    self.busy.blocked.fetch_add(1, Ordering::Relaxed);
                    return Err(Refusal::wait(wait));
                }
            }
        }
        self.acquire_slow(w, now, sink)
    }

    /// The wait to advise if the processor's counter shows that the
    /// opening `w` (Open, not forced) is certainly before its deadline;
    /// `None` if it cannot tell, and the clock must decide.
    #[inline(always)]
    fn certainly_open(&self, w: Word) -> Option<u64> {
        let tagged = tag(w.generation());
        // Acquire: pairs with the Release in `follow_counter`, which stored
        // `nominal` first.
        let certain = self.word.certain.load(Ordering::Acquire);
        if certain & TAG_MASK != tagged {
            return None;
        }
        let counter = counter_clock::counter()?;
        let n = counter.units()?;
        // An opening that does without the counter has the bound 0, which
        // no reading is below.
        if n >= certain >> TAG_BITS {
            return None;
        }
        let nominal = self.word.nominal.load(Ordering::Relaxed);
        let wait = if nominal & TAG_MASK == tagged {
            counter.us_between(n, nominal >> TAG_BITS)
        } else {
            0
        };
        #[cfg(test)]
        COUNTER_REFUSALS.with(|c| c.set(c.get() + 1));
        // Never more than the opening lasts, never nothing (the clock
        // would have said at least a microsecond).
        Some(
            wait.min(self.lane.open_for_us.load(Ordering::Relaxed))
                .max(1),
        )
    }

    /// Whether the current opening has a bound from the counter.
    #[cfg(test)]
    pub(crate) fn follows_counter(&self) -> bool {
        let certain = self.word.certain.load(Ordering::Acquire);
        certain & TAG_MASK == tag(self.word().generation()) && certain >> TAG_BITS != 0
    }

    /// The time left until `until`, the deadline of the opening `w`, by
    /// the clock; `None` once it has come. If the opening has no bound from
    /// the counter yet, the counter is read just before the clock and the
    /// bound stored, for the rejections after this one.
    fn wait_by_clock(
        &self,
        w: Word,
        until: u64,
        now: &mut LazyNow<impl FnMut() -> u64>,
    ) -> Option<u64> {
        let before = self.unfollowed(w, now);
        let t = now.get();
        if t >= until {
            return None;
        }
        if let Some((counter, r)) = before {
            self.follow_counter(w, counter, r, until - t);
        }
        Some(until - t)
    }

    /// The counter and its reading, taken before the clock is read, when
    /// the opening `w` has no bound from the counter yet and one could be
    /// made: the counter is measured, and the clock not read already (the
    /// reading must come before it).
    #[inline(always)]
    fn unfollowed(
        &self,
        w: Word,
        now: &LazyNow<impl FnMut() -> u64>,
    ) -> Option<(&'static counter_clock::Counter, u64)> {
        let certain = self.word.certain.load(Ordering::Relaxed);
        if certain & TAG_MASK == tag(w.generation()) || now.is_read() {
            return None;
        }
        let counter = counter_clock::counter()?;
        Some((counter, counter.units()?))
    }

    /// Stores, for the opening `w`, the counter unit before which its
    /// deadline certainly has not come, from a counter reading `r` taken
    /// just before a clock read that found `left_us` microseconds left.
    /// Where tokio's clock may be paused (a current-thread runtime), or
    /// the deadline is too near, stores that this opening does without.
    #[cold]
    #[inline(never)]
    fn follow_counter(&self, w: Word, counter: &counter_clock::Counter, r: u64, left_us: u64) {
        const UNIT_BITS: u32 = 64 - TAG_BITS;
        let tagged = tag(w.generation());
        let bound = counter_clock::may_follow_counter()
            .then(|| {
                let certain = counter.certainly_before(r, left_us, UNIT_BITS)?;
                let nominal = counter.nominal(r, left_us, UNIT_BITS)?;
                Some((certain, nominal))
            })
            .flatten();
        match bound {
            Some((certain, nominal)) => {
                self.word
                    .nominal
                    .store((nominal << TAG_BITS) | tagged, Ordering::Relaxed);
                // Release: whoever sees this bound sees `nominal` too.
                self.word
                    .certain
                    .store((certain << TAG_BITS) | tagged, Ordering::Release);
            }
            None => self.word.certain.store(tagged, Ordering::Release),
        }
    }

    /// Admission in Open and HalfOpen, kept out of line so that the Closed
    /// path stays a few instructions.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &self,
        mut w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Ticket, Refusal> {
        loop {
            if w.admits_freely() {
                // Closed: one load, nothing written.
                return Ok(Ticket {
                    generation: w.generation(),
                    probe: false,
                });
            }
            match w.state() {
                CircuitState::Open => {
                    let deadline = self.lane.deadline.load(Ordering::Acquire);
                    if w.is_forced_open() || deadline & TAG_MASK != tag(w.generation()) {
                        // Forced, or the deadline of this opening is not
                        // yet published: no wait to advise.
                        self.busy.blocked.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal::no_wait());
                    }
                    let until = deadline >> TAG_BITS;
                    // The clock is read on every rejection: a cached
                    // reading could be older than the deadline (a late
                    // timer task, a blocked runtime) and refuse a call that
                    // should be a probe.
                    let t = now.get();
                    if t < until {
                        // Relaxed: a count.
                        self.busy.blocked.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal::wait(until - t));
                    }
                    w = match self.half_open(w, t, sink) {
                        Ok(w) | Err(w) => w,
                    };
                }
                CircuitState::HalfOpen => {
                    if w.in_flight() >= self.hot.half_open_max.load(Ordering::Relaxed) {
                        self.busy.blocked.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal::no_wait());
                    }
                    match self.swap_word(w, w.probe_started()) {
                        Ok(_) => {
                            self.totals.probes.fetch_add(1, Ordering::Relaxed);
                            return Ok(Ticket {
                                generation: w.generation(),
                                probe: true,
                            });
                        }
                        Err(cur) => w = cur,
                    }
                }
                CircuitState::Closed => unreachable!("a Closed word admits freely"),
            }
        }
    }

    /// Whether a call now would be refused, and with what, without taking
    /// anything or counting anything: `None` when it would be admitted.
    #[cfg(feature = "tower")]
    pub(crate) fn peek(&self, now: &mut LazyNow<impl FnMut() -> u64>) -> Option<Refusal> {
        let w = self.word();
        match w.state() {
            CircuitState::Closed => None,
            CircuitState::Open => {
                if w.is_forced_open() {
                    return Some(Refusal::no_wait());
                }
                if let Some(wait) = self.certainly_open(w) {
                    return Some(Refusal::wait(wait));
                }
                let deadline = self.lane.deadline.load(Ordering::Acquire);
                if deadline & TAG_MASK != tag(w.generation()) {
                    return Some(Refusal::no_wait());
                }
                self.wait_by_clock(w, deadline >> TAG_BITS, now)
                    .map(Refusal::wait)
            }
            CircuitState::HalfOpen => (w.in_flight()
                >= self.hot.half_open_max.load(Ordering::Relaxed))
            .then(Refusal::no_wait),
        }
    }

    /// Counts a refusal decided by [`peek`](Self::peek).
    #[cfg(feature = "tower")]
    pub(crate) fn count_refusal(&self) {
        // Relaxed: a count.
        self.busy.blocked.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the outcome of an admitted call: `outcome` is `SUCCESS` or
    /// `FAILURE`, with `SLOW` added for a slow call.
    pub(crate) fn complete(
        &self,
        ticket: Ticket,
        outcome: u8,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        if outcome == SUCCESS {
            return self.complete_success(ticket, now, sink);
        }
        self.complete_slow(ticket, outcome, now, sink);
    }

    /// Records a success (not slow). The common case, a Closed success in a
    /// count window, is one atomic add and a few loads, inline (always: in a
    /// large caller, such as a call's future, the inliner would otherwise
    /// leave it out of line).
    ///
    /// In a window full of successes (the steady state of a healthy
    /// service) the add is not even on the shared cursor: the success only
    /// counts itself in its thread's stripe, so threads completing calls at
    /// once do not pass one cache line back and forth.
    #[inline(always)]
    pub(crate) fn complete_success(
        &self,
        ticket: Ticket,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        let w = self.word();
        if ticket.probe || w.generation() != ticket.generation || self.needs_time() {
            return self.complete_slow(ticket, SUCCESS, now, sink);
        }
        if self.count.is_calm() {
            // Every slot holds a plain success and no change of the window
            // has begun: wherever this success landed, it would overwrite a
            // success, changing neither the window nor any verdict, and a
            // change that begins later (a failure, a clear) is ordered after
            // it. So it takes no position (with every slot alike, skipping
            // one only renumbers the outcomes after it) and only counts
            // itself. If its generation ended since the check above, it is
            // counted as a stale success taken back out of the window is.
            // Relaxed: a count.
            self.stripe().fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Relaxed: a count, and the window position this outcome takes.
        let pos = self.busy.cursor.fetch_add(1, Ordering::Relaxed);
        let done = self.count.record(pos, SUCCESS);
        if done.wrote && self.took_back(ticket, pos, SUCCESS) {
            return;
        }
        if done.rise && w.state() == CircuitState::Closed && w.is_automatic() {
            self.judge(w, now, sink);
        }
    }

    /// After writing an outcome into the count window: if the window may
    /// have been emptied between our generation check and our write (the
    /// breaker opened and closed again, or was reset), the outcome may sit
    /// in the fresh window of a newer generation: take it back out. Returns
    /// whether it did.
    ///
    /// Our write is SeqCst; a clear swaps every slot (SeqCst) after the
    /// transition's compare-exchange of the word. If our write came after
    /// the clear's swap of our slot, it read from that swap, so the
    /// transition happened before this reload and the reload sees it.
    fn took_back(&self, ticket: Ticket, pos: u64, outcome: u8) -> bool {
        let w = self.word();
        if w.generation() == ticket.generation
            || (w.is_next_generation_of(ticket.generation) && w.state() == CircuitState::Open)
        {
            // Nothing happened, or only an opening: no window was cleared.
            return false;
        }
        self.count.undo(pos, outcome);
        true
    }

    /// Every outcome but a Closed success in a count window.
    #[inline(never)]
    pub(crate) fn complete_slow(
        &self,
        ticket: Ticket,
        outcome: u8,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        if outcome & FAILURE != 0 {
            self.totals.failures.fetch_add(1, Ordering::Relaxed);
        }
        if outcome & SLOW != 0 {
            self.totals.slow.fetch_add(1, Ordering::Relaxed);
        }
        let w = self.word();
        if ticket.probe || w.generation() != ticket.generation {
            // A probe's outcome moves the HalfOpen state, not the window; a
            // stale one (admitted under a state that is gone) says nothing
            // about now. Neither takes a window position, which would leave
            // a hole in the ring.
            self.totals.unwindowed.fetch_add(1, Ordering::Relaxed);
            if ticket.probe {
                self.complete_probe(ticket, outcome, now, sink);
            }
            return;
        }
        // Relaxed: a count, and the window position this outcome takes.
        let pos = self.busy.cursor.fetch_add(1, Ordering::Relaxed);
        let judge = if self.needs_time() {
            let t = now.get();
            let current = || self.word().generation() == ticket.generation;
            match self.lane.time.get() {
                // Stale: the window it was admitted to was emptied since.
                Some(time) => time.record(t, outcome, current),
                None => false,
            }
        } else {
            let done = self.count.record(pos, outcome);
            if done.wrote && self.took_back(ticket, pos, outcome) {
                return;
            }
            // An outcome that left the window as it was leaves the verdict
            // as it was too (a change of rules is judged when it happens).
            done.rise
        };
        if judge && w.state() == CircuitState::Closed && w.is_automatic() {
            self.judge(w, now, sink);
        }
    }

    fn complete_probe(
        &self,
        ticket: Ticket,
        outcome: u8,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        let mut w = self.word();
        while w.generation() == ticket.generation && w.state() == CircuitState::HalfOpen {
            let next = if outcome & (FAILURE | SLOW) != 0 {
                // A failed (or slow) probe: the service is still unwell.
                self.open(w, now, sink)
            } else {
                let ok = w.probe_succeeded();
                if ok.probes_ok() >= self.hot.half_open_max.load(Ordering::Relaxed) {
                    self.close(w, now, sink)
                } else {
                    self.swap_word(w, ok)
                }
            };
            match next {
                Ok(_) => return,
                Err(cur) => w = cur,
            }
        }
    }

    /// Releases a ticket without an outcome: the call was cancelled
    /// (`cancelled`) or its result is ignored by the classifier.
    pub(crate) fn release(&self, ticket: Ticket, cancelled: bool) {
        let counter = if cancelled {
            &self.totals.cancelled
        } else {
            &self.totals.ignored
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !ticket.probe {
            return;
        }
        let mut w = self.word();
        while w.generation() == ticket.generation && w.state() == CircuitState::HalfOpen {
            match self.swap_word(w, w.probe_released()) {
                Ok(_) => return,
                Err(cur) => w = cur,
            }
        }
    }

    /// The window's tallies.
    pub(crate) fn tally(&self, now: &mut LazyNow<impl FnMut() -> u64>) -> Tally {
        if self.needs_time() {
            self.lane
                .time
                .get()
                .map_or_else(Tally::default, |t| t.tally(now.get()))
        } else {
            self.count.tally()
        }
    }
}

#[cfg(test)]
#[cfg(not(breakwater_loom))]
mod tests {
    use super::*;

    fn no_sink(_: Change) {}

    /// A core that opens on one failure, for one second, without jitter.
    fn one_failure_trips() -> Core {
        let config = CircuitBreakerConfig {
            sample_size: 1,
            open_timeout_ms: 1_000,
            jitter_ratio: 0.0,
            ..Default::default()
        };
        Core::new(&config, 0)
    }

    /// Trips `core` at `t` µs; returns the opening's generation and deadline.
    fn trip(core: &Core, t: u64) -> (u32, u64) {
        let mut now = LazyNow::new(|| t);
        let mut opened = None;
        let ticket = core.acquire(&mut now, &mut no_sink).unwrap();
        core.complete(ticket, FAILURE, &mut now, &mut |c| opened = Some(c));
        let c = opened.expect("one failure opens");
        (c.generation, c.open_until_us.expect("a deadline"))
    }

    #[test]
    fn the_timer_of_an_opening_moves_it_to_half_open_only_at_its_deadline() {
        let core = one_failure_trips();
        let (generation, until) = trip(&core, 0);
        assert_eq!(until, 1_000_000);
        let mut changes = Vec::new();
        assert!(!core.expire(generation, until - 1, &mut |c| changes.push(c)));
        assert_eq!(core.word().state(), CircuitState::Open);
        assert!(changes.is_empty());
        assert!(core.expire(generation, until, &mut |c| changes.push(c)));
        assert_eq!(core.word().state(), CircuitState::HalfOpen);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].at_us, until);
    }

    #[test]
    fn the_timer_of_an_earlier_opening_leaves_a_newer_one_alone() {
        let core = one_failure_trips();
        let (first, _) = trip(&core, 0);
        core.reset(500_000, &mut no_sink);
        let (second, until) = trip(&core, 500_000);
        assert_ne!(first, second);
        // The first opening's timer fires at 1 s: its opening is over, so
        // it stops, and the second opening keeps its own deadline.
        let mut changes = Vec::new();
        assert!(core.expire(first, 1_000_000, &mut |c| changes.push(c)));
        assert!(changes.is_empty());
        assert_eq!(core.word().state(), CircuitState::Open);
        assert_eq!(core.open_deadline(core.word()), Some(until));
    }

    #[test]
    fn reconfiguring_with_the_same_length_leaves_the_count_window_as_it_was() {
        let config = CircuitBreakerConfig {
            sample_size: 4,
            failure_threshold: 1.0,
            ..Default::default()
        };
        let core = Core::new(&config, 0);
        let mut now = LazyNow::new(|| 0);
        for outcome in [SUCCESS, FAILURE, FAILURE, SUCCESS] {
            let ticket = core.acquire(&mut now, &mut no_sink).unwrap();
            core.complete(ticket, outcome, &mut now, &mut no_sink);
        }
        // The second outcome was taken back (as a stale one is): its slot
        // is a hole, the next one to be overwritten after the first.
        core.count.undo(1, FAILURE);
        assert_eq!(core.outcomes(), [SUCCESS, FAILURE, SUCCESS]);
        core.configure(&config);
        assert_eq!(core.outcomes(), [SUCCESS, FAILURE, SUCCESS]);
        // The next outcome replaces the oldest one, and the hole stays.
        let ticket = core.acquire(&mut now, &mut no_sink).unwrap();
        core.complete(ticket, SUCCESS, &mut now, &mut no_sink);
        assert_eq!(core.outcomes(), [FAILURE, SUCCESS, SUCCESS]);
        assert_eq!(core.count.tally().len, 3);
    }

    #[test]
    fn a_window_is_calm_only_while_full_of_plain_successes() {
        let core = four_outcomes_one_failure_trips();
        for _ in 0..3 {
            call(&core, 0, SUCCESS);
            assert!(!core.window_is_calm(), "not full yet");
        }
        call(&core, 0, SUCCESS);
        assert!(core.window_is_calm());
        // A calm window's successes take no position.
        let cursor = core.busy.cursor.load(Ordering::Relaxed);
        call(&core, 0, SUCCESS);
        assert_eq!(core.busy.cursor.load(Ordering::Relaxed), cursor);
        assert_eq!(core.recorded(), 5);
        // A slow success is not a plain one: it takes a position.
        call(&core, 0, SUCCESS | SLOW);
        assert!(!core.window_is_calm());
        assert_eq!(core.outcomes(), [SUCCESS, SUCCESS, SUCCESS, SUCCESS | SLOW]);
        // Calm again once it has left the window.
        for n in 1..=4 {
            call(&core, 0, SUCCESS);
            assert_eq!(core.window_is_calm(), n == 4, "after {n}");
        }
        assert_eq!(core.recorded(), 10);
        // A failure trips this breaker; a reset empties the window.
        call(&core, 0, FAILURE);
        assert!(!core.window_is_calm());
        core.reset(0, &mut no_sink);
        assert!(!core.window_is_calm());
        assert_eq!(core.recorded(), 11);
    }

    #[test]
    fn a_time_window_never_skips_the_count_window_path() {
        let mut config = CircuitBreakerConfig {
            sample_size: 2,
            ..Default::default()
        };
        let core = Core::new(&config, 0);
        call(&core, 0, SUCCESS);
        call(&core, 0, SUCCESS);
        assert!(core.window_is_calm());
        config.window_ms = Some(1_000);
        core.configure(&config);
        assert!(!core.window_is_calm(), "the count window was cleared");
        call(&core, 0, SUCCESS);
        call(&core, 0, SUCCESS);
        call(&core, 0, SUCCESS);
        assert_eq!(core.tally(&mut LazyNow::new(|| 0)).len, 3);
        assert_eq!(core.recorded(), 5);
    }

    /// The largest deadline the deadline word holds: 52 bits of
    /// microseconds (the 12 bits below hold the opening's tag).
    const LAST_US: u64 = (1 << 52) - 1;

    #[test]
    fn a_deadline_past_the_range_of_the_deadline_word_is_held_at_its_end() {
        // An opening that would end past the word's range ends at its last
        // microsecond instead of wrapping to a deadline long gone.
        let core = one_failure_trips();
        let t = LAST_US - 1_000;
        let (_, until) = trip(&core, t);
        assert_eq!(until, LAST_US);
        assert_eq!(core.open_deadline(core.word()), Some(LAST_US));
        let refused = core.acquire(&mut LazyNow::new(|| t), &mut no_sink);
        assert_eq!(refused.unwrap_err().retry_after_us(), Some(1_000));

        // The same for a restored opening (a snapshot may say anything).
        let restored = one_failure_trips();
        restored.install(
            CircuitState::Open,
            1,
            None,
            Some((u64::MAX, 1_000_000)),
            &[],
        );
        assert_eq!(restored.open_deadline(restored.word()), Some(LAST_US));
        let refused = restored.acquire(&mut LazyNow::new(|| 0), &mut no_sink);
        assert_eq!(refused.unwrap_err().retry_after_us(), Some(LAST_US));
    }

    #[test]
    fn a_call_racing_a_reopening_never_half_opens_at_the_previous_deadline() {
        let core = one_failure_trips();
        let (_, first_until) = trip(&core, 0);
        // Long after the first deadline, a probe fails: the breaker reopens.
        let t = first_until + 500_000;
        let probe = core.acquire(&mut LazyNow::new(|| t), &mut no_sink).unwrap();
        assert!(probe.probe);
        // The reopening reads the clock between its compare-exchange of the
        // word and the publication of its deadline: a call made there is a
        // call racing the reopening, which sees the new Open word next to
        // the first opening's deadline (long past).
        let mut racing = None;
        let mut now = LazyNow::new(|| {
            let seen = core.word().state();
            racing = Some((seen, core.acquire(&mut LazyNow::new(|| t), &mut no_sink)));
            t
        });
        let mut reopened = None;
        core.complete(probe, FAILURE, &mut now, &mut |c| reopened = Some(c));
        let (seen, result) = racing.expect("the reopening reads the clock");
        assert_eq!(seen, CircuitState::Open);
        // Refused, with no wait to advise yet: not half-opened by the old
        // deadline, and no probe taken.
        assert_eq!(result, Err(Refusal::no_wait()));
        assert_eq!(core.totals.probes.load(Ordering::Relaxed), 1);
        let reopened = reopened.expect("a failed probe reopens");
        assert_eq!(reopened.to, CircuitState::Open);
        assert_eq!(core.word().state(), CircuitState::Open);
        assert_eq!(core.word().generation(), reopened.generation);
        // The second opening is twice the first (no jitter).
        let until = reopened.open_until_us.unwrap();
        assert_eq!(until, t + 2_000_000);
        assert_eq!(core.open_deadline(core.word()), Some(until));
        let later = core.acquire(&mut LazyNow::new(|| t), &mut no_sink);
        assert_eq!(later.unwrap_err().retry_after_us(), Some(2_000_000));
    }

    /// A core with a count window of four that opens on one failure and
    /// closes on one successful probe.
    fn four_outcomes_one_failure_trips() -> Core {
        let config = CircuitBreakerConfig {
            sample_size: 4,
            minimum_calls: Some(1),
            failure_threshold: 0.5,
            half_open_max_requests: 1,
            open_timeout_ms: 1_000,
            jitter_ratio: 0.0,
            ..Default::default()
        };
        Core::new(&config, 0)
    }

    fn call(core: &Core, t: u64, outcome: u8) {
        let mut now = LazyNow::new(|| t);
        let ticket = core.acquire(&mut now, &mut no_sink).unwrap();
        core.complete(ticket, outcome, &mut now, &mut no_sink);
    }

    /// Writes `outcome` of a call admitted with `ticket` into the count
    /// window as `complete` does once its generation check has passed
    /// (whatever happened since), then asks whether to take it back.
    fn write_late(core: &Core, ticket: Ticket, outcome: u8) -> bool {
        let pos = core.busy.cursor.fetch_add(1, Ordering::Relaxed);
        assert!(core.count.record(pos, outcome).wrote);
        core.took_back(ticket, pos, outcome)
    }

    #[test]
    fn an_outcome_written_when_at_most_an_opening_happened_stays_in_the_window() {
        let core = four_outcomes_one_failure_trips();
        let mut now = LazyNow::new(|| 0);
        let early = core.acquire(&mut now, &mut no_sink).unwrap();
        assert!(!write_late(&core, early, SUCCESS));
        assert_eq!(core.outcomes(), [SUCCESS]);

        // Admitted while Closed, written after another call's failure
        // opened the breaker: the opening emptied no window.
        let late = core.acquire(&mut now, &mut no_sink).unwrap();
        call(&core, 0, FAILURE);
        assert_eq!(core.word().state(), CircuitState::Open);
        assert!(core.word().is_next_generation_of(late.generation));
        assert!(!write_late(&core, late, SUCCESS));
        assert_eq!(core.outcomes(), [SUCCESS, FAILURE, SUCCESS]);
        assert_eq!(core.count.tally().len, 3);
    }

    #[test]
    fn an_outcome_written_after_its_window_was_emptied_is_taken_back() {
        // Reset: the next generation, Closed, with an empty window.
        let core = four_outcomes_one_failure_trips();
        let mut now = LazyNow::new(|| 0);
        call(&core, 0, SUCCESS);
        let late = core.acquire(&mut now, &mut no_sink).unwrap();
        core.reset(0, &mut no_sink);
        assert!(core.word().is_next_generation_of(late.generation));
        assert!(write_late(&core, late, FAILURE));
        assert!(core.outcomes().is_empty());
        assert_eq!(core.count.tally().len, 0);

        // Opened, half-opened and closed by a successful probe.
        let core = four_outcomes_one_failure_trips();
        let late = core.acquire(&mut now, &mut no_sink).unwrap();
        let (generation, until) = trip(&core, 0);
        assert!(core.expire(generation, until, &mut no_sink));
        call(&core, until, SUCCESS);
        assert_eq!(core.word().state(), CircuitState::Closed);
        assert!(write_late(&core, late, FAILURE));
        assert!(core.outcomes().is_empty());

        // Opened, half-opened and reopened by a failed probe: Open again,
        // but not the opening that followed the call's admission; the
        // outcome is as stale as one checked after the reopening.
        let core = four_outcomes_one_failure_trips();
        let late = core.acquire(&mut now, &mut no_sink).unwrap();
        let (generation, until) = trip(&core, 0);
        assert!(core.expire(generation, until, &mut no_sink));
        call(&core, until, FAILURE);
        assert_eq!(core.word().state(), CircuitState::Open);
        assert!(!core.word().is_next_generation_of(late.generation));
        assert!(write_late(&core, late, SUCCESS));
        assert_eq!(core.outcomes(), [FAILURE]);
    }
}
