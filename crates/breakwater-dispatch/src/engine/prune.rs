//! Pruning: delivered events removed once past their keeping time.

use std::time::Duration;

use super::{unix_ms, Engine};

/// How often delivered events past `keep_delivered_hours` are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The most events removed in one store call (one transaction), so that a
/// large backlog of old events does not hold the writer for long.
const PRUNE_BATCH: usize = 1000;

impl Engine {
    /// Removes the delivered events older than `keep_delivered_hours` (none
    /// when it is 0), batch by batch; returns how many.
    pub async fn prune(&self) -> u64 {
        let hours = self.settings().delivery.keep_delivered_hours;
        if hours == 0 {
            return 0;
        }
        let keep_ms = i64::try_from(hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
        let before_ms = unix_ms().saturating_sub(keep_ms);
        let mut total = 0;
        while !self.is_stopping() {
            match self
                .inner
                .store
                .prune_delivered(before_ms, PRUNE_BATCH)
                .await
            {
                Ok(n) => {
                    total += n;
                    self.inner.metrics.events_pruned.inc_by(n);
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "removing old delivered events failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                events = total,
                hours,
                "removed delivered events past their keeping time"
            );
        }
        total
    }
}

/// Removes delivered events older than `keep_delivered_hours` every
/// [`PRUNE_EVERY`], in batches of [`PRUNE_BATCH`] (the first run is one
/// period after the start, so a restart loop does not prune in a loop).
pub(super) async fn prune_task(engine: Engine) {
    let stop = engine.inner.stop.clone();
    let start = tokio::time::Instant::now() + PRUNE_EVERY;
    let mut tick = tokio::time::interval_at(start, PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        engine.prune().await;
    }
}
