//! `breakwater demo --fleet N`: a fleet of `serve` processes on one
//! Postgres database, one of them killed mid-run.
//!
//! A throwaway PostgreSQL cluster ([`PgCluster`]) is started on loopback,
//! then N child processes of this very binary (`serve --config FILE`, named
//! `bw-1` to `bw-N`), each with its own configuration file in a temporary
//! directory: the demo's receivers, observer and breaker settings, the
//! cluster as `store`, and a `[fleet]` lease of 3 s renewed every 0.5 s.
//! Events are posted round-robin to the instances at the demo's rate. A
//! third of the way in, `bw-2` is killed with SIGKILL: the actions it had
//! claimed stay claimed until its lease expires, then a survivor releases
//! them and the fleet delivers them.
//!
//! Each receiver records every request by its `webhook-id` header (the
//! hooks are signed so that they carry one; it is the same for every
//! attempt of one action, on any instance). The summary checks that every
//! action of every accepted event was delivered (or dead-lettered, asked
//! of a survivor's `GET /events/{id}`), counts duplicates (a second `2xx`
//! for one `webhook-id`) and says whose they are, and measures how long
//! after the kill the killed instance's claims (read from the database right
//! after the kill) were delivered by the others.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use breakwater::traits::ActionConfig;
use breakwater::webhook::signing::ID_HEADER;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::{demo_config, Receiver, Table, DRAIN, RATE};
use crate::config::{Config, FleetConfig, StoreLocation};
use crate::pg_cluster::PgCluster;

/// The fewest instances a fleet demo runs.
pub const MIN_INSTANCES: usize = 2;
/// The most instances a fleet demo runs.
pub const MAX_INSTANCES: usize = 8;
/// Each instance's lease (`[fleet] lease_ms`).
const LEASE_MS: u64 = 3_000;
/// How often each instance renews it (`[fleet] heartbeat_ms`).
const HEARTBEAT_MS: u64 = 500;
/// The variable the children read the database password from.
const PASSWORD_ENV: &str = "BREAKWATER_DEMO_STORE_PASSWORD";
/// Where each instance finds the run's admin token (the console's login).
const ADMIN_ENV: &str = "BREAKWATER_DEMO_ADMIN_TOKEN";
/// The hooks are signed so that every request carries `webhook-id`.
const SIGNING_SECRET: &str = "whsec_YnJlYWt3YXRlciBkZW1vIC0tZmxlZXQ6IHNpZ24hIQ==";
/// How long an instance may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped instance may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The instance killed: the second (`bw-2`).
const VICTIM: usize = 1;
/// Requests that reach a receiver this soon after the kill were sent by the
/// killed instance before it died (the receiver reads them a moment later);
/// nobody else may send its claims before its lease expires.
const LAST_GASP: Duration = Duration::from_millis(250);
/// Each receiver answers after this many milliseconds (at random, from the
/// first to the second); the request counts as done when it arrives.
const ANSWER_MS: (u64, u64) = (10, 60);

/// The fleet demo's options.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many `serve` processes, [`MIN_INSTANCES`] to [`MAX_INSTANCES`].
    pub instances: usize,
    /// How long events are generated.
    pub duration: Duration,
    /// Where the first instance (`bw-1`) listens; a free port if it is
    /// taken. The others listen on free ports.
    pub listen: SocketAddr,
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Healthy,
    Flaky,
    /// 503 until the recovery time is set and reached.
    Dead,
}

/// One request a receiver got.
#[derive(Debug, Clone, Copy)]
struct Hit {
    at: Instant,
    ok: bool,
}

/// Every request a receiver got, by `webhook-id`.
#[derive(Debug, Default)]
struct Ledger {
    hits: Mutex<HashMap<String, Vec<Hit>>>,
    /// Requests without a `webhook-id`.
    unsigned: AtomicU64,
}

/// What a ledger holds, counted.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: u64,
    /// `webhook-id`s answered `2xx` at least once.
    unique: u64,
    /// `2xx` answers beyond the first per `webhook-id`.
    duplicates: u64,
}

