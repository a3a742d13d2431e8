//! The history on SQLite: actions by filter, attempts, replays, purges,
//! the audit log and replay jobs.
//!
//! A filter becomes a `WHERE` of only the conditions it sets, with its
//! values bound, never spliced (ids, plain integers, are the exception).
//! Pages are read newest first by the actions' own key (`a.id < before`),
//! so a page never moves when new actions (higher ids) arrive.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};
use uuid::Uuid;

use super::queries::{record, row_to_record};
use crate::store::history_rows::{filter_json, filter_of, shown_counts, StoredAttempt};
use crate::store::{
    now_ms, ActionFilter, ActionId, ActionPage, ActionRecord, ActionStatus, AttemptRecord,
    AuditEntry, EndpointCounts, ReplayJob, ReplayState, StoreError,
};

/// `filter` as conditions on `actions a`, its event `e`, its spec `s` and
/// its endpoint's row `p` (`record!`'s names), with the values they bind,
/// at `now` (Unix ms: whether an endpoint parks its actions).
///
/// Each status condition repeats `a.status <> 'delivered'` where it can,
/// word for word, so that SQLite may read through `actions_by_status` (a
/// partial index).
fn conditions(filter: &ActionFilter, now: i64) -> (Vec<&'static str>, Vec<Value>) {
    let mut sql = Vec::new();
    let mut values = Vec::new();
    if let Some(status) = filter.status {
        match status {
            ActionStatus::Pending => {
                sql.push(
                    "a.status <> 'delivered' AND a.status = 'pending' \
                     AND COALESCE(p.parked_until, 0) <= ?",
                );
                values.push(Value::Integer(now));
            }
            ActionStatus::Parked => {
                sql.push(
                    "a.status <> 'delivered' AND a.status IN ('pending', 'parked') \
                     AND (a.status = 'parked' OR p.parked_until > ?)",
                );
                values.push(Value::Integer(now));
            }
            ActionStatus::Delivered => sql.push("a.status = 'delivered'"),
            ActionStatus::DeadLettered => {
                sql.push("a.status <> 'delivered' AND a.status = 'dead_lettered'");
            }
            ActionStatus::Held => sql.push("a.status <> 'delivered' AND a.status = 'held'"),
        }
    }
    let mut text = |cond: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            sql.push(cond);
            values.push(Value::Text(v.clone()));
        }
    };
    text("s.endpoint = ?", &filter.endpoint);
    text("s.observer = ?", &filter.observer);
    text("e.event_type = ? COLLATE NOCASE", &filter.event_type);
    text("e.entity_type = ?", &filter.entity_type);
    text("e.entity_id = ? COLLATE NOCASE", &filter.entity_id);
    if let Some(id) = filter.event_id {
        // The event's actions by their range of ids: there is no index of
        // actions by event.
        sql.push(
            "a.id BETWEEN (SELECT first_action FROM events WHERE id = ?1)
                      AND (SELECT last_action FROM events WHERE id = ?1)
             AND e.id = ?1",
        );
        values.push(Value::Text(id.to_string()));
    }
    // The event's acceptance time, which each of its actions keeps as its
    // own (stored in the same transaction, at the same time).
    if let Some(since) = filter.since_ms {
        sql.push("a.accepted_at >= ?");
        values.push(Value::Integer(since));
    }
    if let Some(until) = filter.until_ms {
        sql.push("a.accepted_at < ?");
        values.push(Value::Integer(until));
    }
    (sql, values)
}

/// `conditions` joined into one `WHERE`, its placeholders numbered.
fn where_clause(conds: &[&str]) -> String {
    if conds.is_empty() {
        return String::new();
    }
    // Number every `?` in order, each condition's own `?1` being its one
    // value used several times.
    let mut out = String::from(" WHERE ");
    let mut n = 0;
    for (i, cond) in conds.iter().enumerate() {
        if i > 0 {
            out.push_str(" AND ");
        }
        out.push('(');
        let mut uses_own = false;
        let mut rest = *cond;
        while let Some(at) = rest.find('?') {
            out.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('1') {
                // `?1`: this condition's single value, however often used.
                if !uses_own {
                    n += 1;
                    uses_own = true;
                }
                out.push_str(&format!("?{n}"));
                rest = after;
            } else {
                n += 1;
                out.push_str(&format!("?{n}"));
            }
        }
        out.push_str(rest);
        out.push(')');
    }
    out
}

