//! The breaker's state, packed into one word.
//!
//! Every transition is a compare-exchange of this word, so two threads can
//! never both act on the same state: the loser of a race sees that the word
//! changed and re-reads it. The word carries a *generation*, bumped by every
//! phase change, which permits remember; an outcome reported under an older
//! generation describes a state that is gone and is ignored.
//!
//! ```text
//! bit  0..2   phase: 0 Closed, 1 Open, 2 HalfOpen
//! bit  2      forced open   (force_open: held Open until reset/force_closed)
//! bit  3      forced closed (force_closed: held Closed until reset)
//! bit  4      disabled      (enabled = false: every call runs, state frozen)
//! bits 5..13  open streak: consecutive openings since the last close
//! bits 13..27 probes in flight (HalfOpen)
//! bits 27..41 probes that succeeded (HalfOpen)
//! bits 41..64 generation (wraps)
//! ```

use serde::{Deserialize, Serialize};

/// The three states of a circuit breaker.
///
/// ```text
///   Closed ──(failure rate >= threshold)──▶ Open
///     ▲                                      │ (open timeout elapsed)
///     │                                      ▼
///     └──(enough probes succeeded)──── HalfOpen ──(a probe failed)──▶ Open
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CircuitState {
    /// Calls run; their outcomes are judged in a sliding window.
    Closed,
    /// Calls are rejected without running until the open timeout elapses.
    Open,
    /// A limited number of probe calls run to test whether the service recovered.
    HalfOpen,
}

