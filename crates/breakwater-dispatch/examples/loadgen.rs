//! Load generator: throughput and latency of the service on loopback.
//!
//! ```sh
//! cargo run --release -p breakwater-dispatch --example loadgen -- [SECS_PER_PHASE] [CONCURRENCY] [EVENTS_PER_POST] [ROUNDS]
//! ```
//!
//! `CONCURRENCY` (default 32) may be a list (`32,64`): phases 1 to 3 run at
//! each in turn.
//!
//! Phases 1 to 3 run `ROUNDS` times (default 3), in turn, so that a change
//! in the machine's load moves the bare and the service figures of a round
//! alike; odd rounds run them in the order 1, 2, 3 and even rounds 3, 2, 1,
//! so that a load growing or fading through a round favours no phase. The
//! medians of the rounds' ratios are printed last.
//!
//! `EVENTS_PER_POST` (default 1) makes the service phases POST arrays of
//! that many events (one request, one commit for all of them); the bare
//! client always sends one request per action.
//!
//! 1. `bare`: a plain reqwest client POSTs to one healthy receiver at the
//!    given concurrency (the ceiling for one hop).
//! 2. `serve`: the same concurrency POSTs events to the service (SQLite
//!    store in a temporary directory), each asking for one webhook to the
//!    healthy receiver; events/s accepted and actions/s delivered. The
//!    service delivers to one endpoint at that concurrency too
//!    (`max_in_flight_per_endpoint`), so the receiver sees as many requests
//!    at once as from the bare client.
//! 3. `serve+dead`: every event also asks for a webhook to a dead receiver
//!    (503), so it gets half the actions; the healthy actions/s is compared,
//!    refusals at intake are counted (there should be none: the dead
//!    endpoint's actions wait in its backlog on disk), and the service's
//!    resident memory is sampled through the phase. In the first round the
//!    dead receiver then recovers, and the rate at which it drains its
//!    backlog is printed.
//! 4. `latency`: once, events at half the best median rate of phase 2; p50/p99 from
//!    acceptance to the receiver.
//!
//! With `LOADGEN_SERVE_BIN` set to a `breakwater` binary (e.g.
//! `target/release/breakwater`), phases 2 to 4 run the service as that
//! binary's `serve`, in a process of its own, rather than in this one; its
//! CPU time is counted with this process's.
//!
//! With `LOADGEN_STORE=postgres`, the service in this process keeps its
//! events in a throwaway PostgreSQL cluster on loopback (`pg_cluster`; a
//! schema of its own for each service started) rather than in SQLite: run
//! it once each way and compare the service's rate to the bare client's
//! of the same run. `LOADGEN_PG_STATEMENTS=1` then prints the statements
//! that took the server's time (`pg_stat_statements`).
//!
//! With `LOADGEN_HISTORY=both`, each round also runs phase 2 with the
//! attempt history off (`[history] enabled = false`), next to it (before
//! it in even rounds), and prints what recording every attempt costs:
//! the delivered rate and the CPU per delivered event, on against off, and
//! their medians over the rounds. `LOADGEN_HISTORY=off` runs every service
//! phase with the history off; `on` (the default) as the service ships.
//!
//! Phases 1 and 2 also print the CPU time (user and system, every thread of
//! this process, so both the client and the server side) spent per request
//! or per delivered event, and how much of it the store's writer thread
//! used: a figure that other load on the machine moves far less than the
//! rates. The last line also gives the median, over the rounds, of the CPU
//! of a bare request divided by that of a served event: when the client,
//! the service and the receiver keep every core busy, as on a small
//! machine, this is what the rate ratio comes to, without the swings of
//! the machine's speed between one phase and the next.

/// The allocator the `breakwater` binary uses, so that the service in this
/// process runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/proc.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use breakwater_dispatch::config::Config;
use breakwater_dispatch::server;
use breakwater_dispatch::store::SqliteStore;
use support::{cpu_time, rss, stat_cpu_time, thread_cpu_time};

