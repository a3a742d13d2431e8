use std::collections::HashMap;

use breakwater::traits::{ActionConfig, EntityEvent, EventKind, LogAction};

use super::queries::{BACKLOGGED_QUERY, BACKLOG_LEFT_QUERY, BACKLOG_PAGE_QUERY};
use super::schema::{PAGE_SIZE, SCHEMA_VERSION};
use super::*;
use crate::store::NewAction;

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

/// Claims up to `limit` of every endpoint's backlog, whatever its due time.
async fn claim(store: &SqliteStore, limit: usize) -> StoreResult<Vec<PendingAction>> {
    let mut out = Vec::new();
    for endpoint in store.backlogged_endpoints(i64::MAX).await? {
        let page = store.claim_backlog(&endpoint, limit, i64::MAX).await?;
        out.extend(page.actions);
    }
    Ok(out)
}

/// Every reference between rows holds (they are declared, not
/// enforced at each write).
pub(super) fn assert_references_hold(path: &Path) {
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
            .insert(vec![NewEvent::new(e, vec![log_action(); n])])
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
    let back = claim(&store, 10).await.unwrap();
    assert_eq!(
        back.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![ids[1][1]]
    );
    // A pruned id is a new event again.
    let again = store
        .insert(vec![NewEvent::new(&delivered, vec![log_action()])])
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
            NewEvent::new(&two, vec![log_action(), log_action()]),
            // A duplicate in the same batch takes no ids.
            NewEvent::new(&two, vec![log_action()]),
            NewEvent::new(&none, Vec::new()),
            NewEvent::new(&one, vec![log_action()]),
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
        .insert(vec![NewEvent::new(&later, vec![log_action()])])
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
    let good = store.insert(vec![NewEvent::new(&e, vec![log_action()])]);
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
        .insert(vec![NewEvent::new(&e, vec![log_action()])])
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
        .insert(vec![NewEvent::new(&event(), vec![log_action()])])
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
            .insert(vec![NewEvent::new(&e, vec![log_action()])])
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
            .insert(vec![NewEvent::new(&event(), vec![log_action()])])
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
        (BACKLOGS_QUERY, vec![]),
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
    let claimed = claim(&store, 10).await.unwrap();
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
    let claimed = claim(&store, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].event.id()), (8, a.id));
    assert_eq!(store.snapshots().await.unwrap().len(), 1);
    // New rows after the old ones; a known event id is still a duplicate.
    let c = event();
    let ins = store
        .insert(vec![
            NewEvent::new(&a, vec![log_action()]),
            NewEvent::new(&c, vec![log_action()]),
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
            .insert(vec![NewEvent::new(&e, actions)])
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
        .insert(vec![NewEvent::new(
            &event(),
            vec![log_action(), webhook("http://127.0.0.1:9/b")],
        )])
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
    let claimed = claim(&store, 10).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|p| (p.id, p.endpoint.as_str(), p.action.action_type()))
            .collect::<Vec<_>>(),
        vec![(2, "http://127.0.0.1:9", "webhook"), (3, "log", "log")]
    );
    let ins = store
        .insert(vec![NewEvent::new(&event(), vec![log_action()])])
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
    tracing::subscriber::with_default(subscriber, || {
        // A log line first reached by another test's thread, with no
        // subscriber there, is cached as of no interest: asked again here.
        tracing::callsite::rebuild_interest_cache();
        f()
    });
    let text = buf.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

#[test]
fn an_upgrade_is_logged_before_and_after_and_a_new_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // `tracing` caches whether a log line is wanted when a thread first
    // meets it; met first by another test's thread (an upgrade test) as
    // the capture starts, a line can be cached as unwanted just after the
    // capture asked again (the other thread asked its own subscriber:
    // none). That happens at the first meeting only: the capture is tried
    // again, on another file, then.
    let upgraded = |log: &str| {
        log.contains("bringing the store's schema up to date")
            && log.contains("from=3")
            && log.contains("the store's schema is up to date")
    };
    let mut log = String::new();
    for i in 0..3 {
        let old = dir.path().join(format!("v3-{i}.db"));
        Connection::open(&old)
            .unwrap()
            .execute_batch(SCHEMA_V3)
            .unwrap();
        log = logged(|| drop(SqliteStore::open(&old).unwrap()));
        if upgraded(&log) {
            break;
        }
    }
    assert!(upgraded(&log), "{log}");
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

fn webhook_action(url: &str) -> NewAction {
    NewAction::new(
        "o",
        ActionConfig::Webhook(breakwater::traits::WebhookAction {
            url: url.into(),
            method: "POST".into(),
            headers: Default::default(),
            body_template: None,
            signing_secret: None,
        }),
    )
}

