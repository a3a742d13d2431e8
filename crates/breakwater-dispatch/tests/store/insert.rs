//! [`Store::insert`]: what is stored, what is handed back, and duplicates.
//!
//! [`Store::insert`]: breakwater_dispatch::store::Store::insert

use breakwater::traits::{EntityEvent, EventKind};
use breakwater_dispatch::store::{ActionStatus, Inserted, NewEvent};
use uuid::Uuid;

use crate::backends::Handle;
use crate::fixtures::*;

/// Claimed actions come back in the order given, each with an id of its
/// own and what it is (observer, endpoint, action, event), no attempts
/// used, not parked, due at once, accepted now (the wall clock, in ms).
/// The event's record lists them, in the order given, pending and
/// untried, accepted at the same time.
pub(crate) async fn claimed_actions_are_handed_back_in_order(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let given = vec![
        log("audit"),
        hook("hooks", A),
        email("mail"),
        slack("chat", B),
        hook("hooks", C),
    ];
    let wall = wall_ms();
    let back = insert(&s, &e, given.clone()).await;
    assert_eq!(back.len(), given.len());
    for (p, a) in back.iter().zip(&given) {
        assert_is(p, &e, a, 0);
        assert!(!p.parked, "{p:?}");
        assert_eq!(p.not_before_ms, None, "{p:?}");
        assert_eq!(
            p.accepted_at_ms, back[0].accepted_at_ms,
            "one event, one time"
        );
    }
    assert!(
        (back[0].accepted_at_ms - wall).abs() < HOUR,
        "accepted at {} (Unix ms), the wall clock says {wall}",
        back[0].accepted_at_ms
    );
    let mut unique = ids(&back);
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), given.len(), "ids are unique: {back:?}");

    let rec = record(&s, e.id).await;
    assert_eq!(rec.id, e.id);
    assert_eq!(ms(&rec.accepted_at), back[0].accepted_at_ms);
    assert_eq!(
        rec.actions.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids(&back),
        "the record lists the actions in the order given"
    );
    for (r, a) in rec.actions.iter().zip(&given) {
        assert_record_of(r, &e, a);
        assert_eq!(r.status, ActionStatus::Pending, "{r:?}");
        assert_eq!(r.attempts, 0, "{r:?}");
        assert_eq!(r.not_before, None, "{r:?}");
        assert_eq!(r.last_error, None, "{r:?}");
        assert_eq!(r.last_status, None, "{r:?}");
    }
    // Claimed: none of them is in a backlog.
    assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());
    assert!(claim_all(&s, "log", i64::MAX).await.is_empty());
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
}

/// An event id already stored, in a later batch or earlier in the same
/// one, gives `Duplicate` and adds nothing: not its actions (claimed,
/// backlogged or dead-lettered), not a second record; the events around it
/// in the batch are stored as usual.
pub(crate) async fn a_known_event_id_is_a_duplicate_and_adds_nothing(db: &mut dyn Handle) {
    let s = db.store();
    let (a, b, c) = (event(), event(), event());
    let first = insert(&s, &a, vec![log("a"), hook("a", A).backlogged()]).await;
    assert_eq!(first.len(), 1);
    let a_before = record(&s, a.id).await;

    let again = s
        .insert(vec![NewEvent::new(
            &a,
            vec![
                log("again"),
                hook("again", B).backlogged(),
                log("again").dead_lettered("over its quota"),
            ],
        )])
        .await
        .unwrap();
    assert!(matches!(again[..], [Inserted::Duplicate]), "{again:?}");

    let batch = s
        .insert(vec![
            NewEvent::new(&b, vec![log("b")]),
            NewEvent::new(&a, vec![log("again")]),
            NewEvent::new(&c, vec![log("c1")]),
            NewEvent::new(&c, vec![log("c2"), hook("c2", B).backlogged()]),
        ])
        .await
        .unwrap();
    assert_eq!(batch.len(), 4, "one outcome an event: {batch:?}");
    assert_eq!(stored(&batch[0]).len(), 1);
    assert!(matches!(batch[1], Inserted::Duplicate), "{batch:?}");
    assert_eq!(stored(&batch[2])[0].observer, "c1");
    assert!(matches!(batch[3], Inserted::Duplicate), "{batch:?}");

    assert_eq!(record(&s, a.id).await, a_before);
    let c_rec = record(&s, c.id).await;
    assert_eq!(
        c_rec
            .actions
            .iter()
            .map(|r| r.observer.as_str())
            .collect::<Vec<_>>(),
        ["c1"]
    );
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 4,
            ..Counts::default()
        }
    );
    assert_eq!(due_endpoints(&s, i64::MAX).await, [endpoint(A)]);
    assert!(dead_letter_ids(&s).await.is_empty());
}

