//! The schema and its versioned migrations, applied at start under a lock so
//! that instances starting together migrate once.

use tokio_postgres::Client;

use crate::store::{StoreError, StoreResult};

/// The schema version this binary writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

/// Version 1.
///
/// - `events`: each accepted event's compact JSON, by its id.
/// - `endpoints`: every endpoint has a number (`lane`), its disabled flag,
///   the time its open circuit parks its actions until, and the last
///   operator command on it (reset, open, close) with a generation that
///   grows with each: every instance applies a command it has not seen.
/// - `action_specs`: each configured action once (observer and action
///   JSON), found again by a digest of both.
/// - `actions`: one row per action of an event, its id taken by the
///   instance from a block of a thousand it draws from `action_ids` (one
///   draw a thousand actions, not one a batch). `holder` and `epoch` name
///   the instance lease that claimed it (`NULL`: unclaimed); an outcome is
///   written only while they still match. `actions_backlog` holds each
///   endpoint's unclaimed waiting actions by due time, the only rows a
///   claim reads. Only waiting actions (pending or parked) are ever
///   claimed, so an instance's claims are found through `actions_by_status`
///   (a takeover is rare; an index on the holder would tempt the planner
///   away from the id for every outcome written). Rows point at their event and spec without a foreign
///   key: the store writes an event with its actions in one statement and
///   removes them together, and a key's check would cost each action
///   stored a lookup of its own.
/// - `instances`: one lease row per live instance, its heartbeat and
///   expiry on the database clock; `lease_epochs` numbers every lease ever
///   taken, so an epoch is never reused.
/// - `snapshots`: each instance's breaker snapshot per endpoint.
const V1: &str = "
CREATE TABLE events (
    id uuid PRIMARY KEY,
    body text NOT NULL,
    accepted_at bigint NOT NULL
);
CREATE INDEX events_by_time ON events (accepted_at);
CREATE TABLE endpoints (
    lane serial PRIMARY KEY,
    endpoint text NOT NULL UNIQUE,
    disabled boolean NOT NULL DEFAULT false,
    disabled_reason text,
    parked_until bigint,
    admin_op text,
    admin_generation bigint NOT NULL DEFAULT 0
);
CREATE TABLE action_specs (
    id serial PRIMARY KEY,
    digest text NOT NULL UNIQUE,
    observer text NOT NULL,
    endpoint text NOT NULL,
    action_type text NOT NULL,
    action text NOT NULL,
    lane integer NOT NULL REFERENCES endpoints (lane)
);
CREATE SEQUENCE action_ids INCREMENT BY 1000;
CREATE TABLE actions (
    id bigint PRIMARY KEY,
    event uuid NOT NULL,
    spec integer NOT NULL,
    lane integer NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    not_before bigint,
    last_error text,
    last_status integer,
    holder text,
    epoch bigint,
    accepted_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX actions_by_event ON actions (event);
CREATE INDEX actions_by_status ON actions (status, lane, id) WHERE status <> 'delivered';
CREATE INDEX actions_backlog ON actions (lane, (COALESCE(not_before, accepted_at)), id)
    WHERE holder IS NULL AND status IN ('pending', 'parked');
CREATE SEQUENCE lease_epochs;
CREATE TABLE instances (
    instance text PRIMARY KEY,
    epoch bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE TABLE snapshots (
    endpoint text NOT NULL,
    instance text NOT NULL,
    snapshot text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, instance)
);
";

/// Version 2: the history.
///
/// - `events` keep what their actions are searched by (`event_type`,
///   `entity_type`, `entity_id`) beside their JSON, read from it for the
///   events already stored (one pass; retention keeps the table to recent
///   events). No index on them: a search reads actions newest first until
///   a page is full, and an index on a random key (the entity's id) would
///   cost every event stored a write at a random place.
/// - `actions` count their replays and name the replay job that last
///   replayed them; `actions_by_replay_job` holds only the rows that name
///   one, so it costs nothing to an action stored.
/// - `attempts`: every attempt, kept with its action (deleted with it, by
///   the statements that delete actions: no foreign key, as elsewhere).
///   Each names its action's endpoint by number (`lane`), so that an
///   endpoint's recent attempts are read newest first through
///   `attempts_by_lane` alone; through the actions, they would need an
///   index of every action by endpoint, delivered ones included. The
///   primary key is by action (`action_id, id`: an action's attempts in
///   order, and those of actions deleted): an attempt is never looked up by
///   its id alone, and a key by id would be a third index to write for
///   each attempt (its ids are unique all the same, from their sequence).
/// - `audit`: the operators' writes. `replay_jobs`: the replays by filter,
///   which every instance sees (and may cancel). A job names the lease
///   epoch of the instance running it (`owner`; `NULL` for a command's
///   job, never taken up) and where it goes on (`cursor`): when that epoch
///   holds no lease any more, another instance takes the job up there.
///   `replay_jobs_running` holds the running ones, looked for every few
///   seconds.
const V2: &str = "
ALTER TABLE events
    ADD COLUMN event_type text NOT NULL DEFAULT '',
    ADD COLUMN entity_type text NOT NULL DEFAULT '',
    ADD COLUMN entity_id text NOT NULL DEFAULT '';
UPDATE events SET (event_type, entity_type, entity_id) =
    (SELECT COALESCE(j->>'event_type', ''), COALESCE(j->>'entity_type', ''),
            COALESCE(j->>'entity_id', '')
     FROM (SELECT body::json AS j) AS parsed);
ALTER TABLE actions
    ADD COLUMN replays integer NOT NULL DEFAULT 0,
    ADD COLUMN replay_job bigint;
CREATE INDEX actions_by_replay_job ON actions (replay_job) WHERE replay_job IS NOT NULL;
CREATE TABLE attempts (
    id bigserial NOT NULL,
    action_id bigint NOT NULL,
    lane integer NOT NULL,
    number integer NOT NULL,
    trigger text NOT NULL,
    breaker_state text NOT NULL,
    started_at_ms bigint NOT NULL,
    duration_ms bigint NOT NULL,
    outcome text NOT NULL,
    error_kind text,
    status integer,
    error text,
    request text,
    response_headers text,
    response_body text,
    PRIMARY KEY (action_id, id)
);
CREATE INDEX attempts_by_lane ON attempts (lane, id);
CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    count bigint,
    instance text
);
CREATE TABLE replay_jobs (
    id bigserial PRIMARY KEY,
    filter text NOT NULL,
    actor text NOT NULL,
    state text NOT NULL,
    total bigint NOT NULL,
    replayed bigint NOT NULL DEFAULT 0,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    error text,
    owner bigint,
    cursor bigint
);
CREATE INDEX replay_jobs_running ON replay_jobs (id) WHERE state = 'running';
";

