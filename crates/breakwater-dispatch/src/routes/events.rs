//! `POST /events` and `GET /events/{id}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use breakwater::traits::EntityEvent;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{bearer_matches, AppState};
use crate::error::ApiError;
use crate::store::{EventRecord, Inserted, NewEvent};

/// Parses a `POST /events` body: one event or a non-empty array; `id` may
/// be left out (a fresh one is given, so such an event is not deduplicated),
/// and so may `timestamp` (the time it was received).
///
/// # Errors
///
/// [`ApiError::BadRequest`] naming the problem (and the array index).
pub fn parse_events(body: &[u8]) -> Result<Vec<EntityEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    let (items, single) = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::BadRequest("the array holds no event".into()))
        }
        Value::Array(items) => (items, false),
        v @ Value::Object(_) => (vec![v], true),
        _ => {
            return Err(ApiError::BadRequest(
                "expected an event object or an array of events".into(),
            ))
        }
    };
    let received = chrono::Utc::now().to_rfc3339();
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            let at = if single {
                String::from("event")
            } else {
                format!("events[{i}]")
            };
            let Value::Object(map) = &mut item else {
                return Err(ApiError::BadRequest(format!("{at}: expected an object")));
            };
            if !map.contains_key("id") {
                map.insert("id".into(), Value::String(Uuid::new_v4().to_string()));
            }
            if !map.contains_key("timestamp") {
                map.insert("timestamp".into(), Value::String(received.clone()));
            }
            serde_json::from_value::<EntityEvent>(item)
                .map_err(|e| ApiError::BadRequest(format!("{at}: {e}")))
        })
        .collect()
}

/// `POST /events`.
pub async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Some(token) = state.tokens().intake {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !bearer_matches(auth, &token) {
            return Err(ApiError::Unauthorized);
        }
    }
    let config = state.config();
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: config.delivery.max_body_bytes,
            }
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let events = parse_events(&body)?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let routes = state.routes();
    let batch = events
        .into_iter()
        .map(|event| NewEvent {
            actions: routes.actions_for(&event),
            event,
        })
        .collect();
    let inserted = state.engine.accept(batch).await?;
    let duplicates: Vec<Uuid> = ids
        .iter()
        .zip(&inserted)
        .filter(|(_, i)| matches!(i, Inserted::Duplicate))
        .map(|(id, _)| *id)
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "ids": ids, "duplicates": duplicates })),
    ))
}

/// `GET /events/{id}`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<EventRecord>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{id:?} is not an event id: {e}")))?;
    state
        .engine
        .store()
        .event(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"event_type":"INSERT","entity_type":"Order",
        "entity_id":"1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1","data":{},"timestamp":"2026-01-22T10:00:00Z"}"#;

    #[test]
    fn one_event_or_an_array_with_optional_ids() {
        let one = parse_events(EVENT.as_bytes()).unwrap();
        assert_eq!(one.len(), 1);
        let two = parse_events(format!("[{EVENT},{EVENT}]").as_bytes()).unwrap();
        assert_ne!(two[0].id, two[1].id);
    }

    #[test]
    fn a_missing_timestamp_is_the_time_of_receipt() {
        let body = EVENT.replace(",\"timestamp\":\"2026-01-22T10:00:00Z\"", "");
        assert!(!body.contains("timestamp"), "{body}");
        let before = chrono::Utc::now();
        let events = parse_events(body.as_bytes()).unwrap();
        let after = chrono::Utc::now();
        assert!(before <= events[0].timestamp && events[0].timestamp <= after);
        let given = parse_events(EVENT.as_bytes()).unwrap();
        assert_eq!(given[0].timestamp.to_rfc3339(), "2026-01-22T10:00:00+00:00");
    }

    #[test]
    fn problems_are_named() {
        let cases = [
            ("{", "malformed JSON"),
            ("[]", "no event"),
            ("3", "expected an event object"),
            (&EVENT.replace("INSERT", "UPSERT"), "UPSERT"),
            (
                &EVENT.replace("\"data\":{}", "\"data\":{},\"bogus\":1"),
                "bogus",
            ),
            (&EVENT.replace("\"Order\"", "7"), "invalid type"),
        ];
        for (body, want) in cases {
            let err = parse_events(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(want), "{body}: {err}");
        }
        let err = parse_events(format!("[{EVENT}, 1]").as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("events[1]"), "{err}");
    }
}
