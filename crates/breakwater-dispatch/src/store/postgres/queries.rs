//! The statements that claim, read and update actions, and the rows they
//! read.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::action_from_json;
use crate::store::{now_ms, rfc3339};
use crate::store::{
    ActionRecord, ActionStatus, EventJson, NewAction, PendingAction, StoreResult, Update,
};

/// The next page of endpoint number `$1`'s backlog and one action more:
/// its unclaimed pending and parked actions due by `$2`, earliest due
/// first, at most `$3`, locked for the claim. Rows another instance is
/// claiming at the same moment are skipped, not waited for.
pub(super) const BACKLOG_PAGE: &str = "
SELECT id FROM actions
WHERE holder IS NULL AND status IN ('pending', 'parked') AND lane = $1
  AND COALESCE(not_before, accepted_at) <= $2
ORDER BY COALESCE(not_before, accepted_at), id
LIMIT $3
FOR UPDATE SKIP LOCKED";

/// Claims the actions with ids in `$1` for holder `$2` under epoch `$3`,
/// with their events, earliest due first.
pub(super) const CLAIM_IDS: &str = "
WITH claimed AS (
    UPDATE actions a SET holder = $2, epoch = $3
    WHERE a.id = ANY($1)
    RETURNING a.id, a.event, a.spec, a.attempts, a.not_before, a.accepted_at, a.status)
SELECT c.id, s.observer, s.endpoint, s.action, c.attempts, c.not_before, c.accepted_at,
       c.status, e.id AS event_id, e.body
FROM claimed c JOIN events e ON e.id = c.event JOIN action_specs s ON s.id = c.spec
ORDER BY COALESCE(c.not_before, c.accepted_at), c.id";

/// The endpoints with unclaimed waiting actions due by `$1`.
pub(super) const BACKLOGGED: &str = "
SELECT p.endpoint FROM endpoints p
WHERE EXISTS (SELECT 1 FROM actions a
              WHERE a.holder IS NULL AND a.status IN ('pending', 'parked') AND a.lane = p.lane
                AND COALESCE(a.not_before, a.accepted_at) <= $1)
ORDER BY p.endpoint";

/// Each endpoint's waiting actions: how many, and when the oldest was
/// accepted.
pub(super) const BACKLOGS: &str = "
SELECT p.endpoint, c.n, c.oldest
FROM (SELECT lane, COUNT(*) AS n, MIN(accepted_at) AS oldest FROM actions
      WHERE status <> 'delivered' AND status IN ('pending', 'parked')
      GROUP BY lane) c
JOIN endpoints p ON p.lane = c.lane
ORDER BY p.endpoint";

/// The columns of an action's record ([`row_to_record`]).
macro_rules! record {
    () => {
        "SELECT a.id, a.event AS event_id, s.observer, s.action_type, s.endpoint, a.status,
                a.attempts, a.not_before, a.last_error, a.last_status, p.parked_until
         FROM actions a JOIN action_specs s ON s.id = a.spec
         LEFT JOIN endpoints p ON p.endpoint = s.endpoint"
    };
}

/// Event `$1`'s actions.
pub(super) const EVENT_ACTIONS: &str = concat!(record!(), " WHERE a.event = $1 ORDER BY a.id");

/// Makes the actions held for endpoint `$1` pending again, at time `$2`.
pub(super) const RELEASE_HELD: &str = "
UPDATE actions SET status = 'pending', holder = NULL, epoch = NULL, not_before = NULL,
       updated_at = $2
WHERE status <> 'delivered' AND status = 'held'
  AND lane = (SELECT lane FROM endpoints WHERE endpoint = $1)";

/// The first `$1` dead-lettered actions.
pub(super) const DEAD_LETTERS: &str = concat!(
    record!(),
    " WHERE a.status <> 'delivered' AND a.status = 'dead_lettered' ORDER BY a.id LIMIT $1"
);

/// Makes dead letters pending again at time `$1`: those with ids in `$2`,
/// or all when `$2` is `NULL`.
pub(super) const REPLAY_DEAD_LETTERS: &str = "
UPDATE actions SET status = 'pending', attempts = 0, holder = NULL, epoch = NULL,
       not_before = NULL, updated_at = $1