struct Receiver {
    url: String,
    /// Requests answered (whatever the status).
    count: Arc<AtomicU64>,
    /// Requests answered 2xx.
    ok: Arc<AtomicU64>,
    /// The status it answers.
    status: Arc<AtomicU16>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

/// CPU microseconds spent per item between `since` and now, `extra`
/// (another process's) included.
fn cpu_per(since: Option<Duration>, extra: Duration, items: f64) -> Option<f64> {
    match (since, cpu_time()) {
        (Some(a), Some(b)) if items > 0.0 => Some((b - a + extra).as_secs_f64() * 1e6 / items),
        _ => None,
    }
}

fn show_cpu(us: Option<f64>) -> String {
    us.map_or_else(
        || "CPU unknown".to_string(),
        |us| format!("{us:.0} µs CPU each"),
    )
}

fn now_us() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0)
}

async fn receiver(status: u16) -> Receiver {
    let count = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let status = Arc::new(AtomicU16::new(status));
    let latencies_us = Arc::new(Mutex::new(Vec::new()));
    let (c, k, s, l) = (
        count.clone(),
        ok.clone(),
        status.clone(),
        latencies_us.clone(),
    );
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (c, k, s, l) = (c.clone(), k.clone(), s.clone(), l.clone());
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                let status = s.load(Ordering::Relaxed);
                if (200..300).contains(&status) {
                    k.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(sent) = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["data"]["sent_us"].as_u64())
                {
                    l.lock().unwrap().push(now_us().saturating_sub(sent));
                }
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hook"),
        count,
        ok,
        status,
        latencies_us,
    }
}

fn event_json() -> serde_json::Value {
    serde_json::json!({
        "event_type": "INSERT",
        "entity_type": "Order",
        "entity_id": uuid::Uuid::new_v4(),
        "data": { "sent_us": now_us() },
        "timestamp": chrono::Utc::now(),
    })
}

/// One event, or an array of `batch` events.
fn body(batch: usize) -> serde_json::Value {
    if batch == 1 {
        event_json()
    } else {
        serde_json::Value::Array((0..batch).map(|_| event_json()).collect())
    }
}

/// `concurrency` tasks POSTing `batch` events a request to `url` for
/// `secs`; returns the events answered 2xx and the requests answered
/// otherwise (or not at all).
async fn drive(url: String, concurrency: usize, secs: f64, batch: usize) -> (u64, u64) {
    let client = reqwest::Client::new();
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, ok, refused, stop) = (
            client.clone(),
            url.clone(),
            ok.clone(),
            refused.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&body(batch)).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// Whether the service records attempts (`[history] enabled`) in the
/// phases that do not say: `LOADGEN_HISTORY=off` turns it off.
fn history_default() -> bool {
    !std::env::var("LOADGEN_HISTORY").is_ok_and(|s| s == "off")
}

/// Whether each round also runs the service with its history off
/// (`LOADGEN_HISTORY=both`).
fn history_both() -> bool {
    std::env::var("LOADGEN_HISTORY").is_ok_and(|s| s == "both")
}

/// The service's configuration: one observer with a webhook action to each
/// of `urls`, delivering at most `in_flight` at once to each endpoint,
/// recording attempts when `history`.
fn config_toml(dir: &std::path::Path, urls: &[&str], in_flight: usize, history: bool) -> String {
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"{}\"\n[circuit_breaker]\nsample_size = 20\nopen_timeout_ms = 5000\n[retry]\nmax_attempts = 100\nbackoff_ms = 100\nmax_backoff_ms = 5000\n[delivery]\nmax_in_flight_per_endpoint = {in_flight}\n[history]\nenabled = {history}\n[[observers]]\nname = \"o\"\nentity_type = \"Order\"\nevent_type = \"INSERT\"\n",
        dir.join("load.db").display()
    );
    for u in urls {
        toml.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{u}\"\n"
        ));
    }
    toml
}

fn config(dir: &std::path::Path, urls: &[&str], in_flight: usize, history: bool) -> Config {
    Config::parse(&config_toml(dir, urls, in_flight, history)).unwrap()
}

