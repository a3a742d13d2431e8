//! Sliding windows of call outcomes.
//!
//! The **count window** (the default) holds the last `sample_size` outcomes in
//! a ring of one byte per slot. Recording an outcome swaps it into its slot
//! and adjusts the running tallies by the difference with what it replaced,
//! so the tallies always equal the ring's contents once writers are done, and
//! reading the failure rate is three loads. The ring needs no clock, which is
//! why it is the default: a Closed call pays no clock read at all. When the
//! slot already holds the same outcome (the steady state of a healthy
//! service) nothing is written at all.
//!
//! The **time window** keeps ten buckets, each covering a tenth of
//! `window_ms`; an outcome lands in the bucket of the moment it finished and
//! buckets older than the window are ignored and reused.
//!
//! Both are lock-free. An outcome whose generation ended before it was
//! written (the breaker opened and closed again, or was reset, meanwhile)
//! never stays in the emptied window: the count window takes it back, the
//! time window writes it under the tag of the clear it predates.

use std::sync::OnceLock;

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Slot value of an empty slot.
pub(crate) const EMPTY: u8 = 0;
/// Bit of a successful outcome.
pub(crate) const SUCCESS: u8 = 1;
/// Bit of a failed outcome.
pub(crate) const FAILURE: u8 = 2;
/// Bit added to either when the call was slow.
pub(crate) const SLOW: u8 = 4;

/// Tallies of the outcomes in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) len: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Tally {
    /// Fraction of failures, 0.0 for an empty window.
    pub(crate) fn failure_rate(self) -> f64 {
        ratio(self.failures, self.len)
    }

    /// Fraction of slow calls, 0.0 for an empty window.
    pub(crate) fn slow_rate(self) -> f64 {
        ratio(self.slow, self.len)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part.min(whole) as f64 / whole as f64
    }
}

/// What [`CountWindow::record`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The slot was written (it held another outcome).
    pub(crate) wrote: bool,
    /// The failure or slow rate may have risen: judge the window.
    pub(crate) rise: bool,
}

/// The last `size` outcomes, in a ring.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Ring,
    /// Set (Release) once the window first grew past `ring`: until then a
    /// call reads `ring` without following the chain.
    grown: AtomicU8,
    size: AtomicU64,
    /// `u64::MAX / size + 1`: turns `pos % size` into two multiplications
    /// (a division costs tens of cycles, more than the rest of a record).
    reciprocal: AtomicU64,
    filled: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// The slots of a count window, and the larger ring that replaced them when
/// the window grew past their number (rare: only a new configuration does
/// it). Rings are only added, never freed while the window lives, so that a
/// call still writing to an old one needs no lock.
#[derive(Debug)]
struct Ring {
    slots: Box<[AtomicU8]>,
    larger: OnceLock<Box<Ring>>,
    /// Set (Release) once `larger` holds the next ring: what readers load
    /// (Acquire) before following it. The same as the lock's own ordering,
    /// but made of the atomics the model checker sees.
    grown: AtomicU8,
}

impl Ring {
    fn new(len: usize) -> Self {
        Self {
            slots: (0..len.max(1)).map(|_| AtomicU8::new(EMPTY)).collect(),
            larger: OnceLock::new(),
            grown: AtomicU8::new(0),
        }
    }

    /// The ring in use: the last one added.
    #[inline(always)]
    fn newest(&self) -> &Ring {
        let mut ring = self;
        while ring.grown.load(Ordering::Acquire) != 0 {
            match ring.larger.get() {
                Some(next) => ring = next,
                None => break,
            }
        }
        ring
    }

    /// Adds a ring of `len` slots after this one (the newest).
    fn grow(&self, len: usize) {
        if self.larger.set(Box::new(Ring::new(len))).is_ok() {
            self.grown.store(1, Ordering::Release);
        }
    }

