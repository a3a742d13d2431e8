//! The backlog: [`Store::claim_backlog`], [`Store::backlogged_endpoints`],
//! [`Store::backlogs`], and the claims a restart releases.
//!
//! An action is due at its `not_before` (a park or a retry) when it has
//! one, else when its event was accepted; "due by t" includes t.
//!
//! [`Store::claim_backlog`]: breakwater_dispatch::store::Store::claim_backlog
//! [`Store::backlogged_endpoints`]: breakwater_dispatch::store::Store::backlogged_endpoints
//! [`Store::backlogs`]: breakwater_dispatch::store::Store::backlogs

use breakwater::traits::EntityEvent;
use breakwater_dispatch::store::{ActionId, NewAction, NewEvent, PendingAction, Update};

use crate::backends::Handle;
use crate::fixtures::*;

/// When `p` is due.
fn due(p: &PendingAction) -> i64 {
    p.not_before_ms.unwrap_or(p.accepted_at_ms)
}

/// `claim_backlog` hands out an endpoint's due actions earliest due first,
/// then by id, at most `limit` a call, and says whether more are due by
/// the same time: `more` is false when the page took the last of them
/// (even a full page), and when the rest are not due yet. What it handed
/// out is not handed out again; what is not due yet comes once due.
pub(crate) async fn claim_backlog_takes_due_actions_earliest_due_first_a_page_at_a_time(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let w = wall_ms();
    let plan: [(&str, Option<i64>); 7] = [
        ("p1", Some(w - 2 * HOUR)),
        ("q1", None),
        ("p2", Some(w - 3 * HOUR)),
        ("p3", Some(w - HOUR)),
        ("q2", None),
        ("p4", Some(w - HOUR)),
        ("later", Some(w + DAY)),
    ];
    let events: Vec<EntityEvent> = plan.iter().map(|_| event()).collect();
    let made = |(name, park): &(&str, Option<i64>)| {
        let a = hook(name, A).backlogged();
        match park {
            Some(t) => a.parked_until(*t),
            None => a,
        }
    };
    let batch = events
        .iter()
        .zip(&plan)
        .map(|(e, p)| NewEvent::new(e, vec![made(p)]))
        .collect();
    let out = s.insert(batch).await.unwrap();
    assert!(out.iter().all(|o| stored(o).is_empty()), "{out:?}");
    let mut id = std::collections::HashMap::new();
    for (e, (name, _)) in events.iter().zip(&plan) {
        id.insert(*name, record(&s, e.id).await.actions[0].id);
    }
    let ep = endpoint(A);
    let soon = soon();

    let first = s.claim_backlog(&ep, 3, soon).await.unwrap();
    let tie = {
        let mut t = [id["p3"], id["p4"]];
        t.sort_unstable();
        t
    };
    assert_eq!(ids(&first.actions), [id["p2"], id["p1"], tie[0]]);
    assert!(first.more, "three more are due");
    let second = s.claim_backlog(&ep, 3, soon).await.unwrap();
    assert_eq!(second.actions.len(), 3, "{second:?}");
    assert_eq!(second.actions[0].id, tie[1]);
    let mut qs = vec![id["q1"], id["q2"]];
    let mut got_qs = ids(&second.actions[1..]);
    got_qs.sort_unstable();
    qs.sort_unstable();
    assert_eq!(got_qs, qs);
    assert!(
        !second.more,
        "the page took the last due ones; `later` is not due"
    );
    let pages: Vec<&PendingAction> = first.actions.iter().chain(&second.actions).collect();
    for pair in pages.windows(2) {
        assert!(
            (due(pair[0]), pair[0].id) < (due(pair[1]), pair[1].id),
            "earliest due first, then by id: {pair:?}"
        );
    }
    for p in &pages {
        let i = plan
            .iter()
            .position(|(name, _)| p.observer == *name)
            .unwrap_or_else(|| panic!("unknown action {p:?}"));
        let park = plan[i].1;
        assert_is(p, &events[i], &made(&plan[i]), 0);
        assert_eq!(p.not_before_ms, park, "{p:?}");
        assert_eq!(p.parked, park.is_some(), "{p:?}");
    }

    let none = s.claim_backlog(&ep, 3, soon).await.unwrap();
    assert!(none.actions.is_empty() && !none.more, "{none:?}");
    let at = w + DAY;
    let none = s.claim_backlog(&ep, 3, at - 1).await.unwrap();
    assert!(none.actions.is_empty() && !none.more, "{none:?}");
    let last = s.claim_backlog(&ep, 3, at).await.unwrap();
    assert_eq!(ids(&last.actions), [id["later"]]);
    assert!(!last.more);
    assert!(last.actions[0].parked);
    assert_eq!(last.actions[0].not_before_ms, Some(at));

    // A page of one, then one more.
    let more: Vec<_> = (0..2).map(|_| event()).collect();
    s.insert(
        more.iter()
            .map(|e| NewEvent::new(e, vec![hook("o", A).backlogged()]))
            .collect(),
    )
    .await
    .unwrap();
    let one = s.claim_backlog(&ep, 1, soon).await.unwrap();
    assert_eq!((one.actions.len(), one.more), (1, true));
    let two = s.claim_backlog(&ep, 1, soon).await.unwrap();
    assert_eq!((two.actions.len(), two.more), (1, false));
    assert_ne!(one.actions[0].id, two.actions[0].id);
}

