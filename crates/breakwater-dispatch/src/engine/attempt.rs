//! Attempt records: what the engine keeps of each delivery attempt for the
//! history (`[history]`).
//!
//! An attempt is recorded when a call was made (or failed for good before
//! it could be: a stored event that cannot be read): not when an open
//! circuit refused it, nor when the instance let go of an action whose
//! lease it lost. Its record goes to the outcome recorder with its
//! action's outcome, in the same message, so both land in the same batch
//! (one commit).
//!
//! With `[history] enabled = false` nothing here runs: no breaker is read,
//! no [`Exchange`] is filled, nothing is allocated.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use breakwater::traits::Exchange;
use breakwater::CircuitState;

use super::delivery::Outcome;
use super::unix_ms;
use crate::config::HistoryConfig;
use crate::store::{Attempt, AttemptOutcome, PendingAction, RequestRecord, Trigger};

/// The `[history]` settings in force, read on every delivery without a
/// lock (a reload stores new values).
#[derive(Debug)]
pub(super) struct History {
    enabled: AtomicBool,
    body_bytes: AtomicUsize,
}

impl History {
    pub(super) fn new(config: &HistoryConfig) -> Self {
        let h = Self {
            enabled: AtomicBool::new(false),
            body_bytes: AtomicUsize::new(0),
        };
        h.set(config);
        h
    }

    /// Puts `config` in force for the attempts that start from now on.
    pub(super) fn set(&self, config: &HistoryConfig) {
        // Relaxed: two independent settings; an attempt that starts during
        // a reload may see one old and one new, which is harmless.
        self.body_bytes
            .store(config.response_body_bytes, Ordering::Relaxed);
        self.enabled.store(config.enabled, Ordering::Relaxed);
    }

    /// A record for an attempt about to be made, when history is enabled;
    /// `breaker` is the endpoint's breaker state read just before.
    pub(super) fn start(&self, breaker: impl FnOnce() -> CircuitState) -> Option<Trace> {
        // Relaxed: a setting, not a synchronisation point.
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        Some(Trace {
            breaker: breaker(),
            started_at_ms: unix_ms(),
            started: tokio::time::Instant::now(),
            exchange: Exchange::new(self.body_bytes.load(Ordering::Relaxed)),
        })
    }
}

/// An attempt under way, being recorded.
#[derive(Debug)]
pub(super) struct Trace {
    /// The endpoint's breaker when the attempt was sent.
    breaker: CircuitState,
    started_at_ms: i64,
    started: tokio::time::Instant,
    /// What the executor sent and got back.
    pub(super) exchange: Exchange,
}

impl Trace {
    /// The attempt of `action` (as it was before the attempt) that came to
    /// `outcome`; `None` when there was no attempt (an open circuit refused
    /// the call).
    pub(super) fn finish(self, action: &PendingAction, outcome: &Outcome) -> Option<Box<Attempt>> {
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (kind, status, error) = match outcome {
            Outcome::CircuitOpen { .. } => return None,
            Outcome::Delivered { status } => (AttemptOutcome::Success, *status, None),
            Outcome::Transient {
                message,
                status,
                timeout,
                ..
            } => (
                if *timeout {
                    AttemptOutcome::Timeout
                } else {
                    AttemptOutcome::Transient
                },
                *status,
                Some(message.clone()),
            ),
            Outcome::Permanent { message, status } => {
                (AttemptOutcome::Permanent, *status, Some(message.clone()))
            }
            Outcome::Gone { message } => (AttemptOutcome::Gone, Some(410), Some(message.clone())),
        };
        let mut exchange = self.exchange;
        let status = status.or(exchange.status);
        let error_kind = match exchange.error_kind {
            _ if kind == AttemptOutcome::Success => None,
            Some(k) => Some(k.as_str()),
            None => Some(error_kind(kind, status)),
        };
        // An admitted call read as Open was the probe the breaker let
        // through as its timeout ran out.
        let probe = matches!(self.breaker, CircuitState::HalfOpen | CircuitState::Open);
        let trigger = if probe {
            Trigger::Probe
        } else if action.attempts == 0 && action.replays > 0 {
            Trigger::Replay
        } else if action.attempts == 0 {
            Trigger::Scheduled
        } else {
            Trigger::Retry
        };
        let request = (!exchange.method.is_empty()).then(|| RequestRecord {
            method: std::mem::take(&mut exchange.method),
            url: std::mem::take(&mut exchange.url),
            headers: std::mem::take(&mut exchange.request_headers),
        });
        let response_body =
            (exchange.status.is_some() || !exchange.response_body.is_empty()).then(|| {
                let mut body = std::mem::take(&mut exchange.response_body);
                body.truncate(exchange.body_limit);
                text(body)
            });
        Some(Box::new(Attempt {
            number: action.attempts.saturating_add(1),
            trigger,
            breaker_state: if probe { "half_open" } else { "closed" }.to_string(),
            started_at_ms: self.started_at_ms,
            duration_ms,
            outcome: kind,
            error_kind: error_kind.map(str::to_string),
            status,
            error,
            request,
            response_headers: exchange.response_headers,
            response_body,
        }))
    }
}

