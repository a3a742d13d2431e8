//! What intake hands a store: an event with its keys and the actions its
//! observers ask for, each worked out once (breaker key, JSON) so that a
//! configured action costs a few reference counts an event.

use std::sync::Arc;

use breakwater::traits::{ActionConfig, EntityEvent};

#[cfg(doc)]
use super::{ActionFilter, Store};
use super::{ActionStatus, EventJson};

/// One action to store with its event: the action, with what every store
/// needs of it (its breaker key and its JSON) worked out once, when it is
/// made, so that a configured action made once can be stored with any
/// number of events at the cost of a few reference counts.
///
/// ```
/// use breakwater::traits::{ActionConfig, LogAction};
/// use breakwater_dispatch::store::NewAction;
///
/// let action = NewAction::new(
///     "audit",
///     ActionConfig::Log(LogAction { level: "info".into(), message_template: None }),
/// );
/// assert_eq!(action.observer(), "audit");
/// assert_eq!(action.endpoint(), "log");
/// assert!(action.json().contains(r#""type":"log""#));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    observer: Arc<str>,
    action: Arc<ActionConfig>,
    endpoint: Arc<str>,
    json: Arc<str>,
    parked_until_ms: Option<i64>,
    backlogged: bool,
    dead_letter: Option<Arc<str>>,
}

impl NewAction {
    /// `action`, asked for by the observer named `observer`.
    pub fn new(observer: impl Into<Arc<str>>, action: ActionConfig) -> Self {
        let endpoint = action.endpoint().into();
        // An `ActionConfig` is plain data (strings, numbers, maps with string
        // keys): writing it as JSON cannot fail.
        let json = serde_json::to_string(&action).unwrap_or_default().into();
        Self {
            observer: observer.into(),
            action: Arc::new(action),
            endpoint,
            json,
            parked_until_ms: None,
            backlogged: false,
            dead_letter: None,
        }
    }

    /// The same action, to be stored unclaimed in its endpoint's backlog
    /// (the engine reads it back with [`Store::claim_backlog`]) rather than
    /// claimed and handed back by [`Store::insert`].
    #[must_use]
    pub fn backlogged(self) -> Self {
        Self {
            backlogged: true,
            ..self
        }
    }

    /// Whether it is to be stored in its endpoint's backlog.
    pub fn is_backlogged(&self) -> bool {
        self.backlogged
    }

    /// The same action, to be stored dead-lettered at once, with `reason`
    /// as its error (its endpoint's backlog is over its quota). It is never
    /// handed back to deliver; a replay makes it pending.
    #[must_use]
    pub fn dead_lettered(self, reason: impl Into<Arc<str>>) -> Self {
        Self {
            dead_letter: Some(reason.into()),
            ..self
        }
    }

    /// Why it is to be stored dead-lettered, if it is.
    pub fn dead_letter_reason(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    /// The status it is to be stored with: dead-lettered, parked or pending.
    pub fn status(&self) -> ActionStatus {
        if self.dead_letter.is_some() {
            ActionStatus::DeadLettered
        } else if self.parked_until_ms.is_some() {
            ActionStatus::Parked
        } else {
            ActionStatus::Pending
        }
    }

    /// Whether [`Store::insert`] hands it back claimed, to deliver now:
    /// neither backlogged nor dead-lettered.
    pub fn is_claimed(&self) -> bool {
        !self.backlogged && self.dead_letter.is_none()
    }

    /// The same action, to be stored as parked by an open circuit until
    /// `until_ms` (Unix milliseconds) rather than as pending.
    #[must_use]
    pub fn parked_until(self, until_ms: i64) -> Self {
        Self {
            parked_until_ms: Some(until_ms),
            ..self
        }
    }

    /// Until when it is to be stored as parked, if it is.
    pub fn parked_until_ms(&self) -> Option<i64> {
        self.parked_until_ms
    }

    /// The observer that asked for it.
    pub fn observer(&self) -> &str {
        &self.observer
    }

    /// The action.
    pub fn action(&self) -> &Arc<ActionConfig> {
        &self.action
    }

    /// Its breaker key ([`ActionConfig::endpoint`]).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The action as JSON, as stores keep it.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The shared observer name and JSON: clones of one configured action
    /// share them, so a store can know an action it has seen by address.
    pub(crate) fn shared(&self) -> (&Arc<str>, &Arc<str>) {
        (&self.observer, &self.json)
    }
}

/// One event to store, with the actions its observers ask for.
///
/// ```
/// use breakwater::traits::{ActionConfig, EntityEvent, EventKind, LogAction};
/// use breakwater_dispatch::store::{NewAction, NewEvent};
///
/// let event = EntityEvent::new(EventKind::Insert, "Order", uuid::Uuid::new_v4(), serde_json::json!({}));
/// let log = ActionConfig::Log(LogAction { level: "info".into(), message_template: None });
/// let new = NewEvent::new(&event, vec![NewAction::new("audit", log)]);
/// assert_eq!(new.event.id(), event.id);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event, as the JSON text a store writes; its pending actions
    /// share it.
    pub event: Arc<EventJson>,
    /// What its actions are searched by.
    pub keys: EventKeys,
    /// Its actions.
    pub actions: Vec<NewAction>,
}

/// What an event's actions are searched by ([`ActionFilter`]), kept in
/// columns of their own beside the event's JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventKeys {
    /// `INSERT`, `UPDATE`, `DELETE` or `CUSTOM`, as events spell them.
    pub event_type: String,
    /// The entity's type.
    pub entity_type: String,
    /// The entity's id.
    pub entity_id: String,
}

impl EventKeys {
    /// `event`'s keys.
    pub fn of(event: &EntityEvent) -> Self {
        Self {
            event_type: event.event_type.as_str().to_string(),
            entity_type: event.entity_type.clone(),
            entity_id: event.entity_id.to_string(),
        }
    }
}

impl NewEvent {
    /// `event` (written as JSON once, here) with `actions`.
    pub fn new(event: &EntityEvent, actions: Vec<NewAction>) -> Self {
        Self {
            event: Arc::new(EventJson::new(event)),
            keys: EventKeys::of(event),
            actions,
        }
    }
}
