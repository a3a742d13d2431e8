//! Attempts: recorded with their action's outcome ([`Update::Attempt`]),
//! shown oldest first in its event's record ([`Store::event`]) and newest
//! first by endpoint ([`Store::endpoint_attempts`]), and gone with their
//! action (pruned, purged: [`Store::purge_actions`]).
//!
//! [`Update::Attempt`]: breakwater_dispatch::store::Update::Attempt
//! [`Store::event`]: breakwater_dispatch::store::Store::event
//! [`Store::endpoint_attempts`]: breakwater_dispatch::store::Store::endpoint_attempts
//! [`Store::purge_actions`]: breakwater_dispatch::store::Store::purge_actions

use breakwater_dispatch::store::{
    ActionId, ActionStatus, Attempt, AttemptOutcome, Trigger, Update,
};

use crate::backends::Handle;
use crate::fixtures::*;

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