    /// Every ring, oldest first.
    fn all(&self) -> impl Iterator<Item = &Ring> {
        std::iter::successors(Some(self), |r| {
            (r.grown.load(Ordering::Acquire) != 0)
                .then(|| r.larger.get().map(|b| &**b))
                .flatten()
        })
    }
}

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            ring: Ring::new(size),
            grown: AtomicU8::new(0),
            size: AtomicU64::new(size.max(1) as u64),
            reciprocal: AtomicU64::new(reciprocal(size.max(1) as u64)),
            filled: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    /// The number of outcomes the window holds when full.
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::SeqCst) as usize
    }

    /// The ring in use.
    #[inline(always)]
    fn ring(&self) -> &Ring {
        if self.grown.load(Ordering::Acquire) == 0 {
            &self.ring
        } else {
            self.ring.newest()
        }
    }

    /// The slot of the `pos`-th outcome in the ring in use, and its index.
    #[inline(always)]
    fn slot(&self, pos: u64) -> (usize, &AtomicU8) {
        // The length first, then the ring: a window that grows stores its
        // new length only after adding the ring that holds it (Release on
        // both sides), so the ring read here is at least that long.
        let index = self.index(pos);
        let slots = &self.ring().slots;
        // No call on this path (a call here costs every breaker call the
        // registers it saves), and never out of bounds even if the loads
        // above raced anyway.
        match slots.get(index) {
            Some(slot) => (index, slot),
            None => (index, &slots[index % slots.len()]),
        }
    }

    /// Records `outcome` as the `pos`-th outcome. Returns what happened:
    /// whether the slot was written (`wrote`) and whether the rate may have
    /// risen so the caller should judge it (`rise`: a failure or slow call
    /// went in, or the window grew).
    // Always inline: the steady state (the slot already holds the outcome)
    // is a few instructions; the write is out of line.
    #[inline(always)]
    pub(crate) fn record(&self, pos: u64, outcome: u8) -> Recorded {
        // SeqCst on the slots and tallies: two threads recording failures at
        // once must not each miss the other's (each then judging a rate
        // below the threshold). In the single total order one of them sees
        // both. On x86 this costs nothing: the read-modify-writes are locked
        // instructions anyway, and SeqCst loads are plain loads.
        let (index, slot) = self.slot(pos);
        if slot.load(Ordering::SeqCst) == outcome {
            return Recorded::default();
        }
        self.write(index, slot, outcome)
    }

    /// [`record`](Self::record) of an outcome its slot does not hold yet.
    #[inline(never)]
    fn write(&self, index: usize, slot: &AtomicU8, outcome: u8) -> Recorded {
        let old = slot.swap(outcome, Ordering::SeqCst);
        self.adjust(old, outcome);
        // The window was resized meanwhile and no longer reads this slot
        // (beyond a shorter length, or in a ring a longer window left):
        // take the outcome back, unless the resize's sweep already did.
        // (Had the swap come after that sweep, it read what the sweep
        // wrote, and so sees the new length and ring here.)
        if (index >= self.size() || self.in_old_ring(slot))
            && slot
                .compare_exchange(outcome, EMPTY, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.adjust(outcome, EMPTY);
        }
        Recorded {
            wrote: true,
            rise: old == EMPTY || outcome & (FAILURE | SLOW) != 0,
        }
    }

    /// Whether `slot` is in a ring the window no longer reads.
    #[inline(always)]
    fn in_old_ring(&self, slot: &AtomicU8) -> bool {
        self.grown.load(Ordering::Acquire) != 0
            && !self
                .ring()
                .slots
                .as_ptr_range()
                .contains(&std::ptr::from_ref(slot))
    }

    /// Takes back an outcome recorded at `pos` that turned out to be stale,
    /// if its slot still holds it.
    pub(crate) fn undo(&self, pos: u64, outcome: u8) {
        let (_, slot) = self.slot(pos);
        if slot
            .compare_exchange(outcome, EMPTY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.adjust(outcome, EMPTY);
        }
    }

    /// The slot of the `pos`-th outcome: `pos % size`, for the low 32 bits of
    /// `pos` (so the ring skips once every 2^32 outcomes, which only means
    /// one outcome leaves the window early).
    #[inline]
    fn index(&self, pos: u64) -> usize {
        let size = self.size.load(Ordering::Acquire);
        let m = self.reciprocal.load(Ordering::Relaxed);
        // Lemire's fastmod. Always < size even if a resize lands between
        // the two loads.
        let low = m.wrapping_mul(pos as u32 as u64);
        ((low as u128 * size as u128) >> 64) as usize
    }

    fn adjust(&self, old: u8, new: u8) {
        if old == new {
            return;
        }
        bump(&self.filled, old != EMPTY, new != EMPTY);
        bump(&self.failures, old & FAILURE != 0, new & FAILURE != 0);
        bump(&self.slow, old & SLOW != 0, new & SLOW != 0);
    }

    pub(crate) fn tally(&self) -> Tally {
        let len = self.filled.load(Ordering::SeqCst) as u64;
        Tally {
            len,
            failures: (self.failures.load(Ordering::SeqCst) as u64).min(len),
            slow: (self.slow.load(Ordering::SeqCst) as u64).min(len),
        }
    }

    /// Empties the window.
    pub(crate) fn clear(&self) {
        Self::clear_ring(self, self.ring());
    }

    fn clear_ring(&self, ring: &Ring) {
        for slot in ring.slots.iter() {
            let old = slot.swap(EMPTY, Ordering::SeqCst);
            self.adjust(old, EMPTY);
        }
    }

    /// The outcomes in the window, oldest first, given the position the next
    /// outcome will take.
    pub(crate) fn outcomes(&self, next_pos: u64) -> Vec<u8> {
        let size = self.size.load(Ordering::Relaxed);
        let len = (self.filled.load(Ordering::Relaxed) as u64).min(size);
        let start = next_pos.saturating_sub(size);
        let mut all: Vec<u8> = (start..next_pos)
            .map(|pos| self.slot(pos).1.load(Ordering::Relaxed))
            .filter(|&o| o != EMPTY)
            .collect();
        let extra = all.len().saturating_sub(len as usize);
        all.drain(..extra);
        all
    }

    /// Changes the window's length, keeping the most recent outcomes that
    /// fit. `next_pos` is the position the next outcome will take. Not to
    /// be called by two threads at once (the breaker's configuration lock
    /// orders them).
    pub(crate) fn resize(&self, size: usize, next_pos: u64) {
        let size = size.max(1);
        let kept = self.outcomes(next_pos);
        self.clear();
        let old = self.ring();
        if size > old.slots.len() {
            // Before the new length (Release on both): whoever reads the
            // length below also finds this ring.
            old.grow(size);
            self.grown.store(1, Ordering::Release);
        }
        self.reciprocal
            .store(reciprocal(size as u64), Ordering::Relaxed);
        self.size.store(size as u64, Ordering::SeqCst);
        let keep = kept.len().min(size);
        self.replay(&kept[kept.len() - keep..], next_pos);
        // A call that read the old length or ring just before they changed
        // may have written, after the clear above, to a slot the window no
        // longer reads (beyond the new length, or in the old ring): take
        // that back, so that the tallies count only what the window holds.
        // A call that writes there after this sweep takes its own outcome
        // back (see `record`).
        let in_use = self.ring();
        for ring in self.ring.all() {
            if std::ptr::eq(ring, in_use) {
                for slot in &ring.slots[size.min(ring.slots.len())..] {
                    let old = slot.swap(EMPTY, Ordering::SeqCst);
                    self.adjust(old, EMPTY);
                }
            } else {
                self.clear_ring(ring);
            }
        }
    }

    /// Writes `outcomes` (oldest first) as the ones just before `next_pos`.
    pub(crate) fn replay(&self, outcomes: &[u8], next_pos: u64) {
        let size = self.size.load(Ordering::Relaxed);
        let outcomes = &outcomes[outcomes.len().saturating_sub(size as usize)..];
        let first = next_pos.wrapping_sub(outcomes.len() as u64);
        for (i, &o) in outcomes.iter().enumerate() {
            self.record(first.wrapping_add(i as u64), o);
        }
    }
}

