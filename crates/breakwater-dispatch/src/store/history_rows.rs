//! How the history ([`Attempt`]s, replay jobs' filters, counts by shown
//! status) is written to columns and read back: alike in both backends, so
//! that they cannot drift apart.
//!
//! Texts are kept as given, but for one character: NUL, which Postgres
//! refuses in `text` (the whole batch of outcomes would fail with it), is
//! written as U+FFFD, the character that already stands for the bytes of a
//! response body that were not UTF-8. Both backends do it, so that a
//! history reads the same whichever keeps it.

use std::borrow::Cow;

use super::head_text;
use super::history::{Attempt, AttemptOutcome, AttemptRecord, RequestRecord, Trigger};
use super::{rfc3339, ActionFilter, ActionId, ActionStatus, StoreError, StoreResult};
use uuid::Uuid;

/// `s` as kept: NUL written as U+FFFD (see the [module docs](self)).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The columns of one attempt, as both backends write them.
#[derive(Debug)]
pub(crate) struct AttemptRow<'a> {
    pub(crate) number: i32,
    pub(crate) trigger: &'static str,
    pub(crate) breaker_state: Cow<'a, str>,
    pub(crate) started_at_ms: i64,
    pub(crate) duration_ms: i64,
    pub(crate) outcome: &'static str,
    pub(crate) error_kind: Option<Cow<'a, str>>,
    pub(crate) status: Option<i32>,
    pub(crate) error: Option<Cow<'a, str>>,
    /// The request as text: method, URL, then a header a line
    /// ([`head_text`]).
    pub(crate) request: Option<String>,
    /// The answer's headers as text, a header a line; `NULL` for none.
    pub(crate) response_headers: Option<String>,
    pub(crate) response_body: Option<Cow<'a, str>>,
}

impl<'a> AttemptRow<'a> {
    /// `a`'s columns.
    pub(crate) fn of(a: &'a Attempt) -> Self {
        Self {
            number: i32::try_from(a.number).unwrap_or(i32::MAX),
            trigger: a.trigger.as_str(),
            breaker_state: text(&a.breaker_state),
            started_at_ms: a.started_at_ms,
            duration_ms: i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
            outcome: a.outcome.as_str(),
            error_kind: a.error_kind.as_deref().map(text),
            status: a.status.map(i32::from),
            error: a.error.as_deref().map(text),
            // As HTTP writes them (see `head_text`), NUL escaped.
            request: a.request.as_ref().map(head_text::request_text),
            response_headers: (!a.response_headers.is_empty())
                .then(|| head_text::headers_text(&a.response_headers)),
            response_body: a.response_body.as_deref().map(text),
        }
    }
}

/// One stored attempt's columns, as read back.
#[derive(Debug)]
pub(crate) struct StoredAttempt {
    pub(crate) id: i64,
    pub(crate) action_id: ActionId,
    pub(crate) number: i64,
    pub(crate) trigger: String,
    pub(crate) breaker_state: String,
    pub(crate) started_at_ms: i64,
    pub(crate) duration_ms: i64,
    pub(crate) outcome: String,
    pub(crate) error_kind: Option<String>,
    pub(crate) status: Option<i64>,
    pub(crate) error: Option<String>,
    pub(crate) request: Option<String>,
    pub(crate) response_headers: Option<String>,
    pub(crate) response_body: Option<String>,
}

impl StoredAttempt {
    /// The attempt as shown, of the action of `event_id` at `endpoint`.
    ///
    /// # Errors
    ///
    /// A request or headers column that is not the JSON the store wrote.
    pub(crate) fn into_record(
        self,
        event_id: Uuid,
        endpoint: String,
    ) -> StoreResult<AttemptRecord> {
        let request: Option<RequestRecord> = self
            .request
            .as_deref()
            .map(|t| head_text::request_of(t).ok_or_else(|| corrupt("request", self.id)))
            .transpose()?;
        let response_headers: Vec<(String, String)> = self
            .response_headers
            .as_deref()
            .map(|t| head_text::headers_of(t).ok_or_else(|| corrupt("response_headers", self.id)))
            .transpose()?
            .unwrap_or_default();
        Ok(AttemptRecord {
            id: self.id,
            action_id: self.action_id,
            event_id,
            endpoint,
            started_at: rfc3339(self.started_at_ms),
            attempt: Attempt {
                number: u32::try_from(self.number.max(0)).unwrap_or(u32::MAX),
                trigger: Trigger::parse(&self.trigger),
                breaker_state: self.breaker_state,
                started_at_ms: self.started_at_ms,
                duration_ms: u64::try_from(self.duration_ms.max(0)).unwrap_or(0),
                outcome: AttemptOutcome::parse(&self.outcome),
                error_kind: self.error_kind,
                status: self.status.and_then(|s| u16::try_from(s).ok()),
                error: self.error,
                request,
                response_headers,
                response_body: self.response_body,
            },
        })
    }
}

