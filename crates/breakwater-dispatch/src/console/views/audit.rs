//! `GET /console/audit`: the operators' writes, newest first.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;

use super::{bad_request, store_failed, PAGE_ROWS};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::ser;
use crate::console::page::{truncate, Frame};
use crate::console::query::Params;

/// Characters of a target shown.
const TARGET_CHARS: usize = 300;

#[derive(Debug, Serialize)]
struct EntryView {
    id: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    count: Option<u64>,
    instance: Option<String>,
}

/// `GET /console/audit`: a page of entries (`before`: an entry id).
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    op: Operator,
    params: Params,
) -> Response {
    let before = match params.number("before") {
        Ok(b) => b,
        Err(e) => return bad_request(&state, &op, &e),
    };
    let entries = match state.engine.store().audit_log(before, PAGE_ROWS + 1).await {
        Ok(e) => e,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let more = entries.len() > PAGE_ROWS;
    let entries: Vec<EntryView> = entries
        .iter()
        .take(PAGE_ROWS)
        .map(|e| EntryView {
            id: e.id,
            at: crate::store::rfc3339(e.at_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: truncate(&e.target, TARGET_CHARS),
            count: e.count,
            instance: e.instance.clone(),
        })
        .collect();
    let older = more.then(|| entries.last().map(|e| e.id)).flatten();
    Frame {
        title: "Audit log".into(),
        section: "audit",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "audit.html",
        context! { entries => ser(&entries), older => older, paged => before.is_some() },
    )
}
