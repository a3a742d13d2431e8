//! The time window: ten buckets, each a tenth of `window_ms` (see the
//! [module docs](super)).

use super::{Tally, FAILURE, SLOW};
use crate::sync::{AtomicU64, Ordering};

/// Number of buckets in a time window.
const BUCKETS: u64 = 10;

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
pub(super) const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
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
