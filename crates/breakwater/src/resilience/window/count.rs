//! The count window: the last `sample_size` outcomes in a ring of one
//! byte a slot (see the [module docs](super)).

use std::sync::OnceLock;

use super::{Tally, EMPTY, FAILURE, SLOW};
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};

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
    /// Whether the window is full of plain successes, and who is changing
    /// it: [`CALM`] | changes in progress ([`BUSY`] each) | an epoch that
    /// every finished change moves on (see [`is_calm`](Self::is_calm)).
    calm: AtomicU64,
}

/// Bit of [`CountWindow::calm`]: every slot holds a plain success, and
/// nothing has changed a slot since that was checked.
const CALM: u64 = 1;
/// One change of the slots in progress (bits 1 to 31 count them).
const BUSY: u64 = 2;
const BUSY_MASK: u64 = 0xFFFF_FFFE;
/// One finished change (the bits above count them, wrapping).
const EPOCH: u64 = 1 << 32;

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
            calm: AtomicU64::new(0),
        }
    }

    /// Whether every slot holds a plain success and no change of the slots
    /// has begun since that was checked. Then a success recorded anywhere
    /// in the window would overwrite a success: the caller may leave the
    /// window alone (and its position unused: every slot being the same,
    /// which one the next outcome lands in makes no difference).
    ///
    /// Every change of a slot (and of the length or ring) happens inside
    /// [`change`](Self::change), which clears the flag before it touches
    /// anything, so a caller that still sees the flag is ordered before
    /// that change; the flag is set again only by [`settle`](Self::settle),
    /// when no change is in progress or began while it checked the tallies.
    #[inline(always)]
    pub(crate) fn is_calm(&self) -> bool {
        // SeqCst, as the changes' marks are: a reader that sees the flag
        // precedes, in the single total order, every change that cleared it.
        self.calm.load(Ordering::SeqCst) & CALM != 0
    }

    /// Runs `f`, which changes slots, tallies, the length or the ring,
    /// marked as a change in progress; afterwards sets the calm flag if the
    /// window is full of successes.
    fn change<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.calm.fetch_add(BUSY, Ordering::SeqCst);
        if before & CALM != 0 {
            // No `settle` can set the flag again while we are counted.
            self.calm.fetch_and(!CALM, Ordering::SeqCst);
        }
        let r = f();
        // One change fewer in progress, and a new epoch: a `settle` that
        // began before this change ended fails its compare-exchange.
        let after = self
            .calm
            .fetch_add(EPOCH.wrapping_sub(BUSY), Ordering::SeqCst)
            .wrapping_add(EPOCH.wrapping_sub(BUSY));
        self.settle(after);
        r
    }

    /// Sets the calm flag if the window is full of plain successes, unless
    /// a change is in progress or `seen` is no longer the current mark.
    ///
    /// When `seen` had no change in progress and is still current at the
    /// compare-exchange, no change ran in between: the slots and tallies
    /// did not move while we read them, and the tallies were exact (every
    /// change adjusts them before it ends).
    fn settle(&self, seen: u64) {
        if seen & (CALM | BUSY_MASK) != 0 {
            return;
        }
        let size = self.size.load(Ordering::SeqCst);
        if self.filled.load(Ordering::SeqCst) as u64 == size
            && self.failures.load(Ordering::SeqCst) == 0
            && self.slow.load(Ordering::SeqCst) == 0
        {
            // A lost race means a change began: it will settle when done.
            let _ =
                self.calm
                    .compare_exchange(seen, seen | CALM, Ordering::SeqCst, Ordering::SeqCst);
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
        self.change(|| self.write_slot(index, slot, outcome))
    }

    fn write_slot(&self, index: usize, slot: &AtomicU8, outcome: u8) -> Recorded {
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
        self.change(|| {
            let (_, slot) = self.slot(pos);
            if slot
                .compare_exchange(outcome, EMPTY, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.adjust(outcome, EMPTY);
            }
        });
    }

    /// The slot of the `pos`-th outcome: `pos % size`, for the low 32 bits of
    /// `pos` (so the ring skips once every 2^32 outcomes, which only means
    /// one outcome leaves the window early).
    #[inline]
    pub(super) fn index(&self, pos: u64) -> usize {
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
        self.change(|| self.clear_ring(self.ring()));
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
        self.change(|| self.resize_now(size, next_pos));
    }

    fn resize_now(&self, size: usize, next_pos: u64) {
        let size = size.max(1);
        let kept = self.outcomes(next_pos);
        self.clear_ring(self.ring());
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
        // One change: the window is judged calm (or not) once, at the end.
        self.change(|| {
            let size = self.size.load(Ordering::Relaxed);
            let outcomes = &outcomes[outcomes.len().saturating_sub(size as usize)..];
            let first = next_pos.wrapping_sub(outcomes.len() as u64);
            for (i, &o) in outcomes.iter().enumerate() {
                self.record(first.wrapping_add(i as u64), o);
            }
        });
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
