//! The console's writes. Each has a `GET` that shows what it would do and a
//! button that posts it (how a write goes with JavaScript off; with it, the
//! script asks in a dialog and posts at once), and the `POST` that does it
//! (admin only, from the console's own origin), then sends the browser on
//! with a message.

mod breaker;
mod job;
mod selection;

pub(crate) use breaker::{breaker, breaker_confirm};
pub(crate) use job::{cancel, cancel_confirm, replay_all, replay_all_confirm};
pub(crate) use selection::{purge, purge_confirm, replay, replay_confirm};

use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;

use super::guard::Operator;
use super::page::{self, Frame};
use crate::app::AppState;
use crate::error::ApiError;
use crate::operations::Operator as Writer;

/// What a confirmation page asks.
pub(super) struct Confirm<'a> {
    pub(super) title: String,
    pub(super) question: String,
    pub(super) details: Vec<String>,
    pub(super) action: String,
    pub(super) hidden: Vec<(&'static str, String)>,
    pub(super) button: &'a str,
    pub(super) cancel: String,
}

impl Confirm<'_> {
    pub(super) fn render(self, state: &AppState, op: &Operator, section: &'static str) -> Response {
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
pub(super) fn writer(state: &AppState, op: &Operator) -> Writer {
    Writer::new(&state.engine, op.caller.actor.clone())
}

pub(super) fn failed(state: &AppState, op: &Operator, e: impl Into<ApiError>) -> Response {
    let e: ApiError = e.into();
    tracing::warn!(error = %e, "console write failed");
    page::error(state, op, e.status(), &e.to_string())
}