WHERE status <> 'delivered' AND status = 'dead_lettered'
  AND ($2::int8[] IS NULL OR id = ANY($2))";

/// Removes dead letters: those with ids in `$1`, or all when `$1` is
/// `NULL`.
pub(super) const PURGE_DEAD_LETTERS: &str = "
DELETE FROM actions
WHERE status <> 'delivered' AND status = 'dead_lettered'
  AND ($1::int8[] IS NULL OR id = ANY($1))";

/// When the oldest action still to be delivered was accepted.
pub(super) const OLDEST_PENDING: &str = "
SELECT MIN(accepted_at) FROM actions
WHERE status <> 'delivered' AND status IN ('pending', 'parked', 'held')";

pub(super) fn row_to_pending(row: &Row, claim_epoch: i64) -> StoreResult<PendingAction> {
    let action: String = row.get("action");
    let event_id: Uuid = row.get("event_id");
    let body: String = row.get("body");
    Ok(PendingAction {
        id: row.get("id"),
        event: Arc::new(EventJson::from_stored(event_id, body)),
        observer: row.get("observer"),
        endpoint: row.get("endpoint"),
        action: Arc::new(action_from_json(&action)?),
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        // The replay count column comes with the history schema.
        replays: 0,
        accepted_at_ms: row.get("accepted_at"),
        not_before_ms: row.get("not_before"),
        parked: row.get::<_, &str>("status") == "parked",
        size: 0,
        claim_epoch,
    })
}

pub(super) fn row_to_record(row: &Row) -> ActionRecord {
    let (status, not_before) = crate::store::as_shown(
        ActionStatus::parse(row.get("status")),
        row.get("not_before"),
        row.get("parked_until"),
        now_ms(),
    );
    ActionRecord {
        id: row.get("id"),
        event_id: row.get("event_id"),
        observer: row.get("observer"),
        action_type: row.get("action_type"),
        endpoint: row.get("endpoint"),
        status,
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        not_before: not_before
            .filter(|_| matches!(status, ActionStatus::Pending | ActionStatus::Parked))
            .map(rfc3339),
        last_error: row.get("last_error"),
        last_status: row
            .get::<_, Option<i32>>("last_status")
            .and_then(|s| u16::try_from(s).ok()),
        // Filled by the history store work (schema columns to come).
        accepted_at: String::new(),
        event_type: String::new(),
        entity_type: String::new(),
        replays: 0,
        attempt_history: None,
    }
}

/// New action rows, column by column, inserted in one statement.
#[derive(Debug, Default)]
pub(super) struct ActionColumns {
    id: Vec<i64>,
    event: Vec<Uuid>,
    spec: Vec<i32>,
    lane: Vec<i32>,
    status: Vec<&'static str>,
    not_before: Vec<Option<i64>>,
    last_error: Vec<Option<String>>,
    holder: Vec<Option<String>>,
    epoch: Vec<Option<i64>>,
}

impl ActionColumns {
    /// Adds action `a` with id `id` of event `event`, claimed by `holder`
    /// (instance and epoch) or not.
    pub(super) fn push(
        &mut self,
        id: i64,
        event: Uuid,
        spec: i32,
        lane: i32,
        a: &NewAction,
        holder: Option<(&str, i64)>,
    ) {
        self.id.push(id);
        self.event.push(event);
        self.spec.push(spec);
        self.lane.push(lane);
        self.status.push(a.status().as_str());
        self.not_before.push(
            a.parked_until_ms()
                .filter(|_| a.dead_letter_reason().is_none()),
        );
        self.last_error
            .push(a.dead_letter_reason().map(str::to_string));
        self.holder.push(holder.map(|(h, _)| h.to_string()));
        self.epoch.push(holder.map(|(_, e)| e));
    }

