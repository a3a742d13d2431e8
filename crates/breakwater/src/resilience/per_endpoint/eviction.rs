//! The eviction engine: the miss path, sweeps of idle breakers, the cap
//! and the overflow breakers. The public documentation of eviction is on
//! [`PerEndpointCircuitBreaker`].

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;

use super::slot::{Slot, SweepGuard, USED};
use super::{PerEndpointCircuitBreaker, OVERFLOW_LANES};
use crate::resilience::{CircuitBreaker, CircuitState};

impl PerEndpointCircuitBreaker {
    /// Sweeps if the last sweep is a sweep period old (as a miss does).
    /// Returns the time it read.
    pub(in crate::resilience) fn sweep_if_due(&self) -> u64 {
        let now = self.now_us();
        if now.saturating_sub(self.sweeps.last_us.load(Ordering::Relaxed)) >= self.period_us() {
            self.sweep(now, false);
        }
        now
    }

    /// The miss path of [`get_or_create`](Self::get_or_create).
    #[cold]
    #[inline(never)]
    pub(super) fn create(&self, endpoint: &str) -> Arc<CircuitBreaker> {
        let now = self.sweep_if_due();
        let reserved = self.reserve() || (self.make_room(now) && self.reserve());
        if !reserved {
            // Another thread may have created it meanwhile.
            if let Some(breaker) = self.get(endpoint) {
                return breaker;
            }
            return self.overflow(endpoint, now);
        }
        match self.breakers.entry(endpoint.into()) {
            Entry::Occupied(slot) => {
                self.retained.fetch_sub(1, Ordering::Relaxed);
                slot.get().touch()
            }
            Entry::Vacant(vacant) => {
                // The configuration is read under the shard lock (see `set_config`).
                // It was validated, so `new` cannot panic.
                let breaker = Arc::new(self.new_breaker(endpoint));
                vacant.insert(Slot::new(breaker.clone(), now));
                breaker
            }
        }
    }

