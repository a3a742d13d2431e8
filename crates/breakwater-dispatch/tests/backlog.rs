//! The real binary with an endpoint down for a long time: its backlog lives
//! on disk, intake never refuses, memory stays flat, a restart loads only a
//! window, and everything comes through once the endpoint is back.
//!
//! The event counts are small enough for CI; the full runs are
//! `BACKLOG_EVENTS=200000 cargo test --release -p breakwater-dispatch --test backlog -- --nocapture`
//! and, for start-up over a million waiting actions,
//! `cargo test --release -p breakwater-dispatch --test backlog -- --ignored --nocapture`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use breakwater::traits::{ActionConfig, EntityEvent, EventKind, WebhookAction};
use breakwater_dispatch::store::{NewAction, NewEvent, SqliteStore, Store};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(600);
/// The most resident memory the service may use, in bytes.
const RSS_BOUND: u64 = 150 << 20;
/// The same for events of about a MiB: each is still parsed whole at intake
/// and for each attempt (a tree of 15 to 18 times its text, for that moment
/// only), and the allocator keeps some of what those trees used. Measured
/// here (debug build): 143 to 159 MiB; it was about 900 MB when held
/// events were trees.
const LARGE_RSS_BOUND: u64 = 200 << 20;

fn events_wanted(default: usize) -> usize {
    std::env::var("BACKLOG_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A receiver that answers a settable status and keeps, in order, the
/// event id of every 2xx answer (read from the body's start, where the
/// event's `id` is), and a count of all requests.
#[derive(Clone)]
struct Counter {
    url: String,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicU64>,
    delivered: Arc<Mutex<Vec<Uuid>>>,
}

impl Counter {
    async fn start(status: u16) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(AtomicU64::new(0));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let (s, r, d) = (status.clone(), requests.clone(), delivered.clone());
        let app = Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let (s, r, d) = (s.clone(), r.clone(), d.clone());
                async move {
                    r.fetch_add(1, Ordering::Relaxed);
                    let code = s.load(Ordering::SeqCst);
                    if (200..300).contains(&code) {
                        let id = body
                            .get(7..43)
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .and_then(|s| s.parse::<Uuid>().ok())
                            .expect("the body starts with the event's id");
                        d.lock().unwrap().push(id);
                    }
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/hook"),
            status,
            requests,
            delivered,
        }
    }

    fn count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
}

/// Orders fan out to every receiver; retries and breakers as an operator
/// would set them for a partner that may be down for a while. A window of
/// a tenth of the events (the default, 10 000 actions, from 100 000 events
/// up), so that most of them wait on disk.
fn config(db: &Path, urls: &[&str], events: usize) -> String {
    let mut s = format!(
        r#"listen = "127.0.0.1:0"
store = "{}"
[delivery]
max_pending_per_endpoint = {}
[circuit_breaker]
sample_size = 20
minimum_calls = 10
failure_threshold = 0.5
open_timeout_ms = 500
max_open_timeout_ms = 2000
half_open_max_requests = 1
[retry]
max_attempts = 1000
backoff_ms = 50
max_backoff_ms = 1000
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
"#,
        db.display(),
        (events / 10).clamp(1, 10_000)
    );
    for u in urls {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{u}\"\n"
        ));
    }
    s
}

struct Service {
    child: Child,
    base: String,
    /// From spawning the process to its first line (listening).
    started_in: Duration,
}

