//! End-to-end tests of the service in-process, over real HTTP on 127.0.0.1.

mod support;

use std::time::Duration;

use breakwater::CircuitState;
use breakwater_dispatch::store::ActionStatus;
use support::{config_toml, event, post_events, start, wait_until, Receiver};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(60);

fn admin_token() -> &'static str {
    std::env::set_var("BW_TEST_ADMIN_TOKEN", "test-admin-token");
    "test-admin-token"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoint_behaviours_and_a_dead_endpoint_recovers_without_slowing_the_healthy_one() {
    let healthy = Receiver::start(200).await;
    let flaky = Receiver::start(0).await;
    let dead = Receiver::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(
        &dir.path().join("t.db"),
        &[&healthy.url, &flaky.url, &dead.url],
        "",
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let batch: Vec<_> = (0..10).map(|_| event(None)).collect();
        let r = post_events(&base, &serde_json::Value::Array(batch)).await;
        assert_eq!(r.status(), 202, "chunk {chunk}");
        let body: serde_json::Value = r.json().await.unwrap();
        for id in body["ids"].as_array().unwrap() {
            ids.push(id.as_str().unwrap().parse::<Uuid>().unwrap());
        }
    }
    assert_eq!(ids.len(), 100);
    let engine = svc.state.engine.clone();
    let dead_breaker = engine.breakers().get(&dead.endpoint).unwrap();
    // The healthy endpoint delivers everything while the dead one is still dead.
    wait_until("the healthy endpoint to get every event", LIMIT, || {
        healthy.delivered().len() == 100
    })
    .await;
    assert!(dead.delivered().is_empty());
    wait_until(
        "the dead endpoint's breaker to open and defer",
        LIMIT,
        || {
            let m = dead_breaker.metrics();
            let v = engine.breaker_views();
            let d = v.iter().find(|v| v.endpoint == dead.endpoint).unwrap();
            m.transitions_between(CircuitState::Closed, CircuitState::Open) >= 1 && d.deferred > 0
        },
    )
    .await;
    let healthy_breaker = engine.breakers().get(&healthy.endpoint).unwrap();
    assert_eq!(healthy_breaker.state(), CircuitState::Closed);
    dead.set(200);
    wait_until("every event on every endpoint", LIMIT, || {
        dead.delivered().len() == 100 && flaky.delivered().len() == 100
    })
    .await;
    for id in &ids {
        assert!(healthy.delivered().contains_key(id));
        assert!(flaky.delivered().contains_key(id));
        assert!(dead.delivered().contains_key(id));
    }
    assert!(
        flaky.hits().iter().any(|h| h.answered == 500),
        "the flaky receiver failed some requests"
    );
    wait_until("the queue to empty", LIMIT, || engine.held() == 0).await;
    let rec = engine.store().event(ids[0]).await.unwrap().unwrap();
    assert!(rec
        .actions
        .iter()
        .all(|a| a.status == ActionStatus::Delivered));
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_4xx_and_stores_nothing() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(
        &dir.path().join("t.db"),
        &[&receiver.url],
        "[delivery]\nmax_body_bytes = 2048\n",
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let client = reqwest::Client::new();
    // Every endpoint's series exist at zero before any event.
    let metrics = metrics_text(&base).await;
    let zero = format!(
        "breakwater_dispatch_actions_dead_lettered_total{{endpoint=\"{}\"}} 0",
        receiver.endpoint
    );
    assert!(metrics.contains(&zero), "{zero} missing from\n{metrics}");
    let good = event(None).to_string();
    let huge = format!(
        "[{}]",
        std::iter::repeat_n(good.as_str(), 40)
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"event_type\":".into(), 400, "malformed JSON"),
        (huge, 413, "limit"),
        (good.replace("\"Order\"", "12"), 400, "invalid type"),
        (
            good.replace("\"data\"", "\"bogus\":1,\"data\""),
            400,
            "bogus",
        ),
        (good.replace("INSERT", "UPSERT"), 400, "UPSERT"),
        (format!("[{good}, 7]"), 400, "events[1]"),
    ];
    for (body, status, says) in cases {
        let r = client
            .post(format!("{base}/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body:.80}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert!(
            err["message"].as_str().unwrap().contains(says),
            "{body:.80}: {err}"
        );
    }
    let counts = svc.state.engine.store().counts().await.unwrap();
    assert!(counts.is_empty(), "nothing stored: {counts:?}");
    assert!(receiver.hits().is_empty());
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_bearer_token() {
    let token = admin_token();
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&dir.path().join("t.db"), &[&receiver.url], "");
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let client = reqwest::Client::new();
    let path = |op: &str| {
        let enc: String = receiver.endpoint.replace(':', "%3A").replace('/', "%2F");
        format!("{base}/breakers/{enc}/{op}")
    };
    let r = client.post(path("open")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(path("open"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(path("open"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(path("open"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let breakers: serde_json::Value = client
        .get(format!("{base}/breakers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(breakers[0]["state"], "open");
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 503, "the only endpoint is open: critical");
    let r = client
        .post(path("reset"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let r = client
        .post(path("explode"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_is_accepted_and_delivered_once() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&dir.path().join("t.db"), &[&receiver.url], "");
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = Uuid::new_v4();
    for _ in 0..3 {
        let r = post_events(&base, &event(Some(id))).await;
        assert_eq!(r.status(), 202);
    }
    // A later marker event: lanes are FIFO, so once it is delivered any
    // second delivery of the duplicate would have happened.
    let marker = Uuid::new_v4();
    assert_eq!(post_events(&base, &event(Some(marker))).await.status(), 202);
    wait_until("the marker", LIMIT, || {
        receiver.delivered().contains_key(&marker)
    })
    .await;
    assert_eq!(receiver.delivered()[&id], 1);
    let rec = svc.state.engine.store().event(id).await.unwrap().unwrap();
    assert_eq!(rec.actions.len(), 1);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_and_keeps_its_actions_for_replay() {
    let token = admin_token();
    let receiver = Receiver::start(410).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&dir.path().join("t.db"), &[&receiver.url], "");
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        assert_eq!(post_events(&base, &event(Some(*id))).await.status(), 202);
    }
    let engine = svc.state.engine.clone();
    wait_until(
        "the endpoint to be disabled and its actions held",
        LIMIT,
        || engine.breaker_views()[0].disabled && engine.held() == 0,
    )
    .await;
    let rec = engine.store().event(ids[4]).await.unwrap().unwrap();
    assert_eq!(rec.actions[0].status, ActionStatus::Held);
    // The attempts that were answered 410 show on their actions; actions
    // that came after the endpoint was disabled were held untried.
    let mut tried = 0;
    for id in &ids {
        let rec = engine.store().event(*id).await.unwrap().unwrap();
        let a = &rec.actions[0];
        assert_eq!(a.status, ActionStatus::Held);
        if a.attempts > 0 {
            tried += 1;
            assert_eq!((a.attempts, a.last_status), (1, Some(410)), "{a:?}");
            let error = a.last_error.as_deref().unwrap_or_default();
            assert!(error.contains("410"), "{error}");
        } else {
            assert_eq!((a.last_status, a.last_error.as_deref()), (None, None));
        }
    }
    assert!(tried >= 1);
    let metrics = metrics_text(&base).await;
    assert!(
        metrics.contains("breakwater_dispatch_endpoint_disabled{"),
        "{metrics}"
    );
    receiver.set(200);
    let enc = receiver.endpoint.replace(':', "%3A").replace('/', "%2F");
    let r = reqwest::Client::new()
        .post(format!("{base}/breakers/{enc}/reset"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until("the held actions to be delivered", LIMIT, || {
        ids.iter().all(|id| receiver.delivered().contains_key(id))
    })
    .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_and_exhausted_retries_are_dead_lettered() {
    let bad = Receiver::start(400).await;
    let down = Receiver::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&dir.path().join("t.db"), &[&bad.url, &down.url], "")
        .replace("max_attempts = 30", "max_attempts = 2")
        .replace("minimum_calls = 5", "minimum_calls = 10");
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = Uuid::new_v4();
    assert_eq!(post_events(&base, &event(Some(id))).await.status(), 202);
    let engine = svc.state.engine.clone();
    wait_until("both actions dead-lettered", LIMIT, || engine.held() == 0).await;
    let letters = engine.store().dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 2);
    let by_endpoint = |e: &str| letters.iter().find(|l| l.endpoint == e).unwrap().clone();
    assert_eq!(by_endpoint(&bad.endpoint).attempts, 1, "permanent: at once");
    assert_eq!(
        by_endpoint(&down.endpoint).attempts,
        2,
        "transient: max_attempts"
    );
    let r = reqwest::get(format!("{base}/events/{id}")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["actions"][0]["status"], "dead_lettered");
    let metrics = metrics_text(&base).await;
    for name in [
        "breakwater_dispatch_actions_dead_lettered_total",
        "breakwater_dispatch_queue_depth",
        "breakwater_dispatch_oldest_pending_age_seconds",
        "breakwater_dispatch_delivery_latency_seconds",
        "breakwater_circuit_state{",
        "breakwater_circuit_requests_total{",
    ] {
        assert!(metrics.contains(name), "{name}");
    }
    let missing = reqwest::get(format!("{base}/events/{}", Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_the_standard_webhooks_way() {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let toml = format!(
        "{}signing_secret = \"{secret}\"\n",
        config_toml(&dir.path().join("t.db"), &[&receiver.url], "")
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = Uuid::new_v4();
    assert_eq!(post_events(&base, &event(Some(id))).await.status(), 202);
    wait_until("the signed delivery", LIMIT, || {
        receiver.delivered().contains_key(&id)
    })
    .await;
    let hit = receiver.hits().pop().unwrap();
    let header = |n: &str| hit.headers[n].to_str().unwrap().to_string();
    let (msg_id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    // Verified here independently of the library: HMAC-SHA256 over
    // "id.timestamp.body" under the base64-decoded secret after "whsec_".
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{msg_id}.{ts}.").as_bytes());
    mac.update(&hit.body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert!(
        sig.split(' ').any(|s| s == format!("v1,{want}")),
        "{sig} vs v1,{want}"
    );
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts.parse::<i64>().unwrap()).abs() < 300);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_state_survives_a_restart() {
    let token = admin_token();
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&dir.path().join("t.db"), &[&receiver.url], "");
    let svc = start(&dir, &toml).await;
    let enc = receiver.endpoint.replace(':', "%3A").replace('/', "%2F");
    let r = reqwest::Client::new()
        .post(format!("http://{}/breakers/{enc}/open", svc.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The snapshot is written by a task on the transition; wait for it.
    let store = svc.state.engine.store().clone();
    let mut saved = false;
    for _ in 0..500 {
        if !store.snapshots().await.unwrap().is_empty() {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saved, "a snapshot was saved on the transition");
    svc.shutdown(Duration::from_secs(5)).await;
    let svc = start(&dir, &toml).await;
    let b = svc.state.engine.breakers().get(&receiver.endpoint).unwrap();
    assert_eq!(b.state(), CircuitState::Open, "restored from the snapshot");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The `/metrics` text of the service at `base`.
async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Orders go to `urls` (a fan-out: one action per receiver for every
/// event).
fn fan_out(dir: &tempfile::TempDir, urls: &[&str], delivery: &str) -> String {
    config_toml(
        &dir.path().join("t.db"),
        urls,
        &format!("[delivery]\n{delivery}"),
    )
}

/// The event ids in the order `receiver` first answered them 2xx.
fn first_deliveries(receiver: &Receiver) -> Vec<Uuid> {
    let mut seen = std::collections::HashSet::new();
    receiver
        .hits()
        .into_iter()
        .filter(|h| (200..300).contains(&h.answered))
        .filter_map(|h| h.event_id)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Regression: an endpoint's actions were all held in memory, so a full
/// window answered 503 to every event. Now the window spills to the
/// endpoint's backlog on disk and nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_spills_to_the_backlog_and_nothing_is_refused_or_lost() {
    let receiver = Receiver::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = fan_out(
        &dir,
        &[&receiver.url],
        "max_pending = 10\nmax_pending_per_endpoint = 10\n",
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let mut accepted = Vec::new();
    for _ in 0..60 {
        let id = Uuid::new_v4();
        let r = post_events(&base, &event(Some(id))).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        accepted.push(id);
    }
    let engine = svc.state.engine.clone();
    assert!(engine.held() <= 10, "the window holds {}", engine.held());
    let view = engine
        .breaker_views()
        .into_iter()
        .find(|v| v.endpoint == receiver.endpoint)
        .unwrap();
    assert_eq!(view.backlog, 60, "{view:?}");
    assert!(view.pending <= 10, "{view:?}");
    receiver.set(200);
    wait_until("every accepted event", LIMIT, || {
        let got = receiver.delivered();
        accepted.iter().all(|id| got.contains_key(id))
    })
    .await;
    assert!(receiver.delivered().values().all(|n| *n == 1), "none twice");
    wait_until("the window to empty", LIMIT, || engine.held() == 0).await;
    wait_until("the backlog to empty", LIMIT, || {
        engine.breaker_views().iter().all(|v| v.backlog == 0)
    })
    .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: unknown routes, wrong methods and undecodable paths
/// answered empty or plain-text bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_body_is_json() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(
        &dir,
        &config_toml(&dir.path().join("t.db"), &[&receiver.url], ""),
    )
    .await;
    let client = reqwest::Client::new();
    for (method, path, status, kind) in [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/events", 405, "method_not_allowed"),
        ("PUT", "/events", 405, "method_not_allowed"),
        ("GET", "/events/%FF%FE", 400, "bad_request"),
        ("POST", "/breakers/%FF/reset", 400, "bad_request"),
    ] {
        let r = client
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", svc.addr),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], kind, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: a dead endpoint's parked actions filled its share of the
/// queue, and then every event that also fanned out to it was refused,
/// the healthy endpoint's included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_never_refuses_intake_and_its_backlog_comes_through_in_order() {
    let healthy = Receiver::start(200).await;
    let dead = Receiver::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let window = 5;
    let toml = fan_out(
        &dir,
        &[&healthy.url, &dead.url],
        &format!("max_pending = 100\nmax_pending_per_endpoint = {window}\n"),
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let mut ids = Vec::new();
    for i in 0..200 {
        let id = Uuid::now_v7();
        let r = if i % 2 == 0 {
            post_events(&base, &event(Some(id))).await
        } else {
            // Half in arrays of one, so both shapes are taken.
            post_events(&base, &serde_json::json!([event(Some(id))])).await
        };
        assert_eq!(r.status(), 202, "event {i}: {}", r.text().await.unwrap());
        ids.push(id);
    }
    wait_until("the healthy endpoint to get every event", LIMIT, || {
        healthy.delivered().len() == ids.len()
    })
    .await;
    assert!(dead.delivered().is_empty());
    let engine = svc.state.engine.clone();
    let dead_view = || {
        engine
            .breaker_views()
            .into_iter()
            .find(|v| v.endpoint == dead.endpoint)
            .unwrap()
    };
    assert!(dead_view().pending <= window, "{:?}", dead_view());
    assert_eq!(dead_view().backlog, 200, "{:?}", dead_view());
    dead.set(200);
    wait_until("every event at the recovered endpoint", LIMIT, || {
        dead.delivered().len() == ids.len()
    })
    .await;
    assert!(dead.delivered().values().all(|n| *n == 1), "none twice");
    // Oldest first: read back in the order accepted, so no action overtakes
    // the backlog by more than what the window held.
    let order = first_deliveries(&dead);
    for (at, id) in order.iter().enumerate() {
        let accepted = ids.iter().position(|i| i == id).unwrap();
        assert!(
            accepted <= at + 2 * window,
            "event {accepted} delivered {at}th: {order:?}"
        );
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

/// `max_backlog_per_endpoint`: past it, the endpoint's new actions are
/// dead-lettered with the reason and their events accepted; the other
/// endpoint is not affected, and a replay delivers them once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_backlog_quota_an_endpoint_dead_letters_its_new_actions_and_events_are_accepted() {
    let healthy = Receiver::start(200).await;
    let dead = Receiver::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = fan_out(
        &dir,
        &[&healthy.url, &dead.url],
        "max_pending_per_endpoint = 4\nmax_backlog_per_endpoint = 10\n",
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let mut ids = Vec::new();
    for _ in 0..30 {
        let id = Uuid::now_v7();
        assert_eq!(post_events(&base, &event(Some(id))).await.status(), 202);
        ids.push(id);
    }
    wait_until("the healthy endpoint to get every event", LIMIT, || {
        healthy.delivered().len() == ids.len()
    })
    .await;
    let store = svc.state.engine.store().clone();
    let last = store.event(ids[29]).await.unwrap().unwrap();
    let over = last
        .actions
        .iter()
        .find(|a| a.endpoint == dead.endpoint)
        .unwrap();
    assert_eq!(over.status, ActionStatus::DeadLettered, "{last:?}");
    let reason = over.last_error.as_deref().unwrap();
    assert!(reason.contains("max_backlog_per_endpoint = 10"), "{reason}");
    let dead_letters = store.dead_letters(100).await.unwrap();
    assert_eq!(dead_letters.len(), 20, "{dead_letters:?}");
    let metrics = metrics_text(&base).await;
    let series = format!(
        "breakwater_dispatch_actions_over_quota_total{{endpoint=\"{}\"}} 20",
        dead.endpoint
    );
    assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    dead.set(200);
    wait_until("the first ten at the recovered endpoint", LIMIT, || {
        dead.delivered().len() == 10
    })
    .await;
    assert_eq!(store.replay_dead_letters(None).await.unwrap(), 20);
    svc.state.engine.wake();
    wait_until("the replayed twenty", LIMIT, || {
        dead.delivered().len() == ids.len()
    })
    .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: an array asking for more actions than `max_pending` was
/// refused (first with a 503 no retry could pass, then with a 413). A
/// window bounds memory, not requests: the array is taken whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_larger_than_the_window_is_taken_whole() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = fan_out(&dir, &[&receiver.url], "max_pending = 5\n");
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    let events: Vec<serde_json::Value> = ids.iter().map(|id| event(Some(*id))).collect();
    let r = post_events(&base, &serde_json::Value::Array(events)).await;
    assert_eq!(r.status(), 202);
    wait_until("every event", LIMIT, || {
        receiver.delivered().len() == ids.len()
    })
    .await;
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_can_require_its_own_token() {
    std::env::set_var("BW_TEST_INTAKE_TOKEN", "intake-secret");
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "intake_token_env = \"BW_TEST_INTAKE_TOKEN\"\n{}",
        config_toml(&dir.path().join("t.db"), &[&receiver.url], "")
    );
    let svc = start(&dir, &toml).await;
    let url = format!("http://{}/events", svc.addr);
    let client = reqwest::Client::new();
    let r = client.post(&url).json(&event(None)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth("nope")
        .json(&event(None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth("intake-secret")
        .json(&event(None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(svc.state.engine.store().counts().await.unwrap().len(), 1);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: a configured intake token whose variable was unset let
/// every request in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_token_missing_from_the_environment_lets_nothing_in() {
    std::env::remove_var("BW_TEST_INTAKE_TOKEN_UNSET");
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "intake_token_env = \"BW_TEST_INTAKE_TOKEN_UNSET\"\n{}",
        config_toml(&dir.path().join("t.db"), &[&receiver.url], "")
    );
    let svc = start(&dir, &toml).await;
    let url = format!("http://{}/events", svc.addr);
    let client = reqwest::Client::new();
    for auth in [None, Some(""), Some("anything")] {
        let mut request = client.post(&url).json(&event(None));
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{auth:?}");
    }
    assert!(svc.state.engine.store().counts().await.unwrap().is_empty());
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_config_routes_new_events_to_its_observers_only() {
    let before = Receiver::start(200).await;
    let after = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let svc = start(&dir, &config_toml(&db, &[&before.url], "")).await;
    let base = format!("http://{}", svc.addr);
    let first = Uuid::new_v4();
    assert_eq!(post_events(&base, &event(Some(first))).await.status(), 202);
    wait_until("the first event", LIMIT, || {
        before.delivered().contains_key(&first)
    })
    .await;

    let reloaded =
        breakwater_dispatch::config::Config::parse(&config_toml(&db, &[&after.url], "")).unwrap();
    svc.state.reload(reloaded).unwrap();
    let second = Uuid::new_v4();
    assert_eq!(post_events(&base, &event(Some(second))).await.status(), 202);
    wait_until("the second event", LIMIT, || {
        after.delivered().contains_key(&second)
    })
    .await;
    assert!(!before.delivered().contains_key(&second));
    assert!(!after.delivered().contains_key(&first));
    let rec = svc
        .state
        .engine
        .store()
        .event(second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.actions.len(), 1);
    assert_eq!(rec.actions[0].endpoint, after.endpoint);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_events_past_their_keeping_time_are_removed() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let toml = config_toml(
        &db,
        &[&receiver.url],
        "[delivery]\nkeep_delivered_hours = 1\n",
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    for id in [old, new] {
        assert_eq!(post_events(&base, &event(Some(id))).await.status(), 202);
    }
    wait_until("both events", LIMIT, || {
        let got = receiver.delivered();
        got.contains_key(&old) && got.contains_key(&new)
    })
    .await;
    // The outcomes are written in batches after the deliveries.
    let store = svc.state.engine.store().clone();
    tokio::time::timeout(LIMIT, async {
        loop {
            let mut done = true;
            for id in [old, new] {
                let rec = store.event(id).await.unwrap().unwrap();
                done &= rec.actions[0].status == ActionStatus::Delivered;
            }
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both recorded as delivered");
    // One of them was accepted two hours ago.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let two_hours_ago = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    c.execute(
        "UPDATE events SET accepted_at = ?1 WHERE id = ?2",
        rusqlite::params![two_hours_ago, old.to_string()],
    )
    .unwrap();
    assert_eq!(svc.state.engine.prune().await, 1);
    let client = reqwest::Client::new();
    let get = |id: Uuid| client.get(format!("{base}/events/{id}")).send();
    assert_eq!(get(old).await.unwrap().status(), 404);
    assert_eq!(get(new).await.unwrap().status(), 200);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("breakwater_dispatch_events_pruned_total 1"),
        "{metrics}"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_body_limit() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let with_limit = |bytes: usize| {
        config_toml(
            &db,
            &[&receiver.url],
            &format!("[delivery]\nmax_body_bytes = {bytes}\n"),
        )
    };
    let svc = start(&dir, &with_limit(2048)).await;
    let base = format!("http://{}", svc.addr);
    let good = event(None).to_string();
    let body = format!(
        "[{}]",
        std::iter::repeat_n(good.as_str(), 20)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(body.len() > 2048 && body.len() < 100_000);
    let post = |body: String| {
        let base = base.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/events"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = post(body.clone()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("2048"), "{text}");

    let reload = |bytes| {
        svc.state
            .reload(breakwater_dispatch::config::Config::parse(&with_limit(bytes)).unwrap())
            .unwrap()
    };
    reload(100_000);
    assert_eq!(post(body.clone()).await.0, 202, "the larger limit applies");
    reload(100);
    assert!(good.len() > 100);
    let (status, text) = post(good).await;
    assert_eq!(status, 413, "the smaller limit applies: {text}");
    assert!(text.contains("100-byte"), "{text}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: with the store's file deleted under it, the service went on
/// answering 202 into a file no restart would find, and `/health` said
/// nothing. Now intake answers 503 and `/health` names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_store_file_is_noticed_and_intake_refuses() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let svc = start(&dir, &config_toml(&db, &[&receiver.url], "")).await;
    let base = format!("http://{}", svc.addr);
    assert_eq!(post_events(&base, &event(None)).await.status(), 202);
    std::fs::remove_file(&db).unwrap();
    let r = post_events(&base, &event(None)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("deleted"),
        "{body}"
    );
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert!(
        health["store"].as_str().unwrap().contains("deleted"),
        "{health}"
    );
    let metrics = metrics_text(&base).await;
    assert!(
        metrics.contains("breakwater_dispatch_store_up 0"),
        "{metrics}"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: `Expect: 100-continue` with a Content-Length far over the
/// limit was answered `100 Continue`, inviting the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_gets_its_413_before_sending_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(
        &dir,
        &config_toml(
            &dir.path().join("t.db"),
            &[&receiver.url],
            "[delivery]\nmax_body_bytes = 10000\n",
        ),
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(svc.addr).await.unwrap();
    conn.write_all(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = vec![0; 512];
    let n = tokio::time::timeout(LIMIT, conn.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: an array of 3 000 copies of one event id was refused with a
/// 413 for "3000 actions", though 2 999 of them are duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_one_event_in_an_array_are_taken_as_one() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(
        &dir,
        &config_toml(
            &dir.path().join("t.db"),
            &[&receiver.url],
            "[delivery]\nmax_pending = 1000\n",
        ),
    )
    .await;
    let base = format!("http://{}", svc.addr);
    let id = Uuid::new_v4();
    let copies = serde_json::Value::Array((0..3000).map(|_| event(Some(id))).collect());
    let r = post_events(&base, &copies).await;
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["duplicates"].as_array().unwrap().len(), 2999);
    wait_until("the one delivery", LIMIT, || {
        receiver.delivered().get(&id) == Some(&1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.delivered().get(&id), Some(&1), "delivered once");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Regression: a connection that sent half a request head (or half a body)
/// stayed open for good; about 1 100 of them took every descriptor and the
/// service refused every new client. Heads and bodies have deadlines now,
/// and connections a cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_lock_everyone_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(
        &dir,
        &config_toml(
            &dir.path().join("t.db"),
            &[&receiver.url],
            "[http]\nmax_connections = 100\nheader_read_timeout_ms = 500\nbody_read_timeout_ms = 500\n",
        ),
    )
    .await;
    let base = format!("http://{}", svc.addr);
    // Three hundred connections: half heads, idle ones, half bodies.
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut c = tokio::net::TcpStream::connect(svc.addr).await.unwrap();
        match i % 3 {
            0 => c
                .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Ty")
                .await
                .unwrap(),
            1 => {}
            _ => c
                .write_all(
                    b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                      Content-Length: 1000\r\n\r\n{\"event_type\":",
                )
                .await
                .unwrap(),
        }
        slow.push(c);
    }
    // A well-behaved client still gets through, once the slow ones time out.
    let id = Uuid::new_v4();
    let r = tokio::time::timeout(LIMIT, post_events(&base, &event(Some(id))))
        .await
        .expect("served while slow clients hold connections");
    assert_eq!(r.status(), 202);
    // Every slow connection was closed: a half head or an idle one without
    // an answer, a half body with a 408.
    let mut timed_out_bodies = 0;
    for (i, mut c) in slow.into_iter().enumerate() {
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, c.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("connection {i} still open"))
            .ok();
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408") {
            timed_out_bodies += 1;
        }
    }
    assert_eq!(timed_out_bodies, 100, "each half body answered 408");
    svc.shutdown(Duration::from_secs(5)).await;
}
