//! The transitions: each a compare-exchange of the state word, then the
//! bookkeeping that goes with it (deadline, window, counters, the event).

use super::{Change, Core, LazyNow, TAG_BITS, TAG_MASK, US_MASK};
use crate::resilience::state::{CircuitState, Word};
use crate::sync::Ordering;

use super::tag;

impl Core {
    /// Judges the window of a Closed, automatic breaker now (after its
    /// rules changed).
    pub(crate) fn rejudge(
        &self,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
        let w = self.word();
        if w.state() == CircuitState::Closed && w.is_automatic() {
            self.judge(w, now, sink);
        }
    }

    /// Opens a Closed breaker whose window crossed a threshold.
    #[inline(never)]
    pub(super) fn judge(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) {
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

    /// Moves `w` (Closed or HalfOpen) to Open, one opening longer.
    pub(super) fn open(
        &self,
        w: Word,
        now: &mut LazyNow<impl FnMut() -> u64>,
        sink: &mut impl FnMut(Change),
    ) -> Result<Word, Word> {
        let next = w.enter(CircuitState::Open, w.streak().saturating_add(1));
        let next = self.swap_word(w, next)?;
        let t = now.get();
        let length = self
            .backoff()
            .duration_us(next.streak(), self.jitter.unit());
        let until = t.saturating_add(length).min(US_MASK);
        self.publish_opening(next, until, length);
        self.note(w, next, t, Some(until), sink);
        Ok(next)
    }

    /// Makes an opening's deadline visible. Until this runs, rejections of
    /// the new generation see a deadline with another tag and advise no wait.
    pub(super) fn publish_opening(&self, w: Word, until: u64, length: u64) {
        self.lane.open_for_us.store(length, Ordering::Relaxed);
        // No bound from the counter for this opening yet (a bound of an
        // opening 4096 generations ago would carry the same tag).
        self.word.certain.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `acquire` and `state`.
        self.lane
            .deadline
            .store((until << TAG_BITS) | tag(w.generation()), Ordering::Release);
    }

    /// Moves an Open `w` to HalfOpen.
    pub(super) fn half_open(
        &self,
        w: Word,
        t: u64,
        sink: &mut impl FnMut(Change),
    ) -> Result<Word, Word> {
        // The opening ended at its deadline, whenever it is noticed: that is
        // the time of the transition.
        let at = self.open_deadline(w).map_or(t, |until| until.min(t));
        let next = self.swap_word(w, w.enter(CircuitState::HalfOpen, w.streak()))?;
        self.note(w, next, at, None, sink);
        Ok(next)
    }

    /// Moves a HalfOpen `w` to Closed with an empty window.
    pub(super) fn close(
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

    pub(super) fn clear_window(&self) {
        self.count.clear();
        if let Some(time) = self.lane.time.get() {
            time.clear();
        }
    }

    pub(super) fn note(
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
        let d = self.lane.deadline.load(Ordering::Acquire);
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
}
