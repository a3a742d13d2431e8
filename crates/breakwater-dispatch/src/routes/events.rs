//! `POST /events` and `GET /events/{id}`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;

use breakwater::traits::{EntityEvent, EventKind, FieldChange};
use chrono::{DateTime, Utc};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use uuid::Uuid;

use super::numbers;
use crate::app::{bearer_matches, AppState};
use crate::error::ApiError;
use crate::metrics::ReasonLabel;
use crate::store::{EventRecord, Inserted, NewEvent};

/// Parses a `POST /events` body: one event or a non-empty array; `id` may
/// be left out (a fresh version 7 UUID is given, so such an event is not
/// deduplicated),
/// and so may `timestamp` (the time it was received).
///
/// # Errors
///
/// [`ApiError::BadRequest`] naming the problem (and the array index).
pub fn parse_events(body: &[u8]) -> Result<Vec<EntityEvent>, ApiError> {
    let malformed = |e: serde_json::Error| ApiError::BadRequest(format!("malformed JSON: {e}"));
    // The body is checked as JSON once, and each event then read straight
    // into its type (`Incoming`), without building a tree of values first.
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
    let received = chrono::Utc::now();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            // A struct also reads from an array of its fields in order:
            // an event must be an object.
            if item.get().starts_with('[') {
                return Err(ApiError::BadRequest(format!(
                    "events[{i}]: invalid type: array, expected an event object"
                )));
            }
            let at = || {
                if single {
                    String::from("event")
                } else {
                    format!("events[{i}]")
                }
            };
            let event = serde_json::from_str::<Incoming>(item.get())
                .map(|e| e.into_event(received))
                .map_err(|_| {
                    ApiError::BadRequest(format!("{}{}", at(), field_error(item.get())))
                })?;
            // Parsed, a number outside 64-bit integers and floats would
            // have been rounded: refused rather than delivered altered.
            if let Some((path, number)) = numbers::first_inexact(item.get()) {
                return Err(ApiError::BadRequest(format!(
                    "{}.{path}: the number {number} cannot be kept exactly (integers from \
                     -9223372036854775808 to 18446744073709551615, and numbers a 64-bit float \
                     holds exactly, are); send it as a string",
                    at()
                )));
            }
            Ok(event)
        })
        .collect()
}

/// What is wrong with `item` (an event that did not parse), naming the
/// field at fault: `.timestamp: premature end of input`, or `: missing
/// field `entity_id`` when the fault is the object's. Read again, on this
/// error path only, through a deserializer that tracks where it is.
fn field_error(item: &str) -> String {
    let mut de = serde_json::Deserializer::from_str(item);
    match serde_path_to_error::deserialize::<_, Incoming>(&mut de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                format!(": {inner}")
            } else {
                format!(".{path}: {inner}")
            }
        }
        // Cannot happen (the same text failed before); say what we know.
        Ok(_) => ": not a valid event".into(),
    }
}

/// An event as posted: [`EntityEvent`]'s fields, with `id` and `timestamp`
/// optional. Read straight from the body, without a tree of values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an event object")]
struct Incoming {
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(deserialize_with = "kind_as_string")]
    event_type: EventKind,
    entity_type: String,
    entity_id: Uuid,
    data: Value,
    #[serde(default, deserialize_with = "changes_as_objects")]
    changes: Option<BTreeMap<String, FieldChange>>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
}

/// `event_type` from a string only: serde reads a unit variant from
/// `{"INSERT": null}` too.
fn kind_as_string<'de, D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
    struct Name;
    impl Visitor<'_> for Name {
        type Value = EventKind;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("one of `INSERT`, `UPDATE`, `DELETE`, `CUSTOM`")
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<EventKind, E> {
            EventKind::deserialize(name.into_deserializer())
        }
    }
    d.deserialize_str(Name)
}

/// `changes`, each change an object: serde reads a struct from an array of
/// its fields too (`{"total": [40, 42]}`), refused as an event given as an
/// array is.
fn changes_as_objects<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, FieldChange>>, D::Error> {
    struct Change(FieldChange);
    impl<'de> Deserialize<'de> for Change {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Object;
            impl<'de> Visitor<'de> for Object {
                type Value = FieldChange;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object with `old` and `new`")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldChange, A::Error> {
                    FieldChange::deserialize(MapAccessDeserializer::new(map))
                }
            }
            d.deserialize_map(Object).map(Change)
        }
    }
    let changes = Option::<BTreeMap<String, Change>>::deserialize(d)?;
    Ok(changes.map(|c| c.into_iter().map(|(k, Change(c))| (k, c)).collect()))
}

impl Incoming {
    /// The event, with a fresh id when it has none and `received` as its
    /// time when it gives none. A fresh id is a version 7 UUID: ids given
    /// here grow with time, so the store's index of ids takes them at its
    /// end rather than at a random place.
    fn into_event(self, received: DateTime<Utc>) -> EntityEvent {
        EntityEvent {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            event_type: self.event_type,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            data: self.data,
            changes: self.changes,
            user_id: self.user_id,
            timestamp: self.timestamp.unwrap_or(received),
        }
    }
}

