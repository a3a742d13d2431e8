//! What operators and the breaker's owner do to it, beside calls: apply a
//! configuration, force or reset the state, restore a snapshot, read the
//! window. None of this is on a call's path.

use super::{Change, Core};
use crate::config::CircuitBreakerConfig;
use crate::resilience::state::{CircuitState, Word};
use crate::resilience::window::TimeWindow;
use crate::sync::Ordering;

use super::{ms_to_us, US_MASK};

impl Core {
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
            self.lane
                .time
                .get_or_init(|| Box::new(TimeWindow::new(window_us)))
                .set_length(window_us);
        }
        if h.window_us.swap(window_us, Ordering::Relaxed) != window_us {
            self.count.clear();
            if let Some(time) = self.lane.time.get() {
                time.clear();
            }
        }
        if window_us == 0 && c.sample_size != self.sample_size() {
            self.count
                .resize(c.sample_size, self.busy.cursor.load(Ordering::Relaxed));
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
    }

    /// Outcomes the window must hold before its rate is judged.
    // Read by graceful degradation (feature `resilience`).
    #[cfg_attr(not(feature = "resilience"), allow(dead_code))]
    pub(crate) fn minimum_calls(&self) -> u64 {
        self.hot.min_calls.load(Ordering::Relaxed)
    }

    /// The `failure_threshold` in force.
    // Read by graceful degradation (feature `resilience`).
    #[cfg_attr(not(feature = "resilience"), allow(dead_code))]
    pub(crate) fn failure_threshold(&self) -> f64 {
        f64::from_bits(self.hot.threshold.load(Ordering::Relaxed))
    }

    fn sample_size(&self) -> usize {
        self.count.size()
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
            // An opening whose time is up is HalfOpen already (as `state()`
            // reports): make that transition first, so it is published.
            if w.state() == CircuitState::Open && w.is_automatic() {
                if let Some(until) = self.open_deadline(w) {
                    if t >= until {
                        w = match self.half_open(w, t, sink) {
                            Ok(w) | Err(w) => w,
                        };
                        continue;
                    }
                }
            }
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
        open: Option<(u64, u64)>,
        outcomes: &[u8],
    ) {
        let base = self.word();
        let w = match forced {
            Some(CircuitState::Open) => base.enter(CircuitState::Open, streak).forced_open(),
            Some(_) => base.enter(CircuitState::Closed, streak).forced_closed(),
            None => base.enter(state, streak),
        };
        if let Some((until, length)) = open {
            self.lane.open_for_us.store(length, Ordering::Relaxed);
            if w.state() == CircuitState::Open {
                self.publish_opening(w, until.min(US_MASK), length);
            }
        }
        self.word.state.store(w.0, Ordering::Release);
        let next = outcomes.len() as u64;
        self.busy.cursor.store(next, Ordering::Relaxed);
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
        self.count
            .outcomes(self.busy.cursor.load(Ordering::Relaxed))
    }

    /// Outcomes recorded since creation: those that took a window position,
    /// those recorded outside the window, and the successes that left a
    /// calm window alone.
    pub(crate) fn recorded(&self) -> u64 {
        self.busy.cursor.load(Ordering::Relaxed)
            + self.totals.unwindowed.load(Ordering::Relaxed)
            + self.striped()
    }

    /// Whether Closed successes currently leave the count window alone.
    #[cfg(test)]
    pub(crate) fn window_is_calm(&self) -> bool {
        self.count.is_calm()
    }

    /// Length of the latest opening, in microseconds.
    pub(crate) fn open_for_us(&self) -> u64 {
        self.lane.open_for_us.load(Ordering::Relaxed)
    }
}