impl CircuitState {
    /// The value of the `circuit_state` gauge: 0 closed, 1 open, 2 half-open.
    pub const fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// Lower-case name, as used in metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    pub(crate) const fn from_bits(bits: u64) -> Self {
        match bits & PHASE_MASK {
            CLOSED => Self::Closed,
            OPEN => Self::Open,
            _ => Self::HalfOpen,
        }
    }

    const fn bits(self) -> u64 {
        match self {
            Self::Closed => CLOSED,
            Self::Open => OPEN,
            Self::HalfOpen => HALF_OPEN,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const PHASE_MASK: u64 = 0b11;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 1 << 2;
const FORCED_CLOSED: u64 = 1 << 3;
const DISABLED: u64 = 1 << 4;
const STREAK_SHIFT: u32 = 5;
const STREAK_MAX: u64 = 0xff;
const INFLIGHT_SHIFT: u32 = 13;
const OK_SHIFT: u32 = 27;
/// Probe counters are 14 bits wide.
pub(crate) const PROBE_MAX: u64 = (1 << 14) - 1;
const GEN_SHIFT: u32 = 41;

/// A decoded copy of the state word. Pure: no atomics here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    /// A fresh breaker: Closed, generation 0.
    pub(crate) const fn closed(disabled: bool) -> Self {
        Word(if disabled { DISABLED } else { 0 })
    }

    pub(crate) const fn state(self) -> CircuitState {
        CircuitState::from_bits(self.0)
    }

    /// Whether a call may run without touching the word: Closed (normal or
    /// forced), or disabled and not forced open. This is the hot-path test.
    #[inline]
    pub(crate) const fn admits_freely(self) -> bool {
        self.0 & PHASE_MASK == CLOSED || self.0 & (DISABLED | FORCED_OPEN) == DISABLED
    }

    /// Whether outcomes may change the phase (not forced, not disabled).
    pub(crate) const fn is_automatic(self) -> bool {
        self.0 & (FORCED_OPEN | FORCED_CLOSED | DISABLED) == 0
    }

    pub(crate) const fn is_forced_open(self) -> bool {
        self.0 & FORCED_OPEN != 0
    }

    pub(crate) const fn is_forced_closed(self) -> bool {
        self.0 & FORCED_CLOSED != 0
    }

    pub(crate) const fn is_disabled(self) -> bool {
        self.0 & DISABLED != 0
    }

    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }

    /// Whether this word's generation is the one right after `generation`.
    pub(crate) const fn is_next_generation_of(self, generation: u32) -> bool {
        let mask = (1u64 << (64 - GEN_SHIFT)) - 1;
        self.generation() as u64 == (generation as u64 + 1) & mask
    }

    pub(crate) const fn streak(self) -> u32 {
        ((self.0 >> STREAK_SHIFT) & STREAK_MAX) as u32
    }

    pub(crate) const fn in_flight(self) -> u64 {
        (self.0 >> INFLIGHT_SHIFT) & PROBE_MAX
    }

    pub(crate) const fn probes_ok(self) -> u64 {
        (self.0 >> OK_SHIFT) & PROBE_MAX
    }

    pub(crate) const fn with_disabled(self, disabled: bool) -> Self {
        if disabled {
            Word(self.0 | DISABLED)
        } else {
            Word(self.0 & !DISABLED)
        }
    }

    /// A new phase in the next generation, probe counters cleared, the
    /// force flags cleared and the disabled flag kept.
    pub(crate) const fn enter(self, state: CircuitState, streak: u32) -> Self {
        let gen = (self.generation() as u64 + 1) & ((1 << (64 - GEN_SHIFT)) - 1);
        let streak = if streak as u64 > STREAK_MAX {
            STREAK_MAX
        } else {
            streak as u64
        };
        Word((gen << GEN_SHIFT) | (streak << STREAK_SHIFT) | (self.0 & DISABLED) | state.bits())
    }

    pub(crate) const fn forced_open(self) -> Self {
        Word(self.enter(CircuitState::Open, self.streak()).0 | FORCED_OPEN)
    }

    pub(crate) const fn forced_closed(self) -> Self {
        Word(self.enter(CircuitState::Closed, 0).0 | FORCED_CLOSED)
    }

    /// One more probe in flight (caller checked the limit).
    pub(crate) const fn probe_started(self) -> Self {
        Word(self.0 + (1 << INFLIGHT_SHIFT))
    }

    /// One probe fewer in flight.
    pub(crate) const fn probe_released(self) -> Self {
        Word(self.0 - (1 << INFLIGHT_SHIFT))
    }

    /// One probe fewer in flight, one more success.
    pub(crate) const fn probe_succeeded(self) -> Self {
        Word(self.0 - (1 << INFLIGHT_SHIFT) + (1 << OK_SHIFT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_gauge_value_and_name() {
        let all = [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ];
        assert_eq!(all.map(CircuitState::as_gauge), [0, 1, 2]);
        assert_eq!(
            all.map(CircuitState::as_str),
            ["closed", "open", "half_open"]
        );
        assert_eq!(all.map(|s| s.to_string()), ["closed", "open", "half_open"]);
        for s in all {
            assert_eq!(CircuitState::from_bits(s.bits()), s);
        }
    }

    #[test]
    fn fields_round_trip() {
        let w = Word::closed(false).enter(CircuitState::HalfOpen, 3);
        assert_eq!(w.state(), CircuitState::HalfOpen);
        assert_eq!(w.streak(), 3);
        assert_eq!(w.generation(), 1);
        let w = w.probe_started().probe_started().probe_succeeded();
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.probes_ok(), 1);
        assert_eq!(w.state(), CircuitState::HalfOpen);
        let w = w.probe_released();
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.generation(), 1);
    }

    #[test]
    fn generation_wraps_without_touching_other_fields() {
        let mut w = Word(!(PHASE_MASK | FORCED_OPEN | FORCED_CLOSED | DISABLED));
        w = w.enter(CircuitState::Open, 1);
        assert_eq!(w.generation(), 0);
        assert_eq!(w.state(), CircuitState::Open);
        assert_eq!(w.streak(), 1);
    }

    #[test]
    fn a_word_is_the_next_generation_only_of_the_one_before_it() {
        let one = Word::closed(false).enter(CircuitState::Open, 1);
        let two = one.enter(CircuitState::HalfOpen, 1);
        assert!(one.is_next_generation_of(0));
        assert!(!one.is_next_generation_of(1));
        assert!(two.is_next_generation_of(1));
        assert!(!two.is_next_generation_of(0));
        assert!(!two.is_next_generation_of(2));
        // The generation wraps: the one after the last is 0.
        let last = (1u32 << (64 - GEN_SHIFT)) - 1;
        let w = Word((last as u64) << GEN_SHIFT);
        assert_eq!(w.generation(), last);
        let wrapped = w.enter(CircuitState::Closed, 0);
        assert_eq!(wrapped.generation(), 0);
        assert!(wrapped.is_next_generation_of(last));
        assert!(!wrapped.is_next_generation_of(0));
    }

    #[test]
    fn with_disabled_sets_and_clears_only_the_disabled_flag() {
        let w = Word::closed(false)
            .enter(CircuitState::HalfOpen, 3)
            .probe_started();
        let off = w.with_disabled(true);
        assert!(off.is_disabled() && !w.is_disabled());
        assert_eq!(off.with_disabled(true), off, "already disabled");
        assert_eq!(off.with_disabled(false), w);
        assert_eq!(w.with_disabled(false), w, "already enabled");
        assert_eq!(Word::closed(true), Word::closed(false).with_disabled(true));
    }

    #[test]
    fn streak_saturates() {
        let w = Word::closed(false).enter(CircuitState::Open, 10_000);
        assert_eq!(w.streak(), 255);
    }

    #[test]
    fn admission_rules() {
        let closed = Word::closed(false);
        assert!(closed.admits_freely());
        assert!(!closed.enter(CircuitState::Open, 1).admits_freely());
        assert!(!closed.enter(CircuitState::HalfOpen, 1).admits_freely());
        assert!(closed
            .with_disabled(true)
            .enter(CircuitState::Open, 1)
            .admits_freely());
        assert!(!closed.with_disabled(true).forced_open().admits_freely());
        assert!(closed.forced_closed().admits_freely());
        assert!(closed.with_disabled(true).is_disabled());
        assert!(!closed.forced_closed().is_automatic());
    }
}
