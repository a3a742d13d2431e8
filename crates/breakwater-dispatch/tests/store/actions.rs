//! Actions by filter ([`Store::actions`], [`Store::count_actions`],
//! [`Store::action`]), their replays ([`Store::replay_actions`]) and each
//! endpoint's counts ([`Store::endpoint_counts`]).
//!
//! [`Store::actions`]: breakwater_dispatch::store::Store::actions
//! [`Store::count_actions`]: breakwater_dispatch::store::Store::count_actions
//! [`Store::action`]: breakwater_dispatch::store::Store::action
//! [`Store::replay_actions`]: breakwater_dispatch::store::Store::replay_actions
//! [`Store::endpoint_counts`]: breakwater_dispatch::store::Store::endpoint_counts

use std::collections::HashSet;

use breakwater::traits::{EntityEvent, EventKind};
use breakwater_dispatch::store::{
    ActionFilter, ActionId, ActionRecord, ActionStatus, AttemptOutcome, EndpointCounts, EventKeys,
    Update,
};
use uuid::Uuid;

use crate::backends::Handle;
use crate::fixtures::*;

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
    let spread = spread(&s).await;
    let (events, [a1, a2, a3, a4, a5, a6, a7]) = (spread.events, spread.ids);
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
        .create_replay_job(&ActionFilter::default(), "token:abc", 2, true)
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
    assert_eq!(ids(&claimed), [a1], "a4 is claimed already");
    assert_eq!((claimed[0].attempts, claimed[0].replays), (0, 1));
    let claimed = claim_all(&s, &endpoint(B), due).await;
    assert_eq!(ids(&claimed), [a2]);
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