/// A page of the actions matching `filter` (see
/// [`Store::actions`](crate::store::Store::actions)).
pub(super) fn actions(
    c: &Connection,
    filter: &ActionFilter,
    before: Option<ActionId>,
    limit: usize,
) -> rusqlite::Result<ActionPage> {
    let (mut conds, mut values) = conditions(filter, now_ms());
    if let Some(before) = before {
        conds.push("a.id < ?");
        values.push(Value::Integer(before));
    }
    let sql = format!(
        "{}{} ORDER BY a.id DESC LIMIT ?{}",
        record!(),
        where_clause(&conds),
        values.len() + 1
    );
    values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    // Not cached: a statement for each set of conditions would push the
    // store's own statements out of the connection's cache.
    let actions: Vec<ActionRecord> = c
        .prepare(&sql)?
        .query_map(params_from_iter(values), row_to_record)?
        .collect::<Result<_, _>>()?;
    let next = (limit > 0 && actions.len() == limit)
        .then(|| actions.last().map(|a| a.id))
        .flatten();
    Ok(ActionPage { actions, next })
}

/// How many actions match `filter`.
pub(super) fn count_actions(c: &Connection, filter: &ActionFilter) -> rusqlite::Result<u64> {
    let (conds, values) = conditions(filter, now_ms());
    let sql = format!(
        "SELECT COUNT(*) FROM actions a JOIN events e ON e.seq = a.event
         JOIN action_specs s ON s.id = a.spec
         LEFT JOIN endpoints p ON p.endpoint = s.endpoint{}",
        where_clause(&conds)
    );
    let n: i64 = c
        .prepare(&sql)?
        .query_row(params_from_iter(values), |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Action `id`'s record (without its attempts).
pub(super) fn action(c: &Connection, id: ActionId) -> rusqlite::Result<Option<ActionRecord>> {
    c.prepare_cached(concat!(record!(), " WHERE a.id = ?1"))?
        .query_row(params![id], row_to_record)
        .optional()
}

/// The columns of an attempt ([`stored_attempt`]) from `attempts t`.
const ATTEMPT_COLUMNS: &str = "t.id, t.action_id, t.number, t.trigger, t.breaker_state,
    t.started_at_ms, t.duration_ms, t.outcome, t.error_kind, t.status, t.error, t.request,
    t.response_headers, t.response_body";

fn stored_attempt(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAttempt> {
    Ok(StoredAttempt {
        id: r.get(0)?,
        action_id: r.get(1)?,
        number: r.get(2)?,
        trigger: r.get(3)?,
        breaker_state: r.get(4)?,
        started_at_ms: r.get(5)?,
        duration_ms: r.get(6)?,
        outcome: r.get(7)?,
        error_kind: r.get(8)?,
        status: r.get(9)?,
        error: r.get(10)?,
        request: r.get(11)?,
        response_headers: r.get(12)?,
        response_body: r.get(13)?,
    })
}

/// A stored attempt's text that does not read back, as a read error.
fn unreadable(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

/// Fills each of `records`' attempt history (they are the actions with ids
/// `first` to `last`, of one event), oldest first.
pub(super) fn fill_attempts(
    c: &Connection,
    records: &mut [ActionRecord],
    first: i64,
    last: i64,
) -> rusqlite::Result<()> {
    for r in records.iter_mut() {
        r.attempt_history = Some(Vec::new());
    }
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts t WHERE t.action_id BETWEEN ?1 AND ?2
         ORDER BY t.id"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![first, last], stored_attempt)?;
    for row in rows {
        let row = row?;
        let Some(r) = records.iter_mut().find(|r| r.id == row.action_id) else {
            continue;
        };
        let attempt = row
            .into_record(r.event_id, r.endpoint.clone())
            .map_err(unreadable)?;
        r.attempt_history.get_or_insert_with(Vec::new).push(attempt);
    }
    Ok(())
}

/// Up to `limit` attempts of `endpoint`'s actions, newest first, below
/// attempt id `before`.
pub(super) fn endpoint_attempts(
    c: &Connection,
    endpoint: &str,
    before: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<AttemptRecord>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS}, e.id AS event_id, l.endpoint
         FROM attempts t JOIN lanes l ON l.id = t.lane
         JOIN actions a ON a.id = t.action_id JOIN events e ON e.seq = a.event
         WHERE t.lane = (SELECT id FROM lanes WHERE endpoint = ?1) AND t.id < ?2
         ORDER BY t.id DESC LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            endpoint,
            before.unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            let event_id: String = r.get(14)?;
            Ok((stored_attempt(r)?, event_id, r.get::<_, String>(15)?))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (attempt, event_id, endpoint) = row?;
        let event_id: Uuid = event_id.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(14, rusqlite::types::Type::Text, Box::new(e))
        })?;
        out.push(
            attempt
                .into_record(event_id, endpoint)
                .map_err(unreadable)?,
        );
    }
    Ok(out)
}

