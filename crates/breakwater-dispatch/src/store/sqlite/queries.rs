//! The statements that read, claim and update actions, and the rows they
//! read.

use std::sync::Arc;

use breakwater::traits::ActionConfig;
use rusqlite::{params, Transaction};

use super::{now_ms, rfc3339};
use crate::store::history_rows::AttemptRow;
use crate::store::{ActionRecord, ActionStatus, EventJson, PendingAction, Update};

/// The oldest events accepted before `?1` with nothing left to deliver (an
/// event without actions has none), at most `?2`, with the range of their
/// actions' ids; read through `events_by_time`, so only events older than
/// `?1` are looked at.
pub(super) const PRUNE_QUERY: &str = "
SELECT e.seq, e.first_action, e.last_action FROM events e
WHERE e.accepted_at < ?1
  AND NOT EXISTS (SELECT 1 FROM actions a
                  WHERE a.id BETWEEN e.first_action AND e.last_action
                    AND a.event = e.seq AND a.status <> 'delivered')
ORDER BY e.accepted_at LIMIT ?2";

/// A page of endpoint number `?1`'s backlog: its unclaimed pending and
/// parked actions due by `?2`, earliest due first, at most `?3`, with their
/// events. Read through `actions_backlog` in its order (its `WHERE` repeats
/// the index's word for word, as SQLite asks of a partial index).
pub(super) const BACKLOG_PAGE_QUERY: &str = "
SELECT a.id, s.observer, s.endpoint, s.action, a.attempts, a.replays, a.not_before,
       a.accepted_at, a.status, e.id AS event_id, e.body
FROM actions a JOIN events e ON e.seq = a.event JOIN action_specs s ON s.id = a.spec
WHERE a.claimed = 0 AND a.status IN ('pending', 'parked') AND a.lane = ?1
  AND COALESCE(a.not_before, a.accepted_at) <= ?2
ORDER BY a.lane, COALESCE(a.not_before, a.accepted_at), a.id LIMIT ?3";

/// Whether endpoint number `?1` has unclaimed waiting actions due by `?2`
/// left.
pub(super) const BACKLOG_LEFT_QUERY: &str = "
SELECT EXISTS (SELECT 1 FROM actions
               WHERE claimed = 0 AND status IN ('pending', 'parked') AND lane = ?1
                 AND COALESCE(not_before, accepted_at) <= ?2)";

/// The endpoints with unclaimed waiting actions due by `?1`.
pub(super) const BACKLOGGED_QUERY: &str = "
SELECT l.endpoint FROM lanes l
WHERE EXISTS (SELECT 1 FROM actions a
              WHERE a.claimed = 0 AND a.status IN ('pending', 'parked') AND a.lane = l.id
                AND COALESCE(a.not_before, a.accepted_at) <= ?1)
ORDER BY l.endpoint";

/// Each endpoint's waiting actions: how many, and when the oldest (the
/// lowest id: ids grow with acceptance) was accepted. Counted in
/// `actions_by_status`, without reading the rows.
pub(super) const BACKLOGS_QUERY: &str = "
SELECT l.endpoint, c.n, (SELECT accepted_at FROM actions WHERE id = c.oldest)
FROM (SELECT lane, COUNT(*) AS n, MIN(id) AS oldest FROM actions
      WHERE status <> 'delivered' AND status IN ('pending', 'parked')
      GROUP BY lane) c
JOIN lanes l ON l.id = c.lane
ORDER BY l.endpoint";

/// Makes the actions held for endpoint `?1` pending again, at time `?2`.
pub(super) const RELEASE_HELD_QUERY: &str = "
UPDATE actions SET status = 'pending', claimed = 0, not_before = NULL, updated_at = ?2
WHERE status <> 'delivered' AND status = 'held'
  AND lane = (SELECT id FROM lanes WHERE endpoint = ?1)";

/// The columns of an action's record ([`row_to_record`]), from `actions a`
/// with its event `e`, its spec `s` and its endpoint's row `p`.
macro_rules! record {
    () => {
        "SELECT a.id, e.id AS event_id, s.observer, s.action_type, s.endpoint, a.status,
                a.attempts, a.not_before, a.last_error, a.last_status, p.parked_until,
                a.accepted_at, e.event_type, e.entity_type, a.replays
         FROM actions a JOIN events e ON e.seq = a.event
         JOIN action_specs s ON s.id = a.spec
         LEFT JOIN endpoints p ON p.endpoint = s.endpoint"
    };
}
pub(super) use record;

