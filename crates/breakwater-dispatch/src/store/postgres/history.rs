//! The history on Postgres: actions by filter, attempts, replays, purges,
//! the audit log and replay jobs.
//!
//! A filter becomes a `WHERE` of only the conditions it sets, with its
//! values bound, never spliced. Pages are read newest first by the
//! actions' own key (`a.id < before`), so a page never moves when new
//! actions (higher ids) arrive. Replays and purges are operator commands:
//! they act on any instance's rows (a dead-lettered or delivered action is
//! held by none), and a replayed action is unclaimed, for any instance to
//! claim.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::queries::{record, row_to_record, PURGE_DEAD_LETTERS};
use super::PostgresStore;
use crate::store::history_rows::{filter_json, filter_of, shown_counts, StoredAttempt};
use crate::store::{
    now_ms, ActionFilter, ActionId, ActionPage, ActionRecord, ActionStatus, AttemptRecord,
    AuditEntry, EndpointCounts, ReplayJob, ReplayState, StoreError, StoreResult,
};

/// A statement's text, and the values its placeholders bind.
#[derive(Default)]
struct Query {
    sql: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
    /// Whether `sql` has its `WHERE` yet.
    narrowed: bool,
}

impl Query {
    /// Adds `value` and returns its placeholder.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    /// Adds condition `cond`, its `?`s standing for `value`.
    fn and(&mut self, cond: &str, value: impl ToSql + Sync + Send + 'static) {
        let p = self.bind(value);
        self.and_sql(&cond.replace('?', &p));
    }

    /// Adds condition `cond`, which binds nothing.
    fn and_sql(&mut self, cond: &str) {
        self.sql
            .push_str(if self.narrowed { " AND (" } else { " WHERE (" });
        self.narrowed = true;
        self.sql.push_str(cond);
        self.sql.push(')');
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| &**v as &(dyn ToSql + Sync))
            .collect()
    }
}

/// `base` (`record!`'s tables: `actions a`, its event `e`, its spec `s`,
/// its endpoint's row `p`) narrowed by `filter`, at `now` (Unix ms:
/// whether an endpoint parks its actions). Each status condition repeats
/// `a.status <> 'delivered'`, so that the planner may read through
/// `actions_by_status` (a partial index).
fn filtered(base: &str, filter: &ActionFilter, now: i64) -> Query {
    let mut q = Query {
        sql: base.to_string(),
        ..Query::default()
    };
    if let Some(status) = filter.status {
        match status {
            ActionStatus::Pending => q.and(
                "a.status <> 'delivered' AND a.status = 'pending' \
                 AND COALESCE(p.parked_until, 0) <= ?",
                now,
            ),
            ActionStatus::Parked => q.and(
                "a.status <> 'delivered' AND a.status IN ('pending', 'parked') \
                 AND (a.status = 'parked' OR p.parked_until > ?)",
                now,
            ),
            ActionStatus::Delivered => q.and_sql("a.status = 'delivered'"),
            ActionStatus::DeadLettered => {
                q.and_sql("a.status <> 'delivered' AND a.status = 'dead_lettered'");
            }
            ActionStatus::Held => q.and_sql("a.status <> 'delivered' AND a.status = 'held'"),
        }
    }
    let texts = [
        ("s.endpoint = ?", &filter.endpoint),
        ("s.observer = ?", &filter.observer),
        ("lower(e.event_type) = lower(?)", &filter.event_type),
        ("e.entity_type = ?", &filter.entity_type),
        ("lower(e.entity_id) = lower(?)", &filter.entity_id),
    ];
    for (cond, value) in texts {
        if let Some(v) = value {
            q.and(cond, v.clone());
        }
    }
    if let Some(id) = filter.event_id {
        q.and("a.event = ?", id);
    }
    // The event's acceptance time, which each of its actions keeps as its
    // own (stored in the same transaction, at the same time).
    if let Some(since) = filter.since_ms {
        q.and("a.accepted_at >= ?", since);
    }
    if let Some(until) = filter.until_ms {
        q.and("a.accepted_at < ?", until);
    }
    q
}

/// The columns of an attempt ([`stored_attempt`]) from `attempts t`.
const ATTEMPT_COLUMNS: &str = "t.id, t.action_id, t.number, t.trigger, t.breaker_state,
    t.started_at_ms, t.duration_ms, t.outcome, t.error_kind, t.status, t.error, t.request,
    t.response_headers, t.response_body";

