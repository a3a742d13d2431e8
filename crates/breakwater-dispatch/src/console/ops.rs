//! The operator writes the console makes, each audited: breaker commands,
//! replays and purges of chosen actions, replay jobs by filter and their
//! cancellation.

use std::sync::Arc;

use crate::app::AppState;
use crate::engine::AdminOp;
use crate::error::ApiError;
use crate::store::{ActionFilter, ActionId, AuditEntry, ReplayJob, ReplayState};

/// Actions a replay job replays at a time.
const CHUNK: usize = 500;

async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    target: String,
    count: Option<u64>,
) -> Result<(), ApiError> {
    let store = state.engine.store();
    let entry = AuditEntry {
        id: 0,
        at_ms: chrono::Utc::now().timestamp_millis(),
        actor: actor.to_string(),
        action: action.to_string(),
        target,
        count,
        instance: store.fleet().map(|f| f.instance),
    };
    store.audit(entry).await?;
    Ok(())
}

/// Runs `op` on `endpoint`'s breaker; `false` for an unknown endpoint.
pub(crate) async fn breaker(
    state: &AppState,
    actor: &str,
    endpoint: &str,
    op: AdminOp,
) -> Result<bool, ApiError> {
    if !state.engine.admin(endpoint, op).await? {
        return Ok(false);
    }
    tracing::info!(%endpoint, op = op.as_str(), %actor, "console: breaker command");
    audit(state, actor, op.as_str(), endpoint.to_string(), None).await?;
    Ok(true)
}

fn ids_target(ids: &[ActionId]) -> String {
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("actions {}", list.join(","))
}

/// Replays the dead-lettered or delivered actions among `ids`; returns
/// how many.
pub(crate) async fn replay(
    state: &AppState,
    actor: &str,
    ids: &[ActionId],
) -> Result<u64, ApiError> {
    let n = state.engine.store().replay_actions(ids, None).await?;
    state.engine.wake();
    audit(state, actor, "replay", ids_target(ids), Some(n)).await?;
    Ok(n)
}

/// Deletes the dead letters among `ids`; returns how many.
pub(crate) async fn purge(
    state: &AppState,
    actor: &str,
    ids: &[ActionId],
) -> Result<u64, ApiError> {
    let n = state.engine.store().purge_actions(ids).await?;
    audit(state, actor, "purge", ids_target(ids), Some(n)).await?;
    Ok(n)
}

/// Starts a background job replaying every action matching `filter`.
pub(crate) async fn start_replay(
    state: &Arc<AppState>,
    actor: &str,
    filter: ActionFilter,
) -> Result<ReplayJob, ApiError> {
    let store = state.engine.store().clone();
    let total = store.count_actions(&filter).await?;
    let job = store.create_replay_job(&filter, actor, total).await?;
    let target = serde_json::to_string(&filter).unwrap_or_default();
    audit(state, actor, "replay", target, Some(total)).await?;
    let engine = state.engine.clone();
    let id = job.id;
    tokio::spawn(async move {
        let mut replayed = 0u64;
        let mut before = None;
        let finish = loop {
            let page = match store.actions(&filter, before, CHUNK).await {
                Ok(p) => p,
                Err(e) => break (ReplayState::Failed, Some(e.to_string())),
            };
            let ids: Vec<ActionId> = page.actions.iter().map(|a| a.id).collect();
            if !ids.is_empty() {
                match store.replay_actions(&ids, Some(id)).await {
                    Ok(n) => replayed += n,
                    Err(e) => break (ReplayState::Failed, Some(e.to_string())),
                }
                engine.wake();
            }
            let Some(next) = page.next.filter(|_| !ids.is_empty()) else {
                break (ReplayState::Finished, None);
            };
            before = Some(next);
            match store
                .update_replay_job(id, replayed, ReplayState::Running, None)
                .await
            {
                Ok(ReplayState::Running) => {}
                Ok(_) => return,
                Err(e) => break (ReplayState::Failed, Some(e.to_string())),
            }
        };
        if let Err(e) = store
            .update_replay_job(id, replayed, finish.0, finish.1)
            .await
        {
            tracing::warn!(job = id, error = %e, "recording the end of a replay job failed");
        }
    });
    Ok(job)
}

/// Cancels replay job `id`; `None` when there is no such job.
pub(crate) async fn cancel_replay(
    state: &AppState,
    actor: &str,
    id: i64,
) -> Result<Option<ReplayJob>, ApiError> {
    let job = state.engine.store().cancel_replay_job(id).await?;
    if job.is_some() {
        audit(state, actor, "cancel_replay", format!("job {id}"), None).await?;
    }
    Ok(job)
}
