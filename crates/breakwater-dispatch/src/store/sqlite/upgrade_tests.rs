//! A version 7 file (before the history) brought up to date: every row
//! kept, the events' keys read from their JSON, and the history written
//! and read on it.

use breakwater::traits::{ActionConfig, EntityEvent, EventKind, LogAction, WebhookAction};
use rusqlite::params;

use super::schema::SCHEMA_VERSION;
use super::tests::assert_references_hold;
use super::*;
use crate::store::{ActionFilter, Attempt, AttemptOutcome, Trigger};

/// Version 7's tables, as a file written by an older binary has them.
const SCHEMA_V7: &str = "
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    first_action INTEGER,
    last_action INTEGER
);
CREATE INDEX events_by_time ON events(accepted_at);
CREATE TABLE lanes (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL UNIQUE
);
CREATE TABLE action_specs (
    id INTEGER PRIMARY KEY,
    observer TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    action_type TEXT NOT NULL,
    action TEXT NOT NULL,
    lane INTEGER NOT NULL DEFAULT 0,
    UNIQUE (observer, endpoint, action_type, action)
);
CREATE TABLE actions (
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
    lane INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX actions_by_status ON actions(status, lane, id)
    WHERE status <> 'delivered';
CREATE INDEX actions_backlog
    ON actions(lane, COALESCE(not_before, accepted_at), id)
    WHERE claimed = 0 AND status IN ('pending', 'parked');
CREATE TABLE endpoints (
    endpoint TEXT PRIMARY KEY,
    snapshot TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    parked_until INTEGER
);
";

const HOOK: &str = "http://127.0.0.1:1/h";

fn hook() -> ActionConfig {
    ActionConfig::Webhook(WebhookAction {
        url: HOOK.into(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: None,
    })
}

fn log() -> ActionConfig {
    ActionConfig::Log(LogAction {
        level: "info".into(),
        message_template: None,
    })
}

fn event(kind: EventKind, entity: &str) -> EntityEvent {
    EntityEvent::new(kind, entity, Uuid::new_v4(), serde_json::json!({"n": "é"}))
}

#[tokio::test]
async fn a_version_7_file_keeps_every_row_and_gets_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v7.db");
    let (customer, order) = (
        event(EventKind::Update, "Customer"),
        event(EventKind::Insert, "Order"),
    );
    let broken = Uuid::new_v4();
    let endpoint = hook().endpoint().to_string();
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V7).unwrap();
        c.execute(
            "INSERT INTO lanes VALUES (1, ?1), (2, 'log')",
            params![endpoint],
        )
        .unwrap();
        c.execute(
            "INSERT INTO action_specs VALUES (1, 'o', ?1, 'webhook', ?2, 1),
                                             (2, 'o', 'log', 'log', ?3, 2)",
            params![
                endpoint,
                serde_json::to_string(&hook()).unwrap(),
                serde_json::to_string(&log()).unwrap()
            ],
        )
        .unwrap();
        for (seq, id, body, at, range) in [
            (
                1,
                customer.id,
                serde_json::to_string(&customer).unwrap(),
                1000,
                Some((1, 3)),
            ),
            (
                2,
                order.id,
                serde_json::to_string(&order).unwrap(),
                2000,
                Some((4, 4)),
            ),
            (3, broken, "not JSON".to_string(), 3000, None),
        ] {
            c.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    seq,
                    id.to_string(),
                    body,
                    at,
                    range.map(|r| r.0),
                    range.map(|r| r.1)
                ],
            )
            .unwrap();
        }
        // Action 1 was delivered before version 6: its endpoint's number
        // was never written (0).
        c.execute_batch(
            "INSERT INTO actions (id, event, spec, status, attempts, not_before, last_error,
                                  last_status, claimed, accepted_at, updated_at, lane)
             VALUES (1, 1, 1, 'delivered', 1, NULL, NULL, 200, 0, 1000, 1000, 0),
                    (2, 1, 1, 'dead_lettered', 5, NULL, 'HTTP 500', 500, 0, 1000, 1500, 1),
                    (3, 1, 2, 'pending', 0, NULL, NULL, NULL, 0, 1000, 1000, 2),
                    (4, 2, 1, 'pending', 2, 5000, 'HTTP 503', 503, 1, 2000, 2500, 1);
             INSERT INTO endpoints (endpoint, snapshot) VALUES ('http://127.0.0.1:1', '{}');
             PRAGMA user_version = 7;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();

    let rec = store.event(customer.id).await.unwrap().expect("kept");
    assert_eq!(rec.accepted_at, rfc3339(1000));
    let summary: Vec<_> = rec
        .actions
        .iter()
        .map(|a| {
            (
                a.id,
                a.status,
                a.attempts,
                a.last_error.as_deref(),
                a.last_status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, ActionStatus::Delivered, 1, None, Some(200)),
            (
                2,
                ActionStatus::DeadLettered,
                5,
                Some("HTTP 500"),
                Some(500)
            ),
            (3, ActionStatus::Pending, 0, None, None),
        ]
    );
    for a in &rec.actions {
        assert_eq!(
            (a.event_type.as_str(), a.entity_type.as_str(), a.replays),
            ("UPDATE", "Customer", 0)
        );
        assert_eq!(a.accepted_at, rec.accepted_at);
        assert_eq!(a.attempt_history, Some(Vec::new()));
    }
    // Searched by the keys read from the JSON.
    let by_entity = ActionFilter {
        entity_id: Some(order.entity_id.to_string()),
        ..ActionFilter::default()
    };
    let page = store.actions(&by_entity, None, 10).await.unwrap();
    assert_eq!(page.actions.iter().map(|a| a.id).collect::<Vec<_>>(), [4]);
    assert_eq!(page.actions[0].entity_type, "Order");
    assert_eq!(
        store.count_actions(&ActionFilter::default()).await.unwrap(),
        4
    );
    let c = Connection::open(&path).unwrap();
    let keys: (String, String, String) = c
        .query_row(
            "SELECT event_type, entity_type, entity_id FROM events WHERE seq = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(keys, (String::new(), String::new(), String::new()));
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(c);

    // The old delivered action and the dead letter replay into the
    // endpoint's backlog, beside the action released at open.
    assert_eq!(store.replay_actions(&[1, 2, 3, 4], None).await.unwrap(), 2);
    let page = store.claim_backlog(&endpoint, 10, i64::MAX).await.unwrap();
    let claimed: Vec<_> = page
        .actions
        .iter()
        .map(|p| (p.id, p.attempts, p.replays))
        .collect();
    assert_eq!(claimed, [(1, 0, 1), (2, 0, 1), (4, 2, 0)]);
    let made = Attempt {
        number: 1,
        trigger: Trigger::Replay,
        breaker_state: "closed".into(),
        started_at_ms: now_ms(),
        duration_ms: 3,
        outcome: AttemptOutcome::Success,
        error_kind: None,
        status: Some(200),
        error: None,
        request: None,
        response_headers: Vec::new(),
        response_body: None,
    };
    store
        .apply(vec![
            Update::Attempt {
                id: 1,
                attempt: Box::new(made.clone()),
            },
            Update::Delivered {
                id: 1,
                attempts: 1,
                status: Some(200),
            },
        ])
        .await
        .unwrap();
    let rec = store.event(customer.id).await.unwrap().unwrap();
    let history = rec.actions[0]
        .attempt_history
        .as_deref()
        .unwrap_or_default();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].attempt, made);
    assert_eq!(history[0].endpoint, endpoint);
    assert_eq!(
        store
            .endpoint_attempts(&endpoint, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The id sequence goes on.
    let new = store
        .insert(vec![NewEvent::new(
            &event(EventKind::Insert, "Order"),
            vec![crate::store::NewAction::new("o", log())],
        )])
        .await
        .unwrap();
    match &new[0] {
        Inserted::New(a) => assert_eq!(a[0].id, 5),
        Inserted::Duplicate => panic!("a duplicate"),
    }
    store.close().await;
    assert_references_hold(&path);
}

#[tokio::test]
async fn an_event_stored_now_keeps_its_keys_in_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&path).unwrap();
    let e = event(EventKind::Delete, "Invoice");
    store
        .insert(vec![NewEvent::new(&e, Vec::new())])
        .await
        .unwrap();
    store.close().await;
    let c = Connection::open(&path).unwrap();
    let keys: (String, String, String) = c
        .query_row(
            "SELECT event_type, entity_type, entity_id FROM events WHERE id = ?1",
            params![e.id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        keys,
        (
            "DELETE".to_string(),
            "Invoice".to_string(),
            e.entity_id.to_string()
        )
    );
}
