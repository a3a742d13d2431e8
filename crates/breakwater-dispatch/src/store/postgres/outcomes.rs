//! Outcomes and attempts ([`Store::apply`](crate::store::Store::apply)):
//! a batch of updates written as few statements as its kinds allow.
//!
//! Outcomes go as runs of one kind, each one statement over arrays
//! (`unnest`), matched to the actions this instance holds under its
//! current epoch (fencing: a late outcome changes nothing). The batch's
//! attempts go in one `INSERT` over arrays, not fenced (the attempt was
//! made, whoever holds the action now) but only for actions still stored;
//! it rides in the first run's statement as a data-modifying `WITH` when
//! it can, so that the usual batch (attempts and their outcomes, all
//! deliveries) stays one statement: one round trip, no explicit
//! transaction.

use std::borrow::Cow;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::store::history_rows::{text, AttemptRow};
use crate::store::{now_ms, Update};

/// The kinds of [`Update`] but attempts, each written by one statement for
/// a run of them.
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

impl Kind {
    /// Whether a run of this kind is one statement (others are one a
    /// row), which the batch's attempts can ride in.
    fn is_one_statement(self) -> bool {
        !matches!(self, Self::Snapshot | Self::EndpointParked | Self::Disabled)
    }
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
        // Taken out of the outcomes by `Batch::of`: never asked.
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

/// A batch's attempts, column by column.
#[derive(Debug, Default)]
struct AttemptColumns<'a> {
    id: Vec<i64>,
    number: Vec<i32>,
    trigger: Vec<&'static str>,
    breaker_state: Vec<Cow<'a, str>>,
    started_at_ms: Vec<i64>,
    duration_ms: Vec<i64>,
    outcome: Vec<&'static str>,
    error_kind: Vec<Option<Cow<'a, str>>>,
    status: Vec<Option<i32>>,
    error: Vec<Option<Cow<'a, str>>>,
    request: Vec<Option<String>>,
    response_headers: Vec<Option<String>>,
    response_body: Vec<Option<Cow<'a, str>>>,
}

impl<'a> AttemptColumns<'a> {
    fn push(&mut self, id: i64, r: AttemptRow<'a>) {
        self.id.push(id);
        self.number.push(r.number);
        self.trigger.push(r.trigger);
        self.breaker_state.push(r.breaker_state);
        self.started_at_ms.push(r.started_at_ms);
        self.duration_ms.push(r.duration_ms);
        self.outcome.push(r.outcome);
        self.error_kind.push(r.error_kind);
        self.status.push(r.status);
        self.error.push(r.error);
        self.request.push(r.request);
        self.response_headers.push(r.response_headers);
        self.response_body.push(r.response_body);
    }

    /// The `INSERT` of these attempts, its parameters numbered from
    /// `first`, in the order given (ids grow in that order), each with its
    /// action's endpoint number; an attempt of an action no longer stored
    /// is left out.
    fn insert_sql(first: usize) -> String {
        let p: Vec<String> = (first..first + 13).map(|n| format!("${n}")).collect();
        format!(
            "INSERT INTO attempts (action_id, lane, number, trigger, breaker_state, started_at_ms,
                                   duration_ms, outcome, error_kind, status, error, request,
                                   response_headers, response_body)
             SELECT u.id, a.lane, u.number, u.trigger, u.breaker_state, u.started_at_ms,
                    u.duration_ms, u.outcome, u.error_kind, u.status, u.error, u.request,
                    u.response_headers, u.response_body
             FROM unnest({}::int8[], {}::int4[], {}::text[], {}::text[], {}::int8[], {}::int8[],
                         {}::text[], {}::text[], {}::int4[], {}::text[], {}::text[], {}::text[],
                         {}::text[])
                  WITH ORDINALITY
                  AS u(id, number, trigger, breaker_state, started_at_ms, duration_ms, outcome,
                       error_kind, status, error, request, response_headers, response_body, n)
             JOIN actions a ON a.id = u.id
             WHERE a.id = ANY({})
             ORDER BY u.n",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[0]
        )
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.id,
            &self.number,
            &self.trigger,
            &self.breaker_state,
            &self.started_at_ms,
            &self.duration_ms,
            &self.outcome,
            &self.error_kind,
            &self.status,
            &self.error,
            &self.request,
            &self.response_headers,
            &self.response_body,
        ]
    }
}

/// One [`Store::apply`](crate::store::Store::apply) batch: its attempts
/// and its outcomes (every other update, in the order given).
#[derive(Debug)]
pub(super) struct Batch<'a> {
    attempts: Option<AttemptColumns<'a>>,
    outcomes: Vec<&'a Update>,
}

