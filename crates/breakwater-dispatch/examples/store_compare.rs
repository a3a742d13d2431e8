//! The SQLite and the Postgres store side by side, in one run: events
//! stored and delivered a second, and what each costs in CPU.
//!
//! ```sh
//! cargo run --release -p breakwater-dispatch --example store_compare -- [EVENTS] [TASKS] [ROUNDS]
//! ```
//!
//! Each round runs the same work on each store in turn (SQLite first in
//! odd rounds, Postgres first in even ones): `TASKS` (default 32) tasks
//! each store jobs of ten events with one webhook action each, then mark
//! those actions delivered, as the service does, until `EVENTS` (default
//! 50 000) are stored. Postgres is a throwaway cluster on loopback
//! (`pg_cluster`, `fsync` on, as SQLite's `synchronous = FULL`). Prints each
//! run, then the medians: events a second, this process's CPU an event, and
//! for Postgres its server processes' CPU an event and the events a second
//! one server core carries at that cost.
//!
//! `STORE_COMPARE_PG="name=value,..."` sets server settings first (with
//! `ALTER SYSTEM`), to see what one costs: e.g. `synchronous_commit=off`.

/// The allocator the `breakwater` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater::traits::{ActionConfig, EntityEvent, EventKind, WebhookAction};
use breakwater_dispatch::pg_cluster::PgCluster;
use breakwater_dispatch::store::{
    Inserted, NewAction, NewEvent, PostgresOptions, PostgresStore, SqliteStore, Store, Update,
};

#[path = "support/proc.rs"]
mod support;
use support::{cpu_time, stat_cpu_time};

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    events_per_s: f64,
    /// This process's CPU an event, µs.
    own_us: f64,
    /// The database server's CPU an event, µs (Postgres only).
    server_us: f64,
}

fn action() -> NewAction {
    NewAction::new(
        "o",
        ActionConfig::Webhook(WebhookAction {
            url: "http://127.0.0.1:9/hook".into(),
            method: "POST".into(),
            headers: Default::default(),
            body_template: None,
            signing_secret: None,
        }),
    )
}

fn event() -> EntityEvent {
    let mut e = EntityEvent::new(
        EventKind::Insert,
        "Order",
        uuid::Uuid::new_v4(),
        serde_json::json!({ "total": 42, "currency": "EUR", "lines": [1, 2, 3] }),
    );
    e.id = uuid::Uuid::now_v7();
    e
}

/// Stores and delivers `events` through `store` from `tasks` tasks.
async fn drive(store: Arc<dyn Store>, events: usize, tasks: usize) -> Duration {
    let per_task = (events / tasks / 10).max(1);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        let action = action();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let batch = (0..10)
                    .map(|_| NewEvent::new(&event(), vec![action.clone()]))
                    .collect();
                let inserted = store.insert(batch).await.expect("insert");
                let updates = inserted
                    .into_iter()
                    .flat_map(|i| match i {
                        Inserted::New(pending) => pending,
                        Inserted::Duplicate => Vec::new(),
                    })
                    .map(|p| Update::Delivered {
                        id: p.id,
                        attempts: 1,
                        status: Some(200),
                    })
                    .collect();
                store.apply(updates).await.expect("apply");
            }
        }));
    }
    for h in handles {
        h.await.expect("a task");
    }
    started.elapsed()
}

/// CPU used so far by the server processes of `cluster` (the postmaster
/// and its children).
fn server_cpu(cluster: &PgCluster) -> Duration {
    let Some(postmaster) = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
    else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = entry.path().join("stat");
        let Ok(text) = std::fs::read_to_string(&stat) else {
            continue;
        };
        let Some((_, rest)) = text.rsplit_once(')') else {
            continue;
        };
        let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        let pid: Option<u32> = entry.file_name().to_str().and_then(|p| p.parse().ok());
        if pid == Some(postmaster) || ppid == Some(postmaster) {
            total += stat_cpu_time(&stat).unwrap_or_default();
        }
    }
    total
}

