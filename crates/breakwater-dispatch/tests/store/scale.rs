//! Many events at once: one large batch, and two writers at the same time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use breakwater::traits::{EntityEvent, EventKind};
use breakwater_dispatch::store::{ActionId, Inserted, NewEvent};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::backends::Handle;
use crate::fixtures::*;

/// An event numbered `n`.
fn numbered(n: usize) -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "Order",
        Uuid::new_v4(),
        serde_json::json!({"n": n, "note": format!("event {n}")}),
    )
}

/// Checks that `ids` holds no id twice.
fn assert_unique(ids: &[ActionId]) {
    let set: HashSet<_> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "an action id is used twice");
}

/// A thousand events in one `insert` are all stored: one outcome each, in
/// the order given, each handing back its own claimed action; every
/// action id is unique; each event's record and backlogged action read
/// back as given. The actions are clones of a few configured ones (as the
/// engine makes them) or made anew for each event.
pub(crate) async fn a_thousand_events_in_one_batch_are_all_stored(db: &mut dyn Handle) {
    const N: usize = 1000;
    let s = db.store();
    let events: Vec<EntityEvent> = (0..N).map(numbered).collect();
    let (shared_log, shared_hook) = (log("o"), hook("o", A).backlogged());
    let batch = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let actions = if i % 3 == 0 {
                vec![log("o"), hook("o", A).backlogged()]
            } else {
                vec![shared_log.clone(), shared_hook.clone()]
            };
            NewEvent::new(e, actions)
        })
        .collect();
    let out = s.insert(batch).await.unwrap();
    assert_eq!(out.len(), N);
    let mut claimed = Vec::with_capacity(N);
    for (o, e) in out.iter().zip(&events) {
        let back = stored(o);
        assert_eq!(back.len(), 1);
        assert_is(&back[0], e, &shared_log, 0);
        claimed.push(back[0].id);
    }
    assert_unique(&claimed);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 2 * N as u64,
            ..Counts::default()
        }
    );
    let waiting: Vec<(String, u64)> = backlogs(&s)
        .await
        .into_iter()
        .map(|(endpoint, n, _)| (endpoint, n))
        .collect();
    assert_eq!(
        waiting,
        [(endpoint(A), N as u64), ("log".to_string(), N as u64)]
    );

    // The backlog, page by page.
    let soon = soon();
    let mut backlog = Vec::new();
    for page_no in 0.. {
        let page = s.claim_backlog(&endpoint(A), 300, soon).await.unwrap();
        let last = page_no == N / 300;
        assert_eq!(page.actions.len(), if last { N % 300 } else { 300 });
        assert_eq!(page.more, !last);
        backlog.extend(page.actions);
        if last {
            break;
        }
    }
    let by_event: HashMap<Uuid, ActionId> = backlog.iter().map(|p| (p.event.id(), p.id)).collect();
    assert_eq!(by_event.len(), N, "one backlogged action an event");
    let mut all = claimed.clone();
    all.extend(ids(&backlog));
    assert_unique(&all);
    let index: HashMap<Uuid, usize> = events.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    for p in &backlog {
        assert_is(p, &events[index[&p.event.id()]], &shared_hook, 0);
    }
    for (e, id) in events.iter().zip(&claimed) {
        let rec = record(&s, e.id).await;
        assert_eq!(
            rec.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
            [*id, by_event[&e.id]],
            "{}",
            e.id
        );
        for (r, a) in rec.actions.iter().zip([&shared_log, &shared_hook]) {
            assert_record_of(r, e, a);
        }
    }
}