    /// Takes one of the `max_endpoints` places, if one is free.
    pub(super) fn reserve(&self) -> bool {
        // Relaxed: a count; the map's own locks order the insertions.
        self.retained
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limits.max_endpoints).then_some(n + 1)
            })
            .is_ok()
    }

    /// Sweeps to free places in a full registry, unless a sweep freed
    /// nothing less than a sweep period ago. Returns whether it freed any.
    pub(super) fn make_room(&self, now: u64) -> bool {
        if now < self.sweeps.futile_until_us.load(Ordering::Relaxed) {
            return false;
        }
        match self.sweep(now, true) {
            Some(0) => {
                let until = now.saturating_add(self.period_us());
                self.sweeps.futile_until_us.store(until, Ordering::Relaxed);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The overflow breaker `endpoint` shares with the other endpoints of
    /// its lane, while the registry is full.
    pub(super) fn overflow(&self, endpoint: &str, now: u64) -> Arc<CircuitBreaker> {
        let n = self.overflows.fetch_add(1, Ordering::Relaxed) + 1;
        let quiet = self.sweeps.quiet_until_us.load(Ordering::Relaxed);
        let next = now.saturating_add(self.period_us());
        if now >= quiet
            && self
                .sweeps
                .quiet_until_us
                .compare_exchange(quiet, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_endpoints = self.limits.max_endpoints,
                overflows = n,
                "per-endpoint breaker registry is full of open, half-open or busy breakers; \
                 new endpoints share overflow breakers until room frees up"
            );
        }
        let lane = self.breakers.hasher().hash_one(endpoint) as usize % OVERFLOW_LANES;
        self.lanes[lane]
            .get_or_init(|| {
                Arc::new(
                    CircuitBreaker::with_shared_config(self.default_config.clone())
                        .expect("the default configuration was validated by the constructor")
                        .join(format!("_overflow{lane}").into(), &self.hub),
                )
            })
            .clone()
    }

    /// Evicts idle breakers and, with `make_room`, least recently used
    /// Closed ones until a sixteenth of the cap is free. Returns how many
    /// went, or `None` if another sweep is running.
    pub(super) fn sweep(&self, now: u64, make_room: bool) -> Option<usize> {
        // Acquire: see the stamps the previous sweep wrote.
        if self
            .sweeps
            .running
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let _running = SweepGuard(&self.sweeps.running);
        self.sweeps.last_us.store(now, Ordering::Relaxed);
        let ttl = self.ttl_us();
        let abandoned_ttl = self.abandoned_ttl_us();

        // Under each shard's read lock in turn, only the slots' own atomics
        // are touched: stamp the used ones, list the idle ones.
        let mut idle = Vec::new();
        let mut ages = Vec::new();
        for r in self.breakers.iter() {
            let slot = r.value();
            let mut stamp = slot.stamp.load(Ordering::Relaxed);
            let held = Arc::strong_count(&slot.breaker) > 1;
            if stamp & USED != 0 || held {
                // In use (looked up, or held by a running call or a caller):
                // idle from now at the earliest. A lookup racing this store
                // may lose its bit; harmless, as the stamp becomes `now`.
                slot.stamp.store(now, Ordering::Relaxed);
                stamp = now;
            }
            if held {
                continue;
            }
            let age = now.saturating_sub(stamp);
            if age >= ttl {
                idle.push((r.key().clone(), age >= abandoned_ttl));
            } else if make_room {
                ages.push(stamp);
            }
        }
        let mut evicted = idle
            .iter()
            .filter(|(key, abandoned)| self.evict(key, *abandoned))
            .count();

        if make_room {
            let target = self.limits.max_endpoints - (self.limits.max_endpoints / 16).max(1);
            let need = self.len().saturating_sub(target);
            if need > 0 && !ages.is_empty() {
                // The `need` oldest stamps, then the keys that carry them.
                let nth = need.min(ages.len()) - 1;
                let cutoff = *ages.select_nth_unstable(nth).1;
                let mut oldest: Vec<(u64, Box<str>)> = self
                    .breakers
                    .iter()
                    .filter(|r| r.value().stamp.load(Ordering::Relaxed) <= cutoff)
                    .map(|r| (r.value().stamp.load(Ordering::Relaxed), r.key().clone()))
                    .collect();
                oldest.sort_unstable_by_key(|(stamp, _)| *stamp);
                for (_, key) in oldest {
                    if self.len() <= target {
                        break;
                    }
                    evicted += usize::from(self.evict(&key, false));
                }
            }
        }
        if evicted > 0 && self.len() * 4 < self.breakers.capacity() {
            self.breakers.shrink_to_fit();
        }
        Some(evicted)
    }

    /// Removes `key`'s breaker if it is Closed (or, with `abandoned`,
    /// HalfOpen with no probe in flight), unused since the last sweep and
    /// held by nobody else.
    pub(super) fn evict(&self, key: &str, abandoned: bool) -> bool {
        let Some(breaker) = self.breakers.get(key).map(|s| s.breaker.clone()) else {
            return false;
        };
        // Outside every lock: on an expired opening, `state` moves the
        // breaker to HalfOpen and runs listeners. A Closed breaker that
        // nobody holds stays Closed, and an abandoned HalfOpen one admits
        // no probe: only calls and admin methods through a handle change
        // them, and a handle comes from a lookup, which marks the slot used.
        let evictable = match breaker.state() {
            CircuitState::Closed => true,
            CircuitState::HalfOpen => abandoned && breaker.is_idle_half_open(),
            CircuitState::Open => false,
        };
        if !evictable {
            return false;
        }
        let checked = Arc::as_ptr(&breaker);
        drop(breaker);
        let removed = self
            .breakers
            .remove_if(key, |_, slot| {
                std::ptr::eq(Arc::as_ptr(&slot.breaker), checked) && slot.unused()
            })
            .is_some();
        if removed {
            self.retained.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }
}
