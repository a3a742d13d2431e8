//! `GET /actions`: filters, and pages that stay stable while actions arrive.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::{all_actions, config, event, get, poll, post, start, Hook, LIMIT, VIEWER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_and_pages_stay_stable_while_new_actions_arrive() {
    let good = Hook::start(200, 0).await;
    let bad = Hook::start(400, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (svc, base) = start(&dir, &config(&dir, &[&good, &bad], &[&good], "")).await;
    let orders: Vec<Value> = (0..30).map(|_| event("Order", "INSERT")).collect();
    let order_ids = post(&base, orders.clone()).await;
    post(&base, (0..10).map(|_| event("Invoice", "UPDATE")).collect()).await;
    poll("every action settled", LIMIT, || async {
        let (_, p) = get(&base, "/actions?status=pending&limit=1", VIEWER).await;
        let (_, q) = get(&base, "/actions?status=parked&limit=1", VIEWER).await;
        (p["actions"] == json!([]) && q["actions"] == json!([])).then_some(())
    })
    .await;
    let count = |q: &'static str| {
        let base = base.clone();
        async move { all_actions(&base, q).await.len() }
    };
    assert_eq!(count("").await, 70);
    assert_eq!(count("status=dead_lettered").await, 30);
    assert_eq!(count("status=delivered").await, 40);
    let good_q = format!("endpoint={}", good.endpoint);
    assert_eq!(all_actions(&base, &good_q).await.len(), 40);
    assert_eq!(count("observer=invoices").await, 10);
    assert_eq!(count("event_type=UPDATE").await, 10);
    assert_eq!(count("event_type=insert").await, 60);
    assert_eq!(count("entity_type=Invoice").await, 10);
    let one = &orders[3];
    let by_entity = all_actions(
        &base,
        &format!("entity_id={}", one["entity_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(by_entity.len(), 2);
    let by_event = all_actions(&base, &format!("event_id={}", order_ids[3])).await;
    assert_eq!(by_event.len(), 2);
    assert!(by_event
        .iter()
        .all(|a| a["event_id"] == order_ids[3].to_string()));
    // A time range splits the actions where it says.
    let mut times: Vec<i64> = all_actions(&base, "")
        .await
        .iter()
        .map(|a| {
            chrono::DateTime::parse_from_rfc3339(a["accepted_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    times.sort_unstable();
    let cut = times[times.len() / 2];
    let since = all_actions(&base, &format!("since={cut}")).await.len();
    let until = all_actions(&base, &format!("until={cut}")).await.len();
    assert_eq!(since + until, 70);
    assert_eq!(since, times.iter().filter(|t| **t >= cut).count());
    let rfc = chrono::DateTime::from_timestamp_millis(cut)
        .unwrap()
        .to_rfc3339();
    let since_rfc = all_actions(&base, &format!("since={}", urlencode(&rfc)))
        .await
        .len();
    assert_eq!(since_rfc, since);

    // Pages of 7 over the good endpoint while more events come in: every
    // action listed once, newest first, none of the new ones.
    let mut seen: Vec<i64> = Vec::new();
    let mut before = String::new();
    loop {
        let (s, page) = get(&base, &format!("/actions?{good_q}&limit=7{before}"), VIEWER).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_i64().unwrap()),
        );
        post(
            &base,
            vec![event("Order", "INSERT"), event("Invoice", "UPDATE")],
        )
        .await;
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 40, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let first: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(first.len(), 40);

    // Bad parameters: a 400 naming each.
    for (q, name) in [
        ("bogus=1", "bogus"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("since=yesterday", "since"),
        ("until=never", "until"),
        ("status=lost", "status"),
        ("event_id=nope", "event_id"),
        ("before=x", "before"),
        ("status=delivered&status=pending", "status"),
    ] {
        let (s, body) = get(&base, &format!("/actions?{q}"), VIEWER).await;
        assert_eq!(s, 400, "{q}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}:")),
            "{q}: {body}"
        );
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
