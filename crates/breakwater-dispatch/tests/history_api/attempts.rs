//! Attempt records as `GET /events/{id}` and `GET /actions/{id}` show them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use super::{config, event, get, poll, post, start, Hook, ADMIN, LIMIT, VIEWER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_show_their_trigger_outcome_and_a_redacted_request_and_answer() {
    let hook = Hook::start(200, 0).await;
    hook.fail_first.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], "")).await;
    let id = post(&base, vec![event("Order", "INSERT")]).await[0];
    let event = poll("the delivery after a retry", LIMIT, || async {
        let (_, e) = get(&base, &format!("/events/{id}"), VIEWER).await;
        (e["actions"][0]["status"] == "delivered").then_some(e)
    })
    .await;
    let attempts = event["actions"][0]["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{event}");
    let (first, second) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (
            &first["number"],
            &first["trigger"],
            &first["outcome"],
            &first["status"],
            &first["error_kind"]
        ),
        (
            &json!(1),
            &json!("scheduled"),
            &json!("transient"),
            &json!(503),
            &json!("http_5xx")
        ),
        "{first}"
    );
    assert_eq!(
        (
            &second["number"],
            &second["trigger"],
            &second["outcome"],
            &second["status"]
        ),
        (&json!(2), &json!("retry"), &json!("success"), &json!(200)),
        "{second}"
    );
    assert_eq!(second["error_kind"], Value::Null);
    assert_eq!(second["breaker_state"], "closed");
    assert!(second["duration_ms"].is_u64() && second["started_at"].is_string());
    let request = &second["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], hook.url.as_str());
    // Request and answer headers: the credential and the cookie redacted.
    let headers = format!("{} {}", request["headers"], second["response_headers"]);
    assert!(
        !headers.contains("xyz") && !headers.contains("abc"),
        "{headers}"
    );
    assert!(headers.contains("[redacted]"), "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("set-cookie"),
        "{headers}"
    );
    // The body is the receiver's, but the request's secret it echoes is
    // redacted in it too.
    let body = second["response_body"].as_str().unwrap();
    assert!(body.starts_with("you sent [redacted]."), "{body}");
    for a in attempts {
        let shown = format!(
            "{} {} {}",
            a["request"], a["response_headers"], a["response_body"]
        );
        assert!(!shown.contains("xyz"), "{shown}");
    }
    // The action itself, by id, with the same attempts.
    let action_id = event["actions"][0]["id"].as_i64().unwrap();
    let (s, action) = get(&base, &format!("/actions/{action_id}"), VIEWER).await;
    assert_eq!(s, 200);
    assert_eq!(
        action["attempt_history"],
        event["actions"][0]["attempt_history"]
    );
    // Without a token: the states, not the attempts.
    let (s, open) = get(&base, &format!("/events/{id}"), "").await;
    assert_eq!(s, 200);
    assert_eq!(open["actions"][0]["status"], "delivered");
    assert!(
        open["actions"][0].get("attempt_history").is_none(),
        "{open}"
    );
    let (s, _) = get(&base, &format!("/events/{id}"), "wrong-token").await;
    assert_eq!(s, 200);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_answer_is_kept_as_its_first_response_body_bytes() {
    let hook = Hook::start(200, 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[history]\nresponse_body_bytes = 1000\n";
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], extra)).await;
    let id = post(&base, vec![event("Order", "INSERT")]).await[0];
    let event = poll("the delivery", LIMIT, || async {
        let (_, e) = get(&base, &format!("/events/{id}"), ADMIN).await;
        (e["actions"][0]["status"] == "delivered").then_some(e)
    })
    .await;
    let attempt = &event["actions"][0]["attempt_history"][0];
    let body = attempt["response_body"].as_str().unwrap();
    assert_eq!(body.len(), 1000, "{attempt}");
    assert!(body.starts_with("you sent [redacted].xxx"), "{body:.40}");
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_no_attempt_is_recorded_until_a_reload_turns_it_on() {
    let hook = Hook::start(200, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[history]\nenabled = false\n";
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], extra)).await;
    let id = post(&base, vec![event("Order", "INSERT")]).await[0];
    let shown = poll("the delivery", LIMIT, || async {
        let (_, e) = get(&base, &format!("/events/{id}"), ADMIN).await;
        (e["actions"][0]["status"] == "delivered").then_some(e)
    })
    .await;
    assert_eq!(shown["actions"][0]["attempt_history"], json!([]), "{shown}");
    // A reload (as SIGHUP does) with the history on: the next attempts are
    // recorded, with the body limit of the new file.
    let on = config(&dir, &[&hook], &[], "[history]\nresponse_body_bytes = 4\n");
    svc.state
        .reload(breakwater_dispatch::config::Config::parse(&on).unwrap())
        .unwrap();
    let id = post(&base, vec![event("Order", "INSERT")]).await[0];
    let shown = poll("the delivery", LIMIT, || async {
        let (_, e) = get(&base, &format!("/events/{id}"), ADMIN).await;
        (e["actions"][0]["status"] == "delivered").then_some(e)
    })
    .await;
    let attempts = shown["actions"][0]["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{shown}");
    assert_eq!(attempts[0]["response_body"], "you ", "{shown}");
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_a_half_open_breaker_lets_through_is_recorded_as_its_probe() {
    let hook = Hook::start(503, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], "")).await;
    post(&base, (0..10).map(|_| event("Order", "INSERT")).collect()).await;
    let store = svc.state.engine.store().clone();
    let probe = poll("a probe of the open breaker", LIMIT, || async {
        let attempts = store
            .endpoint_attempts(&hook.endpoint, None, 500)
            .await
            .unwrap();
        attempts
            .into_iter()
            .find(|a| a.attempt.trigger == breakwater_dispatch::store::Trigger::Probe)
    })
    .await;
    assert_eq!(probe.attempt.breaker_state, "half_open");
    assert_eq!(probe.attempt.status, Some(503));
    svc.shutdown(Duration::from_secs(5)).await;
}
