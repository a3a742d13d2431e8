//! The attempt history and replay API, end to end: the service in-process
//! over a SQLite store, receivers on 127.0.0.1, real HTTP. Every wait polls
//! with a bounded deadline.

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use breakwater_dispatch::server::Running;
use serde_json::{json, Value};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(60);
const ADMIN: &str = "history-admin-token";
const VIEWER: &str = "history-viewer-token";

/// The tokens' variables, set for every test of this binary alike.
fn tokens() {
    std::env::set_var("BW_HISTORY_ADMIN", ADMIN);
    std::env::set_var("BW_HISTORY_VIEWER", VIEWER);
}

/// A receiver on its own port (its own endpoint): answers `status` (after
/// `fail_first` answers of 503), with `Set-Cookie: s=abc`, and a body that
/// echoes the request's `Authorization`, then `pad` bytes of `x`.
#[derive(Clone)]
struct Hook {
    url: String,
    endpoint: String,
    status: Arc<AtomicU16>,
    fail_first: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
}

impl Hook {
    async fn start(status: u16, pad: usize) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let fail_first = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, f, k) = (status.clone(), fail_first.clone(), ok.clone());
        let app = Router::new().fallback(move |headers: HeaderMap| {
            let (s, f, k) = (s.clone(), f.clone(), k.clone());
            async move {
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let code = if failing {
                    503
                } else {
                    s.load(Ordering::SeqCst)
                };
                if (200..300).contains(&code) {
                    k.fetch_add(1, Ordering::SeqCst);
                }
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = format!("you sent {auth}.{}", "x".repeat(pad));
                (
                    StatusCode::from_u16(code).unwrap(),
                    [("set-cookie", "s=abc; HttpOnly")],
                    body,
                )
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/hook"),
            endpoint: format!("http://{addr}"),
            status,
            fail_first,
            ok,
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// A configuration: observer `orders` (Order INSERT) calls `orders`, with
/// `Authorization: Bearer xyz`; observer `invoices` (Invoice UPDATE) calls
/// `invoices`.
fn config(dir: &tempfile::TempDir, orders: &[&Hook], invoices: &[&Hook], extra: &str) -> String {
    let mut s = format!(
        r#"listen = "127.0.0.1:0"
store = "{}"
admin_token_env = "BW_HISTORY_ADMIN"
viewer_token_env = "BW_HISTORY_VIEWER"
[circuit_breaker]
sample_size = 10
minimum_calls = 5
failure_threshold = 0.9
open_timeout_ms = 300
[retry]
max_attempts = 5
backoff_ms = 20
max_backoff_ms = 100
{extra}
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
"#,
        dir.path().join("t.db").display()
    );
    for h in orders {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer xyz\" }}\n",
            h.url
        ));
    }
    s.push_str(
        "[[observers]]\nname = \"invoices\"\nentity_type = \"Invoice\"\nevent_type = \"UPDATE\"\n",
    );
    for h in invoices {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            h.url
        ));
    }
    s
}

async fn start(dir: &tempfile::TempDir, toml: &str) -> (Running, String) {
    tokens();
    let svc = support::start(dir, toml).await;
    let base = format!("http://{}", svc.addr);
    (svc, base)
}

fn event(entity_type: &str, kind: &str) -> Value {
    json!({
        "id": Uuid::new_v4(),
        "event_type": kind,
        "entity_type": entity_type,
        "entity_id": Uuid::new_v4(),
        "data": {"total": 42},
    })
}

/// Posts `events` in one request; returns their ids.
async fn post(base: &str, events: Vec<Value>) -> Vec<Uuid> {
    let ids = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let r = support::post_events(base, &Value::Array(events)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    ids
}

/// A request with `token` (none when empty).
fn with(token: &str, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if token.is_empty() {
        r
    } else {
        r.bearer_auth(token)
    }
}

async fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    let r = with(token, reqwest::Client::new().get(format!("{base}{path}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn send(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let r = match method {
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("{other}"),
    };
    let r = match body {
        Some(b) => r.json(&b),
        None => r,
    };
    let r = with(token, r).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `f` every 20 ms until it gives a value; panics with `what` after
/// `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every action matching `query`, all pages of `limit` read.
async fn all_actions(base: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let sep = if query.is_empty() { "" } else { "&" };
        let (s, page) = get(
            base,
            &format!("/actions?limit=500{sep}{query}{before}"),
            VIEWER,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        out.extend(page["actions"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => return out,
        }
    }
}

/// The count a dry run of a replay (or purge, with `what`) answers.
async fn dry_run(base: &str, what: &str, filter: Value) -> u64 {
    let (s, body) = send(
        base,
        "POST",
        &format!("/actions/{what}"),
        ADMIN,
        Some(json!({"filter": filter, "dry_run": true})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["count"].as_u64().unwrap()
}

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
async fn without_history_no_attempt_is_recorded() {
    let hook = Hook::start(200, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[history]\nenabled = false\n";
    let (svc, base) = start(&dir, &config(&dir, &[&hook], &[], extra)).await;
    let id = post(&base, vec![event("Order", "INSERT")]).await[0];
    let event = poll("the delivery", LIMIT, || async {
        let (_, e) = get(&base, &format!("/events/{id}"), ADMIN).await;
        (e["actions"][0]["status"] == "delivered").then_some(e)
    })
    .await;
    assert_eq!(event["actions"][0]["attempt_history"], json!([]), "{event}");
    svc.shutdown(Duration::from_secs(5)).await;
}

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
