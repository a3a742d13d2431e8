//! The decision core: every atomic of a breaker and every rule that changes
//! them, with no clock, no runtime and no I/O.
//!
//! Time comes in as a lazily evaluated closure returning microseconds since
//! the breaker's epoch, so the hot paths that need no time never read a
//! clock, and the loom models drive the core with a fake one. Transitions are
//! reported to a sink closure; the [`CircuitBreaker`](super::CircuitBreaker)
//! around the core turns them into events, logs and timers.

use super::backoff::{Backoff, Jitter};
use super::state::{CircuitState, Word};
use super::window::{CountWindow, Tally, TimeWindow, FAILURE, SLOW, SUCCESS};
use crate::config::CircuitBreakerConfig;
use crate::sync::{AtomicBool, AtomicU64, CachePadded, Ordering};

/// Bits of the deadline word that hold the opening's generation (low bits).
const TAG_BITS: u32 = 12;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// The rest holds the deadline in microseconds (52 bits: 142 years).
const US_MASK: u64 = u64::MAX >> TAG_BITS;
/// Set in the hint word while a ticker keeps it current.
pub(crate) const FRESH: u64 = 1 << 63;
/// A rejection that read the clock itself asks for the ticker every this many.
const WAKE_EVERY: u64 = 64;

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

    /// Uses `t` as the current time without reading the clock.
    fn assume(&mut self, t: u64) {
        self.at.get_or_insert(t);
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

/// What a refused admission says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) retry_after_us: Option<u64>,
    /// The rejection read the clock itself although rejections come often:
    /// the ticker that keeps the hint fresh should run.
    pub(crate) wake_ticker: bool,
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
    /// Set when the rules changed (new thresholds, judging switched back
    /// on): the next outcome is judged even if it left the window as it was.
    rejudge: AtomicBool,
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
    pub(crate) blocked: CachePadded<AtomicU64>,
    pub(crate) failures: AtomicU64,
    pub(crate) slow: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) probes: AtomicU64,
    pub(crate) transitions: [AtomicU64; 9],
    pub(crate) last_change_us: AtomicU64,
}

/// The atomics of one breaker.
#[derive(Debug)]
pub(crate) struct Core {
    /// The state word (see `state.rs`). Read by every call.
    word: CachePadded<AtomicU64>,
    /// How many outcomes were ever recorded; the next one's window position.
    cursor: CachePadded<AtomicU64>,
    hot: Hot,
    count: CountWindow,
    time: TimeWindow,
    /// Tag of the opening's generation | its deadline in microseconds.
    deadline: AtomicU64,
    /// The latest clock reading while Open, with `FRESH` while a ticker
    /// refreshes it; rejections use it instead of reading the clock.
    hint: AtomicU64,
    /// Length of the latest opening, in microseconds.
    open_for_us: AtomicU64,
    pub(crate) totals: Totals,
    jitter: Jitter,
}

impl Core {
    pub(crate) fn new(config: &CircuitBreakerConfig, seed: u64) -> Self {
        let core = Self {
            word: CachePadded(AtomicU64::new(Word::closed(!config.enabled).0)),
            cursor: CachePadded(AtomicU64::new(0)),
            hot: Hot {
                threshold: AtomicU64::new(0),
                slow_threshold: AtomicU64::new(0),
                min_calls: AtomicU64::new(0),
                half_open_max: AtomicU64::new(0),
                window_us: AtomicU64::new(0),
                slow_us: AtomicU64::new(0),
                call_timeout_us: AtomicU64::new(0),
                probe_timeout_us: AtomicU64::new(0),
                rejudge: AtomicBool::new(false),
                base_us: AtomicU64::new(0),
                max_us: AtomicU64::new(0),
                multiplier: AtomicU64::new(0),
                jitter: AtomicU64::new(0),
            },
            count: CountWindow::new(config.sample_size),
            time: TimeWindow::new(ms_to_us(config.window_ms.unwrap_or(1))),
            deadline: AtomicU64::new(0),
            hint: AtomicU64::new(0),
            open_for_us: AtomicU64::new(0),
            totals: Totals::default(),
            jitter: Jitter::new(seed),
        };
        core.configure(config);
        core
    }

