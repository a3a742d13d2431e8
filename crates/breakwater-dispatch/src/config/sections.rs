//! The `[retry]`, `[delivery]`, `[http]` and `[history]` sections.

use std::time::Duration;

use serde::Deserialize;

/// The `[retry]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts before a transiently failing action is dead-lettered, `>= 1`. Default 5.
    pub max_attempts: u32,
    /// Base of the exponential backoff, `> 0`. Default 200.
    pub backoff_ms: u64,
    /// Cap on one wait, `>= backoff_ms`. Default 600000 (ten minutes).
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_ms: 200,
            max_backoff_ms: 600_000,
        }
    }
}

impl RetryConfig {
    /// The base backoff.
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms)
    }

    /// The cap on one wait.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
}

/// The `[delivery]` section.
///
/// The `max_pending*` settings bound what each endpoint keeps *in memory*
/// (its window: actions queued, parked, waiting to retry or running). They
/// never refuse an event: an endpoint's actions beyond its window stay only
/// in the store (its backlog on disk) and are read back, oldest due first,
/// as the window makes room. `max_backlog_per_endpoint` bounds the backlog
/// on disk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Deliveries running at once to one endpoint, `>= 1`. Default 64.
    pub max_in_flight_per_endpoint: usize,
    /// Actions held in memory by all endpoints together, `>= 1`. Default
    /// 100000.
    pub max_pending: usize,
    /// Actions one endpoint may hold in memory, `>= 1`; a tenth of
    /// `max_pending` (at least 1) when not set.
    pub max_pending_per_endpoint: Option<usize>,
    /// Bytes of events held in memory by all endpoints together (each
    /// action counts its event's size in memory), `>= 1`. Default 67108864
    /// (64 MiB).
    pub max_pending_bytes: usize,
    /// Bytes one endpoint may hold in memory, `>= 1`; a quarter of
    /// `max_pending_bytes` when not set. An endpoint that holds nothing
    /// always takes its next action, however large.
    pub max_pending_bytes_per_endpoint: Option<usize>,
    /// Actions one endpoint may have waiting in the store (in memory or
    /// not); past it, its new actions are stored dead-lettered at once with
    /// the reason, and their events are accepted as usual. 0 means no
    /// limit. Default 10000000.
    pub max_backlog_per_endpoint: u64,
    /// Largest accepted `POST /events` body, in bytes. Default 1048576.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for running deliveries. Default 10000.
    pub shutdown_grace_ms: u64,
    /// How long an event whose every action is delivered stays stored (and
    /// its id deduplicated), in hours; 0 keeps them all. Default 168 (a
    /// week). Events with an action not delivered (pending, parked, held,
    /// dead-lettered) are kept whatever their age.
    pub keep_delivered_hours: u64,
}

impl DeliveryConfig {
    /// Actions one endpoint may hold in memory: `max_pending_per_endpoint`,
    /// or a tenth of `max_pending` (at least 1).
    pub fn endpoint_cap(&self) -> usize {
        self.max_pending_per_endpoint
            .unwrap_or(self.max_pending / 10)
            .max(1)
    }

    /// Bytes one endpoint may hold in memory:
    /// `max_pending_bytes_per_endpoint`, or a quarter of
    /// `max_pending_bytes` (at least 1).
    pub fn endpoint_bytes_cap(&self) -> usize {
        self.max_pending_bytes_per_endpoint
            .unwrap_or(self.max_pending_bytes / 4)
            .max(1)
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_endpoint: 64,
            max_pending: 100_000,
            max_pending_per_endpoint: None,
            max_pending_bytes: 64 << 20,
            max_pending_bytes_per_endpoint: None,
            max_backlog_per_endpoint: 10_000_000,
            max_body_bytes: 1 << 20,
            shutdown_grace_ms: 10_000,
            keep_delivered_hours: 168,
        }
    }
}

/// The `[http]` section: what the listener allows a client, so that slow
/// or idle connections cannot take every file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once, `>= 1`; more wait in the system's
    /// queue until one closes. Default 512.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, or stay idle
    /// between two requests, in milliseconds, `>= 1`. Default 10000.
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's body, in
    /// milliseconds, `>= 1` (a `408` then). Default 30000.
    pub body_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        }
    }
}

/// The `[history]` section: what is kept of every delivery attempt (shown
/// by `GET /events/{id}`, `GET /actions/{id}` and the console).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Whether attempts are recorded. Default true.
    pub enabled: bool,
    /// How much of each answer's body is kept, in bytes,
    /// `0..=`[`MAX_RESPONSE_BODY_BYTES`](HistoryConfig::MAX_RESPONSE_BODY_BYTES).
    /// Default 4096.
    pub response_body_bytes: usize,
}

impl HistoryConfig {
    /// The most of an answer's body `response_body_bytes` may keep.
    pub const MAX_RESPONSE_BODY_BYTES: usize = 65_536;
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            response_body_bytes: 4096,
        }
    }
}