impl<'a> Batch<'a> {
    /// `updates`, its attempts set apart. They may all be written first:
    /// an attempt needs only its action to be stored, which no update
    /// changes.
    pub(super) fn of(updates: &'a [Update]) -> Self {
        let mut attempts = AttemptColumns::default();
        let mut outcomes = Vec::with_capacity(updates.len());
        for u in updates {
            match u {
                Update::Attempt { id, attempt } => attempts.push(*id, AttemptRow::of(attempt)),
                u => outcomes.push(u),
            }
        }
        Self {
            attempts: (!attempts.id.is_empty()).then_some(attempts),
            outcomes,
        }
    }

    /// How many statements [`Batch::apply`] makes.
    pub(super) fn statements(&self) -> usize {
        let mut n = 0;
        let mut start = 0;
        while start < self.outcomes.len() {
            start = run_end(&self.outcomes, start);
            n += 1;
        }
        let attempts_alone = self.attempts.is_some()
            && self
                .outcomes
                .first()
                .is_none_or(|u| !kind(u).is_one_statement());
        n + usize::from(attempts_alone)
    }

    /// Writes the batch: its attempts, then its outcomes in order, as runs
    /// of one kind (a run also ends where an id comes again, so that two
    /// updates of one action keep their order). Outcomes match only actions
    /// claimed by `holder` under `epoch`. Returns how many outcomes matched
    /// none (late: another instance holds them now).
    pub(super) async fn apply(
        &self,
        t: &impl GenericClient,
        holder: &str,
        epoch: i64,
    ) -> Result<u64, tokio_postgres::Error> {
        let now = now_ms();
        let mut attempts = self.attempts.as_ref();
        if let Some(a) = attempts {
            if self
                .outcomes
                .first()
                .is_none_or(|u| !kind(u).is_one_statement())
            {
                let stmt = t.prepare_cached(&AttemptColumns::insert_sql(1)).await?;
                t.execute(&stmt, &a.params()).await?;
                attempts = None;
            }
        }
        let mut stale = 0;
        let mut start = 0;
        while start < self.outcomes.len() {
            let k = kind(self.outcomes[start]);
            let end = run_end(&self.outcomes, start);
            let run = &self.outcomes[start..end];
            stale += apply_run(t, k, run, attempts.take(), holder, epoch, now).await?;
            start = end;
        }
        Ok(stale)
    }
}

/// Where the run that starts at `start` ends.
fn run_end(updates: &[&Update], start: usize) -> usize {
    let k = kind(updates[start]);
    let mut ids = std::collections::HashSet::new();
    let mut end = start;
    while end < updates.len() && kind(updates[end]) == k {
        if let Some(id) = id_of(updates[end]) {
            if !ids.insert(id) {
                break;
            }
        }
        end += 1;
    }
    end
}

/// Runs `sql` with `params`, and the `attempts` with it when given (as a
/// `WITH`, their parameters after `params`); returns the rows `sql`
/// changed.
async fn execute(
    t: &impl GenericClient,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
    attempts: Option<&AttemptColumns<'_>>,
) -> Result<u64, tokio_postgres::Error> {
    match attempts {
        None => {
            let stmt = t.prepare_cached(sql).await?;
            t.execute(&stmt, params).await
        }
        Some(a) => {
            let sql = format!(
                "WITH recorded AS ({}) {sql}",
                AttemptColumns::insert_sql(params.len() + 1)
            );
            let stmt = t.prepare_cached(&sql).await?;
            let mut all = params.to_vec();
            all.extend(a.params());
            t.execute(&stmt, &all).await
        }
    }
}