/// `ids` as an SQL list (plain integers: safe to splice).
fn id_list(ids: &[ActionId]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// What a replay sets: pending, unclaimed, due at once, no attempt used;
/// one replay more. It names its endpoint's number again (an action
/// delivered before version 6 of the schema may have none, and the backlog
/// is read by that number). The last error and status are kept.
const REPLAY_SET: &str = "UPDATE actions SET status = 'pending', attempts = 0, claimed = 0,
    not_before = NULL, replays = replays + 1, replay_job = ?1, updated_at = ?2,
    lane = (SELECT s.lane FROM action_specs s WHERE s.id = actions.spec)";

/// Replays the dead-lettered or delivered actions among `ids` for `job`.
pub(super) fn replay_actions(
    t: &Transaction<'_>,
    ids: &[ActionId],
    job: Option<i64>,
) -> rusqlite::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "{REPLAY_SET} WHERE id IN ({}) AND status IN ('dead_lettered', 'delivered')",
        id_list(ids)
    );
    Ok(t.execute(&sql, params![job, now_ms()])? as u64)
}

/// Replays dead letters (those of `ids`, or all).
pub(super) fn replay_dead_letters(
    t: &Transaction<'_>,
    ids: Option<&[ActionId]>,
) -> rusqlite::Result<u64> {
    let only = ids.map_or(String::new(), |ids| {
        format!(" AND id IN ({})", id_list(ids))
    });
    let sql =
        format!("{REPLAY_SET} WHERE status <> 'delivered' AND status = 'dead_lettered'{only}");
    Ok(t.execute(&sql, params![Option::<i64>::None, now_ms()])? as u64)
}

/// Deletes dead letters (those of `ids`, or all) with their attempts.
pub(super) fn purge_dead_letters(
    t: &Transaction<'_>,
    ids: Option<&[ActionId]>,
) -> rusqlite::Result<u64> {
    let only = ids.map_or(String::new(), |ids| {
        format!(" AND id IN ({})", id_list(ids))
    });
    let dead = format!("status <> 'delivered' AND status = 'dead_lettered'{only}");
    t.execute(
        &format!("DELETE FROM attempts WHERE action_id IN (SELECT id FROM actions WHERE {dead})"),
        [],
    )?;
    Ok(t.execute(&format!("DELETE FROM actions WHERE {dead}"), [])? as u64)
}

