//! What the tests build events and actions from, and how they read a store
//! back.

use std::sync::Arc;

use breakwater::traits::{
    ActionConfig, EmailAction, EntityEvent, EventKind, LogAction, SlackAction, WebhookAction,
};
use breakwater_dispatch::store::{
    ActionId, ActionRecord, ActionStatus, EventRecord, Inserted, NewAction, NewEvent,
    PendingAction, Store, Update,
};
use uuid::Uuid;

/// The store under test.
pub(crate) type S = Arc<dyn Store>;

/// An hour, in ms.
pub(crate) const HOUR: i64 = 3_600_000;
/// A day, in ms.
pub(crate) const DAY: i64 = 24 * HOUR;

/// Three webhook receivers (never called: the store only keeps them).
pub(crate) const A: &str = "http://127.0.0.1:9001/hook";
pub(crate) const B: &str = "http://127.0.0.1:9002/hook";
pub(crate) const C: &str = "http://127.0.0.1:9003/hook";

/// The wall clock, Unix ms: only to pick times an hour or more away from
/// the times a store stamps.
pub(crate) fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A time after everything a test stores was accepted: "due now".
pub(crate) fn soon() -> i64 {
    wall_ms() + HOUR
}

/// A new event (a fresh id).
pub(crate) fn event() -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "Order",
        Uuid::new_v4(),
        serde_json::json!({"total": 42}),
    )
}

/// A log action asked for by `observer` (endpoint `log`).
pub(crate) fn log(observer: &str) -> NewAction {
    NewAction::new(
        observer,
        ActionConfig::Log(LogAction {
            level: "info".into(),
            message_template: None,
        }),
    )
}

/// A webhook to `url`, asked for by `observer`.
pub(crate) fn hook(observer: &str, url: &str) -> NewAction {
    NewAction::new(
        observer,
        ActionConfig::Webhook(WebhookAction {
            url: url.into(),
            method: "POST".into(),
            headers: [("x-test".to_string(), "1".to_string())].into(),
            body_template: Some("{{event.id}}".into()),
            signing_secret: None,
        }),
    )
}

/// An email, asked for by `observer`.
pub(crate) fn email(observer: &str) -> NewAction {
    NewAction::new(
        observer,
        ActionConfig::Email(EmailAction {
            to: vec!["ops@example.com".into()],
            subject: "order".into(),
            body_template: "{{event.id}}".into(),
        }),
    )
}

/// A Slack message to `url`, asked for by `observer`.
pub(crate) fn slack(observer: &str, url: &str) -> NewAction {
    NewAction::new(
        observer,
        ActionConfig::Slack(SlackAction {
            webhook_url: url.into(),
            channel: Some("#orders".into()),
            message_template: None,
        }),
    )
}

/// The endpoint (breaker key) of a webhook to `url`.
pub(crate) fn endpoint(url: &str) -> String {
    hook("o", url).endpoint().to_string()
}

/// The claimed actions of a stored event; panics on a duplicate.
pub(crate) fn stored(inserted: &Inserted) -> &[PendingAction] {
    match inserted {
        Inserted::New(actions) => actions,
        Inserted::Duplicate => panic!("stored as a duplicate"),
    }
}

/// Stores `event` with `actions`, alone in a batch; the actions handed
/// back (claimed).
pub(crate) async fn insert(
    s: &S,
    event: &EntityEvent,
    actions: Vec<NewAction>,
) -> Vec<PendingAction> {
    let out = s
        .insert(vec![NewEvent::new(event, actions)])
        .await
        .expect("insert");
    assert_eq!(out.len(), 1, "one outcome an event");
    stored(&out[0]).to_vec()
}

/// Records outcomes.
pub(crate) async fn apply(s: &S, updates: Vec<Update>) {
    s.apply(updates).await.expect("apply");
}

/// `id` delivered at its first attempt.
pub(crate) fn delivered(id: ActionId) -> Update {
    Update::Delivered {
        id,
        attempts: 1,
        status: Some(200),
    }
}

/// `id` dead-lettered at its first attempt with `error`.
pub(crate) fn dead(id: ActionId, error: &str) -> Update {
    Update::DeadLetter {
        id,
        attempts: 1,
        error: error.into(),
        status: Some(400),
    }
}

/// `id` failed and to be tried again at `not_before_ms`.
pub(crate) fn retry(id: ActionId, attempts: u32, not_before_ms: i64) -> Update {
    Update::Retry {
        id,
        attempts,
        not_before_ms,
        error: format!("HTTP 503 (attempt {attempts})"),
        status: Some(503),
    }
}

/// The stored event `id`; panics when there is none.
pub(crate) async fn record(s: &S, id: Uuid) -> EventRecord {
    s.event(id)
        .await
        .expect("event")
        .unwrap_or_else(|| panic!("event {id} is not stored"))
}

/// The record of action `id` in `rec`.
pub(crate) fn action(rec: &EventRecord, id: ActionId) -> &ActionRecord {
    rec.actions
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("action {id} is not in {rec:?}"))
}

/// `r` as lists show it ([`Store::dead_letters`], [`Store::actions`]):
/// without its attempts, which only its event's record has.
///
/// [`Store::dead_letters`]: breakwater_dispatch::store::Store::dead_letters
/// [`Store::actions`]: breakwater_dispatch::store::Store::actions
pub(crate) fn listed(r: &ActionRecord) -> ActionRecord {
    ActionRecord {
        attempt_history: None,
        ..r.clone()
    }
}

/// The state of action `id` of event `event`.
pub(crate) async fn action_of(s: &S, event: Uuid, id: ActionId) -> ActionRecord {
    action(&record(s, event).await, id).clone()
}

