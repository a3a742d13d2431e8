//! The console's pages, one file per view.

pub(crate) mod audit;
pub(crate) mod dead_letters;
pub(crate) mod endpoints;
pub(crate) mod events;
pub(crate) mod login;
pub(crate) mod replays;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::guard::Operator;
use super::page::{self, truncate};
use crate::app::AppState;
use crate::store::{ActionRecord, StoreError};

/// Rows a list shows at most per page.
pub(crate) const PAGE_ROWS: usize = 50;

/// Characters of an error shown in a list.
const LIST_TEXT: usize = 120;

/// Any other path under `/console`.
pub(crate) async fn not_found() -> Response {
    page::plain_error(StatusCode::NOT_FOUND, "there is no such console page")
}

/// A method the path does not take.
pub(crate) async fn method_not_allowed() -> Response {
    page::plain_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this console page does not take that method",
    )
}

/// A store that failed to answer, as a page.
pub(crate) fn store_failed(state: &AppState, op: &Operator, e: &StoreError) -> Response {
    tracing::warn!(error = %e, "console: reading the store failed");
    page::error(
        state,
        op,
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("the store did not answer: {e}"),
    )
}

/// A bad query or form, as a page naming the field.
pub(crate) fn bad_request(state: &AppState, op: &Operator, message: &str) -> Response {
    page::error(state, op, StatusCode::BAD_REQUEST, message)
}

/// An action as a row of a list (long texts cut).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActionRow {
    id: i64,
    event_id: String,
    observer: String,
    action_type: String,
    endpoint: String,
    status: &'static str,
    attempts: u32,
    replays: u32,
    accepted_at: String,
    event_type: String,
    entity_type: String,
    not_before: Option<String>,
    last_error: Option<String>,
    last_status: Option<u16>,
    replayable: bool,
}

impl ActionRow {
    pub(crate) fn of(a: &ActionRecord) -> Self {
        use crate::store::ActionStatus;
        Self {
            id: a.id,
            event_id: a.event_id.to_string(),
            observer: a.observer.clone(),
            action_type: a.action_type.clone(),
            endpoint: a.endpoint.clone(),
            status: a.status.as_str(),
            attempts: a.attempts,
            replays: a.replays,
            accepted_at: a.accepted_at.clone(),
            event_type: a.event_type.clone(),
            entity_type: a.entity_type.clone(),
            not_before: a.not_before.clone(),
            last_error: a.last_error.as_deref().map(|e| truncate(e, LIST_TEXT)),
            last_status: a.last_status,
            replayable: matches!(
                a.status,
                ActionStatus::DeadLettered | ActionStatus::Delivered
            ),
        }
    }
}
