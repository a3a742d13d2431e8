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
    pub timestamp: DateTime<Utc>,
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
}