/// `bytes` as text: as they are when they are UTF-8 (no copy), else with
/// every invalid sequence replaced (a body cut inside a character ends in
/// one replacement character).
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The kind of a failure the executor did not name: from its status when
/// an answer came, else from the outcome.
fn error_kind(outcome: AttemptOutcome, status: Option<u16>) -> &'static str {
    match (outcome, status) {
        (AttemptOutcome::Timeout, _) => "timeout",
        (_, Some(400..=499)) => "http_4xx",
        (_, Some(500..=599)) => "http_5xx",
        (_, Some(_)) => "http_other",
        (AttemptOutcome::Permanent, None) => "request",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use breakwater::traits::{ActionConfig, ErrorKind, LogAction};

    use super::*;
    use crate::store::EventJson;

    fn action(attempts: u32, replays: u32) -> PendingAction {
        let event = breakwater::traits::EntityEvent::new(
            breakwater::traits::EventKind::Insert,
            "Order",
            uuid::Uuid::new_v4(),
            serde_json::json!({}),
        );
        PendingAction {
            id: 7,
            event: Arc::new(EventJson::new(&event)),
            observer: "o".into(),
            endpoint: "log".into(),
            action: Arc::new(ActionConfig::Log(LogAction {
                level: "info".into(),
                message_template: None,
            })),
            attempts,
            replays,
            accepted_at_ms: 0,
            not_before_ms: None,
            parked: false,
            size: 0,
            claim_epoch: 0,
        }
    }

    fn trace(breaker: CircuitState, limit: usize) -> Trace {
        let on = History::new(&HistoryConfig {
            enabled: true,
            response_body_bytes: limit,
        });
        on.start(|| breaker).expect("enabled")
    }

    fn transient(status: Option<u16>) -> Outcome {
        Outcome::Transient {
            message: "failed".into(),
            status,
            retry_after: None,
            timeout: false,
        }
    }

    #[test]
    fn disabled_history_records_nothing_and_reads_no_breaker() {
        let off = History::new(&HistoryConfig {
            enabled: false,
            response_body_bytes: 4096,
        });
        assert!(off
            .start(|| panic!("the breaker is not read when history is off"))
            .is_none());
        off.set(&HistoryConfig::default());
        assert!(off.start(|| CircuitState::Closed).is_some());
    }

    #[test]
    fn triggers_follow_the_attempt_count_replays_and_the_breaker() {
        let ok = Outcome::Delivered { status: Some(200) };
        let t = |breaker, attempts, replays| {
            trace(breaker, 10)
                .finish(&action(attempts, replays), &ok)
                .unwrap()
                .trigger
        };
        assert_eq!(t(CircuitState::Closed, 0, 0), Trigger::Scheduled);
        assert_eq!(t(CircuitState::Closed, 2, 0), Trigger::Retry);
        assert_eq!(t(CircuitState::Closed, 0, 1), Trigger::Replay);
        assert_eq!(t(CircuitState::Closed, 1, 1), Trigger::Retry);
        assert_eq!(t(CircuitState::HalfOpen, 0, 0), Trigger::Probe);
        assert_eq!(t(CircuitState::Open, 3, 1), Trigger::Probe);
        let a = trace(CircuitState::Open, 10)
            .finish(&action(3, 0), &ok)
            .unwrap();
        assert_eq!((a.number, a.breaker_state.as_str()), (4, "half_open"));
        assert_eq!(a.outcome, AttemptOutcome::Success);
        assert_eq!(a.error_kind, None);
    }

    #[test]
    fn a_refusal_by_an_open_circuit_is_no_attempt() {
        let refused = Outcome::CircuitOpen { retry_after: None };
        assert!(trace(CircuitState::Open, 10)
            .finish(&action(0, 0), &refused)
            .is_none());
    }

    #[test]
    fn error_kinds_come_from_the_executor_or_are_derived() {
        let kind = |outcome: &Outcome| {
            trace(CircuitState::Closed, 10)
                .finish(&action(0, 0), outcome)
                .unwrap()
                .error_kind
        };
        let timeout = Outcome::Transient {
            message: "slow".into(),
            status: None,
            retry_after: None,
            timeout: true,
        };
        assert_eq!(kind(&timeout).as_deref(), Some("timeout"));
        assert_eq!(kind(&transient(Some(503))).as_deref(), Some("http_5xx"));
        assert_eq!(kind(&transient(Some(429))).as_deref(), Some("http_4xx"));
        assert_eq!(kind(&transient(Some(302))).as_deref(), Some("http_other"));
        assert_eq!(kind(&transient(None)).as_deref(), Some("other"));
        let unreadable = Outcome::Permanent {
            message: "the stored event cannot be read".into(),
            status: None,
        };
        assert_eq!(kind(&unreadable).as_deref(), Some("request"));
        let gone = Outcome::Gone {
            message: "gone".into(),
        };
        let a = trace(CircuitState::Closed, 10)
            .finish(&action(0, 0), &gone)
            .unwrap();
        assert_eq!(
            (a.outcome, a.status, a.error_kind.as_deref()),
            (AttemptOutcome::Gone, Some(410), Some("http_4xx"))
        );
        // The executor's own kind wins.
        let mut t = trace(CircuitState::Closed, 10);
        t.exchange.error_kind = Some(ErrorKind::Connect);
        let a = t.finish(&action(0, 0), &transient(None)).unwrap();
        assert_eq!(a.error_kind.as_deref(), Some("connect"));
        assert_eq!(a.outcome, AttemptOutcome::Transient);
        assert_eq!(a.error.as_deref(), Some("failed"));
    }

    #[test]
    fn the_exchange_becomes_the_request_and_a_body_prefix() {
        let mut t = trace(CircuitState::Closed, 4);
        t.exchange.method = "POST".into();
        t.exchange.url = "http://127.0.0.1:9/h".into();
        t.exchange.request_headers = vec![("authorization".into(), "[redacted]".into())];
        t.exchange.status = Some(500);
        t.exchange.response_headers = vec![("set-cookie".into(), "[redacted]".into())];
        // More than the limit, cut inside "é": the cut shows as one
        // replacement character.
        t.exchange.response_body = "abcé and more".as_bytes().to_vec();
        let a = t.finish(&action(0, 0), &transient(Some(500))).unwrap();
        let request = a.request.unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.headers[0].1, "[redacted]");
        assert_eq!(a.response_body.as_deref(), Some("abc\u{fffd}"));
        assert_eq!(a.response_headers.len(), 1);
        assert_eq!(a.status, Some(500));
        // Nothing sent (a log action): no request, no body.
        let a = trace(CircuitState::Closed, 4)
            .finish(&action(0, 0), &Outcome::Delivered { status: None })
            .unwrap();
        assert!(a.request.is_none() && a.response_body.is_none());
    }
}