fn reciprocal(size: u64) -> u64 {
    (u64::MAX / size).wrapping_add(1)
}

/// Moves `counter` by the change of one slot's property: up when the slot
/// gained it, down when it lost it.
fn bump(counter: &AtomicU32, before: bool, after: bool) {
    match (before, after) {
        (false, true) => {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
        _ => {}
    }
}

/// Number of buckets in a time window.
pub(crate) const BUCKETS: u64 = 10;

/// A bucket's tallies, packed in one word so that an outcome is added (or
/// refused as stale) by one compare-exchange: the window's clear count (its
/// low [`CLEAR_BITS`] bits) in the top bits, then the total, the failures
/// and the slow calls, [`COUNT_BITS`] bits each.
/// (10 bits: a bucket left untouched through exactly a multiple of 1024
/// clears, all within one window length, would read its old tallies again.)
const CLEAR_BITS: u32 = 64 - 3 * COUNT_BITS;
const COUNT_BITS: u32 = 18;
/// The most outcomes one bucket counts; later ones in the same bucket
/// period are not counted (the bucket's rates are those of its first
/// 262 143 outcomes).
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TOTAL_SHIFT: u32 = 2 * COUNT_BITS;
const FAILURES_SHIFT: u32 = COUNT_BITS;
/// The tallies' bits of a bucket word (the rest is the clear tag).
const COUNTS_MASK: u64 = (1 << (3 * COUNT_BITS)) - 1;

fn clear_tag(clears: u64) -> u64 {
    (clears & ((1 << CLEAR_BITS) - 1)) << (3 * COUNT_BITS)
}

fn unpack(counts: u64) -> Tally {
    Tally {
        len: (counts >> TOTAL_SHIFT) & COUNT_MAX,
        failures: (counts >> FAILURES_SHIFT) & COUNT_MAX,
        slow: counts & COUNT_MAX,
    }
}

#[derive(Debug, Default)]
struct Bucket {
    /// Index of the bucket period this bucket holds, plus one (0: empty).
    epoch: AtomicU64,
    /// The tallies, tagged with the clear count they were written under
    /// (see [`COUNT_BITS`]).
    counts: AtomicU64,
}

/// The outcomes of the last `window` microseconds, in ten buckets.
///
/// A clear only counts: buckets written before the latest clear carry an
/// older clear tag and are read as empty. An outcome is added by a
/// compare-exchange of its bucket's word after reading the clear count and
/// then checking (through `current`) that the outcome still belongs to the
/// window, in that order: a clear that comes after the check tags the
/// window anew, so the outcome lands under the old tag and is never read;
/// a clear that came before the read of the clear count was preceded by
/// the transition that made the outcome stale, which the check then sees.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_us: AtomicU64,
    clears: AtomicU64,
    buckets: [Bucket; BUCKETS as usize],
}

