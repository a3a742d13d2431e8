//! Windows and backlogs: what each endpoint keeps in memory, and what it
//! leaves in the store.
//!
//! An endpoint's *window* is the part of its work held in memory: actions
//! queued in its lane, parked or waiting in the timer, or running. It is
//! bounded in actions and in bytes (`max_pending_per_endpoint`,
//! `max_pending_bytes_per_endpoint`; all windows together by `max_pending`
//! and `max_pending_bytes`). Everything beyond it is the endpoint's
//! *backlog*: stored, unclaimed, and in no memory at all. An endpoint that is
//! down for an hour thus costs one window of memory and an hour of disk;
//! intake never refuses an event because of it.
//!
//! **Order.** Once an endpoint has a backlog, its new actions join the
//! backlog too (rather than overtaking it in memory), until the backlog is
//! read back empty. The backlog is read back by the endpoint's *pager*, a
//! page at a time, earliest due first, whenever its window has room for a
//! page: a recovering endpoint is fed at the rate it completes actions, not
//! flooded.
//!
//! **Knowing the backlog is empty.** The pager may only clear the flag
//! "this endpoint has a backlog" when the store says none is left *and* no
//! intake wrote one meanwhile: intake counts the backlogged actions it is
//! writing (`spilling`) and bumps a sequence number once they are stored;
//! the pager clears the flag only when nothing is being written and the
//! sequence is the one it read before its claim. The sweep sets the flag
//! for endpoints the store reports work for (after a restart, a replay, an
//! endpoint enabled again), which is never wrong: a pager that finds
//! nothing clears it again.
//!
//! **Progress.** An endpoint that holds nothing always takes its next
//! action, however large; and each endpoint may hold twice its
//! `max_in_flight_per_endpoint` whatever the others hold, so endpoints that
//! are down and fill `max_pending` between them never starve a healthy one.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::lane::Lane;
use super::{unix_ms, Engine};
use crate::config::DeliveryConfig;
use crate::store::{Claimed, PendingAction, Update};

/// The most actions one page of a backlog holds.
pub(super) const PAGE: usize = 512;
/// The most actions of the first page, before the size of an endpoint's
/// actions is known.
const FIRST_PAGE: usize = 16;
/// Actions due within this long are read back with those due now (and
/// wait in the timer): the sweep that finds the later ones runs every
/// second.
pub(super) const PAGE_AHEAD_MS: i64 = 1_000;

/// Actions, and the bytes of memory they are counted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Load {
    pub(super) actions: usize,
    pub(super) bytes: usize,
}

impl Load {
    /// One action of `size` bytes.
    pub(super) fn one(size: usize) -> Self {
        Self {
            actions: 1,
            bytes: size,
        }
    }

    pub(super) fn add(&mut self, other: Load) {
        self.actions += other.actions;
        self.bytes += other.bytes;
    }
}

/// Actions and bytes held in memory, by one endpoint or by all.
#[derive(Debug, Default)]
pub(super) struct Usage {
    actions: AtomicUsize,
    bytes: AtomicUsize,
}

impl Usage {
    pub(super) fn get(&self) -> Load {
        Load {
            actions: self.actions.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Acquire),
        }
    }

    pub(super) fn add(&self, l: Load) {
        self.actions.fetch_add(l.actions, Ordering::AcqRel);
        self.bytes.fetch_add(l.bytes, Ordering::AcqRel);
    }

    /// Takes `l` back (never below zero, even if a load were given back
    /// twice).
    pub(super) fn sub(&self, l: Load) {
        for (counter, n) in [(&self.actions, l.actions), (&self.bytes, l.bytes)] {
            if n > 0 {
                let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    Some(v.saturating_sub(n))
                });
            }
        }
    }

    /// Whether `l` more stays within `cap`.
    pub(super) fn fits(&self, l: Load, cap: Load) -> bool {
        let now = self.get();
        now.actions + l.actions <= cap.actions && now.bytes + l.bytes <= cap.bytes
    }
}