    /// Stores a (validated) configuration's hot values. The count window
    /// keeps its outcomes when its length is unchanged and otherwise keeps
    /// the most recent ones that fit; the time window is cleared when its
    /// length changes.
    pub(crate) fn configure(&self, c: &CircuitBreakerConfig) {
        // Relaxed: each value is read on its own; a call that sees a mix of
        // old and new values during an update behaves as under one of them.
        let h = &self.hot;
        h.threshold
            .store(c.failure_threshold.to_bits(), Ordering::Relaxed);
        h.slow_threshold
            .store(c.slow_call_rate_threshold.to_bits(), Ordering::Relaxed);
        h.min_calls
            .store(c.minimum_calls() as u64, Ordering::Relaxed);
        h.half_open_max
            .store(c.half_open_max_requests as u64, Ordering::Relaxed);
        let window_us = c.window_ms.map_or(0, ms_to_us);
        if window_us != 0 {
            self.time.set_length(window_us);
        }
        if h.window_us.swap(window_us, Ordering::Relaxed) != window_us {
            self.count.clear();
            self.time.clear();
        }
        if window_us == 0 && c.sample_size != self.sample_size() {
            self.count
                .resize(c.sample_size, self.cursor.load(Ordering::Relaxed));
        }
        h.slow_us
            .store(c.slow_call_ms.map_or(0, ms_to_us), Ordering::Relaxed);
        h.call_timeout_us
            .store(c.call_timeout_ms.map_or(0, ms_to_us), Ordering::Relaxed);
        h.probe_timeout_us
            .store(c.probe_timeout_ms.map_or(0, ms_to_us), Ordering::Relaxed);
        h.base_us
            .store(ms_to_us(c.open_timeout_ms), Ordering::Relaxed);
        h.max_us
            .store(ms_to_us(c.max_open_timeout_ms), Ordering::Relaxed);
        h.multiplier
            .store(c.backoff_multiplier.to_bits(), Ordering::Relaxed);
        h.jitter.store(c.jitter_ratio.to_bits(), Ordering::Relaxed);
        self.set_disabled(!c.enabled);
        h.rejudge.store(true, Ordering::Relaxed);
    }

    fn sample_size(&self) -> usize {
        self.count.size()
    }

    /// The most outcomes the count window can hold without a new breaker.
    pub(crate) fn window_capacity(&self) -> usize {
        self.count.capacity()
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
        Word(self.word.load(Ordering::Acquire))
    }