fn corrupt(column: &str, id: i64) -> StoreError {
    StoreError::Backend(format!(
        "attempt {id}: its {column} column is not the text the store writes"
    ))
}

/// A replay job's filter, as kept (JSON).
pub(crate) fn filter_json(filter: &ActionFilter) -> String {
    // Plain data: writing it as JSON cannot fail.
    serde_json::to_string(filter).unwrap_or_default()
}

/// A replay job's filter, read back.
///
/// # Errors
///
/// A text that is not a filter's JSON.
pub(crate) fn filter_of(job: i64, json: &str) -> StoreResult<ActionFilter> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Backend(format!("replay job {job}: its filter is not valid: {e}")))
}

/// Where `s` comes in lists of counts by status: the order of
/// [`ActionStatus`]'s declaration.
fn rank(s: ActionStatus) -> u8 {
    match s {
        ActionStatus::Pending => 0,
        ActionStatus::Parked => 1,
        ActionStatus::Delivered => 2,
        ActionStatus::DeadLettered => 3,
        ActionStatus::Held => 4,
    }
}

/// Counts by stored status, with whether the actions' endpoint parks them
/// now, as counts by the status they show (a pending action of a parked
/// endpoint shows parked), in [`ActionStatus`]'s order, each status once.
pub(crate) fn shown_counts(
    rows: impl IntoIterator<Item = (ActionStatus, bool, u64)>,
) -> Vec<(ActionStatus, u64)> {
    let mut out: Vec<(ActionStatus, u64)> = Vec::new();
    for (status, endpoint_parked, n) in rows {
        let shown = match status {
            ActionStatus::Pending if endpoint_parked => ActionStatus::Parked,
            s => s,
        };
        match out.iter_mut().find(|(s, _)| *s == shown) {
            Some((_, total)) => *total += n,
            None => out.push((shown, n)),
        }
    }
    out.sort_by_key(|(s, _)| rank(*s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_kept_as_the_replacement_character_and_nothing_else_changes() {
        assert!(matches!(text("plain é 漢"), Cow::Borrowed("plain é 漢")));
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
    }

    #[test]
    fn counts_are_by_shown_status_in_declaration_order() {
        let counts = shown_counts([
            (ActionStatus::DeadLettered, false, 2),
            (ActionStatus::Pending, true, 3),
            (ActionStatus::Parked, false, 1),
            (ActionStatus::Pending, false, 4),
        ]);
        assert_eq!(
            counts,
            [
                (ActionStatus::Pending, 4),
                (ActionStatus::Parked, 4),
                (ActionStatus::DeadLettered, 2)
            ]
        );
    }

    #[test]
    fn an_attempt_reads_back_as_written() {
        let a = Attempt {
            number: 2,
            trigger: Trigger::Retry,
            breaker_state: "closed".into(),
            started_at_ms: 1_700_000_000_123,
            duration_ms: 15,
            outcome: AttemptOutcome::Transient,
            error_kind: Some("http_5xx".into()),
            status: Some(503),
            error: Some("HTTP 503".into()),
            request: Some(RequestRecord {
                method: "POST".into(),
                url: "http://h/x".into(),
                headers: vec![("x-a".into(), "1".into())],
            }),
            response_headers: vec![("retry-after".into(), "1".into())],
            response_body: Some("busy".into()),
        };
        let row = AttemptRow::of(&a);
        let stored = StoredAttempt {
            id: 7,
            action_id: 3,
            number: row.number.into(),
            trigger: row.trigger.into(),
            breaker_state: row.breaker_state.into_owned(),
            started_at_ms: row.started_at_ms,
            duration_ms: row.duration_ms,
            outcome: row.outcome.into(),
            error_kind: row.error_kind.map(Cow::into_owned),
            status: row.status.map(i64::from),
            error: row.error.map(Cow::into_owned),
            request: row.request,
            response_headers: row.response_headers,
            response_body: row.response_body.map(Cow::into_owned),
        };
        let id = Uuid::new_v4();
        let r = stored.into_record(id, "http://h".into()).unwrap();
        assert_eq!(r.attempt, a);
        assert_eq!((r.id, r.action_id, r.event_id), (7, 3, id));
        assert_eq!(r.started_at, "2023-11-14T22:13:20.123Z");
    }
}
