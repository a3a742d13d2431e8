//! Inserts: events and their actions in one statement, concurrent callers'
//! jobs gathered into one statement and one commit (the group commit of
//! the SQLite writer, for Postgres), action ids drawn a block at a time.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::{lock, queries, PostgresStore};
use crate::store::NewAction;
use crate::store::{now_ms, Inserted, NewEvent, PendingAction, StoreError, StoreResult};

/// At most this many events go in one insert statement.
const INSERT_BATCH: usize = 2_000;

/// Writers of queued inserts at once (statements in flight).
pub(super) const INSERT_WRITERS: usize = 2;

/// A caller's events waiting to be written, and where its answer goes.
pub(super) struct InsertJob {
    pub(super) events: Vec<NewEvent>,
    pub(super) done: tokio::sync::oneshot::Sender<StoreResult<Vec<Inserted>>>,
}

/// How many times an insert rolled back by a deadlock is tried again.
const DEADLOCK_RETRIES: usize = 3;

/// Whether `e` is Postgres rolling the statement back to break a deadlock
/// (or a serialization failure, which is retried the same way).
fn is_deadlock(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// How many action ids a draw from the `action_ids` sequence gives (its
/// increment).
const ID_BLOCK: i64 = 1000;

impl PostgresStore {
    /// `n` new action ids, ascending: from this instance's block, drawing
    /// new blocks of a thousand from the `action_ids` sequence as needed.
    async fn action_ids(&self, client: &tokio_postgres::Client, n: usize) -> StoreResult<Vec<i64>> {
        let mut out = Vec::with_capacity(n);
        loop {
            {
                let mut block = lock(&self.ids);
                while out.len() < n && block.start < block.end {
                    out.push(block.start);
                    block.start += 1;
                }
            }
            if out.len() == n {
                return Ok(out);
            }
            let blocks = (n - out.len()).div_ceil(ID_BLOCK as usize) as i64;
            let rows = self.note(
                client
                    .query(
                        "SELECT nextval('action_ids') FROM generate_series(1, $1::int8)",
                        &[&blocks],
                    )
                    .await,
            )?;
            let mut starts: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            starts.sort_unstable();
            // All but the last block go to this batch; the last one is kept.
            let last = starts.pop().unwrap_or(0);
            for s in starts {
                out.extend(s..s + ID_BLOCK);
            }
            *lock(&self.ids) = last..last + ID_BLOCK;
        }
    }

    /// The number of `endpoint`, made when new.
    async fn lane(&self, client: &tokio_postgres::Client, endpoint: &str) -> StoreResult<i32> {
        if let Some(l) = lock(&self.lanes).get(endpoint) {
            return Ok(*l);
        }
        // Made by another instance at the same moment, the row is not in
        // this statement's snapshot: the next statement sees it.
        let mut row = None;
        for _ in 0..3 {
            row = self.note(
                client
                    .query_opt(
                        "WITH new AS (
                            INSERT INTO endpoints (endpoint) VALUES ($1)
                            ON CONFLICT (endpoint) DO NOTHING RETURNING lane)
                         SELECT lane FROM new UNION ALL
                         SELECT lane FROM endpoints WHERE endpoint = $1 LIMIT 1",
                        &[&endpoint],
                    )
                    .await,
            )?;
            if row.is_some() {
                break;
            }
        }
        let row = row.ok_or_else(|| {
            StoreError::Backend(format!("the endpoint {endpoint} could not be numbered"))
        })?;
        let lane: i32 = row.get(0);
        lock(&self.lanes).insert(endpoint.into(), lane);
        Ok(lane)
    }

    /// The spec id and endpoint number of `action`, made when new.
    async fn spec(
        &self,
        client: &tokio_postgres::Client,
        action: &NewAction,
    ) -> StoreResult<(i32, i32)> {
        let (observer, json) = action.shared();
        let key = (observer.clone(), json.clone());
        if let Some(s) = lock(&self.specs).get(&key) {
            return Ok(*s);
        }
        let lane = self.lane(client, action.endpoint()).await?;
        let mut row = None;
        for _ in 0..3 {
            row = self.note(
                client
                    .query_opt(
                        "WITH d AS (SELECT md5(length($1::text) || ':' || $1 || $2::text) AS digest),
                         new AS (
                            INSERT INTO action_specs (digest, observer, endpoint, action_type, action, lane)
                            SELECT d.digest, $1, $3, $4, $2, $5 FROM d
                            ON CONFLICT (digest) DO NOTHING RETURNING id)
                         SELECT id FROM new UNION ALL
                         SELECT s.id FROM action_specs s, d WHERE s.digest = d.digest LIMIT 1",
                        &[
                            &action.observer(),
                            &action.json(),
                            &action.endpoint(),
                            &action.action().action_type(),
                            &lane,
                        ],
                    )
                    .await,
            )?;
            if row.is_some() {
                break;
            }
        }
        let row = row.ok_or_else(|| {
            StoreError::Backend(format!(
                "the action of observer {} could not be stored",
                action.observer()
            ))
        })?;
        let spec = (row.get::<_, i32>(0), lane);
        lock(&self.specs).insert(key, spec);
        Ok(spec)
    }

    /// Stores `events` in one statement (see [`Store::insert`](crate::store::Store::insert)).
    async fn insert_now(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>> {
        let client = self.client().await?;
        // Specs and endpoint numbers first, outside the transaction (each
        // is made once and kept).
        let mut specs = Vec::new();
        for e in &events {
            for a in &e.actions {
                specs.push(self.spec(&client, a).await?);
            }
        }
        let now = now_ms();
        let (instance, epoch) = (self.lease.instance.as_str(), self.lease.epoch());
        // One event of each id: a second of the same id in the batch is a
        // duplicate, as one stored before.
        let mut first = HashSet::with_capacity(events.len());
        let firsts: Vec<bool> = events.iter().map(|e| first.insert(e.event.id())).collect();
        let mut event_rows = queries::EventColumns::default();
        for (e, _) in events.iter().zip(&firsts).filter(|(_, f)| **f) {
            event_rows.push(e);
        }
        let wanted: usize = events
            .iter()
            .zip(&firsts)
            .filter(|(_, f)| **f)
            .map(|(e, _)| e.actions.len())
            .sum();
        let mut next = self.action_ids(&client, wanted).await?.into_iter();
        let mut cols = queries::ActionColumns::default();
        let mut pending_of = Vec::with_capacity(events.len());
        let mut spec_at = 0;
        for (e, is_first) in events.iter().zip(&firsts) {
            let specs_of = &specs[spec_at..spec_at + e.actions.len()];
            spec_at += e.actions.len();
            if !is_first {
                pending_of.push(Vec::new());
                continue;
            }
            let mut pending = Vec::new();
            for (a, (spec, lane)) in e.actions.iter().zip(specs_of) {
                let id = next
                    .next()
                    .ok_or_else(|| StoreError::Backend("fewer action ids than actions".into()))?;
                let claimed = a.is_claimed();
                cols.push(
                    id,
                    e.event.id(),
                    *spec,
                    *lane,
                    a,
                    claimed.then_some((instance, epoch)),
                );
                if claimed {
                    pending.push(PendingAction {
                        id,
                        event: e.event.clone(),
                        observer: a.observer().to_string(),
                        endpoint: a.endpoint().to_string(),
                        action: a.action().clone(),
                        attempts: 0,
                        replays: 0,
                        accepted_at_ms: now,
                        not_before_ms: a.parked_until_ms(),
                        parked: a.parked_until_ms().is_some(),
                        size: 0,
                        claim_epoch: epoch,
                    });
                }
            }
            pending_of.push(pending);
        }
        // The events and their actions in one statement (one round trip,
        // one commit): the actions of events already stored are left out.
        // Writers inserting the same ids at once take the unique index's
        // locks in id order (the statement sorts), so they cannot deadlock
        // one another; a deadlock with some other statement rolls this one
        // back whole, and it is tried again.
        let mut tries = 0;
        let added: HashSet<Uuid> = loop {
            match cols.insert_with_events(&client, &event_rows, now).await {
                Ok(ids) => break ids.into_iter().collect(),
                Err(e) if tries < DEADLOCK_RETRIES && is_deadlock(&e) => {
                    tries += 1;
                    tracing::debug!(
                        tries,
                        "an insert met a deadlock and was rolled back; trying again"
                    );
                }
                Err(e) => return Err(self.note::<()>(Err(e)).unwrap_err()),
            }
        };
        self.down.store(false, Ordering::Relaxed);
        Ok(events
            .iter()
            .zip(firsts)
            .zip(pending_of)
            .map(|((e, is_first), pending)| {
                if is_first && added.contains(&e.event.id()) {
                    Inserted::New(pending)
                } else {
                    Inserted::Duplicate
                }
            })
            .collect())
    }

    /// Writes the queued inserts, all the jobs waiting (up to
    /// [`INSERT_BATCH`] events) in one statement, while this caller holds
    /// one of the writers' places; callers that find both places taken
    /// wait for a writer to take their job. Under load, concurrent
    /// requests share statements and commits, as the SQLite writer's group
    /// commit does.
    pub(super) async fn write_inserts(&self) {
        loop {
            let Ok(_place) = self.writers.try_acquire() else {
                return;
            };
            loop {
                let jobs = {
                    let mut queue = lock(&self.inserts);
                    let mut jobs = Vec::new();
                    let mut n = 0;
                    while let Some(job) = queue.front() {
                        if n > 0 && n + job.events.len() > INSERT_BATCH {
                            break;
                        }
                        n += job.events.len();
                        jobs.extend(queue.pop_front());
                    }
                    jobs
                };
                if jobs.is_empty() {
                    break;
                }
                let counts: Vec<usize> = jobs.iter().map(|j| j.events.len()).collect();
                let mut all = Vec::with_capacity(counts.iter().sum());
                let mut replies = Vec::with_capacity(jobs.len());
                for job in jobs {
                    all.extend(job.events);
                    replies.push(job.done);
                }
                match self.insert_now(all).await {
                    Ok(inserted) => {
                        let mut inserted = inserted.into_iter();
                        for (reply, n) in replies.into_iter().zip(counts) {
                            let _ = reply.send(Ok(inserted.by_ref().take(n).collect()));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
            drop(_place);
            // A job queued after the last look, by a caller that found
            // this place still taken: written by the next turn.
            if lock(&self.inserts).is_empty() {
                return;
            }
        }
    }
}
