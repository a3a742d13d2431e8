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

mod instances;
mod receivers;
mod summary;

use instances::*;
use receivers::*;
use summary::*;

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
