//! What the service reports and prunes: [`Store::oldest_pending_ms`],
//! [`Store::counts`] and [`Store::prune_delivered`].
//!
//! [`Store::oldest_pending_ms`]: breakwater_dispatch::store::Store::oldest_pending_ms
//! [`Store::counts`]: breakwater_dispatch::store::Store::counts
//! [`Store::prune_delivered`]: breakwater_dispatch::store::Store::prune_delivered

use breakwater_dispatch::store::{GoneAttempt, Inserted, NewEvent, Update};

use crate::backends::Handle;
use crate::fixtures::*;

/// `oldest_pending_ms` is when the oldest action neither delivered nor
/// dead-lettered (pending, parked or held; claimed or not) was accepted;
/// none, when there is no such action. A replayed dead letter counts again
/// from when it was accepted.
pub(crate) async fn oldest_pending_is_the_oldest_action_still_to_deliver(db: &mut dyn Handle) {
    let s = db.store();
    assert_eq!(s.oldest_pending_ms().await.unwrap(), None);
    let done = insert(&s, &event(), vec![log("o")]).await;
    apply(&s, vec![delivered(done[0].id)]).await;
    assert_eq!(s.oldest_pending_ms().await.unwrap(), None);
    after(&s, done[0].accepted_at_ms).await;
    let first = insert(&s, &event(), vec![hook("o", A)]).await;
    let (a1, t1) = (first[0].id, first[0].accepted_at_ms);
    after(&s, t1).await;
    let e2 = event();
    let second = insert(
        &s,
        &e2,
        vec![
            hook("o", A),
            hook("o", B).backlogged().parked_until(wall_ms() + DAY),
        ],
    )
    .await;
    let (a2, t2) = (second[0].id, second[0].accepted_at_ms);
    let a3 = record(&s, e2.id).await.actions[1].id;
    assert!(
        t2 > t1 && t1 > done[0].accepted_at_ms,
        "accepted one after the other"
    );

    assert_eq!(s.oldest_pending_ms().await.unwrap(), Some(t1));
    apply(
        &s,
        vec![Update::Held {
            id: a1,
            gone: Some(GoneAttempt {
                attempts: 1,
                error: "HTTP 410".into(),
            }),
        }],
    )
    .await;
    assert_eq!(
        s.oldest_pending_ms().await.unwrap(),
        Some(t1),
        "a held action is still to deliver"
    );
    // Enabled again, claimed, and then dead-lettered.
    assert_eq!(s.release_held(&endpoint(A)).await.unwrap(), 1);
    assert_eq!(claim_ids(&s, &endpoint(A), soon()).await, [a1]);
    apply(&s, vec![dead(a1, "HTTP 400")]).await;
    assert_eq!(s.oldest_pending_ms().await.unwrap(), Some(t2));
    apply(&s, vec![delivered(a2)]).await;
    assert_eq!(
        s.oldest_pending_ms().await.unwrap(),
        Some(t2),
        "the parked, unclaimed one"
    );
    // An outcome is for an action the store handed out: claimed first.
    assert_eq!(claim_ids(&s, &endpoint(B), wall_ms() + 2 * DAY).await, [a3]);
    apply(&s, vec![dead(a3, "HTTP 400")]).await;
    assert_eq!(s.oldest_pending_ms().await.unwrap(), None);
    assert_eq!(s.replay_dead_letters(Some(vec![a1])).await.unwrap(), 1);
    assert_eq!(s.oldest_pending_ms().await.unwrap(), Some(t1));
}

/// `counts` gives the number of actions in each status, each status once
/// (one with none may be left out).
pub(crate) async fn counts_are_by_status(db: &mut dyn Handle) {
    let s = db.store();
    assert_eq!(counts(&s).await, Counts::default());
    let back = insert(
        &s,
        &event(),
        vec![
            hook("o", A),
            hook("o", A).backlogged(),
            hook("o", A).parked_until(wall_ms() + DAY),
            hook("o", A).backlogged().parked_until(wall_ms() + DAY),
            log("o"),
            log("o"),
            log("o"),
            log("o").dead_lettered("over its quota"),
        ],
    )
    .await;
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 5,
            parked: 2,
            dead_lettered: 1,
            ..Counts::default()
        }
    );
    apply(
        &s,
        vec![
            delivered(back[2].id),
            dead(back[3].id, "HTTP 400"),
            Update::Held {
                id: back[4].id,
                gone: None,
            },
            Update::Parked {
                id: back[0].id,
                until_ms: wall_ms() + DAY,
            },
        ],
    )
    .await;
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            parked: 3,
            delivered: 1,
            dead_lettered: 2,
            held: 1,
        }
    );
    insert(&s, &event(), Vec::new()).await;
    assert_eq!(
        counts(&s).await.pending,
        1,
        "an event without actions adds none"
    );
}

