//! `POST /breakers/{endpoint}/reset|open|close`, behind the admin token;
//! audited.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;

use super::caller;
use crate::app::AppState;
use crate::engine::{AdminOp, BreakerView};
use crate::error::ApiError;
use crate::operations::Operator;

/// Runs `op` on `endpoint`'s breaker (the endpoint percent-encoded in the
/// path, e.g. `http%3A%2F%2F127.0.0.1%3A9000`); answers the breaker's view.
/// 401 without the admin token, 403 with the viewer token.
pub async fn breaker(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<BreakerView>, ApiError> {
    let Path((endpoint, op)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let who = caller(&state, &headers);
    who.must_write()?;
    let Some(op) = AdminOp::parse(&op) else {
        return Err(ApiError::NotFound(format!(
            "unknown operation {op:?} (expected reset, open or close)"
        )));
    };
    if !Operator::new(&state.engine, who.actor)
        .breaker(&endpoint, op)
        .await?
    {
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
