//! The schema, the connection's settings, and the migrations from older
//! schemas.

use std::path::Path;

use rusqlite::{Connection, Transaction};

use crate::store::{StoreError, StoreResult};

/// The schema's version, kept in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 8;

/// Version 8. The history: an event row keeps what its actions are
/// searched by (`event_type`, `entity_type`, `entity_id`, beside its JSON);
/// an action row counts its replays and names the replay job that last
/// replayed it (`replay_job`, indexed only where set: nothing to keep up for
/// an action stored). `attempts` keeps every attempt with its action; it
/// names the action's endpoint by number (`lane`) as well, so that an
/// endpoint's recent attempts are read newest first through
/// `attempts_by_lane` alone: found through their actions, they would need
/// an index of every action by endpoint, delivered ones included, which
/// the schema keeps out of every index so that storing an action stays
/// cheap. `audit` keeps the operators' writes; `replay_jobs` the replays by
/// filter, each with the process running it (`owner`, a number drawn at
/// each open; `NULL` for a command's job, never taken up) and where it goes
/// on (`cursor`), so that a job whose process died is taken up at the
/// next start. There are no indexes on the event's new columns: a search by
/// them reads actions newest first until a page is full (an index on a
/// random key such as the entity's id would cost every event stored a
/// write at a random place).
/// Version 7. An endpoint row holds when its open circuit parks its
/// actions until (`parked_until`): one write an opening, not one an action.
/// Version 6. Every endpoint has a number (`lanes`), and each action row
/// names its endpoint's: an endpoint's backlog (its actions waiting in the
/// store and in no instance's memory: `claimed = 0`) is read through
/// `actions_backlog`, by endpoint, earliest due first, a page at a time. The
/// index holds only unclaimed waiting actions, so an action delivered from
/// memory never enters it. `actions_by_status` is keyed by status, endpoint
/// and id (no longer by the claim, which it does not need to be kept up
/// for), so that an endpoint's held or waiting actions are read by range.
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
    last_action INTEGER,
    event_type TEXT NOT NULL DEFAULT '',
    entity_type TEXT NOT NULL DEFAULT '',
    entity_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(accepted_at);
CREATE TABLE IF NOT EXISTS lanes (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS action_specs (
    id INTEGER PRIMARY KEY,
    observer TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    action_type TEXT NOT NULL,
    action TEXT NOT NULL,
    lane INTEGER NOT NULL DEFAULT 0,
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
    updated_at INTEGER NOT NULL,
    lane INTEGER NOT NULL DEFAULT 0,
    replays INTEGER NOT NULL DEFAULT 0,
    replay_job INTEGER
);
CREATE INDEX IF NOT EXISTS actions_by_status ON actions(status, lane, id)
    WHERE status <> 'delivered';
CREATE INDEX IF NOT EXISTS actions_backlog
    ON actions(lane, COALESCE(not_before, accepted_at), id)
    WHERE claimed = 0 AND status IN ('pending', 'parked');
CREATE INDEX IF NOT EXISTS actions_by_replay_job ON actions(replay_job)
    WHERE replay_job IS NOT NULL;
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint TEXT PRIMARY KEY,
    snapshot TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    parked_until INTEGER
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    action_id INTEGER NOT NULL,
    lane INTEGER NOT NULL,
    number INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    breaker_state TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error_kind TEXT,
    status INTEGER,
    error TEXT,
    request TEXT,
    response_headers TEXT,
    response_body TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_action ON attempts(action_id);
CREATE INDEX IF NOT EXISTS attempts_by_lane ON attempts(lane, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    count INTEGER,
    instance TEXT
);
CREATE TABLE IF NOT EXISTS replay_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filter TEXT NOT NULL,
    actor TEXT NOT NULL,
    state TEXT NOT NULL,
    total INTEGER NOT NULL,
    replayed INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    error TEXT,
    owner INTEGER,
    cursor INTEGER
);
";

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

/// From versions before 6: the columns that name each action's endpoint,
/// added to a file that has the tables but not the columns (version 4 and
/// 5 files; older ones are copied into new tables). Run before [`SCHEMA`],
/// whose indexes need them.
const ADD_LANE_COLUMNS: &str = "
ALTER TABLE action_specs ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
ALTER TABLE actions ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
";

