//! The handlers, one module per area.

pub mod actions;
pub mod admin;
pub mod audit;
pub mod events;
mod numbers;
pub mod ops;
pub mod params;
pub mod replays;

use axum::http::{header, HeaderMap};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::store::{rfc3339, ReplayJob};

/// Who sent `headers` (their bearer token's access and fingerprint).
pub fn caller(state: &AppState, headers: &HeaderMap) -> Caller {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Caller::of_bearer(&state.tokens(), auth)
}

/// A replay job as the API shows it: its fields, its times also in RFC
/// 3339 (`created_at`, `updated_at`), and its `progress` as an object of
/// counts by status (`{"pending": 3, "delivered": 497}`).
pub fn job_json(job: &ReplayJob) -> Value {
    let mut v = json!(job);
    let progress: Map<String, Value> = job
        .progress
        .iter()
        .filter_map(|(status, n)| {
            let name = serde_json::to_value(status).ok()?.as_str()?.to_string();
            Some((name, json!(n)))
        })
        .collect();
    v["progress"] = Value::Object(progress);
    v["created_at"] = Value::String(rfc3339(job.created_at_ms));
    v["updated_at"] = Value::String(rfc3339(job.updated_at_ms));
    v
}