/// `claim_backlog` hands out only its endpoint's actions (an endpoint is
/// the breaker key: webhooks and Slack messages to one host and port share
/// it) that are pending or parked and unclaimed: not those claimed at
/// intake or by an earlier page, held, delivered or dead-lettered. An
/// unknown endpoint has nothing.
pub(crate) async fn claim_backlog_takes_only_unclaimed_waiting_actions_of_its_endpoint(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let e = event();
    let past = wall_ms() - HOUR;
    let given = vec![
        hook("claimed", A),
        hook("retried", A),
        hook("held", A),
        hook("dead", A),
        hook("done", A),
        hook("backlog", A).backlogged(),
        hook("other path", "http://127.0.0.1:9001/other?x=1").backlogged(),
        slack("chat", "http://127.0.0.1:9001/slack").backlogged(),
        hook("parked", A).backlogged().parked_until(past),
        hook("quota", A)
            .backlogged()
            .dead_lettered("over its quota"),
        hook("b", B).backlogged(),
        log("log").backlogged(),
    ];
    let back = insert(&s, &e, given.clone()).await;
    assert_eq!(back.len(), 5);
    apply(
        &s,
        vec![
            retry(back[1].id, 1, past),
            Update::Held {
                id: back[2].id,
                gone: None,
            },
            dead(back[3].id, "HTTP 400"),
            delivered(back[4].id),
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    let ep = endpoint(A);
    let soon = soon();
    let claimed = claim_all(&s, &ep, soon).await;
    // The parked one is due an hour ago; the others when accepted, by id.
    let mut rest: Vec<&PendingAction> = claimed.iter().skip(1).collect();
    rest.sort_by_key(|p| p.id);
    assert_eq!(claimed[0].observer, "parked");
    let mut names: Vec<&str> = rest.iter().map(|p| p.observer.as_str()).collect();
    assert_eq!(
        ids(&claimed[1..]),
        rest.iter().map(|p| p.id).collect::<Vec<_>>()
    );
    names.sort_unstable();
    assert_eq!(names, ["backlog", "chat", "other path"]);
    for p in &claimed {
        let i = rec.actions.iter().position(|r| r.id == p.id).unwrap();
        assert_is(p, &e, &given[i], 0);
    }
    assert!(
        claim_all(&s, &ep, i64::MAX).await.is_empty(),
        "claimed once"
    );
    assert_eq!(
        claim_all(&s, &endpoint(B), soon)
            .await
            .iter()
            .map(|p| p.observer.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        claim_all(&s, "log", soon)
            .await
            .iter()
            .map(|p| p.observer.as_str())
            .collect::<Vec<_>>(),
        ["log"]
    );
    let unknown = s
        .claim_backlog("http://127.0.0.1:1", 10, i64::MAX)
        .await
        .unwrap();
    assert!(unknown.actions.is_empty() && !unknown.more, "{unknown:?}");
    assert!(
        claim_all(&s, "email", i64::MAX).await.is_empty(),
        "no endpoint of that name"
    );
}

/// `backlogged_endpoints` names each endpoint with unclaimed pending or
/// parked actions due by the time given, once: not one whose actions are
/// all claimed, held or dead-lettered, nor one whose actions are not due
/// yet; an endpoint drops out once its backlog is claimed, and is named
/// again when an action is released to it.
pub(crate) async fn backlogged_endpoints_names_endpoints_with_unclaimed_due_work(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let w = wall_ms();
    let until = w + DAY;
    let ea = event();
    insert(
        &s,
        &ea,
        vec![hook("o", A).backlogged(), hook("o", A).backlogged()],
    )
    .await;
    let ta = accepted_ms(&s, ea.id).await;
    insert(
        &s,
        &event(),
        vec![hook("o", B).backlogged().parked_until(until)],
    )
    .await;
    let claimed = insert(&s, &event(), vec![hook("o", C), log("o")]).await;
    apply(
        &s,
        vec![Update::Held {
            id: claimed[1].id,
            gone: None,
        }],
    )
    .await;
    insert(
        &s,
        &event(),
        vec![log("o").backlogged().dead_lettered("over its quota")],
    )
    .await;
    insert(
        &s,
        &event(),
        vec![email("o").backlogged().parked_until(w - HOUR)],
    )
    .await;
    let (a, b) = (endpoint(A), endpoint(B));
    let sorted = |mut v: Vec<&str>| {
        v.sort_unstable();
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };

    assert_eq!(due_endpoints(&s, w - HOUR - 1).await, Vec::<String>::new());
    assert_eq!(due_endpoints(&s, w - HOUR).await, ["email"]);
    assert_eq!(due_endpoints(&s, ta - 1).await, ["email"]);
    assert_eq!(
        due_endpoints(&s, ta).await,
        sorted(vec!["email", a.as_str()])
    );
    assert_eq!(
        due_endpoints(&s, until - 1).await,
        sorted(vec!["email", a.as_str()])
    );
    assert_eq!(
        due_endpoints(&s, until).await,
        sorted(vec!["email", a.as_str(), b.as_str()])
    );

    let page = s.claim_backlog(&a, 1, ta).await.unwrap();
    assert!(page.more);
    assert_eq!(
        due_endpoints(&s, until).await,
        sorted(vec!["email", a.as_str(), b.as_str()]),
        "one of A's actions is still unclaimed"
    );
    let rest = claim_all(&s, &a, ta).await;
    assert_eq!(rest.len(), 1);
    claim_all(&s, "email", i64::MAX).await;
    assert_eq!(due_endpoints(&s, i64::MAX).await, std::slice::from_ref(&b));
    apply(&s, vec![Update::Released { id: rest[0].id }]).await;
    assert_eq!(
        due_endpoints(&s, until).await,
        sorted(vec![a.as_str(), b.as_str()])
    );
}

/// `backlogs` counts each endpoint's waiting actions, pending or parked,
/// claimed or not (held, delivered and dead-lettered ones do not wait),
/// with when the oldest of them was accepted; an endpoint with none is
/// left out or counts 0 with no oldest.
pub(crate) async fn backlogs_count_waiting_actions_claimed_or_not_and_the_oldest(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let e1 = event();
    let one = insert(&s, &e1, vec![hook("o", A), hook("o", B).backlogged()]).await;
    let t1 = one[0].accepted_at_ms;
    after(&s, t1).await;
    let e2 = event();
    let two = insert(
        &s,
        &e2,
        vec![
            hook("o", A).backlogged(),
            hook("o", A).parked_until(wall_ms() + DAY),
            log("o"),
        ],
    )
    .await;
    let t2 = two[0].accepted_at_ms;
    assert!(t2 > t1, "the second event is accepted later: {t1} {t2}");
    let three = insert(
        &s,
        &event(),
        vec![
            hook("o", A),
            hook("o", A),
            hook("o", A),
            hook("o", A).dead_lettered("over its quota"),
        ],
    )
    .await;
    apply(
        &s,
        vec![
            delivered(three[0].id),
            dead(three[1].id, "HTTP 400"),
            Update::Held {
                id: three[2].id,
                gone: None,
            },
        ],
    )
    .await;
    let (a, b) = (endpoint(A), endpoint(B));
    assert_eq!(
        backlogs(&s).await,
        [
            (a.clone(), 3, Some(t1)),
            (b.clone(), 1, Some(t1)),
            ("log".to_string(), 1, Some(t2)),
        ]
    );
    // Claimed or not, the same.
    assert_eq!(claim_all(&s, &a, i64::MAX).await.len(), 1);
    assert_eq!(claim_all(&s, &b, i64::MAX).await.len(), 1);
    assert_eq!(
        backlogs(&s).await,
        [
            (a.clone(), 3, Some(t1)),
            (b.clone(), 1, Some(t1)),
            ("log".to_string(), 1, Some(t2)),
        ]
    );
    let b_id = record(&s, e1.id).await.actions[1].id;
    let a_backlogged = record(&s, e2.id).await.actions[0].id;
    apply(
        &s,
        vec![
            delivered(one[0].id),
            Update::Held {
                id: b_id,
                gone: None,
            },
            delivered(two[0].id),
            delivered(two[1].id),
        ],
    )
    .await;
    assert_eq!(backlogs(&s).await, [(a.clone(), 1, Some(t2))]);
    apply(&s, vec![dead(a_backlogged, "HTTP 400")]).await;
    assert!(backlogs(&s).await.is_empty());
}

/// A restart releases every claim: what this instance held (handed back
/// by `insert` or by `claim_backlog`, retried or parked since) is backlog
/// again, due as before, with its attempts and accepted time; delivered,
/// held and dead-lettered actions are not. A second restart releases the
/// claims taken after the first.
pub(crate) async fn a_reopen_puts_claimed_actions_back_in_the_backlog(db: &mut dyn Handle) {
    let s = db.store();
    let w = wall_ms();
    let until = w + DAY;
    let (e1, e2) = (event(), event());
    let given1 = vec![
        hook("kept", A),
        hook("retried", A),
        hook("done", A),
        hook("paged", A).backlogged(),
        hook("parked", A).parked_until(until),
    ];
    let back1 = insert(&s, &e1, given1.clone()).await;
    let back2 = insert(&s, &e2, vec![hook("held", A), hook("dead", A), log("log")]).await;
    let t1 = back1[0].accepted_at_ms;
    let paged = claim_all(&s, &endpoint(A), soon()).await;
    assert_eq!(paged.len(), 1);
    apply(
        &s,
        vec![
            retry(back1[1].id, 2, w - HOUR),
            delivered(back1[2].id),
            Update::Held {
                id: back2[0].id,
                gone: None,
            },
            dead(back2[1].id, "HTTP 400"),
        ],
    )
    .await;
    assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());

    // The retried one is due an hour ago, the other two when accepted
    // (by id).
    let mut at_t1 = [(back1[0].id, &given1[0]), (paged[0].id, &given1[3])];
    at_t1.sort_by_key(|(id, _)| *id);
    let order: Vec<(ActionId, &NewAction, u32)> = vec![
        (back1[1].id, &given1[1], 2),
        (at_t1[0].0, at_t1[0].1, 0),
        (at_t1[1].0, at_t1[1].1, 0),
    ];
    let expect = |claimed: &[PendingAction]| {
        assert_eq!(
            ids(claimed),
            order.iter().map(|o| o.0).collect::<Vec<_>>(),
            "{claimed:?}"
        );
        for (p, (_, a, attempts)) in claimed.iter().zip(&order) {
            assert_is(p, &e1, a, *attempts);
            assert_eq!(p.accepted_at_ms, t1, "{p:?}");
            assert!(!p.parked, "{p:?}");
        }
        assert_eq!(claimed[0].not_before_ms, Some(w - HOUR));
    };
    for _ in 0..2 {
        db.reopen().await;
        let s = db.store();
        let soon = soon();
        let mut listed = vec![endpoint(A), "log".to_string()];
        listed.sort();
        assert_eq!(due_endpoints(&s, soon).await, listed);
        expect(&claim_all(&s, &endpoint(A), soon).await);
        let parked = claim_all(&s, &endpoint(A), until).await;
        assert_eq!(ids(&parked), [back1[3].id]);
        assert_is(&parked[0], &e1, &given1[4], 0);
        assert!(parked[0].parked);
        assert_eq!(parked[0].not_before_ms, Some(until));
        let logged = claim_all(&s, "log", soon).await;
        assert_eq!(ids(&logged), [back2[2].id]);
        assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());
    }
}
