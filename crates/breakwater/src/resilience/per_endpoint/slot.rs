//! A registry map entry (a breaker and its use stamp) and the sweeps'
//! bookkeeping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::resilience::CircuitBreaker;

/// Set in a slot's stamp by every lookup since the last sweep.
pub(super) const USED: u64 = 1 << 63;

/// A map entry: the breaker and what sweeps need to know about its use.
pub(super) struct Slot {
    pub(super) breaker: Arc<CircuitBreaker>,
    /// Microseconds since the registry's epoch at which a sweep last found
    /// the slot used (or at which it was created), with [`USED`] set by
    /// every lookup since that sweep.
    pub(super) stamp: AtomicU64,
}

impl Slot {
    pub(super) fn new(breaker: Arc<CircuitBreaker>, now_us: u64) -> Self {
        Self {
            breaker,
            stamp: AtomicU64::new(now_us),
        }
    }

    /// Marks the slot used and hands out its breaker.
    #[inline]
    pub(super) fn touch(&self) -> Arc<CircuitBreaker> {
        // Relaxed: the bit is a hint for sweeps and publishes nothing. The
        // load keeps the common case (already marked) free of writes, so
        // threads sharing an endpoint do not contend on this cache line.
        if self.stamp.load(Ordering::Relaxed) & USED == 0 {
            self.stamp.fetch_or(USED, Ordering::Relaxed);
        }
        self.breaker.clone()
    }

    /// Whether nothing used the slot since the last sweep and nobody but
    /// the map holds its breaker. Meaningful under the shard's write lock,
    /// where no lookup can hand out a new `Arc`.
    pub(super) fn unused(&self) -> bool {
        self.stamp.load(Ordering::Relaxed) & USED == 0 && Arc::strong_count(&self.breaker) == 1
    }
}

/// When sweeps ran and may run. The times are hints that publish nothing
/// (Relaxed); only `running` orders one sweep after the previous one.
#[derive(Default)]
pub(super) struct Sweeps {
    /// Set while a sweep runs (sweeps are single-flight).
    pub(super) running: AtomicBool,
    /// When the last sweep started (µs since the epoch).
    pub(super) last_us: AtomicU64,
    /// No sweep to make room before this, after one that freed nothing.
    pub(super) futile_until_us: AtomicU64,
    /// No warning about a full registry before this.
    pub(super) quiet_until_us: AtomicU64,
}

/// Clears the single-flight flag when a sweep ends, even by a panic.
pub(super) struct SweepGuard<'a>(pub(super) &'a AtomicBool);

impl Drop for SweepGuard<'_> {
    fn drop(&mut self) {
        // Release: the next sweep sees the stamps this one wrote.
        self.0.store(false, Ordering::Release);
    }
}
