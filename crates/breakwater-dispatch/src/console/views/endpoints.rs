//! `GET /console`: every endpoint; `GET /console/endpoints/{endpoint}`:
//! one endpoint's breaker, transitions, recent attempts and actions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;

use super::{bad_request, store_failed, ActionRow, PAGE_ROWS};
use crate::app::AppState;
use crate::console::guard::Operator;
use crate::console::page::ser;
use crate::console::page::{self, truncate, Frame};
use crate::console::query::Params;
use crate::console::TransitionRecord;
use crate::engine::BreakerView;
use crate::store::{ActionFilter, AttemptRecord, EndpointCounts};

/// Transitions shown per endpoint in the list.
const LIST_TRANSITIONS: usize = 3;
/// Characters of an attempt's error or body shown in a list.
const LIST_TEXT: usize = 160;
/// Actions shown on an endpoint's page.
const ENDPOINT_ACTIONS: usize = 20;

/// One endpoint as a row of the list.
#[derive(Debug, Serialize)]
struct EndpointRow {
    #[serde(flatten)]
    view: BreakerView,
    /// The store's counts, when it could give them.
    counts: Option<EndpointCounts>,
    transitions: Vec<TransitionRecord>,
}

async fn rows(state: &AppState) -> (Vec<EndpointRow>, Option<String>) {
    let (counts, problem) = match state.engine.store().endpoint_counts().await {
        Ok(c) => (
            c.into_iter()
                .map(|c| (c.endpoint.clone(), c))
                .collect::<HashMap<_, _>>(),
            None,
        ),
        Err(e) => (HashMap::new(), Some(e.to_string())),
    };
    let rows =
        state
            .engine
            .breaker_views()
            .into_iter()
            .map(|view| {
                let mut transitions = state.console().transitions(&view.endpoint);
                transitions.truncate(LIST_TRANSITIONS);
                let counts =
                    if problem.is_none() {
                        Some(counts.get(&view.endpoint).cloned().unwrap_or_else(|| {
                            EndpointCounts {
                                endpoint: view.endpoint.clone(),
                                ..EndpointCounts::default()
                            }
                        }))
                    } else {
                        None
                    };
                EndpointRow {
                    view,
                    counts,
                    transitions,
                }
            })
            .collect();
    (rows, problem)
}

/// `GET /console`: every endpoint's breaker and actions.
pub(crate) async fn list(State(state): State<Arc<AppState>>, op: Operator) -> Response {
    let (endpoints, counts_problem) = rows(&state).await;
    Frame {
        title: "Endpoints".into(),
        section: "endpoints",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "endpoints.html",
        context! { endpoints => ser(&endpoints), counts_problem => counts_problem },
    )
}

/// An attempt as a row of a list (long texts cut, no headers).
#[derive(Debug, Serialize)]
pub(crate) struct AttemptRow {
    id: i64,
    action_id: i64,
    event_id: String,
    number: u32,
    trigger: &'static str,
    breaker_state: String,
    started_at: String,
    duration_ms: u64,
    outcome: &'static str,
    error_kind: Option<String>,
    status: Option<u16>,
    error: Option<String>,
    body: Option<String>,
}

impl AttemptRow {
    fn of(a: &AttemptRecord) -> Self {
        Self {
            id: a.id,
            action_id: a.action_id,
            event_id: a.event_id.to_string(),
            number: a.attempt.number,
            trigger: a.attempt.trigger.as_str(),
            breaker_state: a.attempt.breaker_state.clone(),
            started_at: a.started_at.clone(),
            duration_ms: a.attempt.duration_ms,
            outcome: a.attempt.outcome.as_str(),
            error_kind: a.attempt.error_kind.clone(),
            status: a.attempt.status,
            error: a.attempt.error.as_deref().map(|e| truncate(e, LIST_TEXT)),
            body: a
                .attempt
                .response_body
                .as_deref()
                .filter(|b| !b.is_empty())
                .map(|b| truncate(b, LIST_TEXT)),
        }
    }
}

/// `GET /console/endpoints/{endpoint}`: its breaker, transitions, recent
/// attempts (`before`: an attempt id, for older ones) and actions.
pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<String>, PathRejection>,
    params: Params,
) -> Response {
    let Ok(Path(endpoint)) = path else {
        return bad_request(&state, &op, "endpoint: not a valid path segment");
    };
    let before = match params.number("before") {
        Ok(b) => b,
        Err(e) => return bad_request(&state, &op, &e),
    };
    let (rows, counts_problem) = rows(&state).await;
    let Some(row) = rows.into_iter().find(|r| r.view.endpoint == endpoint) else {
        return page::error(
            &state,
            &op,
            StatusCode::NOT_FOUND,
            &format!("no endpoint {endpoint:?}"),
        );
    };
    let store = state.engine.store();
    let attempts = match store
        .endpoint_attempts(&endpoint, before, PAGE_ROWS + 1)
        .await
    {
        Ok(a) => a,
        Err(e) => return store_failed(&state, &op, &e),
    };
    let more = attempts.len() > PAGE_ROWS;
    let attempts: Vec<AttemptRow> = attempts
        .iter()
        .take(PAGE_ROWS)
        .map(AttemptRow::of)
        .collect();
    let older = more.then(|| attempts.last().map(|a| a.id)).flatten();
    let filter = ActionFilter {
        endpoint: Some(endpoint.clone()),
        ..ActionFilter::default()
    };
    let actions = match store.actions(&filter, None, ENDPOINT_ACTIONS).await {
        Ok(p) => p.actions.iter().map(ActionRow::of).collect::<Vec<_>>(),
        Err(e) => return store_failed(&state, &op, &e),
    };
    let transitions = state.console().transitions(&endpoint);
    Frame {
        title: format!("Endpoint {endpoint}"),
        section: "endpoints",
        operator: Some(&op),
    }
    .render(
        &state,
        StatusCode::OK,
        "endpoint.html",
        context! {
            endpoint => ser(&row),
            counts_problem => counts_problem,
            transitions => ser(&transitions),
            attempts => ser(&attempts),
            older => older,
            paged => before.is_some(),
            actions => ser(&actions),
        },
    )
}
