//! Replay jobs: every dead letter matching a filter, and cancelling one.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{failed, writer, Confirm};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::{self, see_other};
use crate::console::query::{filter, Params, Posted};
use crate::console::views::{bad_request, store_failed};
use crate::store::ActionStatus;

/// `GET /console/dead-letters/replay-all?<filter>`: how many dead letters
/// match, and a button that replays them all.
pub(crate) async fn replay_all_confirm(
    State(state): State<Arc<AppState>>,
    op: Operator,
    params: Params,
) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let (mut filter, mut form) = match filter(&params) {
        Ok(f) => f,
        Err(e) => return bad_request(&state, &op, &e),
    };
    filter.status = Some(ActionStatus::DeadLettered);
    form.status.clear();
    let count = match state.engine.store().count_actions(&filter).await {
        Ok(n) => n,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let query = form.query();
    let back = if query.is_empty() {
        "/console/dead-letters".to_string()
    } else {
        format!("/console/dead-letters?{query}")
    };
    let matching = if query.is_empty() {
        String::new()
    } else {
        format!(" matching {}", form.describe())
    };
    if count == 0 {
        return page::error(
            &state,
            &op,
            StatusCode::OK,
            &format!(
                "No dead letter matches {}: nothing to replay.",
                form.describe()
            ),
        );
    }
    Confirm {
        title: "Replay dead letters".into(),
        question: format!("Replay {count} dead letter(s){matching}?"),
        details: vec![
            "A replay job replays them in chunks, in the background; each is delivered through its endpoint's breaker (an open one parks them). The job can be cancelled from the replay jobs page.".into(),
        ],
        action: "/console/dead-letters/replay-all".into(),
        hidden: form.pairs(),
        button: "Replay all",
        cancel: back,
    }
    .render(&state, &op, "dead-letters")
}

/// `POST /console/dead-letters/replay-all`: starts a replay job over the
/// dead letters matching the filter.
pub(crate) async fn replay_all(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Posted(params): Posted,
) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let (mut filter, _) = match filter(&params) {
        Ok(f) => f,
        Err(e) => return bad_request(&state, &op, &e),
    };
    filter.status = Some(ActionStatus::DeadLettered);
    match writer(&state, &op).start_replay(filter).await {
        Ok(job) => {
            state.console().sessions.flash(
                &op.session,
                format!(
                    "Replay job {} started over {} dead letter(s).",
                    job.id, job.total
                ),
            );
            see_other(&format!("/console/replays/{}", job.id))
        }
        Err(e) => failed(&state, &op, e),
    }
}

/// `GET /console/replays/{id}/cancel`: asks before cancelling a job.
pub(crate) async fn cancel_confirm(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<i64>, PathRejection>,
) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let Ok(Path(id)) = path else {
        return bad_request(&state, &op, "id: not a replay job id");
    };
    Confirm {
        title: "Cancel a replay job".into(),
        question: format!("Cancel replay job {id}?"),
        details: vec![
            "It stops before its next chunk; the actions it already replayed stay pending and are delivered.".into(),
        ],
        action: format!("/console/replays/{id}/cancel"),
        hidden: Vec::new(),
        button: "Cancel the job",
        cancel: format!("/console/replays/{id}"),
    }
    .render(&state, &op, "replays")
}

/// `POST /console/replays/{id}/cancel`: cancels a job.
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<i64>, PathRejection>,
) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let Ok(Path(id)) = path else {
        return bad_request(&state, &op, "id: not a replay job id");
    };
    match writer(&state, &op).cancel_replay(id).await {
        Ok(job) => {
            state.console().sessions.flash(
                &op.session,
                format!("Replay job {id}: {}.", job.state.as_str()),
            );
            see_other(&format!("/console/replays/{id}"))
        }
        Err(e) => failed(&state, &op, e),
    }
}