/// The actions of event `?3` (ids `?1` to `?2`).
pub(super) const EVENT_ACTIONS_QUERY: &str = concat!(
    record!(),
    " WHERE a.id BETWEEN ?1 AND ?2 AND a.event = ?3 ORDER BY a.id"
);

/// The first `?1` dead-lettered actions.
pub(super) const DEAD_LETTERS_QUERY: &str = concat!(
    record!(),
    " WHERE a.status <> 'delivered' AND a.status = 'dead_lettered' ORDER BY a.id LIMIT ?1"
);

/// When the oldest action still to be delivered was accepted.
pub(super) const OLDEST_PENDING_QUERY: &str = "
SELECT MIN(accepted_at) FROM actions
WHERE status <> 'delivered' AND status IN ('pending', 'parked', 'held')";

pub(super) fn row_to_pending(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingAction> {
    let body: String = row.get("body")?;
    let action: String = row.get("action")?;
    let event_id: String = row.get("event_id")?;
    let event_id = event_id.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let action: ActionConfig = serde_json::from_str(&action).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(PendingAction {
        id: row.get("id")?,
        event: Arc::new(EventJson::from_stored(event_id, body)),
        observer: row.get("observer")?,
        endpoint: row.get("endpoint")?,
        action: Arc::new(action),
        attempts: row.get("attempts")?,
        replays: row.get("replays")?,
        accepted_at_ms: row.get("accepted_at")?,
        not_before_ms: row.get("not_before")?,
        parked: row.get::<_, String>("status")? == "parked",
        size: 0,
        claim_epoch: 0,
    })
}

pub(super) fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRecord> {
    let event_id: String = row.get("event_id")?;
    let status: String = row.get("status")?;
    let (status, not_before) = crate::store::as_shown(
        ActionStatus::parse(&status),
        row.get("not_before")?,
        row.get("parked_until")?,
        now_ms(),
    );
    Ok(ActionRecord {
        id: row.get("id")?,
        event_id: event_id.parse().unwrap_or_default(),
        observer: row.get("observer")?,
        action_type: row.get("action_type")?,
        endpoint: row.get("endpoint")?,
        status,
        attempts: row.get("attempts")?,
        not_before: not_before
            .filter(|_| matches!(status, ActionStatus::Pending | ActionStatus::Parked))
            .map(rfc3339),
        last_error: row.get("last_error")?,
        last_status: row.get("last_status")?,
        accepted_at: rfc3339(row.get("accepted_at")?),
        event_type: row.get("event_type")?,
        entity_type: row.get("entity_type")?,
        replays: row.get("replays")?,
        attempt_history: None,
    })
}

/// The statement of `u`'s kind.
fn update_sql(u: &Update) -> &'static str {
    match u {
        // With its action's endpoint number, read in the same statement;
        // an action no longer stored has none, and `OR IGNORE` skips the
        // row (its `lane` may not be NULL): an attempt is recorded only for
        // an action still stored. One row, by `VALUES`: an `INSERT ...
        // SELECT` (which could insert more) has SQLite copy every page it
        // changes to a statement journal first, which cost more than the
        // rest of the insert; a lookup of its own cost a third of it.
        Update::Attempt { .. } => {
            "INSERT OR IGNORE INTO attempts (action_id, lane, number, trigger, breaker_state,
                                   started_at_ms, duration_ms, outcome, error_kind, status, error,
                                   request, response_headers, response_body)
             VALUES (?1, (SELECT lane FROM actions WHERE id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                     ?9, ?10, ?11, ?12, ?13)"
        }
        Update::Delivered { .. } => {
            "UPDATE actions SET status = 'delivered', attempts = ?2, last_status = ?3,
             last_error = NULL, not_before = NULL, claimed = 0, updated_at = ?4 WHERE id = ?1"
        }
        Update::Retry { .. } => {
            "UPDATE actions SET status = 'pending', attempts = ?2, not_before = ?3,
             last_error = ?4, last_status = ?5, updated_at = ?6 WHERE id = ?1"
        }
        Update::Parked { .. } => {
            "UPDATE actions SET status = 'parked', not_before = ?2, updated_at = ?3
             WHERE id = ?1 AND status IN ('pending', 'parked')"
        }
        Update::DeadLetter { .. } => {
            "UPDATE actions SET status = 'dead_lettered', attempts = ?2, last_error = ?3,
             last_status = ?4, claimed = 0, not_before = NULL, updated_at = ?5 WHERE id = ?1"
        }
        Update::Held { gone: None, .. } => {
            "UPDATE actions SET status = 'held', claimed = 0, updated_at = ?2 WHERE id = ?1"
        }
        Update::Held { gone: Some(_), .. } => {
            "UPDATE actions SET status = 'held', claimed = 0, attempts = ?2, last_error = ?3,
             last_status = 410, updated_at = ?4 WHERE id = ?1"
        }
        Update::Released { .. } => {
            "UPDATE actions SET claimed = 0, updated_at = ?2
             WHERE id = ?1 AND status IN ('pending', 'parked')"
        }
        Update::Snapshot { .. } => {
            "INSERT INTO endpoints (endpoint, snapshot) VALUES (?1, ?2)
             ON CONFLICT(endpoint) DO UPDATE SET snapshot = excluded.snapshot"
        }
        Update::EndpointParked { .. } => {
            "INSERT INTO endpoints (endpoint, parked_until) VALUES (?1, NULLIF(?2, 0))
             ON CONFLICT(endpoint) DO UPDATE SET parked_until = excluded.parked_until"
        }
        Update::EndpointDisabled { .. } => {
            "INSERT INTO endpoints (endpoint, disabled, disabled_reason) VALUES (?1, ?2, ?3)
             ON CONFLICT(endpoint) DO UPDATE SET disabled = excluded.disabled,
             disabled_reason = excluded.disabled_reason"
        }
    }
}

