//! The sweep: unclaimed work claimed from the store while there is room.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Engine;

/// Actions claimed from the store in one go.
const CLAIM_BATCH: usize = 1000;
/// How often the store is swept for unclaimed work (after a restart, a
/// replay, or an endpoint enabled again).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Engine {
    /// Claims unclaimed work from the store while there is room.
    async fn sweep(&self) {
        loop {
            let cap = self.settings().delivery.max_pending;
            let free = cap.saturating_sub(self.held()).min(CLAIM_BATCH);
            if free == 0 || self.is_stopping() {
                return;
            }
            // Counted once claimed, not reserved ahead: intake racing with
            // a sweep may overshoot `max_pending` by at most one batch, but
            // an empty sweep never makes intake refuse.
            let claimed = match self.inner.store.claim(free).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming pending work failed");
                    return;
                }
            };
            let n = claimed.len();
            if n > 0 {
                self.inner.held.fetch_add(n, Ordering::AcqRel);
                self.publish_depth();
            }
            for a in &claimed {
                self.lane(&a.endpoint).held.fetch_add(1, Ordering::AcqRel);
            }
            for a in claimed {
                self.route(a);
            }
            if n < free {
                return;
            }
        }
    }
}

pub(super) async fn sweep_task(engine: Engine) {
    let stop = engine.inner.stop.clone();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            () = engine.inner.sweep.notified() => {}
        }
        engine.sweep().await;
    }
}
