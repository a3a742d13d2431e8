//! `GET /replays`, `GET /replays/{id}` and `DELETE /replays/{id}`: replay
//! jobs, their progress, and cancelling one (admin token; audited).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::actions::{pairs, path_id, RawPairs};
use super::params::Params;
use super::{caller, job_json};
use crate::app::AppState;
use crate::error::ApiError;
use crate::operations::Operator;

/// `GET /replays`: the latest jobs, newest first (`limit`, default 50):
/// `{"replays": [...]}`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: RawPairs,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers).must_read()?;
    let limit = Params::new(pairs(query)?, &["limit"])?.limit()?;
    let jobs = state.engine.store().replay_jobs(limit).await?;
    Ok(Json(json!({
        "replays": jobs.iter().map(job_json).collect::<Vec<_>>(),
    })))
}

/// `GET /replays/{id}`: a job and what became of the actions it replayed
/// (`progress`, by status).
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers).must_read()?;
    let id = path_id(path, "a replay job")?;
    let job = state
        .engine
        .store()
        .replay_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no replay job {id}")))?;
    Ok(Json(job_json(&job)))
}

/// `DELETE /replays/{id}`: cancels a running job (whichever instance runs
/// it stops at its next chunk); answers the job. 404 for an unknown job,
/// 409 for one no longer running.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers);
    who.must_write()?;
    let id = path_id(path, "a replay job")?;
    let job = Operator::new(&state.engine, who.actor)
        .cancel_replay(id)
        .await?;
    Ok(Json(job_json(&job)))
}
