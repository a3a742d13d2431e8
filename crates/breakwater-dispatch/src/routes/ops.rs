//! `GET /metrics`, `GET /health` and `GET /breakers`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use breakwater::DegradationLevel;
use serde_json::json;

use crate::app::AppState;
use crate::engine::BreakerView;
use crate::error::ApiError;

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    state.engine.refresh_gauges().await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, state.registry())
        .map_err(|e| ApiError::Internal(format!("encoding metrics failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// `GET /health`: the degradation level over every breaker and the store's
/// state; 503 when critical or when the store cannot keep events.
pub async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let level = state.engine.degradation_level();
    let store = state.engine.store_problem();
    let views = state.engine.breaker_views();
    let open: Vec<&str> = views
        .iter()
        .filter(|v| v.state == "open")
        .map(|v| v.endpoint.as_str())
        .collect();
    let disabled: Vec<&str> = views
        .iter()
        .filter(|v| v.disabled)
        .map(|v| v.endpoint.as_str())
        .collect();
    let status = if level == DegradationLevel::Critical || store.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({
            "status": level.as_str(),
            "stopping": state.engine.is_stopping(),
            "queue_depth": state.engine.held(),
            "open": open,
            "disabled": disabled,
            "store": store.as_deref().unwrap_or("ok"),
        })),
    )
}

/// `GET /breakers`: every endpoint's breaker and counters.
pub async fn breakers(State(state): State<Arc<AppState>>) -> Json<Vec<BreakerView>> {
    Json(state.engine.breaker_views())
}
