//! `GET /console/events`: actions searched by event, entity, status and
//! time; `GET /console/events/{id}`: an event's actions, each with its
//! attempts' timeline.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;
use uuid::Uuid;

use super::{bad_request, store_failed, ActionRow, PAGE_ROWS};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::ser;
use crate::console::page::{self, encode_component, truncate, Frame};
use crate::console::query::{filter, Params};
use crate::store::AttemptRecord;

/// Attempts shown per action (the newest).
const SHOWN_ATTEMPTS: usize = 30;
/// Actions shown per event.
const SHOWN_ACTIONS: usize = 50;
/// Characters of one response body shown.
const BODY_CHARS: usize = 4096;
/// Characters of response bodies shown on one page, all together: past
/// it, bodies are left out (the page stays well under 100 KB).
const PAGE_BODY_CHARS: usize = 40_000;
/// Headers shown per request or response, and characters of a value.
const SHOWN_HEADERS: usize = 40;
const HEADER_CHARS: usize = 300;
/// Characters of an attempt's error shown.
const ERROR_CHARS: usize = 1_000;

/// Request headers whose values are shown: standard ones and the
/// signature headers, which cannot be turned back into the secret. An
/// action's own headers may carry credentials under any name: only their
/// names are shown.
const SHOWN_REQUEST_VALUES: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "accept",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// `GET /console/events`: the search form and the matching actions,
/// newest first (`before`: the cursor of the next page). An event id goes
/// straight to that event.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    op: Operator,
    params: Params,
) -> Response {
    let (filter, form) = match filter(&params) {
        Ok(f) => f,
        Err(e) => return bad_request(&state, &op, &e),
    };
    if let Some(id) = filter.event_id {
        return page::see_other(&format!("/console/events/{id}"));
    }
    let before = match params.number("before") {
        Ok(b) => b,
        Err(e) => return bad_request(&state, &op, &e),
    };
    let page = match state
        .engine
        .store()
        .actions(&filter, before, PAGE_ROWS)
        .await
    {
        Ok(p) => p,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let rows: Vec<ActionRow> = page.actions.iter().map(ActionRow::of).collect();
    let query = form.query();
    Frame {
        title: "Events".into(),
        section: "events",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "events.html",
        context! {
            form => ser(&form),
            actions => ser(&rows),
            next => page.next,
            paged => before.is_some(),
            query => query,
        },
    )
}

#[derive(Debug, Serialize)]
struct Header {
    name: String,
    value: Option<String>,
}

#[derive(Debug, Serialize)]
struct RequestView {
    method: String,
    url: String,
    headers: Vec<Header>,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    id: i64,
    number: u32,
    trigger: &'static str,
    breaker_state: String,
    started_at: String,
    duration_ms: u64,
    outcome: &'static str,
    error_kind: Option<String>,
    status: Option<u16>,
    error: Option<String>,
    request: Option<RequestView>,
    response_headers: Vec<Header>,
    /// The body as shown (cut), when there is one and room for it.
    body: Option<String>,
    /// Characters of the stored body.
    body_chars: usize,
    /// Whether the body was cut, or left out for room.
    body_cut: bool,
}

fn headers(list: &[(String, String)], shown: impl Fn(&str) -> bool) -> Vec<Header> {
    list.iter()
        .take(SHOWN_HEADERS)
        .map(|(name, value)| Header {
            name: truncate(name, HEADER_CHARS),
            value: shown(name).then(|| truncate(value, HEADER_CHARS)),
        })
        .collect()
}

fn attempt_view(a: &AttemptRecord, budget: &mut usize) -> AttemptView {
    let stored = a.attempt.response_body.as_deref().unwrap_or_default();
    let body_chars = stored.chars().count();
    let room = BODY_CHARS.min(*budget);
    let body = (!stored.is_empty() && room > 0).then(|| truncate(stored, room));
    *budget = budget.saturating_sub(body_chars.min(room));
    AttemptView {
        id: a.id,
        number: a.attempt.number,
        trigger: a.attempt.trigger.as_str(),
        breaker_state: a.attempt.breaker_state.clone(),
        started_at: a.started_at.clone(),
        duration_ms: a.attempt.duration_ms,
        outcome: a.attempt.outcome.as_str(),
        error_kind: a.attempt.error_kind.clone(),
        status: a.attempt.status,
        error: a.attempt.error.as_deref().map(|e| truncate(e, ERROR_CHARS)),
        request: a.attempt.request.as_ref().map(|r| RequestView {
            method: r.method.clone(),
            url: r.url.clone(),
            headers: headers(&r.headers, |name| {
                SHOWN_REQUEST_VALUES.contains(&name.to_ascii_lowercase().as_str())
            }),
        }),
        response_headers: headers(&a.attempt.response_headers, |_| true),
        body,
        body_chars,
        body_cut: body_chars > room,
    }
}

#[derive(Debug, Serialize)]
struct ActionView {
    action: ActionRow,
    attempts: Vec<AttemptView>,
    /// Earlier attempts left out.
    earlier: usize,
}

/// `GET /console/events/{id}`: the event's actions and their attempts.
pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path.ok().and_then(|Path(id)| id.parse::<Uuid>().ok()) {
        Some(id) => id,
        None => return bad_request(&state, &op, "id: not an event id (a UUID)"),
    };
    let event = match state.engine.store().event(id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return page::error(
                &state,
                &op,
                StatusCode::NOT_FOUND,
                &format!("no event {id} (never stored, or pruned once delivered)"),
            )
        }
        Err(e) => return store_failed(&state, &op, &e),
    };
    let mut budget = PAGE_BODY_CHARS;
    let hidden_actions = event.actions.len().saturating_sub(SHOWN_ACTIONS);
    let actions: Vec<ActionView> = event
        .actions
        .iter()
        .take(SHOWN_ACTIONS)
        .map(|a| {
            let history = a.attempt_history.as_deref().unwrap_or_default();
            let earlier = history.len().saturating_sub(SHOWN_ATTEMPTS);
            ActionView {
                action: ActionRow::of(a),
                attempts: history[earlier..]
                    .iter()
                    .map(|t| attempt_view(t, &mut budget))
                    .collect(),
                earlier,
            }
        })
        .collect();
    let back = format!("/console/events/{id}");
    Frame {
        title: format!("Event {id}"),
        section: "events",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "event.html",
        context! {
            event_id => id.to_string(),
            accepted_at => event.accepted_at,
            actions => ser(&actions),
            hidden_actions => hidden_actions,
            back => encode_component(&back),
        },
    )
}