#[tokio::test]
async fn an_endpoints_backlog_is_claimed_by_endpoint_and_due_time_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let store = SqliteStore::open(&path).unwrap();
    let (a, b) = ("http://127.0.0.1:1", "http://127.0.0.1:2");
    let later = now_ms() + 60_000;
    // Per event: one action to `a` (backlogged; the second one parked until
    // a minute from now), one to `b` (claimed at once, then backlogged).
    let mut events = Vec::new();
    for i in 0..5 {
        let to_a = if i == 1 {
            webhook_action(&format!("{a}/h")).parked_until(later)
        } else {
            webhook_action(&format!("{a}/h"))
        };
        let to_b = if i == 0 {
            webhook_action(&format!("{b}/h"))
        } else {
            webhook_action(&format!("{b}/h")).backlogged()
        };
        events.push(NewEvent::new(&event(), vec![to_a.backlogged(), to_b]));
    }
    let inserted = store.insert(events).await.unwrap();
    let claimed: Vec<usize> = inserted
        .iter()
        .map(|i| match i {
            Inserted::New(a) => a.len(),
            Inserted::Duplicate => panic!("duplicate"),
        })
        .collect();
    assert_eq!(
        claimed,
        [1, 0, 0, 0, 0],
        "only the claimed action is handed back"
    );
    let now = now_ms() + 1_000;
    let mut listed = store.backlogged_endpoints(now).await.unwrap();
    listed.sort();
    assert_eq!(listed, [a, b]);
    // `a`: the four due now, two a page, by id; the parked one not yet.
    let page = store.claim_backlog(a, 2, now).await.unwrap();
    let ids: Vec<i64> = page.actions.iter().map(|p| p.id).collect();
    assert_eq!(ids, [1, 5]);
    assert!(page.more);
    let page = store.claim_backlog(a, 2, now).await.unwrap();
    assert_eq!(
        page.actions.iter().map(|p| p.id).collect::<Vec<_>>(),
        [7, 9]
    );
    assert!(!page.more, "the parked one is not due");
    assert!(!store
        .backlogged_endpoints(now)
        .await
        .unwrap()
        .contains(&a.to_string()));
    // Once due, it is found and claimed.
    assert!(store
        .backlogged_endpoints(later)
        .await
        .unwrap()
        .contains(&a.to_string()));
    let page = store.claim_backlog(a, 10, later).await.unwrap();
    assert_eq!(page.actions.len(), 1);
    assert!(page.actions[0].parked);
    assert_eq!(page.actions[0].not_before_ms, Some(later));
    // Every waiting action is counted, claimed or not.
    let counts = store.backlogs().await.unwrap();
    let waiting: Vec<(String, u64)> = counts
        .iter()
        .map(|c| (c.endpoint.clone(), c.waiting))
        .collect();
    assert_eq!(waiting, [(a.to_string(), 5), (b.to_string(), 5)]);
    assert!(counts.iter().all(|c| c.oldest_ms.is_some()));
    // An unknown endpoint has nothing.
    let none = store
        .claim_backlog("http://nope:1", 10, later)
        .await
        .unwrap();
    assert!(none.actions.is_empty() && !none.more);
    store.close().await;
    // The page is read through the backlog index, in its order: no sort.
    let c = Connection::open(&path).unwrap();
    let steps = plan(&c, BACKLOG_PAGE_QUERY, params![1, now, 10]);
    assert!(
        steps.iter().any(|s| s.contains("actions_backlog")),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s.contains("TEMP B-TREE")),
        "{steps:?}"
    );
    for sql in [BACKLOG_LEFT_QUERY, BACKLOGGED_QUERY] {
        let n = if sql == BACKLOG_LEFT_QUERY { 2 } else { 1 };
        let args: Vec<i64> = [1, now].into_iter().take(n).collect();
        let steps = plan(&c, sql, rusqlite::params_from_iter(args));
        assert!(
            steps.iter().any(|s| s.contains("actions_backlog")),
            "{sql}: {steps:?}"
        );
    }
    drop(c);
    assert_references_hold(&path);
}

#[tokio::test]
async fn a_version_5_database_gets_a_number_for_each_endpoint_and_its_waiting_actions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.db");
    let (a, b) = ("http://127.0.0.1:1", "http://127.0.0.1:2");
    {
        let store = SqliteStore::open(&path).unwrap();
        let events = (0..3)
            .map(|_| {
                NewEvent::new(
                    &event(),
                    vec![
                        webhook_action(&format!("{a}/h")),
                        webhook_action(&format!("{b}/h")),
                    ],
                )
            })
            .collect();
        store.insert(events).await.unwrap();
        store
            .apply(vec![Update::Delivered {
                id: 1,
                attempts: 1,
                status: Some(200),
            }])
            .await
            .unwrap();
        store.close().await;
    }
    // Back to version 5: no endpoint numbers, the index it had.
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP INDEX actions_backlog;
             DROP INDEX actions_by_status;
             ALTER TABLE actions DROP COLUMN lane;
             ALTER TABLE action_specs DROP COLUMN lane;
             DROP TABLE lanes;
             CREATE INDEX actions_by_status ON actions(status, claimed, id)
                 WHERE status <> 'delivered';
             PRAGMA user_version = 5;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let mut listed = store.backlogged_endpoints(i64::MAX).await.unwrap();
    listed.sort();
    assert_eq!(listed, [a, b]);
    let page = store.claim_backlog(a, 10, i64::MAX).await.unwrap();
    assert_eq!(
        page.actions.iter().map(|p| p.id).collect::<Vec<_>>(),
        [3, 5]
    );
    let page = store.claim_backlog(b, 10, i64::MAX).await.unwrap();
    assert_eq!(
        page.actions.iter().map(|p| p.id).collect::<Vec<_>>(),
        [2, 4, 6]
    );
    store.close().await;
    let c = Connection::open(&path).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let unnumbered: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM actions WHERE lane = 0 AND status <> 'delivered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unnumbered, 0);
    drop(c);
    assert_references_hold(&path);
}