/// The run's throwaway Postgres cluster, once started.
static CLUSTER: std::sync::Mutex<Option<breakwater_dispatch::pg_cluster::PgCluster>> =
    std::sync::Mutex::new(None);

/// A Postgres store on a schema of its own in the run's throwaway cluster
/// (started on first use, stopped at the end of `main`).
async fn postgres_store() -> breakwater_dispatch::store::PostgresStore {
    use breakwater_dispatch::pg_cluster::PgCluster;
    use breakwater_dispatch::store::{PostgresOptions, PostgresStore};
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (url, password) = {
        let mut cluster = CLUSTER.lock().unwrap();
        let cluster = cluster.get_or_insert_with(|| {
            let mut c =
                PgCluster::start().unwrap_or_else(|e| panic!("LOADGEN_STORE=postgres: {e}"));
            if std::env::var_os("LOADGEN_PG_STATEMENTS").is_some() {
                // Loaded at start only: set, then restarted.
                let out = std::process::Command::new("psql")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &c.port().to_string(),
                        "-U",
                        c.user(),
                    ])
                    .args(["-d", c.database(), "-c"])
                    .arg("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                    .env("PGPASSWORD", c.password())
                    .output()
                    .expect("psql");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                c.stop().expect("stopping the cluster");
                c.start_again().expect("starting the cluster again");
            }
            c
        });
        (cluster.url(), cluster.password().to_string())
    };
    let mut options = PostgresOptions::new(url);
    options.password = Some(password);
    options.schema = format!("loadgen_{n}");
    options.instance = format!("loadgen-{n}");
    options.pool_size = 32;
    PostgresStore::connect(options).await.unwrap()
}

/// The service under load: in this process, or the `breakwater` binary
/// named by `LOADGEN_SERVE_BIN` running `serve` in a process of its own.
enum Service {
    InProcess(server::Running),
    Child(std::process::Child),
}

