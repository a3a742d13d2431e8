//! The embedded SQLite store.
//!
//! One writer thread owns the write connection and commits whatever has
//! queued up in one transaction (group commit), so intake costs one fsync
//! per batch, not per event. Reads use a second connection (WAL lets them
//! run beside the writer).
//!
//! Durability: WAL with `synchronous = FULL`. A batch is answered only
//! after its commit, so what was answered survives a process kill (the WAL
//! is in the OS) and a power loss (the WAL was fsynced).

mod file;
mod history;
mod queries;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upgrade_tests;
mod writer;

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

pub use self::file::StoreFile;
use self::queries::{
    apply_all, row_to_pending, row_to_record, BACKLOGGED_QUERY, BACKLOGS_QUERY, BACKLOG_LEFT_QUERY,
    BACKLOG_PAGE_QUERY, DEAD_LETTERS_QUERY, EVENT_ACTIONS_QUERY, OLDEST_PENDING_QUERY, PRUNE_QUERY,
    RELEASE_HELD_QUERY,
};
use self::schema::{migrate, open};
use self::writer::{writer, Done, Job, SpecIds};
use super::{
    now_ms, rfc3339, ActionFilter, ActionId, ActionPage, ActionRecord, ActionStatus, AttemptRecord,
    AuditEntry, Backlog, Claimed, DeadLetter, EndpointCounts, EventRecord, Inserted, NewEvent,
    PendingAction, ReplayJob, ReplayState, Store, StoreError, StoreResult, Update,
};

/// SQLite storage (see the [module docs](self)).
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
    file: StoreFile,
    /// This open's number: the owner of the replay jobs it starts (see
    /// [`Store::adopt_replay_jobs`]).
    owner: i64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// A number for this open of the store, owner of the replay jobs its
