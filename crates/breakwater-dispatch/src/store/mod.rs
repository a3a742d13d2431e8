//! Durable storage of events, their pending actions, dead letters and
//! breaker snapshots.
//!
//! The engine talks to storage only through [`Store`]. The trait is shaped
//! for more than one backend, and for backlogs larger than memory:
//!
//! - [`Store::insert`] stores events and their actions in one transaction.
//!   Each action is stored *claimed* by this instance and handed back, so
//!   intake never has to read it again, or *backlogged*
//!   ([`NewAction::backlogged`]): left unclaimed in its endpoint's backlog,
//!   because that endpoint's window in memory is full.
//! - [`Store::claim_backlog`] claims a page of one endpoint's backlog,
//!   earliest due first: the engine reads an endpoint's backlog back as its
//!   window makes room, so memory stays flat however long it is down. A
//!   backend keeps the backlog by endpoint and due time (SQLite: a partial
//!   index of unclaimed waiting actions; Postgres: the same, claimed with
//!   `FOR UPDATE SKIP LOCKED`).
//! - [`Store::backlogged_endpoints`] names the endpoints with unclaimed
//!   work: after a restart (the SQLite backend releases every claim when it
//!   opens), a replay, or an endpoint enabled again.
//! - [`Store::apply`] records outcomes; it may be batched and is not awaited
//!   for durability by the engine (a lost outcome means one more delivery,
//!   which at-least-once allows). Each attempt ([`Update::Attempt`]) goes in
//!   the batch of its outcome, in the same transaction.
//! - The history ([`history`]): every attempt, kept with its action (pruned
//!   with its delivered event, purged with its dead letter); actions listed
//!   by filter a page at a time ([`Store::actions`]); replays
//!   ([`Store::replay_actions`]), which put actions back in their
//!   endpoints' backlogs for the engine to find; the operators' audit log
//!   and replay jobs, kept in the store so that every instance of a fleet
//!   sees them.

mod event_json;
mod head_text;
pub mod history;
mod history_rows;
mod new_event;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use breakwater::traits::ActionConfig;
use serde::Serialize;
use uuid::Uuid;

pub use self::event_json::EventJson;
pub use self::history::{
    ActionFilter, ActionPage, Attempt, AttemptOutcome, AttemptRecord, AuditEntry, EndpointCounts,
    ReplayJob, ReplayState, RequestRecord, Trigger,
};
pub use self::new_event::{EventKeys, NewAction, NewEvent};
pub use self::postgres::{PostgresOptions, PostgresStore};
pub use self::sqlite::{SqliteStore, StoreFile};

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

/// The outcome of storing one [`NewEvent`].
#[derive(Debug, Clone)]
pub enum Inserted {
    /// Stored now; its claimed actions ([`NewAction::is_claimed`]), in the
    /// order they were given (its backlogged and dead-lettered actions are
    /// stored, not handed back).
    New(Vec<PendingAction>),
    /// An event with this id was already stored: nothing was added.
    Duplicate,
}

/// An action waiting to be delivered.
#[derive(Debug, Clone)]
pub struct PendingAction {
    /// Its id.
    pub id: ActionId,
    /// The event it is for, as its JSON text (parsed only to render an
    /// attempt: held events cost about their size).
    pub event: Arc<EventJson>,
    /// The observer that asked for it.
    pub observer: String,
    /// The breaker key ([`ActionConfig::endpoint`]).
    pub endpoint: String,
    /// What to do.
    pub action: Arc<ActionConfig>,
    /// Attempts used so far.
    pub attempts: u32,
    /// Times an operator replayed it (its next attempt after a replay is
    /// recorded as triggered by the replay).
    pub replays: u32,
    /// When the event was accepted, milliseconds since the Unix epoch.
    pub accepted_at_ms: i64,
    /// Not to be attempted before this time (Unix ms), if set.
    pub not_before_ms: Option<i64>,
    /// Whether the store already records it as parked by an open circuit.
    pub parked: bool,
    /// The bytes of memory the engine counts it for in its endpoint's
    /// window ([`EventJson::size`]). The engine sets it; a store hands
    /// back 0.
    pub size: usize,
    /// The lease epoch the store claimed it under ([`Store::claim_epoch`]
    /// then): once the store's epoch moves on (its lease was taken over by
    /// another instance), the action is no longer this process's to
    /// deliver. 0 for a store of one process.
    pub claim_epoch: i64,
}

