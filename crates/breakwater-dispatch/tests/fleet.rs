//! A fleet of real `breakwater serve` processes sharing one throwaway
//! PostgreSQL cluster: an instance killed or paused mid-run, instances
//! started together, the database restarted under load, operator commands
//! across the fleet, and the database password kept out of every output.
//!
//! Everything runs on loopback. Each test starts its own cluster; the tests
//! take turns (one lock) so that leases measured in seconds are not skewed
//! by the other tests' load. Waits for a state change poll with a deadline;
//! the numbers measured are printed (`-- --nocapture`), never asserted as
//! speeds.
//!
//! These tests need PostgreSQL's server programs; without them they fail
//! with the message that says what to install. They never skip.
//!
//! Four of them were written as failing tests for bugs found here (a woken
//! instance resending its window, a takeover waiting on a paused
//! instance's row locks, an outage read as every instance's death, a
//! check-config message), and pass since those were fixed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use breakwater_dispatch::pg_cluster::PgCluster;
use breakwater_dispatch::store::postgres::schema::SCHEMA_VERSION;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// The variable the instances read the database password from.
const PASSWORD_ENV: &str = "BW_TEST_PG_PASSWORD";
/// The variable holding the admin token, and the token.
const ADMIN_ENV: &str = "BW_TEST_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "fleet-admin-token";
/// A Standard Webhooks secret: with it every request carries `webhook-id`,
/// stable per event and action, which the receiver counts duplicates by.
const SIGNING_SECRET: &str = "whsec_ZmxlZXQtdGVzdHMtc2lnbmluZy1rZXktb2YtMzItYnk=";

