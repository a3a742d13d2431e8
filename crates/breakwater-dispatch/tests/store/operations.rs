//! What operators' writes leave in the store: replay jobs
//! ([`Store::create_replay_job`] and the rest) and the audit log
//! ([`Store::audit`], [`Store::audit_log`]).
//!
//! [`Store::create_replay_job`]: breakwater_dispatch::store::Store::create_replay_job
//! [`Store::audit`]: breakwater_dispatch::store::Store::audit
//! [`Store::audit_log`]: breakwater_dispatch::store::Store::audit_log

use breakwater_dispatch::store::{ActionFilter, ActionStatus, AuditEntry, ReplayState, Update};

use crate::backends::Handle;
use crate::fixtures::*;

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
        .create_replay_job(&filter, "token:0123456789ab", 3, true)
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
        s.update_replay_job(job.id, 3, None, ReplayState::Running, None)
            .await
            .unwrap(),
        Some(ReplayState::Running)
    );
    let now = s.replay_job(job.id).await.unwrap().unwrap();
    assert_eq!((now.replayed, now.state), (3, ReplayState::Running));
    assert_eq!(now.progress, [(ActionStatus::Pending, 3)]);
    // One delivered, B's circuit parks its actions: z shows parked.
    let claimed = claim_all(&s, &endpoint(A), soon()).await;
    assert_eq!(ids(&claimed), [x, y]);
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
        s.update_replay_job(job.id, 3, None, ReplayState::Finished, None)
            .await
            .unwrap(),
        Some(ReplayState::Finished)
    );
    assert_eq!(
        s.update_replay_job(job.id, 9, None, ReplayState::Running, None)
            .await
            .unwrap(),
        Some(ReplayState::Finished),
        "a finished job stays finished"
    );
    let done = s.replay_job(job.id).await.unwrap().unwrap();
    assert_eq!((done.replayed, done.state), (3, ReplayState::Finished));
    assert_eq!(
        s.cancel_replay_job(job.id).await.unwrap().unwrap().state,
        ReplayState::Finished
    );

    let failed = s
        .create_replay_job(&ActionFilter::default(), "cli", 10, true)
        .await
        .unwrap();
    assert!(failed.id > job.id);
    assert_eq!(
        s.update_replay_job(
            failed.id,
            4,
            None,
            ReplayState::Failed,
            Some("storage failed".into())
        )
        .await
        .unwrap(),
        Some(ReplayState::Failed)
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
        .update_replay_job(failed.id + 100, 1, None, ReplayState::Running, None)
        .await
        .is_err());
}

/// A running job cancelled stays cancelled: progress written after is
/// not taken, and the writer learns of the cancel from the state
/// `update_replay_job` returns. Cancelling an unknown job finds none.
pub(crate) async fn a_cancelled_replay_job_stays_cancelled(db: &mut dyn Handle) {
    let s = db.store();
    let job = s
        .create_replay_job(&ActionFilter::default(), "cli", 1000, true)
        .await
        .unwrap();
    assert_eq!(
        s.update_replay_job(job.id, 500, None, ReplayState::Running, None)
            .await
            .unwrap(),
        Some(ReplayState::Running)
    );
    let cancelled = s.cancel_replay_job(job.id).await.unwrap().expect("the job");
    assert_eq!(
        (cancelled.state, cancelled.replayed),
        (ReplayState::Cancelled, 500)
    );
    assert!(cancelled.updated_at_ms >= job.updated_at_ms);
    assert_eq!(
        s.update_replay_job(job.id, 1000, None, ReplayState::Running, None)
            .await
            .unwrap(),
        Some(ReplayState::Cancelled)
    );
    assert_eq!(
        s.update_replay_job(job.id, 1000, None, ReplayState::Finished, None)
            .await
            .unwrap(),
        Some(ReplayState::Cancelled)
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

/// A service's job (adoptable) left running when its process stopped is
/// taken up by the next open of the store, once, with its progress and
/// cursor; a command's job never is; a store takes up none of its own.
pub(crate) async fn a_running_job_of_a_stopped_instance_is_taken_up_where_it_was(
    db: &mut dyn Handle,
) {
    let s = db.store();
    let service = s
        .create_replay_job(&ActionFilter::default(), "token:ab", 1_234, true)
        .await
        .unwrap();
    let command = s
        .create_replay_job(&ActionFilter::default(), "cli", 10, false)
        .await
        .unwrap();
    assert_eq!(service.cursor, None);
    assert_eq!(
        s.update_replay_job(service.id, 500, Some(735), ReplayState::Running, None)
            .await
            .unwrap(),
        Some(ReplayState::Running)
    );
    assert!(
        s.adopt_replay_jobs().await.unwrap().is_empty(),
        "its own jobs are not taken up again"
    );
    db.reopen().await;
    let s = db.store();
    let taken = s.adopt_replay_jobs().await.unwrap();
    assert_eq!(
        taken
            .iter()
            .map(|j| (j.id, j.replayed, j.cursor, j.state))
            .collect::<Vec<_>>(),
        [(service.id, 500, Some(735), ReplayState::Running)],
        "the service's job, not the command's"
    );
    assert!(
        s.adopt_replay_jobs().await.unwrap().is_empty(),
        "taken up once"
    );
    assert_eq!(
        s.replay_job(service.id).await.unwrap().unwrap().cursor,
        Some(735)
    );
    assert_eq!(
        s.update_replay_job(service.id, 1_234, Some(235), ReplayState::Finished, None)
            .await
            .unwrap(),
        Some(ReplayState::Finished)
    );
    // The command's job is the command's to record, from any store.
    assert_eq!(
        s.update_replay_job(command.id, 10, None, ReplayState::Finished, None)
            .await
            .unwrap(),
        Some(ReplayState::Finished)
    );
    db.reopen().await;
    assert!(db.store().adopt_replay_jobs().await.unwrap().is_empty());
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