/// Applies `updates` in order. Each kind's statement is prepared once for
/// the lot: one taken from the cache by its text costs a hash of that text
/// every time.
pub(super) fn apply_all(t: &Transaction<'_>, updates: &[Update]) -> rusqlite::Result<()> {
    let now = now_ms();
    // A few kinds at most: found by the statement's address.
    let mut prepared: Vec<(&'static str, rusqlite::CachedStatement<'_>)> = Vec::new();
    for u in updates {
        let sql = update_sql(u);
        let at = match prepared.iter().position(|(s, _)| std::ptr::eq(*s, sql)) {
            Some(at) => at,
            None => {
                prepared.push((sql, t.prepare_cached(sql)?));
                prepared.len() - 1
            }
        };
        let stmt = &mut prepared[at].1;
        match u {
            Update::Delivered {
                id,
                attempts,
                status,
            } => stmt.execute(params![id, attempts, status, now])?,
            Update::Retry {
                id,
                attempts,
                not_before_ms,
                error,
                status,
            } => stmt.execute(params![id, attempts, not_before_ms, error, status, now])?,
            Update::Parked { id, until_ms } => stmt.execute(params![id, until_ms, now])?,
            Update::DeadLetter {
                id,
                attempts,
                error,
                status,
            } => stmt.execute(params![id, attempts, error, status, now])?,
            Update::Held { id, gone: None } | Update::Released { id } => {
                stmt.execute(params![id, now])?
            }
            Update::Held {
                id,
                gone: Some(gone),
            } => stmt.execute(params![id, gone.attempts, gone.error, now])?,
            Update::Snapshot { endpoint, snapshot } => stmt.execute(params![endpoint, snapshot])?,
            Update::Attempt { id, attempt } => {
                let r = AttemptRow::of(attempt);
                stmt.execute(params![
                    id,
                    r.number,
                    r.trigger,
                    r.breaker_state,
                    r.started_at_ms,
                    r.duration_ms,
                    r.outcome,
                    r.error_kind,
                    r.status,
                    r.error,
                    r.request,
                    r.response_headers,
                    r.response_body
                ])?
            }
            Update::EndpointParked { endpoint, until_ms } => {
                stmt.execute(params![endpoint, until_ms])?
            }
            Update::EndpointDisabled {
                endpoint,
                disabled,
                reason,
            } => stmt.execute(params![endpoint, disabled, reason])?,
        };
    }
    Ok(())
}
