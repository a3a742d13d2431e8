//! The history: attempts ([`Update::Attempt`], [`Store::event`],
//! [`Store::endpoint_attempts`]), actions by filter ([`Store::actions`],
//! [`Store::count_actions`], [`Store::action`]), replays and purges
//! ([`Store::replay_actions`], [`Store::purge_actions`]), replay jobs, the
//! audit log and [`Store::endpoint_counts`].
//!
//! [`Update::Attempt`]: breakwater_dispatch::store::Update::Attempt
//! [`Store::event`]: breakwater_dispatch::store::Store::event
//! [`Store::endpoint_attempts`]: breakwater_dispatch::store::Store::endpoint_attempts
//! [`Store::actions`]: breakwater_dispatch::store::Store::actions
//! [`Store::count_actions`]: breakwater_dispatch::store::Store::count_actions
//! [`Store::action`]: breakwater_dispatch::store::Store::action
//! [`Store::replay_actions`]: breakwater_dispatch::store::Store::replay_actions
//! [`Store::purge_actions`]: breakwater_dispatch::store::Store::purge_actions
//! [`Store::endpoint_counts`]: breakwater_dispatch::store::Store::endpoint_counts

use std::collections::HashSet;

use breakwater::traits::{EntityEvent, EventKind};
use breakwater_dispatch::store::{
    ActionFilter, ActionId, ActionRecord, ActionStatus, Attempt, AttemptOutcome, AttemptRecord,
    AuditEntry, EndpointCounts, EventKeys, ReplayState, RequestRecord, Trigger, Update,
};
use uuid::Uuid;

use crate::backends::Handle;
use crate::fixtures::*;

/// An attempt numbered `number`, started at `started_ms`, that came to
/// `outcome` with `status`.
fn attempt(number: u32, outcome: AttemptOutcome, status: Option<u16>, started_ms: i64) -> Attempt {
    let failed = outcome != AttemptOutcome::Success;
    Attempt {
        number,
        trigger: if number == 1 {
            Trigger::Scheduled
        } else {
            Trigger::Retry
        },
        breaker_state: "closed".into(),
        started_at_ms: started_ms,
        duration_ms: 12 + u64::from(number),
        outcome,
        error_kind: failed.then(|| "http_5xx".to_string()),
        status,
        error: failed.then(|| format!("HTTP {status:?}")),
        request: Some(RequestRecord {
            method: "POST".into(),
            url: "http://127.0.0.1:9001/hook".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-signature".into(), "[redacted]".into()),
            ],
        }),
        response_headers: vec![("content-length".into(), "2".into())],
        response_body: Some("ok".into()),
    }
}

/// `attempt` of action `id`, to record.
fn recorded(id: ActionId, attempt: &Attempt) -> Update {
    Update::Attempt {
        id,
        attempt: Box::new(attempt.clone()),
    }
}

/// The attempts of action `id` as its event's record shows them.
async fn history_of(s: &S, event: Uuid, id: ActionId) -> Vec<AttemptRecord> {
    let a = action_of(s, event, id).await;
    match a.attempt_history {
        Some(history) => history,
        None => panic!("an event's record has every action's attempts: action {id}"),
    }
}

/// What was recorded of each of `history`.
fn attempts(history: &[AttemptRecord]) -> Vec<&Attempt> {
    history.iter().map(|r| &r.attempt).collect()
}

/// The ids of `endpoint`'s attempts, newest first, below `before`, at most
/// `limit`.
async fn endpoint_attempt_ids(
    s: &S,
    endpoint: &str,
    before: Option<i64>,
    limit: usize,
) -> Vec<i64> {
    s.endpoint_attempts(endpoint, before, limit)
        .await
        .expect("endpoint_attempts")
        .iter()
        .map(|a| a.id)
        .collect()
}

/// The ids of every action matching `filter`, newest first, read a page of
/// `page` at a time; checks that `count_actions` agrees.
async fn matching(s: &S, filter: &ActionFilter, page: usize) -> Vec<ActionId> {
    let mut out = Vec::new();
    let mut before = None;
    for _ in 0..10_000 {
        let p = s.actions(filter, before, page).await.expect("actions");
        assert!(
            p.actions.len() <= page,
            "{filter:?}: a page of {}",
            p.actions.len()
        );
        for a in &p.actions {
            assert!(
                a.attempt_history.is_none(),
                "a list leaves attempts out: {a:?}"
            );
        }
        out.extend(p.actions.iter().map(|a| a.id));
        match p.next {
            Some(next) => {
                assert_eq!(
                    p.actions.len(),
                    page,
                    "{filter:?}: a cursor after a short page"
                );
                assert_eq!(Some(next), out.last().copied(), "the cursor is the last id");
                before = Some(next);
            }
            None => {
                assert!(
                    p.actions.len() < page,
                    "{filter:?}: a full page without a cursor"
                );
                let n = s.count_actions(filter).await.expect("count_actions");
                assert_eq!(n, out.len() as u64, "{filter:?}: count_actions");
                return out;
            }
        }
    }
    panic!("{filter:?}: the pages never end");
}