/// A backlogged action is stored pending and unclaimed: not handed back,
/// found in its endpoint's backlog, due when its event was accepted.
pub(crate) async fn a_backlogged_action_is_stored_unclaimed_and_not_handed_back(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let e = event();
    let given = vec![
        hook("first", A).backlogged(),
        log("now"),
        hook("second", A).backlogged(),
    ];
    let back = insert(&s, &e, given.clone()).await;
    assert_eq!(back.len(), 1, "only the claimed action: {back:?}");
    assert_is(&back[0], &e, &given[1], 0);
    let accepted = back[0].accepted_at_ms;

    let rec = record(&s, e.id).await;
    assert_eq!(rec.actions.len(), 3);
    for (r, a) in rec.actions.iter().zip(&given) {
        assert_record_of(r, &e, a);
        assert_eq!(r.status, ActionStatus::Pending, "{r:?}");
        assert_eq!(r.not_before, None, "{r:?}");
    }
    // Due when accepted, not before.
    assert_eq!(due_endpoints(&s, accepted - 1).await, Vec::<String>::new());
    assert_eq!(due_endpoints(&s, accepted).await, [endpoint(A)]);
    assert!(claim_all(&s, &endpoint(A), accepted - 1).await.is_empty());
    let page = s.claim_backlog(&endpoint(A), 10, accepted).await.unwrap();
    assert!(!page.more);
    assert_eq!(ids(&page.actions), [rec.actions[0].id, rec.actions[2].id]);
    for (p, a) in page.actions.iter().zip([&given[0], &given[2]]) {
        assert_is(p, &e, a, 0);
        assert!(!p.parked, "{p:?}");
        assert_eq!(p.not_before_ms, None, "{p:?}");
        assert_eq!(p.accepted_at_ms, accepted, "{p:?}");
    }
    // The claimed one was never in the backlog.
    assert!(claim_all(&s, "log", i64::MAX).await.is_empty());
}

/// A parked action is stored parked until its time, which the record and
/// the action handed back carry; backlogged, it is due at that time, not
/// before.
pub(crate) async fn a_parked_action_is_stored_parked_until_its_time(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let until = wall_ms() + DAY;
    let later = until + HOUR;
    let given = vec![
        log("o").parked_until(until),
        log("o"),
        hook("o", A).backlogged().parked_until(later),
    ];
    let back = insert(&s, &e, given.clone()).await;
    assert_eq!(back.len(), 2);
    assert_is(&back[0], &e, &given[0], 0);
    assert!(back[0].parked);
    assert_eq!(back[0].not_before_ms, Some(until));
    assert!(!back[1].parked);
    assert_eq!(back[1].not_before_ms, None);

    let rec = record(&s, e.id).await;
    let statuses: Vec<_> = rec
        .actions
        .iter()
        .map(|r| (r.status, not_before_ms(r)))
        .collect();
    assert_eq!(
        statuses,
        [
            (ActionStatus::Parked, Some(until)),
            (ActionStatus::Pending, None),
            (ActionStatus::Parked, Some(later)),
        ]
    );
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            parked: 2,
            ..Counts::default()
        }
    );
    // The backlogged one is due at its time.
    assert_eq!(due_endpoints(&s, later - 1).await, Vec::<String>::new());
    assert!(claim_all(&s, &endpoint(A), later - 1).await.is_empty());
    assert_eq!(due_endpoints(&s, later).await, [endpoint(A)]);
    let claimed = claim_all(&s, &endpoint(A), later).await;
    assert_eq!(ids(&claimed), [rec.actions[2].id]);
    assert_is(&claimed[0], &e, &given[2], 0);
    assert!(claimed[0].parked);
    assert_eq!(claimed[0].not_before_ms, Some(later));
}

