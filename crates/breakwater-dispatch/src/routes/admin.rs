//! `POST /breakers/{endpoint}/reset|open|close`, behind the admin token.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;

use crate::app::{bearer_matches, AppState};
use crate::engine::{AdminOp, BreakerView};
use crate::error::ApiError;

/// Runs `op` on `endpoint`'s breaker (the endpoint percent-encoded in the
/// path, e.g. `http%3A%2F%2F127.0.0.1%3A9000`); answers the breaker's view.
pub async fn breaker(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<BreakerView>, ApiError> {
    let Path((endpoint, op)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authorised = state
        .tokens()
        .admin
        .is_some_and(|token| bearer_matches(auth, &token));
    if !authorised {
        return Err(ApiError::Unauthorized);
    }
    let op = match op.as_str() {
        "reset" => AdminOp::Reset,
        "open" => AdminOp::Open,
        "close" => AdminOp::Close,
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown operation {other:?} (expected reset, open or close)"
            )))
        }
    };
    if !state.engine.admin(&endpoint, op).await? {
        return Err(ApiError::NotFound(format!("no endpoint {endpoint:?}")));
    }
    tracing::info!(%endpoint, ?op, "admin operation");
    state
        .engine
        .breaker_views()
        .into_iter()
        .find(|v| v.endpoint == endpoint)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no endpoint {endpoint:?}")))
}