/// Every attempt is recorded with its action, oldest first in its event's
/// record, newest first by endpoint, a page at a time; lists leave the
/// attempts out; an attempt of an action the store does not have changes
/// nothing; an action never attempted has an empty history.
pub(crate) async fn attempts_are_recorded_with_their_action_in_order(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), hook("o", A), hook("o", B)]).await;
    let [a, b, c] = [back[0].id, back[1].id, back[2].id];
    let t = wall_ms();
    let a1 = attempt(1, AttemptOutcome::Transient, Some(503), t);
    let b1 = attempt(1, AttemptOutcome::Success, Some(200), t + 1);
    let a2 = Attempt {
        error_kind: Some("timeout".into()),
        status: None,
        response_headers: Vec::new(),
        response_body: None,
        ..attempt(2, AttemptOutcome::Timeout, None, t + 100)
    };
    let a3 = Attempt {
        trigger: Trigger::Probe,
        breaker_state: "half_open".into(),
        request: None,
        ..attempt(3, AttemptOutcome::Success, Some(204), t + 300)
    };
    apply(
        &s,
        vec![
            recorded(a, &a1),
            retry(a, 1, t + 100),
            recorded(b, &b1),
            delivered(b),
            recorded(-1, &a1),
        ],
    )
    .await;
    apply(&s, vec![recorded(a, &a2), retry(a, 2, t + 300)]).await;
    apply(
        &s,
        vec![
            recorded(a, &a3),
            Update::Delivered {
                id: a,
                attempts: 3,
                status: Some(204),
            },
        ],
    )
    .await;

    let history = history_of(&s, e.id, a).await;
    assert_eq!(attempts(&history), [&a1, &a2, &a3]);
    for r in &history {
        assert_eq!((r.action_id, r.event_id), (a, e.id), "{r:?}");
        assert_eq!(r.endpoint, endpoint(A), "{r:?}");
        assert_eq!(ms(&r.started_at), r.attempt.started_at_ms, "{r:?}");
    }
    assert!(history.windows(2).all(|w| w[0].id < w[1].id), "{history:?}");
    assert_eq!(attempts(&history_of(&s, e.id, b).await), [&b1]);
    assert!(history_of(&s, e.id, c).await.is_empty());

    // By endpoint, newest first: a1 and b1 were written in one batch, in
    // that order, then a2 and a3.
    let by_a = s.endpoint_attempts(&endpoint(A), None, 10).await.unwrap();
    let ids: Vec<i64> = by_a.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        [
            history[2].id,
            history[1].id,
            history_of(&s, e.id, b).await[0].id,
            history[0].id
        ]
    );
    assert_eq!(by_a[0], history[2], "as the event's record shows it");
    assert_eq!(
        endpoint_attempt_ids(&s, &endpoint(A), None, 2).await,
        ids[..2]
    );
    assert_eq!(
        endpoint_attempt_ids(&s, &endpoint(A), Some(ids[1]), 10).await,
        ids[2..]
    );
    assert!(endpoint_attempt_ids(&s, &endpoint(B), None, 10)
        .await
        .is_empty());
    assert!(endpoint_attempt_ids(&s, "http://nowhere:1", None, 10)
        .await
        .is_empty());

    let listed = s.action(a).await.unwrap().expect("action a");
    assert_eq!(listed.attempt_history, None);
    assert_eq!(
        (listed.status, listed.attempts),
        (ActionStatus::Delivered, 3)
    );
    assert_eq!(s.action(-1).await.unwrap(), None);
    // Kept over a restart.
    db.reopen().await;
    let s = db.store();
    assert_eq!(attempts(&history_of(&s, e.id, a).await), [&a1, &a2, &a3]);
}