/// A dead-lettered action is stored dead-lettered with its reason as its
/// error, untried, and is never handed back nor found in a backlog, even
/// when it was also to be backlogged or parked.
pub(crate) async fn a_dead_lettered_action_is_stored_with_its_reason_and_not_handed_back(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let e = event();
    let given = vec![
        log("o").dead_lettered("over its quota"),
        log("o"),
        hook("o", A)
            .backlogged()
            .dead_lettered("A is over its quota"),
        hook("o", B)
            .parked_until(wall_ms() - HOUR)
            .dead_lettered("B is over its quota"),
    ];
    let back = insert(&s, &e, given.clone()).await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_is(&back[0], &e, &given[1], 0);

    let rec = record(&s, e.id).await;
    let seen: Vec<_> = rec
        .actions
        .iter()
        .map(|r| {
            (
                r.status,
                r.last_error.as_deref(),
                r.attempts,
                r.not_before.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ActionStatus::DeadLettered, Some("over its quota"), 0, None),
            (ActionStatus::Pending, None, 0, None),
            (
                ActionStatus::DeadLettered,
                Some("A is over its quota"),
                0,
                None
            ),
            (
                ActionStatus::DeadLettered,
                Some("B is over its quota"),
                0,
                None
            ),
        ]
    );
    let dead = s.dead_letters(10).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| d.id).collect::<Vec<_>>(),
        [rec.actions[0].id, rec.actions[2].id, rec.actions[3].id]
    );
    for d in &dead {
        assert_eq!(
            d,
            &listed(action(&rec, d.id)),
            "a dead letter is listed as recorded"
        );
    }
    assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
    assert!(claim_all(&s, &endpoint(B), i64::MAX).await.is_empty());
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            dead_lettered: 3,
            ..Counts::default()
        }
    );
    assert_eq!(
        backlogs(&s).await,
        [("log".to_string(), 1, Some(back[0].accepted_at_ms))]
    );
}

/// An event without actions is stored (its record has none), and is a
/// duplicate when it comes again; it counts for no status and no backlog.
pub(crate) async fn an_event_without_actions_is_stored(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let out = s.insert(vec![NewEvent::new(&e, Vec::new())]).await.unwrap();
    assert!(stored(&out[0]).is_empty());
    let rec = record(&s, e.id).await;
    assert_eq!(rec.id, e.id);
    assert!(rec.actions.is_empty());
    assert!((ms(&rec.accepted_at) - wall_ms()).abs() < HOUR, "{rec:?}");
    let again = s
        .insert(vec![NewEvent::new(&e, vec![log("late")])])
        .await
        .unwrap();
    assert!(matches!(again[..], [Inserted::Duplicate]), "{again:?}");
    assert!(record(&s, e.id).await.actions.is_empty());
    assert_eq!(counts(&s).await, Counts::default());
    assert!(backlogs(&s).await.is_empty());
    assert_eq!(s.oldest_pending_ms().await.unwrap(), None);
}

/// An event's JSON comes back as it was given, claimed at intake or read
/// back from the store, however awkward its text (escapes, a NUL, emoji,
/// numbers at the edges of their range, a large body). Intake accepts such
/// events, so every store must keep them.
pub(crate) async fn an_events_json_comes_back_as_it_was_given(db: &mut dyn Handle) {
    let s = db.store();
    let mut e = EntityEvent::new(
        EventKind::Update,
        "Order \"quoted\" \\ é",
        Uuid::new_v4(),
        serde_json::json!({
            "text": "line\nnext\ttab \"quote\" back\\slash \u{0} nul \u{1F600} 日本語 \u{2028}",
            "big": u64::MAX,
            "negative": i64::MIN,
            "float": 0.1,
            "tiny": 2.699_038_309_416_696e-307,
            "huge": 1.797_693_134_862_315_7e308,
            "nested": {"list": [1, "two", null, true, {"empty": []}], "object": {}},
            "long": "x".repeat(200_000),
        }),
    );
    e.user_id = Some("user \u{1F600}".into());
    let back = insert(&s, &e, vec![log("o"), hook("o", A).backlogged()]).await;
    assert_is(&back[0], &e, &log("o"), 0);
    db.reopen().await;
    let s = db.store();
    let claimed = claim_all(&s, &endpoint(A), i64::MAX).await;
    assert_eq!(claimed.len(), 1);
    assert_is(&claimed[0], &e, &hook("o", A), 0);
    let claimed = claim_all(&s, "log", i64::MAX).await;
    assert_eq!(claimed.len(), 1);
    assert_is(&claimed[0], &e, &log("o"), 0);
}