impl Service {
    /// Starts the service on `urls`; returns it and its address.
    async fn start(
        dir: &std::path::Path,
        urls: &[&str],
        in_flight: usize,
        history: bool,
    ) -> (Self, std::net::SocketAddr) {
        if let Ok(bin) = std::env::var("LOADGEN_SERVE_BIN") {
            use std::io::BufRead;
            let path = dir.join("load.toml");
            std::fs::write(&path, config_toml(dir, urls, in_flight, history)).unwrap();
            let mut child = std::process::Command::new(&bin)
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .env("BREAKWATER_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("LOADGEN_SERVE_BIN={bin}: {e}"));
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let addr = line
                .trim()
                .strip_prefix("breakwater listening on http://")
                .unwrap_or_else(|| panic!("unexpected first line from {bin}: {line:?}"))
                .parse()
                .unwrap();
            return (Self::Child(child), addr);
        }
        let cfg = config(dir, urls, in_flight, history);
        let store: Arc<dyn breakwater_dispatch::store::Store> =
            if std::env::var("LOADGEN_STORE").is_ok_and(|s| s == "postgres") {
                Arc::new(postgres_store().await)
            } else {
                Arc::new(SqliteStore::open(cfg.store.sqlite().unwrap()).unwrap())
            };
        let exec = breakwater_dispatch::executor::default_executor().unwrap();
        let svc = server::start(cfg, store, exec, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = svc.addr;
        (Self::InProcess(svc), addr)
    }

    /// The `/proc` directory of the service's process.
    fn proc_dir(&self) -> std::path::PathBuf {
        match self {
            Self::InProcess(_) => "/proc/self".into(),
            Self::Child(c) => format!("/proc/{}", c.id()).into(),
        }
    }

    /// CPU time used by a child process (zero in this process: that is
    /// counted with this process's own).
    fn child_cpu(&self) -> Duration {
        match self {
            Self::InProcess(_) => Duration::ZERO,
            Self::Child(_) => stat_cpu_time(&self.proc_dir().join("stat")).unwrap_or_default(),
        }
    }

    async fn stop(self) {
        match self {
            Self::InProcess(svc) => svc.shutdown(Duration::from_secs(2)).await,
            Self::Child(mut c) => {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
                let _ = c.wait();
            }
        }
    }
}

/// What one service phase measured.
struct Phase {
    /// Events a second accepted.
    accepted: f64,
    /// Requests refused (or failed) at intake.
    refused: u64,
    /// The service process's largest resident memory while it was driven
    /// and caught up, in bytes (this whole process's when the service runs
    /// in it).
    max_rss: u64,
    /// When the dead receiver was made to recover after the phase: the
    /// actions a second it then got until its backlog was drained.
    drained: Option<f64>,
    /// Healthy actions a second delivered.
    delivered: f64,
    /// Healthy actions delivered.
    n: u64,
    /// CPU time of the store's writer thread.
    store_cpu: Duration,
    /// CPU time of the service's process when it is a child.
    child_cpu: Duration,
}

/// Runs the service on `urls`, drives it, waits for `healthy` to catch up;
/// then, with `recover`, makes that receiver answer 200 and waits for it to
/// get every accepted event's action.
async fn serve_phase(
    urls: &[&str],
    healthy: &Receiver,
    concurrency: usize,
    secs: f64,
    batch: usize,
    recover: Option<&Receiver>,
    history: bool,
) -> Phase {
    let dir = tempfile::tempdir().unwrap();
    let (svc, addr) = Service::start(dir.path(), urls, concurrency, history).await;
    let before = healthy.count.load(Ordering::Relaxed);
    let started = Instant::now();
    let proc = svc.proc_dir();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (proc, sampling) = (proc.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                max = max.max(rss(&proc).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };
    let (accepted, refused) =
        drive(format!("http://{addr}/events"), concurrency, secs, batch).await;
    let want = before + accepted;
    while healthy.count.load(Ordering::Relaxed) < want
        && started.elapsed() < Duration::from_secs_f64(secs * 10.0)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let delivered = healthy.count.load(Ordering::Relaxed) - before;
    let drained = match recover {
        Some(dead) => {
            let before = dead.ok.load(Ordering::Relaxed);
            let t = Instant::now();
            dead.status.store(200, Ordering::Relaxed);
            while dead.ok.load(Ordering::Relaxed) < before + accepted
                && t.elapsed() < Duration::from_secs_f64(secs * 20.0)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            dead.status.store(503, Ordering::Relaxed);
            let got = dead.ok.load(Ordering::Relaxed) - before;
            Some(got as f64 / t.elapsed().as_secs_f64())
        }
        None => None,
    };
    sampling.store(false, Ordering::Relaxed);
    let max_rss = sampler.await.unwrap_or(0);
    let store_cpu = thread_cpu_time(&proc, "breakwater-store");
    let child_cpu = svc.child_cpu();
    svc.stop().await;
    Phase {
        accepted: accepted as f64 / secs,
        refused,
        max_rss,
        drained,
        delivered: delivered as f64 / took,
        n: delivered,
        store_cpu,
        child_cpu,
    }
}

/// Phase 1: the bare client; its requests a second and CPU per request.
async fn bare_phase(healthy: &Receiver, concurrency: usize, secs: f64) -> (f64, Option<f64>) {
    let cpu = cpu_time();
    let (sent, _) = drive(healthy.url.clone(), concurrency, secs, 1).await;
    (
        sent as f64 / secs,
        cpu_per(cpu, Duration::ZERO, sent as f64),
    )
}

/// Phase 3: the service with a dead endpoint too; what it measured and the
/// CPU per healthy delivery (the drain, when `recover`, counted in it).
async fn dead_phase(
    healthy: &Receiver,
    dead: &Receiver,
    concurrency: usize,
    secs: f64,
    batch: usize,
    recover: bool,
) -> (Phase, Option<f64>) {
    let cpu = cpu_time();
    let phase = serve_phase(
        &[&healthy.url, &dead.url],
        healthy,
        concurrency,
        secs,
        batch,
        recover.then_some(dead),
        history_default(),
    )
    .await;
    let per = cpu_per(cpu, phase.child_cpu, phase.n as f64);
    (phase, per)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let concurrencies: Vec<usize> = args
        .get(2)
        .map_or("32", String::as_str)
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("CONCURRENCY: a number, or numbers split by commas")
        })
        .collect();
    let batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let rounds: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let healthy = receiver(200).await;
    let dead = receiver(503).await;

    // The best median delivered rate over the concurrencies.
    let mut best: f64 = 0.0;
    for &concurrency in &concurrencies {
        let (mut ratios, mut drops, mut delivered_rates) = (Vec::new(), Vec::new(), Vec::new());
        let mut cpu_ratios = Vec::new();
        // History on against off: delivered rates, CPU per event.
        let (mut history_rates, mut history_cpus) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            // Odd rounds run bare, serve, serve+dead; even rounds the
            // reverse, so that a load that grows or fades during a round
            // favours no phase.
            let forward = round % 2 == 1;
            println!(
                "concurrency {concurrency}, round {round} of {rounds} ({})",
                if forward {
                    "bare, serve, serve+dead"
                } else {
                    "serve+dead, serve, bare"
                }
            );
            let (mut bare_run, mut dead_run) = (None, None);
            if forward {
                bare_run = Some(bare_phase(&healthy, concurrency, secs).await);
            } else {
                dead_run = Some(dead_phase(&healthy, &dead, concurrency, secs, batch, false).await);
            }
            // With LOADGEN_HISTORY=both, the service without its history
            // runs next to the one with it: after it in odd rounds, before
            // it in even ones.
            let unrecorded = |after: bool| {
                let healthy = &healthy;
                async move {
                    if !history_both() || after != forward {
                        return None;
                    }
                    let cpu = cpu_time();
                    let off = serve_phase(
                        &[&healthy.url],
                        healthy,
                        concurrency,
                        secs,
                        batch,
                        None,
                        false,
                    )
                    .await;
                    let per = cpu_per(cpu, off.child_cpu, off.n as f64);
                    Some((off, per))
                }
            };
            let mut off_run = unrecorded(false).await;
            let cpu = cpu_time();
            let serve = serve_phase(
                &[&healthy.url],
                &healthy,
                concurrency,
                secs,
                batch,
                None,
                history_default() || history_both(),
            )
            .await;
            let serve_cpu = cpu_per(cpu, serve.child_cpu, serve.n as f64);
            if off_run.is_none() {
                off_run = unrecorded(true).await;
            }
            if forward {
                let recover = round == 1;
                dead_run =
                    Some(dead_phase(&healthy, &dead, concurrency, secs, batch, recover).await);
            } else {
                bare_run = Some(bare_phase(&healthy, concurrency, secs).await);
            }
            let ((bare, bare_cpu), (dead_too, dead_cpu)) =
                (bare_run.expect("ran"), dead_run.expect("ran"));
            println!(
                "  bare       reqwest -> receiver: {bare:>9.0} req/s (concurrency {concurrency}; {})",
                show_cpu(bare_cpu)
            );
            println!(
                "  serve      events accepted {:>9.0}/s, actions delivered {:>9.0}/s ({:.2}x bare, {batch} event(s) a POST; {}, {:.0} µs of them in the store's writer)",
                serve.accepted,
                serve.delivered,
                serve.delivered / bare,
                show_cpu(serve_cpu),
                serve.store_cpu.as_secs_f64() * 1e6 / (serve.n.max(1) as f64)
            );
            if let Some((off, off_cpu)) = &off_run {
                let cost = (1.0 - serve.delivered / off.delivered) * 100.0;
                println!(
                    "  serve, history off: events accepted {:>9.0}/s, actions delivered {:>9.0}/s ({}, {:.0} µs of them in the store's writer); recording attempts costs {cost:+.1}% of the delivered rate{}",
                    off.accepted,
                    off.delivered,
                    show_cpu(*off_cpu),
                    off.store_cpu.as_secs_f64() * 1e6 / (off.n.max(1) as f64),
                    match (serve_cpu, off_cpu) {
                        (Some(on), Some(off)) => format!(" and {:+.1}% CPU per event", (on / off - 1.0) * 100.0),
                        _ => String::new(),
                    }
                );
                history_rates.push(cost);
                if let (Some(on), Some(off)) = (serve_cpu, off_cpu) {
                    history_cpus.push((on / off - 1.0) * 100.0);
                }
            }
            let drop = (dead_too.delivered / serve.delivered - 1.0) * 100.0;
            println!(
                "  serve+dead events accepted {:>9.0}/s, healthy delivered {:>9.0}/s ({drop:+.1}% vs serve; {} healthy delivery, {:.0} µs of them in the store's writer)",
                dead_too.accepted,
                dead_too.delivered,
                show_cpu(dead_cpu),
                dead_too.store_cpu.as_secs_f64() * 1e6 / (dead_too.n.max(1) as f64)
            );
            println!(
                "             refused at intake: {} (serve: {}); largest RSS {} MiB (serve: {} MiB){}",
                dead_too.refused,
                serve.refused,
                dead_too.max_rss >> 20,
                serve.max_rss >> 20,
                dead_too.drained.map_or(String::new(), |r| format!(
                    "; the dead receiver, recovered, drained its backlog at {r:.0} actions/s"
                ))
            );
            ratios.push(serve.delivered / bare);
            if let (Some(b), Some(s)) = (bare_cpu, serve_cpu) {
                cpu_ratios.push(b / s);
            }
            drops.push(drop);
            delivered_rates.push(serve.accepted.min(serve.delivered));
        }
        println!(
            "concurrency {concurrency}, median of {rounds} round(s): serve {:.2}x bare, healthy rate with a dead endpoint {:+.1}%; CPU of a bare request / of a served event {:.2}",
            median(ratios),
            median(drops),
            median(cpu_ratios)
        );
        if history_both() {
            println!(
                "concurrency {concurrency}, median of {rounds} round(s): recording attempts costs {:+.1}% of the delivered rate, {:+.1}% CPU per delivered event",
                median(history_rates),
                median(history_cpus)
            );
        }
        best = best.max(median(delivered_rates));
    }