/// An attempt is kept even when the outcome written after it is not
/// applied (a store shared by a fleet ignores an outcome of an action its
/// instance no longer holds, here after a restart released its claims):
/// the attempt was made all the same.
pub(crate) async fn an_attempt_is_kept_even_when_its_outcome_is_not(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let a = insert(&s, &e, vec![hook("o", A)]).await[0].id;
    db.reopen().await;
    let s = db.store();
    let made = attempt(1, AttemptOutcome::Success, Some(200), wall_ms());
    apply(&s, vec![recorded(a, &made), delivered(a)]).await;
    assert_eq!(attempts(&history_of(&s, e.id, a).await), [&made]);
}

/// An action's record carries its event's acceptance time, type and
/// entity type and its replays, in lists as in its event's record.
pub(crate) async fn action_records_carry_their_events_keys(db: &mut dyn Handle) {
    let s = db.store();
    let e = EntityEvent::new(
        EventKind::Update,
        "Customer",
        Uuid::new_v4(),
        serde_json::json!({"name": "Zoë"}),
    );
    let a = insert(&s, &e, vec![hook("o", A)]).await[0].id;
    let rec = record(&s, e.id).await;
    let r = action(&rec, a);
    let keys = EventKeys::of(&e);
    assert_eq!(r.accepted_at, rec.accepted_at, "{r:?}");
    assert_eq!(
        (&r.event_type, &r.entity_type),
        (&keys.event_type, &keys.entity_type)
    );
    assert_eq!(r.replays, 0);
    assert_eq!(s.action(a).await.unwrap(), Some(listed(r)));
}

/// A response body is stored as the engine gives it (the cut to
/// `response_body_bytes` is made before the store): a megabyte comes back
/// byte for byte, non-ASCII text and all, through the event's record and
/// the endpoint's attempts. NUL, which Postgres cannot keep in text, comes
/// back as U+FFFD on every backend.
pub(crate) async fn a_response_body_comes_back_byte_for_byte(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let a = insert(&s, &e, vec![hook("o", A)]).await[0].id;
    let unit = "é漢🙂 <b>\"quoted\" \\ back</b>\r\n\t";
    let mut body = unit.repeat((1 << 20) / unit.len() + 1);
    let mut cut = 1 << 20;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
    let big = Attempt {
        error: Some("HTTP 500: défaillance — 故障".into()),
        response_headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("x-note".into(), "naïve ✓".into()),
        ],
        response_body: Some(body.clone()),
        ..attempt(1, AttemptOutcome::Transient, Some(500), wall_ms())
    };
    let nul = Attempt {
        error: Some("bad\0byte".into()),
        response_body: Some("a\0b".into()),
        ..attempt(2, AttemptOutcome::Transient, Some(500), wall_ms())
    };
    apply(
        &s,
        vec![
            recorded(a, &big),
            retry(a, 1, wall_ms()),
            recorded(a, &nul),
            retry(a, 2, wall_ms()),
        ],
    )
    .await;
    let history = history_of(&s, e.id, a).await;
    assert_eq!(history.len(), 2);
    let stored = history[0]
        .attempt
        .response_body
        .as_deref()
        .unwrap_or_default();
    assert_eq!(stored.len(), body.len());
    assert!(stored == body, "the body changed");
    assert_eq!(history[0].attempt, big);
    assert_eq!(
        history[1].attempt.response_body.as_deref(),
        Some("a\u{FFFD}b")
    );
    assert_eq!(history[1].attempt.error.as_deref(), Some("bad\u{FFFD}byte"));
    let by_endpoint = s.endpoint_attempts(&endpoint(A), None, 10).await.unwrap();
    assert_eq!(by_endpoint.len(), 2);
    assert_eq!(by_endpoint[1], history[0]);
}

/// Attempts go with their action: removed when its delivered event is
/// pruned, kept with a dead letter (and with the event kept for it), and
/// removed when the dead letter is purged.
pub(crate) async fn attempts_go_with_pruned_events_and_stay_with_dead_letters(db: &mut dyn Handle) {
    let s = db.store();
    let (done, dead_event) = (event(), event());
    let d = insert(&s, &done, vec![hook("o", A)]).await[0].id;
    let x = insert(&s, &dead_event, vec![hook("o", A)]).await[0].id;
    let t = wall_ms();
    let d1 = attempt(1, AttemptOutcome::Success, Some(200), t);
    let x1 = attempt(1, AttemptOutcome::Permanent, Some(400), t);
    apply(
        &s,
        vec![
            recorded(d, &d1),
            delivered(d),
            recorded(x, &x1),
            dead(x, "HTTP 400"),
        ],
    )
    .await;
    let before = endpoint_attempt_ids(&s, &endpoint(A), None, 10).await;
    assert_eq!(before.len(), 2);
    assert_eq!(s.prune_delivered(soon(), 10).await.unwrap(), 1);
    assert!(s.event(done.id).await.unwrap().is_none());
    let left = s.endpoint_attempts(&endpoint(A), None, 10).await.unwrap();
    assert_eq!(left.iter().map(|r| r.action_id).collect::<Vec<_>>(), [x]);
    assert_eq!(attempts(&history_of(&s, dead_event.id, x).await), [&x1]);

    assert_eq!(s.purge_actions(&[x]).await.unwrap(), 1);
    assert!(endpoint_attempt_ids(&s, &endpoint(A), None, 10)
        .await
        .is_empty());
    assert!(record(&s, dead_event.id).await.actions.is_empty());
}