impl Service {
    fn start(config: &Path) -> Self {
        let t = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .args(["serve", "--config"])
            .arg(config)
            .env("BREAKWATER_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("breakwater listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self {
            child,
            base,
            started_in: t.elapsed(),
        }
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc/PID/status (Linux)");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    async fn breaker(&self, url: &str) -> serde_json::Value {
        let all: serde_json::Value = reqwest::get(format!("{}/breakers", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let endpoint = url.trim_end_matches("/hook");
        all.as_array()
            .unwrap()
            .iter()
            .find(|b| b["endpoint"] == endpoint)
            .cloned()
            .unwrap_or_else(|| panic!("no breaker for {endpoint} in {all}"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event_json(id: Uuid) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "event_type": "INSERT",
        "entity_type": "Order",
        "entity_id": Uuid::new_v4(),
        "data": { "total": 42, "currency": "EUR", "lines": [1, 2, 3] },
    })
}

/// Posts `ids` in arrays of 100 from four clients at once; every request
/// must be answered 202. Samples the service's memory meanwhile; returns
/// the largest sample.
async fn post_all(svc: &Service, ids: &[Uuid]) -> u64 {
    let client = reqwest::Client::new();
    let mut max_rss = svc.rss();
    for group in ids.chunks(400) {
        let posts = group.chunks(100).map(|chunk| {
            let body: Vec<_> = chunk.iter().map(|id| event_json(*id)).collect();
            let client = client.clone();
            let url = format!("{}/events", svc.base);
            async move {
                let r = client.post(url).json(&body).send().await.unwrap();
                let status = r.status();
                assert_eq!(status, 202, "{}", r.text().await.unwrap());
            }
        });
        futures_util::future::join_all(posts).await;
        max_rss = max_rss.max(svc.rss());
    }
    max_rss
}

/// Waits until `f` holds, sampling the service's memory; returns the
/// largest sample.
async fn wait_sampling(svc: &Service, what: &str, mut f: impl FnMut() -> bool) -> u64 {
    let deadline = Instant::now() + LIMIT;
    let mut max_rss = 0;
    loop {
        max_rss = max_rss.max(svc.rss());
        if f() {
            return max_rss;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `url`'s endpoint reports `n` waiting actions (the service
/// counts them in the store every few seconds, and adds what it stores and
/// finishes meanwhile); returns its row of `/breakers`.
async fn wait_for_backlog(svc: &Service, url: &str, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = svc.breaker(url).await;
        if view["backlog"] == n {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "backlog never reached {n}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No event is delivered twice, every one is, and none overtakes the
/// order of acceptance by more than what a window holds.
fn assert_all_once_in_order(delivered: &[Uuid], ids: &[Uuid], slack: usize) {
    assert_eq!(delivered.len(), ids.len(), "delivered once each");
    let position: std::collections::HashMap<Uuid, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut seen = std::collections::HashSet::new();
    for (at, id) in delivered.iter().enumerate() {
        assert!(seen.insert(*id), "{id} delivered twice");
        let accepted = position[id];
        assert!(
            accepted <= at + slack,
            "event {accepted} was delivered {at}th: it overtook older ones"
        );
    }
}

/// Two observers on one event, one receiver dead: every event is accepted
/// while it is down, the healthy one gets all of its actions meanwhile, the
/// service's memory stays under [`RSS_BOUND`]; then the dead one recovers
/// and gets every action, oldest first, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_with_fan_out_never_refuses_and_memory_stays_flat() {
    let n = events_wanted(10_000);
    let healthy = Counter::start(200).await;
    let dead = Counter::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config(&dir.path().join("b.db"), &[&healthy.url, &dead.url], n),
    )
    .unwrap();
    let svc = Service::start(&path);
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let t = Instant::now();
    let mut max_rss = post_all(&svc, &ids).await;
    let accepted_in = t.elapsed();
    max_rss = max_rss.max(
        wait_sampling(&svc, "the healthy endpoint to get every event", || {
            healthy.count() >= n
        })
        .await,
    );
    assert_eq!(dead.count(), 0);
    let view = wait_for_backlog(&svc, &dead.url, n).await;
    assert_eq!(view["state"], "open", "{view}");
    eprintln!(
        "{n} events accepted in {accepted_in:?} ({:.0}/s) with one of two endpoints dead; \
         dead endpoint's window {} actions, backlog {}; largest RSS {} MiB",
        n as f64 / accepted_in.as_secs_f64(),
        view["pending"],
        view["backlog"],
        max_rss >> 20
    );
    let t = Instant::now();
    dead.status.store(200, Ordering::SeqCst);
    max_rss = max_rss.max(
        wait_sampling(&svc, "the recovered endpoint to get every event", || {
            dead.count() >= n
        })
        .await,
    );
    let drained_in = t.elapsed();
    eprintln!(
        "the recovered endpoint got its {n} actions in {drained_in:?} ({:.0}/s); \
         {} requests in all, largest RSS {} MiB",
        n as f64 / drained_in.as_secs_f64(),
        dead.requests.load(Ordering::Relaxed),
        max_rss >> 20
    );
    // A moment for any duplicate to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window = view["pending"].as_u64().unwrap() as usize;
    assert_all_once_in_order(&dead.delivered.lock().unwrap(), &ids, 2 * window + 64);
    assert_eq!(healthy.count(), n, "the healthy endpoint got each once");
    assert!(
        max_rss < RSS_BOUND,
        "resident memory reached {} MiB",
        max_rss >> 20
    );
}

/// `kill -9` with a large backlog on disk, then a restart: it starts
/// quickly, loads only a window into memory, and delivers everything once
/// the endpoint is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_large_backlog_then_a_restart_loads_only_a_window() {
    let n = events_wanted(10_000);
    let receiver = Counter::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&dir.path().join("k.db"), &[&receiver.url], n)).unwrap();
    let svc = Service::start(&path);
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    post_all(&svc, &ids).await;
    drop(svc); // SIGKILL
    let svc = Service::start(&path);
    let view = svc.breaker(&receiver.url).await;
    assert_eq!(
        view["backlog"], n,
        "every action waits, counted at start: {view}"
    );
    assert!(
        view["pending"].as_u64().unwrap() <= (n / 10) as u64,
        "{view}"
    );
    let rss = svc.rss();
    eprintln!(
        "restarted over {n} waiting actions in {:?}; window {}, RSS {} MiB",
        svc.started_in,
        view["pending"],
        rss >> 20
    );
    receiver.status.store(200, Ordering::SeqCst);
    let max_rss = wait_sampling(&svc, "every action after the restart", || {
        receiver.count() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = receiver.delivered.lock().unwrap().clone();
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n, "every accepted event was delivered");
    assert!(
        max_rss.max(rss) < RSS_BOUND,
        "resident memory reached {} MiB",
        max_rss >> 20
    );
}

/// Start-up over a million waiting actions, written straight into a store
/// (an outage of a few hours at a hundred events a second): reports how
/// long the service takes to listen and the memory it uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture (release build)"]
async fn start_up_over_a_million_waiting_actions() {
    let n = events_wanted(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let receiver = Counter::start(503).await;
    {
        let store = SqliteStore::open(&db).unwrap();
        let action = NewAction::new(
            "orders",
            ActionConfig::Webhook(WebhookAction {
                url: receiver.url.clone(),
                method: "POST".into(),
                headers: Default::default(),
                body_template: None,
                signing_secret: None,
            }),
        )
        .backlogged();
        let t = Instant::now();
        for _ in 0..n.div_ceil(1000) {
            let batch = (0..1000)
                .map(|_| {
                    NewEvent::new(
                        &EntityEvent::new(
                            EventKind::Insert,
                            "Order",
                            Uuid::new_v4(),
                            serde_json::json!({"total": 42}),
                        ),
                        vec![action.clone()],
                    )
                })
                .collect();
            store.insert(batch).await.unwrap();
        }
        store.close().await;
        eprintln!("{n} waiting actions written in {:?}", t.elapsed());
    }
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&db, &[&receiver.url], n)).unwrap();
    let svc = Service::start(&path);
    let view = svc.breaker(&receiver.url).await;
    let rss = svc.rss();
    eprintln!(
        "listening {:?} after start over {} waiting actions; RSS {} MiB, window {}",
        svc.started_in,
        view["backlog"],
        rss >> 20,
        view["pending"]
    );
    assert_eq!(view["backlog"], n, "{view}");
    // A few seconds on: the window is read in, the breaker opens.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = svc.breaker(&receiver.url).await;
    let later = svc.rss();
    eprintln!(
        "5 s later: window {}, state {}, RSS {} MiB",
        view["pending"],
        view["state"],
        later >> 20
    );
    assert!(
        rss.max(later) < RSS_BOUND,
        "resident memory {} MiB",
        later >> 20
    );
}

/// Regression: events of about 1 MiB owed to a dead endpoint were held in
/// memory as parsed trees, 15 to 18 MB each: sixty of them took the service
/// from 18 MB to about 900 MB resident with default settings. Windows are
/// bounded in bytes now, the rest waits on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_for_a_dead_endpoint_stay_within_the_memory_bound() {
    let receiver = Counter::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    // Default delivery settings: no window set here.
    let toml = config(&dir.path().join("big.db"), &[&receiver.url], 100_000)
        .replace("[delivery]\nmax_pending_per_endpoint = 10000\n", "");
    std::fs::write(&path, toml).unwrap();
    let svc = Service::start(&path);
    // About 1 MiB of small numbers: the costliest tree for its size.
    let numbers: Vec<u32> = (0..200_000).map(|i| i % 10).collect();
    let client = reqwest::Client::new();
    let mut max_rss = svc.rss();
    for _ in 0..60 {
        let body = serde_json::json!({
            "event_type": "INSERT",
            "entity_type": "Order",
            "entity_id": Uuid::new_v4(),
            "data": { "n": numbers },
        });
        let r = client
            .post(format!("{}/events", svc.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        max_rss = max_rss.max(svc.rss());
    }
    let view = wait_for_backlog(&svc, &receiver.url, 60).await;
    // A few openings of the breaker with its window parked.
    max_rss = max_rss.max(
        wait_sampling(&svc, "some attempts", || {
            receiver.requests.load(Ordering::Relaxed) >= 5
        })
        .await,
    );
    eprintln!(
        "60 events of about 1 MiB for a dead endpoint: window {} actions, largest RSS {} MiB",
        view["pending"],
        max_rss >> 20
    );
    assert!(
        max_rss < LARGE_RSS_BOUND,
        "resident memory reached {} MiB",
        max_rss >> 20
    );
}

/// Sixty events of about a MiB each (small numbers: as a parsed tree, each
/// would take fifteen times that), owed to a dead endpoint with windows
/// large enough to hold them all: they are held in memory, and the service
/// grows by about their size, not by their trees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_cost_about_their_size() {
    const EVENTS: usize = 60;
    let dead = Counter::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let mut toml = config(&dir.path().join("m.db"), &[&dead.url], 1000);
    toml = toml.replace(
        "[delivery]\n",
        "[delivery]\nmax_pending_bytes = 4294967296\nmax_pending_bytes_per_endpoint = 4294967296\n\
         max_body_bytes = 4194304\n",
    );
    std::fs::write(&path, toml).unwrap();
    let svc = Service::start(&path);
    let numbers: Vec<u32> = (0..200_000).map(|i| i % 100).collect();
    let client = reqwest::Client::new();
    // Settled after one small event, so that the client, pools and breaker
    // are counted in the base.
    let mut body = event_json(Uuid::now_v7());
    let r = client
        .post(format!("{}/events", svc.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let base = svc.rss();
    body["data"] = serde_json::json!({ "n": numbers });
    let mut sent = 0;
    let mut max_rss = base;
    for _ in 0..EVENTS {
        body["id"] = serde_json::json!(Uuid::now_v7());
        let text = serde_json::to_vec(&body).unwrap();
        sent += text.len();
        let r = client
            .post(format!("{}/events", svc.base))
            .header("content-type", "application/json")
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        max_rss = max_rss.max(svc.rss());
    }
    let view = svc.breaker(&dead.url).await;
    assert_eq!(view["pending"], EVENTS + 1, "all held in memory: {view}");
    let held = svc.rss().saturating_sub(base);
    let grown = max_rss.saturating_sub(base);
    eprintln!(
        "{EVENTS} events, {} MiB of JSON, held in memory: resident memory grew {} MiB \
         (at most {} MiB while posting)",
        sent >> 20,
        held >> 20,
        grown >> 20
    );
    // Their text, plus room for one request's tree at a time and the
    // allocator's slack: well under what their trees would take.
    let bound = 3 * sent as u64 + (64 << 20);
    assert!(
        grown < bound,
        "resident memory grew {} MiB for {} MiB of events",
        grown >> 20,
        sent >> 20
    );
}
