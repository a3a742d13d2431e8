//! The SQLite store's writer alone: CPU per event stored and delivered.
//!
//! ```sh
//! cargo run --release -p breakwater-dispatch --example store_writer -- [EVENTS] [TASKS] [v4|v7] [attempts]
//! ```
//!
//! `TASKS` (default 32) tasks each store POST-sized jobs of ten events
//! with one webhook action each, then mark those actions delivered, as the
//! service does, until `EVENTS` (default 100 000) are stored. Event ids are
//! random (`v4`) or grow with time (`v7`, the default: what the service
//! gives events posted without one). Prints the writer thread's CPU time
//! per event, the events a second and the database's size. With
//! `attempts`, each delivery also records its attempt, as the service's
//! history does (a signed webhook's request headers, a small answer).

/// The allocator the `breakwater` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use breakwater::traits::{ActionConfig, EntityEvent, EventKind, WebhookAction};
use breakwater_dispatch::store::{
    Attempt, AttemptOutcome, Inserted, NewAction, NewEvent, RequestRecord, SqliteStore, Store,
    Trigger, Update,
};

#[path = "support/proc.rs"]
mod support;
use support::thread_cpu_time;

fn event(v7: bool) -> EntityEvent {
    let mut e = EntityEvent::new(
        EventKind::Insert,
        "Order",
        uuid::Uuid::new_v4(),
        serde_json::json!({ "sent_us": 1_764_633_600_000_000u64 }),
    );
    if v7 {
        e.id = uuid::Uuid::now_v7();
    }
    e
}

/// An attempt as a signed webhook's delivery records it.
fn attempt(event: uuid::Uuid) -> Attempt {
    let h = |n: &str, v: &str| (n.to_string(), v.to_string());
    Attempt {
        number: 1,
        trigger: Trigger::Scheduled,
        breaker_state: "closed".into(),
        started_at_ms: 1_764_633_600_000,
        duration_ms: 2,
        outcome: AttemptOutcome::Success,
        error_kind: None,
        status: Some(200),
        error: None,
        request: Some(RequestRecord {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook".into(),
            headers: vec![
                h("content-type", "application/json"),
                h("user-agent", "breakwater/0.1"),
                h("webhook-id", &event.to_string()),
                h("webhook-timestamp", "1764633600"),
                h(
                    "webhook-signature",
                    "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                ),
            ],
        }),
        response_headers: vec![
            h("content-type", "text/plain"),
            h("content-length", "2"),
            h("date", "Mon, 01 Dec 2025 00:00:00 GMT"),
        ],
        response_body: Some("ok".into()),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let tasks: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let v7 = args.get(3).is_none_or(|s| s != "v4");
    let attempts = args.get(4).is_some_and(|s| s == "attempts");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("writer.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let action = NewAction::new(
        "o",
        ActionConfig::Webhook(WebhookAction {
            url: "http://127.0.0.1:9/hook".into(),
            method: "POST".into(),
            headers: Default::default(),
            body_template: None,
            signing_secret: None,
        }),
    );
    let per_task = events / tasks / 10;
    let before = thread_cpu_time(Path::new("/proc/self"), "breakwater-store");
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, action) = (store.clone(), action.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let batch = (0..10)
                    .map(|_| NewEvent::new(&event(v7), vec![action.clone()]))
                    .collect();
                let inserted = store.insert(batch).await.unwrap();
                let updates = inserted
                    .into_iter()
                    .flat_map(|i| match i {
                        Inserted::New(pending) => pending,
                        Inserted::Duplicate => Vec::new(),
                    })
                    .flat_map(|p| {
                        let recorded = attempts.then(|| Update::Attempt {
                            id: p.id,
                            attempt: Box::new(attempt(p.event.id())),
                        });
                        recorded.into_iter().chain([Update::Delivered {
                            id: p.id,
                            attempts: 1,
                            status: Some(200),
                        }])
                    })
                    .collect();
                store.apply(updates).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let took = started.elapsed();
    let cpu = thread_cpu_time(Path::new("/proc/self"), "breakwater-store") - before;
    let n = (per_task * tasks * 10) as f64;
    store.close().await;
    let size: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{n} events ({} ids{}), {tasks} tasks: writer {:.1} µs CPU an event, {:.0} events/s, files {:.1} MB",
        if v7 { "v7" } else { "v4" },
        if attempts { ", attempts" } else { "" },
        cpu.as_secs_f64() * 1e6 / n,
        n / took.as_secs_f64(),
        size as f64 / 1e6
    );
}