/// `purge_actions` deletes only the dead letters among the ids it is
/// given, with their attempts, and says how many; `purge_dead_letters`
/// takes their attempts too.
pub(crate) async fn purge_actions_deletes_only_dead_letters_with_their_attempts(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let e = event();
    let back = insert(
        &s,
        &e,
        vec![hook("o", A), hook("o", A), hook("o", A), hook("o", A)],
    )
    .await;
    let [p, dl, d1, d2] = [back[0].id, back[1].id, back[2].id, back[3].id];
    let t = wall_ms();
    let one = attempt(1, AttemptOutcome::Permanent, Some(400), t);
    apply(
        &s,
        vec![
            recorded(p, &one),
            retry(p, 1, t + HOUR),
            recorded(dl, &one),
            delivered(dl),
            recorded(d1, &one),
            dead(d1, "HTTP 400"),
            recorded(d2, &one),
            dead(d2, "HTTP 400"),
        ],
    )
    .await;
    assert_eq!(s.purge_actions(&[]).await.unwrap(), 0);
    assert_eq!(s.purge_actions(&[p, dl, d1, -1]).await.unwrap(), 1);
    let rec = record(&s, e.id).await;
    assert_eq!(
        rec.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
        [p, dl, d2]
    );
    for id in [p, dl, d2] {
        assert_eq!(history_of(&s, e.id, id).await.len(), 1);
    }
    let mut left: Vec<ActionId> = s
        .endpoint_attempts(&endpoint(A), None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.action_id)
        .collect();
    left.sort_unstable();
    assert_eq!(left, [p, dl, d2]);
    assert_eq!(s.purge_dead_letters(None).await.unwrap(), 1);
    let mut left: Vec<ActionId> = s
        .endpoint_attempts(&endpoint(A), None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.action_id)
        .collect();
    left.sort_unstable();
    assert_eq!(left, [p, dl]);
}

/// Three events of different types and entities, accepted one after the
/// other, with actions in every status: what the filter tests read.
struct Spread {
    events: [EntityEvent; 3],
    /// Accepted times of the three events.
    times: [i64; 3],
    /// a1..a7 (see [`spread`]).
    ids: [ActionId; 7],
}

/// e1 (INSERT Order): a1 `o1`→A delivered, a2 `o2`→B dead-lettered, a3
/// `o1`→log pending. e2 (UPDATE Customer): a4 `o1`→A pending, a5 `o2`→B
/// held. e3 (DELETE Order): a6 `o1`→C parked by itself, a7 `o2`→C pending
/// while C's circuit parks its actions (it shows parked).
async fn spread(s: &S) -> Spread {
    let mk = |kind, entity: &str| {
        EntityEvent::new(kind, entity, Uuid::new_v4(), serde_json::json!({"k": 1}))
    };
    let events = [
        mk(EventKind::Insert, "Order"),
        mk(EventKind::Update, "Customer"),
        mk(EventKind::Delete, "Order"),
    ];
    let mut times = [0; 3];
    let b1 = insert(s, &events[0], vec![hook("o1", A), hook("o2", B), log("o1")]).await;
    times[0] = accepted_ms(s, events[0].id).await;
    after(s, times[0]).await;
    let b2 = insert(s, &events[1], vec![hook("o1", A), hook("o2", B)]).await;
    times[1] = accepted_ms(s, events[1].id).await;
    after(s, times[1]).await;
    let later = wall_ms() + DAY;
    insert(
        s,
        &events[2],
        vec![
            hook("o1", C).backlogged().parked_until(later),
            hook("o2", C).backlogged(),
        ],
    )
    .await;
    times[2] = accepted_ms(s, events[2].id).await;
    let r3 = record(s, events[2].id).await;
    let ids = [
        b1[0].id,
        b1[1].id,
        b1[2].id,
        b2[0].id,
        b2[1].id,
        r3.actions[0].id,
        r3.actions[1].id,
    ];
    apply(
        s,
        vec![
            delivered(ids[0]),
            dead(ids[1], "HTTP 400"),
            Update::Held {
                id: ids[4],
                gone: None,
            },
            Update::EndpointParked {
                endpoint: endpoint(C),
                until_ms: later,
            },
        ],
    )
    .await;
    Spread { events, times, ids }
}

