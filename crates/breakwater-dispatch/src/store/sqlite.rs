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

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use breakwater::traits::{ActionConfig, EntityEvent};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    ActionId, ActionRecord, ActionStatus, DeadLetter, EventRecord, Inserted, NewAction, NewEvent,
    PendingAction, Store, StoreError, StoreResult, Update,
};

/// The most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write: run in the batch's transaction, it says whether it succeeded,
/// and what to do once the batch is committed or undone.
type Job = Box<dyn FnOnce(&Transaction<'_>, &mut SpecIds) -> (bool, Done) + Send>;

/// SQLite storage (see the [module docs](self)).
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// The schema's version, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 5;

/// Version 5. An event row holds the ids of its first and last actions
/// (an event's actions are stored together, so their ids follow each
/// other): its actions are found by a range of the actions' own key rather
/// than through an index on `actions(event)`, one index fewer to keep up for
/// every action stored.
/// Version 4. An action row points at its observer and action, kept once in
/// `action_specs`, rather than holding their text: a configured action is
/// the same for every event, and its text was a third of what storing an
/// event wrote.
/// Version 3. Every index but the event ids' grows at its end: actions point
/// at their event by its sequence number, not by its random id, so that
/// storing an event touches one page at a random place rather than two.
/// Version 2 added `events_by_time`, so that removing old delivered events
/// reads only the old ones. Version 3 keeps delivered actions out of
/// `actions_by_status`: marking an action delivered only removes its entry,
/// and the index holds the work left rather than every action ever stored.
/// A query reads through it only when its `WHERE` says
/// `status <> 'delivered'` word for word (SQLite's rule for partial indexes),
/// so every query by status does. (Each statement creates only what is
/// missing: [`migrate`] drops an older `actions_by_status` first.)
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    first_action INTEGER,
    last_action INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(accepted_at);
CREATE TABLE IF NOT EXISTS action_specs (
    id INTEGER PRIMARY KEY,
    observer TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    action_type TEXT NOT NULL,
    action TEXT NOT NULL,
    UNIQUE (observer, endpoint, action_type, action)
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event INTEGER NOT NULL REFERENCES events(seq),
    spec INTEGER NOT NULL REFERENCES action_specs(id),
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before INTEGER,
    last_error TEXT,
    last_status INTEGER,
    claimed INTEGER NOT NULL DEFAULT 0,
    accepted_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_status ON actions(status, claimed, id)
    WHERE status <> 'delivered';
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint TEXT PRIMARY KEY,
    snapshot TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT
);
";

/// The oldest events accepted before `?1` with nothing left to deliver (an
/// event without actions has none), at most `?2`, with the range of their
/// actions' ids; read through `events_by_time`, so only events older than
/// `?1` are looked at.
const PRUNE_QUERY: &str = "
SELECT e.seq, e.first_action, e.last_action FROM events e
WHERE e.accepted_at < ?1
  AND NOT EXISTS (SELECT 1 FROM actions a
                  WHERE a.id BETWEEN e.first_action AND e.last_action
                    AND a.event = e.seq AND a.status <> 'delivered')
ORDER BY e.accepted_at LIMIT ?2";

/// The oldest pending and parked actions not claimed, at most `?1`, with
/// their events.
const CLAIM_QUERY: &str = "
SELECT a.id, s.observer, s.endpoint, s.action, a.attempts, a.not_before,
       a.accepted_at, a.status, e.body
FROM actions a JOIN events e ON e.seq = a.event JOIN action_specs s ON s.id = a.spec
WHERE a.status <> 'delivered' AND a.status IN ('pending', 'parked') AND a.claimed = 0
ORDER BY a.id LIMIT ?1";

/// Makes the actions held for endpoint `?1` pending again, at time `?2`.
const RELEASE_HELD_QUERY: &str = "
UPDATE actions SET status = 'pending', claimed = 0, not_before = NULL, updated_at = ?2
WHERE status <> 'delivered' AND status = 'held'
  AND spec IN (SELECT id FROM action_specs WHERE endpoint = ?1)";

/// The first `?1` dead-lettered actions.
const DEAD_LETTERS_QUERY: &str = "
SELECT a.id, e.id AS event_id, s.observer, s.action_type, s.endpoint, a.status,
       a.attempts, a.not_before, a.last_error, a.last_status
FROM actions a JOIN events e ON e.seq = a.event JOIN action_specs s ON s.id = a.spec
WHERE a.status <> 'delivered' AND a.status = 'dead_lettered'
ORDER BY a.id LIMIT ?1";

/// When the oldest action still to be delivered was accepted.
const OLDEST_PENDING_QUERY: &str = "
SELECT MIN(accepted_at) FROM actions
WHERE status <> 'delivered' AND status IN ('pending', 'parked', 'held')";

/// From version 0 (actions keyed their event by its id) to version 1, in
/// one transaction: every event and action is kept, ids included.
const MIGRATE_0_TO_1: &str = "
ALTER TABLE actions RENAME TO actions_v0;
ALTER TABLE events RENAME TO events_v0;
DROP INDEX IF EXISTS actions_by_status;
DROP INDEX IF EXISTS actions_by_event;
";

/// Copies version 0's events into the current table (created in between)
/// and its actions into `actions_v3`, as a version-3 file holds them (their
/// id sequence with them), for [`COPY_3`] to finish.
const COPY_0_TO_3: &str = "
INSERT INTO events (seq, id, body, accepted_at)
    SELECT rowid, id, body, accepted_at FROM events_v0 ORDER BY rowid;
CREATE TABLE actions_v3 AS
    SELECT a.id, e.rowid AS event, a.observer, a.endpoint, a.action_type, a.action, a.status,
           a.attempts, a.not_before, a.last_error, a.last_status, a.claimed, a.accepted_at,
           a.updated_at
    FROM actions_v0 a JOIN events_v0 e ON e.id = a.event_id ORDER BY a.id;
UPDATE sqlite_sequence SET name = 'actions_v3' WHERE name = 'actions_v0';
DROP TABLE actions_v0;
DROP TABLE events_v0;
";

/// From versions 1 to 3 (each action row held its observer and action) to
/// version 4, in one transaction with [`COPY_3`].
const MIGRATE_3_TO_4: &str = "
ALTER TABLE actions RENAME TO actions_v3;
DROP INDEX IF EXISTS actions_by_status;
DROP INDEX IF EXISTS actions_by_event;
";

/// Copies version 3's actions into version 4's tables (created in
/// between), ids and the id sequence included.
const COPY_3: &str = "
INSERT INTO action_specs (observer, endpoint, action_type, action)
    SELECT observer, endpoint, action_type, action FROM actions_v3
    GROUP BY observer, endpoint, action_type, action ORDER BY MIN(id);
INSERT INTO actions (id, event, spec, status, attempts, not_before, last_error, last_status,
                     claimed, accepted_at, updated_at)
    SELECT a.id, a.event, s.id, a.status, a.attempts, a.not_before, a.last_error,
           a.last_status, a.claimed, a.accepted_at, a.updated_at
    FROM actions_v3 a
    JOIN action_specs s ON s.observer = a.observer AND s.endpoint = a.endpoint
        AND s.action_type = a.action_type AND s.action = a.action
    ORDER BY a.id;
DELETE FROM sqlite_sequence WHERE name = 'actions';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'actions', seq FROM sqlite_sequence WHERE name = 'actions_v3';
DELETE FROM sqlite_sequence WHERE name = 'actions_v3';
DROP TABLE actions_v3;
";

/// From versions before 5: each event's range of action ids, from its
/// actions (one pass over them, sorted by event), and the index on
/// `actions(event)` that the ranges replace.
const FILL_RANGES: &str = "
UPDATE events SET first_action = r.first, last_action = r.last
FROM (SELECT event, MIN(id) AS first, MAX(id) AS last FROM actions GROUP BY event) AS r
WHERE r.event = events.seq;
DROP INDEX IF EXISTS actions_by_event;
";

/// Creates the schema, or brings an older one up to date.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {version}, newer than this binary's \
             ({SCHEMA_VERSION}): run a newer breakwater"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let t = conn.transaction()?;
    let old_events: bool = t.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'id')
            AND NOT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'seq')",
        [],
        |r| r.get(0),
    )?;
    // Versions 1 to 3 kept each action's observer and action in its row.
    let text_actions: bool = t.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('actions') WHERE name = 'observer')",
        [],
        |r| r.get(0),
    )?;
    // A file with tables of its own, not a new one.
    let upgrading = version > 0 || old_events;
    let started = std::time::Instant::now();
    if upgrading {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "bringing the store's schema up to date (one transaction; every row is kept)"
        );
    }
    if old_events {
        t.execute_batch(MIGRATE_0_TO_1)?;
        t.execute_batch(SCHEMA)?;
        t.execute_batch(COPY_0_TO_3)?;
        t.execute_batch(COPY_3)?;
    } else if text_actions {
        t.execute_batch(MIGRATE_3_TO_4)?;
        t.execute_batch(SCHEMA)?;
        t.execute_batch(COPY_3)?;
    } else {
        if version < 3 {
            t.execute_batch("DROP INDEX IF EXISTS actions_by_status;")?;
        }
        t.execute_batch(SCHEMA)?;
    }
    // Versions 1 to 4 kept their events table: it gets the range columns.
    let ranged: bool = t.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'first_action')",
        [],
        |r| r.get(0),
    )?;
    if !ranged {
        t.execute_batch(
            "ALTER TABLE events ADD COLUMN first_action INTEGER;
             ALTER TABLE events ADD COLUMN last_action INTEGER;",
        )?;
    }
    t.execute_batch(FILL_RANGES)?;
    t.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    t.commit()?;
    if upgrading {
        tracing::info!(
            to = SCHEMA_VERSION,
            took_ms = started.elapsed().as_millis() as u64,
            "the store's schema is up to date"
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The page size of a new file. Each commit writes every page it touched
/// to the WAL, one write a page: pages of 8 KiB take 30% fewer writes than
/// SQLite's 4 KiB for the same events, and the writer's CPU an event about
/// 5% less. A file keeps the page size it was created with.
const PAGE_SIZE: i64 = 8192;

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Before WAL mode: only an empty file takes a new page size.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The references are declared, so `PRAGMA foreign_key_check` can check
    // a file, but not enforced at each write: only the writer writes rows,
    // an event's actions go in with it in one transaction and leave before
    // it, and enforcing cost about 5% of the writer's instructions (two
    // lookups for each action stored). The tests check the references.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
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
            conn.execute("UPDATE actions SET claimed = 0 WHERE claimed = 1", [])?;
        }
        let reader = open(path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("breakwater-store".into())
            .spawn(move || writer(&mut conn, &rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            reader: Arc::new(Mutex::new(reader)),
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

/// The most action specs [`SpecIds`] remembers; past it, it starts again.
const MAX_SPECS: usize = 4096;

/// The `action_specs` ids of the actions the writer has stored, known by the
/// address of their shared observer name and JSON ([`NewAction::shared`]):
/// the engine makes each configured action once and clones it for every
/// event, so after its first event an action's spec costs a hash lookup,
/// not a query comparing its text.
///
/// It holds a clone of both, so no other text can take their address while
/// it remembers them. An action made anew for every event (as callers of
/// [`NewAction::new`] may) is looked up by its text each time, and a spec
/// is found, not stored twice.
///
/// It also remembers the id the next action stored will get, so that an
/// event row can name its actions before they are stored.
///
/// [`NewAction::shared`]: super::NewAction
#[derive(Default)]
struct SpecIds {
    by_address: HashMap<(usize, usize), KnownSpec>,
    /// The id SQLite gives the next action stored, once read; forgotten
    /// with the rest when a commit fails or a job stops half way.
    next_action: Option<i64>,
}

/// A spec's id, and the texts whose addresses name it, held.
struct KnownSpec {
    id: i64,
    _held: (Arc<str>, Arc<str>),
}

impl SpecIds {
    /// The id of `action`'s spec, stored first if it is new.
    fn id(&mut self, t: &Transaction<'_>, action: &NewAction) -> rusqlite::Result<i64> {
        let (observer, json) = action.shared();
        let key = (
            Arc::as_ptr(observer).cast::<u8>() as usize,
            Arc::as_ptr(json).cast::<u8>() as usize,
        );
        if let Some(known) = self.by_address.get(&key) {
            return Ok(known.id);
        }
        let text = params![
            action.observer(),
            action.endpoint(),
            action.action().action_type(),
            action.json()
        ];
        let found: Option<i64> = t
            .prepare_cached(
                "SELECT id FROM action_specs
                 WHERE observer = ?1 AND endpoint = ?2 AND action_type = ?3 AND action = ?4",
            )?
            .query_row(text, |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                t.prepare_cached(
                    "INSERT INTO action_specs (observer, endpoint, action_type, action)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(text)?;
                t.last_insert_rowid()
            }
        };
        if self.by_address.len() >= MAX_SPECS {
            self.by_address.clear();
        }
        let held = (observer.clone(), json.clone());
        self.by_address.insert(key, KnownSpec { id, _held: held });
        Ok(id)
    }
}

fn writer(conn: &mut Connection, rx: &mpsc::Receiver<Job>) {
    let mut specs = SpecIds::default();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin a transaction");
                continue;
            }
        };
        let mut failed = false;
        let done: Vec<Done> = jobs
            .into_iter()
            .map(|j| {
                let (ok, done) = j(&tx, &mut specs);
                failed |= !ok;
                done
            })
            .collect();
        // A job that failed half way (say, the disk filled while it stored
        // an event's second action) may have left some of its rows: the
        // whole batch is undone rather than commit an event without its
        // actions, which a retry of the event would then find stored. Every
        // job of the batch reports the failure.
        let committed = if failed {
            tracing::error!("a write failed: its batch is undone");
            if let Err(e) = tx.rollback() {
                tracing::error!(error = %e, "undoing a failed batch failed");
            }
            Err("a write in the same batch failed; the batch was undone".to_string())
        } else {
            tx.commit().map_err(|e| {
                tracing::error!(error = %e, "commit failed");
                e.to_string()
            })
        };
        if committed.is_err() {
            // Specs (and the next action id) of the lost transaction are
            // gone with it.
            specs = SpecIds::default();
        }
        for d in done {
            d(committed.clone());
        }
    }
}

fn row_to_pending(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingAction> {
    let body: String = row.get("body")?;
    let action: String = row.get("action")?;
    let event: EntityEvent = serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let action: ActionConfig = serde_json::from_str(&action).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(PendingAction {
        id: row.get("id")?,
        event: Arc::new(event),
        observer: row.get("observer")?,
        endpoint: row.get("endpoint")?,
        action: Arc::new(action),
        attempts: row.get("attempts")?,
        accepted_at_ms: row.get("accepted_at")?,
        not_before_ms: row.get("not_before")?,
        parked: row.get::<_, String>("status")? == "parked",
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRecord> {
    let event_id: String = row.get("event_id")?;
    let status: String = row.get("status")?;
    let not_before: Option<i64> = row.get("not_before")?;
    let status = ActionStatus::parse(&status);
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
    })
}

fn id_filter(ids: &Option<Vec<ActionId>>) -> String {
    match ids {
        None => String::new(),
        Some(ids) => format!(
            " AND id IN ({})",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ),
    }
}

/// The statement of `u`'s kind.
fn update_sql(u: &Update) -> &'static str {
    match u {
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
fn apply_all(t: &Transaction<'_>, updates: &[Update]) -> rusqlite::Result<()> {
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
            Update::EndpointDisabled {
                endpoint,
                disabled,
                reason,
            } => stmt.execute(params![endpoint, disabled, reason])?,
        };
    }
    Ok(())
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
                "INSERT INTO events (id, body, accepted_at, first_action, last_action)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO NOTHING",
            )?;
            let mut insert_action = t.prepare_cached(
                "INSERT INTO actions (event, spec, status, not_before, claimed, accepted_at,
                 updated_at)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
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
            for NewEvent { event, actions } in events {
                let body = serde_json::to_string(&event).unwrap_or_default();
                let n = i64::try_from(actions.len()).unwrap_or(i64::MAX);
                let range = (n > 0).then(|| (next_id, next_id + n - 1));
                let added = insert_event.execute(params![
                    &*event
                        .id
                        .hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer()),
                    body,
                    now,
                    range.map(|r| r.0),
                    range.map(|r| r.1),
                ])?;
                if added == 0 {
                    out.push(Inserted::Duplicate);
                    continue;
                }
                let seq = t.last_insert_rowid();
                let event = Arc::new(event);
                let mut pending = Vec::with_capacity(actions.len());
                let mut got = None;
                for a in actions {
                    insert_action.execute(params![
                        seq,
                        specs.id(t, &a)?,
                        if a.parked_until_ms().is_some() {
                            "parked"
                        } else {
                            "pending"
                        },
                        a.parked_until_ms(),
                        now
                    ])?;
                    let id = t.last_insert_rowid();
                    got = Some(got.map_or((id, id), |(first, _)| (first, id)));
                    pending.push(PendingAction {
                        id,
                        event: event.clone(),
                        observer: a.observer().to_string(),
                        endpoint: a.endpoint().to_string(),
                        action: a.action().clone(),
                        attempts: 0,
                        accepted_at_ms: now,
                        not_before_ms: a.parked_until_ms(),
                        parked: a.parked_until_ms().is_some(),
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
            let mut actions =
                t.prepare_cached("DELETE FROM actions WHERE id BETWEEN ?1 AND ?2 AND event = ?3")?;
            let mut events = t.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
            for (seq, first, last) in &seqs {
                if let (Some(first), Some(last)) = (first, last) {
                    actions.execute(params![first, last, seq])?;
                }
                events.execute(params![seq])?;
            }
            Ok(seqs.len() as u64)
        })
        .await
    }

    async fn claim(&self, limit: usize) -> StoreResult<Vec<PendingAction>> {
        self.write(move |t| {
            let mut stmt = t.prepare_cached(CLAIM_QUERY)?;
            let rows: Vec<PendingAction> = stmt
                .query_map(params![limit as i64], row_to_pending)?
                .collect::<Result<_, _>>()?;
            let mut mark = t.prepare_cached("UPDATE actions SET claimed = 1 WHERE id = ?1")?;
            for r in &rows {
                mark.execute(params![r.id])?;
            }
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
            let mut stmt = c.prepare_cached(
                "SELECT a.id, e.id AS event_id, s.observer, s.action_type, s.endpoint, a.status,
                        a.attempts, a.not_before, a.last_error, a.last_status
                 FROM actions a JOIN events e ON e.seq = a.event
                 JOIN action_specs s ON s.id = a.spec
                 WHERE a.id BETWEEN ?1 AND ?2 AND a.event = ?3 ORDER BY a.id",
            )?;
            let actions = stmt
                .query_map(params![first, last, seq], row_to_record)?
                .collect::<Result<_, _>>()?;
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
        self.write(move |t| {
            let sql = format!(
                "UPDATE actions SET status = 'pending', attempts = 0, claimed = 0,
                 not_before = NULL, updated_at = ?1
                 WHERE status <> 'delivered' AND status = 'dead_lettered'{}",
                id_filter(&ids)
            );
            Ok(t.execute(&sql, params![now_ms()])? as u64)
        })
        .await
    }

    async fn purge_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        self.write(move |t| {
            let sql = format!(
                "DELETE FROM actions WHERE status <> 'delivered' AND status = 'dead_lettered'{}",
                id_filter(&ids)
            );
            Ok(t.execute(&sql, [])? as u64)
        })
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

    async fn close(&self) {
        let sender = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(sender);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater::traits::{EventKind, LogAction};

    fn event() -> EntityEvent {
        EntityEvent::new(
            EventKind::Insert,
            "Order",
            Uuid::new_v4(),
            serde_json::json!({"n": 1}),
        )
    }

    fn log_action() -> NewAction {
        NewAction::new(
            "o",
            ActionConfig::Log(LogAction {
                level: "info".into(),
                message_template: None,
            }),
        )
    }

    #[tokio::test]
    async fn insert_is_idempotent_by_event_id_and_claims_survive_reopen_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let e = event();
        let first = store
            .insert(vec![NewEvent {
                event: e.clone(),
                actions: vec![log_action(), log_action()],
            }])
            .await
            .unwrap();
        assert!(matches!(&first[0], Inserted::New(a) if a.len() == 2));
        let again = store
            .insert(vec![NewEvent {
                event: e.clone(),
                actions: vec![log_action()],
            }])
            .await
            .unwrap();
        assert!(matches!(again[0], Inserted::Duplicate));
        // Claimed at insert: nothing more to claim.
        assert!(store.claim(10).await.unwrap().is_empty());
        let Inserted::New(actions) = &first[0] else {
            unreachable!()
        };
        store
            .apply(vec![Update::Delivered {
                id: actions[0].id,
                attempts: 1,
                status: Some(200),
            }])
            .await
            .unwrap();
        store.close().await;
        // A restart releases the claims: the undelivered action comes back.
        let store = SqliteStore::open(&path).unwrap();
        let back = store.claim(10).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].id, actions[1].id);
        assert_eq!(back[0].event.id, e.id);
        let rec = store.event(e.id).await.unwrap().unwrap();
        assert_eq!(rec.actions[0].status, ActionStatus::Delivered);
        assert_eq!(rec.actions[1].status, ActionStatus::Pending);
        store.close().await;
    }

    #[tokio::test]
    async fn an_action_parked_at_intake_is_stored_parked_with_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = SqliteStore::open(&path).unwrap();
        let e = event();
        let until = now_ms() + 60_000;
        let stored = store
            .insert(vec![NewEvent {
                event: e.clone(),
                actions: vec![log_action().parked_until(until), log_action()],
            }])
            .await
            .unwrap();
        let Inserted::New(actions) = &stored[0] else {
            panic!("not stored")
        };
        assert!(actions[0].parked);
        assert_eq!(actions[0].not_before_ms, Some(until));
        assert!(!actions[1].parked);
        assert_eq!(actions[1].not_before_ms, None);
        let rec = store.event(e.id).await.unwrap().unwrap();
        assert_eq!(rec.actions[0].status, ActionStatus::Parked);
        assert_eq!(rec.actions[0].not_before, Some(rfc3339(until)));
        assert_eq!(rec.actions[1].status, ActionStatus::Pending);
        store.close().await;
        // After a restart it comes back parked, with its time.
        let store = SqliteStore::open(&path).unwrap();
        let back = store.claim(10).await.unwrap();
        assert_eq!(back.len(), 2);
        assert!(back[0].parked);
        assert_eq!(back[0].not_before_ms, Some(until));
        assert!(!back[1].parked);
        store.close().await;
    }

    /// Every reference between rows holds (they are declared, not
    /// enforced at each write).
    fn assert_references_hold(path: &Path) {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let broken: Vec<(String, i64, String)> = c
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(broken.is_empty(), "rows pointing at nothing: {broken:?}");
    }

    #[test]
    #[should_panic(expected = "rows pointing at nothing")]
    fn a_broken_reference_is_found_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        drop(SqliteStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        // As the store writes: declared, not enforced.
        c.pragma_update(None, "foreign_keys", "OFF").unwrap();
        c.execute(
            "INSERT INTO actions (event, spec, status, accepted_at, updated_at)
             VALUES (42, 7, 'pending', 0, 0)",
            [],
        )
        .unwrap();
        assert_references_hold(&path);
    }

    #[tokio::test]
    async fn old_delivered_events_are_pruned_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).unwrap();
        let [delivered, half, dead, bare, recent] = [event(), event(), event(), event(), event()];
        let mut ids = Vec::new();
        for (e, n) in [
            (&delivered, 1),
            (&half, 2),
            (&dead, 1),
            (&bare, 0),
            (&recent, 1),
        ] {
            let stored = store
                .insert(vec![NewEvent {
                    event: e.clone(),
                    actions: vec![log_action(); n],
                }])
                .await
                .unwrap();
            let Inserted::New(actions) = &stored[0] else {
                panic!("not stored")
            };
            ids.push(actions.iter().map(|a| a.id).collect::<Vec<_>>());
        }
        let done = |id| Update::Delivered {
            id,
            attempts: 1,
            status: Some(200),
        };
        store
            .apply(vec![
                done(ids[0][0]),
                done(ids[1][0]),
                Update::DeadLetter {
                    id: ids[2][0],
                    attempts: 1,
                    error: "HTTP 400".into(),
                    status: Some(400),
                },
                done(ids[4][0]),
            ])
            .await
            .unwrap();
        // All but the last were accepted long ago.
        {
            let c = Connection::open(&path).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            for e in [&delivered, &half, &dead, &bare] {
                c.execute(
                    "UPDATE events SET accepted_at = 1000 WHERE id = ?1",
                    params![e.id.to_string()],
                )
                .unwrap();
            }
        }
        let cutoff = now_ms() - 3_600_000;
        // In batches of one: the fully delivered event, the one without
        // actions, then nothing.
        assert_eq!(store.prune_delivered(cutoff, 1).await.unwrap(), 1);
        assert_eq!(store.prune_delivered(cutoff, 1).await.unwrap(), 1);
        assert_eq!(store.prune_delivered(cutoff, 10).await.unwrap(), 0);
        assert!(store.event(delivered.id).await.unwrap().is_none());
        assert!(store.event(bare.id).await.unwrap().is_none());
        for kept in [&half, &dead, &recent] {
            assert!(store.event(kept.id).await.unwrap().is_some(), "{}", kept.id);
        }
        assert_eq!(store.dead_letters(10).await.unwrap().len(), 1);
        // The half-delivered event is kept with both its actions, and its
        // pending one is still claimed again after a restart.
        assert_eq!(
            store.event(half.id).await.unwrap().unwrap().actions.len(),
            2
        );
        store.close().await;
        let store = SqliteStore::open(&path).unwrap();
        let back = store.claim(10).await.unwrap();
        assert_eq!(
            back.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![ids[1][1]]
        );
        // A pruned id is a new event again.
        let again = store
            .insert(vec![NewEvent {
                event: delivered.clone(),
                actions: vec![log_action()],
            }])
            .await
            .unwrap();
        assert!(matches!(again[0], Inserted::New(_)));
        store.close().await;
        assert_references_hold(&path);
    }

    /// Each stored event's `(first_action, last_action)`, by event id.
    fn ranges(path: &Path) -> HashMap<String, (Option<i64>, Option<i64>)> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare("SELECT id, first_action, last_action FROM events")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    }

    fn ids(inserted: &Inserted) -> Vec<i64> {
        match inserted {
            Inserted::New(actions) => actions.iter().map(|a| a.id).collect(),
            Inserted::Duplicate => Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_events_actions_are_found_by_their_id_range_and_no_id_is_used_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranges.db");
        let store = SqliteStore::open(&path).unwrap();
        let [two, none, one, later] = [event(), event(), event(), event()];
        let first = store
            .insert(vec![
                NewEvent {
                    event: two.clone(),
                    actions: vec![log_action(), log_action()],
                },
                // A duplicate in the same batch takes no ids.
                NewEvent {
                    event: two.clone(),
                    actions: vec![log_action()],
                },
                NewEvent {
                    event: none.clone(),
                    actions: Vec::new(),
                },
                NewEvent {
                    event: one.clone(),
                    actions: vec![log_action()],
                },
            ])
            .await
            .unwrap();
        assert!(matches!(first[1], Inserted::Duplicate));
        assert_eq!(
            [ids(&first[0]), ids(&first[3])],
            [vec![1, 2], vec![3]],
            "ids follow each other"
        );
        let r = ranges(&path);
        assert_eq!(r[&two.id.to_string()], (Some(1), Some(2)));
        assert_eq!(r[&none.id.to_string()], (None, None));
        assert_eq!(r[&one.id.to_string()], (Some(3), Some(3)));
        assert_eq!(store.event(two.id).await.unwrap().unwrap().actions.len(), 2);
        assert!(store
            .event(none.id)
            .await
            .unwrap()
            .unwrap()
            .actions
            .is_empty());
        // The newest action leaves (purged from the dead letters): its id is
        // not handed out again.
        store
            .apply(vec![Update::DeadLetter {
                id: 3,
                attempts: 1,
                error: "HTTP 400".into(),
                status: Some(400),
            }])
            .await
            .unwrap();
        assert_eq!(store.purge_dead_letters(Some(vec![3])).await.unwrap(), 1);
        let next = store
            .insert(vec![NewEvent {
                event: later.clone(),
                actions: vec![log_action()],
            }])
            .await
            .unwrap();
        assert_eq!(ids(&next[0]), vec![4]);
        assert!(store
            .event(one.id)
            .await
            .unwrap()
            .unwrap()
            .actions
            .is_empty());
        store.close().await;
        // Pruning and looking up read a range of the actions' key; there is
        // no index on `actions(event)` to keep up.
        let c = Connection::open(&path).unwrap();
        let steps = plan(&c, PRUNE_QUERY, params![0, 10]).join("; ");
        assert!(
            steps.contains("SEARCH a USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
            "{steps}"
        );
        let indexes: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'actions_by_event'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        drop(c);
        assert_references_hold(&path);
    }

    #[tokio::test]
    async fn a_write_that_fails_half_way_undoes_its_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("undo.db");
        let store = SqliteStore::open(&path).unwrap();
        // The writer is held inside one job while the next two are queued,
        // so that those two are committed, or not, together.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let held = store.write(move |_| {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok(())
        });
        tokio::pin!(held);
        assert!(futures_util::poll!(&mut held).is_pending());
        started_rx.recv().unwrap();
        let e = event();
        let good = store.insert(vec![NewEvent {
            event: e.clone(),
            actions: vec![log_action()],
        }]);
        let bad = store.write(|t| {
            t.execute(
                "INSERT INTO events (id, body, accepted_at) VALUES ('half', '{}', 0)",
                [],
            )?;
            t.execute("INSERT INTO nowhere VALUES (1)", [])?;
            Ok(())
        });
        tokio::pin!(good, bad);
        assert!(futures_util::poll!(&mut good).is_pending());
        assert!(futures_util::poll!(&mut bad).is_pending());
        go_tx.send(()).unwrap();
        held.await.unwrap();
        let bad = bad.await.unwrap_err().to_string();
        assert!(bad.contains("nowhere"), "{bad}");
        let good = good.await.unwrap_err().to_string();
        assert!(good.contains("the batch was undone"), "{good}");
        // Neither the half-done write nor the other one is stored, so the
        // event is stored anew when it comes again, with its action.
        assert!(store.event(e.id).await.unwrap().is_none());
        let c = Connection::open(&path).unwrap();
        let half: i64 = c
            .query_row("SELECT COUNT(*) FROM events WHERE id = 'half'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(half, 0);
        let again = store
            .insert(vec![NewEvent {
                event: e.clone(),
                actions: vec![log_action()],
            }])
            .await
            .unwrap();
        assert_eq!(ids(&again[0]), vec![1]);
        assert_eq!(store.event(e.id).await.unwrap().unwrap().actions.len(), 1);
        store.close().await;
        assert_references_hold(&path);
    }

    /// Version 4's tables, as a file written by an older binary has them.
    const SCHEMA_V4: &str = "
        CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            body TEXT NOT NULL, accepted_at INTEGER NOT NULL);
        CREATE INDEX events_by_time ON events(accepted_at);
        CREATE TABLE action_specs (id INTEGER PRIMARY KEY, observer TEXT NOT NULL,
            endpoint TEXT NOT NULL, action_type TEXT NOT NULL, action TEXT NOT NULL,
            UNIQUE (observer, endpoint, action_type, action));
        CREATE TABLE actions (id INTEGER PRIMARY KEY AUTOINCREMENT,
            event INTEGER NOT NULL REFERENCES events(seq),
            spec INTEGER NOT NULL REFERENCES action_specs(id), status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, not_before INTEGER, last_error TEXT,
            last_status INTEGER, claimed INTEGER NOT NULL DEFAULT 0,
            accepted_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE INDEX actions_by_status ON actions(status, claimed, id)
            WHERE status <> 'delivered';
        CREATE INDEX actions_by_event ON actions(event);
        CREATE TABLE endpoints (endpoint TEXT PRIMARY KEY, snapshot TEXT,
            disabled INTEGER NOT NULL DEFAULT 0, disabled_reason TEXT);
    ";

    #[tokio::test]
    async fn a_version_4_database_gets_each_events_action_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        let [two, none, one] = [event(), event(), event()];
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V4).unwrap();
            let log = serde_json::to_string(log_action().action().as_ref()).unwrap();
            c.execute(
                "INSERT INTO action_specs VALUES (1, 'o', 'log', 'log', ?1)",
                params![log],
            )
            .unwrap();
            for (seq, e) in [(1, &two), (2, &none), (3, &one)] {
                c.execute(
                    "INSERT INTO events VALUES (?1, ?2, ?3, 1000)",
                    params![seq, e.id.to_string(), serde_json::to_string(e).unwrap()],
                )
                .unwrap();
            }
            // Ids 3, 4 and 6 were purged; 6 was the newest ever handed out.
            for (id, seq, status) in [
                (1, 1, "delivered"),
                (2, 1, "pending"),
                (5, 3, "delivered"),
                (6, 3, "dead_lettered"),
            ] {
                c.execute(
                    "INSERT INTO actions (id, event, spec, status, accepted_at, updated_at)
                     VALUES (?1, ?2, 1, ?3, 1000, 1000)",
                    params![id, seq, status],
                )
                .unwrap();
            }
            c.execute_batch("DELETE FROM actions WHERE id = 6; PRAGMA user_version = 4;")
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let r = ranges(&path);
        assert_eq!(r[&two.id.to_string()], (Some(1), Some(2)));
        assert_eq!(r[&none.id.to_string()], (None, None));
        assert_eq!(r[&one.id.to_string()], (Some(5), Some(5)));
        assert_eq!(store.event(two.id).await.unwrap().unwrap().actions.len(), 2);
        assert_eq!(store.event(one.id).await.unwrap().unwrap().actions.len(), 1);
        // Pruning finds the old events with nothing left to deliver, and
        // removes their actions with them.
        let cutoff = now_ms();
        assert_eq!(store.prune_delivered(cutoff, 10).await.unwrap(), 2);
        assert!(store.event(one.id).await.unwrap().is_none());
        assert!(store.event(none.id).await.unwrap().is_none());
        let kept = store.event(two.id).await.unwrap().unwrap();
        assert_eq!(
            kept.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let new = store
            .insert(vec![NewEvent {
                event: event(),
                actions: vec![log_action()],
            }])
            .await
            .unwrap();
        assert_eq!(ids(&new[0]), vec![7], "the sequence goes on past 6");
        store.close().await;
        let c = Connection::open(&path).unwrap();
        let (version, left): (i64, i64) = c
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT COUNT(*) FROM actions)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, left), (SCHEMA_VERSION, 3));
        drop(c);
        assert_references_hold(&path);
    }

    #[tokio::test]
    async fn removing_old_events_reads_them_by_time_and_a_version_1_file_gets_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let e = event();
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .insert(vec![NewEvent {
                    event: e.clone(),
                    actions: vec![log_action()],
                }])
                .await
                .unwrap();
            store.close().await;
        }
        let c = Connection::open(&path).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_QUERY}"))
            .unwrap()
            .query_map(params![0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("events_by_time")),
            "{plan:?}"
        );
        // A file of version 1 (the same tables, no time index) is brought up to date.
        c.execute_batch("DROP INDEX events_by_time; PRAGMA user_version = 1;")
            .unwrap();
        drop(c);
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.event(e.id).await.unwrap().is_some());
        store.close().await;
        let c = Connection::open(&path).unwrap();
        let (version, indexed): (i64, bool) = c
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'events_by_time')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, indexed), (SCHEMA_VERSION, true));
    }

    /// The steps of `sql`'s query plan.
    fn plan(c: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test]
    async fn delivered_actions_leave_the_status_index_and_a_version_2_file_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let inserted = store
                .insert(vec![NewEvent {
                    event: event(),
                    actions: vec![log_action()],
                }])
                .await
                .unwrap();
            let Inserted::New(p) = &inserted[0] else {
                panic!("{inserted:?}")
            };
            ids.push(p[0].id);
        }
        store
            .apply(vec![Update::Delivered {
                id: ids[0],
                attempts: 1,
                status: Some(200),
            }])
            .await
            .unwrap();
        store.close().await;
        let entries = |c: &Connection| -> i64 {
            c.query_row(
                "SELECT COUNT(*) FROM actions INDEXED BY actions_by_status
                 WHERE status <> 'delivered' AND status > ''",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let c = Connection::open(&path).unwrap();
        // Two entries: the delivered action has none.
        assert_eq!(entries(&c), 2);
        for (sql, params) in [
            (CLAIM_QUERY, vec![10]),
            (RELEASE_HELD_QUERY, vec![0, 0]),
            (DEAD_LETTERS_QUERY, vec![10]),
            (OLDEST_PENDING_QUERY, vec![]),
        ] {
            let steps = plan(&c, sql, rusqlite::params_from_iter(params));
            assert!(
                steps.iter().any(|s| s.contains("actions_by_status")),
                "{sql}: {steps:?}"
            );
        }
        // A version-2 file (the index held every action) gets the new one.
        c.execute_batch(
            "DROP INDEX actions_by_status;
             CREATE INDEX actions_by_status ON actions(status, claimed, id);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(c);
        let store = SqliteStore::open(&path).unwrap();
        let claimed = store.claim(10).await.unwrap();
        assert_eq!(
            claimed.iter().map(|p| p.id).collect::<Vec<_>>(),
            ids[1..].to_vec()
        );
        store.close().await;
        let c = Connection::open(&path).unwrap();
        let (version, sql): (i64, String) = c
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT sql FROM sqlite_master WHERE name = 'actions_by_status')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(sql.contains("WHERE status <> 'delivered'"), "{sql}");
        assert_eq!(entries(&c), 2);
    }

    #[tokio::test]
    async fn dead_letters_are_listed_replayed_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let store = SqliteStore::open(&path).unwrap();
        let ins = store
            .insert(vec![NewEvent {
                event: event(),
                actions: vec![log_action(), log_action()],
            }])
            .await
            .unwrap();
        let Inserted::New(a) = &ins[0] else {
            unreachable!()
        };
        let dead = |id| Update::DeadLetter {
            id,
            attempts: 5,
            error: "boom".into(),
            status: Some(500),
        };
        store
            .apply(vec![dead(a[0].id), dead(a[1].id)])
            .await
            .unwrap();
        let list = store.dead_letters(10).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].last_error.as_deref(), Some("boom"));
        assert_eq!(
            store
                .replay_dead_letters(Some(vec![a[0].id]))
                .await
                .unwrap(),
            1
        );
        let claimed = store.claim(10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempts, 0);
        assert_eq!(store.purge_dead_letters(None).await.unwrap(), 1);
        assert!(store.dead_letters(10).await.unwrap().is_empty());
        store.close().await;
        assert_references_hold(&path);
    }

    /// The first schema (actions keyed their event by its id), as a
    /// database written by an older binary has it.
    const SCHEMA_V0: &str = "
        CREATE TABLE events (id TEXT PRIMARY KEY, body TEXT NOT NULL, accepted_at INTEGER NOT NULL);
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL REFERENCES events(id),
            observer TEXT NOT NULL, endpoint TEXT NOT NULL, action_type TEXT NOT NULL,
            action TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            not_before INTEGER, last_error TEXT, last_status INTEGER,
            claimed INTEGER NOT NULL DEFAULT 0, accepted_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL);
        CREATE INDEX actions_by_status ON actions(status, claimed, id);
        CREATE INDEX actions_by_event ON actions(event_id);
        CREATE TABLE endpoints (endpoint TEXT PRIMARY KEY, snapshot TEXT,
            disabled INTEGER NOT NULL DEFAULT 0, disabled_reason TEXT);
    ";

    #[tokio::test]
    async fn a_database_of_the_first_schema_is_migrated_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v0.db");
        let (a, b) = (event(), event());
        let action = serde_json::to_string(log_action().action().as_ref()).unwrap();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V0).unwrap();
            for e in [&a, &b] {
                c.execute(
                    "INSERT INTO events VALUES (?1, ?2, 1000)",
                    params![e.id.to_string(), serde_json::to_string(e).unwrap()],
                )
                .unwrap();
            }
            for (id, event, status, error) in [
                (7, &a, "delivered", None),
                (8, &a, "pending", None),
                (9, &b, "dead_lettered", Some("boom")),
            ] {
                c.execute(
                    "INSERT INTO actions (id, event_id, observer, endpoint, action_type, action,
                     status, attempts, last_error, accepted_at, updated_at)
                     VALUES (?1, ?2, 'o', 'log', 'log', ?3, ?4, 1, ?5, 1000, 1000)",
                    params![id, event.id.to_string(), action, status, error],
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO endpoints (endpoint, snapshot) VALUES ('http://a:80', '{}')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let rec = store.event(a.id).await.unwrap().unwrap();
        let statuses: Vec<_> = rec.actions.iter().map(|r| (r.id, r.status)).collect();
        assert_eq!(
            statuses,
            vec![(7, ActionStatus::Delivered), (8, ActionStatus::Pending)]
        );
        assert!(rec.actions.iter().all(|r| r.event_id == a.id));
        let dead = store.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id, dead[0].event_id), (9, b.id));
        assert_eq!(dead[0].last_error.as_deref(), Some("boom"));
        let claimed = store.claim(10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].id, claimed[0].event.id), (8, a.id));
        assert_eq!(store.snapshots().await.unwrap().len(), 1);
        // New rows after the old ones; a known event id is still a duplicate.
        let c = event();
        let ins = store
            .insert(vec![
                NewEvent {
                    event: a.clone(),
                    actions: vec![log_action()],
                },
                NewEvent {
                    event: c.clone(),
                    actions: vec![log_action()],
                },
            ])
            .await
            .unwrap();
        assert!(matches!(ins[0], Inserted::Duplicate));
        let Inserted::New(new) = &ins[1] else {
            panic!("a new event is stored")
        };
        assert!(new[0].id > 9, "action ids keep growing: {}", new[0].id);
        assert_eq!(store.event(c.id).await.unwrap().unwrap().actions.len(), 1);
        store.close().await;
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let old: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%_v0'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the old tables are gone");
        let sequences: Vec<(String, i64)> = c
            .prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sequences, vec![("actions".to_string(), new[0].id)]);
        assert_references_hold(&path);
    }

    fn spec_rows(path: &Path) -> Vec<(i64, String, String)> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare("SELECT id, observer, endpoint FROM action_specs ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    }

    #[tokio::test]
    async fn an_action_is_stored_once_as_a_spec_however_it_was_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("specs.db");
        let store = SqliteStore::open(&path).unwrap();
        let shared = log_action();
        let webhook = |url: &str| {
            NewAction::new(
                "hooks",
                serde_json::from_value(serde_json::json!({"type": "webhook", "url": url})).unwrap(),
            )
        };
        // Clones of one action, the same action made anew, another observer
        // and two endpoints.
        let mut inserted = Vec::new();
        for actions in [
            vec![shared.clone(), shared.clone()],
            vec![log_action(), webhook("http://127.0.0.1:9/a")],
            vec![
                NewAction::new("other", shared.action().as_ref().clone()),
                webhook("http://127.0.0.1:9/a"),
                webhook("http://127.0.0.1:9/b"),
            ],
        ] {
            let e = event();
            store
                .insert(vec![NewEvent {
                    event: e.clone(),
                    actions,
                }])
                .await
                .unwrap();
            inserted.push(e.id);
        }
        let rec = store.event(inserted[2]).await.unwrap().unwrap();
        let seen: Vec<_> = rec
            .actions
            .iter()
            .map(|a| {
                (
                    a.observer.as_str(),
                    a.action_type.as_str(),
                    a.endpoint.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("other", "log", "log"),
                ("hooks", "webhook", "http://127.0.0.1:9"),
                ("hooks", "webhook", "http://127.0.0.1:9"),
            ]
        );
        store.close().await;
        let specs: Vec<_> = spec_rows(&path)
            .into_iter()
            .map(|(_, o, e)| format!("{o} {e}"))
            .collect();
        assert_eq!(
            specs,
            vec![
                "o log",
                "hooks http://127.0.0.1:9",
                "other log",
                "hooks http://127.0.0.1:9",
            ],
            "one row for each distinct observer and action"
        );
        // Reopened: a known action finds its row again.
        let store = SqliteStore::open(&path).unwrap();
        store
            .insert(vec![NewEvent {
                event: event(),
                actions: vec![log_action(), webhook("http://127.0.0.1:9/b")],
            }])
            .await
            .unwrap();
        store.close().await;
        assert_eq!(spec_rows(&path).len(), 4);
        let c = Connection::open(&path).unwrap();
        let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(page, PAGE_SIZE, "a new file gets the store's page size");
    }

    /// Versions 1 to 3: each action row held its observer and action.
    const SCHEMA_V3: &str = "
        CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            body TEXT NOT NULL, accepted_at INTEGER NOT NULL);
        CREATE INDEX events_by_time ON events(accepted_at);
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event INTEGER NOT NULL REFERENCES events(seq),
            observer TEXT NOT NULL, endpoint TEXT NOT NULL, action_type TEXT NOT NULL,
            action TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            not_before INTEGER, last_error TEXT, last_status INTEGER,
            claimed INTEGER NOT NULL DEFAULT 0, accepted_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL);
        CREATE INDEX actions_by_status ON actions(status, claimed, id)
            WHERE status <> 'delivered';
        CREATE INDEX actions_by_event ON actions(event);
        CREATE TABLE endpoints (endpoint TEXT PRIMARY KEY, snapshot TEXT,
            disabled INTEGER NOT NULL DEFAULT 0, disabled_reason TEXT);
        PRAGMA user_version = 3;
    ";

    #[tokio::test]
    async fn a_version_3_database_keeps_every_action_its_ids_and_their_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let (a, b) = (event(), event());
        let log = serde_json::to_string(log_action().action().as_ref()).unwrap();
        let hook = r#"{"type":"webhook","url":"http://127.0.0.1:9/x"}"#;
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V3).unwrap();
            for (seq, e) in [(1, &a), (2, &b)] {
                c.execute(
                    "INSERT INTO events VALUES (?1, ?2, ?3, 1000)",
                    params![seq, e.id.to_string(), serde_json::to_string(e).unwrap()],
                )
                .unwrap();
            }
            for (id, event, endpoint, action, status) in [
                (1, 1, "log", log.as_str(), "delivered"),
                (2, 1, "http://127.0.0.1:9", hook, "held"),
                (3, 2, "log", log.as_str(), "pending"),
                (4, 2, "http://127.0.0.1:9", hook, "dead_lettered"),
                (5, 2, "log", log.as_str(), "pending"),
            ] {
                let kind = if endpoint == "log" { "log" } else { "webhook" };
                c.execute(
                    "INSERT INTO actions (id, event, observer, endpoint, action_type, action,
                     status, attempts, last_error, accepted_at, updated_at)
                     VALUES (?1, ?2, 'o', ?3, ?4, ?5, ?6, 2, 'boom', 1000, 1000)",
                    params![id, event, endpoint, kind, action, status],
                )
                .unwrap();
            }
            // The newest action is gone: its id must not be given again.
            c.execute("DELETE FROM actions WHERE id = 5", []).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let rec = store.event(a.id).await.unwrap().unwrap();
        let seen: Vec<_> = rec
            .actions
            .iter()
            .map(|r| (r.id, r.status, r.endpoint.as_str(), r.attempts))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, ActionStatus::Delivered, "log", 2),
                (2, ActionStatus::Held, "http://127.0.0.1:9", 2)
            ]
        );
        let dead = store.dead_letters(10).await.unwrap();
        assert_eq!(
            dead.iter()
                .map(|d| (d.id, d.event_id, d.action_type.as_str()))
                .collect::<Vec<_>>(),
            vec![(4, b.id, "webhook")]
        );
        assert_eq!(store.release_held("http://127.0.0.1:9").await.unwrap(), 1);
        let claimed = store.claim(10).await.unwrap();
        assert_eq!(
            claimed
                .iter()
                .map(|p| (p.id, p.endpoint.as_str(), p.action.action_type()))
                .collect::<Vec<_>>(),
            vec![(2, "http://127.0.0.1:9", "webhook"), (3, "log", "log")]
        );
        let ins = store
            .insert(vec![NewEvent {
                event: event(),
                actions: vec![log_action()],
            }])
            .await
            .unwrap();
        let Inserted::New(new) = &ins[0] else {
            panic!("{ins:?}")
        };
        assert_eq!(new[0].id, 6, "ids go on after the last one given");
        store.close().await;
        assert_eq!(
            spec_rows(&path),
            vec![
                (1, "o".into(), "log".into()),
                (2, "o".into(), "http://127.0.0.1:9".into())
            ],
            "the new action found the migrated spec"
        );
        let c = Connection::open(&path).unwrap();
        let (version, old): (i64, i64) = c
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%_v3')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, old), (SCHEMA_VERSION, 0));
        let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(page, 4096, "an older file keeps its page size");
        assert_references_hold(&path);
    }

    /// What `f` logs at info and above, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = buf.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn an_upgrade_is_logged_before_and_after_and_a_new_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("v3.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch(SCHEMA_V3)
            .unwrap();
        let log = logged(|| drop(SqliteStore::open(&old).unwrap()));
        assert!(
            log.contains("bringing the store's schema up to date") && log.contains("from=3"),
            "{log}"
        );
        assert!(log.contains("the store's schema is up to date"), "{log}");
        let log = logged(|| drop(SqliteStore::open(&dir.path().join("new.db")).unwrap()));
        assert!(!log.contains("schema"), "{log}");
    }

    #[test]
    fn a_database_of_a_newer_schema_is_refused_and_gets_no_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE later (x); PRAGMA user_version = 9;")
                .unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("version 9") && err.contains("newer"), "{err}");
        let c = Connection::open(&path).unwrap();
        let tables: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1, "nothing was created");
    }
}