/// Two tasks inserting at once through the same store, in batches, some
/// events given by both: each event is stored once, with the actions of
/// the one insert that stored it (the other got `Duplicate`), and no
/// action id is used twice.
pub(crate) async fn two_tasks_inserting_at_once_store_each_event_once(db: &mut dyn Handle) {
    const SHARED: usize = 200;
    const OWN: usize = 100;
    let s = db.store();
    let shared: Vec<EntityEvent> = (0..SHARED).map(numbered).collect();
    let start = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for task in 0..2 {
        let own: Vec<EntityEvent> = (0..OWN)
            .map(|n| numbered(10_000 * (task + 1) + n))
            .collect();
        // One task takes the shared events first to last, the other last to
        // first, each mixed with its own.
        let mut order: Vec<EntityEvent> = shared.clone();
        if task == 1 {
            order.reverse();
        }
        let mut mixed = Vec::new();
        let mut own_iter = own.into_iter();
        for (i, e) in order.into_iter().enumerate() {
            mixed.push(e);
            if i % 2 == 0 {
                mixed.extend(own_iter.next());
            }
        }
        mixed.extend(own_iter);
        let s = s.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let observer = format!("task {task}");
            let (l, h) = (log(&observer), hook(&observer, A).backlogged());
            start.wait().await;
            let mut outcomes = Vec::new();
            for chunk in mixed.chunks(10) {
                let batch = chunk
                    .iter()
                    .map(|e| NewEvent::new(e, vec![l.clone(), h.clone()]))
                    .collect();
                let out = s.insert(batch).await.expect("insert");
                assert_eq!(out.len(), chunk.len());
                for (e, o) in chunk.iter().zip(out) {
                    outcomes.push((e.id, o));
                }
                tokio::task::yield_now().await;
            }
            (observer, outcomes)
        }));
    }
    let mut winner: HashMap<Uuid, String> = HashMap::new();
    let mut claimed = Vec::new();
    for t in tasks {
        let (observer, outcomes) = t.await.expect("the task ran to its end");
        for (id, o) in outcomes {
            match o {
                Inserted::New(back) => {
                    assert_eq!(back.len(), 1);
                    assert_eq!(back[0].observer, observer);
                    claimed.push(back[0].id);
                    let first = winner.insert(id, observer.clone());
                    assert_eq!(first, None, "{id} was stored twice");
                }
                Inserted::Duplicate => {}
            }
        }
    }
    let total = SHARED + 2 * OWN;
    assert_eq!(winner.len(), total, "every event was stored");
    let mut all = claimed;
    for (id, observer) in &winner {
        let rec = record(&s, *id).await;
        assert_eq!(rec.actions.len(), 2, "{rec:?}");
        assert!(
            rec.actions.iter().all(|a| &a.observer == observer),
            "the actions of the insert that stored it: {rec:?}"
        );
        all.push(rec.actions[1].id);
    }
    assert_unique(&all);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 2 * total as u64,
            ..Counts::default()
        }
    );
    let backlog = claim_ids(&s, &endpoint(A), soon()).await;
    assert_eq!(backlog.len(), total);
    assert_unique(&backlog);
}

/// Two tasks claiming one endpoint's backlog at once, a page at a time,
/// claim every action, each once.
pub(crate) async fn two_tasks_claiming_at_once_claim_each_action_once(db: &mut dyn Handle) {
    const N: usize = 500;
    let s = db.store();
    let events: Vec<EntityEvent> = (0..N).map(numbered).collect();
    let h = hook("o", A).backlogged();
    let out = s
        .insert(
            events
                .iter()
                .map(|e| NewEvent::new(e, vec![h.clone()]))
                .collect(),
        )
        .await
        .unwrap();
    assert!(out.iter().all(|o| stored(o).is_empty()));
    let soon = soon();
    let start = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            for _ in 0..N {
                let page = s
                    .claim_backlog(&endpoint(A), 7, soon)
                    .await
                    .expect("claim_backlog");
                if page.actions.is_empty() {
                    assert!(!page.more, "nothing handed out, yet `more`");
                    return got;
                }
                got.extend(ids(&page.actions));
                tokio::task::yield_now().await;
            }
            panic!("the backlog never ran out");
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("the task ran to its end"));
    }
    assert_eq!(all.len(), N, "every action claimed once");
    assert_unique(&all);
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
}
