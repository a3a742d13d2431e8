//! The statements that claim, read and update actions, and the rows they
//! read.

use std::borrow::Cow;
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::action_from_json;
use crate::store::history_rows::text;
use crate::store::{now_ms, rfc3339};
use crate::store::{
    ActionRecord, ActionStatus, EventJson, NewAction, NewEvent, PendingAction, StoreResult,
};

/// The next page of endpoint number `$1`'s backlog and one action more:
/// its unclaimed pending and parked actions due by `$2`, earliest due
/// first, at most `$3`, locked for the claim. Rows another instance is
/// claiming at the same moment are skipped, not waited for.
pub(super) const BACKLOG_PAGE: &str = "
SELECT id FROM actions
WHERE holder IS NULL AND status IN ('pending', 'parked') AND lane = $1
  AND COALESCE(not_before, accepted_at) <= $2
ORDER BY COALESCE(not_before, accepted_at), id
LIMIT $3
FOR UPDATE SKIP LOCKED";

/// Claims the actions with ids in `$1` for holder `$2` under epoch `$3`,
/// with their events, earliest due first.
pub(super) const CLAIM_IDS: &str = "
WITH claimed AS (
    UPDATE actions a SET holder = $2, epoch = $3
    WHERE a.id = ANY($1)
    RETURNING a.id, a.event, a.spec, a.attempts, a.replays, a.not_before, a.accepted_at,
              a.status)
SELECT c.id, s.observer, s.endpoint, s.action, c.attempts, c.replays, c.not_before,
       c.accepted_at, c.status, e.id AS event_id, e.body
FROM claimed c JOIN events e ON e.id = c.event JOIN action_specs s ON s.id = c.spec
ORDER BY COALESCE(c.not_before, c.accepted_at), c.id";

/// The endpoints with unclaimed waiting actions due by `$1`.
pub(super) const BACKLOGGED: &str = "
SELECT p.endpoint FROM endpoints p
WHERE EXISTS (SELECT 1 FROM actions a
              WHERE a.holder IS NULL AND a.status IN ('pending', 'parked') AND a.lane = p.lane
                AND COALESCE(a.not_before, a.accepted_at) <= $1)
ORDER BY p.endpoint";

/// Each endpoint's waiting actions: how many, and when the oldest was
/// accepted.
pub(super) const BACKLOGS: &str = "
SELECT p.endpoint, c.n, c.oldest
FROM (SELECT lane, COUNT(*) AS n, MIN(accepted_at) AS oldest FROM actions
      WHERE status <> 'delivered' AND status IN ('pending', 'parked')
      GROUP BY lane) c
JOIN endpoints p ON p.lane = c.lane
ORDER BY p.endpoint";

/// The columns of an action's record ([`row_to_record`]), from `actions a`
/// with its event `e`, its spec `s` and its endpoint's row `p`.
macro_rules! record {
    () => {
        "SELECT a.id, a.event AS event_id, s.observer, s.action_type, s.endpoint, a.status,
                a.attempts, a.not_before, a.last_error, a.last_status, p.parked_until,
                a.accepted_at, e.event_type, e.entity_type, a.replays
         FROM actions a JOIN events e ON e.id = a.event
         JOIN action_specs s ON s.id = a.spec
         LEFT JOIN endpoints p ON p.endpoint = s.endpoint"
    };
}
pub(super) use record;

/// Event `$1`'s actions.
pub(super) const EVENT_ACTIONS: &str = concat!(record!(), " WHERE a.event = $1 ORDER BY a.id");

/// Makes the actions held for endpoint `$1` pending again, at time `$2`.
pub(super) const RELEASE_HELD: &str = "
UPDATE actions SET status = 'pending', holder = NULL, epoch = NULL, not_before = NULL,
       updated_at = $2
WHERE status <> 'delivered' AND status = 'held'
  AND lane = (SELECT lane FROM endpoints WHERE endpoint = $1)";

/// The first `$1` dead-lettered actions.
pub(super) const DEAD_LETTERS: &str = concat!(
    record!(),
    " WHERE a.status <> 'delivered' AND a.status = 'dead_lettered' ORDER BY a.id LIMIT $1"
);

/// Makes dead letters pending again at time `$1`, unclaimed (any instance
/// may claim them), one replay more, of no job: those with ids in `$2`, or
/// all when `$2` is `NULL`.
pub(super) const REPLAY_DEAD_LETTERS: &str = "
UPDATE actions SET status = 'pending', attempts = 0, holder = NULL, epoch = NULL,
       not_before = NULL, replays = replays + 1, replay_job = NULL, updated_at = $1
WHERE status <> 'delivered' AND status = 'dead_lettered'
  AND ($2::int8[] IS NULL OR id = ANY($2))";

/// Removes dead letters with their attempts: those with ids in `$1`, or
/// all when `$1` is `NULL`; counts them.
pub(super) const PURGE_DEAD_LETTERS: &str = "
WITH gone AS (
    DELETE FROM actions
    WHERE status <> 'delivered' AND status = 'dead_lettered'
      AND ($1::int8[] IS NULL OR id = ANY($1))
    RETURNING id),
 attempts_gone AS (
    DELETE FROM attempts t USING gone WHERE t.action_id = gone.id)
SELECT COUNT(*) FROM gone";

/// When the oldest action still to be delivered was accepted.
pub(super) const OLDEST_PENDING: &str = "
SELECT MIN(accepted_at) FROM actions
WHERE status <> 'delivered' AND status IN ('pending', 'parked', 'held')";