/// Each version's statements, in order: `MIGRATIONS[n]` brings version `n`
/// to `n + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The key of the advisory lock migrations run under (any fixed number
/// the application does not use for anything else).
const MIGRATION_LOCK: i64 = 0x6272_6561_6b77_6174; // "breakwat"

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version found (0: a new schema).
    pub from: i32,
    /// The version now.
    pub to: i32,
}

/// Creates `schema` if needed and brings it to [`SCHEMA_VERSION`], in one
/// transaction under an advisory lock: instances starting together wait
/// for the first, which migrates; the others find it done.
///
/// # Errors
///
/// A database newer than this binary (naming both versions), or a failed
/// statement (nothing of the migration is kept).
pub async fn migrate(client: &mut Client, schema: &str) -> StoreResult<Migrated> {
    let t = client.transaction().await.map_err(backend)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    t.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (
             one boolean PRIMARY KEY DEFAULT true CHECK (one),
             version integer NOT NULL
         );
         SET LOCAL search_path TO {schema};"
    ))
    .await
    .map_err(backend)?;
    let from: i32 = t
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(backend)?
        .map_or(0, |r| r.get(0));
    if from > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database's schema {schema} is at version {from}, newer than this binary's \
             {SCHEMA_VERSION}: run a newer breakwater (or restore a copy taken before the upgrade)"
        )));
    }
    for (at, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        t.batch_execute(sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "migrating schema {schema} to version {}: {}",
                at + 1,
                describe(&e)
            ))
        })?;
    }
    t.execute(
        "INSERT INTO schema_version (version) VALUES ($1)
         ON CONFLICT (one) DO UPDATE SET version = excluded.version",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(backend)?;
    t.commit().await.map_err(backend)?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

/// A database error as one line: its message, detail and hint where it
/// has them (tokio-postgres's own `Display` says only "db error").
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            if let Some(h) = db.hint() {
                s.push_str(" (");
                s.push_str(h);
                s.push(')');
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    }
}

/// A database error as a [`StoreError`].
pub(super) fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}
