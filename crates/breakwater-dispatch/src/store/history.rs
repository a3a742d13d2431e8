//! What the store keeps beside the work itself: every attempt of every
//! action, the operators' writes (audit), and replay jobs; and how actions
//! are looked up (filters, pages).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ActionId, ActionStatus};

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The action's first attempt.
    Scheduled,
    /// A later attempt, after a failure.
    Retry,
    /// The first attempt after an operator replayed the action.
    Replay,
    /// The one attempt a half-open breaker let through to test its endpoint.
    Probe,
}

impl Trigger {
    /// The trigger as stores write it (its JSON name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Retry => "retry",
            Self::Replay => "replay",
            Self::Probe => "probe",
        }
    }

    /// The trigger named `s` ([`as_str`](Self::as_str)); `scheduled` for
    /// anything else.
    pub fn parse(s: &str) -> Self {
        match s {
            "retry" => Self::Retry,
            "replay" => Self::Replay,
            "probe" => Self::Probe,
            _ => Self::Scheduled,
        }
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Delivered.
    Success,
    /// Failed; tried again later (or dead-lettered once out of attempts).
    Transient,
    /// Took longer than the timeout.
    Timeout,
    /// Failed for good: dead-lettered.
    Permanent,
    /// Answered `410 Gone`: the endpoint is disabled.
    Gone,
}

impl AttemptOutcome {
    /// The outcome as stores write it (its JSON name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Transient => "transient",
            Self::Timeout => "timeout",
            Self::Permanent => "permanent",
            Self::Gone => "gone",
        }
    }

    /// The outcome named `s` ([`as_str`](Self::as_str)); `transient` for
    /// anything else.
    pub fn parse(s: &str) -> Self {
        match s {
            "success" => Self::Success,
            "timeout" => Self::Timeout,
            "permanent" => Self::Permanent,
            "gone" => Self::Gone,
            _ => Self::Transient,
        }
    }
}

/// The request an attempt sent, secrets redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// `POST`, ...
    pub method: String,
    /// The URL, credentials redacted.
    pub url: String,
    /// The headers as sent, secrets redacted.
    pub headers: Vec<(String, String)>,
}

/// One attempt of one action, as the engine records it
/// ([`Update::Attempt`](super::Update::Attempt)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The action's attempt number since it was stored or last replayed,
    /// from 1.
    pub number: u32,
    /// Why it was made.
    pub trigger: Trigger,
    /// The endpoint's breaker when it was sent: `closed`, `half_open`.
    pub breaker_state: String,
    /// When it started, Unix ms.
    pub started_at_ms: i64,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// What it came to.
    pub outcome: AttemptOutcome,
    /// What kind of failure, when it failed: `dns`, `connect`, `tls`,
    /// `timeout`, `http_4xx`, `http_5xx`, `http_other`, `body_read`,
    /// `request`, `other`.
    pub error_kind: Option<String>,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The request, for HTTP actions.
    pub request: Option<RequestRecord>,
    /// The answer's headers, cookies and credentials redacted.
    pub response_headers: Vec<(String, String)>,
    /// The start of the answer's body (`[history] response_body_bytes`),
    /// as text (invalid UTF-8 replaced).
    pub response_body: Option<String>,
}

/// A stored attempt, as the API and the console show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// The attempt's own id (grows with every attempt stored).
    pub id: i64,
    /// The action it was for.
    pub action_id: ActionId,
    /// The action's event.
    pub event_id: Uuid,
    /// The action's endpoint.
    pub endpoint: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// What the engine recorded.
    #[serde(flatten)]
    pub attempt: Attempt,
}

/// Which actions a listing, a count or a replay is about. Every field set
/// narrows it; the default matches every action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionFilter {
    /// Only actions that show this status (a pending action of an endpoint
    /// whose circuit parks its actions shows `parked`).
    pub status: Option<ActionStatus>,
    /// Only this endpoint's (breaker key).
    pub endpoint: Option<String>,
    /// Only this observer's.
    pub observer: Option<String>,
    /// Only for events of this type (`INSERT`, `UPDATE`, `DELETE`,
    /// `CUSTOM`; matched whatever its case).
    pub event_type: Option<String>,
    /// Only for events of this entity type.
    pub entity_type: Option<String>,
    /// Only for events of this entity (its id, matched whatever its case).
    pub entity_id: Option<String>,
    /// Only for this event.
    pub event_id: Option<Uuid>,
    /// Only for events accepted at or after this time (Unix ms; an
    /// action is stored when its event is accepted, with the same time).
    pub since_ms: Option<i64>,
    /// Only for events accepted before this time (Unix ms).
    pub until_ms: Option<i64>,
}

/// One page of actions ([`Store::actions`](super::Store::actions)).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ActionPage {
    /// The actions, newest (highest id) first.
    pub actions: Vec<super::ActionRecord>,
    /// The cursor for the next page (pass it as `before`), when more may
    /// follow.
    pub next: Option<ActionId>,
}

/// An operator's write, kept for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its id (0 until stored).
    pub id: i64,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who: the fingerprint of the token used (never the token), or the
    /// command line tool (`cli`).
    pub actor: String,
    /// What: `reset`, `open`, `close`, `replay`, `purge`, `cancel_replay`.
    pub action: String,
    /// On what: an endpoint, an action id, or the filter as JSON.
    pub target: String,
    /// How many actions it touched, when it is a count.
    pub count: Option<u64>,
    /// The instance that did it (a fleet), if any.
    pub instance: Option<String>,
}

/// Where a replay job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    /// Replaying.
    Running,
    /// Every matching action was replayed.
    Finished,
    /// Cancelled by an operator before the end.
    Cancelled,
    /// Stopped by an error (`error` says which).
    Failed,
}

impl ReplayState {
    /// The state as stores write it (its JSON name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// The state named `s` ([`as_str`](Self::as_str)); `failed` for
    /// anything else.
    pub fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "finished" => Self::Finished,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

/// A background replay of every action matching a filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayJob {
    /// Its id.
    pub id: i64,
    /// Which actions.
    pub filter: ActionFilter,
    /// Who started it (token fingerprint).
    pub actor: String,
    /// Where it stands.
    pub state: ReplayState,
    /// Actions matching when it started.
    pub total: u64,
    /// Actions replayed so far.
    pub replayed: u64,
    /// When it started, Unix ms.
    pub created_at_ms: i64,
    /// When it last moved, Unix ms.
    pub updated_at_ms: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Where it goes on: the id below which it reads its next page of
    /// matching actions (`None`: from the newest). A job taken up again
    /// after its instance died starts here.
    pub cursor: Option<ActionId>,
    /// What became of the actions it replayed, by status (filled by
    /// [`Store::replay_job`](super::Store::replay_job)).
    pub progress: Vec<(ActionStatus, u64)>,
}

/// What an endpoint has in the store, by status, for the endpoints view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointCounts {
    /// The endpoint (breaker key).
    pub endpoint: String,
    /// Pending (claimed or not), parked excluded.
    pub pending: u64,
    /// Parked by an open circuit.
    pub parked: u64,
    /// Held while the endpoint is disabled.
    pub held: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
}
