//! [`Store::apply`]: each kind of [`Update`], seen through the read
//! methods.
//!
//! An action claimed (handed back by `insert`, or by `claim_backlog`) stays
//! claimed, and so out of every backlog, until its claim is given up: by
//! `Released`, by leaving the waiting states (delivered, dead-lettered,
//! held), or by a restart. A retry and a park keep it: the instance that
//! holds it tries it again from memory.
//!
//! [`Store::apply`]: breakwater_dispatch::store::Store::apply

use breakwater_dispatch::store::{ActionStatus, AttemptOutcome, GoneAttempt, Update};

use crate::backends::Handle;
use crate::fixtures::*;

/// `Delivered`: the record shows it delivered with the attempts and the
/// status given, due no more; it no longer waits (backlogs, oldest
/// pending), is no dead letter, and a restart does not bring it back.
pub(crate) async fn delivered_records_the_outcome_and_ends_the_wait(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), log("o")]).await;
    let (id, other) = (back[0].id, back[1].id);
    apply(&s, vec![retry(id, 1, wall_ms() + HOUR)]).await;
    apply(
        &s,
        vec![Update::Delivered {
            id,
            attempts: 2,
            status: Some(204),
        }],
    )
    .await;
    let r = action_of(&s, e.id, id).await;
    assert_eq!(
        (r.status, r.attempts, r.last_status, r.not_before.clone()),
        (ActionStatus::Delivered, 2, Some(204), None),
        "{r:?}"
    );
    let other_r = action_of(&s, e.id, other).await;
    assert_eq!(other_r.status, ActionStatus::Pending, "{other_r:?}");
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            delivered: 1,
            ..Counts::default()
        }
    );
    assert_eq!(
        backlogs(&s).await,
        [("log".to_string(), 1, Some(back[1].accepted_at_ms))]
    );
    assert!(dead_letter_ids(&s).await.is_empty());
    db.reopen().await;
    let s = db.store();
    assert_eq!(due_endpoints(&s, i64::MAX).await, ["log"]);
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
    assert_eq!(claim_ids(&s, "log", i64::MAX).await, [other]);
}

/// `Retry`: the record shows the action pending with the attempts, the
/// error, the status and the time of the next attempt. It still waits
/// (backlogs), and stays claimed: no backlog hands it out. After a
/// restart it is due at its retry time, not before, with its attempts.
pub(crate) async fn retry_records_the_failure_and_keeps_the_claim(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let given = hook("o", A);
    let back = insert(&s, &e, vec![given.clone(), log("o")]).await;
    let (id, quiet) = (back[0].id, back[1].id);
    let at = wall_ms() + DAY;
    apply(
        &s,
        vec![
            Update::Retry {
                id,
                attempts: 2,
                not_before_ms: at,
                error: "HTTP 503: busy".into(),
                status: Some(503),
            },
            Update::Retry {
                id: quiet,
                attempts: 1,
                not_before_ms: wall_ms() - HOUR,
                error: "timed out".into(),
                status: None,
            },
        ],
    )
    .await;
    let r = action_of(&s, e.id, id).await;
    assert_eq!(
        (
            r.status,
            r.attempts,
            r.last_error.as_deref(),
            r.last_status,
            not_before_ms(&r)
        ),
        (
            ActionStatus::Pending,
            2,
            Some("HTTP 503: busy"),
            Some(503),
            Some(at)
        ),
        "{r:?}"
    );
    let q = action_of(&s, e.id, quiet).await;
    assert_eq!(
        (q.attempts, q.last_error.as_deref(), q.last_status),
        (1, Some("timed out"), None),
        "{q:?}"
    );
    assert_eq!(
        backlogs(&s).await,
        [
            (endpoint(A), 1, Some(back[0].accepted_at_ms)),
            ("log".to_string(), 1, Some(back[1].accepted_at_ms)),
        ]
    );
    // Still claimed.
    assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
    assert!(claim_all(&s, "log", i64::MAX).await.is_empty());

    db.reopen().await;
    let s = db.store();
    assert_eq!(due_endpoints(&s, soon()).await, ["log"]);
    let claimed = claim_all(&s, "log", soon()).await;
    assert_eq!(ids(&claimed), [quiet]);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(due_endpoints(&s, at - 1).await, Vec::<String>::new());
    assert!(claim_all(&s, &endpoint(A), at - 1).await.is_empty());
    assert_eq!(due_endpoints(&s, at).await, [endpoint(A)]);
    let claimed = claim_all(&s, &endpoint(A), at).await;
    assert_eq!(ids(&claimed), [id]);
    assert_is(&claimed[0], &e, &given, 2);
    assert_eq!(claimed[0].not_before_ms, Some(at));
    assert!(!claimed[0].parked);
}

