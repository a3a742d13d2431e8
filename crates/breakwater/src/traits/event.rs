//! Events: what happened to which entity.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What happened to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// An application-defined event.
    Custom,
}

impl EventKind {
    /// The name as spelled on the wire: `INSERT`, `UPDATE`, `DELETE`, `CUSTOM`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Custom => "CUSTOM",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The old and new value of one changed field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    /// Before the change (`null` when the field was added).
    pub old: Value,
    /// After the change (`null` when the field was removed).
    pub new: Value,
}

/// A change to one entity.
///
/// # Examples
///
/// ```
/// use breakwater::traits::{EntityEvent, EventKind};
///
/// let json = r#"{
///   "id": "7b0b5b9e-8a5d-4d0c-9d9a-0c6c1f0b7e11",
///   "event_type": "INSERT",
///   "entity_type": "order",
///   "entity_id": "1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1",
///   "data": { "total": 42 },
///   "timestamp": "2026-01-22T10:00:00Z"
/// }"#;
/// let event: EntityEvent = serde_json::from_str(json).unwrap();
/// assert_eq!(event.event_type, EventKind::Insert);
/// assert_eq!(event.data["total"], 42);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityEvent {
    /// The event's own id.
    pub id: Uuid,
    /// What happened.
    pub event_type: EventKind,
    /// The kind of entity (e.g. a table name).
    pub entity_type: String,
    /// Which entity.
    pub entity_id: Uuid,
    /// The entity's data after the change.
    pub data: Value,
    /// For updates: the fields that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<BTreeMap<String, FieldChange>>,
    /// Who made the change, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When it happened.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
}

/// Writes `at` as chrono's own `Serialize` does (RFC 3339, `Z`, as many
/// fraction digits as needed), but into one string rather than character by
/// character through the serializer: it is written for every event sent.
fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

impl EntityEvent {
    /// A new event with a fresh id, stamped now.
    pub fn new(
        event_type: EventKind,
        entity_type: impl Into<String>,
        entity_id: Uuid,
        data: Value,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type,
            entity_type: entity_type.into(),
            entity_id,
            data,
            changes: None,
            user_id: None,
            timestamp: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let mut e = EntityEvent::new(
            EventKind::Update,
            "user",
            Uuid::new_v4(),
            serde_json::json!({"a": 1}),
        );
        e.changes = Some(BTreeMap::from([(
            "a".to_string(),
            FieldChange {
                old: 0.into(),
                new: 1.into(),
            },
        )]));
        e.user_id = Some("u-1".into());
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""event_type":"UPDATE""#));
        let back: EntityEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        let whole = Utc.with_ymd_and_hms(2026, 1, 22, 10, 0, 0).unwrap();
        let nanos = chrono::Duration::nanoseconds;
        for at in [
            whole,
            whole + nanos(120_000_000),
            whole + nanos(123_456_000),
            whole + nanos(123_456_789),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + nanos(999_999_999),
            Utc.with_ymd_and_hms(12345, 6, 7, 8, 9, 10).unwrap(),
            Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
            Utc::now(),
        ] {
            let mut e = EntityEvent::new(EventKind::Insert, "x", Uuid::nil(), Value::Null);
            e.timestamp = at;
            let written = serde_json::to_value(&e).unwrap();
            assert_eq!(
                written["timestamp"],
                serde_json::to_value(at).unwrap(),
                "{at:?}"
            );
            let back: EntityEvent = serde_json::from_value(written).unwrap();
            assert_eq!(back.timestamp, at);
        }
        let mut e = EntityEvent::new(EventKind::Insert, "x", Uuid::nil(), Value::Null);
        e.timestamp = whole;
        assert!(serde_json::to_string(&e)
            .unwrap()
            .contains(r#""timestamp":"2026-01-22T10:00:00Z""#));
    }
}
