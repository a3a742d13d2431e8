//! Who may read and write, and the audit log of every write.

use std::time::Duration;

use serde_json::json;

use super::{
    all_actions, config, dry_run, event, get, poll, post, send, start, Hook, ADMIN, LIMIT, VIEWER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_token_writes_the_admin_token_and_every_write_is_audited() {
    let hook = Hook::start(400, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], "")).await;
    post(&base, (0..3).map(|_| event("Order", "INSERT")).collect()).await;
    let filter = json!({"endpoint": hook.endpoint});
    poll("3 dead letters", LIMIT, || async {
        (dry_run(&base, "purge", filter.clone()).await == 3).then_some(())
    })
    .await;
    for path in ["/actions", "/actions/1", "/replays", "/replays/1", "/audit"] {
        let (s, _) = get(&base, path, "").await;
        assert_eq!(s, 401, "{path} without a token");
        let (s, _) = get(&base, path, "not-a-token").await;
        assert_eq!(s, 401, "{path} with a wrong token");
        let (s, _) = get(&base, path, VIEWER).await;
        assert!(s == 200 || s == 404, "{path} with the viewer token: {s}");
    }
    let ep = hook.endpoint.replace(':', "%3A").replace('/', "%2F");
    let writes = [
        ("POST", "/actions/1/replay".to_string()),
        ("POST", "/actions/replay".to_string()),
        ("POST", "/actions/purge".to_string()),
        ("DELETE", "/replays/1".to_string()),
        ("POST", format!("/breakers/{ep}/reset")),
    ];
    for (method, path) in &writes {
        let (s, _) = send(&base, method, path, "", None).await;
        assert_eq!(s, 401, "{method} {path} without a token");
        let (s, body) = send(&base, method, path, VIEWER, None).await;
        assert_eq!(s, 403, "{method} {path} with the viewer token: {body}");
    }
    // Writes with the admin token, each audited.
    let (s, _) = send(&base, "POST", &format!("/breakers/{ep}/reset"), ADMIN, None).await;
    assert_eq!(s, 200);
    let one = all_actions(&base, "status=dead_lettered").await[0]["id"]
        .as_i64()
        .unwrap();
    let (s, _) = send(
        &base,
        "POST",
        &format!("/actions/{one}/replay"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, body) = send(
        &base,
        "POST",
        "/actions/purge",
        ADMIN,
        Some(json!({"filter": filter})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let purged = body["purged"].as_u64().unwrap();
    assert!((2..=3).contains(&purged), "{body}");
    let (s, audit) = get(&base, "/audit", VIEWER).await;
    assert_eq!(s, 200);
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["purge", "replay", "reset"], "{audit}");
    let fingerprint = breakwater_dispatch::auth::actor(ADMIN);
    assert!(
        entries.iter().all(|e| e["actor"] == fingerprint.as_str()),
        "{audit}"
    );
    assert!(
        !audit.to_string().contains(ADMIN),
        "the token itself is never shown"
    );
    assert_eq!(entries[0]["count"], purged);
    assert!(entries[0]["target"]
        .as_str()
        .unwrap()
        .contains(&hook.endpoint));
    assert_eq!(entries[1]["target"], one.to_string());
    assert_eq!(entries[1]["count"], 1);
    assert_eq!(entries[2]["target"], hook.endpoint.as_str());
    assert!(entries[2]["at"].is_string());
    // Pages of the audit log.
    let (_, page) = get(&base, "/audit?limit=2", VIEWER).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = get(&base, &format!("/audit?limit=2&before={next}"), VIEWER).await;
    assert_eq!(rest["entries"][0]["action"], "reset", "{rest}");
    svc.shutdown(Duration::from_secs(5)).await;
}