/// `actions` filters by each field (status as shown: a pending action of a
/// parked endpoint is parked, not pending), and by several together;
/// `count_actions` agrees; event types and entity ids match whatever their
/// case; `action` shows each as the list does.
pub(crate) async fn actions_are_filtered_by_each_field(db: &mut dyn Handle) {
    let s = db.store();
    let Spread { events, times, ids } = spread(&s).await;
    let [a1, a2, a3, a4, a5, a6, a7] = ids;
    let f = ActionFilter::default;
    let by_status = |status| ActionFilter {
        status: Some(status),
        ..f()
    };
    let cases: Vec<(ActionFilter, Vec<ActionId>)> = vec![
        (f(), vec![a7, a6, a5, a4, a3, a2, a1]),
        (by_status(ActionStatus::Pending), vec![a4, a3]),
        (by_status(ActionStatus::Parked), vec![a7, a6]),
        (by_status(ActionStatus::Delivered), vec![a1]),
        (by_status(ActionStatus::DeadLettered), vec![a2]),
        (by_status(ActionStatus::Held), vec![a5]),
        (
            ActionFilter {
                endpoint: Some(endpoint(A)),
                ..f()
            },
            vec![a4, a1],
        ),
        (
            ActionFilter {
                endpoint: Some("log".into()),
                ..f()
            },
            vec![a3],
        ),
        (
            ActionFilter {
                observer: Some("o2".into()),
                ..f()
            },
            vec![a7, a5, a2],
        ),
        (
            ActionFilter {
                event_type: Some("UPDATE".into()),
                ..f()
            },
            vec![a5, a4],
        ),
        (
            ActionFilter {
                event_type: Some("delete".into()),
                ..f()
            },
            vec![a7, a6],
        ),
        (
            ActionFilter {
                entity_type: Some("Order".into()),
                ..f()
            },
            vec![a7, a6, a3, a2, a1],
        ),
        (
            ActionFilter {
                entity_id: Some(events[2].entity_id.to_string().to_uppercase()),
                ..f()
            },
            vec![a7, a6],
        ),
        (
            ActionFilter {
                event_id: Some(events[1].id),
                ..f()
            },
            vec![a5, a4],
        ),
        (
            ActionFilter {
                event_id: Some(Uuid::new_v4()),
                ..f()
            },
            vec![],
        ),
        (
            ActionFilter {
                since_ms: Some(times[1]),
                ..f()
            },
            vec![a7, a6, a5, a4],
        ),
        (
            ActionFilter {
                until_ms: Some(times[1]),
                ..f()
            },
            vec![a3, a2, a1],
        ),
        (
            ActionFilter {
                since_ms: Some(times[1]),
                until_ms: Some(times[2]),
                ..f()
            },
            vec![a5, a4],
        ),
        (
            ActionFilter {
                status: Some(ActionStatus::Pending),
                endpoint: Some(endpoint(A)),
                ..f()
            },
            vec![a4],
        ),
        (
            ActionFilter {
                observer: Some("o2".into()),
                entity_type: Some("Order".into()),
                status: Some(ActionStatus::Parked),
                ..f()
            },
            vec![a7],
        ),
    ];
    for (filter, want) in &cases {
        assert_eq!(&matching(&s, filter, 2).await, want, "{filter:?}");
        assert_eq!(&matching(&s, filter, 100).await, want, "{filter:?}");
    }
    for a in s.actions(&f(), None, 100).await.unwrap().actions {
        assert_eq!(s.action(a.id).await.unwrap().as_ref(), Some(&a));
        assert_eq!(listed(&action_of(&s, a.event_id, a.id).await), a);
    }
    let shown = s.action(a7).await.unwrap().expect("a7");
    assert_eq!(shown.status, ActionStatus::Parked);
    assert!(s.actions(&f(), None, 0).await.unwrap().actions.is_empty());
}