/// Each endpoint's waiting, held and dead-lettered actions, by the status
/// they show. Counted in `actions_by_status` (status and endpoint number),
/// without reading the rows.
pub(super) fn endpoint_counts(c: &Connection) -> rusqlite::Result<Vec<EndpointCounts>> {
    let now = now_ms();
    let mut stmt = c.prepare_cached(
        "SELECT l.endpoint, c.status, COALESCE(p.parked_until, 0) > ?1, c.n
         FROM (SELECT lane, status, COUNT(*) AS n FROM actions
               WHERE status <> 'delivered' GROUP BY lane, status) c
         JOIN lanes l ON l.id = c.lane
         LEFT JOIN endpoints p ON p.endpoint = l.endpoint
         ORDER BY l.endpoint",
    )?;
    let rows = stmt.query_map(params![now], |r| {
        Ok((
            r.get::<_, String>(0)?,
            ActionStatus::parse(&r.get::<_, String>(1)?),
            r.get::<_, bool>(2)?,
            r.get::<_, i64>(3)?.max(0) as u64,
        ))
    })?;
    let mut out: Vec<EndpointCounts> = Vec::new();
    for row in rows {
        let (endpoint, status, parked, n) = row?;
        if out.last().is_none_or(|c| c.endpoint != endpoint) {
            out.push(EndpointCounts {
                endpoint,
                ..EndpointCounts::default()
            });
        }
        let Some(c) = out.last_mut() else { continue };
        for (status, n) in shown_counts([(status, parked, n)]) {
            match status {
                ActionStatus::Pending => c.pending += n,
                ActionStatus::Parked => c.parked += n,
                ActionStatus::Held => c.held += n,
                ActionStatus::DeadLettered => c.dead_lettered += n,
                ActionStatus::Delivered => {}
            }
        }
    }
    Ok(out)
}

/// Stores `entry`; returns its id.
pub(super) fn audit(t: &Transaction<'_>, entry: &AuditEntry) -> rusqlite::Result<i64> {
    t.prepare_cached(
        "INSERT INTO audit (at_ms, actor, action, target, count, instance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entry.at_ms,
        entry.actor,
        entry.action,
        entry.target,
        entry.count.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        entry.instance
    ])?;
    Ok(t.last_insert_rowid())
}

/// Up to `limit` audit entries below id `before`, newest first.
pub(super) fn audit_log(
    c: &Connection,
    before: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, at_ms, actor, action, target, count, instance FROM audit
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![
            before.unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                count: r.get::<_, Option<i64>>(5)?.map(|n| n.max(0) as u64),
                instance: r.get(6)?,
            })
        },
    )?;
    rows.collect()
}

const JOB_COLUMNS: &str =
    "id, filter, actor, state, total, replayed, created_at_ms, updated_at_ms, error, cursor";

fn job_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReplayJob> {
    let id: i64 = r.get(0)?;
    let filter: String = r.get(1)?;
    Ok(ReplayJob {
        id,
        filter: filter_of(id, &filter).map_err(unreadable)?,
        actor: r.get(2)?,
        state: ReplayState::parse(&r.get::<_, String>(3)?),
        total: r.get::<_, i64>(4)?.max(0) as u64,
        replayed: r.get::<_, i64>(5)?.max(0) as u64,
        created_at_ms: r.get(6)?,
        updated_at_ms: r.get(7)?,
        error: r.get(8)?,
        cursor: r.get(9)?,
        progress: Vec::new(),
    })
}

/// Stores a new running job, `owner`'s (`None`: a command's, never taken
/// up); returns it.
pub(super) fn create_replay_job(
    t: &Transaction<'_>,
    filter: &ActionFilter,
    actor: &str,
    total: u64,
    owner: Option<i64>,
) -> rusqlite::Result<ReplayJob> {
    let now = now_ms();
    t.prepare_cached(
        "INSERT INTO replay_jobs (filter, actor, state, total, replayed, created_at_ms,
                                  updated_at_ms, owner)
         VALUES (?1, ?2, 'running', ?3, 0, ?4, ?4, ?5)",
    )?
    .execute(params![
        filter_json(filter),
        actor,
        i64::try_from(total).unwrap_or(i64::MAX),
        now,
        owner
    ])?;
    Ok(ReplayJob {
        id: t.last_insert_rowid(),
        filter: filter.clone(),
        actor: actor.to_string(),
        state: ReplayState::Running,
        total,
        replayed: 0,
        created_at_ms: now,
        updated_at_ms: now,
        error: None,
        cursor: None,
        progress: Vec::new(),
    })
}

/// A running job's progress, recorded by its runner (see
/// [`Store::update_replay_job`](crate::store::Store::update_replay_job)).
pub(super) struct JobProgress {
    pub(super) replayed: u64,
    pub(super) cursor: Option<i64>,
    pub(super) state: ReplayState,
    pub(super) error: Option<String>,
}