/// An RFC 3339 time, as Unix ms.
pub(crate) fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"))
        .timestamp_millis()
}

/// An action's `not_before`, as Unix ms.
pub(crate) fn not_before_ms(a: &ActionRecord) -> Option<i64> {
    a.not_before.as_deref().map(ms)
}

/// When event `id` was accepted, Unix ms.
pub(crate) async fn accepted_ms(s: &S, id: Uuid) -> i64 {
    ms(&record(s, id).await.accepted_at)
}

/// Returns once the store's clock is past `t` (a time it stamped): it
/// stores events without actions until one is accepted after `t`. Those
/// events stay, with nothing to deliver.
pub(crate) async fn after(s: &S, t: i64) {
    for _ in 0..100_000 {
        let probe = event();
        insert(s, &probe, Vec::new()).await;
        if accepted_ms(s, probe.id).await > t {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the store's clock never passed {t}");
}

/// The ids of `actions`.
pub(crate) fn ids(actions: &[PendingAction]) -> Vec<ActionId> {
    actions.iter().map(|a| a.id).collect()
}

/// Claims every action of `endpoint`'s backlog due by `due_by`, a page
/// of 100 at a time.
pub(crate) async fn claim_all(s: &S, endpoint: &str, due_by: i64) -> Vec<PendingAction> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = s
            .claim_backlog(endpoint, 100, due_by)
            .await
            .expect("claim_backlog");
        assert!(
            page.actions.len() <= 100,
            "a page of {}",
            page.actions.len()
        );
        let full = page.actions.len() == 100;
        out.extend(page.actions);
        if !page.more {
            return out;
        }
        assert!(full, "`more`, yet the page was not full");
    }
    panic!("{endpoint}'s backlog never ends");
}

/// The ids of every action of `endpoint`'s backlog due by `due_by`,
/// claimed.
pub(crate) async fn claim_ids(s: &S, endpoint: &str, due_by: i64) -> Vec<ActionId> {
    ids(&claim_all(s, endpoint, due_by).await)
}

/// The endpoints with unclaimed work due by `due_by`, sorted (the order
/// is not part of the contract; each is named once).
pub(crate) async fn due_endpoints(s: &S, due_by: i64) -> Vec<String> {
    let mut listed = s
        .backlogged_endpoints(due_by)
        .await
        .expect("backlogged_endpoints");
    let n = listed.len();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), n, "an endpoint named twice");
    listed
}

/// Every endpoint's waiting actions and the oldest one's accepted time,
/// sorted by endpoint; endpoints with none left out (a store may list them
/// or not).
pub(crate) async fn backlogs(s: &S) -> Vec<(String, u64, Option<i64>)> {
    let mut out: Vec<(String, u64, Option<i64>)> = Vec::new();
    for b in s.backlogs().await.expect("backlogs") {
        if b.waiting == 0 {
            assert_eq!(b.oldest_ms, None, "{b:?}: nothing waits, yet an oldest");
            continue;
        }
        assert!(b.oldest_ms.is_some(), "{b:?}: actions wait, but no oldest");
        out.push((b.endpoint, b.waiting, b.oldest_ms));
    }
    out.sort();
    let n = out.len();
    out.dedup_by(|a, b| a.0 == b.0);
    assert_eq!(out.len(), n, "an endpoint listed twice");
    out
}

/// Counts of actions by status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) pending: u64,
    pub(crate) parked: u64,
    pub(crate) delivered: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) held: u64,
}

/// The store's counts (a status it leaves out counts 0; none is listed
/// twice).
pub(crate) async fn counts(s: &S) -> Counts {
    let mut c = Counts::default();
    let mut seen = Vec::new();
    for (status, n) in s.counts().await.expect("counts") {
        assert!(!seen.contains(&status), "{status:?} counted twice");
        seen.push(status);
        *match status {
            ActionStatus::Pending => &mut c.pending,
            ActionStatus::Parked => &mut c.parked,
            ActionStatus::Delivered => &mut c.delivered,
            ActionStatus::DeadLettered => &mut c.dead_lettered,
            ActionStatus::Held => &mut c.held,
        } = n;
    }
    c
}

/// The ids of the dead letters (up to 1000), in the order listed.
pub(crate) async fn dead_letter_ids(s: &S) -> Vec<ActionId> {
    s.dead_letters(1000)
        .await
        .expect("dead_letters")
        .iter()
        .map(|d| d.id)
        .collect()
}

/// Checks that `p` is `a` of `event`, handed back with `attempts` used.
pub(crate) fn assert_is(p: &PendingAction, event: &EntityEvent, a: &NewAction, attempts: u32) {
    assert_eq!(p.event.id(), event.id, "{p:?}");
    assert_eq!(
        &p.event.to_event().expect("the event's JSON parses"),
        event,
        "{p:?}"
    );
    assert_eq!(p.observer, a.observer(), "{p:?}");
    assert_eq!(p.endpoint, a.endpoint(), "{p:?}");
    assert_eq!(*p.action, **a.action(), "{p:?}");
    assert_eq!(p.attempts, attempts, "{p:?}");
    assert_eq!(p.size, 0, "a store hands back size 0: {p:?}");
}

/// Checks that `r` is a record of `a` of `event`.
pub(crate) fn assert_record_of(r: &ActionRecord, event: &EntityEvent, a: &NewAction) {
    assert_eq!(r.event_id, event.id, "{r:?}");
    assert_eq!(r.observer, a.observer(), "{r:?}");
    assert_eq!(r.action_type, a.action().action_type(), "{r:?}");
    assert_eq!(r.endpoint, a.endpoint(), "{r:?}");
}