/// The limits of one endpoint's window and of all of them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    pub(super) endpoint: Load,
    pub(super) all: Load,
    /// Actions an endpoint may hold whatever the others hold.
    pub(super) floor: usize,
}

impl Caps {
    pub(super) fn of(d: &DeliveryConfig) -> Self {
        Self {
            endpoint: Load {
                actions: d.endpoint_cap(),
                bytes: d.endpoint_bytes_cap(),
            },
            all: Load {
                actions: d.max_pending,
                bytes: d.max_pending_bytes,
            },
            floor: d.max_in_flight_per_endpoint.saturating_mul(2),
        }
    }

    /// Whether `lane` may take `l` more into memory, all windows holding
    /// `all`.
    pub(super) fn admit(&self, lane: &Usage, all: &Usage, l: Load) -> bool {
        let held = lane.get();
        if held.actions == 0 {
            return true;
        }
        lane.fits(l, self.endpoint) && (held.actions < self.floor || all.fits(l, self.all))
    }
}

/// What the pager must know of the backlog, under one lock.
#[derive(Debug, Default)]
struct Flag {
    /// The endpoint may have a backlog: new actions join it.
    on_disk: bool,
    /// Backlogged actions intake is storing now.
    spilling: usize,
    /// Bumped whenever backlogged actions were stored or found.
    seq: u64,
}

/// One endpoint's backlog: whether it has one, how large it is.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    flag: Mutex<Flag>,
    /// `flag.on_disk`, read without the lock where a stale answer only
    /// costs a wake-up.
    on_disk: AtomicBool,
    /// Wakes the endpoint's pager.
    pub(super) wake: Notify,
    /// The endpoint's waiting actions in the store (pending or parked, in
    /// memory or not): as last counted, plus what was stored and finished
    /// since.
    waiting: AtomicI64,
    /// When the oldest of them was accepted (Unix ms), as last counted; 0
    /// when none.
    oldest_ms: AtomicI64,
    /// Past `max_backlog_per_endpoint` (warned once a crossing).
    pub(super) over_quota: AtomicBool,
    /// The mean size of the actions of the last page read back (0 before
    /// the first): a page is sized to the window's bytes with it.
    mean_size: AtomicUsize,
}

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Flag> {
        self.flag.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `l` into `lane`'s window if this instance is `delivering` to
    /// the endpoint, it has no backlog and `caps` allow it (`true`);
    /// otherwise the action joins the backlog and counts as being stored
    /// (`false`, see [`Backlog::stored`]).
    pub(super) fn admit_or_spill(
        &self,
        lane: &Usage,
        all: &Usage,
        caps: &Caps,
        l: Load,
        delivering: bool,
    ) -> bool {
        let mut flag = self.lock();
        if delivering && !flag.on_disk && caps.admit(lane, all, l) {
            lane.add(l);
            all.add(l);
            return true;
        }
        flag.on_disk = true;
        flag.spilling += 1;
        self.on_disk.store(true, Ordering::Release);
        false
    }

    /// `n` backlogged actions are written (or failed to be).
    pub(super) fn stored(&self, n: usize) {
        if n > 0 {
            let mut flag = self.lock();
            flag.spilling = flag.spilling.saturating_sub(n);
            flag.seq += 1;
        }
    }

    /// The store holds unclaimed work of this endpoint.
    pub(super) fn mark(&self) {
        let mut flag = self.lock();
        flag.on_disk = true;
        flag.seq += 1;
        self.on_disk.store(true, Ordering::Release);
    }

    /// Whether the endpoint may have a backlog.
    pub(super) fn is_on_disk(&self) -> bool {
        self.on_disk.load(Ordering::Acquire)
    }

    /// The sequence number, when the endpoint may have a backlog.
    fn on_disk_seq(&self) -> Option<u64> {
        let flag = self.lock();
        flag.on_disk.then_some(flag.seq)
    }

    /// The store had nothing left due as of a claim made after reading
    /// `seq`: the flag is cleared unless backlogged actions were stored or
    /// found since.
    fn drained(&self, seq: u64) {
        let mut flag = self.lock();
        if flag.spilling == 0 && flag.seq == seq {
            flag.on_disk = false;
            self.on_disk.store(false, Ordering::Release);
        }
    }

    /// Waiting actions, as last counted plus changes since.
    pub(super) fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire).max(0).unsigned_abs()
    }

    /// `n` more waiting actions stored.
    pub(super) fn add_waiting(&self, n: u64) {
        if n > 0 {
            self.waiting
                .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
        }
    }

    /// One waiting action delivered, dead-lettered or held.
    pub(super) fn finished(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// The raw count, to pass to [`Backlog::counted`] as it was before the
    /// store was asked.
    pub(super) fn waiting_raw(&self) -> i64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// The store's count: `waiting` actions, the oldest accepted at
    /// `oldest_ms`; `before` is [`Backlog::waiting_raw`] from just before the
    /// store was asked. What the engine stored and finished while the store
    /// counted is kept on top of the count (an action stored or finished
    /// across the very moment of the count may be off by one until the next
    /// count).
    pub(super) fn counted(&self, before: i64, waiting: u64, oldest_ms: Option<i64>) {
        let count = i64::try_from(waiting).unwrap_or(i64::MAX);
        let _ = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(count.saturating_add(now - before))
            });
        self.oldest_ms
            .store(oldest_ms.unwrap_or(0), Ordering::Release);
    }

    /// Milliseconds since the oldest waiting action was accepted, as last
    /// counted (`None` when nothing waits).
    pub(super) fn oldest_age_ms(&self, now_ms: i64) -> Option<u64> {
        let oldest = self.oldest_ms.load(Ordering::Acquire);
        (oldest > 0 && self.waiting() > 0).then(|| (now_ms - oldest).max(0).unsigned_abs())
    }
}