/// From versions before 6: a number for every endpoint, and each spec and
/// each action not yet delivered names it (a delivered action is never
/// read by endpoint).
const FILL_LANES: &str = "
INSERT OR IGNORE INTO lanes (endpoint)
    SELECT endpoint FROM action_specs GROUP BY endpoint ORDER BY MIN(id);
UPDATE action_specs SET lane = (SELECT l.id FROM lanes l WHERE l.endpoint = action_specs.endpoint)
WHERE lane = 0;
UPDATE actions SET lane = (SELECT s.lane FROM action_specs s WHERE s.id = actions.spec)
WHERE status <> 'delivered' AND lane = 0;
";

/// The columns later versions added to tables that older files have:
/// `(table, column, declaration)`. [`schema`] adds those missing to a
/// table that exists (a table made anew by [`SCHEMA`] has them all).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("events", "event_type", "TEXT NOT NULL DEFAULT ''"),
    ("events", "entity_type", "TEXT NOT NULL DEFAULT ''"),
    ("events", "entity_id", "TEXT NOT NULL DEFAULT ''"),
    ("actions", "replays", "INTEGER NOT NULL DEFAULT 0"),
    ("actions", "replay_job", "INTEGER"),
];

/// From versions before 8: each event's keys, from its JSON (one pass
/// over the events, which retention keeps to the recent ones; a text that
/// is not JSON keeps empty keys rather than fail the upgrade).
const FILL_EVENT_KEYS: &str = "
UPDATE events SET event_type = COALESCE(json_extract(body, '$.event_type'), ''),
                  entity_type = COALESCE(json_extract(body, '$.entity_type'), ''),
                  entity_id = COALESCE(json_extract(body, '$.entity_id'), '')
WHERE json_valid(body);
";

/// [`SCHEMA`], after adding to the tables already there the columns it
/// has and they lack ([`ADDED_COLUMNS`]), which its indexes may need.
fn schema(t: &Transaction<'_>) -> StoreResult<()> {
    for (table, column, declaration) in ADDED_COLUMNS {
        let missing: bool = t.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1))
                AND NOT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| r.get(0),
        )?;
        if missing {
            t.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {declaration};"
            ))?;
        }
    }
    t.execute_batch(SCHEMA)?;
    Ok(())
}

/// Creates the schema, or brings an older one up to date.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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
        schema(&t)?;
        t.execute_batch(COPY_0_TO_3)?;
        t.execute_batch(COPY_3)?;
    } else if text_actions {
        t.execute_batch(MIGRATE_3_TO_4)?;
        schema(&t)?;
        t.execute_batch(COPY_3)?;
    } else {
        // Every version before this one keyed `actions_by_status` otherwise.
        t.execute_batch("DROP INDEX IF EXISTS actions_by_status;")?;
        let unnumbered: bool = t.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('actions'))
                AND NOT EXISTS (SELECT 1 FROM pragma_table_info('actions') WHERE name = 'lane')",
            [],
            |r| r.get(0),
        )?;
        if unnumbered {
            t.execute_batch(ADD_LANE_COLUMNS)?;
        }
        schema(&t)?;
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
    if version < 5 {
        t.execute_batch(FILL_RANGES)?;
    }
    let parking: bool = t.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('endpoints') WHERE name = 'parked_until')",
        [],
        |r| r.get(0),
    )?;
    if !parking {
        t.execute_batch("ALTER TABLE endpoints ADD COLUMN parked_until INTEGER;")?;
    }
    t.execute_batch(FILL_LANES)?;
    if upgrading && version < 8 {
        t.execute_batch(FILL_EVENT_KEYS)?;
    }
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

/// The page size of a new file. Each commit writes every page it touched
/// to the WAL, one write a page: pages of 8 KiB take 30% fewer writes than
/// SQLite's 4 KiB for the same events, and the writer's CPU an event about
/// 5% less. A file keeps the page size it was created with.
pub(super) const PAGE_SIZE: i64 = 8192;

pub(super) fn open(path: &Path) -> rusqlite::Result<Connection> {
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