/// `prune_delivered(before, limit)` removes at most `limit` events
/// accepted before `before` (strictly) whose every action is delivered (an
/// event without actions has none left to deliver), with their actions,
/// and says how many; every other event is left as it was. A pruned event
/// is no longer known: its id is a new event again. (The trait's default,
/// which removes nothing, does not pass: every backend here prunes.)
pub(crate) async fn prune_removes_old_fully_delivered_events_and_nothing_else(db: &mut dyn Handle) {
    let s = db.store();
    let mut prunable = Vec::new();
    let mut kept = Vec::new();

    let done = event();
    let back = insert(&s, &done, vec![log("o"), hook("o", A)]).await;
    apply(&s, vec![delivered(back[0].id), delivered(back[1].id)]).await;
    prunable.push(done);
    let bare = event();
    insert(&s, &bare, Vec::new()).await;
    prunable.push(bare);
    let retried = event();
    let back = insert(&s, &retried, vec![hook("o", B)]).await;
    apply(&s, vec![retry(back[0].id, 1, wall_ms() - HOUR)]).await;
    apply(
        &s,
        vec![Update::Delivered {
            id: back[0].id,
            attempts: 2,
            status: Some(200),
        }],
    )
    .await;
    prunable.push(retried);
    let purged = event();
    let back = insert(&s, &purged, vec![log("o"), hook("o", A)]).await;
    apply(
        &s,
        vec![delivered(back[0].id), dead(back[1].id, "HTTP 400")],
    )
    .await;
    prunable.push(purged.clone());

    let half = event();
    let back = insert(&s, &half, vec![log("o"), hook("o", A)]).await;
    apply(&s, vec![delivered(back[0].id)]).await;
    kept.push(half);
    let dead_one = event();
    let back = insert(&s, &dead_one, vec![log("o"), hook("o", A)]).await;
    apply(
        &s,
        vec![delivered(back[0].id), dead(back[1].id, "HTTP 400")],
    )
    .await;
    kept.push(dead_one);
    let intake_dead = event();
    insert(
        &s,
        &intake_dead,
        vec![log("o").dead_lettered("over its quota")],
    )
    .await;
    kept.push(intake_dead);
    let held = event();
    let back = insert(&s, &held, vec![hook("o", A)]).await;
    apply(
        &s,
        vec![Update::Held {
            id: back[0].id,
            gone: None,
        }],
    )
    .await;
    kept.push(held);
    let parked = event();
    insert(
        &s,
        &parked,
        vec![hook("o", A).parked_until(wall_ms() + DAY)],
    )
    .await;
    kept.push(parked);
    let backlogged = event();
    insert(&s, &backlogged, vec![hook("o", A).backlogged()]).await;
    kept.push(backlogged);
    let waiting = event();
    let back = insert(&s, &waiting, vec![hook("o", A)]).await;
    apply(&s, vec![retry(back[0].id, 1, wall_ms() + HOUR)]).await;
    kept.push(waiting);

    // The dead letter of `purged` goes: what is left of it is delivered.
    let purged_dead = record(&s, purged.id).await.actions[1].id;
    assert_eq!(
        s.purge_dead_letters(Some(vec![purged_dead])).await.unwrap(),
        1
    );

    let mut kept_records = Vec::new();
    for e in &kept {
        kept_records.push(record(&s, e.id).await);
    }
    let dead_before = s.dead_letters(100).await.unwrap();
    let backlogs_before = backlogs(&s).await;
    let oldest_before = s.oldest_pending_ms().await.unwrap();
    let mut first = i64::MAX;
    for e in &prunable {
        first = first.min(accepted_ms(&s, e.id).await);
    }

    assert_eq!(
        s.prune_delivered(first, 100).await.unwrap(),
        0,
        "none was accepted before the first of them"
    );
    let before = soon();
    assert_eq!(s.prune_delivered(before, 0).await.unwrap(), 0);
    assert_eq!(s.prune_delivered(before, 3).await.unwrap(), 3);
    assert_eq!(s.prune_delivered(before, 3).await.unwrap(), 1);
    assert_eq!(s.prune_delivered(before, 3).await.unwrap(), 0);

    for e in &prunable {
        assert_eq!(s.event(e.id).await.unwrap(), None, "{} is pruned", e.id);
    }
    for (e, rec) in kept.iter().zip(&kept_records) {
        assert_eq!(&record(&s, e.id).await, rec, "{} is kept as it was", e.id);
    }
    assert_eq!(s.dead_letters(100).await.unwrap(), dead_before);
    assert_eq!(backlogs(&s).await, backlogs_before);
    assert_eq!(s.oldest_pending_ms().await.unwrap(), oldest_before);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 3,
            parked: 1,
            delivered: 2,
            dead_lettered: 2,
            held: 1,
        },
        "the delivered actions of the pruned events are gone with them"
    );
    let again = s
        .insert(vec![
            NewEvent::new(&prunable[0], vec![log("again")]),
            NewEvent::new(&kept[0], vec![log("again")]),
        ])
        .await
        .unwrap();
    assert_eq!(stored(&again[0]).len(), 1, "a pruned id is new again");
    assert!(matches!(again[1], Inserted::Duplicate), "{again:?}");
    let rec = record(&s, prunable[0].id).await;
    assert_eq!(rec.actions.len(), 1);
    assert_eq!(rec.actions[0].observer, "again");
}
