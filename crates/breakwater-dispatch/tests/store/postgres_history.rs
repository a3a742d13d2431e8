//! What only the Postgres store has to show about the history: an upgrade
//! from schema version 1, attempts kept when their outcome is fenced off,
//! and replays and purges by any instance of a fleet.

use std::sync::Arc;

use breakwater_dispatch::pg_cluster::PgCluster;
use breakwater_dispatch::store::postgres::schema::SCHEMA_VERSION;
use breakwater_dispatch::store::{
    ActionFilter, ActionStatus, Attempt, AttemptOutcome, PostgresOptions, PostgresStore,
    ReplayState, Trigger, Update,
};
use tokio_postgres::NoTls;

use crate::backends::{shared_cluster, NEXT};
use crate::fixtures::*;

/// Options for a new schema of its own in `cluster`, as instance `name`.
fn options(cluster: &PgCluster, schema: &str, name: &str) -> PostgresOptions {
    let mut options = PostgresOptions::new(cluster.url());
    options.password = Some(cluster.password().to_string());
    options.schema = schema.to_string();
    options.instance = name.to_string();
    options.pool_size = 4;
    options
}

fn new_schema() -> String {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("history_{}_{n}", std::process::id())
}

async fn connect(options: &PostgresOptions) -> S {
    let store: Arc<PostgresStore> = Arc::new(
        PostgresStore::connect(options.clone())
            .await
            .unwrap_or_else(|e| panic!("connecting: {e}")),
    );
    store
}

/// A plain client of the cluster's database, in `schema`.
async fn db(cluster: &PgCluster, schema: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=10",
            cluster.port(),
            cluster.user(),
            cluster.password(),
            cluster.database()
        ),
        NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {}: {e}", cluster.url()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    client
}

fn success() -> Attempt {
    Attempt {
        number: 1,
        trigger: Trigger::Scheduled,
        breaker_state: "closed".into(),
        started_at_ms: wall_ms(),
        duration_ms: 4,
        outcome: AttemptOutcome::Success,
        error_kind: None,
        status: Some(200),
        error: None,
        request: None,
        response_headers: Vec::new(),
        response_body: Some("ok".into()),
    }
}

/// A schema of version 1 (before the history) is brought to the current
/// version at start: every row kept, each event's keys read from its JSON,
/// and the history written and read on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_keeps_every_row_and_gets_the_history() {
    let cluster = shared_cluster().await;
    let schema = new_schema();
    let opts = options(&cluster, &schema, "upgrade");
    let s = connect(&opts).await;
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), hook("o", A), log("o")]).await;
    let [done, dead_one, waiting] = [back[0].id, back[1].id, back[2].id];
    apply(&s, vec![delivered(done), dead(dead_one, "HTTP 400")]).await;
    let before = record(&s, e.id).await;
    s.close().await;
    // Back to version 1.
    let c = db(&cluster, &schema).await;
    c.batch_execute(
        "DROP TABLE attempts; DROP TABLE audit; DROP TABLE replay_jobs;
         DROP INDEX actions_by_replay_job;
         ALTER TABLE actions DROP COLUMN replays, DROP COLUMN replay_job;
         ALTER TABLE events DROP COLUMN event_type, DROP COLUMN entity_type,
                            DROP COLUMN entity_id;
         UPDATE schema_version SET version = 1;",
    )
    .await
    .unwrap();

    let s = connect(&opts).await;
    let version: i32 = c
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let after = record(&s, e.id).await;
    assert_eq!(after, before, "every row as it was");
    for a in &after.actions {
        assert_eq!(
            (a.event_type.as_str(), a.entity_type.as_str()),
            ("INSERT", "Order")
        );
    }
    let by_entity = ActionFilter {
        entity_id: Some(e.entity_id.to_string()),
        ..ActionFilter::default()
    };
    assert_eq!(s.count_actions(&by_entity).await.unwrap(), 3);
    // The released claim and the replayed dead letter are claimable; their
    // attempts are kept.
    assert_eq!(s.replay_actions(&[dead_one], None).await.unwrap(), 1);
    assert_eq!(claim_ids(&s, &endpoint(A), soon()).await, [dead_one]);
    assert_eq!(claim_ids(&s, "log", soon()).await, [waiting]);
    apply(
        &s,
        vec![
            Update::Attempt {
                id: dead_one,
                attempt: Box::new(success()),
            },
            delivered(dead_one),
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    let replayed = action(&rec, dead_one);
    assert_eq!(
        (replayed.status, replayed.replays),
        (ActionStatus::Delivered, 1)
    );
    assert_eq!(replayed.attempt_history.as_ref().map(Vec::len), Some(1));
    s.close().await;
}

/// An attempt is written even when its outcome is fenced off (another
/// instance holds the action now): the attempt was made; the outcome
/// changes nothing and is counted as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_is_recorded_though_its_outcome_is_stale() {
    let cluster = shared_cluster().await;
    let schema = new_schema();
    let s = connect(&options(&cluster, &schema, "late")).await;
    let e = event();
    let back = insert(&s, &e, vec![hook("o", A), hook("o", A)]).await;
    let [taken, kept] = [back[0].id, back[1].id];
    let c = db(&cluster, &schema).await;
    c.execute(
        "UPDATE actions SET holder = 'someone-else' WHERE id = $1",
        &[&taken],
    )
    .await
    .unwrap();
    let made = success();
    apply(
        &s,
        vec![
            Update::Attempt {
                id: taken,
                attempt: Box::new(made.clone()),
            },
            delivered(taken),
            Update::Attempt {
                id: kept,
                attempt: Box::new(made.clone()),
            },
            delivered(kept),
        ],
    )
    .await;
    let rec = record(&s, e.id).await;
    let late = action(&rec, taken);
    assert_eq!(
        late.status,
        ActionStatus::Pending,
        "the late outcome is ignored"
    );
    assert_eq!(
        late.attempt_history.as_ref().map(|h| h[0].attempt.clone()),
        Some(made)
    );
    assert_eq!(action(&rec, kept).status, ActionStatus::Delivered);
    assert_eq!(s.fleet().expect("a fleet store").stale_outcomes, 1);
    s.close().await;
}