impl Ledger {
    fn note(&self, id: Option<&str>, ok: bool) {
        let Some(id) = id else {
            self.unsigned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let hit = Hit {
            at: Instant::now(),
            ok,
        };
        lock(&self.hits)
            .entry(id.to_string())
            .or_default()
            .push(hit);
    }

    fn tally(&self) -> Tally {
        let hits = lock(&self.hits);
        let mut t = Tally::default();
        for list in hits.values() {
            let ok = list.iter().filter(|h| h.ok).count() as u64;
            t.requests += list.len() as u64;
            t.ok += ok;
            t.errors += list.len() as u64 - ok;
            t.unique += u64::from(ok > 0);
            t.duplicates += ok.saturating_sub(1);
        }
        t
    }

    /// Each event's requests, by event id (one `webhook-id` per event: a
    /// receiver is the endpoint of one action).
    fn by_event(&self) -> HashMap<Uuid, Vec<Hit>> {
        lock(&self.hits)
            .iter()
            .filter_map(|(id, hits)| Some((event_of(id)?, hits.clone())))
            .collect()
    }

    /// The events with a `2xx` answer.
    fn delivered(&self) -> HashSet<Uuid> {
        lock(&self.hits)
            .iter()
            .filter(|(_, hits)| hits.iter().any(|h| h.ok))
            .filter_map(|(id, _)| event_of(id))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The event id in a `webhook-id`: `msg_<32 hex digits>_<16 hex digits>`.
fn event_of(webhook_id: &str) -> Option<Uuid> {
    let rest = webhook_id.strip_prefix("msg_")?;
    Uuid::try_parse(rest.split('_').next()?).ok()
}

async fn receiver(
    name: &'static str,
    answer: Answer,
    recover: Arc<OnceLock<Instant>>,
) -> anyhow::Result<(Receiver, Arc<Ledger>)> {
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let ledger = Arc::new(Ledger::default());
    let (ok2, refused2, ledger2) = (ok.clone(), refused.clone(), ledger.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let (ok, refused, ledger) = (ok2.clone(), refused2.clone(), ledger2.clone());
            let recover = recover.clone();
            async move {
                let fail = match answer {
                    Answer::Healthy => false,
                    Answer::Flaky => rand::random::<f64>() < 0.4,
                    Answer::Dead => recover.get().is_none_or(|t| Instant::now() < *t),
                };
                let id = headers.get(ID_HEADER).and_then(|v| v.to_str().ok());
                ledger.note(id, !fail);
                let status = if fail {
                    refused.fetch_add(1, Ordering::Relaxed);
                    if answer == Answer::Flaky {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                };
                // The answer takes a while, as a real receiver's does: an
                // instance killed meanwhile never learns that it was done.
                let ms = rand::random_range(ANSWER_MS.0..=ANSWER_MS.1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://{addr}/hook");
    let endpoint = super::hook(&url).endpoint();
    let r = Receiver {
        name,
        url,
        endpoint,
        ok,
        refused,
    };
    Ok((r, ledger))
}

/// One row of an instance's `GET /breakers`.
#[derive(Debug, Clone, Deserialize)]
struct Row {
    endpoint: String,
    state: String,
    #[serde(default)]
    disabled: bool,
    delivered: u64,
    pending: u64,
    backlog: u64,
    in_flight: u64,
}

impl Row {
    fn state_name(&self) -> String {
        if self.disabled {
            "DISABLED".into()
        } else {
            self.state.to_uppercase()
        }
    }
}

/// Where an instance stands.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Live,
    /// Killed by the demo, this long after the start of the run.
    Killed(Duration),
    /// Exited on its own.
    Exited(String),
}

/// One `serve` child.
struct Instance {
    name: String,
    /// `http://ADDR`.
    url: String,
    child: Option<Child>,
    log: PathBuf,
    /// Its `GET /breakers` rows, as last seen.
    rows: Vec<Row>,
    status: Status,
}

impl Instance {
    fn delivered(&self, endpoint: &str) -> u64 {
        self.rows
            .iter()
            .find(|r| r.endpoint == endpoint)
            .map_or(0, |r| r.delivered)
    }
}

/// An event accepted by `POST /events`.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    id: Uuid,
    at: Instant,
}

/// An action the killed instance had claimed when it died.
#[derive(Debug, Clone)]
struct Claim {
    event: Uuid,
    endpoint: String,
}

/// The kill.
#[derive(Debug)]
struct Kill {
    instance: usize,
    /// When the process was gone.
    at: Instant,
    /// Its `GET /breakers` rows just before.
    rows: Option<Vec<Row>>,
    /// How many events it had accepted.
    accepted: u64,
    /// Its claims, read from the database right after; or why not.
    claims: Result<Vec<Claim>, String>,
}

/// What the generator and the table share.
struct Shared {
    accepted: Mutex<Vec<Accepted>>,
    /// Events accepted by each instance.
    by_instance: Vec<AtomicU64>,
    refused: AtomicU64,
    kill: Mutex<Option<Kill>>,
}

/// The instance to kill, and what the kill needs.
struct Victim {
    index: usize,
    name: String,
    url: String,
    child: Child,
    at: Instant,
    db: Option<tokio_postgres::Client>,
    schema: String,
}

/// The hooks of `config`, signed.
fn sign_hooks(config: &mut Config) {
    for observer in &mut config.observers {
        for action in &mut observer.actions {
            if let ActionConfig::Webhook(hook) = action {
                hook.signing_secret = Some(SIGNING_SECRET.into());
            }
        }
    }
}

/// `base` as instance `name`'s configuration.
fn instance_config(base: &Config, name: &str, listen: SocketAddr, url: &str) -> Config {
    let mut c = base.clone();
    c.listen = listen;
    c.store = StoreLocation::Postgres(url.to_string());
    c.store_password_env = Some(PASSWORD_ENV.into());
    c.admin_token_env = Some(ADMIN_ENV.into());
    c.fleet = FleetConfig {
        instance: Some(name.to_string()),
        lease_ms: LEASE_MS,
        heartbeat_ms: HEARTBEAT_MS,
    };
    c
}

/// The TOML text of `config`: the keys the demo sets. It is read back and
/// compared, so that a setting the text misses cannot go unnoticed.
fn to_toml(config: &Config) -> anyhow::Result<String> {
    use toml::{Table as T, Value as V};
    let int = |n: u64| V::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let mut top = T::new();
    top.insert("listen".into(), V::String(config.listen.to_string()));
    top.insert("store".into(), V::String(config.store.to_string()));
    if let Some(var) = &config.store_password_env {
        top.insert("store_password_env".into(), V::String(var.clone()));
    }
    top.insert(
        "store_schema".into(),
        V::String(config.store_schema.clone()),
    );
    if let Some(var) = &config.admin_token_env {
        top.insert("admin_token_env".into(), V::String(var.clone()));
    }
    let mut fleet = T::new();
    if let Some(name) = &config.fleet.instance {
        fleet.insert("instance".into(), V::String(name.clone()));
    }
    fleet.insert("lease_ms".into(), int(config.fleet.lease_ms));
    fleet.insert("heartbeat_ms".into(), int(config.fleet.heartbeat_ms));
    top.insert("fleet".into(), V::Table(fleet));
    let mut breakers = match V::try_from(&config.circuit_breaker.defaults)? {
        V::Table(t) => t,
        other => bail!("breaker settings serialized as {other}"),
    };
    let mut endpoints = T::new();
    for (endpoint, c) in &config.circuit_breaker.endpoints {
        endpoints.insert(endpoint.clone(), V::try_from(c)?);
    }
    breakers.insert("endpoints".into(), V::Table(endpoints));
    top.insert("circuit_breaker".into(), V::Table(breakers));
    let mut retry = T::new();
    retry.insert("max_attempts".into(), int(config.retry.max_attempts.into()));
    retry.insert("backoff_ms".into(), int(config.retry.backoff_ms));
    retry.insert("max_backoff_ms".into(), int(config.retry.max_backoff_ms));
    top.insert("retry".into(), V::Table(retry));
    let mut delivery = T::new();
    delivery.insert(
        "max_in_flight_per_endpoint".into(),
        int(config.delivery.max_in_flight_per_endpoint as u64),
    );
    top.insert("delivery".into(), V::Table(delivery));
    let mut observers = Vec::new();
    for o in &config.observers {
        let mut t = T::new();
        t.insert("name".into(), V::String(o.name.clone()));
        t.insert("entity_type".into(), V::String(o.entity_type.clone()));
        t.insert("event_type".into(), V::try_from(o.event_type)?);
        let mut actions = Vec::new();
        for a in &o.actions {
            let mut action = V::try_from(a)?;
            // No `[observers.actions.headers]` when there are none.
            if let V::Table(t) = &mut action {
                if t.get("headers")
                    .and_then(V::as_table)
                    .is_some_and(T::is_empty)
                {
                    t.remove("headers");
                }
            }
            actions.push(action);
        }
        t.insert("actions".into(), V::Array(actions));
        observers.push(V::Table(t));
    }
    top.insert("observers".into(), V::Array(observers));
    let text = toml::to_string(&top)?;
    let back = Config::parse(&text).map_err(|e| anyhow!("{e}"))?;
    if &back != config {
        bail!("the configuration written for the fleet does not read back the same:\n{text}");
    }
    Ok(text)
}

/// Starts instance `index` (`bw-{index + 1}`) and waits for its address.
async fn start_instance(
    exe: &Path,
    dir: &Path,
    config: &Config,
    password: &str,
    admin: &str,
    index: usize,
) -> anyhow::Result<Instance> {
    let name = format!("bw-{}", index + 1);
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, to_toml(config)?)
        .with_context(|| format!("writing {}", file.display()))?;
    let log = dir.join(format!("{name}.log"));
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .env(PASSWORD_ENV, password)
        .env(ADMIN_ENV, admin)
        // Warnings (a lease taken over) and errors go to its log file.
        .env("BREAKWATER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", exe.display()))?;
    let stdout = child.stdout.take().context("the child's standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    let addr = match first {
        Ok(Ok(Some(line))) => line
            .strip_prefix("breakwater listening on http://")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok()),
        _ => None,
    };
    let Some(addr) = addr else {
        let _ = child.kill().await;
        bail!(
            "{name} did not start (no \"breakwater listening on\" line); the end of its log:\n{}",
            log_tail(&log, 20)
        );
    };
    // Whatever else it prints is read and dropped.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Instance {
        name,
        url: format!("http://{addr}"),
        child: Some(child),
        log,
        rows: Vec::new(),
        status: Status::Live,
    })
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the N instances together.
async fn start_fleet(
    base: &Config,
    cluster: &PgCluster,
    dir: &Path,
    n: usize,
    listen: SocketAddr,
    admin: &str,
) -> anyhow::Result<Vec<Instance>> {
    let exe = std::env::current_exe().context("finding this program")?;
    // A taken --listen port falls back to a free one, as in the plain demo.
    let first = match std::net::TcpListener::bind(listen) {
        Ok(probe) => {
            drop(probe);
            listen
        }
        Err(e) => {
            eprintln!("cannot listen on {listen} ({e}); bw-1 uses a free port instead");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let free = SocketAddr::from(([127, 0, 0, 1], 0));
    let url = cluster.url();
    let starts = (0..n).map(|i| {
        let config = instance_config(
            base,
            &format!("bw-{}", i + 1),
            if i == 0 { first } else { free },
            &url,
        );
        let exe = exe.clone();
        async move { start_instance(&exe, dir, &config, cluster.password(), admin, i).await }
    });
    futures_util::future::join_all(starts)
        .await
        .into_iter()
        .collect()
}

async fn fetch_rows(client: &reqwest::Client, url: &str) -> Option<Vec<Row>> {
    let answer = client
        .get(format!("{url}/breakers"))
        .timeout(Duration::from_millis(900))
        .send()
        .await
        .ok()?;
    answer.json::<Vec<Row>>().await.ok()
}

async fn connect_db(cluster: &PgCluster) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&cluster.url_with_password(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The actions `instance` holds claimed in the store.
async fn claims_of(
    db: &tokio_postgres::Client,
    schema: &str,
    instance: &str,
) -> anyhow::Result<Vec<Claim>> {
    let rows = db
        .query(
            &format!(
                "SELECT a.event, e.endpoint FROM {schema}.actions a
                 JOIN {schema}.endpoints e ON e.lane = a.lane WHERE a.holder = $1"
            ),
            &[&instance],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Claim {
            event: r.get(0),
            endpoint: r.get(1),
        })
        .collect())
}

/// Fetches the victim's counters, kills it with SIGKILL, waits for it to be
/// gone and reads what it had claimed.
async fn kill(mut v: Victim, client: &reqwest::Client, accepted: u64) -> Kill {
    let rows = fetch_rows(client, &v.url).await;
    let _ = v.child.kill().await;
    let at = Instant::now();
    let claims = match &v.db {
        Some(db) => claims_of(db, &v.schema, &v.name)
            .await
            .map_err(|e| format!("{e:#}")),
        None => Err("no connection to the database".into()),
    };
    Kill {
        instance: v.index,
        at,
        rows,
        accepted,
        claims,
    }
}

/// Posts events round-robin to the live instances at [`RATE`] until
/// `until`, killing the victim on the way.
async fn generate(
    shared: Arc<Shared>,
    urls: Vec<String>,
    until: Instant,
    mut victim: Option<Victim>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut alive = vec![true; urls.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut next = 0usize;
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        // The kill happens between two posts: no request to it is cut off.
        if victim.as_ref().is_some_and(|v| Instant::now() >= v.at) {
            if let Some(v) = victim.take() {
                alive[v.index] = false;
                let accepted = shared.by_instance[v.index].load(Ordering::Relaxed);
                let k = kill(v, &client, accepted).await;
                *lock(&shared.kill) = Some(k);
            }
        }
        let Some(i) = (0..urls.len())
            .map(|k| (next + k) % urls.len())
            .find(|&i| alive[i])
        else {
            break;
        };
        next = i + 1;
        n += 1;
        let id = Uuid::now_v7();
        let body = serde_json::json!({
            "id": id,
            "event_type": "INSERT",
            "entity_type": "Order",
            "entity_id": Uuid::new_v4(),
            "data": { "order": n, "total_cents": 1000 + n },
            "timestamp": chrono::Utc::now(),
        });
        match client
            .post(format!("{}/events", urls[i]))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                lock(&shared.accepted).push(Accepted {
                    id,
                    at: Instant::now(),
                });
                shared.by_instance[i].fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Seconds from `from` to `to` (0 when `to` is earlier).
fn after(from: Instant, to: Instant) -> Duration {
    to.saturating_duration_since(from)
}

#[allow(clippy::too_many_arguments)]
fn render(
    started: Instant,
    total: Duration,
    generating: bool,
    shared: &Shared,
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
) -> Vec<String> {
    let elapsed = started.elapsed();
    let width = 30usize;
    let done =
        ((elapsed.as_secs_f64() / total.as_secs_f64()) * width as f64).min(width as f64) as usize;
    let phase = if generating { "generating" } else { "draining" };
    let accepted = lock(&shared.accepted).len();
    // Each instance counts the store's backlog every few seconds and adds
    // only its own work in between: the largest count is the nearest.
    let waiting: u64 = instances
        .iter()
        .filter(|i| i.status == Status::Live)
        .map(|i| i.rows.iter().map(|r| r.backlog).sum())
        .max()
        .unwrap_or(0);
    let mut lines = vec![format!(
        "[{}{}] {:>5.1}s/{}s {phase}: {accepted} events accepted, {waiting} actions waiting",
        "#".repeat(done),
        "-".repeat(width - done),
        elapsed.as_secs_f64(),
        total.as_secs(),
    )];
    let mut head = format!("{:<8} {:<12} {:>6}", "instance", "status", "events");
    for r in receivers {
        head.push_str(&format!(" {:>7} {:<9}", r.name, ""));
    }
    head.push_str(&format!(" {:>5} {:>7}", "held", "sending"));
    lines.push(head);
    for (i, inst) in instances.iter().enumerate() {
        let live = inst.status == Status::Live;
        let status = match &inst.status {
            Status::Live => "live".to_string(),
            Status::Killed(at) => format!("KILLED {}", secs(*at)),
            Status::Exited(_) => "EXITED".to_string(),
        };
        let events = shared.by_instance[i].load(Ordering::Relaxed);
        let mut line = format!("{:<8} {:<12} {:>6}", inst.name, status, events);
        for r in receivers {
            let row = inst.rows.iter().find(|row| row.endpoint == r.endpoint);
            let delivered = row.map_or(0, |row| row.delivered);
            let state = match row {
                Some(row) if live => row.state_name(),
                _ => String::new(),
            };
            line.push_str(&format!(" {delivered:>7} {state:<9}"));
        }
        if live {
            let held: u64 = inst.rows.iter().map(|r| r.pending).sum();
            let flight: u64 = inst.rows.iter().map(|r| r.in_flight).sum();
            line.push_str(&format!(" {held:>5} {flight:>7}"));
        } else {
            line.push_str(&format!(" {:>5} {:>7}", "-", "-"));
        }
        lines.push(line.trim_end().to_string());
    }
    lines.push(format!(
        "{:<8} {:<33} {:>7} {:>7} {:>7} {:>5}",
        "receiver", "endpoint", "ok", "errors", "unique", "dup"
    ));
    for (r, ledger) in receivers.iter().zip(ledgers) {
        let t = ledger.tally();
        lines.push(format!(
            "{:<8} {:<33} {:>7} {:>7} {:>7} {:>5}",
            r.name, r.endpoint, t.ok, t.errors, t.unique, t.duplicates
        ));
    }
    lines
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Stops every child still running: SIGTERM, then SIGKILL after
/// [`STOP_TIMEOUT`].
async fn stop_fleet(instances: &mut [Instance]) {
    for inst in instances.iter() {
        if let Some(pid) = inst.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let waits = instances
        .iter_mut()
        .filter_map(|i| i.child.take())
        .map(|mut child| async move {
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        });
    futures_util::future::join_all(waits).await;
}

/// Runs the fleet demo; `true` when nothing was lost.
///
/// # Errors
///
/// When the instance count is out of range, or PostgreSQL, a receiver or
/// an instance cannot start; without PostgreSQL's server programs the
/// message names the command that installs them.
pub async fn run(options: FleetOptions) -> anyhow::Result<bool> {
    let n = options.instances;
    if !(MIN_INSTANCES..=MAX_INSTANCES).contains(&n) {
        bail!("--fleet takes {MIN_INSTANCES} to {MAX_INSTANCES} instances, not {n}");
    }
    let setup = Instant::now();
    println!("breakwater demo --fleet {n}: starting a throwaway PostgreSQL cluster on 127.0.0.1");
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await?
        .map_err(|e| {
            anyhow!(
                "the fleet demo runs its instances on a throwaway PostgreSQL cluster, which \
                 could not start: {e}"
            )
        })?;
    let recover = Arc::new(OnceLock::new());
    let mut receivers = Vec::new();
    let mut ledgers = Vec::new();
    for (name, answer) in [
        ("healthy", Answer::Healthy),
        ("flaky", Answer::Flaky),
        ("dead", Answer::Dead),
    ] {
        let (r, l) = receiver(name, answer, recover.clone()).await?;
        receivers.push(r);
        ledgers.push(l);
    }
    let dir = tempfile::Builder::new()
        .prefix("breakwater-fleet-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut base = demo_config(dir.path().join("unused.db"), &receivers);
    sign_hooks(&mut base);
    let schema = base.store_schema.clone();
    // The console's admin token: random, for this run only.
    let admin: String = rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut instances = start_fleet(&base, &cluster, dir.path(), n, options.listen, &admin).await?;
    let db = connect_db(&cluster).await;
    println!(
        "{n} instances up in {}, on {} (schema {schema});\n  each holds a {} lease \
         renewed every {} and serves the whole API (/breakers, /metrics):",
        secs(setup.elapsed()),
        cluster.url(),
        secs(Duration::from_millis(LEASE_MS)),
        secs(Duration::from_millis(HEARTBEAT_MS)),
    );
    for inst in &instances {
        println!("  {:<8} {}", inst.name, inst.url);
    }
    println!(
        "  console  {}/console (any instance serves it; each keeps its own logins)\n           \
         log in with the admin token {admin}",
        instances[0].url
    );
    let kill_after = options.duration / 3;
    let recover_after = options.duration / 2;
    for r in &receivers {
        let what = match r.name {
            "healthy" => "always 200".to_string(),
            "flaky" => "500 for ~40% of requests".to_string(),
            _ => format!("503 for the first {}s, then 200", recover_after.as_secs()),
        };
        println!("  {:<8} {}  {what}", r.name, r.url);
    }
    println!(
        "  (each takes {} to {} ms to answer; hooks are signed: each request has a webhook-id)",
        ANSWER_MS.0, ANSWER_MS.1
    );
    println!(
        "{RATE} events a second for {}s, round-robin to the live instances; {} is killed \
         with SIGKILL at {}",
        options.duration.as_secs(),
        instances[VICTIM].name,
        secs(kill_after)
    );
    println!();

    let outcome = tokio::select! {
        r = show(&options, &mut instances, &receivers, &ledgers, &recover, kill_after, db, &schema) => r,
        () = interrupted() => Err(anyhow!("interrupted; the fleet was stopped")),
    };
    stop_fleet(&mut instances).await;
    let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    drop(dir);
    outcome
}

/// The run: events, the kill, the table each second, the summary.
#[allow(clippy::too_many_arguments)]
async fn show(
    options: &FleetOptions,
    instances: &mut [Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
    recover: &OnceLock<Instant>,
    kill_after: Duration,
    db: anyhow::Result<tokio_postgres::Client>,
    schema: &str,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let recover_at = started + options.duration / 2;
    let _ = recover.set(recover_at);
    let shared = Arc::new(Shared {
        accepted: Mutex::new(Vec::new()),
        by_instance: (0..instances.len()).map(|_| AtomicU64::new(0)).collect(),
        refused: AtomicU64::new(0),
        kill: Mutex::new(None),
    });
    let db_problem = db.as_ref().err().map(|e| format!("{e:#}"));
    let victim = Victim {
        index: VICTIM,
        name: instances[VICTIM].name.clone(),
        url: instances[VICTIM].url.clone(),
        child: instances[VICTIM]
            .child
            .take()
            .context("the instance to kill")?,
        at: started + kill_after,
        db: db.ok(),
        schema: schema.to_string(),
    };
    let urls = instances.iter().map(|i| i.url.clone()).collect();
    let generator = AbortOnDropHandle::new(tokio::spawn(generate(
        shared.clone(),
        urls,
        started + options.duration,
        Some(victim),
    )));

    let client = reqwest::Client::new();
    let tty = std::io::stdout().is_terminal();
    let mut table = Table { tty, printed: 0 };
    let total = options.duration + Duration::from_secs(5);
    let deadline = started + options.duration + DRAIN + Duration::from_millis(LEASE_MS);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut idle_ticks = 0;
    loop {
        tick.tick().await;
        let generating = !generator.is_finished();
        if let Some(k) = lock(&shared.kill).as_ref() {
            let inst = &mut instances[k.instance];
            if inst.status == Status::Live {
                inst.status = Status::Killed(after(started, k.at));
                if let Some(rows) = &k.rows {
                    inst.rows.clone_from(rows);
                }
            }
        }
        for inst in instances.iter_mut() {
            if let Some(child) = inst.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    inst.status = Status::Exited(status.to_string());
                    inst.child = None;
                }
            }
        }
        let fetches = instances
            .iter()
            .map(|inst| {
                let live = inst.status == Status::Live;
                let client = client.clone();
                let url = inst.url.clone();
                async move {
                    if live {
                        fetch_rows(&client, &url).await
                    } else {
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        for (inst, rows) in instances
            .iter_mut()
            .zip(futures_util::future::join_all(fetches).await)
        {
            if let Some(rows) = rows {
                inst.rows = rows;
            }
        }
        table.show(&render(
            started, total, generating, &shared, instances, receivers, ledgers,
        ));
        if generating {
            continue;
        }
        let accepted: Vec<Uuid> = lock(&shared.accepted).iter().map(|a| a.id).collect();
        let complete = ledgers.iter().all(|l| {
            let delivered = l.delivered();
            accepted.iter().all(|id| delivered.contains(id))
        });
        let live: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.status == Status::Live)
            .collect();
        let idle = !live.is_empty()
            && live.iter().all(|i| {
                i.rows
                    .iter()
                    .all(|r| r.pending == 0 && r.in_flight == 0 && r.backlog == 0)
            });
        idle_ticks = if idle { idle_ticks + 1 } else { 0 };
        if complete || idle_ticks >= 2 || Instant::now() >= deadline {
            break;
        }
    }
    drop(generator);
    let run = RunInfo {
        started,
        recover_at,
        db_problem,
    };
    summary(&run, &shared, instances, receivers, ledgers, &client).await
}

/// The run's times, for the summary.
struct RunInfo {
    /// When the first event was posted.
    started: Instant,
    /// When the dead receiver began to answer 200.
    recover_at: Instant,
    /// Why the database could not be read, if so.
    db_problem: Option<String>,
}

/// What became of one receiver's actions.
#[derive(Debug, Default)]
struct Fate {
    delivered: u64,
    dead_lettered: u64,
    /// Neither, with the status the store gives.
    lost: Vec<(Uuid, String)>,
}

/// The status of `event`'s action for `endpoint`, asked of `url`.
async fn action_status(client: &reqwest::Client, url: &str, event: Uuid, endpoint: &str) -> String {
    let answer = match client
        .get(format!("{url}/events/{event}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) => return format!("unknown ({e})"),
    };
    if answer.status() == StatusCode::NOT_FOUND {
        return "no such event in the store".into();
    }
    let Ok(record) = answer.json::<serde_json::Value>().await else {
        return "unknown (an unreadable answer)".into();
    };
    record["actions"]
        .as_array()
        .and_then(|actions| {
            actions
                .iter()
                .find(|a| a["endpoint"].as_str() == Some(endpoint))
        })
        .and_then(|a| a["status"].as_str())
        .unwrap_or("no such action")
        .to_string()
}

/// Who took over `victim`'s lease, and how many actions it released, from
/// the survivors' logs.
fn takeover_in_logs(instances: &[Instance], victim: &str) -> Option<(String, Option<u64>)> {
    let field = format!("instance={victim} ");
    instances
        .iter()
        .filter(|i| i.status == Status::Live)
        .find_map(|i| {
            let text = std::fs::read_to_string(&i.log).ok()?;
            let line = text
                .lines()
                .find(|l| l.contains("lease expired") && format!("{l} ").contains(&field))?;
            let actions = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("actions=")?.parse().ok());
            Some((i.name.clone(), actions))
        })
}

async fn summary(
    run: &RunInfo,
    shared: &Shared,
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
    client: &reqwest::Client,
) -> anyhow::Result<bool> {
    let accepted: Vec<Accepted> = lock(&shared.accepted).clone();
    let total = accepted.len() as u64;
    let kill = lock(&shared.kill).take();
    println!();
    println!(
        "summary after {:.1}s: {total} events accepted ({} refused) by {} instances, {} actions",
        run.started.elapsed().as_secs_f64(),
        shared.refused.load(Ordering::Relaxed),
        instances.len(),
        total * receivers.len() as u64,
    );
    for (i, inst) in instances.iter().enumerate() {
        let delivered: Vec<String> = receivers
            .iter()
            .map(|r| format!("{} {}", r.name, inst.delivered(&r.endpoint)))
            .collect();
        let note = match &inst.status {
            Status::Live => String::new(),
            Status::Killed(_) => " (as seen just before the kill)".to_string(),
            Status::Exited(how) => format!(" (it exited on its own: {how})"),
        };
        println!(
            "  {:<8} accepted {} events; delivered {}{note}",
            inst.name,
            shared.by_instance[i].load(Ordering::Relaxed),
            delivered.join(", ")
        );
    }
    let lost = check_actions(&accepted, instances, receivers, ledgers, client).await;
    let victim = kill.as_ref().map_or("the killed instance", |k| {
        instances[k.instance].name.as_str()
    });
    let unexplained = duplicates(kill.as_ref(), victim, receivers, ledgers);
    match &kill {
        Some(k) => takeover(run, k, &accepted, instances, receivers, ledgers),
        None => println!("killed: nobody (the run ended before the kill)"),
    }
    let ok = total > 0 && lost == 0 && kill.is_some();
    let result = if ok {
        format!("ok (nothing lost although {victim} was killed mid-run)")
    } else if kill.is_none() {
        "FAILED (no instance was killed)".to_string()
    } else {
        format!("FAILED ({lost} action(s) lost; see above)")
    };
    if unexplained > 0 {
        println!(
            "WARNING: {unexplained} duplicate(s) of actions {victim} had not claimed: two \
             instances delivered the same action"
        );
    }
    println!("RESULT: {result}");
    Ok(ok)
}

/// Prints what became of every action of every accepted event, by
/// receiver; returns how many were lost.
async fn check_actions(
    accepted: &[Accepted],
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
    client: &reqwest::Client,
) -> u64 {
    let total = accepted.len() as u64;
    let accepted_ids: HashSet<Uuid> = accepted.iter().map(|a| a.id).collect();
    let survivor = instances.iter().find(|i| i.status == Status::Live);
    let mut fates = Vec::new();
    let mut foreign = 0u64;
    for (r, ledger) in receivers.iter().zip(ledgers) {
        let delivered = ledger.delivered();
        foreign += delivered.difference(&accepted_ids).count() as u64;
        let mut fate = Fate::default();
        for a in accepted {
            if delivered.contains(&a.id) {
                fate.delivered += 1;
                continue;
            }
            let status = match survivor {
                Some(s) => action_status(client, &s.url, a.id, &r.endpoint).await,
                None => "unknown (no instance left to ask)".into(),
            };
            if status == "dead_lettered" {
                fate.dead_lettered += 1;
            } else {
                fate.lost.push((a.id, status));
            }
        }
        let t = ledger.tally();
        println!(
            "  {:<8} {}/{total} delivered, {} dead-lettered, {} lost; {} requests, {} errors, {} \
             duplicate(s)",
            r.name,
            fate.delivered,
            fate.dead_lettered,
            fate.lost.len(),
            t.requests,
            t.errors,
            t.duplicates,
        );
        for (id, status) in fate.lost.iter().take(5) {
            println!("           lost: event {id}, its action is {status}");
        }
        fates.push(fate);
    }
    let delivered: u64 = fates.iter().map(|f| f.delivered).sum();
    let dead: u64 = fates.iter().map(|f| f.dead_lettered).sum();
    let lost: u64 = fates.iter().map(|f| f.lost.len() as u64).sum();
    println!(
        "actions: {}/{} delivered or dead-lettered, {lost} lost ({delivered} delivered, {dead} \
         dead-lettered)\n  checked by webhook-id at the receivers{}",
        delivered + dead,
        total * receivers.len() as u64,
        if dead + lost > 0 {
            ", then by GET /events/{id} on a survivor"
        } else {
            ""
        }
    );
    let unsigned: u64 = ledgers
        .iter()
        .map(|l| l.unsigned.load(Ordering::Relaxed))
        .sum();
    if foreign + unsigned > 0 {
        println!(
            "WARNING: the receivers got {foreign} action(s) of events never accepted and \
             {unsigned} request(s) without a webhook-id"
        );
    }
    lost
}

/// Prints the duplicates at the receivers and whose they are; returns how
/// many were not the killed instance's in-flight work.
fn duplicates(
    kill: Option<&Kill>,
    victim: &str,
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
) -> u64 {
    let claims: HashSet<(Uuid, &str)> = kill
        .and_then(|k| k.claims.as_ref().ok())
        .map(|c| c.iter().map(|c| (c.event, c.endpoint.as_str())).collect())
        .unwrap_or_default();
    let mut duplicates = 0u64;
    let mut explained = 0u64;
    for (r, ledger) in receivers.iter().zip(ledgers) {
        for (event, hits) in ledger.by_event() {
            let extra = (hits.iter().filter(|h| h.ok).count() as u64).saturating_sub(1);
            duplicates += extra;
            if claims.contains(&(event, r.endpoint.as_str())) {
                explained += extra;
            }
        }
    }
    if duplicates == 0 {
        println!(
            "duplicates: none; no webhook-id was answered 2xx twice (a duplicate would be work \
             {victim}\n  had sent but not yet recorded as delivered when it died)"
        );
    } else {
        println!(
            "duplicates: {duplicates} (2xx answers beyond the first per webhook-id), {explained} \
             of them of actions\n  {victim} had claimed when it was killed: its in-flight work, \
             sent before it died but not\n  yet recorded as delivered, so delivered again by the \
             instance that took it over"
        );
    }
    duplicates - explained
}

/// Prints the kill, how long after it the killed instance's claims were
/// delivered by the others, and when every event accepted before it had
/// reached each receiver.
fn takeover(
    run: &RunInfo,
    k: &Kill,
    accepted: &[Accepted],
    instances: &[Instance],
    receivers: &[Receiver],
    ledgers: &[Arc<Ledger>],
) {
    let name = &instances[k.instance].name;
    let receiver_of = |endpoint: &str| receivers.iter().position(|r| r.endpoint == endpoint);
    let by_event: Vec<HashMap<Uuid, Vec<Hit>>> = ledgers.iter().map(|l| l.by_event()).collect();
    let mut measured = false;
    match &k.claims {
        Ok(claims) => {
            let mut per = vec![0usize; receivers.len()];
            for r in claims.iter().filter_map(|c| receiver_of(&c.endpoint)) {
                per[r] += 1;
            }
            let split: Vec<String> = receivers
                .iter()
                .zip(&per)
                .map(|(r, n)| format!("{n} {}", r.name))
                .collect();
            println!(
                "killed: {name} with SIGKILL at {}, after accepting {} events; it held {} claimed \
                 action(s):\n  {}",
                secs(after(run.started, k.at)),
                k.accepted,
                claims.len(),
                split.join(", ")
            );
            // When a survivor first delivered each claimed action.
            let gasp = k.at + LAST_GASP;
            let mut first: Option<Duration> = None;
            let mut last_by: Vec<Option<Duration>> = vec![None; receivers.len()];
            let mut undelivered = 0usize;
            for c in claims {
                let Some(r) = receiver_of(&c.endpoint) else {
                    continue;
                };
                let delivered = by_event[r].get(&c.event).and_then(|hits| {
                    hits.iter()
                        .find(|h| h.ok && h.at > gasp)
                        .map(|h| after(k.at, h.at))
                });
                match delivered {
                    Some(d) => {
                        first = Some(first.map_or(d, |f| f.min(d)));
                        last_by[r] = Some(last_by[r].map_or(d, |l| l.max(d)));
                    }
                    None => undelivered += 1,
                }
            }
            let released = match takeover_in_logs(instances, name) {
                Some((who, Some(n))) => {
                    format!(";\n  {who} released {name}'s {n} claim(s), says {who}'s log")
                }
                Some((who, None)) => format!(";\n  {who} released {name}'s claims, says its log"),
                None => String::new(),
            };
            match first {
                Some(first) => {
                    measured = true;
                    let lasts: Vec<String> = receivers
                        .iter()
                        .zip(&last_by)
                        .filter_map(|(r, l)| {
                            l.map(|l| format!("{} {:.2}s", r.name, l.as_secs_f64()))
                        })
                        .collect();
                    println!(
                        "takeover: a survivor delivered the first of them {:.2}s after the kill \
                         (lease {},\n  heartbeat {}); the last of them, by receiver: {} after \
                         the kill{}{released}",
                        first.as_secs_f64(),
                        secs(Duration::from_millis(LEASE_MS)),
                        secs(Duration::from_millis(HEARTBEAT_MS)),
                        lasts.join(", "),
                        if undelivered > 0 {
                            format!("; {undelivered} never delivered after the kill")
                        } else {
                            String::new()
                        }
                    );
                }
                None if claims.is_empty() => println!(
                    "takeover: {name} held no claimed action when it was killed: nothing to take \
                     over{released}"
                ),
                None => println!(
                    "takeover: none of {name}'s {} claimed action(s) was delivered after the kill",
                    claims.len()
                ),
            }
        }
        Err(e) => println!(
            "killed: {name} with SIGKILL at {}, after accepting {} events; what it held could \
             not be read from the database ({e})",
            secs(after(run.started, k.at)),
            k.accepted
        ),
    }
    // The coarser measure: when every event accepted before the kill had
    // reached each receiver.
    let before: Vec<Uuid> = accepted
        .iter()
        .filter(|a| a.at <= k.at)
        .map(|a| a.id)
        .collect();
    let caught_up: Vec<String> = receivers
        .iter()
        .zip(&by_event)
        .map(|(r, events)| {
            let last = before.iter().try_fold(None, |last: Option<Instant>, id| {
                let ok = events.get(id)?.iter().find(|h| h.ok)?.at;
                Some(Some(last.map_or(ok, |l| l.max(ok))))
            });
            match last {
                Some(Some(t)) if t > k.at => {
                    format!("{} {:.2}s", r.name, after(k.at, t).as_secs_f64())
                }
                Some(_) => format!("{} before the kill", r.name),
                None => format!("{} never", r.name),
            }
        })
        .collect();
    println!(
        "caught up: all {} events accepted before the kill had reached each receiver by:\n  {} \
         after the kill\n  (the dead receiver answered 503 until {} after it)",
        before.len(),
        caught_up.join(", "),
        secs(run.recover_at.saturating_duration_since(k.at)),
    );
    if !measured {
        println!("  (the takeover could not be measured from the claims: this is its upper bound)");
    }
    if let Some(problem) = &run.db_problem {
        println!("  (the database could not be read: {problem})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_id_is_read_from_a_webhook_id() {
        let id = Uuid::new_v4();
        let webhook_id = format!("msg_{}_0123456789abcdef", id.simple());
        assert_eq!(event_of(&webhook_id), Some(id));
        assert_eq!(event_of("msg_nothex_0123"), None);
        assert_eq!(event_of("other"), None);
    }

    #[test]
    fn duplicates_are_2xx_answers_beyond_the_first() {
        let ledger = Ledger::default();
        ledger.note(Some("a"), false);
        ledger.note(Some("a"), true);
        ledger.note(Some("a"), true);
        ledger.note(Some("b"), false);
        ledger.note(None, true);
        let t = ledger.tally();
        assert_eq!((t.requests, t.ok, t.errors), (4, 2, 2));
        assert_eq!((t.unique, t.duplicates), (1, 1));
        assert_eq!(ledger.unsigned.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_instance_configuration_reads_back_as_written() {
        let hook = |port: u16| super::super::hook(&format!("http://127.0.0.1:{port}/hook"));
        let receivers: Vec<Receiver> = [("healthy", 9001), ("flaky", 9002), ("dead", 9003)]
            .into_iter()
            .map(|(name, port)| Receiver {
                name,
                url: format!("http://127.0.0.1:{port}/hook"),
                endpoint: hook(port).endpoint(),
                ok: Arc::default(),
                refused: Arc::default(),
            })
            .collect();
        let mut base = demo_config("unused.db".into(), &receivers);
        sign_hooks(&mut base);
        let config = instance_config(
            &base,
            "bw-3",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "postgres://breakwater@127.0.0.1:5432/breakwater",
        );
        let text = to_toml(&config).unwrap();
        assert!(text.contains("instance = \"bw-3\""), "{text}");
        assert!(text.contains(PASSWORD_ENV), "{text}");
    }
}