/// `Parked`: the record shows the action parked until the time given, its
/// attempts unchanged (a park uses none); parked again, the new time
/// replaces the old. It still waits and stays claimed; after a restart it
/// is handed out parked, at its time.
pub(crate) async fn parked_records_the_time_without_an_attempt(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let given = hook("o", A);
    let back = insert(&s, &e, vec![given.clone()]).await;
    let id = back[0].id;
    let first = wall_ms() + DAY;
    let then = first + DAY;
    apply(&s, vec![retry(id, 3, wall_ms() - HOUR)]).await;
    apply(
        &s,
        vec![Update::Parked {
            id,
            until_ms: first,
        }],
    )
    .await;
    let r = action_of(&s, e.id, id).await;
    assert_eq!(
        (r.status, r.attempts, not_before_ms(&r)),
        (ActionStatus::Parked, 3, Some(first)),
        "{r:?}"
    );
    apply(&s, vec![Update::Parked { id, until_ms: then }]).await;
    let r = action_of(&s, e.id, id).await;
    assert_eq!(
        (r.status, r.attempts, not_before_ms(&r)),
        (ActionStatus::Parked, 3, Some(then)),
        "{r:?}"
    );
    assert_eq!(
        counts(&s).await,
        Counts {
            parked: 1,
            ..Counts::default()
        }
    );
    assert_eq!(
        backlogs(&s).await,
        [(endpoint(A), 1, Some(back[0].accepted_at_ms))]
    );
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());

    db.reopen().await;
    let s = db.store();
    assert!(claim_all(&s, &endpoint(A), then - 1).await.is_empty());
    let claimed = claim_all(&s, &endpoint(A), then).await;
    assert_eq!(ids(&claimed), [id]);
    assert_is(&claimed[0], &e, &given, 3);
    assert!(claimed[0].parked);
    assert_eq!(claimed[0].not_before_ms, Some(then));
}

/// `DeadLetter`: the record shows the action dead-lettered with the
/// attempts, error and status given, and no retry time (one set by an
/// earlier retry is gone); it is listed in the dead letters as recorded,
/// waits no more, and a restart does not bring it back.
pub(crate) async fn dead_letter_moves_the_action_to_the_dead_letters(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), hook("o", A)]).await;
    let (id, kept) = (back[0].id, back[1].id);
    apply(&s, vec![retry(id, 2, wall_ms() + HOUR)]).await;
    apply(
        &s,
        vec![Update::DeadLetter {
            id,
            attempts: 3,
            error: "HTTP 400: bad request".into(),
            status: Some(400),
        }],
    )
    .await;
    let rec = record(&s, e.id).await;
    let r = action(&rec, id);
    assert_eq!(
        (
            r.status,
            r.attempts,
            r.last_error.as_deref(),
            r.last_status,
            r.not_before.clone()
        ),
        (
            ActionStatus::DeadLettered,
            3,
            Some("HTTP 400: bad request"),
            Some(400),
            None
        ),
        "{r:?}"
    );
    let dead = s.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0], listed(r));
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            dead_lettered: 1,
            ..Counts::default()
        }
    );
    assert_eq!(
        backlogs(&s).await,
        [(endpoint(A), 1, Some(back[1].accepted_at_ms))]
    );
    db.reopen().await;
    let s = db.store();
    assert_eq!(claim_ids(&s, &endpoint(A), i64::MAX).await, [kept]);
    assert_eq!(dead_letter_ids(&s).await, [id]);
}

