//! A store's life: empty, reopened, closed.

use breakwater_dispatch::store::{Inserted, NewEvent, StoreError, Update};

use crate::backends::Handle;
use crate::fixtures::*;

/// A new store has nothing: every read is empty, every maintenance call
/// finds nothing to do, and empty batches are fine. Its `check` passes.
pub(crate) async fn an_empty_store_has_nothing(db: &mut dyn Handle) {
    let s = db.store();
    s.check().expect("a new store is healthy");
    assert!(s.insert(Vec::new()).await.unwrap().is_empty());
    s.apply(Vec::new()).await.unwrap();
    assert_eq!(s.event(uuid::Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(counts(&s).await, Counts::default());
    assert!(backlogs(&s).await.is_empty());
    assert!(due_endpoints(&s, i64::MAX).await.is_empty());
    let page = s.claim_backlog("log", 10, i64::MAX).await.unwrap();
    assert!(page.actions.is_empty() && !page.more, "{page:?}");
    assert!(s.snapshots().await.unwrap().is_empty());
    assert!(s.disabled_endpoints().await.unwrap().is_empty());
    assert!(s.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(s.oldest_pending_ms().await.unwrap(), None);
    assert_eq!(s.release_held(&endpoint(A)).await.unwrap(), 0);
    assert_eq!(s.replay_dead_letters(None).await.unwrap(), 0);
    assert_eq!(s.replay_dead_letters(Some(vec![1])).await.unwrap(), 0);
    assert_eq!(s.purge_dead_letters(None).await.unwrap(), 0);
    assert_eq!(s.purge_dead_letters(Some(vec![1])).await.unwrap(), 0);
    assert_eq!(s.prune_delivered(i64::MAX, 10).await.unwrap(), 0);
}

/// Everything stored survives a restart as it was: events and their
/// actions' states, dead letters, counts, backlogs, the oldest pending
/// time, snapshots and disabled endpoints; a stored event id is still a
/// duplicate, and new actions get ids of their own.
pub(crate) async fn everything_survives_a_reopen(db: &mut dyn Handle) {
    let s = db.store();
    let mut events = Vec::new();
    let mut action_ids = Vec::new();
    for i in 0..5 {
        let e = event();
        let back = insert(
            &s,
            &e,
            vec![
                hook("o", A),
                hook("o", B).backlogged(),
                log("o").parked_until(wall_ms() + DAY),
                log("o").dead_lettered("over its quota"),
            ],
        )
        .await;
        let update = match i {
            0 => delivered(back[0].id),
            1 => retry(back[0].id, 2, wall_ms() + HOUR),
            2 => dead(back[0].id, "HTTP 400"),
            3 => Update::Held {
                id: back[0].id,
                gone: None,
            },
            _ => Update::Parked {
                id: back[0].id,
                until_ms: wall_ms() + DAY,
            },
        };
        apply(&s, vec![update]).await;
        action_ids.extend(record(&s, e.id).await.actions.iter().map(|a| a.id));
        events.push(e);
    }
    insert(&s, &event(), Vec::new()).await;
    apply(
        &s,
        vec![
            Update::Snapshot {
                endpoint: endpoint(A),
                snapshot: r#"{"state":"open"}"#.into(),
            },
            Update::EndpointDisabled {
                endpoint: endpoint(B),
                disabled: true,
                reason: Some("HTTP 410".into()),
            },
        ],
    )
    .await;
    let mut records = Vec::new();
    for e in &events {
        records.push(record(&s, e.id).await);
    }
    let dead = s.dead_letters(100).await.unwrap();
    let counted = counts(&s).await;
    let waiting = backlogs(&s).await;
    let oldest = s.oldest_pending_ms().await.unwrap();
    let mut snapshots = s.snapshots().await.unwrap();
    snapshots.sort();
    let mut disabled = s.disabled_endpoints().await.unwrap();
    disabled.sort();

    db.reopen().await;
    let s = db.store();
    s.check().expect("a reopened store is healthy");
    for (e, rec) in events.iter().zip(&records) {
        assert_eq!(&record(&s, e.id).await, rec);
    }
    assert_eq!(s.dead_letters(100).await.unwrap(), dead);
    assert_eq!(counts(&s).await, counted);
    assert_eq!(backlogs(&s).await, waiting);
    assert_eq!(s.oldest_pending_ms().await.unwrap(), oldest);
    let mut got = s.snapshots().await.unwrap();
    got.sort();
    assert_eq!(got, snapshots);
    let mut got = s.disabled_endpoints().await.unwrap();
    got.sort();
    assert_eq!(got, disabled);
    let again = s
        .insert(vec![
            NewEvent::new(&events[0], vec![log("again")]),
            NewEvent::new(&event(), vec![log("new"), log("new")]),
        ])
        .await
        .unwrap();
    assert!(matches!(again[0], Inserted::Duplicate), "{again:?}");
    let new = stored(&again[1]);
    assert_eq!(new.len(), 2);
    assert!(
        new.iter().all(|p| !action_ids.contains(&p.id)),
        "{new:?} reuses an id of {action_ids:?}"
    );
    assert_ne!(new[0].id, new[1].id);
}

/// A closed store takes no more writes (`StoreError::Closed`); what it
/// stored before is there when the database is opened again.
pub(crate) async fn a_closed_store_takes_no_more_writes(db: &mut dyn Handle) {
    let s = db.store();
    let (kept, refused) = (event(), event());
    let back = insert(&s, &kept, vec![log("o"), hook("o", A)]).await;
    apply(&s, vec![delivered(back[0].id)]).await;
    s.close().await;
    let err = s
        .insert(vec![NewEvent::new(&refused, vec![log("o")])])
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Closed);
    let err = s.apply(vec![delivered(back[1].id)]).await.unwrap_err();
    assert_eq!(err, StoreError::Closed);

    db.reopen().await;
    let s = db.store();
    assert_eq!(s.event(refused.id).await.unwrap(), None);
    let rec = record(&s, kept.id).await;
    assert_eq!(
        rec.actions.iter().map(|a| a.status).collect::<Vec<_>>(),
        [
            breakwater_dispatch::store::ActionStatus::Delivered,
            breakwater_dispatch::store::ActionStatus::Pending
        ]
    );
    assert_eq!(
        stored(
            &s.insert(vec![NewEvent::new(&refused, vec![log("o")])])
                .await
                .unwrap()[0]
        )
        .len(),
        1
    );
}
