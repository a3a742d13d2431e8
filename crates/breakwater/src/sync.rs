//! The atomics the state machine is built from, switched to `loom`'s model
//! checker under `--cfg breakwater_loom` so the same code is explored there.
//!
//! A custom cfg (rather than `loom`) keeps tokio and the other dependencies on
//! their ordinary builds while breakwater's own atomics are modelled.

#[cfg(breakwater_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(not(breakwater_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Keeps a hot atomic on a cache line of its own, so that threads writing it
/// do not slow down threads that only read its neighbours.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Which of two stripes the calling thread counts in: drawn once per
/// thread, in turn from a global counter, so that two threads never share
/// one (see `Core::stripe`).
#[cfg(not(breakwater_loom))]
#[inline(always)]
pub(crate) fn thread_stripe() -> usize {
    use std::cell::Cell;

    /// Not drawn yet.
    const UNSET: u8 = u8::MAX;
    thread_local! {
        static STRIPE: Cell<u8> = const { Cell::new(UNSET) };
    }
    #[cold]
    #[inline(never)]
    fn draw(cell: &Cell<u8>) -> usize {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // Relaxed: any stripe is correct; turns only spread the threads.
        let stripe = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 1;
        cell.set(stripe as u8);
        stripe
    }
    STRIPE.with(|cell| match cell.get() {
        UNSET => draw(cell),
        stripe => stripe as usize,
    })
}

/// As above, with loom's thread-locals and counter, so that every execution
/// of a model hands out the same stripes.
#[cfg(breakwater_loom)]
pub(crate) fn thread_stripe() -> usize {
    use std::cell::Cell;

    loom::lazy_static! {
        static ref NEXT: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static STRIPE: Cell<Option<usize>> = Cell::new(None);
    }
    STRIPE.with(|cell| {
        cell.get().unwrap_or_else(|| {
            let stripe = NEXT.fetch_add(1, Ordering::Relaxed) & 1;
            cell.set(Some(stripe));
            stripe
        })
    })
}