pub(super) fn row_to_pending(row: &Row, claim_epoch: i64) -> StoreResult<PendingAction> {
    let action: String = row.get("action");
    let event_id: Uuid = row.get("event_id");
    let body: String = row.get("body");
    Ok(PendingAction {
        id: row.get("id"),
        event: Arc::new(EventJson::from_stored(event_id, body)),
        observer: row.get("observer"),
        endpoint: row.get("endpoint"),
        action: Arc::new(action_from_json(&action)?),
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        replays: row.get::<_, i32>("replays").max(0) as u32,
        accepted_at_ms: row.get("accepted_at"),
        not_before_ms: row.get("not_before"),
        parked: row.get::<_, &str>("status") == "parked",
        size: 0,
        claim_epoch,
    })
}

pub(super) fn row_to_record(row: &Row) -> ActionRecord {
    let (status, not_before) = crate::store::as_shown(
        ActionStatus::parse(row.get("status")),
        row.get("not_before"),
        row.get("parked_until"),
        now_ms(),
    );
    ActionRecord {
        id: row.get("id"),
        event_id: row.get("event_id"),
        observer: row.get("observer"),
        action_type: row.get("action_type"),
        endpoint: row.get("endpoint"),
        status,
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        not_before: not_before
            .filter(|_| matches!(status, ActionStatus::Pending | ActionStatus::Parked))
            .map(rfc3339),
        last_error: row.get("last_error"),
        last_status: row
            .get::<_, Option<i32>>("last_status")
            .and_then(|s| u16::try_from(s).ok()),
        accepted_at: rfc3339(row.get("accepted_at")),
        event_type: row.get("event_type"),
        entity_type: row.get("entity_type"),
        replays: row.get::<_, i32>("replays").max(0) as u32,
        attempt_history: None,
    }
}

/// New event rows, column by column, inserted with their actions
/// ([`ActionColumns::insert_with_events`]).
#[derive(Debug, Default)]
pub(super) struct EventColumns<'a> {
    ids: Vec<Uuid>,
    bodies: Vec<&'a str>,
    event_types: Vec<&'a str>,
    entity_types: Vec<Cow<'a, str>>,
    entity_ids: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// Adds `e`.
    pub(super) fn push(&mut self, e: &'a NewEvent) {
        self.ids.push(e.event.id());
        self.bodies.push(e.event.json());
        self.event_types.push(&e.keys.event_type);
        // Any text an event gave (the others are an enum's name and a
        // UUID): Postgres refuses NUL in text.
        self.entity_types.push(text(&e.keys.entity_type));
        self.entity_ids.push(&e.keys.entity_id);
    }
}

/// New action rows, column by column, inserted in one statement.
#[derive(Debug, Default)]
pub(super) struct ActionColumns {
    id: Vec<i64>,
    event: Vec<Uuid>,
    spec: Vec<i32>,
    lane: Vec<i32>,
    status: Vec<&'static str>,
    not_before: Vec<Option<i64>>,
    last_error: Vec<Option<String>>,
    holder: Vec<Option<String>>,
    epoch: Vec<Option<i64>>,
}

impl ActionColumns {
    /// Adds action `a` with id `id` of event `event`, claimed by `holder`
    /// (instance and epoch) or not.
    pub(super) fn push(
        &mut self,
        id: i64,
        event: Uuid,
        spec: i32,
        lane: i32,
        a: &NewAction,
        holder: Option<(&str, i64)>,
    ) {
        self.id.push(id);
        self.event.push(event);
        self.spec.push(spec);
        self.lane.push(lane);
        self.status.push(a.status().as_str());
        self.not_before.push(
            a.parked_until_ms()
                .filter(|_| a.dead_letter_reason().is_none()),
        );
        self.last_error
            .push(a.dead_letter_reason().map(str::to_string));
        self.holder.push(holder.map(|(h, _)| h.to_string()));
        self.epoch.push(holder.map(|(_, e)| e));
    }

    /// Inserts `events`, accepted at `now`, and these rows for the events
    /// that were not stored yet, in one statement; returns the ids of the
    /// events it stored.
    pub(super) async fn insert_with_events(
        &self,
        client: &deadpool_postgres::Object,
        events: &EventColumns<'_>,
        now: i64,
    ) -> Result<Vec<Uuid>, tokio_postgres::Error> {
        let stmt = client
            .prepare_cached(
                "WITH ev AS (
                    INSERT INTO events (id, body, accepted_at, event_type, entity_type, entity_id)
                    SELECT id, body, $3, event_type, entity_type, entity_id
                    FROM unnest($1::uuid[], $2::text[], $13::text[], $14::text[], $15::text[])
                         AS n(id, body, event_type, entity_type, entity_id)
                    ORDER BY id
                    ON CONFLICT (id) DO NOTHING RETURNING id),
                 ac AS (
                    INSERT INTO actions (id, event, spec, lane, status, not_before, last_error,
                                         holder, epoch, accepted_at, updated_at)
                    SELECT n.id, n.event, n.spec, n.lane, n.status, n.not_before, n.last_error,
                           n.holder, n.epoch, $3, $3
                    FROM unnest($4::int8[], $5::uuid[], $6::int4[], $7::int4[], $8::text[],
                                $9::int8[], $10::text[], $11::text[], $12::int8[])
                         AS n(id, event, spec, lane, status, not_before, last_error, holder, epoch)
                    WHERE n.event IN (SELECT id FROM ev))
                 SELECT id FROM ev",
            )
            .await?;
        Ok(client
            .query(
                &stmt,
                &[
                    &events.ids,
                    &events.bodies,
                    &now,
                    &self.id,
                    &self.event,
                    &self.spec,
                    &self.lane,
                    &self.status,
                    &self.not_before,
                    &self.last_error,
                    &self.holder,
                    &self.epoch,
                    &events.event_types,
                    &events.entity_types,
                    &events.entity_ids,
                ],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}