/// Pages are read newest first by a cursor, and stay put while new
/// actions arrive between them: every action there was at the first page
/// is listed once, none twice, and none of those stored after.
pub(crate) async fn pages_are_stable_while_new_actions_arrive(db: &mut dyn Handle) {
    let s = db.store();
    let mut first = Vec::new();
    for _ in 0..9 {
        let back = insert(&s, &event(), vec![hook("o", A), hook("o", B), hook("o", A)]).await;
        first.extend(
            back.iter()
                .filter(|a| a.endpoint == endpoint(A))
                .map(|a| a.id),
        );
    }
    first.reverse();
    let filter = ActionFilter {
        endpoint: Some(endpoint(A)),
        ..ActionFilter::default()
    };
    let mut listed = Vec::new();
    let mut before = None;
    let mut added = 0;
    loop {
        let page = s.actions(&filter, before, 4).await.unwrap();
        listed.extend(page.actions.iter().map(|a| a.id));
        // New actions, for the endpoint listed and another, between pages.
        insert(&s, &event(), vec![hook("o", A), hook("o", B)]).await;
        added += 1;
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, first);
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), listed.len());
    assert_eq!(
        s.count_actions(&filter).await.unwrap(),
        (first.len() + added) as u64
    );
}

/// `replay_actions` replays only the dead-lettered and delivered actions
/// among its ids: each becomes pending, unclaimed and due at once (in its
/// endpoint's backlog, claimable), with no attempt used, one replay more
/// and its job; its attempts and last error are kept. Pending, parked,
/// held and unknown ones are left as they were.
pub(crate) async fn replay_actions_touches_only_dead_lettered_and_delivered_ones(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let Spread { events, ids, .. } = spread(&s).await;
    let [a1, a2, a3, a4, a5, a6, a7] = ids;
    let made = attempt(2, AttemptOutcome::Permanent, Some(400), wall_ms());
    // a2's attempt, recorded after the fact: it is kept with the replay.
    apply(&s, vec![recorded(a2, &made)]).await;
    let before: Vec<ActionRecord> = s
        .actions(&ActionFilter::default(), None, 10)
        .await
        .unwrap()
        .actions;
    assert_eq!(s.replay_actions(&[], None).await.unwrap(), 0);
    let job = s
        .create_replay_job(&ActionFilter::default(), "token:abc", 2)
        .await
        .unwrap();
    assert_eq!(
        s.replay_actions(&[a1, a2, a3, a4, a5, a6, a7, -1, a2], Some(job.id))
            .await
            .unwrap(),
        2
    );
    let after: Vec<ActionRecord> = s
        .actions(&ActionFilter::default(), None, 10)
        .await
        .unwrap()
        .actions;
    for (was, now) in before.iter().zip(&after) {
        if now.id == a1 || now.id == a2 {
            assert_eq!(
                (now.status, now.attempts, now.replays),
                (ActionStatus::Pending, 0, 1)
            );
            assert_eq!(now.not_before, None, "{now:?}");
        } else {
            assert_eq!(was, now, "left alone");
        }
    }
    let replayed_dead = after.iter().find(|a| a.id == a2).unwrap();
    assert_eq!(
        replayed_dead.last_error.as_deref(),
        Some("HTTP 400"),
        "kept"
    );
    assert_eq!(attempts(&history_of(&s, events[0].id, a2).await), [&made]);

    let due = soon();
    assert!(due_endpoints(&s, due).await.contains(&endpoint(A)));
    assert!(due_endpoints(&s, due).await.contains(&endpoint(B)));
    let claimed = claim_all(&s, &endpoint(A), due).await;
    assert_eq!(ids_of(&claimed), [a1], "a4 is claimed already");
    assert_eq!((claimed[0].attempts, claimed[0].replays), (0, 1));
    let claimed = claim_all(&s, &endpoint(B), due).await;
    assert_eq!(ids_of(&claimed), [a2]);
    assert_eq!(claimed[0].replays, 1);
    // Replayed again once dead again: counted twice.
    apply(&s, vec![dead(a2, "HTTP 400")]).await;
    assert_eq!(s.replay_actions(&[a2], None).await.unwrap(), 1);
    let again = s.action(a2).await.unwrap().unwrap();
    assert_eq!(again.replays, 2);
    assert_eq!(
        s.replay_job(job.id).await.unwrap().unwrap().progress,
        [(ActionStatus::Pending, 1)],
        "a2 left the job when replayed without it"
    );
}

/// The ids of `actions`.
fn ids_of(actions: &[breakwater_dispatch::store::PendingAction]) -> Vec<ActionId> {
    actions.iter().map(|a| a.id).collect()
}

