//! The console's pages over a large store: bytes and server time of each
//! view with 100 000 events stored (for BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p breakwater-dispatch --example console_pages -- [EVENTS]
//! ```
//!
//! Fills a SQLite store with `EVENTS` (default 100 000) `Order` events,
//! each with two webhook actions (one endpoint that delivers, one that
//! fails for good one time in five), every action with its recorded
//! attempts (a 1 KB answer each), then serves it and fetches each view
//! over loopback with an admin session: prints each page's size and the
//! median and worst time of 7 fetches (the first one not counted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater::traits::{ActionConfig, EntityEvent, EventKind, WebhookAction};
use breakwater_dispatch::app::Tokens;
use breakwater_dispatch::config::Config;
use breakwater_dispatch::store::{
    Attempt, AttemptOutcome, Inserted, NewAction, NewEvent, RequestRecord, SqliteStore, Store,
    Trigger, Update,
};

const TOKEN: &str = "console-pages-admin-token";
const BATCH: usize = 1_000;
const FETCHES: usize = 7;

fn hook(url: &str) -> ActionConfig {
    ActionConfig::Webhook(WebhookAction {
        url: url.into(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: None,
    })
}

fn attempt(number: u32, ok: bool, body: &str) -> Box<Attempt> {
    Box::new(Attempt {
        number,
        trigger: if number == 1 {
            Trigger::Scheduled
        } else {
            Trigger::Retry
        },
        breaker_state: "closed".into(),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        duration_ms: 12,
        outcome: if ok {
            AttemptOutcome::Success
        } else {
            AttemptOutcome::Permanent
        },
        error_kind: (!ok).then(|| "http_4xx".into()),
        status: Some(if ok { 200 } else { 422 }),
        error: (!ok).then(|| "permanent failure: HTTP 422 Unprocessable Entity".into()),
        request: Some(RequestRecord {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook".into(),
            headers: vec![("content-type".into(), "application/json".into())],
        }),
        response_headers: vec![("content-type".into(), "application/json".into())],
        response_body: Some(body.into()),
    })
}

async fn fill(store: &SqliteStore, events: usize, urls: [&str; 2]) -> uuid::Uuid {
    let actions = [
        NewAction::new("orders", hook(urls[0])),
        NewAction::new("orders", hook(urls[1])),
    ];
    let body = format!("{{\"detail\":\"{}\"}}", "x".repeat(1_000));
    let mut first = None;
    let mut stored = 0;
    while stored < events {
        let n = BATCH.min(events - stored);
        let batch: Vec<NewEvent> = (0..n)
            .map(|i| {
                let e = EntityEvent::new(
                    EventKind::Insert,
                    "Order",
                    uuid::Uuid::new_v4(),
                    serde_json::json!({ "order": stored + i }),
                );
                first.get_or_insert(e.id);
                NewEvent::new(&e, actions.to_vec())
            })
            .collect();
        let mut updates = Vec::new();
        for inserted in store.insert(batch).await.unwrap() {
            let Inserted::New(pending) = inserted else {
                continue;
            };
            for (k, a) in pending.into_iter().enumerate() {
                let fails = k == 1 && a.id % 10 == 0;
                updates.push(Update::Attempt {
                    id: a.id,
                    attempt: attempt(1, !fails, &body),
                });
                updates.push(if fails {
                    Update::DeadLetter {
                        id: a.id,
                        attempts: 1,
                        error: "permanent failure: HTTP 422".into(),
                        status: Some(422),
                    }
                } else {
                    Update::Delivered {
                        id: a.id,
                        attempts: 1,
                        status: Some(200),
                    }
                });
            }
        }
        store.apply(updates).await.unwrap();
        stored += n;
    }
    first.unwrap()
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.db");
    let urls = ["http://127.0.0.1:9/hook", "http://127.0.0.1:10/hook"];
    let started = Instant::now();
    let store = SqliteStore::open(&path).unwrap();
    let event = fill(&store, events, urls).await;
    store.close().await;
    drop(store);
    eprintln!("stored {events} events in {:.1?}", started.elapsed());

    let toml = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"{}\"\n[[observers]]\nname = \"orders\"\nentity_type = \"Order\"\nevent_type = \"INSERT\"\n\
         [[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\n[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        path.display(),
        urls[0],
        urls[1]
    );
    let config = Config::parse(&toml).unwrap();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let executor = breakwater_dispatch::executor::default_executor().unwrap();
    let tokens = Tokens {
        admin: Some(TOKEN.into()),
        ..Tokens::default()
    };
    let svc = breakwater_dispatch::server::start_with_tokens(
        config,
        store,
        executor,
        "127.0.0.1:0".parse().unwrap(),
        tokens,
    )
    .await
    .unwrap();
    let base = format!("http://{}", svc.addr);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{base}/console/login"))
        .header("origin", &base)
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let failing = "http%3A%2F%2F127.0.0.1%3A10";
    let views = [
        ("endpoints", "/console".to_string()),
        ("endpoint", format!("/console/endpoints/{failing}")),
        ("events (newest)", "/console/events".to_string()),
        (
            "events (page 1000)",
            "/console/events?before=100000".to_string(),
        ),
        (
            "events by entity type and status",
            "/console/events?entity_type=Order&status=dead_lettered".to_string(),
        ),
        ("event", format!("/console/events/{event}")),
        (
            "dead letters (with count)",
            "/console/dead-letters".to_string(),
        ),
        (
            "dead letters of an endpoint",
            format!("/console/dead-letters?endpoint={failing}"),
        ),
        (
            "replay all: confirmation (count)",
            "/console/dead-letters/replay-all".to_string(),
        ),
        ("replay jobs", "/console/replays".to_string()),
        ("audit log", "/console/audit".to_string()),
    ];
    println!("{events} events, {} actions stored\n", events * 2);
    println!("| view | path | bytes | median ms | worst ms |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for (name, path) in views {
        let mut times = Vec::new();
        let mut bytes = 0;
        for i in 0..=FETCHES {
            let t = Instant::now();
            let r = client
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            bytes = r.bytes().await.unwrap().len();
            if i > 0 {
                times.push(t.elapsed());
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {name} | `{path}` | {bytes} | {:.1} | {:.1} |",
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap())
        );
        assert!(bytes <= 100 * 1024, "{path}: {bytes} bytes");
    }
    svc.shutdown(Duration::from_secs(5)).await;
}