/// `Held`: the action is held, out of every backlog and not waiting
/// (backlogs), but still to deliver (oldest pending), across a restart.
/// With the attempt answered `410 Gone`, the record shows that attempt's
/// count and error, and status 410; held untried, its attempts are
/// unchanged. `release_held` makes an endpoint's held actions pending,
/// unclaimed and due at once, says how many, and leaves other endpoints'
/// alone; the attempts used stay (unlike a replay, a release does not say
/// it resets them).
pub(crate) async fn held_actions_wait_for_release_held(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let given = vec![hook("o", A), hook("o", A), hook("o", B), log("o")];
    let back = insert(&s, &e, given.clone()).await;
    let [gone, untried, other, quiet] = [back[0].id, back[1].id, back[2].id, back[3].id];
    let accepted = back[0].accepted_at_ms;
    apply(&s, vec![retry(untried, 2, wall_ms() - HOUR)]).await;
    apply(
        &s,
        vec![
            Update::Held {
                id: gone,
                gone: Some(GoneAttempt {
                    attempts: 1,
                    error: "HTTP 410: gone for good".into(),
                }),
            },
            Update::Held {
                id: untried,
                gone: None,
            },
            Update::Held {
                id: other,
                gone: None,
            },
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    let g = action(&rec, gone);
    assert_eq!(
        (
            g.status,
            g.attempts,
            g.last_error.as_deref(),
            g.last_status,
            g.not_before.clone()
        ),
        (
            ActionStatus::Held,
            1,
            Some("HTTP 410: gone for good"),
            Some(410),
            None
        ),
        "{g:?}"
    );
    let u = action(&rec, untried);
    assert_eq!(
        (u.status, u.attempts, u.not_before.clone()),
        (ActionStatus::Held, 2, None),
        "{u:?}"
    );
    assert_eq!(action(&rec, other).status, ActionStatus::Held);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            held: 3,
            ..Counts::default()
        }
    );
    assert_eq!(backlogs(&s).await, [("log".to_string(), 1, Some(accepted))]);
    apply(&s, vec![delivered(quiet)]).await;
    assert_eq!(
        s.oldest_pending_ms().await.unwrap(),
        Some(accepted),
        "held actions are still to deliver"
    );

    db.reopen().await;
    let s = db.store();
    assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
    assert!(backlogs(&s).await.is_empty());

    assert_eq!(s.release_held("http://127.0.0.1:1").await.unwrap(), 0);
    assert_eq!(s.release_held(&endpoint(A)).await.unwrap(), 2);
    assert_eq!(s.release_held(&endpoint(A)).await.unwrap(), 0, "none left");
    let rec = record(&s, e.id).await;
    let seen: Vec<_> = [gone, untried, other]
        .iter()
        .map(|id| {
            let r = action(&rec, *id);
            (r.status, r.attempts)
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ActionStatus::Pending, 1),
            (ActionStatus::Pending, 2),
            (ActionStatus::Held, 0)
        ]
    );
    assert_eq!(backlogs(&s).await, [(endpoint(A), 2, Some(accepted))]);
    let soon = soon();
    assert_eq!(due_endpoints(&s, soon).await, [endpoint(A)]);
    let claimed = claim_all(&s, &endpoint(A), soon).await;
    let mut got = ids(&claimed);
    got.sort_unstable();
    assert_eq!(got, [gone, untried]);
    for p in &claimed {
        let attempts = if p.id == gone { 1 } else { 2 };
        assert_is(p, &e, &given[0], attempts);
    }
    assert!(claim_all(&s, &endpoint(B), i64::MAX).await.is_empty());
}