/// An instance's standing in a fleet sharing one database
/// ([`Store::fleet`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStatus {
    /// This instance's name.
    pub instance: String,
    /// Its current lease's epoch.
    pub epoch: i64,
    /// Outcomes it wrote since start that matched no claim of its current
    /// lease (late, after its claims were taken over): ignored.
    pub stale_outcomes: u64,
    /// Expired leases of other instances it took over since start.
    pub taken_over: u64,
}

/// A page of one endpoint's backlog, claimed ([`Store::claim_backlog`]).
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The actions claimed, earliest due first.
    pub actions: Vec<PendingAction>,
    /// Whether the endpoint's backlog still holds unclaimed actions due by
    /// the same time (more than the page could take).
    pub more: bool,
}

/// One endpoint's waiting actions ([`Store::backlogs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The endpoint (breaker key).
    pub endpoint: String,
    /// Its actions pending or parked in the store, whether some instance
    /// holds them in memory or not.
    pub waiting: u64,
    /// When the oldest of them was accepted (Unix ms), if any wait.
    pub oldest_ms: Option<i64>,
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// The status as stores write it (its JSON name).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Parked => "parked",
            Self::Delivered => "delivered",
            Self::DeadLettered => "dead_lettered",
            Self::Held => "held",
        }
    }

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
    /// When its event was accepted (RFC 3339).
    pub accepted_at: String,
    /// Its event's type (`INSERT`, ...).
    pub event_type: String,
    /// Its event's entity type.
    pub entity_type: String,
    /// Times an operator replayed it.
    pub replays: u32,
    /// Every attempt, oldest first: filled by [`Store::event`], left out of
    /// lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_history: Option<Vec<AttemptRecord>>,
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
    /// An endpoint's circuit opened: every waiting action of it counts as
    /// parked until `until_ms` (Unix ms; 0 when its circuit closed again),
    /// one write an opening however many actions it holds. An action's own
    /// park ([`Update::Parked`], or [`NewAction::parked_until`] at intake)
    /// is kept beside it.
    EndpointParked {
        /// The endpoint.
        endpoint: String,
        /// Unix ms; 0: not parked.
        until_ms: i64,
    },
    /// An attempt of an action, recorded in the batch of its outcome (the
    /// outcome follows it). Kept with its action: removed when the action's
    /// delivered event is pruned or its dead letter purged. Written even
    /// when the outcome after it is ignored (an instance that lost its
    /// lease: the attempt was made all the same); ignored for an action
    /// the store no longer has. Its texts are kept as given, but for NUL,
    /// kept as U+FFFD (Postgres refuses NUL in text).
    Attempt {
        /// The action.
        id: ActionId,
        /// What was sent and what came back.
        attempt: Box<Attempt>,
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

/// The wall clock in Unix milliseconds, as stores stamp what they keep.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339 with milliseconds, as records show times.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// How a stored action shows: a pending one whose endpoint's circuit parks
/// its actions until after `now_ms` ([`Update::EndpointParked`]) shows
/// parked until then. Returns the status and the time it waits until.
pub(crate) fn as_shown(
    status: ActionStatus,
    not_before: Option<i64>,
    endpoint_parked_until: Option<i64>,
    now_ms: i64,
) -> (ActionStatus, Option<i64>) {
    match (status, endpoint_parked_until) {
        (ActionStatus::Pending | ActionStatus::Parked, Some(until)) if until > now_ms => (
            ActionStatus::Parked,
            Some(not_before.map_or(until, |t| t.max(until))),
        ),
        _ => (status, not_before),
    }
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
    /// An action is stored with [`NewAction::status`] (dead-lettered with
    /// its reason as the error, parked until
    /// [`NewAction::parked_until_ms`], or pending); claimed and handed back
    /// when [`NewAction::is_claimed`], else left unclaimed (a backlogged
    /// action waits in its endpoint's backlog).
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; nothing of the batch is stored then.
    async fn insert(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>>;

    /// Claims up to `limit` of `endpoint`'s unclaimed pending and parked
    /// actions due by `due_by_ms` (Unix ms: an action is due at its
    /// `not_before`, or when it was accepted), earliest due first (then by
    /// id), and says whether more due by then remain.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; nothing is claimed then.
    async fn claim_backlog(
        &self,
        endpoint: &str,
        limit: usize,
        due_by_ms: i64,
    ) -> StoreResult<Claimed>;

    /// The endpoints that have unclaimed pending or parked actions due by
    /// `due_by_ms` (Unix ms).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn backlogged_endpoints(&self, due_by_ms: i64) -> StoreResult<Vec<String>>;

    /// Every endpoint's waiting actions (pending or parked, claimed or
    /// not): how many, and when the oldest was accepted. Endpoints with none
    /// may be left out.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn backlogs(&self) -> StoreResult<Vec<Backlog>>;

    /// Records outcomes, in the order given.
    ///
    /// An outcome of an action (every [`Update`] with an `id`) is for an
    /// action this store handed out (claimed, by [`Store::insert`] or
    /// [`Store::claim_backlog`]) and still holds. A store shared by several
    /// instances ignores one for an action it no longer holds (its lease was
    /// taken over and another instance has the action): it counts it (see
    /// [`FleetStatus::stale_outcomes`]) and changes nothing. An update for an
    /// action the store does not have changes nothing.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn apply(&self, updates: Vec<Update>) -> StoreResult<()>;

    /// An event and the state of its actions, each with its attempts
    /// ([`ActionRecord::attempt_history`], oldest first).
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

    /// Whether the store can still keep what it is given: cheap (no query),
    /// called before intake answers and every second. The SQLite store
    /// checks that its path still names the file it writes to (a file
    /// deleted under it would take writes that no restart finds). A store
    /// with nothing to check may leave the default.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] saying what is wrong.
    fn check(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The lease epoch claims are made under now (see
    /// [`PendingAction::claim_epoch`]); cheap (no query). A store of one
    /// process leaves the default, 0.
    fn claim_epoch(&self) -> i64 {
        0
    }

    /// Tells every instance sharing this store that an operator ran `op`
    /// (`reset`, `open` or `close`) on `endpoint` here; returns the
    /// command's generation (it grows with every command on the endpoint),
    /// or 0 for a store of one process (the default: nothing to tell).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn publish_admin(&self, endpoint: &str, op: &str) -> StoreResult<i64> {
        let _ = (endpoint, op);
        Ok(0)
    }

    /// The last operator command on each endpoint that has one, with its
    /// generation: `(endpoint, generation, op)`. Each instance applies
    /// those it has not applied yet. Empty for a store of one process.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn admin_commands(&self) -> StoreResult<Vec<(String, i64, String)>> {
        Ok(Vec::new())
    }

    /// Whether this instance's claims are certainly still its own: false
    /// after a pause or an outage longer than its lease, until the store
    /// has renewed the lease (nobody took it over) or taken a new one (with
    /// a new [`claim_epoch`](Store::claim_epoch)). The engine delivers
    /// nothing meanwhile. Always true (the default) for a store of one
    /// process. Cheap (no query).
    fn lease_confirmed(&self) -> bool {
        true
    }

    /// Whether work was released into the backlogs since the last call (a
    /// takeover of an expired lease, by this instance): the engine then
    /// looks for it at once rather than at its next sweep. Cheap (no
    /// query); always false (the default) for a store of one process.
    fn take_released(&self) -> bool {
        false
    }

    /// This instance's place among the live instances sharing the store,
    /// `(rank, live)`, by which each takes its share of every endpoint's
    /// `max_in_flight_per_endpoint` (so that the limit holds for the fleet
    /// together); `live` is 0 while the instance is not yet counted by the
    /// others (it takes no share then). `None` (the default) for a store of
    /// one process: the whole limit is its own. Cheap (no query).
    fn fleet_share(&self) -> Option<(usize, usize)> {
        None
    }

    /// This instance's standing in a fleet, for a store shared by several
    /// (`None`, the default, for one of a single process).
    fn fleet(&self) -> Option<FleetStatus> {
        None
    }

    /// A page of the actions matching `filter`, newest (highest id) first,
    /// of ids below `before` when given, at most `limit`, with the next
    /// page's cursor (the last id) when the page is full. Pages are stable
    /// while new actions arrive (they have higher ids). The records leave
    /// out [`ActionRecord::attempt_history`].
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn actions(
        &self,
        filter: &ActionFilter,
        before: Option<ActionId>,
        limit: usize,
    ) -> StoreResult<ActionPage>;

    /// How many actions match `filter`.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn count_actions(&self, filter: &ActionFilter) -> StoreResult<u64>;

    /// One action, without its attempts.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn action(&self, id: ActionId) -> StoreResult<Option<ActionRecord>>;

    /// Replays the actions among `ids` that are dead-lettered or delivered:
    /// each becomes pending (unclaimed, in its endpoint's backlog) with no
    /// attempts used, its replay count raised and, with `job`, marked as
    /// that job's (without one, no job's). Actions in any other state, or
    /// unknown, are left alone. Their attempts are kept, and so are their
    /// last error and HTTP status (shown until the replay's first attempt
    /// replaces them). Returns how many it replayed.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; nothing is replayed then.
    async fn replay_actions(&self, ids: &[ActionId], job: Option<i64>) -> StoreResult<u64>;

    /// Deletes the dead letters among `ids`, with their attempts (other
    /// actions are left alone); returns how many.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; nothing is deleted then.
    async fn purge_actions(&self, ids: &[ActionId]) -> StoreResult<u64>;

    /// Up to `limit` attempts of `endpoint`'s actions, newest first, of ids
    /// below `before` when given.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn endpoint_attempts(
        &self,
        endpoint: &str,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>>;

    /// Each endpoint's actions by status (endpoints with none waiting,
    /// held or dead-lettered may be left out).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn endpoint_counts(&self) -> StoreResult<Vec<EndpointCounts>>;

    /// Stores `entry` (its `id` is ignored); returns its id.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn audit(&self, entry: AuditEntry) -> StoreResult<i64>;

    /// Up to `limit` audit entries, newest first, of ids below `before`
    /// when given.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn audit_log(&self, before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    /// Stores a new running replay job of `filter` over `total` actions,
    /// started by `actor`; returns it.
    ///
    /// An `adoptable` job belongs to this instance (a service's job): if the
    /// instance dies before the job ends, another instance, or this one
    /// started again, takes it up ([`adopt_replay_jobs`](Self::adopt_replay_jobs)).
    /// A job that is not adoptable is run by its caller alone, to its end
    /// (a command's job), and is never taken up by anyone else.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn create_replay_job(
        &self,
        filter: &ActionFilter,
        actor: &str,
        total: u64,
        adoptable: bool,
    ) -> StoreResult<ReplayJob>;

    /// Records a running job's progress: `replayed` so far, the `cursor`
    /// its next page starts below ([`ReplayJob::cursor`]), and its new
    /// `state` (with `error` when it failed). Returns the job's state
    /// after: a job no longer running (cancelled meanwhile) is left as it
    /// is. `None` when the job is no longer this instance's: another took
    /// it up after this one's lease was lost, and this one must stop
    /// running it (the update changed nothing).
    ///
    /// # Errors
    ///
    /// A [`StoreError`], also when there is no job `id`.
    async fn update_replay_job(
        &self,
        id: i64,
        replayed: u64,
        cursor: Option<ActionId>,
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<Option<ReplayState>>;

    /// Takes up the running adoptable jobs whose instance is gone (it died,
    /// or was stopped while the job ran) and makes them this instance's;
    /// returns them, each with the progress and [`cursor`](ReplayJob::cursor)
    /// last recorded, for this instance to run on. Called at start and
    /// every few seconds after; a job is taken up by one instance only.
    ///
    /// A store with one process at a time (SQLite) takes up every running
    /// adoptable job not started by this process; a fleet's store those of
    /// instances that hold no lease. The default takes up nothing (a store
    /// whose jobs end with their process).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn adopt_replay_jobs(&self) -> StoreResult<Vec<ReplayJob>> {
        Ok(Vec::new())
    }

    /// Cancels a running job; returns the job as it is after (`None` when
    /// there is no such job). A job no longer running is left as it is.
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn cancel_replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>>;

    /// A job, with the statuses of the actions it replayed
    /// ([`ReplayJob::progress`]).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>>;

    /// Up to `limit` jobs, newest first (their `progress` left empty).
    ///
    /// # Errors
    ///
    /// A [`StoreError`].
    async fn replay_jobs(&self, limit: usize) -> StoreResult<Vec<ReplayJob>>;

    /// Writes everything queued and stops accepting work.
    async fn close(&self);
}
