//! Durable storage of events, their pending actions, dead letters and
//! breaker snapshots.
//!
//! The engine talks to storage only through [`Store`]. The trait is shaped
//! for more than one backend:
//!
//! - [`Store::insert`] stores events and their actions in one transaction
//!   and hands the new actions back already *claimed* by this instance, so
//!   intake never has to read them back.
//! - [`Store::claim`] takes up to `limit` unclaimed pending actions. The
//!   SQLite backend is single-instance and releases every claim when it
//!   opens (a restarted process owns all the work again). A Postgres backend
//!   would claim with `SELECT ... FOR UPDATE SKIP LOCKED` and stamp a lease
//!   (`claimed_by`, `lease_until`) that the instance renews while it runs,
//!   so that the work of an instance that died is claimed again by others
//!   once its leases expire; the engine already re-claims periodically.
//! - [`Store::apply`] records outcomes; it may be batched and is not awaited
//!   for durability by the engine (a lost outcome means one more delivery,
//!   which at-least-once allows).

pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use breakwater::traits::{ActionConfig, EntityEvent};
use serde::Serialize;
use uuid::Uuid;

pub use self::sqlite::SqliteStore;

/// The id of a stored action.
pub type ActionId = i64;

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("storage failed: {0}")]
    Backend(String),
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

/// `Result` with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

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
        }
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
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event.
    pub event: EntityEvent,
    /// Its actions.
    pub actions: Vec<NewAction>,
}

/// The outcome of storing one [`NewEvent`].
#[derive(Debug, Clone)]
pub enum Inserted {
    /// Stored now; its actions, claimed by this instance.
    New(Vec<PendingAction>),
    /// An event with this id was already stored: nothing was added.
    Duplicate,
}

/// An action waiting to be delivered.
#[derive(Debug, Clone)]
pub struct PendingAction {
    /// Its id.
    pub id: ActionId,
    /// The event it is for.
    pub event: Arc<EntityEvent>,
    /// The observer that asked for it.
    pub observer: String,
    /// The breaker key ([`ActionConfig::endpoint`]).
    pub endpoint: String,
    /// What to do.
    pub action: Arc<ActionConfig>,
    /// Attempts used so far.
    pub attempts: u32,
    /// When the event was accepted, milliseconds since the Unix epoch.
    pub accepted_at_ms: i64,
    /// Not to be attempted before this time (Unix ms), if set.
    pub not_before_ms: Option<i64>,
    /// Whether the store already records it as parked by an open circuit.
    pub parked: bool,
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for (or in) delivery.
    Pending,
    /// Refused by an open circuit; waits until `not_before`.
    Parked,
    /// Delivered.
    Delivered,
    /// In the dead-letter table.
    DeadLettered,
    /// Kept while its endpoint is disabled.
    Held,
}

impl ActionStatus {
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "parked" => Self::Parked,
            "delivered" => Self::Delivered,
            "dead_lettered" => Self::DeadLettered,
            "held" => Self::Held,
            _ => Self::Pending,
        }
    }
}

/// What the store knows about one action (no secrets: the action's
/// configuration is summarised by its type and endpoint).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    /// Its id.
    pub id: ActionId,
    /// The event it is for.
    pub event_id: Uuid,
    /// The observer that asked for it.
    pub observer: String,
    /// `webhook`, `slack`, `email` or `log`.
    pub action_type: String,
    /// The breaker key.
    pub endpoint: String,
    /// Where it stands.
    pub status: ActionStatus,
    /// Attempts used.
    pub attempts: u32,
    /// Parked or waiting for a retry until this time (RFC 3339), if so.
    pub not_before: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The last HTTP status, if any.
    pub last_status: Option<u16>,
}

/// An event and its actions, for `GET /events/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// The event's id.
    pub id: Uuid,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// Its actions.
    pub actions: Vec<ActionRecord>,
}