/// A replay job is stored running; its progress counts the actions it
/// replayed by the status they show now; progress updates keep its state
/// until it is finished, after which it no longer changes; jobs are listed
/// newest first without progress.
pub(crate) async fn a_replay_jobs_progress_counts_its_actions_by_shown_status(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), hook("o", A), hook("o", B)]).await;
    let [x, y, z] = [back[0].id, back[1].id, back[2].id];
    apply(
        &s,
        vec![
            dead(x, "HTTP 400"),
            dead(y, "HTTP 400"),
            dead(z, "HTTP 400"),
        ],
    )
    .await;
    let filter = ActionFilter {
        status: Some(ActionStatus::DeadLettered),
        ..ActionFilter::default()
    };
    let job = s
        .create_replay_job(&filter, "token:0123456789ab", 3)
        .await
        .unwrap();
    assert_eq!(
        (
            job.state,
            job.total,
            job.replayed,
            &job.filter,
            job.actor.as_str()
        ),
        (ReplayState::Running, 3, 0, &filter, "token:0123456789ab")
    );
    assert_eq!(job.created_at_ms, job.updated_at_ms);
    assert!(job.progress.is_empty());
    let stored = s.replay_job(job.id).await.unwrap().expect("the job");
    assert_eq!(stored, job);

    assert_eq!(s.replay_actions(&[x, y, z], Some(job.id)).await.unwrap(), 3);
    assert_eq!(
        s.update_replay_job(job.id, 3, ReplayState::Running, None)
            .await
            .unwrap(),
        ReplayState::Running
    );
    let now = s.replay_job(job.id).await.unwrap().unwrap();
    assert_eq!((now.replayed, now.state), (3, ReplayState::Running));
    assert_eq!(now.progress, [(ActionStatus::Pending, 3)]);
    // One delivered, B's circuit parks its actions: z shows parked.
    let claimed = claim_all(&s, &endpoint(A), soon()).await;
    assert_eq!(ids_of(&claimed), [x, y]);
    apply(
        &s,
        vec![
            delivered(x),
            Update::EndpointParked {
                endpoint: endpoint(B),
                until_ms: wall_ms() + DAY,
            },
        ],
    )
    .await;
    assert_eq!(
        s.replay_job(job.id).await.unwrap().unwrap().progress,
        [
            (ActionStatus::Pending, 1),
            (ActionStatus::Parked, 1),
            (ActionStatus::Delivered, 1)
        ]
    );
    assert_eq!(
        s.update_replay_job(job.id, 3, ReplayState::Finished, None)
            .await
            .unwrap(),
        ReplayState::Finished
    );
    assert_eq!(
        s.update_replay_job(job.id, 9, ReplayState::Running, None)
            .await
            .unwrap(),
        ReplayState::Finished,
        "a finished job stays finished"
    );
    let done = s.replay_job(job.id).await.unwrap().unwrap();
    assert_eq!((done.replayed, done.state), (3, ReplayState::Finished));
    assert_eq!(
        s.cancel_replay_job(job.id).await.unwrap().unwrap().state,
        ReplayState::Finished
    );

    let failed = s
        .create_replay_job(&ActionFilter::default(), "cli", 10)
        .await
        .unwrap();
    assert!(failed.id > job.id);
    assert_eq!(
        s.update_replay_job(
            failed.id,
            4,
            ReplayState::Failed,
            Some("storage failed".into())
        )
        .await
        .unwrap(),
        ReplayState::Failed
    );
    let listed = s.replay_jobs(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [failed.id, job.id]
    );
    assert!(listed.iter().all(|j| j.progress.is_empty()));
    assert_eq!(listed[0].error.as_deref(), Some("storage failed"));
    assert_eq!(
        (listed[0].replayed, listed[0].state),
        (4, ReplayState::Failed)
    );
    assert_eq!(s.replay_jobs(1).await.unwrap().len(), 1);
    assert!(s.replay_job(failed.id + 100).await.unwrap().is_none());
    assert!(s
        .update_replay_job(failed.id + 100, 1, ReplayState::Running, None)
        .await
        .is_err());
}

