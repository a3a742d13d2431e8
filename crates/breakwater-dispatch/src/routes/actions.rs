//! `GET /actions`, `GET /actions/{id}`, `POST /actions/{id}/replay`,
//! `POST /actions/replay` and `POST /actions/purge`.
//!
//! Reads need the viewer or the admin token, writes the admin token; every
//! write is audited ([`crate::operations`]).
//!
//! `POST /actions/replay` and `POST /actions/purge` take their filter and
//! `dry_run` either as query parameters (the names of `GET /actions`'s
//! filter) or as a JSON body `{"filter": {...}, "dry_run": true}` with the
//! same names, not both. A dry run answers `{"count": n}` and changes
//! nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{Params, FILTER};
use super::{caller, job_json};
use crate::app::AppState;
use crate::error::ApiError;
use crate::operations::{purge_filter, replay_filter, OpError, Operator};
use crate::store::{ActionFilter, ActionId, ActionRecord};

/// A query string as pairs; a malformed one is a 400.
pub(super) type RawPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The pairs of a query string.
pub(super) fn pairs(query: RawPairs) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// An id from the path.
pub(super) fn path_id(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<i64, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::BadRequest(format!("{id:?} is not {what} id")))
}

/// `GET /actions`: a page of the actions matching the filter, newest
/// first: `{"actions": [...], "next": "<cursor>"|null}`; pass `next` as
/// `before` for the next page.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: RawPairs,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers).must_read()?;
    let allowed = [FILTER, &["before", "limit"]].concat();
    let p = Params::new(pairs(query)?, &allowed)?;
    let (filter, before, limit) = (p.filter()?, p.before()?, p.limit()?);
    let page = state.engine.store().actions(&filter, before, limit).await?;
    Ok(Json(json!({
        "actions": page.actions,
        "next": page.next.map(|n| n.to_string()),
    })))
}

/// `GET /actions/{id}`: one action with its attempts, oldest first.
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ActionRecord>, ApiError> {
    caller(&state, &headers).must_read()?;
    let id = path_id(path, "an action")?;
    Ok(Json(with_attempts(&state, id).await?))
}

/// Action `id` with its attempts.
async fn with_attempts(state: &AppState, id: ActionId) -> Result<ActionRecord, ApiError> {
    let store = state.engine.store();
    let mut action = store
        .action(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no action {id}")))?;
    // The attempts come with the action's event.
    if let Some(event) = store.event(action.event_id).await? {
        action.attempt_history = event
            .actions
            .into_iter()
            .find(|a| a.id == id)
            .and_then(|a| a.attempt_history);
    }
    action.attempt_history.get_or_insert_with(Vec::new);
    Ok(action)
}

/// `POST /actions/{id}/replay`: the action, dead-lettered or delivered,
/// becomes pending again; answers it as it is after. 404 for an unknown
/// id, 409 for an action that is pending, parked or held.
pub async fn replay_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ActionRecord>, ApiError> {
    let who = caller(&state, &headers);
    who.must_write()?;
    let id = path_id(path, "an action")?;
    let op = Operator::new(&state.engine, who.actor);
    Ok(Json(op.replay_one(id).await?))
}

/// The body of `POST /actions/replay` and `POST /actions/purge`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    filter: serde_json::Map<String, Value>,
    #[serde(default)]
    dry_run: bool,
}

/// The filter and `dry_run` of a bulk write, from the query or the body,
/// checked by `check` (a problem it finds is named as the filter's field
/// was: `status`, or `filter.status` in a body).
fn bulk(
    query: RawPairs,
    body: &Bytes,
    check: fn(ActionFilter) -> Result<ActionFilter, OpError>,
) -> Result<(ActionFilter, bool), ApiError> {
    let checked = |filter, prefix: &str| {
        check(filter).map_err(|e| match e {
            OpError::Invalid { field, message } => {
                ApiError::BadRequest(format!("{prefix}{field}: {message}"))
            }
            other => other.into(),
        })
    };
    let pairs = pairs(query)?;
    let has_body = body.iter().any(|b| !b.is_ascii_whitespace());
    if has_body && !pairs.is_empty() {
        return Err(ApiError::BadRequest(
            "give the filter in the query or in a JSON body, not both".into(),
        ));
    }
    if has_body {
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the body: {e}")))?;
        let filter = Params::of_json_filter(&body.filter)?.filter()?;
        return Ok((checked(filter, "filter.")?, body.dry_run));
    }
    let allowed = [FILTER, &["dry_run"]].concat();
    let p = Params::new(pairs, &allowed)?;
    Ok((checked(p.filter()?, "")?, p.flag("dry_run")?))
}

/// `POST /actions/replay`: replays every action matching the filter
/// (dead letters unless `status` says `delivered`). A dry run answers
/// `{"count": n}`; otherwise a replay job starts and the answer is 202 with
/// it (follow it at `GET /replays/{id}`).
pub async fn replay(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: RawPairs,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&state, &headers);
    who.must_write()?;
    let (filter, dry_run) = bulk(query, &body, replay_filter)?;
    let op = Operator::new(&state.engine, who.actor);
    if dry_run {
        let count = op.count(&filter).await?;
        return Ok((StatusCode::OK, Json(json!({ "count": count }))));
    }
    let job = op.start_replay(filter).await?;
    Ok((StatusCode::ACCEPTED, Json(job_json(&job))))
}

/// `POST /actions/purge`: deletes every dead letter matching the filter,
/// with its attempts: `{"purged": n}`. A dry run answers `{"count": n}`.
pub async fn purge(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: RawPairs,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers);
    who.must_write()?;
    let (filter, dry_run) = bulk(query, &body, purge_filter)?;
    let op = Operator::new(&state.engine, who.actor);
    if dry_run {
        return Ok(Json(json!({ "count": op.count(&filter).await? })));
    }
    Ok(Json(json!({ "purged": op.purge(filter).await? })))
}
