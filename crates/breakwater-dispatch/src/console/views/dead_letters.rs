//! `GET /console/dead-letters`: dead letters by filter, to replay (the
//! selected ones, or every one matching) or purge.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;

use super::{bad_request, store_failed, ActionRow, PAGE_ROWS};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::ser;
use crate::console::page::{encode_component, Frame};
use crate::console::query::{filter, Params};
use crate::store::ActionStatus;

/// `GET /console/dead-letters`: the filter form, how many match, and a
/// page of them, newest first.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    op: Operator,
    params: Params,
) -> Response {
    let (mut filter, mut form) = match filter(&params) {
        Ok(f) => f,
        Err(e) => return bad_request(&state, &op, &e),
    };
    // Dead letters only, whatever the query says (and the form and its
    // links leave the status out).
    filter.status = Some(ActionStatus::DeadLettered);
    form.status.clear();
    let before = match params.number("before") {
        Ok(b) => b,
        Err(e) => return bad_request(&state, &op, &e),
    };
    let store = state.engine.store();
    let count = match store.count_actions(&filter).await {
        Ok(n) => n,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let page = match store.actions(&filter, before, PAGE_ROWS).await {
        Ok(p) => p,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let rows: Vec<ActionRow> = page.actions.iter().map(ActionRow::of).collect();
    let query = form.query();
    let back = if query.is_empty() {
        "/console/dead-letters".to_string()
    } else {
        format!("/console/dead-letters?{query}")
    };
    Frame {
        title: "Dead letters".into(),
        section: "dead-letters",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "dead_letters.html",
        context! {
            form => ser(&form),
            hidden => form.pairs(),
            count => count,
            actions => ser(&rows),
            next => page.next,
            paged => before.is_some(),
            query => query,
            back => encode_component(&back),
            back_raw => back,
        },
    )
}