impl Engine {
    /// Reads `lane`'s backlog back into its window, a page at a time, while
    /// it has one and the window has room for a page.
    pub(super) async fn page_in(&self, lane: &Arc<Lane>) {
        loop {
            if self.is_stopping() || lane.disabled().is_some() || !lane.delivering() {
                return;
            }
            let Some(seq) = lane.backlog.on_disk_seq() else {
                return;
            };
            let caps = Caps::of(&self.settings().delivery);
            let held = lane.held.get();
            // Room in actions, and in bytes by the size of the last page's.
            let room = caps.endpoint.actions.saturating_sub(held.actions);
            let bytes_room = caps.endpoint.bytes.saturating_sub(held.bytes);
            let by_bytes = match lane.backlog.mean_size.load(Ordering::Relaxed) {
                0 => FIRST_PAGE,
                mean => bytes_room / mean,
            };
            let limit = room.min(by_bytes).min(PAGE);
            // A page at a time (or whatever fits a small window), unless
            // the window is empty: then at least one action.
            let page = PAGE.min(caps.endpoint.actions.div_ceil(2)).max(1);
            if held.actions > 0 && limit < page.min(by_bytes.max(1)) {
                return;
            }
            if held.actions >= caps.floor && !self.inner.held.fits(Load::one(0), caps.all) {
                // Every window together is full: the sweep tries again.
                return;
            }
            let limit = limit.max(1);
            let due_by = unix_ms().saturating_add(PAGE_AHEAD_MS);
            let Claimed { actions, more } = match self
                .inner
                .store
                .claim_backlog(&lane.endpoint, limit, due_by)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(endpoint = %lane.endpoint, error = %e,
                        "reading the endpoint's backlog failed; tried again within a second");
                    return;
                }
            };
            let got = actions.len();
            let mut back = Vec::new();
            let mut bytes = 0;
            for mut action in actions {
                action.size = action.event.size();
                bytes += action.size;
                let l = Load::one(action.size);
                if caps.admit(&lane.held, &self.inner.held, l) {
                    lane.held.add(l);
                    self.inner.held.add(l);
                    self.route(action);
                } else {
                    back.push(Update::Released { id: action.id });
                }
            }
            if let Some(mean) = bytes.checked_div(got) {
                lane.backlog.mean_size.store(mean.max(1), Ordering::Relaxed);
            }
            self.publish_depth();
            let full = !back.is_empty();
            if full {
                // Over the window's bytes: handed back, read again later.
                if let Err(e) = self.inner.store.apply(back).await {
                    tracing::warn!(endpoint = %lane.endpoint, error = %e,
                        "handing actions back to the backlog failed; they are read again after a restart");
                }
            }
            if !more && !full {
                lane.backlog.drained(seq);
            }
            if got < limit || full {
                return;
            }
        }
    }
}

