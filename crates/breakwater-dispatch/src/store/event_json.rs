//! An event as its JSON text: what a store writes, and what the engine
//! holds for each pending action.
//!
//! A parsed JSON tree costs many times its text (a body of small numbers,
//! fifteen times and more), so the engine never keeps one: it holds the
//! event's compact JSON, shared by the event's actions, and parses it only
//! for the attempt that renders it. Numbers survive the round trip exactly:
//! intake refuses any it could not deliver as received.

use std::fmt;
use std::mem::size_of;

use breakwater::traits::EntityEvent;
use uuid::Uuid;

/// An event's id with its compact JSON text.
///
/// ```
/// use breakwater::traits::{EntityEvent, EventKind};
/// use breakwater_dispatch::store::EventJson;
///
/// let event = EntityEvent::new(
///     EventKind::Insert,
///     "Order",
///     uuid::Uuid::new_v4(),
///     serde_json::json!({"total": 42}),
/// );
/// let held = EventJson::new(&event);
/// assert_eq!(held.id(), event.id);
/// assert!(held.json().contains(r#""total":42"#));
/// assert_eq!(held.to_event().unwrap(), event);
/// assert!(held.size() < 400);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EventJson {
    id: Uuid,
    json: Box<str>,
}

impl EventJson {
    /// `event`, written as compact JSON.
    pub fn new(event: &EntityEvent) -> Self {
        // An `EntityEvent` is plain data (strings, numbers, maps with string
        // keys): writing it as JSON cannot fail.
        let json = serde_json::to_string(event).unwrap_or_default();
        Self {
            id: event.id,
            json: json.into_boxed_str(),
        }
    }

    /// The event with id `id` whose JSON a store kept. It is not parsed
    /// here: a text that no longer parses fails the attempt that reads it
    /// ([`EventJson::to_event`]), not the claim of a whole page.
    pub fn from_stored(id: Uuid, json: impl Into<Box<str>>) -> Self {
        Self {
            id,
            json: json.into(),
        }
    }

    /// The event's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The event as compact JSON.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The event, parsed.
    ///
    /// # Errors
    ///
    /// When the text is not an event (a store's file edited by hand, say).
    pub fn to_event(&self) -> Result<EntityEvent, serde_json::Error> {
        serde_json::from_str(&self.json)
    }

    /// The bytes of memory it takes: its text and its own fields.
    pub fn size(&self) -> usize {
        size_of::<Self>() + self.json.len()
    }
}

impl fmt::Debug for EventJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventJson")
            .field("id", &self.id)
            .field("bytes", &self.json.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use breakwater::traits::EventKind;

    use super::*;

    fn numbers(n: u32) -> EntityEvent {
        let numbers: Vec<u32> = (0..n).collect();
        EntityEvent::new(
            EventKind::Insert,
            "Order",
            Uuid::nil(),
            serde_json::json!({ "n": numbers }),
        )
    }

    #[test]
    fn an_event_costs_about_its_text() {
        let event = numbers(200_000);
        let held = EventJson::new(&event);
        let text = serde_json::to_string(&event).unwrap().len();
        assert!(text > 1_000_000, "{text}");
        assert!(held.size() <= text + 64, "{} vs {text}", held.size());
    }

    #[test]
    fn the_text_parses_back_to_the_same_event() {
        let mut event = numbers(3);
        event.data["big"] = serde_json::json!(u64::MAX);
        event.data["neg"] = serde_json::json!(i64::MIN);
        event.data["f"] = serde_json::json!(0.1);
        event.data["s"] = serde_json::json!("a\nb\u{0}\u{1F600}");
        let held = EventJson::new(&event);
        assert_eq!(held.to_event().unwrap(), event);
    }

    #[test]
    fn a_text_that_is_not_an_event_fails_when_read() {
        let held = EventJson::from_stored(Uuid::nil(), "{\"id\":");
        assert!(held.to_event().is_err());
        assert_eq!(
            format!("{held:?}"),
            format!("EventJson {{ id: {}, bytes: 6 }}", Uuid::nil())
        );
    }
}
