//! `GET /audit`: the operators' writes, newest first.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::actions::{pairs, RawPairs};
use super::caller;
use super::params::Params;
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::rfc3339;

/// `GET /audit`: a page of audit entries, newest first (`before`, `limit`):
/// `{"entries": [...], "next": "<cursor>"|null}`. Each entry says when
/// (`at`, and `at_ms`), who (`actor`: `token:<fingerprint>` or `cli`),
/// what (`action`), on what (`target`), how many (`count`) and where
/// (`instance`, in a fleet).
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: RawPairs,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers).must_read()?;
    let p = Params::new(pairs(query)?, &["before", "limit"])?;
    let (before, limit) = (p.before()?, p.limit()?);
    let entries = state.engine.store().audit_log(before, limit).await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!(e);
            v["at"] = Value::String(rfc3339(e.at_ms));
            v
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "next": next })))
}
