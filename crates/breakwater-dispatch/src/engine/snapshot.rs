//! Breaker snapshots: saved on every transition.

use tokio::sync::mpsc;

use super::Engine;
use crate::store::Update;

/// On each breaker transition (the endpoints come from the breakers'
/// listeners): wakes the actions a forced opening kept waiting, and saves
/// the breakers' snapshots.
pub(super) async fn snapshot_task(engine: Engine, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut endpoints = vec![first];
        while let Ok(more) = rx.try_recv() {
            endpoints.push(more);
        }
        endpoints.sort();
        endpoints.dedup();
        // A breaker that left Open lets go of the actions its forced
        // opening kept waiting.
        for endpoint in &endpoints {
            let lane = engine
                .inner
                .lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(endpoint)
                .cloned();
            if let Some(lane) = lane {
                engine.wake_released(&lane);
                let closed = engine
                    .inner
                    .breakers
                    .get(endpoint)
                    .is_some_and(|b| b.state() == breakwater::CircuitState::Closed);
                if closed {
                    engine.unpark_endpoint(&lane);
                }
            }
        }
        let updates = endpoints
            .into_iter()
            .filter_map(|endpoint| {
                let snap = engine.inner.breakers.get(&endpoint)?.snapshot();
                let snapshot = serde_json::to_string(&snap).ok()?;
                Some(Update::Snapshot { endpoint, snapshot })
            })
            .collect();
        if let Err(e) = engine.inner.store.apply(updates).await {
            tracing::warn!(error = %e, "saving breaker snapshots failed");
        }
        if engine.is_stopping() {
            return;
        }
    }
}