/// Records job `id`'s progress if it is running and `owner`'s or a
/// command's; its state after: `None` when there is no such job,
/// `Some(None)` when another process took it up (nothing changed).
pub(super) fn update_replay_job(
    t: &Transaction<'_>,
    id: i64,
    owner: i64,
    p: &JobProgress,
) -> rusqlite::Result<Option<Option<ReplayState>>> {
    let changed = t
        .prepare_cached(
            "UPDATE replay_jobs SET replayed = ?2, state = ?3, error = ?4, updated_at_ms = ?5,
                                    cursor = ?6
             WHERE id = ?1 AND state = 'running' AND (owner IS NULL OR owner = ?7)",
        )?
        .execute(params![
            id,
            i64::try_from(p.replayed).unwrap_or(i64::MAX),
            p.state.as_str(),
            p.error,
            now_ms(),
            p.cursor,
            owner
        ])?;
    let state: Option<String> = t
        .prepare_cached("SELECT state FROM replay_jobs WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    Ok(state.map(|state| {
        let state = ReplayState::parse(&state);
        // Still running, yet not changed: another process's now.
        (changed > 0 || state != ReplayState::Running).then_some(state)
    }))
}

/// The running jobs of processes other than `owner`, not a command's:
/// the ones [`adopt_replay_jobs`] would take.
const ORPHANS: &str = "state = 'running' AND owner IS NOT NULL AND owner <> ?1";

/// Whether there is any job for [`adopt_replay_jobs`] to take: looked for
/// on the reader, so that the look every few seconds takes no turn of the
/// writer when there is none (nearly always).
pub(super) fn any_orphan_job(c: &Connection, owner: i64) -> rusqlite::Result<bool> {
    c.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM replay_jobs WHERE {ORPHANS})"
    ))?
    .query_row(params![owner], |r| r.get(0))
}

/// Makes the running jobs of processes other than `owner` (not a
/// command's) `owner`'s; returns them.
pub(super) fn adopt_replay_jobs(
    t: &Transaction<'_>,
    owner: i64,
) -> rusqlite::Result<Vec<ReplayJob>> {
    let ids: Vec<i64> = t
        .prepare_cached(&format!(
            "UPDATE replay_jobs SET owner = ?1 WHERE {ORPHANS} RETURNING id"
        ))?
        .query_map(params![owner], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt = t.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM replay_jobs WHERE id = ?1"
    ))?;
    ids.iter()
        .map(|id| stmt.query_row(params![id], job_of))
        .collect()
}

/// Cancels job `id` if it is running.
pub(super) fn cancel_replay_job(t: &Transaction<'_>, id: i64) -> rusqlite::Result<()> {
    t.prepare_cached(
        "UPDATE replay_jobs SET state = 'cancelled', updated_at_ms = ?2
         WHERE id = ?1 AND state = 'running'",
    )?
    .execute(params![id, now_ms()])?;
    Ok(())
}

/// Job `id` with its progress.
pub(super) fn replay_job(c: &Connection, id: i64) -> rusqlite::Result<Option<ReplayJob>> {
    let job = c
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM replay_jobs WHERE id = ?1"
        ))?
        .query_row(params![id], job_of)
        .optional()?;
    let Some(mut job) = job else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached(
        "SELECT a.status, COALESCE(p.parked_until, 0) > ?2, COUNT(*)
         FROM actions a JOIN action_specs s ON s.id = a.spec
         LEFT JOIN endpoints p ON p.endpoint = s.endpoint
         WHERE a.replay_job = ?1 GROUP BY 1, 2",
    )?;
    let rows = stmt
        .query_map(params![id, now_ms()], |r| {
            Ok((
                ActionStatus::parse(&r.get::<_, String>(0)?),
                r.get::<_, bool>(1)?,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    job.progress = shown_counts(rows);
    Ok(Some(job))
}

/// Up to `limit` jobs, newest first.
pub(super) fn replay_jobs(c: &Connection, limit: usize) -> rusqlite::Result<Vec<ReplayJob>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM replay_jobs ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], job_of)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_and_a_conditions_own_value_once() {
        assert_eq!(where_clause(&[]), "");
        assert_eq!(
            where_clause(&["a = ?", "b = ?1 OR c = ?1", "d < ?"]),
            " WHERE (a = ?1) AND (b = ?2 OR c = ?2) AND (d < ?3)"
        );
    }
}