/// process starts: random, so that a process started again never takes
/// itself for the one that died.
fn job_owner() -> i64 {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    // Positive, and never 0.
    i64::try_from(high >> 1).unwrap_or(i64::MAX).max(1)
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` and releases every claim
    /// (this process now owns all pending work).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the file cannot be opened or migrated.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, true)
    }

    /// Opens the database for a tool (`dlq`) that may run beside a service:
    /// claims are left alone.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the file cannot be opened or migrated.
    pub fn open_shared(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, release_claims: bool) -> StoreResult<Self> {
        let mut conn = open(path)?;
        migrate(&mut conn)?;
        if release_claims {
            // Only waiting actions are ever claimed: read through
            // `actions_by_status`, not the whole table.
            conn.execute(
                "UPDATE actions SET claimed = 0
                 WHERE status <> 'delivered' AND status IN ('pending', 'parked') AND claimed = 1",
                [],
            )?;
        }
        let reader = open(path)?;
        let file = StoreFile::open(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("breakwater-store".into())
            .spawn(move || writer(&mut conn, &rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            reader: Arc::new(Mutex::new(reader)),
            file,
            owner: job_owner(),
        })
    }

    /// Runs `f` in the writer's next transaction; resolves after the commit.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_with_specs(move |t, _| f(t)).await
    }

    /// [`write`](Self::write), with the writer's [`SpecIds`].
    async fn write_with_specs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut SpecIds) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |t, specs| {
            let result = f(t, specs);
            let ok = result.is_ok();
            let done: Done = Box::new(move |committed: Result<(), String>| {
                let out = match (result, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(StoreError::from(e)),
                    (_, Err(e)) => Err(StoreError::Backend(e)),
                };
                let _ = tx.send(out);
            });
            (ok, done)
        });
        {
            let guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            guard
                .as_ref()
                .ok_or(StoreError::Closed)?
                .send(job)
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>> {
        self.write_with_specs(move |t, specs| {
            let now = now_ms();
            let mut out = Vec::with_capacity(events.len());
            // Prepared once a batch: a statement taken from the cache by its
            // text costs a hash of that text each time.
            let mut insert_event = t.prepare_cached(
                "INSERT INTO events (id, body, accepted_at, first_action, last_action,
                                     event_type, entity_type, entity_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO NOTHING",
            )?;
            let mut insert_action = t.prepare_cached(
                "INSERT INTO actions (event, spec, lane, status, not_before, last_error,
                 claimed, accepted_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )?;
            // The ids SQLite will give the actions (the next of the
            // AUTOINCREMENT sequence, one after the other), so that the
            // event row can say which they are when it is stored first.
            let mut next_id: i64 = match specs.next_action.take() {
                Some(next) => next,
                None => t
                    .prepare_cached(
                        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence
                                              WHERE name = 'actions'), 0),
                                    COALESCE((SELECT MAX(id) FROM actions), 0)) + 1",
                    )?
                    .query_row([], |r| r.get(0))?,
            };
            for NewEvent {
                event,
                keys,
                actions,
            } in events
            {
                let n = i64::try_from(actions.len()).unwrap_or(i64::MAX);
                let range = (n > 0).then(|| (next_id, next_id + n - 1));
                let added = insert_event.execute(params![
                    &*event
                        .id()
                        .hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer()),
                    event.json(),
                    now,
                    range.map(|r| r.0),
                    range.map(|r| r.1),
                    keys.event_type,
                    keys.entity_type,
                    keys.entity_id,
                ])?;
                if added == 0 {
                    out.push(Inserted::Duplicate);
                    continue;
                }
                let seq = t.last_insert_rowid();
                let mut pending = Vec::with_capacity(actions.len());
                let mut got = None;
                for a in actions {
                    let (spec, lane) = specs.id(t, &a)?;
                    insert_action.execute(params![
                        seq,
                        spec,
                        lane,
                        a.status().as_str(),
                        a.parked_until_ms()
                            .filter(|_| a.dead_letter_reason().is_none()),
                        a.dead_letter_reason(),
                        a.is_claimed(),
                        now
                    ])?;
                    let id = t.last_insert_rowid();
                    got = Some(got.map_or((id, id), |(first, _)| (first, id)));
                    if !a.is_claimed() {
                        continue;
                    }
                    pending.push(PendingAction {
                        id,
                        event: event.clone(),
                        observer: a.observer().to_string(),
                        endpoint: a.endpoint().to_string(),
                        action: a.action().clone(),
                        attempts: 0,
                        replays: 0,
                        accepted_at_ms: now,
                        not_before_ms: a.parked_until_ms(),
                        parked: a.parked_until_ms().is_some(),
                        size: 0,
                        claim_epoch: 0,
                    });
                }
                if got != range {
                    // Not the ids foreseen (nothing here should make it so):
                    // the event row says which they are.
                    t.prepare_cached(
                        "UPDATE events SET first_action = ?1, last_action = ?2 WHERE seq = ?3",
                    )?
                    .execute(params![
                        got.map(|r| r.0),
                        got.map(|r| r.1),
                        seq
                    ])?;
                }
                next_id = got.map_or(next_id, |(_, last)| last + 1);
                out.push(Inserted::New(pending));
            }
            // Kept only when the job ran to its end (an error above leaves
            // it unset: the next job reads it again).
            specs.next_action = Some(next_id);
            Ok(out)
        })
        .await
    }

    async fn prune_delivered(&self, before_ms: i64, limit: usize) -> StoreResult<u64> {
        self.write(move |t| {
            let seqs: Vec<(i64, Option<i64>, Option<i64>)> = t
                .prepare_cached(PRUNE_QUERY)?
                .query_map(params![before_ms, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            // Each action's attempts go with it.
            let mut attempts = t.prepare_cached(
                "DELETE FROM attempts WHERE action_id IN
                     (SELECT id FROM actions WHERE id BETWEEN ?1 AND ?2 AND event = ?3)",
            )?;
            let mut actions =
                t.prepare_cached("DELETE FROM actions WHERE id BETWEEN ?1 AND ?2 AND event = ?3")?;
            let mut events = t.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
            for (seq, first, last) in &seqs {
                if let (Some(first), Some(last)) = (first, last) {
                    attempts.execute(params![first, last, seq])?;
                    actions.execute(params![first, last, seq])?;
                }
                events.execute(params![seq])?;
            }
            Ok(seqs.len() as u64)
        })
        .await
    }

    async fn claim_backlog(
        &self,
        endpoint: &str,
        limit: usize,
        due_by_ms: i64,
    ) -> StoreResult<Claimed> {
        let endpoint = endpoint.to_string();
        self.write(move |t| {
            let lane: Option<i64> = t
                .prepare_cached("SELECT id FROM lanes WHERE endpoint = ?1")?
                .query_row(params![endpoint], |r| r.get(0))
                .optional()?;
            let Some(lane) = lane else {
                return Ok(Claimed::default());
            };
            let actions: Vec<PendingAction> = t
                .prepare_cached(BACKLOG_PAGE_QUERY)?
                .query_map(params![lane, due_by_ms, limit as i64], row_to_pending)?
                .collect::<Result<_, _>>()?;
            let mut mark = t.prepare_cached("UPDATE actions SET claimed = 1 WHERE id = ?1")?;
            for a in &actions {
                mark.execute(params![a.id])?;
            }
            let more = t
                .prepare_cached(BACKLOG_LEFT_QUERY)?
                .query_row(params![lane, due_by_ms], |r| r.get(0))?;
            Ok(Claimed { actions, more })
        })
        .await
    }

    async fn backlogged_endpoints(&self, due_by_ms: i64) -> StoreResult<Vec<String>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(BACKLOGGED_QUERY)?;
            let rows = stmt
                .query_map(params![due_by_ms], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn backlogs(&self) -> StoreResult<Vec<Backlog>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(BACKLOGS_QUERY)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Backlog {
                        endpoint: r.get(0)?,
                        waiting: r.get::<_, i64>(1)?.max(0) as u64,
                        oldest_ms: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn apply(&self, updates: Vec<Update>) -> StoreResult<()> {
        self.write(move |t| apply_all(t, &updates)).await
    }

    async fn event(&self, id: Uuid) -> StoreResult<Option<EventRecord>> {
        self.read(move |c| {
            let found: Option<(i64, i64, Option<i64>, Option<i64>)> = c
                .query_row(
                    "SELECT seq, accepted_at, first_action, last_action FROM events WHERE id = ?1",
                    params![id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((seq, accepted, first, last)) = found else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(EVENT_ACTIONS_QUERY)?;
            let mut actions: Vec<ActionRecord> = stmt
                .query_map(params![first, last, seq], row_to_record)?
                .collect::<Result<_, _>>()?;
            if let (Some(first), Some(last)) = (first, last) {
                history::fill_attempts(c, &mut actions, first, last)?;
            }
            Ok(Some(EventRecord {
                id,
                accepted_at: rfc3339(accepted),
                actions,
            }))
        })
        .await
    }

    async fn snapshots(&self) -> StoreResult<Vec<(String, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT endpoint, snapshot FROM endpoints WHERE snapshot IS NOT NULL ORDER BY endpoint",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn disabled_endpoints(&self) -> StoreResult<Vec<(String, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT endpoint, COALESCE(disabled_reason, '') FROM endpoints
                 WHERE disabled = 1 ORDER BY endpoint",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn release_held(&self, endpoint: &str) -> StoreResult<u64> {
        let endpoint = endpoint.to_string();
        self.write(move |t| {
            let n = t.execute(RELEASE_HELD_QUERY, params![endpoint, now_ms()])?;
            Ok(n as u64)
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        self.read(move |c| {
            let mut stmt = c.prepare(DEAD_LETTERS_QUERY)?;
            let rows = stmt
                .query_map(params![limit as i64], row_to_record)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn replay_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        self.write(move |t| history::replay_dead_letters(t, ids.as_deref()))
            .await
    }

    async fn purge_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        self.write(move |t| history::purge_dead_letters(t, ids.as_deref()))
            .await
    }

    async fn oldest_pending_ms(&self) -> StoreResult<Option<i64>> {
        self.read(|c| c.query_row(OLDEST_PENDING_QUERY, [], |r| r.get(0)))
            .await
    }

    async fn counts(&self) -> StoreResult<Vec<(ActionStatus, u64)>> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT status, COUNT(*) FROM actions GROUP BY status ORDER BY status")?;
            let rows = stmt
                .query_map([], |r| {
                    let s: String = r.get(0)?;
                    let n: i64 = r.get(1)?;
                    Ok((ActionStatus::parse(&s), n as u64))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    fn check(&self) -> StoreResult<()> {
        self.file.check().map_err(StoreError::Backend)
    }

    async fn actions(
        &self,
        filter: &ActionFilter,
        before: Option<ActionId>,
        limit: usize,
    ) -> StoreResult<ActionPage> {
        let filter = filter.clone();
        self.read(move |c| history::actions(c, &filter, before, limit))
            .await
    }

    async fn count_actions(&self, filter: &ActionFilter) -> StoreResult<u64> {
        let filter = filter.clone();
        self.read(move |c| history::count_actions(c, &filter)).await
    }

    async fn action(&self, id: ActionId) -> StoreResult<Option<ActionRecord>> {
        self.read(move |c| history::action(c, id)).await
    }

    async fn replay_actions(&self, ids: &[ActionId], job: Option<i64>) -> StoreResult<u64> {
        let ids = ids.to_vec();
        self.write(move |t| history::replay_actions(t, &ids, job))
            .await
    }

    async fn purge_actions(&self, ids: &[ActionId]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        self.write(move |t| history::purge_dead_letters(t, Some(&ids)))
            .await
    }

    async fn endpoint_attempts(
        &self,
        endpoint: &str,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let endpoint = endpoint.to_string();
        self.read(move |c| history::endpoint_attempts(c, &endpoint, before, limit))
            .await
    }

    async fn endpoint_counts(&self) -> StoreResult<Vec<EndpointCounts>> {
        self.read(history::endpoint_counts).await
    }

    async fn audit(&self, entry: AuditEntry) -> StoreResult<i64> {
        self.write(move |t| history::audit(t, &entry)).await
    }

    async fn audit_log(&self, before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |c| history::audit_log(c, before, limit))
            .await
    }

    async fn create_replay_job(
        &self,
        filter: &ActionFilter,
        actor: &str,
        total: u64,
        adoptable: bool,
    ) -> StoreResult<ReplayJob> {
        let (filter, actor) = (filter.clone(), actor.to_string());
        let owner = adoptable.then_some(self.owner);
        self.write(move |t| history::create_replay_job(t, &filter, &actor, total, owner))
            .await
    }

    async fn update_replay_job(
        &self,
        id: i64,
        replayed: u64,
        cursor: Option<ActionId>,
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<Option<ReplayState>> {
        let progress = history::JobProgress {
            replayed,
            cursor,
            state,
            error,
        };
        let owner = self.owner;
        self.write(move |t| history::update_replay_job(t, id, owner, &progress))
            .await?
            .ok_or_else(|| StoreError::Backend(format!("there is no replay job {id}")))
    }

    async fn adopt_replay_jobs(&self) -> StoreResult<Vec<ReplayJob>> {
        let owner = self.owner;
        if !self
            .read(move |c| history::any_orphan_job(c, owner))
            .await?
        {
            return Ok(Vec::new());
        }
        self.write(move |t| history::adopt_replay_jobs(t, owner))
            .await
    }

    async fn cancel_replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>> {
        self.write(move |t| history::cancel_replay_job(t, id))
            .await?;
        self.replay_job(id).await
    }

    async fn replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>> {
        self.read(move |c| history::replay_job(c, id)).await
    }

    async fn replay_jobs(&self, limit: usize) -> StoreResult<Vec<ReplayJob>> {
        self.read(move |c| history::replay_jobs(c, limit)).await
    }

    async fn close(&self) {
        let sender = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(sender);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
