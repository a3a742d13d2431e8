//! The console's writes. Each has a `GET` that shows what it would do and a
//! button that posts it (how a write goes with JavaScript off; with it, the
//! script asks in a dialog and posts at once), and the `POST` that does it
//! (admin only, from the console's own origin), then sends the browser on
//! with a message.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;

use super::guard::{safe_return, Operator};
use super::page::{self, encode_component, see_other, Frame};
use super::query::{filter, Params, Posted};
use super::views::{bad_request, store_failed};
use crate::app::AppState;
use crate::engine::AdminOp;
use crate::error::ApiError;
use crate::operations::Operator as Writer;
use crate::store::ActionStatus;

/// What a confirmation page asks.
struct Confirm<'a> {
    title: String,
    question: String,
    details: Vec<String>,
    action: String,
    hidden: Vec<(&'static str, String)>,
    button: &'a str,
    cancel: String,
}

impl Confirm<'_> {
    fn render(self, state: &AppState, op: &Operator, section: &'static str) -> Response {
        Frame {
            title: self.title,
            section,
            operator: Some(op),
        }
        .render(
            state,
            StatusCode::OK,
            "confirm.html",
            context! {
                question => self.question,
                details => self.details,
                action => self.action,
                hidden => self.hidden,
                button => self.button,
                cancel => self.cancel,
            },
        )
    }
}

/// Who writes: the session's token fingerprint, through the operations
/// every way of writing shares (audited there).
fn writer(state: &AppState, op: &Operator) -> Writer {
    Writer::new(&state.engine, op.caller.actor.clone())
}

fn failed(state: &AppState, op: &Operator, e: impl Into<ApiError>) -> Response {
    let e: ApiError = e.into();
    tracing::warn!(error = %e, "console write failed");
    page::error(state, op, e.status(), &e.to_string())
}

fn breaker_args(
    state: &AppState,
    op: &Operator,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, AdminOp), Box<Response>> {
    let Ok(Path((endpoint, name))) = path else {
        return Err(Box::new(bad_request(
            state,
            op,
            "endpoint: not a valid path segment",
        )));
    };
    let Some(command) = AdminOp::parse(&name) else {
        return Err(Box::new(page::error(
            state,
            op,
            StatusCode::NOT_FOUND,
            &format!("unknown operation {name:?} (expected reset, open or close)"),
        )));
    };
    if !state
        .engine
        .breaker_views()
        .iter()
        .any(|v| v.endpoint == endpoint)
    {
        return Err(Box::new(page::error(
            state,
            op,
            StatusCode::NOT_FOUND,
            &format!("no endpoint {endpoint:?}"),
        )));
    }
    Ok((endpoint, command))
}

fn breaker_words(op: AdminOp) -> (&'static str, &'static str) {
    match op {
        AdminOp::Reset => (
            "Reset",
            "a fresh Closed breaker: its window is emptied and calls run again; a disabled endpoint is enabled and its held actions are queued",
        ),
        AdminOp::Open => (
            "Open",
            "forced Open: every call is refused and its actions park until it is reset or closed",
        ),
        AdminOp::Close => (
            "Close",
            "forced Closed: calls run whatever their outcomes until it is reset; a disabled endpoint is enabled",
        ),
    }
}

/// `GET /console/endpoints/{endpoint}/{op}`: asks before a breaker command.
pub(crate) async fn breaker_confirm(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let (endpoint, command) = match breaker_args(&state, &op, path) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (verb, what) = breaker_words(command);
    let back = format!("/console/endpoints/{}", encode_component(&endpoint));
    Confirm {
        title: format!("{verb} a breaker"),
        question: format!("{verb} the breaker of {endpoint}?"),
        details: vec![format!("{verb}: {what}.")],
        action: format!("{back}/{}", command.as_str()),
        hidden: Vec::new(),
        button: verb,
        cancel: back,
    }
    .render(&state, &op, "endpoints")
}