/// Replays and purges are operator commands: any instance makes them, on
/// actions another instance stored, and a replayed action is claimed by
/// whichever instance reads its endpoint's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_instance_replays_and_purges_and_any_claims_a_replay() {
    let cluster = shared_cluster().await;
    let schema = new_schema();
    let a = connect(&options(&cluster, &schema, "a")).await;
    let b = connect(&options(&cluster, &schema, "b")).await;
    let e = event();
    let back = insert(&a, &e, vec![hook("o", A), hook("o", A)]).await;
    let [replayed, purged] = [back[0].id, back[1].id];
    apply(
        &a,
        vec![dead(replayed, "HTTP 400"), dead(purged, "HTTP 400")],
    )
    .await;
    assert_eq!(b.replay_actions(&[replayed], None).await.unwrap(), 1);
    assert_eq!(b.purge_actions(&[purged]).await.unwrap(), 1);
    assert!(due_endpoints(&b, soon()).await.contains(&endpoint(A)));
    let claimed = claim_all(&b, &endpoint(A), soon()).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].replays), (replayed, 1));
    apply(
        &b,
        vec![
            Update::Attempt {
                id: replayed,
                attempt: Box::new(success()),
            },
            delivered(replayed),
        ],
    )
    .await;
    let rec = record(&a, e.id).await;
    assert_eq!(rec.actions.len(), 1);
    assert_eq!(rec.actions[0].status, ActionStatus::Delivered);
    assert_eq!(
        rec.actions[0].attempt_history.as_ref().map(Vec::len),
        Some(1)
    );
    a.close().await;
    b.close().await;
}

/// A job whose instance lost its lease (its row gone: dead, or paused past
/// it) is taken up by one live instance; the late instance's next record
/// changes nothing and tells it to stop, and it takes nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_an_instance_that_lost_its_lease_is_taken_up_by_one_other() {
    let cluster = shared_cluster().await;
    let schema = new_schema();
    let a = connect(&options(&cluster, &schema, "a")).await;
    let b = connect(&options(&cluster, &schema, "b")).await;
    let c = connect(&options(&cluster, &schema, "c")).await;
    let job = a
        .create_replay_job(&ActionFilter::default(), "token:ab", 2_000, true)
        .await
        .unwrap();
    assert_eq!(
        a.update_replay_job(job.id, 500, Some(1_501), ReplayState::Running, None)
            .await
            .unwrap(),
        Some(ReplayState::Running)
    );
    // More of a's jobs, for the two instances to race for.
    let mut others = Vec::new();
    for _ in 0..20 {
        let j = a
            .create_replay_job(&ActionFilter::default(), "token:ab", 1, true)
            .await
            .unwrap();
        others.push(j.id);
    }
    assert!(
        b.adopt_replay_jobs().await.unwrap().is_empty(),
        "a is alive"
    );
    // a's lease is gone, as after its expiry and another's takeover.
    db(&cluster, &schema)
        .await
        .execute("DELETE FROM instances WHERE instance = 'a'", &[])
        .await
        .unwrap();
    let (by_b, by_c) = tokio::join!(b.adopt_replay_jobs(), c.adopt_replay_jobs());
    let (mut by_b, mut by_c) = (by_b.unwrap(), by_c.unwrap());
    let mut ids: Vec<i64> = by_b.iter().chain(&by_c).map(|j| j.id).collect();
    ids.sort_unstable();
    let mut all = others.clone();
    all.push(job.id);
    all.sort_unstable();
    assert_eq!(ids, all, "each job taken up by one instance");
    by_b.retain(|j| j.id == job.id);
    by_c.retain(|j| j.id == job.id);
    let (taker, taken) = if by_b.is_empty() {
        (&c, &by_c[0])
    } else {
        (&b, &by_b[0])
    };
    assert_eq!((taken.replayed, taken.cursor), (500, Some(1_501)));
    assert_eq!(
        a.update_replay_job(job.id, 1_000, Some(1_001), ReplayState::Running, None)
            .await
            .unwrap(),
        None,
        "the late instance learns it is not its job any more"
    );
    assert!(a.adopt_replay_jobs().await.unwrap().is_empty());
    let now = taker.replay_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        (now.replayed, now.cursor),
        (500, Some(1_501)),
        "unchanged by a"
    );
    assert_eq!(
        taker
            .update_replay_job(job.id, 2_000, None, ReplayState::Finished, None)
            .await
            .unwrap(),
        Some(ReplayState::Finished)
    );
    for s in [a, b, c] {
        s.close().await;
    }
}
