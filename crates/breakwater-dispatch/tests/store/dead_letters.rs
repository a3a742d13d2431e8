//! Dead letters: [`Store::dead_letters`], [`Store::replay_dead_letters`]
//! and [`Store::purge_dead_letters`].
//!
//! [`Store::dead_letters`]: breakwater_dispatch::store::Store::dead_letters
//! [`Store::replay_dead_letters`]: breakwater_dispatch::store::Store::replay_dead_letters
//! [`Store::purge_dead_letters`]: breakwater_dispatch::store::Store::purge_dead_letters

use breakwater_dispatch::store::ActionStatus;

use crate::backends::Handle;
use crate::fixtures::*;

/// `dead_letters(limit)` lists at most `limit` dead letters, oldest first,
/// each as its event's record shows it; a dead letter replayed leaves the
/// list. ("Oldest" is ambiguous: the oldest action, or the one
/// dead-lettered first. Here they agree: each action is accepted, and
/// dead-lettered, after the one before, in a later millisecond.)
pub(crate) async fn dead_letters_are_listed_oldest_first_up_to_the_limit(db: &mut dyn Handle) {
    let s = db.store();
    let mut dead_ids = Vec::new();
    let mut events = Vec::new();
    for i in 0..4 {
        let e = event();
        let id = if i == 2 {
            insert(&s, &e, vec![log("quota").dead_lettered("over its quota")]).await;
            record(&s, e.id).await.actions[0].id
        } else {
            let back = insert(&s, &e, vec![hook("o", A), log("kept")]).await;
            apply(&s, vec![dead(back[0].id, &format!("HTTP 400 ({i})"))]).await;
            back[0].id
        };
        // The next one is accepted later.
        after(&s, accepted_ms(&s, e.id).await).await;
        dead_ids.push(id);
        events.push(e);
    }
    let letters = s.dead_letters(10).await.unwrap();
    assert_eq!(
        letters.iter().map(|d| d.id).collect::<Vec<_>>(),
        dead_ids,
        "oldest first"
    );
    for (d, e) in letters.iter().zip(&events) {
        assert_eq!(d.status, ActionStatus::DeadLettered, "{d:?}");
        assert_eq!(d.event_id, e.id, "{d:?}");
        let in_event = action(&record(&s, e.id).await, d.id).clone();
        assert_eq!(in_event.attempt_history, Some(Vec::new()));
        assert_eq!(d, &listed(&in_event), "a list leaves the attempts out");
    }
    assert_eq!(letters[0].last_error.as_deref(), Some("HTTP 400 (0)"));
    assert_eq!(letters[2].last_error.as_deref(), Some("over its quota"));
    assert_eq!(
        s.dead_letters(2)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        dead_ids[..2]
    );
    assert!(s.dead_letters(0).await.unwrap().is_empty());
    assert_eq!(
        s.replay_dead_letters(Some(vec![dead_ids[0]]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.dead_letters(2)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        dead_ids[1..3]
    );
}

/// `replay_dead_letters` makes dead letters (those of `ids`, or all)
/// pending again with no attempts used, unclaimed and due at once (even
/// one whose last retry had been set for later), and says how many; ids
/// that are not dead letters (pending, delivered, unknown) are left alone,
/// an id given twice counts once, and an empty list replays nothing.
pub(crate) async fn replayed_dead_letters_are_pending_and_claimable_again(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let given = vec![
        hook("retried", A),
        hook("quota", A)
            .backlogged()
            .dead_lettered("over its quota"),
        hook("b", B),
        hook("pending", A),
        hook("done", A),
    ];
    let back = insert(&s, &e, given.clone()).await;
    let rec = record(&s, e.id).await;
    let [d1, d2, d3, p, dl] = [
        rec.actions[0].id,
        rec.actions[1].id,
        rec.actions[2].id,
        rec.actions[3].id,
        rec.actions[4].id,
    ];
    assert_eq!(ids(&back), [d1, d3, p, dl]);
    apply(&s, vec![retry(d1, 2, wall_ms() + DAY)]).await;
    apply(
        &s,
        vec![dead(d1, "HTTP 400"), dead(d3, "HTTP 404"), delivered(dl)],
    )
    .await;
    let before = record(&s, e.id).await;

    assert_eq!(s.replay_dead_letters(Some(Vec::new())).await.unwrap(), 0);
    assert_eq!(
        record(&s, e.id).await,
        before,
        "an empty list replays nothing"
    );
    assert_eq!(
        s.replay_dead_letters(Some(vec![d1, p, dl, -1, d1]))
            .await
            .unwrap(),
        1
    );
    let rec = record(&s, e.id).await;
    let r = action(&rec, d1);
    assert_eq!((r.status, r.attempts), (ActionStatus::Pending, 0), "{r:?}");
    assert_eq!(action(&rec, p), action(&before, p));
    assert_eq!(action(&rec, dl), action(&before, dl));
    assert_eq!(dead_letter_ids(&s).await, [d2, d3]);
    let soon = soon();
    assert_eq!(due_endpoints(&s, soon).await, [endpoint(A)]);
    let claimed = claim_all(&s, &endpoint(A), soon).await;
    assert_eq!(ids(&claimed), [d1], "only the replayed one is unclaimed");
    assert_is(&claimed[0], &e, &given[0], 0);

    assert_eq!(s.replay_dead_letters(None).await.unwrap(), 2);
    assert!(dead_letter_ids(&s).await.is_empty());
    let rec = record(&s, e.id).await;
    for id in [d2, d3] {
        let r = action(&rec, id);
        assert_eq!((r.status, r.attempts), (ActionStatus::Pending, 0), "{r:?}");
    }
    let claimed = claim_all(&s, &endpoint(A), soon).await;
    assert_eq!(ids(&claimed), [d2]);
    assert_is(&claimed[0], &e, &given[1], 0);
    assert_eq!(claim_ids(&s, &endpoint(B), soon).await, [d3]);
    assert_eq!(s.replay_dead_letters(None).await.unwrap(), 0);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 4,
            delivered: 1,
            ..Counts::default()
        }
    );
}