/// `POST /events`; a refusal is counted by its kind
/// (`breakwater_dispatch_intake_refused_total`).
pub async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let answer = intake(&state, &headers, body).await;
    if let Err(e) = &answer {
        state
            .engine
            .metrics()
            .intake_refused
            .get_or_create(&ReasonLabel { reason: e.kind() })
            .inc();
    }
    answer
}

async fn intake(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tokens = state.tokens();
    if tokens.intake_required {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // Configured but missing from the environment: nothing gets in.
        if !tokens
            .intake
            .as_deref()
            .is_some_and(|token| bearer_matches(auth, token))
        {
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
        .map(|event| NewEvent::new(&event, routes.actions_for(&event)))
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

/// `GET /events/{id}`: the event's actions and where each stands, open to
/// anyone (as it always was); each action's `attempt_history` (attempts,
/// oldest first, with their requests and answers) only for a caller with
/// the viewer or the admin token, and left out otherwise.
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EventRecord>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let id: Uuid = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{id:?} is not an event id: {e}")))?;
    let mut event = state
        .engine
        .store()
        .event(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?;
    let reader = super::caller(&state, &headers).must_read().is_ok();
    for action in &mut event.actions {
        if reader {
            action.attempt_history.get_or_insert_with(Vec::new);
        } else {
            action.attempt_history = None;
        }
    }
    Ok(Json(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"event_type":"INSERT","entity_type":"Order",
        "entity_id":"1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1","data":{},"timestamp":"2026-01-22T10:00:00Z"}"#;

    /// The 400 message for `body`.
    fn problem(body: &str) -> String {
        match parse_events(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_value_is_reported_at_its_field() {
        let cases = [
            (
                EVENT.replace("\"2026-01-22T10:00:00Z\"", "\"yesterday\""),
                "event.timestamp: ",
            ),
            (EVENT.replace("\"INSERT\"", "null"), "event.event_type: "),
            (
                EVENT.replace("\"INSERT\"", "\"insert\""),
                "event.event_type: unknown variant `insert`",
            ),
            (EVENT.replace("1f0e0a52-3f8e", "zz"), "event.entity_id: "),
            (
                EVENT.replace("\"data\":{}", "\"data\":{},\"changes\":{\"a\":{\"old\":1}}"),
                "event.changes.a: missing field `new`",
            ),
            (
                EVENT.replace(",\"data\":{}", ""),
                "event: missing field `data`",
            ),
        ];
        for (body, says) in cases {
            let m = problem(&body);
            assert!(m.starts_with(says), "{m:?} for {body}");
        }
        let m = problem(&format!(
            "[{EVENT},{}]",
            EVENT.replace("1f0e0a52-3f8e", "zz")
        ));
        assert!(m.starts_with("events[1].entity_id: "), "{m}");
        // Regression: a number past u64 was taken and delivered rounded
        // (as 1.8446744073709552e19).
        let big = EVENT.replace("\"data\":{}", "\"data\":{\"n\":18446744073709551616}");
        let m = problem(&big);
        assert!(
            m.starts_with("event.data.n: the number 18446744073709551616 cannot be kept exactly"),
            "{m}"
        );
        let m = problem(&format!("[{EVENT},{big}]"));
        assert!(m.starts_with("events[1].data.n: the number"), "{m}");
        // Regression: an event given as an array of its field values was
        // taken (serde reads a struct from a sequence too).
        let fields = r#"["1f0e0a52-3f8e-4a4e-9d4f-2c1b0e9a7d10","INSERT","Order","1f0e0a52-3f8e-4a4e-9d4f-2c1b0e9a7d10",{},null,null,"2026-01-22T10:00:00Z"]"#;
        let m = problem(&format!("[{fields}]"));
        assert_eq!(
            m,
            "events[0]: invalid type: array, expected an event object"
        );
        let m = problem(&format!("[{EVENT},7]"));
        assert!(
            m.starts_with("events[1]: invalid type: integer `7`, expected an event object"),
            "{m}"
        );
    }

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
    fn fresh_ids_are_version_7_and_grow_in_the_order_given() {
        let body = format!("[{EVENT},{EVENT},{EVENT}]");
        let first = parse_events(body.as_bytes()).unwrap();
        let second = parse_events(body.as_bytes()).unwrap();
        let ids: Vec<Uuid> = first.iter().chain(&second).map(|e| e.id).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7), "{ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        // A given id is kept, whatever its version; null is as left out.
        let v4 = "6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11";
        let given = EVENT.replacen('{', &format!("{{\"id\":\"{v4}\","), 1);
        assert_eq!(
            parse_events(given.as_bytes()).unwrap()[0].id.to_string(),
            v4
        );
        let null = EVENT.replacen('{', "{\"id\":null,\"user_id\":null,", 1);
        let event = parse_events(null.as_bytes()).unwrap().remove(0);
        assert_eq!(event.id.get_version_num(), 7);
        assert_eq!(event.user_id, None);
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
            (&EVENT.replacen('{', "{\"id\":\"nope\",", 1), "UUID"),
            (
                &EVENT.replace("2026-01-22T10:00:00Z", "yesterday"),
                "input contains invalid characters",
            ),
            (&EVENT.replace(",\"data\":{}", ""), "missing field `data`"),
        ];
        for (body, want) in cases {
            let err = parse_events(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(want), "{body}: {err}");
        }
        let err = parse_events(format!("[{EVENT}, 1]").as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("events[1]"), "{err}");
    }
}