/// Reads an endpoint's backlog back whenever woken: by a delivery that
/// freed room in its window, by intake storing a backlog, or by the sweep.
pub(super) async fn pager_task(engine: Engine, lane: Arc<Lane>) {
    let stop = engine.inner.stop.clone();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = lane.backlog.wake.notified() => {}
        }
        engine.page_in(&lane).await;
    }
}

impl PendingAction {
    /// What it is counted for in its window.
    pub(super) fn load(&self) -> Load {
        Load::one(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(endpoint: usize, all: usize, floor: usize) -> Caps {
        Caps {
            endpoint: Load {
                actions: endpoint,
                bytes: 1000,
            },
            all: Load {
                actions: all,
                bytes: 10_000,
            },
            floor,
        }
    }

    #[test]
    fn a_window_takes_what_fits_and_then_everything_joins_the_backlog() {
        let (lane, all, b) = (Usage::default(), Usage::default(), Backlog::default());
        let c = caps(2, 100, 0);
        assert!(b.admit_or_spill(&lane, &all, &c, Load::one(10), true));
        assert!(b.admit_or_spill(&lane, &all, &c, Load::one(10), true));
        assert!(
            !b.admit_or_spill(&lane, &all, &c, Load::one(10), true),
            "full"
        );
        lane.sub(Load::one(10));
        // Room again, but the backlog is older: this one joins it.
        assert!(!b.admit_or_spill(&lane, &all, &c, Load::one(10), true));
        assert_eq!(
            all.get(),
            Load {
                actions: 2,
                bytes: 20
            }
        );
    }

    #[test]
    fn an_empty_window_takes_one_action_however_large() {
        let (lane, all, b) = (Usage::default(), Usage::default(), Backlog::default());
        let c = caps(10, 100, 0);
        assert!(b.admit_or_spill(&lane, &all, &c, Load::one(5_000), true));
        assert!(
            !b.admit_or_spill(&lane, &all, &c, Load::one(1), true),
            "bytes"
        );
    }

    #[test]
    fn each_endpoint_keeps_its_floor_when_all_windows_are_full() {
        let (lane, all) = (Usage::default(), Usage::default());
        all.add(Load {
            actions: 100,
            bytes: 0,
        });
        let b = Backlog::default();
        let c = caps(10, 100, 2);
        assert!(b.admit_or_spill(&lane, &all, &c, Load::one(1), true));
        assert!(b.admit_or_spill(&lane, &all, &c, Load::one(1), true));
        assert!(
            !b.admit_or_spill(&lane, &all, &c, Load::one(1), true),
            "past its floor"
        );
    }

    #[test]
    fn the_flag_is_cleared_only_when_no_backlog_was_stored_meanwhile() {
        let b = Backlog::default();
        let (lane, all) = (Usage::default(), Usage::default());
        let c = caps(0, 0, 0);
        lane.add(Load::one(1));
        assert!(!b.admit_or_spill(&lane, &all, &c, Load::one(1), true));
        // The pager reads the sequence, claims, finds nothing...
        let seq = b.on_disk_seq().unwrap();
        // ... while that action is still being written: kept.
        b.drained(seq);
        assert!(b.is_on_disk());
        b.stored(1);
        // Written after the pager's read: kept again.
        b.drained(seq);
        assert!(b.is_on_disk());
        // A claim after the write that finds nothing clears it.
        let seq = b.on_disk_seq().unwrap();
        b.drained(seq);
        assert!(!b.is_on_disk());
        // The sweep found work: set again.
        b.mark();
        assert!(b.on_disk_seq().is_some());
    }
}