/// Applies a run of updates of kind `k` (with the batch's `attempts`, when
/// given: only to a kind written in one statement); returns how many
/// outcomes matched no action of this holder and epoch. Each statement
/// finds its rows by `a.id = ANY($1)` as well as by the join on the ids'
/// array: the planner cannot tell how many rows an `unnest` gives and, for
/// a large batch, would otherwise scan the whole table. Error texts are
/// kept as [`text`] has them (Postgres refuses NUL).
async fn apply_run(
    t: &impl GenericClient,
    k: Kind,
    run: &[&Update],
    recorded: Option<&AttemptColumns<'_>>,
    holder: &str,
    epoch: i64,
    now: i64,
) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<i64> = run.iter().filter_map(|u| id_of(u)).collect();
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
            execute(
                t,
                "UPDATE actions a SET status = 'delivered', attempts = u.attempts,
                        last_status = u.status, last_error = NULL, not_before = NULL,
                        holder = NULL, epoch = NULL, updated_at = $4
                 FROM unnest($1::int8[], $2::int4[], $3::int4[]) AS u(id, attempts, status)
                 WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $5 AND a.epoch = $6",
                &[&ids, &n, &st, &now, &holder, &epoch],
                recorded,
            )
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
                    err.push(text(error));
                    st.push(status(*s));
                }
            }
            execute(
                t,
                "UPDATE actions a SET status = 'pending', attempts = u.attempts,
                        not_before = u.not_before, last_error = u.error,
                        last_status = u.status, updated_at = $6
                 FROM unnest($1::int8[], $2::int4[], $3::int8[], $4::text[], $5::int4[])
                      AS u(id, attempts, not_before, error, status)
                 WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $7 AND a.epoch = $8",
                &[&ids, &n, &nb, &err, &st, &now, &holder, &epoch],
                recorded,
            )
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
                    err.push(text(error));
                    st.push(status(*s));
                }
            }
            execute(
                t,
                "UPDATE actions a SET status = 'dead_lettered', attempts = u.attempts,
                        last_error = u.error, last_status = u.status, not_before = NULL,
                        holder = NULL, epoch = NULL, updated_at = $5
                 FROM unnest($1::int8[], $2::int4[], $3::text[], $4::int4[])
                      AS u(id, attempts, error, status)
                 WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $6 AND a.epoch = $7",
                &[&ids, &n, &err, &st, &now, &holder, &epoch],
                recorded,
            )
            .await?
        }
        Kind::Held => {
            execute(
                t,
                "UPDATE actions SET status = 'held', holder = NULL, epoch = NULL,
                        updated_at = $2
                 WHERE id = ANY($1) AND holder = $3 AND epoch = $4",
                &[&ids, &now, &holder, &epoch],
                recorded,
            )
            .await?
        }
        Kind::HeldGone => {
            let (mut n, mut err) = (Vec::new(), Vec::new());
            for u in run {
                if let Update::Held { gone: Some(g), .. } = u {
                    n.push(attempts(g.attempts));
                    err.push(text(&g.error));
                }
            }
            execute(
                t,
                "UPDATE actions a SET status = 'held', holder = NULL, epoch = NULL,
                        attempts = u.attempts, last_error = u.error, last_status = 410,
                        updated_at = $4
                 FROM unnest($1::int8[], $2::int4[], $3::text[]) AS u(id, attempts, error)
                 WHERE a.id = ANY($1) AND a.id = u.id AND a.holder = $5 AND a.epoch = $6",
                &[&ids, &n, &err, &now, &holder, &epoch],
                recorded,
            )
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
            execute(
                t,
                "UPDATE actions a SET status = 'parked', not_before = u.until, updated_at = $3
                 FROM unnest($1::int8[], $2::int8[]) AS u(id, until)
                 WHERE a.id = ANY($1) AND a.id = u.id AND a.status IN ('pending', 'parked')
                   AND a.holder = $4 AND a.epoch = $5",
                &[&ids, &until, &now, &holder, &epoch],
                recorded,
            )
            .await?;
            // Not an outcome: an action settled meanwhile is not parked.
            sent
        }
        Kind::Released => {
            execute(
                t,
                "UPDATE actions SET holder = NULL, epoch = NULL, updated_at = $2
                 WHERE id = ANY($1) AND status IN ('pending', 'parked')
                   AND holder = $3 AND epoch = $4",
                &[&ids, &now, &holder, &epoch],
                recorded,
            )
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::{Attempt, AttemptOutcome, Trigger};

    fn attempt(id: i64) -> Update {
        Update::Attempt {
            id,
            attempt: Box::new(Attempt {
                number: 1,
                trigger: Trigger::Scheduled,
                breaker_state: "closed".into(),
                started_at_ms: 0,
                duration_ms: 0,
                outcome: AttemptOutcome::Success,
                error_kind: None,
                status: Some(200),
                error: None,
                request: None,
                response_headers: Vec::new(),
                response_body: None,
            }),
        }
    }

    fn delivered(id: i64) -> Update {
        Update::Delivered {
            id,
            attempts: 1,
            status: Some(200),
        }
    }

    fn statements(updates: &[Update]) -> usize {
        Batch::of(updates).statements()
    }

    #[test]
    fn attempts_ride_in_the_first_runs_statement_when_it_is_one() {
        assert_eq!(statements(&[]), 0);
        assert_eq!(statements(&[attempt(1)]), 1);
        assert_eq!(
            statements(&[attempt(1), delivered(1), attempt(2), delivered(2)]),
            1,
            "the usual batch: one statement"
        );
        let retry = Update::Retry {
            id: 1,
            attempts: 1,
            not_before_ms: 0,
            error: "HTTP 503".into(),
            status: Some(503),
        };
        assert_eq!(
            statements(&[attempt(1), retry, attempt(2), delivered(2)]),
            2
        );
        let snapshot = Update::Snapshot {
            endpoint: "e".into(),
            snapshot: "{}".into(),
        };
        assert_eq!(
            statements(&[snapshot.clone(), attempt(1), delivered(1)]),
            3,
            "attempts alone, then the snapshots, then the deliveries"
        );
        assert_eq!(statements(&[snapshot, delivered(1)]), 2);
    }
}