    // Latency at half the maximum delivered rate, in POSTs of `batch` events.
    let rate = (best / 2.0).max(1.0);
    let dir = tempfile::tempdir().unwrap();
    let (svc, addr) = Service::start(
        dir.path(),
        &[&healthy.url],
        concurrencies.iter().copied().max().unwrap_or(32),
        history_default(),
    )
    .await;
    healthy.latencies_us.lock().unwrap().clear();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/events");
    let posts_n = ((rate * secs) as u64 / batch as u64).max(1);
    let n = posts_n * batch as u64;
    let gap = Duration::from_secs_f64(batch as f64 / rate);
    let mut tick = tokio::time::interval(gap);
    let before = healthy.count.load(Ordering::Relaxed);
    let mut posts = Vec::new();
    for _ in 0..posts_n {
        tick.tick().await;
        let (client, url) = (client.clone(), url.clone());
        posts.push(tokio::spawn(async move {
            let _ = client.post(&url).json(&body(batch)).send().await;
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    let until = Instant::now() + Duration::from_secs(30);
    while healthy.count.load(Ordering::Relaxed) < before + n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat = healthy.latencies_us.lock().unwrap().clone();
    lat.sort_unstable();
    println!(
        "latency   at {rate:.0} events/s ({} samples): p50 {:.1} ms, p99 {:.1} ms (event posted to receiver)",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    svc.stop().await;
    // The throwaway cluster, if one was started, goes with the run.
    if let Some(c) = CLUSTER.lock().unwrap().take() {
        if std::env::var_os("LOADGEN_PG_STATEMENTS").is_some() {
            let out = std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &c.port().to_string(),
                    "-U",
                    c.user(),
                ])
                .args(["-d", c.database(), "-c"])
                .arg(
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
                     SELECT calls, round(total_exec_time) AS ms, rows, \
                     left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query \
                     FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12",
                )
                .env("PGPASSWORD", c.password())
                .output()
                .expect("psql");
            println!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}