impl TimeWindow {
    pub(crate) fn new(window_us: u64) -> Self {
        let w = Self {
            bucket_us: AtomicU64::new(1),
            clears: AtomicU64::new(0),
            buckets: Default::default(),
        };
        w.set_length(window_us);
        w
    }

    /// Sets the window's length; outcomes are cleared when it changes.
    pub(crate) fn set_length(&self, window_us: u64) {
        let bucket = (window_us / BUCKETS).max(1);
        if self.bucket_us.swap(bucket, Ordering::Relaxed) != bucket {
            self.clear();
        }
    }

    /// Records `outcome` at `now_us`, unless `current()` says, after the
    /// window's clear count was read, that the outcome is stale (its
    /// generation is gone). Returns whether it was recorded.
    pub(crate) fn record(&self, now_us: u64, outcome: u8, current: impl Fn() -> bool) -> bool {
        let period = now_us / self.bucket_us.load(Ordering::Relaxed);
        let bucket = &self.buckets[(period % BUCKETS) as usize];
        let mut epoch = bucket.epoch.load(Ordering::SeqCst);
        let add = (1 << TOTAL_SHIFT)
            | if outcome & FAILURE != 0 {
                1 << FAILURES_SHIFT
            } else {
                0
            }
            | if outcome & SLOW != 0 { 1 } else { 0 };
        let mut seen = bucket.counts.load(Ordering::SeqCst);
        loop {
            // SeqCst: the clear count is read before `current` checks the
            // state word (see the type's docs), and a failed exchange below
            // is followed by a new check that sees what made it fail.
            let tag = clear_tag(self.clears.load(Ordering::SeqCst));
            if !current() {
                return false;
            }
            // A bucket of an older period, or written before the latest
            // clear, starts from zero.
            let fresh = epoch < period + 1 || seen & !COUNTS_MASK != tag;
            let base = if fresh { 0 } else { seen & COUNTS_MASK };
            if base >> TOTAL_SHIFT >= COUNT_MAX {
                return true; // full: not counted
            }
            if epoch < period + 1 {
                match bucket.epoch.compare_exchange(
                    epoch,
                    period + 1,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => {
                        // This thread moved the bucket to the new period:
                        // what it held goes. An outcome another thread adds
                        // meanwhile may be lost: that only under-counts.
                        bucket.counts.swap(tag | add, Ordering::SeqCst);
                        return true;
                    }
                    Err(e) => {
                        epoch = e;
                        seen = bucket.counts.load(Ordering::SeqCst);
                        continue;
                    }
                }
            }
            let new = tag | (base + add);
            match bucket
                .counts
                .compare_exchange(seen, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now_seen) => {
                    seen = now_seen;
                    epoch = bucket.epoch.load(Ordering::SeqCst);
                }
            }
        }
    }

    pub(crate) fn tally(&self, now_us: u64) -> Tally {
        let period = now_us / self.bucket_us.load(Ordering::Relaxed);
        let tag = clear_tag(self.clears.load(Ordering::SeqCst));
        let mut t = Tally::default();
        for b in &self.buckets {
            let epoch = b.epoch.load(Ordering::SeqCst);
            // A bucket counts while its period is one of the last BUCKETS.
            if epoch == 0 || epoch > period + 1 || epoch + BUCKETS <= period + 1 {
                continue;
            }
            let counts = b.counts.load(Ordering::SeqCst);
            if counts & !COUNTS_MASK != tag {
                continue; // written before the latest clear
            }
            let b = unpack(counts);
            t.len += b.len;
            t.failures += b.failures;
            t.slow += b.slow;
        }
        t.failures = t.failures.min(t.len);
        t.slow = t.slow.min(t.len);
        t
    }

    /// Empties the window: every bucket written so far reads as empty.
    pub(crate) fn clear(&self) {
        // SeqCst: see the type's docs.
        self.clears.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(breakwater_loom)))]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n() {
        let w = CountWindow::new(4);
        for (pos, o) in [FAILURE, FAILURE, SUCCESS, SUCCESS, SUCCESS, SUCCESS]
            .into_iter()
            .enumerate()
        {
            w.record(pos as u64, o);
        }
        assert_eq!(
            w.tally(),
            Tally {
                len: 4,
                failures: 0,
                slow: 0
            }
        );
        w.record(6, FAILURE | SLOW);
        assert_eq!(
            w.tally(),
            Tally {
                len: 4,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(
            w.outcomes(7),
            vec![SUCCESS, SUCCESS, SUCCESS, FAILURE | SLOW]
        );
    }

    #[test]
    fn fast_modulo_matches_the_remainder() {
        for size in [1u64, 2, 3, 7, 10, 100, 1000, 65_537, 1 << 20] {
            let w = CountWindow::new(size as usize);
            for pos in (0..5_000u64).chain([u32::MAX as u64 - 3, u32::MAX as u64]) {
                assert_eq!(w.index(pos) as u64, pos % size, "{pos} % {size}");
            }
        }
    }

    #[test]
    fn record_reports_when_the_rate_may_rise() {
        let w = CountWindow::new(2);
        assert!(w.record(0, SUCCESS).rise, "window grew");
        assert!(w.record(1, SUCCESS).rise, "window grew");
        assert_eq!(
            w.record(2, SUCCESS),
            Recorded::default(),
            "same outcome: nothing changed"
        );
        assert!(w.record(3, FAILURE).rise);
        let r = w.record(5, SUCCESS); // over the failure at 3
        assert!(r.wrote && !r.rise, "a success can only lower the rate");
        w.undo(5, SUCCESS);
        assert_eq!(
            w.tally(),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            },
            "taken back"
        );
        w.undo(2, FAILURE);
        assert_eq!(w.tally().len, 1, "the slot holds another outcome: kept");
    }

    #[test]
    fn clear_and_resize() {
        let w = CountWindow::new(5);
        for pos in 0..5 {
            w.record(pos, if pos % 2 == 0 { FAILURE } else { SUCCESS });
        }
        w.resize(3, 5);
        assert_eq!(w.outcomes(5), vec![FAILURE, SUCCESS, FAILURE]);
        assert_eq!(
            w.tally(),
            Tally {
                len: 3,
                failures: 2,
                slow: 0
            }
        );
        w.resize(5, 5);
        assert_eq!(w.tally().len, 3);
        w.clear();
        assert_eq!(w.tally(), Tally::default());
        assert_eq!(w.tally().failure_rate(), 0.0);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = TimeWindow::new(10_000); // 10 ms, 1 ms buckets
        w.record(0, FAILURE, || true);
        w.record(500, SUCCESS, || true);
        assert_eq!(
            w.tally(900),
            Tally {
                len: 2,
                failures: 1,
                slow: 0
            }
        );
        w.record(9_500, SUCCESS, || true);
        assert_eq!(w.tally(9_900).len, 3);
        // At 10.5 ms the first bucket (0..1 ms) has left the window.
        assert_eq!(
            w.tally(10_500),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            }
        );
        // Its slot is reused by a new period and starts from zero.
        w.record(10_600, FAILURE, || true);
        assert_eq!(
            w.tally(10_700),
            Tally {
                len: 2,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.tally(100_000), Tally::default());
    }

    #[test]
    fn time_window_counts_failures_and_slow_calls_apart() {
        let w = TimeWindow::new(10_000); // 10 ms, 1 ms buckets
        for o in [SUCCESS, FAILURE, FAILURE | SLOW, SUCCESS | SLOW, FAILURE] {
            assert!(w.record(100, o, || true));
        }
        assert_eq!(
            w.tally(200),
            Tally {
                len: 5,
                failures: 3,
                slow: 2
            }
        );
        // Over two buckets, the tallies add up.
        assert!(w.record(3_100, SUCCESS | SLOW, || true));
        assert_eq!(
            w.tally(3_200),
            Tally {
                len: 6,
                failures: 3,
                slow: 3
            }
        );
    }

    #[test]
    fn a_stale_outcome_is_refused_and_counted_nowhere() {
        let w = TimeWindow::new(10_000);
        assert!(!w.record(100, FAILURE, || false));
        assert_eq!(w.tally(200), Tally::default());
        assert!(w.record(100, FAILURE, || true));
        assert_eq!(w.tally(200).len, 1);
    }

    #[test]
    fn a_cleared_time_window_reads_empty_and_counts_again_from_zero() {
        let w = TimeWindow::new(10_000);
        w.record(100, FAILURE, || true);
        w.record(2_100, FAILURE, || true);
        w.clear();
        assert_eq!(w.tally(2_200), Tally::default());
        // The bucket written before the clear, in the same period, starts
        // again from zero.
        w.record(2_150, SUCCESS, || true);
        assert_eq!(
            w.tally(2_200),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            }
        );
        w.record(2_160, SUCCESS, || true);
        assert_eq!(w.tally(2_200).len, 2);
    }

    #[test]
    fn every_clear_empties_the_time_window_anew() {
        // A bucket left untouched reads as empty after any number of clears
        // below 1024 (the clear tag's range).
        let w = TimeWindow::new(10_000);
        w.record(100, FAILURE, || true);
        for clears in 1..1024 {
            w.clear();
            assert_eq!(w.tally(200), Tally::default(), "after {clears} clears");
        }
    }

    #[test]
    fn a_time_window_keeps_its_outcomes_unless_its_length_changes() {
        let w = TimeWindow::new(10_000);
        w.record(100, FAILURE, || true);
        w.set_length(10_000);
        assert_eq!(w.tally(200).len, 1);
        w.set_length(20_000);
        assert_eq!(w.tally(200), Tally::default());
    }

    #[test]
    fn a_full_bucket_stops_counting_until_its_next_period() {
        let w = TimeWindow::new(10_000);
        for _ in 0..COUNT_MAX {
            assert!(w.record(100, FAILURE, || true));
        }
        let full = Tally {
            len: COUNT_MAX,
            failures: COUNT_MAX,
            slow: 0,
        };
        assert_eq!(w.tally(200), full);
        // One more in the same period is not counted (it would carry into
        // the next field), and does not change the rates.
        assert!(w.record(200, SUCCESS | SLOW, || true));
        assert_eq!(w.tally(300), full);
        // The bucket's next period, one window later, starts from zero.
        assert!(w.record(10_100, SUCCESS, || true));
        assert_eq!(
            w.tally(10_200),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn a_tally_counts_no_bucket_of_a_later_period_than_its_own() {
        // A call that finished after the tally read the clock wrote a
        // bucket of a later period: it is not yet in the tally's window.
        let w = TimeWindow::new(10_000);
        w.record(1_100, FAILURE, || true);
        w.record(6_100, FAILURE, || true);
        assert_eq!(
            w.tally(5_500),
            Tally {
                len: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.tally(6_200).len, 2);
    }
}