fn stored_attempt(r: &Row) -> StoredAttempt {
    StoredAttempt {
        id: r.get(0),
        action_id: r.get(1),
        number: r.get::<_, i32>(2).into(),
        trigger: r.get(3),
        breaker_state: r.get(4),
        started_at_ms: r.get(5),
        duration_ms: r.get(6),
        outcome: r.get(7),
        error_kind: r.get(8),
        status: r.get::<_, Option<i32>>(9).map(i64::from),
        error: r.get(10),
        request: r.get(11),
        response_headers: r.get(12),
        response_body: r.get(13),
    }
}

const JOB_COLUMNS: &str =
    "id, filter, actor, state, total, replayed, created_at_ms, updated_at_ms, error, cursor";

fn job_of(r: &Row) -> StoreResult<ReplayJob> {
    let id: i64 = r.get(0);
    let filter: String = r.get(1);
    Ok(ReplayJob {
        id,
        filter: filter_of(id, &filter)?,
        actor: r.get(2),
        state: ReplayState::parse(r.get(3)),
        total: r.get::<_, i64>(4).max(0) as u64,
        replayed: r.get::<_, i64>(5).max(0) as u64,
        created_at_ms: r.get(6),
        updated_at_ms: r.get(7),
        error: r.get(8),
        cursor: r.get(9),
        progress: Vec::new(),
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// See [`Store::actions`](crate::store::Store::actions).
    pub(super) async fn list_actions(
        &self,
        filter: &ActionFilter,
        before: Option<ActionId>,
        n: usize,
    ) -> StoreResult<ActionPage> {
        let mut q = filtered(record!(), filter, now_ms());
        if let Some(before) = before {
            q.and("a.id < ?", before);
        }
        let at = q.bind(limit(n));
        q.sql.push_str(&format!(" ORDER BY a.id DESC LIMIT {at}"));
        let client = self.client().await?;
        let rows = self.note(client.query(&q.sql, &q.params()).await)?;
        let actions: Vec<ActionRecord> = rows.iter().map(row_to_record).collect();
        let next = (n > 0 && actions.len() == n)
            .then(|| actions.last().map(|a| a.id))
            .flatten();
        Ok(ActionPage { actions, next })
    }

    /// See [`Store::count_actions`](crate::store::Store::count_actions).
    pub(super) async fn count_matching(&self, filter: &ActionFilter) -> StoreResult<u64> {
        let q = filtered(
            "SELECT COUNT(*) FROM actions a JOIN events e ON e.id = a.event
             JOIN action_specs s ON s.id = a.spec
             LEFT JOIN endpoints p ON p.endpoint = s.endpoint",
            filter,
            now_ms(),
        );
        let client = self.client().await?;
        let row = self.note(client.query_one(&q.sql, &q.params()).await)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// See [`Store::action`](crate::store::Store::action).
    pub(super) async fn one_action(&self, id: ActionId) -> StoreResult<Option<ActionRecord>> {
        let client = self.client().await?;
        let row = self.note(
            client
                .query_opt(concat!(record!(), " WHERE a.id = $1"), &[&id])
                .await,
        )?;
        Ok(row.as_ref().map(row_to_record))
    }

    /// Fills each of `records`' attempt history, oldest first.
    pub(super) async fn fill_attempts(
        &self,
        client: &tokio_postgres::Client,
        records: &mut [ActionRecord],
    ) -> StoreResult<()> {
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        for r in records.iter_mut() {
            r.attempt_history = Some(Vec::new());
        }
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts t WHERE t.action_id = ANY($1) ORDER BY t.id"
        );
        let rows = self.note(client.query(&sql, &[&ids]).await)?;
        for row in &rows {
            let attempt = stored_attempt(row);
            let Some(r) = records.iter_mut().find(|r| r.id == attempt.action_id) else {
                continue;
            };
            let attempt = attempt.into_record(r.event_id, r.endpoint.clone())?;
            r.attempt_history.get_or_insert_with(Vec::new).push(attempt);
        }
        Ok(())
    }

    /// See [`Store::endpoint_attempts`](crate::store::Store::endpoint_attempts).
    pub(super) async fn attempts_of_endpoint(
        &self,
        endpoint: &str,
        before: Option<i64>,
        n: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS}, a.event AS event_id, p.endpoint
             FROM attempts t JOIN endpoints p ON p.lane = t.lane
             JOIN actions a ON a.id = t.action_id
             WHERE t.lane = (SELECT lane FROM endpoints WHERE endpoint = $1) AND t.id < $2
             ORDER BY t.id DESC LIMIT $3"
        );
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(&sql, &[&endpoint, &before.unwrap_or(i64::MAX), &limit(n)])
                .await,
        )?;
        rows.iter()
            .map(|r| {
                let event_id: Uuid = r.get(14);
                stored_attempt(r).into_record(event_id, r.get(15))
            })
            .collect()
    }

    /// See [`Store::replay_actions`](crate::store::Store::replay_actions).
    pub(super) async fn replay_ids(&self, ids: &[ActionId], job: Option<i64>) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        self.note(
            client
                .execute(
                    "UPDATE actions SET status = 'pending', attempts = 0, holder = NULL,
                            epoch = NULL, not_before = NULL, replays = replays + 1,
                            replay_job = $2::int8, updated_at = $3
                     WHERE id = ANY($1) AND status IN ('dead_lettered', 'delivered')",
                    &[&ids, &job, &now_ms()],
                )
                .await,
        )
    }

    /// See [`Store::purge_actions`](crate::store::Store::purge_actions) and
    /// [`Store::purge_dead_letters`](crate::store::Store::purge_dead_letters).
    pub(super) async fn purge(&self, ids: Option<&[ActionId]>) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = self.note(client.query_one(PURGE_DEAD_LETTERS, &[&ids]).await)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// See [`Store::endpoint_counts`](crate::store::Store::endpoint_counts):
    /// counted in `actions_by_status` (status and endpoint number).
    pub(super) async fn counts_by_endpoint(&self) -> StoreResult<Vec<EndpointCounts>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(
                    "SELECT p.endpoint, c.status, COALESCE(p.parked_until, 0) > $1, c.n
                     FROM (SELECT lane, status, COUNT(*) AS n FROM actions
                           WHERE status <> 'delivered' GROUP BY lane, status) c
                     JOIN endpoints p ON p.lane = c.lane
                     ORDER BY p.endpoint",
                    &[&now_ms()],
                )
                .await,
        )?;
        let mut out: Vec<EndpointCounts> = Vec::new();
        for r in &rows {
            let endpoint: String = r.get(0);
            if out.last().is_none_or(|c| c.endpoint != endpoint) {
                out.push(EndpointCounts {
                    endpoint,
                    ..EndpointCounts::default()
                });
            }
            let Some(c) = out.last_mut() else { continue };
            let row = (
                ActionStatus::parse(r.get(1)),
                r.get::<_, bool>(2),
                r.get::<_, i64>(3).max(0) as u64,
            );
            for (status, n) in shown_counts([row]) {
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

    /// See [`Store::audit`](crate::store::Store::audit).
    pub(super) async fn add_audit(&self, entry: &AuditEntry) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = self.note(
            client
                .query_one(
                    "INSERT INTO audit (at_ms, actor, action, target, count, instance)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &entry.at_ms,
                        &entry.actor,
                        &entry.action,
                        &entry.target,
                        &entry.count.map(count),
                        &entry.instance,
                    ],
                )
                .await,
        )?;
        Ok(row.get(0))
    }

    /// See [`Store::audit_log`](crate::store::Store::audit_log).
    pub(super) async fn audit_entries(
        &self,
        before: Option<i64>,
        n: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(
                    "SELECT id, at_ms, actor, action, target, count, instance FROM audit
                     WHERE id < $1 ORDER BY id DESC LIMIT $2",
                    &[&before.unwrap_or(i64::MAX), &limit(n)],
                )
                .await,
        )?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                count: r.get::<_, Option<i64>>(5).map(|n| n.max(0) as u64),
                instance: r.get(6),
            })
            .collect())
    }

    /// See [`Store::create_replay_job`](crate::store::Store::create_replay_job):
    /// an adoptable job names this instance's lease epoch.
    pub(super) async fn new_replay_job(
        &self,
        filter: &ActionFilter,
        actor: &str,
        total: u64,
        adoptable: bool,
    ) -> StoreResult<ReplayJob> {
        let now = now_ms();
        let epoch = self.lease.epoch();
        let owner = (adoptable && epoch > 0).then_some(epoch);
        let client = self.client().await?;
        let row = self.note(
            client
                .query_one(
                    "INSERT INTO replay_jobs (filter, actor, state, total, replayed,
                                              created_at_ms, updated_at_ms, owner)
                     VALUES ($1, $2, 'running', $3, 0, $4, $4, $5) RETURNING id",
                    &[&filter_json(filter), &actor, &count(total), &now, &owner],
                )
                .await,
        )?;
        Ok(ReplayJob {
            id: row.get(0),
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

    /// See [`Store::update_replay_job`](crate::store::Store::update_replay_job):
    /// the job must be a command's or name this instance's current epoch.
    pub(super) async fn set_replay_job(
        &self,
        id: i64,
        replayed: u64,
        cursor: Option<ActionId>,
        state: ReplayState,
        error: Option<&str>,
    ) -> StoreResult<Option<ReplayState>> {
        let client = self.client().await?;
        let epoch = self.lease.epoch();
        let updated = self.note(
            client
                .query_opt(
                    "UPDATE replay_jobs SET replayed = $2, state = $3, error = $4,
                            updated_at_ms = $5, cursor = $6
                     WHERE id = $1 AND state = 'running' AND (owner IS NULL OR owner = $7)
                     RETURNING state",
                    &[
                        &id,
                        &count(replayed),
                        &state.as_str(),
                        &error,
                        &now_ms(),
                        &cursor,
                        &epoch,
                    ],
                )
                .await,
        )?;
        if let Some(row) = updated {
            return Ok(Some(ReplayState::parse(row.get(0))));
        }
        let row = self
            .note(
                client
                    .query_opt("SELECT state FROM replay_jobs WHERE id = $1", &[&id])
                    .await,
            )?
            .ok_or_else(|| StoreError::Backend(format!("there is no replay job {id}")))?;
        let state = ReplayState::parse(row.get(0));
        // Still running, yet not changed: another instance's now.
        Ok((state != ReplayState::Running).then_some(state))
    }

    /// See [`Store::adopt_replay_jobs`](crate::store::Store::adopt_replay_jobs):
    /// the running jobs whose owner's epoch holds no lease.
    pub(super) async fn adopt_jobs(&self) -> StoreResult<Vec<ReplayJob>> {
        let epoch = self.lease.epoch();
        if epoch == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let orphans = self.note(
            client
                .query(
                    "SELECT j.id, j.owner FROM replay_jobs j
                     WHERE j.state = 'running' AND j.owner IS NOT NULL AND j.owner <> $1
                       AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.epoch = j.owner)",
                    &[&epoch],
                )
                .await,
        )?;
        // Each taken by a compare-and-set on the owner it had: of
        // instances looking at once, one takes it (a condition on the row
        // alone is checked again on the row as it is when the update gets
        // its lock; a condition on another table would not be).
        let sql = format!(
            "UPDATE replay_jobs SET owner = $1
             WHERE id = $2 AND owner = $3 AND state = 'running'
             RETURNING {JOB_COLUMNS}"
        );
        let mut rows = Vec::new();
        for orphan in orphans {
            let (id, owner): (i64, i64) = (orphan.get(0), orphan.get(1));
            rows.extend(self.note(client.query_opt(&sql, &[&epoch, &id, &owner]).await)?);
        }
        rows.iter().map(job_of).collect()
    }

    /// Cancels job `id` if it is running.
    pub(super) async fn stop_replay_job(&self, id: i64) -> StoreResult<()> {
        let client = self.client().await?;
        self.note(
            client
                .execute(
                    "UPDATE replay_jobs SET state = 'cancelled', updated_at_ms = $2
                     WHERE id = $1 AND state = 'running'",
                    &[&id, &now_ms()],
                )
                .await,
        )?;
        Ok(())
    }

    /// See [`Store::replay_job`](crate::store::Store::replay_job).
    pub(super) async fn one_replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>> {
        let client = self.client().await?;
        let sql = format!("SELECT {JOB_COLUMNS} FROM replay_jobs WHERE id = $1");
        let Some(row) = self.note(client.query_opt(&sql, &[&id]).await)? else {
            return Ok(None);
        };
        let mut job = job_of(&row)?;
        let rows = self.note(
            client
                .query(
                    "SELECT a.status, COALESCE(p.parked_until, 0) > $2, COUNT(*)
                     FROM actions a LEFT JOIN endpoints p ON p.lane = a.lane
                     WHERE a.replay_job = $1 GROUP BY 1, 2",
                    &[&id, &now_ms()],
                )
                .await,
        )?;
        job.progress = shown_counts(rows.iter().map(|r| {
            (
                ActionStatus::parse(r.get(0)),
                r.get::<_, bool>(1),
                r.get::<_, i64>(2).max(0) as u64,
            )
        }));
        Ok(Some(job))
    }

    /// See [`Store::replay_jobs`](crate::store::Store::replay_jobs).
    pub(super) async fn list_replay_jobs(&self, n: usize) -> StoreResult<Vec<ReplayJob>> {
        let client = self.client().await?;
        let sql = format!("SELECT {JOB_COLUMNS} FROM replay_jobs ORDER BY id DESC LIMIT $1");
        let rows = self.note(client.query(&sql, &[&limit(n)]).await)?;
        rows.iter().map(job_of).collect()
    }
}
