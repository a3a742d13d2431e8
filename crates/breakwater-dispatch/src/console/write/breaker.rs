//! Breaker commands: reset, open, close.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{failed, writer, Confirm};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::{self, encode_component, see_other};
use crate::console::views::bad_request;
use crate::engine::AdminOp;

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
