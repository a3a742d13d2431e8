//! Replays and purges of the actions ticked on a page.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::{failed, writer, Confirm};
use crate::app::AppState;
use crate::console::guard::{safe_return, Operator};
use crate::console::page::see_other;
use crate::console::query::{Params, Posted};
use crate::console::views::bad_request;

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