async fn run_sqlite(dir: &Path, round: usize, events: usize, tasks: usize) -> Run {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.join(format!("round-{round}.db"))).expect("sqlite"));
    let cpu = cpu_time().unwrap_or_default();
    let took = drive(store.clone(), events, tasks).await;
    let own = cpu_time().unwrap_or_default().saturating_sub(cpu);
    store.close().await;
    let n = ((events / tasks / 10).max(1) * tasks * 10) as f64;
    Run {
        events_per_s: n / took.as_secs_f64(),
        own_us: own.as_secs_f64() * 1e6 / n,
        server_us: 0.0,
    }
}

async fn run_postgres(cluster: &PgCluster, round: usize, events: usize, tasks: usize) -> Run {
    let mut options = PostgresOptions::new(cluster.url());
    options.password = Some(cluster.password().to_string());
    options.schema = format!("round_{round}");
    options.pool_size = tasks.min(32);
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(options).await.expect("postgres"));
    let (cpu, server) = (cpu_time().unwrap_or_default(), server_cpu(cluster));
    let took = drive(store.clone(), events, tasks).await;
    let own = cpu_time().unwrap_or_default().saturating_sub(cpu);
    let server = server_cpu(cluster).saturating_sub(server);
    store.close().await;
    let n = ((events / tasks / 10).max(1) * tasks * 10) as f64;
    Run {
        events_per_s: n / took.as_secs_f64(),
        own_us: own.as_secs_f64() * 1e6 / n,
        server_us: server.as_secs_f64() * 1e6 / n,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let tasks: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut cluster = match PgCluster::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Ok(settings) = std::env::var("STORE_COMPARE_PG") {
        let client = connect(&cluster).await;
        for setting in settings.split(',').filter(|s| !s.is_empty()) {
            let (name, value) = setting.split_once('=').expect("name=value");
            client
                .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
                .await
                .expect("a setting");
        }
        drop(client);
        // Some settings need a restart (shared_preload_libraries).
        cluster.stop().expect("stopping the cluster");
        cluster.start_again().expect("starting the cluster again");
        println!("postgres settings: {settings}");
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut sqlite, mut postgres) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (s, p) = if round % 2 == 1 {
            let s = run_sqlite(dir.path(), round, events, tasks).await;
            (s, run_postgres(&cluster, round, events, tasks).await)
        } else {
            let p = run_postgres(&cluster, round, events, tasks).await;
            (run_sqlite(dir.path(), round, events, tasks).await, p)
        };
        println!(
            "round {round}: sqlite {:.0} events/s ({:.1} µs CPU an event); postgres {:.0} events/s \
             ({:.1} µs CPU here, {:.1} µs in the server an event); ratio {:.2}",
            s.events_per_s,
            s.own_us,
            p.events_per_s,
            p.own_us,
            p.server_us,
            p.events_per_s / s.events_per_s
        );
        sqlite.push(s);
        postgres.push(p);
    }
    if std::env::var("STORE_COMPARE_PG").is_ok_and(|s| s.contains("pg_stat_statements")) {
        top_statements(&cluster).await;
    }
    let s = median(sqlite.iter().map(|r| r.events_per_s).collect());
    let p = median(postgres.iter().map(|r| r.events_per_s).collect());
    let server_us = median(postgres.iter().map(|r| r.server_us).collect());
    println!(
        "median of {rounds} rounds, {events} events, {tasks} tasks: sqlite {s:.0} events/s, \
         postgres {p:.0} events/s, postgres/sqlite {:.2}; postgres server CPU {server_us:.1} µs \
         an event stored and delivered, so one server core carries about {:.0} events/s",
        p / s,
        1e6 / server_us.max(0.001)
    );
}

/// Prints the statements that took the server's time, from
/// `pg_stat_statements` (when loaded).
async fn top_statements(cluster: &PgCluster) {
    let client = connect(cluster).await;
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements");
    let rows = client
        .query(
            "SELECT calls, total_exec_time, total_plan_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
             FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT 8",
            &[],
        )
        .await
        .expect("reading pg_stat_statements");
    for r in rows {
        let (calls, exec, plan, q): (i64, f64, f64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        println!("{calls:>8} calls {exec:>9.0} ms exec {plan:>7.0} ms plan  {q}");
    }
}

/// A plain connection to the cluster's database, as its superuser.
async fn connect(cluster: &PgCluster) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            cluster.port(),
            cluster.user(),
            cluster.password(),
            cluster.database()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connecting to the cluster");
    tokio::spawn(conn);
    client
}