/// One outcome to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Delivered.
    Delivered {
        /// The action.
        id: ActionId,
        /// Attempts used, this one included.
        attempts: u32,
        /// HTTP status, if any.
        status: Option<u16>,
    },
    /// Failed transiently; retried at `not_before_ms`.
    Retry {
        /// The action.
        id: ActionId,
        /// Attempts used.
        attempts: u32,
        /// Unix ms of the next attempt.
        not_before_ms: i64,
        /// The error.
        error: String,
        /// HTTP status, if any.
        status: Option<u16>,
    },
    /// Refused by an open circuit until `until_ms` (no attempt used).
    Parked {
        /// The action.
        id: ActionId,
        /// Unix ms.
        until_ms: i64,
    },
    /// Moved to the dead-letter table.
    DeadLetter {
        /// The action.
        id: ActionId,
        /// Attempts used.
        attempts: u32,
        /// Why.
        error: String,
        /// HTTP status, if any.
        status: Option<u16>,
    },
    /// Kept until its endpoint is enabled again.
    Held {
        /// The action.
        id: ActionId,
        /// The attempt that was answered `410 Gone`, when one was made
        /// (an action for an endpoint already disabled is held untried).
        gone: Option<GoneAttempt>,
    },
    /// Handed back unfinished (shutdown): pending and unclaimed again.
    Released {
        /// The action.
        id: ActionId,
    },
    /// A breaker's latest snapshot (JSON).
    Snapshot {
        /// The endpoint.
        endpoint: String,
        /// `CircuitSnapshot` as JSON.
        snapshot: String,
    },
    /// An endpoint was disabled (`410 Gone`) or enabled again.
    EndpointDisabled {
        /// The endpoint.
        endpoint: String,
        /// Whether it is now disabled.
        disabled: bool,
        /// Why, when disabled.
        reason: Option<String>,
    },
}

/// The attempt that disabled an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneAttempt {
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// What the endpoint answered.
    pub error: String,
}

/// A dead-lettered action, for `dlq list`.
pub type DeadLetter = ActionRecord;

/// Durable storage behind the engine (see the [module docs](self)).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Removes up to `limit` events accepted before `before_ms` (Unix
    /// milliseconds) whose every action is delivered, with their actions;
    /// returns how many events it removed. An event with an action in any
    /// other state is kept. A store that keeps everything may leave the
    /// default, which removes nothing.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; nothing is removed then.
    async fn prune_delivered(&self, before_ms: i64, limit: usize) -> StoreResult<u64> {
        let _ = (before_ms, limit);
        Ok(0)
    }

    /// Stores `events` and their actions atomically; an event whose id is
    /// already stored is left alone. Returns once the batch is durable.
    /// An action is stored pending, or parked until
    /// [`NewAction::parked_until_ms`] when that is set; the
    /// [`PendingAction`]s handed back say the same.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; nothing of the batch is stored then.
    async fn insert(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>>;

    /// Claims up to `limit` unclaimed pending, parked or retrying actions.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn claim(&self, limit: usize) -> StoreResult<Vec<PendingAction>>;

    /// Records outcomes.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn apply(&self, updates: Vec<Update>) -> StoreResult<()>;

    /// An event and the state of its actions.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn event(&self, id: Uuid) -> StoreResult<Option<EventRecord>>;

    /// Every saved breaker snapshot, as (endpoint, JSON).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn snapshots(&self) -> StoreResult<Vec<(String, String)>>;

    /// Endpoints disabled by `410 Gone`, with the reason.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn disabled_endpoints(&self) -> StoreResult<Vec<(String, String)>>;

    /// Held actions of `endpoint` become pending (unclaimed) again; returns how many.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn release_held(&self, endpoint: &str) -> StoreResult<u64>;

    /// Up to `limit` dead letters, oldest first.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>>;

    /// Dead letters (all, or only `ids`) become pending with no attempts used; returns how many.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn replay_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64>;

    /// Deletes dead letters (all, or only `ids`); returns how many.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn purge_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64>;

    /// Unix ms at which the oldest not yet delivered (nor dead-lettered)
    /// action was accepted, if any.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn oldest_pending_ms(&self) -> StoreResult<Option<i64>>;

    /// Counts of actions by status.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn counts(&self) -> StoreResult<Vec<(ActionStatus, u64)>>;

    /// Writes everything queued and stops accepting work.
    async fn close(&self);
}
