//! `POST /events` and `GET /events/{id}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use breakwater::traits::EntityEvent;
use serde_json::value::RawValue;
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
    let malformed = |e: serde_json::Error| ApiError::BadRequest(format!("malformed JSON: {e}"));
    // The body is checked as JSON once, and each event then read straight
    // into an `EntityEvent`, without building a tree of values first.
    let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
    let (items, single) = match raw.get().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(malformed)?;
            if items.is_empty() {
                return Err(ApiError::BadRequest("the array holds no event".into()));
            }
            (items, false)
        }
        Some(b'{') => (vec![raw], true),
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
        .map(|(i, item)| {
            let at = || {
                if single {
                    String::from("event")
                } else {
                    format!("events[{i}]")
                }
            };
            // Events that carry their id and timestamp read directly; the
            // others (and any with a problem, so that its message is the
            // same either way) go through the slower path that fills them in.
            serde_json::from_str::<EntityEvent>(item.get())
                .or_else(|_| fill_in(item.get(), &received))
                .map_err(|e| ApiError::BadRequest(format!("{}: {e}", at())))
        })
        .collect()
}

/// Reads an event object, giving it a fresh id and the time of receipt
/// when it has none.
fn fill_in(item: &str, received: &str) -> Result<EntityEvent, String> {
    let mut value: Value = serde_json::from_str(item).map_err(|e| e.to_string())?;
    let Value::Object(map) = &mut value else {
        return Err("expected an object".into());
    };
    if !map.contains_key("id") {
        map.insert("id".into(), Value::String(Uuid::new_v4().to_string()));
    }
    if !map.contains_key("timestamp") {
        map.insert("timestamp".into(), Value::String(received.to_string()));
    }
    serde_json::from_value::<EntityEvent>(value).map_err(|e| e.to_string())
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
    fn whitespace_around_the_body_and_its_items_is_allowed() {
        let body = format!("\n  [ {EVENT} ,\n {EVENT} ]  \n");
        assert_eq!(parse_events(body.as_bytes()).unwrap().len(), 2);
        let body = format!("\t{EVENT}\r\n");
        assert_eq!(parse_events(body.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn every_field_reads_the_same_with_or_without_id_and_timestamp() {
        let full = r#"{"id":"6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11","event_type":"UPDATE",
            "entity_type":"Order","entity_id":"1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1",
            "data":{"total":42,"lines":[1,2]},"changes":{"total":{"old":40,"new":42}},
            "user_id":"u-7","timestamp":"2026-01-22T10:00:00.123Z"}"#;
        let direct = parse_events(full.as_bytes()).unwrap().remove(0);
        assert_eq!(
            direct.id.to_string(),
            "6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11"
        );
        assert_eq!(direct.user_id.as_deref(), Some("u-7"));
        assert_eq!(direct.changes.as_ref().unwrap()["total"].new, 42);
        assert_eq!(
            serde_json::to_value(&direct).unwrap(),
            serde_json::from_str::<Value>(full).unwrap()
        );
        // Without an id, the same event with a fresh one.
        let no_id = full.replace(r#""id":"6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11","#, "");
        let filled = parse_events(no_id.as_bytes()).unwrap().remove(0);
        assert_ne!(filled.id, direct.id);
        assert_eq!(
            EntityEvent {
                id: direct.id,
                ..filled
            },
            direct
        );
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