/// `POST /console/endpoints/{endpoint}/{op}`: runs a breaker command.
pub(crate) async fn breaker(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let (endpoint, command) = match breaker_args(&state, &op, path) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match writer(&state, &op).breaker(&endpoint, command).await {
        Ok(false) => page::error(
            &state,
            &op,
            StatusCode::NOT_FOUND,
            &format!("no endpoint {endpoint:?}"),
        ),
        Ok(true) => {
            let (verb, _) = breaker_words(command);
            state
                .console()
                .sessions
                .flash(&op.session, format!("{verb}: done on {endpoint}."));
            see_other(&format!(
                "/console/endpoints/{}",
                encode_component(&endpoint)
            ))
        }
        Err(e) => failed(&state, &op, e),
    }
}

/// The selected ids, or the page saying what is wrong.
fn selected(state: &AppState, op: &Operator, params: &Params) -> Result<Vec<i64>, Box<Response>> {
    match params.ids() {
        Ok(ids) if ids.is_empty() => Err(Box::new(bad_request(
            state,
            op,
            "id: nothing selected; tick the actions to act on first",
        ))),
        Ok(ids) => Ok(ids),
        Err(e) => Err(Box::new(bad_request(state, op, &e))),
    }
}

fn selection_confirm(state: &AppState, op: &Operator, params: &Params, purge: bool) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let ids = match selected(state, op, params) {
        Ok(ids) => ids,
        Err(r) => return *r,
    };
    let back = safe_return(params.get("return").or(Some("/console/dead-letters")));
    let mut hidden: Vec<(&'static str, String)> =
        ids.iter().map(|id| ("id", id.to_string())).collect();
    hidden.push(("return", back.clone()));
    let n = ids.len();
    let list = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (title, question, details, action, button) = if purge {
        (
            "Purge dead letters",
            format!("Delete {n} dead letter(s) and their attempts for good?"),
            vec![
                format!("Actions: {list}."),
                "Only dead letters are deleted; others among them are left alone.".into(),
            ],
            "/console/actions/purge",
            "Purge",
        )
    } else {
        (
            "Replay actions",
            format!("Replay {n} action(s)?"),
            vec![
                format!("Actions: {list}."),
                "Dead-lettered and delivered ones become pending with no attempts used and are delivered through their breakers; others are left alone.".into(),
            ],
            "/console/actions/replay",
            "Replay",
        )
    };
    Confirm {
        title: title.into(),
        question,
        details,
        action: action.into(),
        hidden,
        button,
        cancel: back,
    }
    .render(state, op, "dead-letters")
}

/// `GET /console/actions/replay?id=..`: asks before replaying actions.
pub(crate) async fn replay_confirm(
    State(state): State<Arc<AppState>>,
    op: Operator,
    params: Params,
) -> Response {
    selection_confirm(&state, &op, &params, false)
}

/// `GET /console/actions/purge?id=..`: asks before purging dead letters.
pub(crate) async fn purge_confirm(
    State(state): State<Arc<AppState>>,
    op: Operator,
    params: Params,
) -> Response {
    selection_confirm(&state, &op, &params, true)
}

async fn selection(state: &AppState, op: &Operator, params: &Params, purge: bool) -> Response {
    if let Err(r) = op.must_write() {
        return *r;
    }
    let ids = match selected(state, op, params) {
        Ok(ids) => ids,
        Err(r) => return *r,
    };
    let back = safe_return(params.get("return").or(Some("/console/dead-letters")));
    let writer = writer(state, op);
    let done = if purge {
        writer.purge_ids(&ids).await
    } else {
        writer.replay_ids(&ids).await
    };
    match done {
        Ok(n) => {
            let verb = if purge { "Purged" } else { "Replayed" };
            let message = if n as usize == ids.len() {
                format!("{verb} {n} action(s).")
            } else {
                format!(
                    "{verb} {n} of the {} selected (the others were not in a state for it).",
                    ids.len()
                )
            };
            state.console().sessions.flash(&op.session, message);
            see_other(&back)
        }
        Err(e) => failed(state, op, e),
    }
}

/// `POST /console/actions/replay`: replays the selected actions.
pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Posted(params): Posted,
) -> Response {
    selection(&state, &op, &params, false).await
}

/// `POST /console/actions/purge`: purges the selected dead letters.
pub(crate) async fn purge(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Posted(params): Posted,
) -> Response {
    selection(&state, &op, &params, true).await
}

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