/// A running job cancelled stays cancelled: progress written after is
/// not taken, and the writer learns of the cancel from the state
/// `update_replay_job` returns. Cancelling an unknown job finds none.
pub(crate) async fn a_cancelled_replay_job_stays_cancelled(db: &mut dyn Handle) {
    let s = db.store();
    let job = s
        .create_replay_job(&ActionFilter::default(), "cli", 1000)
        .await
        .unwrap();
    assert_eq!(
        s.update_replay_job(job.id, 500, ReplayState::Running, None)
            .await
            .unwrap(),
        ReplayState::Running
    );
    let cancelled = s.cancel_replay_job(job.id).await.unwrap().expect("the job");
    assert_eq!(
        (cancelled.state, cancelled.replayed),
        (ReplayState::Cancelled, 500)
    );
    assert!(cancelled.updated_at_ms >= job.updated_at_ms);
    assert_eq!(
        s.update_replay_job(job.id, 1000, ReplayState::Running, None)
            .await
            .unwrap(),
        ReplayState::Cancelled
    );
    assert_eq!(
        s.update_replay_job(job.id, 1000, ReplayState::Finished, None)
            .await
            .unwrap(),
        ReplayState::Cancelled
    );
    let after = s.replay_job(job.id).await.unwrap().unwrap();
    assert_eq!((after.state, after.replayed), (ReplayState::Cancelled, 500));
    assert!(s.cancel_replay_job(job.id + 1).await.unwrap().is_none());
    // Another instance (or a restart) sees it so.
    db.reopen().await;
    let s = db.store();
    assert_eq!(
        s.replay_job(job.id).await.unwrap().unwrap().state,
        ReplayState::Cancelled
    );
}

/// Audit entries come back as stored, with their ids, newest first, a page
/// at a time.
pub(crate) async fn audit_entries_round_trip_newest_first(db: &mut dyn Handle) {
    let s = db.store();
    assert!(s.audit_log(None, 10).await.unwrap().is_empty());
    let t = wall_ms();
    let entries = [
        AuditEntry {
            id: 0,
            at_ms: t,
            actor: "token:0123456789ab".into(),
            action: "open".into(),
            target: endpoint(A),
            count: None,
            instance: Some("web-1".into()),
        },
        AuditEntry {
            id: 0,
            at_ms: t + 1,
            actor: "cli".into(),
            action: "replay".into(),
            target: r#"{"status":"dead_lettered","endpoint":"http://x"}"#.into(),
            count: Some(1234),
            instance: None,
        },
        AuditEntry {
            id: 99,
            at_ms: t + 2,
            actor: "token:ffffffffffff".into(),
            action: "purge".into(),
            target: "42".into(),
            count: Some(0),
            instance: None,
        },
    ];
    let mut ids = Vec::new();
    for e in &entries {
        ids.push(s.audit(e.clone()).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let want: Vec<AuditEntry> = entries
        .iter()
        .zip(&ids)
        .rev()
        .map(|(e, id)| AuditEntry {
            id: *id,
            ..e.clone()
        })
        .collect();
    assert_eq!(s.audit_log(None, 10).await.unwrap(), want);
    assert_eq!(s.audit_log(None, 2).await.unwrap(), want[..2]);
    assert_eq!(s.audit_log(Some(ids[1]), 10).await.unwrap(), want[2..]);
    db.reopen().await;
    assert_eq!(db.store().audit_log(None, 10).await.unwrap(), want);
}

/// `endpoint_counts` counts each endpoint's waiting, held and dead-lettered
/// actions by the status they show: the pending actions of an endpoint
/// whose circuit parks them count as parked, and no longer once it closes.
pub(crate) async fn endpoint_counts_show_a_parked_endpoints_actions_as_parked(db: &mut dyn Handle) {
    let s = db.store();
    spread(&s).await;
    let counts = |mut c: Vec<EndpointCounts>| {
        c.retain(|c| c.pending + c.parked + c.held + c.dead_lettered > 0);
        c.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        c
    };
    let row = |endpoint: String, pending, parked, held, dead_lettered| EndpointCounts {
        endpoint,
        pending,
        parked,
        held,
        dead_lettered,
    };
    let mut want = vec![
        row(endpoint(A), 1, 0, 0, 0),
        row(endpoint(B), 0, 0, 1, 1),
        row(endpoint(C), 0, 2, 0, 0),
        row("log".into(), 1, 0, 0, 0),
    ];
    want.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    assert_eq!(counts(s.endpoint_counts().await.unwrap()), want);
    apply(
        &s,
        vec![Update::EndpointParked {
            endpoint: endpoint(C),
            until_ms: 0,
        }],
    )
    .await;
    for w in &mut want {
        if w.endpoint == endpoint(C) {
            (w.pending, w.parked) = (1, 1);
        }
    }
    assert_eq!(counts(s.endpoint_counts().await.unwrap()), want);
}