    /// Replaces `from` by `to` if the word is still `from`.
    fn swap_word(&self, from: Word, to: Word) -> Result<Word, Word> {
        // AcqRel on success: release what was prepared before, acquire what
        // the previous transition published. Acquire on failure: we re-read.
        self.word
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| to)
            .map_err(Word)
    }

    /// Whether calls are being timed for the slow-call rule.
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.hot.slow_us.load(Ordering::Relaxed) != 0
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
                0 => self.open_for_us.load(Ordering::Relaxed),
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
        self.acquire_slow(w, now, sink)
    }

    /// Admission in Open and HalfOpen, kept out of line so that the Closed
    /// path stays a few instructions.
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
                    let deadline = self.deadline.load(Ordering::Acquire);
                    if w.is_forced_open() || deadline & TAG_MASK != tag(w.generation()) {
                        // Forced, or the deadline of this opening is not
                        // yet published: no wait to advise.
                        self.totals.blocked.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal {
                            retry_after_us: None,
                            wake_ticker: false,
                        });
                    }
                    let until = deadline >> TAG_BITS;
                    // Relaxed: the hint is a time reading, not a publication.
                    let hint = self.hint.load(Ordering::Relaxed);
                    let fresh = hint & FRESH != 0;
                    let t = if fresh {
                        now.assume(hint & !FRESH);
                        hint & !FRESH
                    } else {
                        let t = now.get();
                        self.hint.store(t, Ordering::Relaxed);
                        t
                    };
                    if t < until {
                        let n = self.totals.blocked.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal {
                            retry_after_us: Some(until - t),
                            wake_ticker: !fresh && n % WAKE_EVERY == WAKE_EVERY - 1,
                        });
                    }
                    w = match self.half_open(w, t, sink) {
                        Ok(w) | Err(w) => w,
                    };
                }
                CircuitState::HalfOpen => {
                    if w.in_flight() >= self.hot.half_open_max.load(Ordering::Relaxed) {
                        self.totals.blocked.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal {
                            retry_after_us: None,
                            wake_ticker: false,
                        });
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
        // Relaxed: a count, and the window position this outcome takes.
        let pos = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.complete_slow(ticket, outcome, pos, now, sink);
    }

    /// Records a success (not slow). The common case, a Closed success in a
    /// count window, is one atomic add and a few loads, inline.
    #[inline]
    pub(crate) fn complete_success(
        &self,
        ticket: Ticket,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        // Relaxed: a count, and the window position this outcome takes.
        let pos = self.cursor.fetch_add(1, Ordering::Relaxed);
        if ticket.probe || self.needs_time() {
            return self.complete_slow(ticket, SUCCESS, pos, now, sink);
        }
        let w = self.word();
        if w.generation() == ticket.generation
            && (self.count.record(pos, SUCCESS) || self.hot.rejudge.load(Ordering::Relaxed))
            && w.state() == CircuitState::Closed
            && w.is_automatic()
        {
            self.judge(w, now, sink);
        }
    }

    /// Every outcome but a Closed success in a count window.
    #[inline(never)]
    fn complete_slow(
        &self,
        ticket: Ticket,
        outcome: u8,
        pos: u64,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        if outcome & FAILURE != 0 {
            self.totals.failures.fetch_add(1, Ordering::Relaxed);
        }
        if outcome & SLOW != 0 {
            self.totals.slow.fetch_add(1, Ordering::Relaxed);
        }
        if ticket.probe {
            self.complete_probe(ticket, outcome, now, sink);
            return;
        }
        let w = self.word();
        if w.generation() != ticket.generation {
            // Admitted under a state that is gone: it says nothing about now.
            return;
        }
        let judge = if self.needs_time() {
            self.time.record(now.get(), outcome);
            true
        } else {
            // An outcome that left the window as it was leaves the verdict
            // as it was too, unless the rules changed since the last one.
            self.count.record(pos, outcome) || self.hot.rejudge.load(Ordering::Relaxed)
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

    /// Opens a Closed breaker whose window crossed a threshold.
    #[inline(never)]
    fn judge(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        if self.hot.rejudge.load(Ordering::Relaxed) {
            self.hot.rejudge.store(false, Ordering::Relaxed);
        }
        let tally = self.tally(now);
        if tally.len < self.hot.min_calls.load(Ordering::Relaxed) {
            return;
        }
        let threshold = f64::from_bits(self.hot.threshold.load(Ordering::Relaxed));
        let slow_threshold = f64::from_bits(self.hot.slow_threshold.load(Ordering::Relaxed));
        if tally.failure_rate() >= threshold
            || (self.times_calls() && tally.slow_rate() >= slow_threshold)
        {
            // A lost race means another thread already changed the state.
            let _ = self.open(w, now, sink);
        }
    }

    /// The window's tallies.
    pub(crate) fn tally(&self, now: &mut LazyNow<impl FnMut() -> u64>) -> Tally {
        if self.needs_time() {
            self.time.tally(now.get())
        } else {
            self.count.tally()
        }
    }

    /// Moves `w` (Closed or HalfOpen) to Open, one opening longer.
    fn open(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Word, Word> {
        let next = w.enter(CircuitState::Open, w.streak() + 1);
        let next = self.swap_word(w, next)?;
        let t = now.get();
        let length = self
            .backoff()
            .duration_us(next.streak(), self.jitter.unit());
        let until = (t + length).min(US_MASK);
        self.publish_opening(next, t, until, length);
        self.note(w, next, t, Some(until), sink);
        Ok(next)
    }

    /// Makes an opening's deadline visible. Until this runs, rejections of
    /// the new generation see a deadline with another tag and advise no wait.
    fn publish_opening(&self, w: Word, t: u64, until: u64, length: u64) {
        self.open_for_us.store(length, Ordering::Relaxed);
        self.hint.store(t, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `acquire` and `state`.
        self.deadline
            .store((until << TAG_BITS) | tag(w.generation()), Ordering::Release);
    }

    /// Moves an Open `w` to HalfOpen.
    fn half_open(&self, w: Word, t: u64, sink: &mut impl FnMut(Change)) -> Result<Word, Word> {
        let next = self.swap_word(w, w.enter(CircuitState::HalfOpen, w.streak()))?;
        self.note(w, next, t, None, sink);
        Ok(next)
    }

    /// Moves a HalfOpen `w` to Closed with an empty window.
    fn close(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Word, Word> {
        let next = self.swap_word(w, w.enter(CircuitState::Closed, 0))?;
        self.clear_window();
        self.note(w, next, now.get(), None, sink);
        Ok(next)
    }

    fn clear_window(&self) {
        self.count.clear();
        self.time.clear();
    }

    fn note(
        &self,
        from: Word,
        to: Word,
        t: u64,
        open_until_us: Option<u64>,
        sink: &mut impl FnMut(Change),
    ) {
        if from.state() == to.state() {
            return;
        }
        let idx = from.state().as_gauge() as usize * 3 + to.state().as_gauge() as usize;
        self.totals.transitions[idx].fetch_add(1, Ordering::Relaxed);
        // Stored plus one, so that 0 means "never".
        self.totals
            .last_change_us
            .store(t.saturating_add(1), Ordering::Relaxed);
        sink(Change {
            from: from.state(),
            to: to.state(),
            at_us: t,
            generation: to.generation(),
            open_until_us,
        });
    }

    /// The state, moving an Open breaker whose deadline passed to HalfOpen.
    pub(crate) fn state(
        &self,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> CircuitState {
        let w = self.word();
        if w.state() != CircuitState::Open || !w.is_automatic() {
            return w.state();
        }
        match self.open_deadline(w) {
            Some(until) if now.get() >= until => match self.half_open(w, now.get(), sink) {
                Ok(w) | Err(w) => w.state(),
            },
            _ => CircuitState::Open,
        }
    }

    /// The deadline of the opening `w` is in, once published.
    pub(crate) fn open_deadline(&self, w: Word) -> Option<u64> {
        let d = self.deadline.load(Ordering::Acquire);
        (w.state() == CircuitState::Open
            && !w.is_forced_open()
            && d & TAG_MASK == tag(w.generation()))
        .then_some(d >> TAG_BITS)
    }

    /// Moves an Open breaker of generation `generation` to HalfOpen if its
    /// deadline passed by `t` (the ticker's entry point).
    pub(crate) fn expire(&self, generation: u32, t: u64, sink: &mut impl FnMut(Change)) -> bool {
        let w = self.word();
        if w.generation() != generation || !w.is_automatic() {
            return true;
        }
        match self.open_deadline(w) {
            Some(until) if t >= until => {
                let _ = self.half_open(w, t, sink);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Stores a clock reading as the hint; `fresh` while a ticker keeps it so.
    pub(crate) fn set_hint(&self, t: u64, fresh: bool) {
        self.hint
            .store(if fresh { t | FRESH } else { t }, Ordering::Relaxed);
    }

    /// Holds the breaker Open until reset or forced closed.
    pub(crate) fn force_open(&self, t: u64, sink: &mut impl FnMut(Change)) {
        self.rewrite(|w| w.forced_open(), false, t, sink);
    }

    /// Holds the breaker Closed until reset.
    pub(crate) fn force_closed(&self, t: u64, sink: &mut impl FnMut(Change)) {
        self.rewrite(|w| w.forced_closed(), false, t, sink);
    }

    /// Back to a normal Closed breaker: empty window, no backoff streak.
    pub(crate) fn reset(&self, t: u64, sink: &mut impl FnMut(Change)) {
        self.rewrite(|w| w.enter(CircuitState::Closed, 0), true, t, sink);
    }

    fn rewrite(
        &self,
        f: impl Fn(Word) -> Word,
        clear: bool,
        t: u64,
        sink: &mut impl FnMut(Change),
    ) {
        let mut w = self.word();
        loop {
            let next = f(w);
            match self.swap_word(w, next) {
                Ok(_) => {
                    if clear
                        || (next.state() == CircuitState::Closed
                            && w.state() != CircuitState::Closed)
                    {
                        self.clear_window();
                    }
                    self.note(w, next, t, None, sink);
                    return;
                }
                Err(cur) => w = cur,
            }
        }
    }

    /// Turns the metrics-only mode on or off; the state is kept.
    pub(crate) fn set_disabled(&self, disabled: bool) {
        let mut w = self.word();
        while w.is_disabled() != disabled {
            match self.swap_word(w, w.with_disabled(disabled)) {
                Ok(_) => return,
                Err(cur) => w = cur,
            }
        }
    }

    /// Installs a restored state (on a breaker nobody uses yet).
    pub(crate) fn install(
        &self,
        state: CircuitState,
        streak: u32,
        forced: Option<CircuitState>,
        open: Option<(u64, u64, u64)>,
        outcomes: &[u8],
    ) {
        let base = self.word();
        let w = match forced {
            Some(CircuitState::Open) => base.enter(CircuitState::Open, streak).forced_open(),
            Some(_) => base.enter(CircuitState::Closed, streak).forced_closed(),
            None => base.enter(state, streak),
        };
        if let Some((t, until, length)) = open {
            self.open_for_us.store(length, Ordering::Relaxed);
            if w.state() == CircuitState::Open {
                self.publish_opening(w, t, until.min(US_MASK), length);
            }
        }
        self.word.store(w.0, Ordering::Release);
        let next = outcomes.len() as u64;
        self.cursor.store(next, Ordering::Relaxed);
        if self.needs_time() {
            return;
        }
        self.count.replay(outcomes, next);
    }

    /// The outcomes in the count window, oldest first.
    pub(crate) fn outcomes(&self) -> Vec<u8> {
        if self.needs_time() {
            return Vec::new();
        }
        self.count.outcomes(self.cursor.load(Ordering::Relaxed))
    }

    /// Outcomes recorded since creation.
    pub(crate) fn recorded(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// Length of the latest opening, in microseconds.
    pub(crate) fn open_for_us(&self) -> u64 {
        self.open_for_us.load(Ordering::Relaxed)
    }
}
