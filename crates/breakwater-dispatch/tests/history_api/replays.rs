//! Replays of one action and by filter, dry runs, replay jobs and their cancel.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    all_actions, config, dry_run, event, get, poll, post, send, start, Hook, ADMIN, LIMIT, VIEWER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_delivered_and_the_dry_run_counts_what_is_replayed() {
    let hook = Hook::start(400, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], "")).await;
    let ids = post(&base, (0..25).map(|_| event("Order", "INSERT")).collect()).await;
    let filter = json!({"endpoint": hook.endpoint});
    poll("25 dead letters", LIMIT, || async {
        (dry_run(&base, "replay", filter.clone()).await == 25).then_some(())
    })
    .await;
    assert_eq!(hook.ok.load(Ordering::SeqCst), 0);
    hook.set(200);

    // One, by id: delivered, with an attempt triggered by the replay.
    let one = all_actions(&base, &format!("event_id={}", ids[0])).await[0]["id"]
        .as_i64()
        .unwrap();
    let (s, action) = send(
        &base,
        "POST",
        &format!("/actions/{one}/replay"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, 200, "{action}");
    assert_eq!(action["replays"], 1);
    assert!(
        matches!(action["status"].as_str(), Some("pending" | "delivered")),
        "{action}"
    );
    let action = poll("the replayed action delivered", LIMIT, || async {
        let (_, a) = get(&base, &format!("/actions/{one}"), VIEWER).await;
        (a["status"] == "delivered").then_some(a)
    })
    .await;
    let attempts = action["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{action}");
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert_eq!(attempts[0]["error_kind"], "http_4xx");
    assert_eq!(
        (&attempts[1]["trigger"], &attempts[1]["number"]),
        (&json!("replay"), &json!(1))
    );
    let (s, _) = send(&base, "POST", "/actions/999999/replay", ADMIN, None).await;
    assert_eq!(s, 404);

    // The rest, by filter: the dry run's count is what the job replays.
    let count = dry_run(&base, "replay", filter.clone()).await;
    assert_eq!(count, 24);
    let (s, job) = send(
        &base,
        "POST",
        "/actions/replay",
        ADMIN,
        Some(json!({"filter": filter})),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["total"], count);
    let job_id = job["id"].as_i64().unwrap();
    let job = poll("the replay job to finish", LIMIT, || async {
        let (_, j) = get(&base, &format!("/replays/{job_id}"), VIEWER).await;
        (j["state"] == "finished").then_some(j)
    })
    .await;
    assert_eq!(job["replayed"], count, "{job}");
    poll("every event delivered", LIMIT, || async {
        (hook.ok.load(Ordering::SeqCst) >= 25).then_some(())
    })
    .await;
    let job = poll(
        "the job's progress to show them delivered",
        LIMIT,
        || async {
            let (_, j) = get(&base, &format!("/replays/{job_id}"), VIEWER).await;
            (j["progress"]["delivered"] == count).then_some(j)
        },
    )
    .await;
    assert_eq!(job["state"], "finished");
    assert_eq!(dry_run(&base, "replay", filter.clone()).await, 0);
    let (_, list) = get(&base, "/replays", VIEWER).await;
    assert_eq!(list["replays"][0]["id"], job_id);
    // Query parameters do as well as a body.
    let (s, body) = send(
        &base,
        "POST",
        &format!(
            "/actions/replay?status=delivered&event_id={}&dry_run=true",
            ids[1]
        ),
        ADMIN,
        None,
    )
    .await;
    assert_eq!((s, &body["count"]), (200, &json!(1)), "{body}");
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_action_is_not_replayed_and_bad_bulk_filters_are_refused() {
    let hook = Hook::start(200, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], "")).await;
    let ep = hook.endpoint.replace(':', "%3A").replace('/', "%2F");
    let (s, _) = send(&base, "POST", &format!("/breakers/{ep}/open"), ADMIN, None).await;
    assert_eq!(s, 200);
    let id = post(&base, vec![event("Order", "INSERT")]).await[0];
    let action = poll("the action parked", LIMIT, || async {
        let a = all_actions(&base, &format!("event_id={id}")).await;
        (a.first()?["status"] == "parked").then(|| a[0].clone())
    })
    .await;
    let aid = action["id"].as_i64().unwrap();
    let (s, body) = send(
        &base,
        "POST",
        &format!("/actions/{aid}/replay"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, 409, "{body}");
    for (filter, name) in [
        (json!({"status": "pending"}), "filter.status"),
        (json!({"bogus": 1}), "filter.bogus"),
        (json!({"since": "later"}), "filter.since"),
    ] {
        let (s, body) = send(
            &base,
            "POST",
            "/actions/replay",
            ADMIN,
            Some(json!({"filter": filter})),
        )
        .await;
        assert_eq!(s, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(name),
            "{body}"
        );
    }
    let (s, body) = send(
        &base,
        "POST",
        "/actions/purge",
        ADMIN,
        Some(json!({"filter": {"status": "delivered"}})),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("filter.status"),
        "{body}"
    );
    let (s, body) = send(
        &base,
        "POST",
        "/actions/replay?dry_run=true",
        ADMIN,
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    let (s, _) = send(&base, "POST", &format!("/breakers/{ep}/close"), ADMIN, None).await;
    assert_eq!(s, 200);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_job_cancelled_half_way_stops() {
    const TOTAL: u64 = 10_000;
    let hook = Hook::start(200, 0).await;
    let dir = tempfile::tempdir().unwrap();
    // One action waits (its endpoint forced open); every later one is over
    // the endpoint's backlog quota and stored dead-lettered at once.
    let extra = "[delivery]\nmax_backlog_per_endpoint = 1\nmax_body_bytes = 4194304\n";
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], extra)).await;
    let ep = hook.endpoint.replace(':', "%3A").replace('/', "%2F");
    let (s, _) = send(&base, "POST", &format!("/breakers/{ep}/open"), ADMIN, None).await;
    assert_eq!(s, 200);
    post(&base, vec![event("Order", "INSERT")]).await;
    poll("the first action waiting", LIMIT, || async {
        (all_actions(&base, "status=parked").await.len() == 1).then_some(())
    })
    .await;
    for _ in 0..TOTAL / 500 {
        post(&base, (0..500).map(|_| event("Order", "INSERT")).collect()).await;
    }
    let filter = json!({"endpoint": hook.endpoint});
    assert_eq!(dry_run(&base, "replay", filter.clone()).await, TOTAL);
    let (s, job) = send(
        &base,
        "POST",
        "/actions/replay",
        ADMIN,
        Some(json!({"filter": filter})),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let job_id = job["id"].as_i64().unwrap();
    let (s, cancelled) = send(&base, "DELETE", &format!("/replays/{job_id}"), ADMIN, None).await;
    assert_eq!(s, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    // Cancelling again: it is no longer running.
    let (s, _) = send(&base, "DELETE", &format!("/replays/{job_id}"), ADMIN, None).await;
    assert_eq!(s, 409);
    // The job's task stops at its next chunk: the dead letters left stop
    // changing.
    let deadline = Instant::now() + LIMIT;
    let (mut left, mut steady_since) = (u64::MAX, Instant::now());
    loop {
        let now = dry_run(&base, "replay", filter.clone()).await;
        if now != left {
            (left, steady_since) = (now, Instant::now());
        } else if steady_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the job to stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left > 0, "the job replayed everything before the cancel");
    let (_, job) = get(&base, &format!("/replays/{job_id}"), VIEWER).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let touched: u64 = job["progress"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(touched + left, TOTAL, "{job}");
    assert!(job["replayed"].as_u64().unwrap() < TOTAL, "{job}");
    svc.shutdown(Duration::from_secs(5)).await;
}
