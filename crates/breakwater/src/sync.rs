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
