//! The sweep: finds the endpoints whose backlog in the store has work due
//! (after a restart, a replay, an endpoint enabled again, or actions that
//! came due) and wakes their pagers; counts every endpoint's waiting
//! actions now and then.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::window::PAGE_AHEAD_MS;
use super::{unix_ms, Engine};

/// How often the store is swept for backlogs with work due.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often every endpoint's waiting actions are counted in the store
/// (between counts, the engine adds what it stores and finishes).
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// How often the fleet's shares are looked at.
const SHARE_EVERY: Duration = Duration::from_millis(100);

impl Engine {
    /// Checks the store, marks the endpoints with backlogged work due and
    /// wakes their pagers.
    async fn sweep(&self) {
        if self.is_stopping() {
            return;
        }
        let _ = self.check_store();
        // Relaxed: see `Engine::replayed`.
        if self.inner.recount.swap(false, Ordering::Relaxed) {
            self.count_backlogs().await;
        }
        self.follow_admin().await;
        self.reshare();
        let due_by = unix_ms().saturating_add(PAGE_AHEAD_MS);
        match self.inner.store.backlogged_endpoints(due_by).await {
            Ok(endpoints) => {
                for endpoint in endpoints {
                    let lane = self.lane(&endpoint);
                    lane.backlog.mark();
                    lane.backlog.wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "looking for backlogged work failed"),
        }
    }

    /// Whether the store can keep what it is given; publishes it
    /// (`store_up`) and logs each change.
    pub(super) fn check_store(&self) -> Result<(), String> {
        if let Some(fleet) = self.inner.store.fleet() {
            let m = &self.inner.metrics.stale_outcomes;
            m.inc_by(fleet.stale_outcomes.saturating_sub(m.get()));
        }
        let result = self.inner.store.check().map_err(|e| e.to_string());
        let up = i64::from(result.is_ok());
        let was = self.inner.metrics.store_up.set(up);
        match &result {
            Err(e) if was != 0 => {
                tracing::error!(error = %e, "the store cannot keep events: intake answers 503")
            }
            Ok(()) if was == 0 => tracing::info!("the store is back: intake takes events again"),
            _ => {}
        }
        result
    }

    /// Counts every endpoint's waiting actions in the store (which corrects
    /// what the engine cannot see: a `dlq replay` or `purge` from another
    /// process).
    pub(super) async fn count_backlogs(&self) {
        let lanes = self.lanes();
        let before: Vec<i64> = lanes.iter().map(|l| l.backlog.waiting_raw()).collect();
        match self.inner.store.backlogs().await {
            Ok(counts) => {
                for (lane, before) in lanes.iter().zip(before) {
                    let found = counts.iter().find(|b| b.endpoint == lane.endpoint);
                    lane.backlog.counted(
                        before,
                        found.map_or(0, |b| b.waiting),
                        found.and_then(|b| b.oldest_ms),
                    );
                }
                for b in counts {
                    if !lanes.iter().any(|l| l.endpoint == b.endpoint) {
                        // An endpoint no longer configured, with work left:
                        // a lane of its own delivers it.
                        let lane = self.lane(&b.endpoint);
                        lane.backlog
                            .counted(lane.backlog.waiting_raw(), b.waiting, b.oldest_ms);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting the endpoints' backlogs failed"),
        }
    }
}

pub(super) async fn sweep_task(engine: Engine) {
    let stop = engine.inner.stop.clone();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count = tokio::time::interval(COUNT_EVERY);
    count.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The fleet's shares are looked at more often than the rest (an atomic
    // load): a newcomer starts delivering, and the others shrink, within a
    // tenth of a second of the heartbeat that counted it.
    let mut share = tokio::time::interval(SHARE_EVERY);
    share.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = count.tick() => {
                engine.count_backlogs().await;
                continue;
            }
            _ = share.tick() => {
                engine.reshare();
                // A takeover released another instance's work: looked for
                // now, not at the next sweep.
                if !engine.inner.store.take_released() {
                    continue;
                }
            }
            _ = tick.tick() => {}
            () = engine.inner.sweep.notified() => {}
        }
        engine.sweep().await;
    }
}