/// `purge_dead_letters` deletes dead letters (those of `ids`, or all): they
/// leave the list and their event's record, for good (a restart does not
/// bring them back); it says how many. Other actions, and the events
/// themselves, stay; an empty list deletes nothing.
pub(crate) async fn purged_dead_letters_are_gone(db: &mut dyn Handle) {
    let s = db.store();
    let (e1, e2) = (event(), event());
    let back = insert(&s, &e1, vec![hook("o", A), hook("o", A), log("o")]).await;
    let [d1, d2, p] = [back[0].id, back[1].id, back[2].id];
    insert(&s, &e2, vec![hook("o", B).dead_lettered("over its quota")]).await;
    let d3 = record(&s, e2.id).await.actions[0].id;
    apply(&s, vec![dead(d1, "HTTP 400"), dead(d2, "HTTP 400")]).await;
    let p_before = action_of(&s, e1.id, p).await;

    assert_eq!(s.purge_dead_letters(Some(Vec::new())).await.unwrap(), 0);
    assert_eq!(dead_letter_ids(&s).await, [d1, d2, d3]);
    assert_eq!(
        s.purge_dead_letters(Some(vec![d1, p, -1])).await.unwrap(),
        1
    );
    assert_eq!(dead_letter_ids(&s).await, [d2, d3]);
    let rec = record(&s, e1.id).await;
    assert_eq!(
        rec.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
        [d2, p]
    );
    assert_eq!(action(&rec, p), &p_before);

    assert_eq!(s.purge_dead_letters(None).await.unwrap(), 2);
    assert!(dead_letter_ids(&s).await.is_empty());
    assert_eq!(
        record(&s, e1.id).await.actions,
        std::slice::from_ref(&p_before)
    );
    assert!(
        record(&s, e2.id).await.actions.is_empty(),
        "the event stays"
    );
    assert_eq!(s.purge_dead_letters(None).await.unwrap(), 0);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            ..Counts::default()
        }
    );
    db.reopen().await;
    let s = db.store();
    assert!(dead_letter_ids(&s).await.is_empty());
    assert_eq!(record(&s, e1.id).await.actions, [p_before]);
    assert_eq!(s.replay_dead_letters(None).await.unwrap(), 0);
    assert_eq!(claim_ids(&s, "log", soon()).await, [p]);
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
}