    /// Inserts the events with ids `ids` and texts `bodies`, accepted at
    /// `now`, and these rows for the events that were not stored yet, in
    /// one statement; returns the ids of the events it stored.
    pub(super) async fn insert_with_events(
        &self,
        client: &deadpool_postgres::Object,
        ids: &[Uuid],
        bodies: &[&str],
        now: i64,
    ) -> Result<Vec<Uuid>, tokio_postgres::Error> {
        let stmt = client
            .prepare_cached(
                "WITH ev AS (
                    INSERT INTO events (id, body, accepted_at)
                    SELECT id, body, $3 FROM unnest($1::uuid[], $2::text[]) AS n(id, body)
                    ON CONFLICT (id) DO NOTHING RETURNING id),
                 ac AS (
                    INSERT INTO actions (id, event, spec, lane, status, not_before, last_error,
                                         holder, epoch, accepted_at, updated_at)
                    SELECT n.id, n.event, n.spec, n.lane, n.status, n.not_before, n.last_error,
                           n.holder, n.epoch, $3, $3
                    FROM unnest($4::int8[], $5::uuid[], $6::int4[], $7::int4[], $8::text[],
                                $9::int8[], $10::text[], $11::text[], $12::int8[])
                         AS n(id, event, spec, lane, status, not_before, last_error, holder, epoch)
                    WHERE n.event IN (SELECT id FROM ev))
                 SELECT id FROM ev",
            )
            .await?;
        Ok(client
            .query(
                &stmt,
                &[
                    &ids,
                    &bodies,
                    &now,
                    &self.id,
                    &self.event,
                    &self.spec,
                    &self.lane,
                    &self.status,
                    &self.not_before,
                    &self.last_error,
                    &self.holder,
                    &self.epoch,
                ],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}

/// The kinds of [`Update`], each written by one statement for a run of
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Delivered,
    Retry,
    Parked,
    DeadLetter,
    Held,
    HeldGone,
    Released,
    Snapshot,
    EndpointParked,
    Disabled,
}

fn kind(u: &Update) -> Kind {
    match u {
        Update::Delivered { .. } => Kind::Delivered,
        Update::Retry { .. } => Kind::Retry,
        Update::Parked { .. } => Kind::Parked,
        Update::DeadLetter { .. } => Kind::DeadLetter,
        Update::Held { gone: None, .. } => Kind::Held,
        Update::Held { gone: Some(_), .. } => Kind::HeldGone,
        Update::Released { .. } => Kind::Released,
        // Filtered out by `apply` (the history schema is to come).
        Update::Snapshot { .. } | Update::Attempt { .. } => Kind::Snapshot,
        Update::EndpointParked { .. } => Kind::EndpointParked,
        Update::EndpointDisabled { .. } => Kind::Disabled,
    }
}

fn id_of(u: &Update) -> Option<i64> {
    match u {
        Update::Delivered { id, .. }
        | Update::Retry { id, .. }
        | Update::Parked { id, .. }
        | Update::DeadLetter { id, .. }
        | Update::Held { id, .. }
        | Update::Released { id } => Some(*id),
        Update::Snapshot { .. }
        | Update::Attempt { .. }
        | Update::EndpointParked { .. }
        | Update::EndpointDisabled { .. } => None,
    }
}

fn status(s: Option<u16>) -> Option<i32> {
    s.map(i32::from)
}

fn attempts(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// How many statements [`apply_runs`] makes of `updates`.
pub(super) fn runs(updates: &[Update]) -> usize {
    let mut n = 0;
    let mut start = 0;
    while start < updates.len() {
        start = run_end(updates, start);
        n += 1;
    }
    n
}

/// Where the run that starts at `start` ends.
fn run_end(updates: &[Update], start: usize) -> usize {
    let k = kind(&updates[start]);
    let mut ids = std::collections::HashSet::new();
    let mut end = start;
    while end < updates.len() && kind(&updates[end]) == k {
        if let Some(id) = id_of(&updates[end]) {
            if !ids.insert(id) {
                break;
            }
        }
        end += 1;
    }
    end
}

/// Applies `updates` in order, as runs of one kind (a run also ends where
/// an id comes again, so that two updates of one action keep their
/// order). Outcomes match only actions claimed by `holder` under `epoch`.
/// Returns how many outcomes matched none (late: another instance holds
/// them now).
pub(super) async fn apply_runs(
    t: &impl GenericClient,
    updates: &[Update],
    holder: &str,
    epoch: i64,
) -> Result<u64, tokio_postgres::Error> {
    let now = now_ms();
    let mut stale = 0;
    let mut start = 0;
    while start < updates.len() {
        let k = kind(&updates[start]);
        let end = run_end(updates, start);
        stale += apply_run(t, k, &updates[start..end], holder, epoch, now).await?;
        start = end;
    }
    Ok(stale)
}

/// Applies a run of updates of kind `k`; returns how many outcomes matched
/// no action of this holder and epoch. Each statement finds its rows by
/// `a.id = ANY($1)` as well as by the join on the ids' array: the planner
/// cannot tell how many rows an `unnest` gives and, for a large batch,
/// would otherwise scan the whole table.
async fn apply_run(
    t: &impl GenericClient,
    k: Kind,
    run: &[Update],
    holder: &str,
    epoch: i64,
    now: i64,
) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<i64> = run.iter().filter_map(id_of).collect();
    let sent = ids.len() as u64;
    let matched = match k {
        Kind::Delivered => {
            let (mut n, mut st) = (Vec::new(), Vec::new());
            for u in run {
                if let Update::Delivered {
                    attempts: a,
                    status: s,
                    ..
                } = u
                {
                    n.push(attempts(*a));
                    st.push(status(*s));
                }
            }
            let stmt = t
                .prepare_cached(
                    "UPDATE actions a SET status = 'delivered', attempts = u.attempts,
                            last_status = u.status, last_error = NULL, not_before = NULL,
                            holder = NULL, epoch = NULL, updated_at = $4
                     FROM unnest($1::int8[], $2::int4[], $3::int4[]) AS u(id, attempts, status)
                     WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $5 AND a.epoch = $6",
                )
                .await?;
            t.execute(&stmt, &[&ids, &n, &st, &now, &holder, &epoch])
                .await?
        }
        Kind::Retry => {
            let (mut n, mut nb, mut err, mut st) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for u in run {
                if let Update::Retry {
                    attempts: a,
                    not_before_ms,
                    error,
                    status: s,
                    ..
                } = u
                {
                    n.push(attempts(*a));
                    nb.push(*not_before_ms);
                    err.push(error.as_str());
                    st.push(status(*s));
                }
            }
            let stmt = t
                .prepare_cached(
                    "UPDATE actions a SET status = 'pending', attempts = u.attempts,
                            not_before = u.not_before, last_error = u.error,
                            last_status = u.status, updated_at = $6
                     FROM unnest($1::int8[], $2::int4[], $3::int8[], $4::text[], $5::int4[])
                          AS u(id, attempts, not_before, error, status)
                     WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $7 AND a.epoch = $8",
                )
                .await?;
            t.execute(&stmt, &[&ids, &n, &nb, &err, &st, &now, &holder, &epoch])
                .await?
        }
        Kind::DeadLetter => {
            let (mut n, mut err, mut st) = (Vec::new(), Vec::new(), Vec::new());
            for u in run {
                if let Update::DeadLetter {
                    attempts: a,
                    error,
                    status: s,
                    ..
                } = u
                {
                    n.push(attempts(*a));
                    err.push(error.as_str());
                    st.push(status(*s));
                }
            }
            let stmt = t
                .prepare_cached(
                    "UPDATE actions a SET status = 'dead_lettered', attempts = u.attempts,
                            last_error = u.error, last_status = u.status, not_before = NULL,
                            holder = NULL, epoch = NULL, updated_at = $5
                     FROM unnest($1::int8[], $2::int4[], $3::text[], $4::int4[])
                          AS u(id, attempts, error, status)
                     WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $6 AND a.epoch = $7",
                )
                .await?;
            t.execute(&stmt, &[&ids, &n, &err, &st, &now, &holder, &epoch])
                .await?
        }
        Kind::Held => {
            let stmt = t
                .prepare_cached(
                    "UPDATE actions SET status = 'held', holder = NULL, epoch = NULL,
                            updated_at = $2
                     WHERE id = ANY($1) AND holder = $3 AND epoch = $4",
                )
                .await?;
            t.execute(&stmt, &[&ids, &now, &holder, &epoch]).await?
        }
        Kind::HeldGone => {
            let (mut n, mut err) = (Vec::new(), Vec::new());
            for u in run {
                if let Update::Held { gone: Some(g), .. } = u {
                    n.push(attempts(g.attempts));
                    err.push(g.error.as_str());
                }
            }
            let stmt = t
                .prepare_cached(
                    "UPDATE actions a SET status = 'held', holder = NULL, epoch = NULL,
                            attempts = u.attempts, last_error = u.error, last_status = 410,
                            updated_at = $4
                     FROM unnest($1::int8[], $2::int4[], $3::text[]) AS u(id, attempts, error)
                     WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $5 AND a.epoch = $6",
                )
                .await?;
            t.execute(&stmt, &[&ids, &n, &err, &now, &holder, &epoch])
                .await?
        }
        Kind::Parked => {
            let until: Vec<i64> = run
                .iter()
                .filter_map(|u| match u {
                    Update::Parked { until_ms, .. } => Some(*until_ms),
                    _ => None,
                })
                .collect();
            let stmt = t
                .prepare_cached(
                    "UPDATE actions a SET status = 'parked', not_before = u.until, updated_at = $3
                     FROM unnest($1::int8[], $2::int8[]) AS u(id, until)
                     WHERE a.id = ANY($1) AND a.id = u.id AND a.status IN ('pending', 'parked')
                       AND a.holder = $4 AND a.epoch = $5",
                )
                .await?;
            t.execute(&stmt, &[&ids, &until, &now, &holder, &epoch])
                .await?;
            // Not an outcome: an action settled meanwhile is not parked.
            sent
        }
        Kind::Released => {
            let stmt = t
                .prepare_cached(
                    "UPDATE actions SET holder = NULL, epoch = NULL, updated_at = $2
                     WHERE id = ANY($1) AND status IN ('pending', 'parked')
                       AND holder = $3 AND epoch = $4",
                )
                .await?;
            t.execute(&stmt, &[&ids, &now, &holder, &epoch]).await?;
            sent
        }
        Kind::Snapshot => {
            let stmt = t
                .prepare_cached(
                    "INSERT INTO snapshots (endpoint, instance, snapshot) VALUES ($1, $2, $3)
                     ON CONFLICT (endpoint, instance) DO UPDATE
                       SET snapshot = excluded.snapshot, updated_at = now()",
                )
                .await?;
            for u in run {
                if let Update::Snapshot { endpoint, snapshot } = u {
                    t.execute(&stmt, &[endpoint, &holder, snapshot]).await?;
                }
            }
            sent
        }
        Kind::EndpointParked => {
            let stmt = t
                .prepare_cached(
                    "INSERT INTO endpoints (endpoint, parked_until) VALUES ($1, NULLIF($2::int8, 0))
                     ON CONFLICT (endpoint) DO UPDATE SET parked_until = excluded.parked_until",
                )
                .await?;
            for u in run {
                if let Update::EndpointParked { endpoint, until_ms } = u {
                    t.execute(&stmt, &[endpoint, until_ms]).await?;
                }
            }
            sent
        }
        Kind::Disabled => {
            let stmt = t
                .prepare_cached(
                    "INSERT INTO endpoints (endpoint, disabled, disabled_reason)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (endpoint) DO UPDATE
                       SET disabled = excluded.disabled, disabled_reason = excluded.disabled_reason",
                )
                .await?;
            for u in run {
                if let Update::EndpointDisabled {
                    endpoint,
                    disabled,
                    reason,
                } = u
                {
                    t.execute(&stmt, &[endpoint, disabled, reason]).await?;
                }
            }
            sent
        }
    };
    Ok(sent.saturating_sub(matched))
}