/// `Released`: a claimed action (handed back by `insert` or by
/// `claim_backlog`) is unclaimed again, pending, and handed out by its
/// backlog once more (once). A released action keeps its due time: one
/// parked until later is not handed out before then.
pub(crate) async fn released_hands_a_claimed_action_back(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let until = wall_ms() + DAY;
    let given = vec![
        hook("o", A),
        hook("o", A).parked_until(until),
        hook("o", A).backlogged(),
    ];
    let back = insert(&s, &e, given.clone()).await;
    let (now, parked) = (back[0].id, back[1].id);
    let paged = claim_all(&s, &endpoint(A), soon()).await;
    assert_eq!(paged.len(), 1);
    let paged = paged[0].id;
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());

    apply(
        &s,
        vec![
            Update::Released { id: now },
            Update::Released { id: parked },
            Update::Released { id: paged },
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    assert_eq!(action(&rec, now).status, ActionStatus::Pending);
    assert_eq!(action(&rec, paged).status, ActionStatus::Pending);
    let soon = soon();
    assert_eq!(due_endpoints(&s, soon).await, [endpoint(A)]);
    let claimed = claim_all(&s, &endpoint(A), soon).await;
    let mut got = ids(&claimed);
    got.sort_unstable();
    assert_eq!(got, [now, paged]);
    for p in &claimed {
        assert_is(p, &e, &given[0], 0);
    }
    assert!(claim_all(&s, &endpoint(A), until - 1).await.is_empty());
    let claimed = claim_all(&s, &endpoint(A), until).await;
    assert_eq!(ids(&claimed), [parked]);
    assert_eq!(claimed[0].not_before_ms, Some(until));
    assert!(claim_all(&s, &endpoint(A), i64::MAX).await.is_empty());
    assert_eq!(
        backlogs(&s).await,
        [(endpoint(A), 3, Some(back[0].accepted_at_ms))]
    );
}

/// `Snapshot`: kept by endpoint, the latest replacing the one before;
/// `EndpointDisabled` neither adds nor removes one.
pub(crate) async fn snapshots_are_kept_by_endpoint_and_overwritten(db: &mut dyn Handle) {
    let s = db.store();
    let snap = |endpoint: &str, json: &str| Update::Snapshot {
        endpoint: endpoint.into(),
        snapshot: json.into(),
    };
    apply(
        &s,
        vec![
            snap("http://b:80", r#"{"state":"closed"}"#),
            snap("http://a:80", r#"{"state":"open"}"#),
        ],
    )
    .await;
    let mut got = s.snapshots().await.unwrap();
    got.sort();
    assert_eq!(
        got,
        [
            ("http://a:80".to_string(), r#"{"state":"open"}"#.to_string()),
            (
                "http://b:80".to_string(),
                r#"{"state":"closed"}"#.to_string()
            ),
        ]
    );
    apply(
        &s,
        vec![
            snap("http://a:80", r#"{"state":"half_open"}"#),
            Update::EndpointDisabled {
                endpoint: "http://a:80".into(),
                disabled: true,
                reason: Some("HTTP 410".into()),
            },
            Update::EndpointDisabled {
                endpoint: "http://c:80".into(),
                disabled: true,
                reason: Some("HTTP 410".into()),
            },
        ],
    )
    .await;
    let mut got = s.snapshots().await.unwrap();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "http://a:80".to_string(),
                r#"{"state":"half_open"}"#.to_string()
            ),
            (
                "http://b:80".to_string(),
                r#"{"state":"closed"}"#.to_string()
            ),
        ]
    );
    apply(
        &s,
        vec![Update::EndpointDisabled {
            endpoint: "http://a:80".into(),
            disabled: false,
            reason: None,
        }],
    )
    .await;
    let mut again = s.snapshots().await.unwrap();
    again.sort();
    assert_eq!(again, got);
}

/// `EndpointDisabled`: a disabled endpoint is listed with its reason (the
/// latest replacing the one before), enabled again it is not; a snapshot
/// does not enable it. Enabling an endpoint never disabled is harmless.
pub(crate) async fn endpoints_are_disabled_with_a_reason_and_enabled_again(db: &mut dyn Handle) {
    let s = db.store();
    let disable = |endpoint: &str, reason: &str| Update::EndpointDisabled {
        endpoint: endpoint.into(),
        disabled: true,
        reason: Some(reason.into()),
    };
    let enable = |endpoint: &str| Update::EndpointDisabled {
        endpoint: endpoint.into(),
        disabled: false,
        reason: None,
    };
    apply(
        &s,
        vec![
            disable("http://b:80", "HTTP 410: b is gone"),
            disable("http://a:80", "HTTP 410: a is gone"),
            enable("http://never:80"),
        ],
    )
    .await;
    let mut got = s.disabled_endpoints().await.unwrap();
    got.sort();
    assert_eq!(
        got,
        [
            ("http://a:80".to_string(), "HTTP 410: a is gone".to_string()),
            ("http://b:80".to_string(), "HTTP 410: b is gone".to_string()),
        ]
    );
    apply(
        &s,
        vec![
            disable("http://a:80", "HTTP 410: a is still gone"),
            enable("http://b:80"),
            Update::Snapshot {
                endpoint: "http://a:80".into(),
                snapshot: "{}".into(),
            },
        ],
    )
    .await;
    assert_eq!(
        s.disabled_endpoints().await.unwrap(),
        [(
            "http://a:80".to_string(),
            "HTTP 410: a is still gone".to_string()
        )]
    );
    apply(&s, vec![enable("http://a:80")]).await;
    assert!(s.disabled_endpoints().await.unwrap().is_empty());
}

/// `event(id)` shows every action's state at once, each as its updates
/// left it; an unknown id has no record.
pub(crate) async fn an_event_record_shows_each_actions_state(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let given = vec![
        log("untouched"),
        hook("retried", A),
        hook("parked", A),
        hook("delivered", A),
        hook("dead", A),
        hook("held", A),
        hook("intake", A).dead_lettered("over its quota"),
    ];
    let back = insert(&s, &e, given.clone()).await;
    assert_eq!(back.len(), 6);
    let retry_at = wall_ms() + HOUR;
    let park_until = wall_ms() + DAY;
    apply(
        &s,
        vec![
            retry(back[1].id, 1, retry_at),
            Update::Parked {
                id: back[2].id,
                until_ms: park_until,
            },
            Update::Delivered {
                id: back[3].id,
                attempts: 1,
                status: None,
            },
            Update::DeadLetter {
                id: back[4].id,
                attempts: 4,
                error: "HTTP 422".into(),
                status: Some(422),
            },
            Update::Held {
                id: back[5].id,
                gone: None,
            },
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    assert_eq!(rec.id, e.id);
    assert_eq!(ms(&rec.accepted_at), back[0].accepted_at_ms);
    assert_eq!(rec.actions.len(), given.len());
    for (r, a) in rec.actions.iter().zip(&given) {
        assert_record_of(r, &e, a);
    }
    let seen: Vec<_> = rec
        .actions
        .iter()
        .map(|r| {
            (
                r.status,
                r.attempts,
                not_before_ms(r),
                r.last_error.as_deref(),
                r.last_status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ActionStatus::Pending, 0, None, None, None),
            (
                ActionStatus::Pending,
                1,
                Some(retry_at),
                Some("HTTP 503 (attempt 1)"),
                Some(503)
            ),
            (ActionStatus::Parked, 0, Some(park_until), None, None),
            (ActionStatus::Delivered, 1, None, None, None),
            (
                ActionStatus::DeadLettered,
                4,
                None,
                Some("HTTP 422"),
                Some(422)
            ),
            (ActionStatus::Held, 0, None, None, None),
            (
                ActionStatus::DeadLettered,
                0,
                None,
                Some("over its quota"),
                None
            ),
        ]
    );
    assert_eq!(s.event(uuid::Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(s.event(uuid::Uuid::nil()).await.unwrap(), None);
}

/// The updates of one `apply` take effect in the order given: of two
/// outcomes for the same action, or two states of one endpoint, the later
/// one stands.
pub(crate) async fn updates_are_applied_in_the_order_given(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), hook("o", A), hook("o", A)]).await;
    let [x, y, z] = [back[0].id, back[1].id, back[2].id];
    apply(
        &s,
        vec![
            retry(x, 1, wall_ms() + HOUR),
            retry(x, 2, wall_ms() + HOUR),
            Update::Delivered {
                id: x,
                attempts: 3,
                status: Some(200),
            },
            retry(y, 1, wall_ms() + HOUR),
            dead(y, "HTTP 400"),
            Update::Parked {
                id: z,
                until_ms: wall_ms() + DAY,
            },
            retry(z, 1, wall_ms() - HOUR),
            Update::Snapshot {
                endpoint: "http://a:80".into(),
                snapshot: "1".into(),
            },
            Update::EndpointDisabled {
                endpoint: "http://a:80".into(),
                disabled: true,
                reason: Some("gone".into()),
            },
            Update::Snapshot {
                endpoint: "http://a:80".into(),
                snapshot: "2".into(),
            },
            Update::EndpointDisabled {
                endpoint: "http://a:80".into(),
                disabled: false,
                reason: None,
            },
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    let seen: Vec<_> = [x, y, z]
        .iter()
        .map(|id| {
            let r = action(&rec, *id);
            (r.status, r.attempts)
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ActionStatus::Delivered, 3),
            (ActionStatus::DeadLettered, 1),
            (ActionStatus::Pending, 1)
        ]
    );
    assert_eq!(
        s.snapshots().await.unwrap(),
        [("http://a:80".to_string(), "2".to_string())]
    );
    assert!(s.disabled_endpoints().await.unwrap().is_empty());
}

/// An update for an action the store does not have (never stored, or
/// purged) fails nothing and changes nothing, and the updates beside it in
/// the same call take effect.
pub(crate) async fn an_update_for_an_unknown_action_is_harmless(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(
        &s,
        &e,
        vec![hook("o", A), hook("o", A).backlogged(), log("o")],
    )
    .await;
    let (x, quiet) = (back[0].id, back[1].id);
    let purged = record(&s, e.id).await.actions[1].id;
    // An outcome is for an action the store handed out: claimed first.
    assert_eq!(claim_ids(&s, &endpoint(A), soon()).await, [purged]);
    apply(&s, vec![dead(purged, "HTTP 400")]).await;
    assert_eq!(s.purge_dead_letters(Some(vec![purged])).await.unwrap(), 1);
    let before = record(&s, e.id).await;
    let counts_before = counts(&s).await;
    let unknown = [-1, x.max(quiet).max(purged) + 1_000_000, purged];
    let mut updates = Vec::new();
    for id in unknown {
        updates.extend([
            delivered(id),
            retry(id, 1, wall_ms() + HOUR),
            Update::Parked {
                id,
                until_ms: wall_ms() + HOUR,
            },
            dead(id, "HTTP 400"),
            Update::Held { id, gone: None },
            Update::Held {
                id,
                gone: Some(GoneAttempt {
                    attempts: 1,
                    error: "HTTP 410".into(),
                }),
            },
            Update::Released { id },
            recorded(
                id,
                &attempt(1, AttemptOutcome::Success, Some(200), wall_ms()),
            ),
        ]);
    }
    s.apply(updates).await.expect("unknown ids are harmless");
    let shown = s.endpoint_attempts(&endpoint(A), None, 100).await.unwrap();
    assert!(
        shown.is_empty(),
        "no attempt of an unknown action: {shown:?}"
    );
    assert_eq!(record(&s, e.id).await, before);
    assert_eq!(counts(&s).await, counts_before);
    assert!(dead_letter_ids(&s).await.is_empty());
    assert_eq!(due_endpoints(&s, i64::MAX).await, Vec::<String>::new());

    s.apply(vec![delivered(-1), delivered(x), delivered(purged)])
        .await
        .expect("unknown ids beside known ones");
    assert_eq!(action_of(&s, e.id, x).await.status, ActionStatus::Delivered);
    assert_eq!(
        counts(&s).await,
        Counts {
            pending: 1,
            delivered: 1,
            ..Counts::default()
        }
    );
    // The store goes on as before.
    let next = insert(&s, &event(), vec![log("o")]).await;
    assert_eq!(next.len(), 1);
    assert!(!back.iter().any(|b| b.id == next[0].id));
}

/// An endpoint's park (its circuit opened: one write for all its actions)
/// shows every waiting action of that endpoint parked until then, claimed
/// or not, and nothing of another endpoint's; a later time replaces it; 0
/// (its circuit closed) ends it; an action's own later wait still shows.
pub(crate) async fn an_endpoints_park_shows_its_waiting_actions_parked(db: &mut dyn Handle) {
    let s = db.store();
    let e = event();
    let back = insert(
        &s,
        &e,
        vec![hook("o", A), hook("o", A).backlogged(), hook("o", B)],
    )
    .await;
    let (claimed, other) = (back[0].id, back[1].id);
    let waiting = record(&s, e.id).await.actions[1].id;
    let until = wall_ms() + DAY;
    let park = |until_ms| Update::EndpointParked {
        endpoint: endpoint(A),
        until_ms,
    };
    apply(&s, vec![park(until)]).await;
    let r = record(&s, e.id).await;
    for id in [claimed, waiting] {
        let a = action(&r, id);
        assert_eq!(
            (a.status, not_before_ms(a)),
            (ActionStatus::Parked, Some(until)),
            "{a:?}"
        );
    }
    let b = action(&r, other);
    assert_eq!((b.status, not_before_ms(b)), (ActionStatus::Pending, None));
    // A later opening's time replaces it; an action's own later wait shows.
    let later = until + DAY;
    apply(&s, vec![park(later), retry(claimed, 1, later + HOUR)]).await;
    let r = record(&s, e.id).await;
    assert_eq!(not_before_ms(action(&r, waiting)), Some(later));
    assert_eq!(
        (
            action(&r, claimed).status,
            not_before_ms(action(&r, claimed))
        ),
        (ActionStatus::Parked, Some(later + HOUR))
    );
    // Closed again: nothing of A shows parked; the retry's own wait stays.
    apply(&s, vec![park(0)]).await;
    let r = record(&s, e.id).await;
    let a = action(&r, waiting);
    assert_eq!((a.status, not_before_ms(a)), (ActionStatus::Pending, None));
    let a = action(&r, claimed);
    assert_eq!(
        (a.status, not_before_ms(a)),
        (ActionStatus::Pending, Some(later + HOUR))
    );
    // A park whose time has passed shows nothing either.
    apply(&s, vec![park(wall_ms() - HOUR)]).await;
    assert_eq!(
        action(&record(&s, e.id).await, waiting).status,
        ActionStatus::Pending
    );
}