/// The tests take turns: each runs several processes and a database on a
/// two-core machine, and leases of a few seconds must not be starved. (An
/// async lock: each test has its runtime, and a panicking test releases
/// it.)
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// Starts a cluster; without PostgreSQL installed this fails with the
/// message naming what to install.
async fn start_cluster() -> PgCluster {
    tokio::task::spawn_blocking(|| PgCluster::start().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap()
}

/// A client of the cluster's database (for checks the API does not show).
async fn db(cluster: &PgCluster) -> tokio_postgres::Client {
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
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Polls `check` every `every` until it holds; panics naming `what` after
/// `limit`. Returns how long it took.
async fn poll<F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// One request the receiver finished: when, and what it answered.
#[derive(Debug, Clone, Copy)]
struct Answer {
    at: Instant,
    status: u16,
}

/// A webhook receiver on 127.0.0.1: answers a settable status after a
/// random delay in a settable range, and keeps every answer by `webhook-id`.
#[derive(Clone)]
struct Hook {
    url: String,
    endpoint: String,
    status: Arc<AtomicU16>,
    delay_min_ms: Arc<AtomicU64>,
    delay_max_ms: Arc<AtomicU64>,
    answers: Arc<Mutex<HashMap<String, Vec<Answer>>>>,
    /// Requests begun (answered or not).
    begun: Arc<AtomicU64>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
}

impl Hook {
    async fn start(status: u16, delay_ms: (u64, u64)) -> Self {
        let hook = Self {
            url: String::new(),
            endpoint: String::new(),
            status: Arc::new(AtomicU16::new(status)),
            delay_min_ms: Arc::new(AtomicU64::new(delay_ms.0)),
            delay_max_ms: Arc::new(AtomicU64::new(delay_ms.1)),
            answers: Arc::new(Mutex::new(HashMap::new())),
            begun: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(AtomicU64::new(0)),
            peak: Arc::new(AtomicU64::new(0)),
        };
        let h = hook.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap| {
                let h = h.clone();
                async move {
                    h.begun.fetch_add(1, Ordering::SeqCst);
                    let now = h.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    h.peak.fetch_max(now, Ordering::SeqCst);
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let (lo, hi) = (
                        h.delay_min_ms.load(Ordering::SeqCst),
                        h.delay_max_ms.load(Ordering::SeqCst),
                    );
                    let delay = if hi > lo {
                        rand::random_range(lo..=hi)
                    } else {
                        lo
                    };
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let status = h.status.load(Ordering::SeqCst);
                    h.in_flight.fetch_sub(1, Ordering::SeqCst);
                    h.answers
                        .lock()
                        .unwrap()
                        .entry(id)
                        .or_default()
                        .push(Answer {
                            at: Instant::now(),
                            status,
                        });
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/hook"),
            endpoint: format!("http://{addr}"),
            ..hook
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn set_delay(&self, min_ms: u64, max_ms: u64) {
        self.delay_min_ms.store(min_ms, Ordering::SeqCst);
        self.delay_max_ms.store(max_ms, Ordering::SeqCst);
    }

    /// Every 2xx answer by event (each event here has one webhook action,
    /// so its `webhook-id` names the event), in the order they were given.
    fn delivered(&self) -> HashMap<Uuid, Vec<Instant>> {
        let mut out: HashMap<Uuid, Vec<Instant>> = HashMap::new();
        for (id, answers) in self.answers.lock().unwrap().iter() {
            let event = event_of(id).unwrap_or_else(|| panic!("a request with webhook-id {id:?}"));
            let ok: Vec<Instant> = answers
                .iter()
                .filter(|a| (200..300).contains(&a.status))
                .map(|a| a.at)
                .collect();
            if !ok.is_empty() {
                out.entry(event).or_default().extend(ok);
            }
        }
        for times in out.values_mut() {
            times.sort();
        }
        out
    }

    /// When the last request was answered.
    fn last_answer(&self) -> Option<Instant> {
        self.answers
            .lock()
            .unwrap()
            .values()
            .flat_map(|v| v.iter().map(|a| a.at))
            .max()
    }

    /// Requests begun and not answered yet.
    fn waiting(&self) -> usize {
        (self.begun.load(Ordering::SeqCst) as usize).saturating_sub(self.answered())
    }

    /// Requests answered, whatever the answer.
    fn answered(&self) -> usize {
        self.answers.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// The event id in a `webhook-id`: `msg_<32 hex digits>_<16 hex digits>`.
fn event_of(webhook_id: &str) -> Option<Uuid> {
    let hex = webhook_id.strip_prefix("msg_")?.get(..32)?;
    Uuid::try_parse(hex).ok()
}

/// An `Order` `INSERT` event with a new id.
fn event() -> (Uuid, serde_json::Value) {
    let id = Uuid::now_v7();
    (
        id,
        serde_json::json!({
            "id": id,
            "event_type": "INSERT",
            "entity_type": "Order",
            "entity_id": Uuid::new_v4(),
            "data": { "total": 42 },
        }),
    )
}

fn batch(n: usize) -> (Vec<Uuid>, serde_json::Value) {
    let (ids, events): (Vec<_>, Vec<_>) = (0..n).map(|_| event()).unzip();
    (ids, serde_json::Value::Array(events))
}

/// A configuration for instance `name` of a fleet on `store` (a URL) with
/// one observer calling `hook`; `extra` adds sections.
fn config(store: &str, name: &str, lease_ms: u64, hook: &Hook, extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
store = "{store}"
store_password_env = "{PASSWORD_ENV}"
store_schema = "breakwater"
admin_token_env = "{ADMIN_ENV}"
[fleet]
instance = "{name}"
lease_ms = {lease_ms}
heartbeat_ms = 500
{extra}
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "webhook"
url = "{url}"
signing_secret = "{SIGNING_SECRET}"
"#,
        url = hook.url
    )
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every line a process printed, stdout and stderr.
type Lines = Arc<Mutex<Vec<String>>>;

/// Reads `from` line by line into `lines` (echoed to stderr, prefixed with
/// `name`, when `echo`); the first line also goes to `first`, if given.
fn read_lines(
    from: impl std::io::Read + Send + 'static,
    name: String,
    lines: Lines,
    echo: bool,
    first: Option<mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut first = first;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = first.take() {
                let _ = tx.send(line.clone());
            }
            if echo {
                eprintln!("[{name}] {line}");
            }
            lines.lock().unwrap().push(line);
        }
    })
}

/// A `breakwater serve` process.
struct Instance {
    name: String,
    child: Child,
    /// `http://ADDR` once it listens.
    base: String,
    lines: Lines,
    first: Option<mpsc::Receiver<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    http: reqwest::Client,
}

impl Instance {
    /// Spawns `serve --config FILE` with the password in the environment;
    /// [`ready`](Self::ready) waits for it to listen. Logs at `log` go to
    /// its captured lines (and, with `echo`, to the test's stderr).
    fn spawn(name: &str, config: &Path, password: &str, log: &str, echo: bool) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .args(["serve", "--config"])
            .arg(config)
            .env("BREAKWATER_LOG", log)
            .env(PASSWORD_ENV, password)
            .env(ADMIN_ENV, ADMIN_TOKEN)
            .env_remove("PGPASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Lines = Arc::default();
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            read_lines(
                child.stdout.take().unwrap(),
                name.to_string(),
                lines.clone(),
                echo,
                Some(tx),
            ),
            read_lines(
                child.stderr.take().unwrap(),
                name.to_string(),
                lines.clone(),
                echo,
                None,
            ),
        ];
        Self {
            name: name.to_string(),
            child,
            base: String::new(),
            lines,
            first: Some(rx),
            readers,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    /// Waits (up to 30 s) for the first line, `breakwater listening on
    /// http://ADDR`.
    fn ready(mut self) -> Self {
        let rx = self.first.take().expect("ready once");
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                self.base = line
                    .trim()
                    .strip_prefix("breakwater listening on ")
                    .unwrap_or_else(|| panic!("{}: unexpected first line {line:?}", self.name))
                    .to_string();
                self
            }
            Err(e) => panic!(
                "{} did not start listening ({e}); it printed:\n{}",
                self.name,
                self.output()
            ),
        }
    }

    fn start(name: &str, config: &Path, password: &str) -> Self {
        Self::spawn(name, config, password, "warn", true).ready()
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    /// SIGKILL, and waits until the process is gone.
    fn kill_9(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits (up to `limit`) for the process to exit by itself; returns
    /// whether it succeeded and everything it printed.
    fn exit_within(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {limit:?}; it printed:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status.success(), self.output())
    }

    /// Kills it and returns everything it printed.
    fn stop_and_output(mut self) -> String {
        self.kill_9();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.output()
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.name));
        r.json()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.name))
    }

    /// This instance's view of `endpoint` in `GET /breakers`.
    async fn breaker(&self, endpoint: &str) -> serde_json::Value {
        let all = self.get_json("/breakers").await;
        all.as_array()
            .unwrap()
            .iter()
            .find(|b| b["endpoint"] == endpoint)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no endpoint {endpoint} in {all}", self.name))
    }

    async fn event(&self, id: Uuid) -> serde_json::Value {
        self.get_json(&format!("/events/{id}")).await
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Posts `events`; must be answered 202.
    async fn post_202(&self, events: &serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/events", self.base))
            .json(events)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: POST /events: {e}", self.name));
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 202, "{}: POST /events answered {body}", self.name);
    }

    async fn admin(&self, endpoint: &str, op: &str) -> reqwest::StatusCode {
        let encoded = endpoint.replace(':', "%3A").replace('/', "%2F");
        self.http
            .post(format!("{}/breakers/{encoded}/{op}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of series `name` (no labels) in a Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    })
}

/// The statuses of an event's actions, from `GET /events/{id}`.
fn statuses(record: &serde_json::Value) -> Vec<String> {
    record["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("not an event record: {record}"))
        .iter()
        .map(|a| a["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_mid_run_lose_nothing() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let dbc = db(&cluster).await;
    // Work stays in flight: every request takes 5 to 20 ms.
    let hook = Hook::start(200, (5, 20)).await;
    let dir = tempfile::tempdir().unwrap();
    const MAX_IN_FLIGHT: usize = 8;
    let extra = format!(
        "[delivery]\nmax_in_flight_per_endpoint = {MAX_IN_FLIGHT}\n\
         [retry]\nmax_attempts = 50\nbackoff_ms = 50\nmax_backoff_ms = 1000\n"
    );
    let mut fleet: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let path = write_config(
                dir.path(),
                n,
                &config(&cluster.url(), n, 3000, &hook, &extra),
            );
            Instance::spawn(n, &path, cluster.password(), "warn", true)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(Instance::ready)
        .collect();
    // Every instance counted by the others (a heartbeat since the last one
    // started), so that each has its share of the endpoint's limit: what
    // is tested is a takeover, not a newcomer's first heartbeat.
    poll(
        "every instance heartbeating since the last one started",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            count(
                &dbc,
                "SELECT COUNT(*) FROM breakwater.instances
                 WHERE heartbeat_at > (SELECT MAX(started_at) FROM breakwater.instances)",
            )
            .await
                == 3
        },
    )
    .await;

    // 3000 events in arrays of 50, round robin over the live instances;
    // "b" is killed once 1000 are accepted, right after it accepted 50.
    const EVENTS: usize = 3000;
    const PER_POST: usize = 50;
    const KILL_AFTER: usize = 1000;
    let mut accepted: Vec<Uuid> = Vec::with_capacity(EVENTS);
    let mut killed: Option<Instant> = None;
    let mut b_before_kill = serde_json::Value::Null;
    let mut held_by_b: HashSet<Uuid> = HashSet::new();
    let mut takeover: Option<tokio::task::JoinHandle<Instant>> = None;
    for post in 0..EVENTS / PER_POST {
        if accepted.len() == KILL_AFTER {
            let b = &mut fleet[1];
            b_before_kill = b.breaker(&hook.endpoint).await;
            b.kill_9();
            killed = Some(Instant::now());
            // What "b" still held when it died: its claims, in the store.
            held_by_b = dbc
                .query(
                    "SELECT event FROM breakwater.actions WHERE holder = 'b'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Watch for the takeover: b's lease row deleted (its claims
            // released in the same transaction).
            let watcher = db(&cluster).await;
            takeover = Some(tokio::spawn(async move {
                let limit = Instant::now() + Duration::from_secs(60);
                while count(
                    &watcher,
                    "SELECT COUNT(*) FROM breakwater.instances WHERE instance = 'b'",
                )
                .await
                    > 0
                {
                    assert!(Instant::now() < limit, "b's lease was never taken over");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Instant::now()
            }));
        }
        let live: Vec<usize> = if killed.is_some() {
            vec![0, 2]
        } else {
            vec![0, 1, 2]
        };
        let (ids, events) = batch(PER_POST);
        fleet[live[post % live.len()]].post_202(&events).await;
        accepted.extend(ids);
    }
    let killed = killed.expect("b was killed");
    assert_eq!(accepted.len(), EVENTS);
    assert!(
        !held_by_b.is_empty(),
        "b held no claims when it was killed: the test did not exercise a takeover \
         (b's breaker before the kill: {b_before_kill})"
    );
    let posted_in = killed.elapsed();

    // Every event reaches the receiver (bounded).
    let all: HashSet<Uuid> = accepted.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = hook.delivered();
        let missing: Vec<Uuid> = all
            .iter()
            .filter(|id| !got.contains_key(id))
            .copied()
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            // Anything not delivered must at least be dead-lettered, never
            // left waiting or forgotten.
            let mut limbo = Vec::new();
            for id in &missing {
                let record = fleet[0].event(*id).await;
                if statuses(&record) != ["dead_lettered"] {
                    limbo.push(record);
                }
            }
            assert!(
                limbo.is_empty(),
                "{} of {} events never delivered; not dead-lettered either: {:?}",
                missing.len(),
                EVENTS,
                &limbo[..limbo.len().min(10)]
            );
            eprintln!("{} events dead-lettered", missing.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = takeover.unwrap().await.unwrap();

    // The store agrees: every action delivered, none claimed (outcomes are
    // written just after the answers, so this is polled too).
    poll(
        "every action delivered in the store",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            count(
                &dbc,
                "SELECT COUNT(*) FROM breakwater.actions
                 WHERE status <> 'delivered' OR holder IS NOT NULL",
            )
            .await
                == 0
        },
    )
    .await;
    assert_eq!(
        count(&dbc, "SELECT COUNT(*) FROM breakwater.actions").await,
        EVENTS as i64
    );

    // Duplicates: answers beyond the first per webhook-id. Only an action
    // "b" held when it died can come twice, at most once more, and only
    // one the receiver had already answered to "b" (delivered but not yet
    // recorded, or in flight) before its claims were released: that is the
    // bound asserted. It is within the coarser bound of b's window at the
    // kill (its claims in the store) plus 2 x max_in_flight_per_endpoint,
    // asserted too. 2 x max_in_flight_per_endpoint alone is no bound: a
    // delivery frees its permit before its outcome is written (the
    // recorder batches them), so the answered-but-unrecorded actions are
    // bounded by the window, not by the permits. Seen in seven runs on
    // this machine: 0, 2, 3, 8, 9, 19 and 46 duplicates (the 46 with 117
    // claims held by "b" at the kill, 47 of them already answered).
    let got = hook.delivered();
    let duplicated: Vec<(Uuid, usize)> = got
        .iter()
        .filter(|(_, times)| times.len() > 1)
        .map(|(id, times)| (*id, times.len()))
        .collect();
    let duplicates: usize = duplicated.iter().map(|(_, n)| n - 1).sum();
    let not_held: Vec<&(Uuid, usize)> = duplicated
        .iter()
        .filter(|(id, _)| !held_by_b.contains(id))
        .collect();
    assert!(
        not_held.is_empty(),
        "events delivered twice that b did not hold when it died: {not_held:?}"
    );
    assert!(
        duplicated.iter().all(|(_, n)| *n == 2),
        "an event delivered more than twice: {duplicated:?}"
    );
    let answered_to_b = held_by_b
        .iter()
        .filter(|id| got.get(id).is_some_and(|t| t[0] < took_over))
        .count();
    assert!(
        duplicates <= answered_to_b,
        "{duplicates} duplicates, more than the {answered_to_b} actions b held and the \
         receiver had answered before the takeover"
    );
    assert!(
        duplicates <= held_by_b.len() + 2 * MAX_IN_FLIGHT,
        "{duplicates} duplicates, over b's window at the kill ({}) + 2 x {MAX_IN_FLIGHT}",
        held_by_b.len()
    );

    // How long after the kill the last of b's work arrived (the spec's
    // target: within lease_ms + 2 s = 5 s). Seen in seven runs on this
    // machine: the takeover (b's lease row gone) 2.6-3.25 s after the
    // kill, the last of b's work 2.9-4.6 s after it (4.6 s in a run where
    // the machine was slow: posting the last 2000 events took 3.5 s).
    let last_of_b = held_by_b
        .iter()
        .filter_map(|id| got.get(id).and_then(|t| t.last()))
        .max()
        .copied()
        .unwrap();
    eprintln!(
        "fleet kill: {EVENTS} events, posting after the kill took {posted_in:?}; \
         b before the kill: in_flight {} pending {} delivered {}; b held {} claims at the kill; \
         takeover {:?} after the kill; last of b's work arrived {:?} after the kill; \
         duplicates {duplicates} (events {}), of {answered_to_b} b-held actions answered \
         before the takeover; 2 x max_in_flight = {}; requests answered {}",
        b_before_kill["in_flight"],
        b_before_kill["pending"],
        b_before_kill["delivered"],
        held_by_b.len(),
        took_over - killed,
        last_of_b.saturating_duration_since(killed),
        duplicated.len(),
        2 * MAX_IN_FLIGHT,
        hook.answered(),
    );
}

/// What [`pause_past_the_lease`] saw.
#[derive(Debug)]
struct Paused {
    /// Requests of "a" waiting on the receiver when it was paused.
    in_flight: usize,
    /// 2xx answers beyond the first per action.
    duplicates: usize,
}

/// Two instances; "a" holds 40 actions (the receiver slow and failing)
/// and is paused past its lease; "b" takes over and delivers everything;
/// "a" wakes. Checks that nothing "b" settled changed and that "a" keeps
/// serving. (Before an unconfirmed lease held deliveries back, "a", once
/// awake, sent its whole window again before its heartbeat found the lease
/// gone: 37 to 40 duplicates of 40; the test after this one checks that.)
async fn pause_past_the_lease() -> Paused {
    let cluster = start_cluster().await;
    let dbc = db(&cluster).await;
    // Slow and failing at first: "a" keeps claimed actions in flight and
    // waiting for retries.
    let hook = Hook::start(503, (300, 300)).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[delivery]\nmax_in_flight_per_endpoint = 4\n\
                 [retry]\nmax_attempts = 1000\nbackoff_ms = 100\nmax_backoff_ms = 300\n\
                 [circuit_breaker]\nenabled = false\n";
    let cfg = |n: &str| {
        write_config(
            dir.path(),
            n,
            &config(&cluster.url(), n, 2000, &hook, extra),
        )
    };
    let a = Instance::start("a", &cfg("a"), cluster.password());
    let b = Instance::start("b", &cfg("b"), cluster.password());

    const EVENTS: usize = 40;
    let (ids, events) = batch(EVENTS);
    a.post_202(&events).await;
    // "a" holds the work: its window has it, attempts are running.
    let a_held = RefCell::new(serde_json::Value::Null);
    poll(
        "a holding attempts in flight",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let view = a.breaker(&hook.endpoint).await;
            let holds = view["pending"].as_u64().unwrap_or(0) > 0
                && view["in_flight"].as_u64().unwrap_or(0) > 0
                && hook.answered() >= 4;
            *a_held.borrow_mut() = view;
            holds
        },
    )
    .await;
    let a_held = a_held.into_inner();
    let held_by_a = count(
        &dbc,
        "SELECT COUNT(*) FROM breakwater.actions WHERE holder = 'a'",
    )
    .await;
    assert!(held_by_a > 0, "a holds no claims in the store");
    let old_epoch: i64 = dbc
        .query_one(
            "SELECT epoch FROM breakwater.instances WHERE instance = 'a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Paused while every one of its permits waits on the receiver and no
    // answer came for a while: then it is in no transaction holding rows
    // (`a_paused_instance_holding_row_locks_does_not_stall_the_takeover`
    // is about that case). Its
    // in-flight requests get their 503 while it sleeps; it reads them only
    // when it wakes, long after "b" settled the actions.
    poll(
        "a's attempts all waiting on the receiver",
        Duration::from_secs(20),
        Duration::from_millis(5),
        || async {
            // Its own share of the endpoint's limit: 4 alone, 2 once "b"
            // is counted among the live instances.
            let in_flight = a.breaker(&hook.endpoint).await["in_flight"]
                .as_u64()
                .unwrap_or(0) as usize;
            in_flight > 0
                && hook.waiting() >= in_flight
                && hook
                    .last_answer()
                    .is_some_and(|t| t.elapsed() > Duration::from_millis(40))
        },
    )
    .await;
    a.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    let in_flight = hook.waiting();
    let took_over = poll(
        "b taking over a's lease",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            count(
                &dbc,
                "SELECT COUNT(*) FROM breakwater.instances WHERE instance = 'a'",
            )
            .await
                == 0
        },
    )
    .await;
    hook.set(200);
    hook.set_delay(0, 0);
    let settled = poll(
        "b delivering everything a held",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            count(
                &dbc,
                "SELECT COUNT(*) FROM breakwater.actions WHERE status <> 'delivered'",
            )
            .await
                == 0
        },
    )
    .await;
    let paused_for = stopped.elapsed();
    let answered_before_wake = hook.answered();
    a.signal(Signal::SIGCONT);

    // "a" wakes: it finds its lease gone, lets go of what it held, and its
    // late outcomes (the 503s it reads now) are ignored.
    let lost_stale = Cell::new((0.0, 0.0));
    poll(
        "a letting go of its lost claims",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let text = a.metrics().await;
            let lost = metric(&text, "breakwater_dispatch_claims_lost_total").unwrap_or(0.0);
            let stale = metric(&text, "breakwater_dispatch_stale_outcomes_total").unwrap_or(0.0);
            lost_stale.set((lost, stale));
            let window = a.breaker(&hook.endpoint).await;
            lost + stale > 0.0 && window["pending"] == 0
        },
    )
    .await;
    let (lost, stale) = lost_stale.get();
    let new_epoch: i64 = dbc
        .query_one(
            "SELECT epoch FROM breakwater.instances WHERE instance = 'a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(new_epoch > old_epoch, "a took a new lease");

    // Nothing "b" settled changed: every action is still delivered, with
    // no holder, as both instances see it.
    for id in &ids {
        for inst in [&a, &b] {
            let record = inst.event(*id).await;
            assert_eq!(
                statuses(&record),
                ["delivered"],
                "{}'s view of {id}",
                inst.name
            );
        }
    }
    assert_eq!(
        count(
            &dbc,
            "SELECT COUNT(*) FROM breakwater.actions
             WHERE status <> 'delivered' OR holder IS NOT NULL"
        )
        .await,
        0
    );
    let delivered = hook.delivered();
    assert!(ids.iter().all(|id| delivered.contains_key(id)));

    // "a" keeps serving.
    let (new_ids, new_event) = batch(1);
    a.post_202(&new_event).await;
    poll(
        "a new event posted to a delivered",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { hook.delivered().contains_key(&new_ids[0]) },
    )
    .await;
    poll(
        "the new event recorded delivered",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { statuses(&a.event(new_ids[0]).await) == ["delivered"] },
    )
    .await;
    let duplicates: usize = delivered.values().map(|t| t.len() - 1).sum();
    eprintln!(
        "paused instance: a held {held_by_a} claims ({} in flight); paused {paused_for:?}; \
         takeover {took_over:?} after the stop, everything delivered by b {settled:?} after that; \
         a after waking: claims_lost {lost}, stale_outcomes {stale}; epoch {old_epoch} -> \
         {new_epoch}; requests answered while paused {answered_before_wake}, in all {}; \
         duplicate deliveries {duplicates}",
        a_held["in_flight"],
        hook.answered(),
    );
    Paused {
        in_flight,
        duplicates,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_changes_nothing_after_its_lease_is_taken_over() {
    let _turn = serial().await;
    pause_past_the_lease().await;
}

/// A paused instance that wakes should let go of what it held before it
/// sends anything again: the receiver may see again only what "a" had in
/// flight when it was paused (here those requests were all answered 503,
/// so not even those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_does_not_resend_what_was_taken_over() {
    let _turn = serial().await;
    let paused = pause_past_the_lease().await;
    assert!(
        paused.duplicates <= paused.in_flight,
        "a resent {} actions b had already delivered ({} were in flight when it was paused)",
        paused.duplicates,
        paused.in_flight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_together_migrate_once() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let hook = Hook::start(200, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| write_config(dir.path(), n, &config(&cluster.url(), n, 3000, &hook, "")))
        .collect();
    // Spawned back to back, before any of them is waited for.
    let started = Instant::now();
    let spawned: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .zip(&paths)
        .map(|(n, p)| Instance::spawn(n, p, cluster.password(), "warn", true))
        .collect();
    let fleet: Vec<Instance> = spawned.into_iter().map(Instance::ready).collect();
    eprintln!(
        "three instances on a fresh database listening {:?} after spawning",
        started.elapsed()
    );
    for inst in &fleet {
        let health = inst
            .http
            .get(format!("{}/health", inst.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "{}", inst.name);
    }
    let dbc = db(&cluster).await;
    let rows = dbc
        .query("SELECT version FROM breakwater.schema_version", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "schema_version rows");
    assert_eq!(rows[0].get::<_, i32>(0), SCHEMA_VERSION);
    // Each has its own lease, with its own epoch.
    let leases = dbc
        .query(
            "SELECT instance, epoch FROM breakwater.instances ORDER BY instance",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = leases.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let epochs: HashSet<i64> = leases.iter().map(|r| r.get(1)).collect();
    assert_eq!(epochs.len(), 3, "three distinct epochs");
    // And they work together on the migrated schema.
    let (ids, events) = batch(3);
    for (inst, e) in fleet.iter().zip(events.as_array().unwrap()) {
        inst.post_202(e).await;
    }
    poll(
        "an event through each instance delivered",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let got = hook.delivered();
            ids.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
}

/// What one POST of the continuous intake got.
#[derive(Debug)]
struct Posted {
    ids: Vec<Uuid>,
    status: u16,
    retry_after: bool,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_loses_nothing_answered_202() {
    let _turn = serial().await;
    let mut cluster = start_cluster().await;
    let hook = Hook::start(200, (0, 2)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "a",
        &config(&cluster.url(), "a", 3000, &hook, ""),
    );
    let a = Instance::start("a", &path, cluster.password());

    // Events posted continuously, five at a time, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posted: Arc<Mutex<Vec<Posted>>> = Arc::default();
    let poster = {
        let (http, base) = (a.http.clone(), a.base.clone());
        let (stop, posted) = (stop.clone(), posted.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (ids, events) = batch(5);
                let r = http
                    .post(format!("{base}/events"))
                    .json(&events)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("POST /events failed without an answer: {e}"));
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                posted.lock().unwrap().push(Posted {
                    ids,
                    status,
                    retry_after,
                    at: Instant::now(),
                });
                if status != 202 {
                    // As a client told to come back later would.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    // `/metrics` watched all along: the lowest and latest store_up.
    let store_up: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::default();
    let watcher = {
        let (http, base) = (a.http.clone(), a.base.clone());
        let (stop, store_up) = (stop.clone(), store_up.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(r) = http.get(format!("{base}/metrics")).send().await {
                    if let Ok(text) = r.text().await {
                        if let Some(v) = metric(&text, "breakwater_dispatch_store_up") {
                            store_up.lock().unwrap().push((Instant::now(), v));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let accepted = |posted: &Mutex<Vec<Posted>>| {
        posted
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.status == 202)
            .count()
    };
    poll(
        "some events accepted before the outage",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { accepted(&posted) >= 40 },
    )
    .await;

    // Down for about three seconds.
    let down_at = Instant::now();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.stop().unwrap_or_else(|e| panic!("{e}"));
        cluster
    })
    .await
    .unwrap();
    let saw_down = poll(
        "store_up 0 while the database is down",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            store_up
                .lock()
                .unwrap()
                .iter()
                .any(|(t, v)| *t > down_at && *v == 0.0)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    let up_at = Instant::now();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again().unwrap_or_else(|e| panic!("{e}"));
        cluster
    })
    .await
    .unwrap();
    let back = poll(
        "store_up 1 again and events accepted after the restart",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let up_again = store_up
                .lock()
                .unwrap()
                .iter()
                .any(|(t, v)| *t > up_at && *v == 1.0);
            let after = posted
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.at > up_at && p.status == 202)
                .count();
            up_again && after >= 40
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    poster.await.unwrap();
    watcher.await.unwrap();

    let posted = std::mem::take(&mut *posted.lock().unwrap());
    let wrong: Vec<&Posted> = posted
        .iter()
        .filter(|p| !(p.status == 202 || (p.status == 503 && p.retry_after)))
        .collect();
    assert!(
        wrong.is_empty(),
        "answers other than 202, or 503 with Retry-After: {wrong:?}"
    );
    let refused = posted.iter().filter(|p| p.status == 503).count();
    assert!(
        refused > 0,
        "no POST was refused while the database was down"
    );
    let ids: HashSet<Uuid> = posted
        .iter()
        .filter(|p| p.status == 202)
        .flat_map(|p| p.ids.iter().copied())
        .collect();
    let delivered_in = poll(
        "every event answered 202 delivered",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let got = hook.delivered();
            ids.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    let refused_ids: Vec<Uuid> = posted
        .iter()
        .filter(|p| p.status == 503)
        .flat_map(|p| p.ids.iter().copied())
        .collect();
    let got = hook.delivered();
    let refused_but_delivered = refused_ids.iter().filter(|id| got.contains_key(id)).count();
    eprintln!(
        "postgres restart: {} POSTs, {} events answered 202, {refused} POSTs answered 503; \
         store_up 0 seen {saw_down:?} after the stop returned; store_up 1 and 40 events accepted \
         {back:?} after the restart; all delivered {delivered_in:?} later; events of refused \
         POSTs delivered anyway: {refused_but_delivered}",
        posted.len(),
        ids.len(),
    );
    drop(a);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_reaches_every_instance() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let hook = Hook::start(200, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = |n: &str| write_config(dir.path(), n, &config(&cluster.url(), n, 3000, &hook, ""));
    let a = Instance::start("a", &cfg("a"), cluster.password());
    let b = Instance::start("b", &cfg("b"), cluster.password());
    assert_eq!(b.breaker(&hook.endpoint).await["state"], "closed");

    // Without the token: refused, and nothing reaches the other instance.
    let encoded = hook.endpoint.replace(':', "%3A").replace('/', "%2F");
    let anonymous = a
        .http
        .post(format!("{}/breakers/{encoded}/open", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    assert_eq!(a.admin(&hook.endpoint, "open").await, 200);
    assert_eq!(a.breaker(&hook.endpoint).await["state"], "open");
    let opened = poll(
        "b's breaker forced open from a",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { b.breaker(&hook.endpoint).await["state"] == "open" },
    )
    .await;
    // While forced open on both, an event waits; close on b then reaches a.
    let (ids, events) = batch(1);
    a.post_202(&events).await;
    assert_eq!(b.admin(&hook.endpoint, "close").await, 200);
    let closed = poll(
        "a's breaker closed from b",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { a.breaker(&hook.endpoint).await["state"] == "closed" },
    )
    .await;
    poll(
        "the event that waited delivered",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { hook.delivered().contains_key(&ids[0]) },
    )
    .await;
    // The spec: within about 2 s (the sweep follows commands every second).
    eprintln!("admin commands: open reached b after {opened:?}, close reached a after {closed:?}");
}

/// Runs `breakwater ARGS` with the password in the environment; returns
/// whether it succeeded and its stdout and stderr together.
fn run(args: &[&str], config: &Path, password: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(args)
        .arg(config)
        .env("BREAKWATER_LOG", "debug")
        .env(PASSWORD_ENV, password)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let password = cluster.password().to_string();
    let wrong = "WrongPassword7Xq93Lz";
    let hook = Hook::start(200, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "a",
        &config(&cluster.url(), "a", 3000, &hook, ""),
    );
    let leaks = |text: &str| text.contains(&password) || text.contains(wrong);

    // A wrong password: the database refuses, serve exits and says so.
    let refused = Instance::spawn("wrong", &path, wrong, "debug", false);
    let (ok, out) = refused.exit_within(Duration::from_secs(30));
    assert!(!ok, "serve with a wrong password exited 0:\n{out}");
    assert!(
        out.contains("password") || out.contains("authentication"),
        "the refusal does not say why:\n{out}"
    );
    assert!(!leaks(&out), "a password shows in:\n{out}");

    // The right one: it serves; its logs (at debug), /metrics, check-config
    // and migrate show no password.
    let a = Instance::spawn("a", &path, &password, "debug", false).ready();
    let (ids, events) = batch(2);
    a.post_202(&events).await;
    poll(
        "events delivered",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let got = hook.delivered();
            ids.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    let metrics = a.metrics().await;
    assert!(!leaks(&metrics), "a password shows in /metrics:\n{metrics}");
    for path_ in ["/health", "/breakers", &format!("/events/{}", ids[0])] {
        let body = a.get_json(path_).await.to_string();
        assert!(!leaks(&body), "a password shows in {path_}: {body}");
    }
    let (ok, out) = run(&["check-config"], &path, &password);
    assert!(ok, "check-config:\n{out}");
    assert!(!leaks(&out), "a password shows in check-config:\n{out}");
    let (ok, out) = run(&["migrate", "--config"], &path, &password);
    assert!(ok, "migrate:\n{out}");
    assert!(!leaks(&out), "a password shows in migrate:\n{out}");
    let out = a.stop_and_output();
    assert!(out.contains("breakwater listening"), "{out}");
    assert!(!leaks(&out), "a password shows in serve's output:\n{out}");

    // A password in the URL: check-config names `store` as the problem,
    // serve refuses to start; neither echoes it.
    let in_url = cluster
        .url()
        .replace("breakwater@", &format!("breakwater:{password}@"));
    let with_pw = write_config(dir.path(), "url", &config(&in_url, "a", 3000, &hook, ""));
    let (ok, out) = run(&["check-config"], &with_pw, &password);
    assert!(!ok, "check-config took a URL with a password:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("store") && l.contains("password")),
        "check-config does not name `store` and the password as the problem:\n{out}"
    );
    assert!(!leaks(&out), "check-config echoes the password:\n{out}");
    let serve = Instance::spawn("url", &with_pw, &password, "debug", false);
    let (ok, out) = serve.exit_within(Duration::from_secs(30));
    assert!(!ok, "serve started with a password in the URL:\n{out}");
    assert!(!leaks(&out), "serve echoes the password:\n{out}");
}

/// How many action rows "a" holds that an open transaction has locked:
/// the rows a takeover cannot release until that transaction ends. (One
/// statement, its own transaction: the test's own row locks last only
/// while it runs.)
async fn rows_of_a_locked(db: &tokio_postgres::Client) -> i64 {
    let held = count(
        db,
        "SELECT COUNT(*) FROM breakwater.actions WHERE holder = 'a'",
    )
    .await;
    let free = count(
        db,
        "SELECT COUNT(*) FROM (SELECT 1 FROM breakwater.actions WHERE holder = 'a'
                               FOR UPDATE SKIP LOCKED) AS free",
    )
    .await;
    held - free
}

/// An instance paused (a long GC-like stall, a frozen VM, a partition that
/// leaves its connections open) in the middle of a transaction that
/// updated action rows it holds: its lease expires like any other, and
/// the fleet must still take its claims over within the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_holding_row_locks_does_not_stall_the_takeover() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let dbc = db(&cluster).await;
    // Failing at once, retried at once: "a" writes outcomes all the time.
    let hook = Hook::start(503, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[delivery]\nmax_in_flight_per_endpoint = 16\n\
                 [retry]\nmax_attempts = 100000\nbackoff_ms = 1\nmax_backoff_ms = 5\n\
                 [circuit_breaker]\nenabled = false\n";
    let cfg = |n: &str| {
        write_config(
            dir.path(),
            n,
            &config(&cluster.url(), n, 2000, &hook, extra),
        )
    };
    let a = Instance::start("a", &cfg("a"), cluster.password());
    let _b = Instance::start("b", &cfg("b"), cluster.password());
    let (_, events) = batch(200);
    a.post_202(&events).await;
    poll(
        "a retrying",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { hook.answered() > 200 },
    )
    .await;

    // "a" paused holding row locks on its claims, as if stopped inside a
    // transaction. Its own writes are single statements or short
    // transactions, too brief to catch it in reliably, so a session set up
    // as the store sets up its own (the server ends it once it has been
    // idle in a transaction for half a lease) locks a's rows and then goes
    // silent, and "a" is stopped with it.
    let epoch_of_a = "SELECT epoch FROM breakwater.instances WHERE instance = 'a'";
    let first_epoch: i64 = dbc.query_one(epoch_of_a, &[]).await.unwrap().get(0);
    let tries = 1;
    let locker = db(&cluster).await;
    locker
        .batch_execute("SET idle_in_transaction_session_timeout = 1000; BEGIN")
        .await
        .unwrap();
    let locked = locker
        .query(
            "SELECT id FROM breakwater.actions WHERE holder = 'a' FOR UPDATE",
            &[],
        )
        .await
        .unwrap()
        .len();
    a.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    assert!(locked > 0, "a held no claims to lock");
    assert!(rows_of_a_locked(&dbc).await > 0, "a's rows are locked");
    let epoch: i64 = dbc.query_one(epoch_of_a, &[]).await.unwrap().get(0);
    assert_eq!(
        epoch, first_epoch,
        "a lost its lease during the short pauses"
    );
    let b_epoch: i64 = dbc
        .query_one(
            "SELECT epoch FROM breakwater.instances WHERE instance = 'b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Within the lease and two seconds, a's claims are released and "b"
    // keeps its own lease (measured in a margin of four seconds).
    let limit = Duration::from_millis(2000 + 4000);
    let (mut a_lease, mut a_claims, mut b_expired) = (0, 0, false);
    while stopped.elapsed() < limit {
        a_lease = count(
            &dbc,
            "SELECT COUNT(*) FROM breakwater.instances WHERE instance = 'a'",
        )
        .await;
        a_claims = count(
            &dbc,
            "SELECT COUNT(*) FROM breakwater.actions WHERE holder = 'a'",
        )
        .await;
        b_expired = count(
            &dbc,
            "SELECT COUNT(*) FROM breakwater.instances
             WHERE instance = 'b' AND expires_at < now()",
        )
        .await
            > 0;
        if a_lease == 0 && a_claims == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting: Vec<String> = dbc
        .query(
            "SELECT left(query, 60) FROM pg_stat_activity
             WHERE application_name = 'breakwater' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let waited = stopped.elapsed();
    a.signal(Signal::SIGCONT);
    // What follows when "b" stalled: once "a" wakes, b's takeover goes
    // through, and "a" (or "b" itself) finds b's lease expired, so "b"
    // loses its lease and everything it held, though it never stopped.
    let epoch_of_b = "SELECT epoch FROM breakwater.instances WHERE instance = 'b'";
    let mut b_lost_lease = false;
    if b_expired {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && !b_lost_lease {
            b_lost_lease = dbc
                .query_opt(epoch_of_b, &[])
                .await
                .unwrap()
                .is_none_or(|r| r.get::<_, i64>(0) != b_epoch);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "paused in a transaction (caught at try {tries}): after {waited:?}, a's lease rows \
         {a_lease}, actions still held by a {a_claims}, b's lease expired {b_expired}, sessions \
         waiting for a lock: {waiting:?}; once a woke, b lost its lease too: {b_lost_lease}"
    );
    assert!(
        a_lease == 0 && a_claims == 0,
        "{waited:?} after a was paused inside a transaction, its lease is still there \
         ({a_lease}) with {a_claims} claims: b's takeover waits for a's row locks \
         ({waiting:?}); b's own lease expired meanwhile: {b_expired}"
    );
    assert!(!b_expired, "b's lease expired while it waited on a's locks");
}

/// A URL holding a password is one problem, of `store`. The fleet's keys
/// around it are right for a Postgres store and are not problems.
#[test]
fn check_config_reports_a_url_with_a_password_as_one_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"store = "postgres://breakwater:Pw4Fleet@127.0.0.1:5432/breakwater"
store_password_env = "BW_TEST_PG_PASSWORD"
store_schema = "breakwater"
[fleet]
instance = "a"
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "log"
"#;
    let path = write_config(dir.path(), "c", text);
    let (ok, out) = run(&["check-config"], &path, "x");
    assert!(!ok, "{out}");
    assert!(!out.contains("Pw4Fleet"), "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.contains(": line ")).collect();
    assert_eq!(
        problems.len(),
        1,
        "one problem expected, the password in `store`:\n{out}"
    );
    assert!(problems[0].contains("store:"), "{out}");
}

/// A database outage longer than the lease is no instance's fault: every
/// instance was alive all along, and none should find its lease taken over
/// (with its claims released and its window let go) once the database is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_lease_takes_over_no_live_instance() {
    let _turn = serial().await;
    let mut cluster = start_cluster().await;
    let hook = Hook::start(200, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = |n: &str| write_config(dir.path(), n, &config(&cluster.url(), n, 2000, &hook, ""));
    let fleet = [
        Instance::start("a", &cfg("a"), cluster.password()),
        Instance::start("b", &cfg("b"), cluster.password()),
    ];
    let epochs = |db: tokio_postgres::Client| async move {
        db.query(
            "SELECT instance, epoch FROM breakwater.instances ORDER BY instance",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
    };
    let before = epochs(db(&cluster).await).await;

    let down_at = Instant::now();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.stop().unwrap_or_else(|e| panic!("{e}"));
        cluster
    })
    .await
    .unwrap();
    for inst in &fleet {
        poll(
            "store_up 0 on every instance",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async { metric(&inst.metrics().await, "breakwater_dispatch_store_up") == Some(0.0) },
        )
        .await;
    }
    // Down for 3 s, longer than the 2 s lease.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again().unwrap_or_else(|e| panic!("{e}"));
        cluster
    })
    .await
    .unwrap();
    let dbc = db(&cluster).await;
    let back: std::time::SystemTime = dbc.query_one("SELECT now()", &[]).await.unwrap().get(0);
    // Both renew (or take a new lease) after the restart.
    poll(
        "both instances heartbeating again",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            dbc.query_one(
                "SELECT COUNT(*) FROM breakwater.instances WHERE heartbeat_at > $1",
                &[&back],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                == 2
        },
    )
    .await;
    let after = epochs(db(&cluster).await).await;
    eprintln!("database outage of 3 s, lease 2 s: leases before {before:?}, after {after:?}");
    assert_eq!(
        after, before,
        "a live instance lost its lease to the outage"
    );
}

/// `max_in_flight_per_endpoint` holds for the fleet together, as the
/// receiver counts requests open at once: three instances share a limit of
/// four (two, one and one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_limit_holds_for_the_fleet_together() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let hook = Hook::start(200, (40, 40)).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[delivery]\nmax_in_flight_per_endpoint = 4\n";
    let fleet: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let cfg = write_config(
                dir.path(),
                n,
                &config(&cluster.url(), n, 3000, &hook, extra),
            );
            Instance::start(n, &cfg, cluster.password())
        })
        .collect();
    // Each has counted the others: a heartbeat after the last started.
    let dbc = db(&cluster).await;
    poll(
        "every instance heartbeating since the last one started",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            count(
                &dbc,
                "SELECT COUNT(*) FROM breakwater.instances
                 WHERE heartbeat_at > (SELECT MAX(started_at) FROM breakwater.instances)",
            )
            .await
                == 3
        },
    )
    .await;
    let mut ids = Vec::new();
    for round in 0..12 {
        let (batch_ids, body) = batch(50);
        fleet[round % 3].post_202(&body).await;
        ids.extend(batch_ids);
    }
    poll(
        "every event delivered",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { hook.delivered().len() >= ids.len() },
    )
    .await;
    let peak = hook.peak.load(Ordering::SeqCst);
    eprintln!("600 events through three instances sharing a limit of 4: at most {peak} at once at the receiver");
    assert!(
        peak <= 4,
        "{peak} requests at once, over the fleet's limit of 4"
    );
    assert!(peak >= 3, "the fleet used its limit ({peak} at once)");
}

/// The `dlq` commands and `migrate` on a Postgres store: dead letters are
/// listed and replayed from beside a running instance; a schema newer than
/// the binary is refused, naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_and_migrate_work_on_postgres() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let hook = Hook::start(400, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "a",
        &config(&cluster.url(), "a", 3000, &hook, ""),
    );
    let a = Instance::start("a", &cfg, cluster.password());
    let (ids, body) = batch(3);
    a.post_202(&body).await;
    for id in &ids {
        poll(
            "dead-lettered",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async { statuses(&a.event(*id).await) == ["dead_lettered"] },
        )
        .await;
    }
    let (ok, out) = run(&["dlq", "list", "--config"], &cfg, cluster.password());
    assert!(ok, "{out}");
    for id in &ids {
        assert!(out.contains(&id.to_string()), "{id} listed: {out}");
    }
    hook.set(200);
    let (ok, out) = run(
        &["dlq", "replay", "--all", "--config"],
        &cfg,
        cluster.password(),
    );
    assert!(ok, "{out}");
    poll(
        "the replayed dead letters delivered",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { hook.delivered().len() >= 3 },
    )
    .await;
    let (ok, out) = run(&["migrate", "--config"], &cfg, cluster.password());
    assert!(ok && out.contains("up to date"), "{out}");
    drop(a);
    let dbc = db(&cluster).await;
    dbc.execute("UPDATE breakwater.schema_version SET version = 99", &[])
        .await
        .unwrap();
    let (ok, out) = run(&["migrate", "--config"], &cfg, cluster.password());
    assert!(!ok, "{out}");
    assert!(
        out.contains("version 99") && out.contains(&format!("binary's {SCHEMA_VERSION}")),
        "{out}"
    );
}

/// SIGHUP on a Postgres instance: observers and limits are reloaded, the
/// store and the instance's place in the fleet stay as they were (a
/// changed `[fleet]` is logged as taking effect at the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_observers_and_keeps_the_store_and_the_lease() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let first = Hook::start(200, (0, 0)).await;
    let second = Hook::start(200, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "a",
        &config(&cluster.url(), "a", 3000, &first, ""),
    );
    let a = Instance::start("a", &path, cluster.password());
    let dbc = db(&cluster).await;
    let epoch = "SELECT epoch FROM breakwater.instances WHERE instance = 'a'";
    let before: i64 = dbc.query_one(epoch, &[]).await.unwrap().get(0);
    let (_, body) = batch(5);
    a.post_202(&body).await;
    poll(
        "the first receiver's deliveries",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { first.delivered().len() >= 5 },
    )
    .await;
    // The observer now calls the second receiver; the fleet section asks
    // for another name and lease, which wait for the next start.
    let changed = config(&cluster.url(), "a", 3000, &second, "")
        .replace("instance = \"a\"", "instance = \"renamed\"");
    std::fs::write(&path, changed).unwrap();
    a.signal(Signal::SIGHUP);
    poll(
        "the reloaded observer's deliveries",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let (_, body) = batch(1);
            a.post_202(&body).await;
            !second.delivered().is_empty()
        },
    )
    .await;
    let after: i64 = dbc.query_one(epoch, &[]).await.unwrap().get(0);
    assert_eq!(after, before, "the lease is kept across a reload");
    assert_eq!(
        count(
            &dbc,
            "SELECT COUNT(*) FROM breakwater.instances WHERE instance = 'renamed'"
        )
        .await,
        0,
        "the new name waits for the next start"
    );
}

/// The same events posted to two instances are stored once: the second
/// instance answers them as duplicates, and the receiver gets each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_posted_to_two_instances_is_stored_and_delivered_once() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    let hook = Hook::start(200, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let fleet: Vec<Instance> = ["a", "b"]
        .iter()
        .map(|n| {
            let cfg = write_config(dir.path(), n, &config(&cluster.url(), n, 3000, &hook, ""));
            Instance::start(n, &cfg, cluster.password())
        })
        .collect();
    let (ids, body) = batch(20);
    let answers = futures_util::future::join_all(fleet.iter().map(|i| {
        let body = body.clone();
        async move {
            let r = i
                .http
                .post(format!("{}/events", i.base))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<serde_json::Value>().await.unwrap()
        }
    }))
    .await;
    // Each id is new on exactly one of the two (they raced for each).
    let duplicates: usize = answers
        .iter()
        .map(|a| a["duplicates"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(duplicates, ids.len(), "{answers:?}");
    poll(
        "every event delivered",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { hook.delivered().len() >= ids.len() },
    )
    .await;
    // A moment for a second delivery to show, were there one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = hook.delivered();
    assert_eq!(delivered.len(), ids.len());
    assert!(
        delivered.values().all(|answers| answers.len() == 1),
        "an event was delivered twice"
    );
}

/// SIGTERM gives the lease up: what the stopping instance still held is
/// taken by the others at once, not after `lease_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_the_lease_up_for_the_fleet() {
    let _turn = serial().await;
    let cluster = start_cluster().await;
    // Refuses for now: "a" holds its actions, waiting to retry them.
    let hook = Hook::start(503, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    // Retried after about 3 s (full jitter: up to 3 s), well before a's
    // 60 s lease could expire: only giving it up lets "b" take them.
    let extra = "[retry]\nmax_attempts = 1000\nbackoff_ms = 3000\nmax_backoff_ms = 3000\n\
                 [circuit_breaker]\nenabled = false\n";
    let a_cfg = write_config(
        dir.path(),
        "a",
        &config(&cluster.url(), "a", 60_000, &hook, extra),
    );
    let b_cfg = write_config(
        dir.path(),
        "b",
        &config(&cluster.url(), "b", 60_000, &hook, extra),
    );
    let a = Instance::start("a", &a_cfg, cluster.password());
    let (ids, body) = batch(10);
    a.post_202(&body).await;
    let dbc = db(&cluster).await;
    poll(
        "a holding its actions, each tried once",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            hook.answered() >= ids.len()
                && count(
                    &dbc,
                    "SELECT COUNT(*) FROM breakwater.actions WHERE holder = 'a' AND attempts > 0",
                )
                .await
                    == ids.len() as i64
        },
    )
    .await;
    let b = Instance::start("b", &b_cfg, cluster.password());
    a.signal(Signal::SIGTERM);
    let (exited, out) = a.exit_within(Duration::from_secs(30));
    assert!(exited, "{out}");
    let stopped = Instant::now();
    // Only now does the receiver take them: what is delivered, "b" did.
    hook.set(200);
    assert_eq!(
        count(
            &dbc,
            "SELECT COUNT(*) FROM breakwater.instances WHERE instance = 'a'"
        )
        .await,
        0,
        "a's lease is given up"
    );
    poll(
        "b delivering what a held",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { hook.delivered().len() >= ids.len() },
    )
    .await;
    eprintln!(
        "SIGTERM: a's work delivered by b {:?} after a stopped (lease 60 s, retries due within 3 s)",
        stopped.elapsed()
    );
    // The receiver answered; b writes the outcomes with its next batch.
    for id in &ids {
        poll(
            "b's outcome written",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async { b.event(*id).await["actions"][0]["status"] == "delivered" },
        )
        .await;
    }
}

/// A replay job whose instance is killed (`kill -9`) mid-run is taken up
/// by another instance once the dead one's lease is gone, where it was:
/// it ends `finished`, and every dead letter is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_job_of_a_killed_instance_is_finished_by_another() {
    const N: usize = 3_000;
    let _turn = serial().await;
    let cluster = start_cluster().await;
    // Refused: every action is dead-lettered at its first attempt.
    let hook = Hook::start(400, (0, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let a_cfg = write_config(
        dir.path(),
        "a",
        &config(&cluster.url(), "a", 2_000, &hook, ""),
    );
    let b_cfg = write_config(
        dir.path(),
        "b",
        &config(&cluster.url(), "b", 2_000, &hook, ""),
    );
    let mut a = Instance::start("a", &a_cfg, cluster.password());
    let b = Instance::start("b", &b_cfg, cluster.password());
    let mut ids = Vec::new();
    for _ in 0..N / 500 {
        let (batch_ids, body) = batch(500);
        a.post_202(&body).await;
        ids.extend(batch_ids);
    }
    let dbc = db(&cluster).await;
    poll(
        "every action dead-lettered",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            count(
                &dbc,
                "SELECT COUNT(*) FROM breakwater.actions WHERE status = 'dead_lettered'",
            )
            .await
                == N as i64
        },
    )
    .await;
    hook.set(200);
    let r = a
        .http
        .post(format!("{}/actions/replay", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: serde_json::Value = r.json().await.unwrap();
    let id = job["id"].as_i64().unwrap();
    let progress = format!("SELECT replayed FROM breakwater.replay_jobs WHERE id = {id}");
    poll(
        "the job's first chunk recorded",
        Duration::from_secs(30),
        Duration::from_millis(1),
        || async { count(&dbc, &progress).await > 0 },
    )
    .await;
    a.kill_9();
    let killed = Instant::now();
    let job = || async {
        b.http
            .get(format!("{}/replays/{id}", b.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    poll(
        "the job finished by b",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { job().await["state"] != "running" },
    )
    .await;
    let ended = job().await;
    assert_eq!(ended["state"], "finished", "{ended}");
    // A chunk replayed by a but not yet recorded at the kill is not counted
    // by b (its actions no longer match): at most one chunk short.
    let replayed = ended["replayed"].as_u64().unwrap();
    assert!((N as u64 - 500..=N as u64).contains(&replayed), "{ended}");
    eprintln!(
        "replay job of a killed instance finished by b {:?} after the kill (lease 2 s)",
        killed.elapsed()
    );
    poll(
        "every dead letter delivered",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { hook.delivered().len() == N },
    )
    .await;
    // At least once: what a had in flight at the kill may come twice.
    let delivered = hook.delivered();
    assert!(ids.iter().all(|i| delivered.contains_key(i)));
}
