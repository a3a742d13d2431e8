//! `GET /console/replays`: replay jobs; `GET /console/replays/{id}`: one,
//! with what became of the actions it replayed.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;

use super::{bad_request, store_failed, PAGE_ROWS};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::ser;
use crate::console::page::{self, Frame};
use crate::store::ReplayJob;

/// A job as shown.
#[derive(Debug, Serialize)]
struct JobView {
    id: i64,
    state: &'static str,
    running: bool,
    filter: String,
    actor: String,
    total: u64,
    replayed: u64,
    created_at: String,
    updated_at: String,
    error: Option<String>,
    progress: Vec<(&'static str, u64)>,
}

impl JobView {
    fn of(job: &ReplayJob) -> Self {
        let f = &job.filter;
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k} = {v}"));
            }
        };
        add("status", f.status.map(|s| s.as_str().to_string()));
        add("endpoint", f.endpoint.clone());
        add("observer", f.observer.clone());
        add("event_type", f.event_type.clone());
        add("entity_type", f.entity_type.clone());
        add("entity_id", f.entity_id.clone());
        add("event_id", f.event_id.map(|u| u.to_string()));
        add("since", f.since_ms.map(crate::store::rfc3339));
        add("until", f.until_ms.map(crate::store::rfc3339));
        Self {
            id: job.id,
            state: job.state.as_str(),
            running: job.state == crate::store::ReplayState::Running,
            filter: if parts.is_empty() {
                "every action".into()
            } else {
                parts.join(", ")
            },
            actor: job.actor.clone(),
            total: job.total,
            replayed: job.replayed,
            created_at: crate::store::rfc3339(job.created_at_ms),
            updated_at: crate::store::rfc3339(job.updated_at_ms),
            error: job.error.clone(),
            progress: job.progress.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
        }
    }
}

/// `GET /console/replays`: the newest jobs.
pub(crate) async fn list(State(state): State<Arc<AppState>>, op: Operator) -> Response {
    let jobs = match state.engine.store().replay_jobs(PAGE_ROWS).await {
        Ok(j) => j,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let jobs: Vec<JobView> = jobs.iter().map(JobView::of).collect();
    Frame {
        title: "Replay jobs".into(),
        section: "replays",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "replays.html",
        context! { jobs => ser(&jobs) },
    )
}

/// `GET /console/replays/{id}`: one job and its progress.
pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<i64>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = path else {
        return bad_request(&state, &op, "id: not a replay job id");
    };
    let job = match state.engine.store().replay_job(id).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            return page::error(
                &state,
                &op,
                StatusCode::NOT_FOUND,
                &format!("no replay job {id}"),
            )
        }
        Err(e) => return store_failed(&state, &op, &e),
    };
    Frame {
        title: format!("Replay job {id}"),
        section: "replays",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "replay.html",
        context! { job => ser(&JobView::of(&job)) },
    )
}
