//! Shared helpers: loopback receivers, a service started in-process, waits
//! with generous bounds on real I/O.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use breakwater_dispatch::config::Config;
use breakwater_dispatch::server::{self, Running};
use breakwater_dispatch::store::SqliteStore;
use uuid::Uuid;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub event_id: Option<Uuid>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

/// A webhook receiver on 127.0.0.1 whose answer can be changed while it runs.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub endpoint: String,
    /// The status answered; 0 means "flaky": 500 for ~40%, else 200.
    pub status: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU64>,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    pub started: Arc<AtomicU64>,
    pub finished: Arc<AtomicU64>,
}

impl Receiver {
    pub async fn start(status: u16) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let (s, d, h, st, fi) = (
            status.clone(),
            delay_ms.clone(),
            hits.clone(),
            started.clone(),
            finished.clone(),
        );
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let (s, d, h, st, fi) = (s.clone(), d.clone(), h.clone(), st.clone(), fi.clone());
                async move {
                    st.fetch_add(1, Ordering::SeqCst);
                    let delay = d.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let mut code = s.load(Ordering::SeqCst);
                    if code == 0 {
                        code = if rand::random::<f64>() < 0.4 {
                            500
                        } else {
                            200
                        };
                    }
                    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("id")?.as_str()?.parse().ok());
                    h.lock().unwrap().push(Hit {
                        event_id,
                        headers,
                        body,
                        answered: code,
                    });
                    fi.fetch_add(1, Ordering::SeqCst);
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/hook"),
            endpoint: format!("http://{addr}"),
            status,
            delay_ms,
            hits,
            started,
            finished,
        }
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// How many 2xx answers each event id got.
    pub fn delivered(&self) -> HashMap<Uuid, usize> {
        let mut out = HashMap::new();
        for h in self.hits.lock().unwrap().iter() {
            if (200..300).contains(&h.answered) {
                if let Some(id) = h.event_id {
                    *out.entry(id).or_default() += 1;
                }
            }
        }
        out
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// A configuration with one observer (`Order` `INSERT`) calling `urls`.
pub fn config_toml(store: &std::path::Path, urls: &[&str], extra: &str) -> String {
    let mut s = format!(
        r#"listen = "127.0.0.1:0"
store = "{}"
admin_token_env = "BW_TEST_ADMIN_TOKEN"
[circuit_breaker]
sample_size = 10
minimum_calls = 5
failure_threshold = 0.5
open_timeout_ms = 300
max_open_timeout_ms = 1000
half_open_max_requests = 2
[retry]
max_attempts = 30
backoff_ms = 20
max_backoff_ms = 200
{extra}
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
"#,
        store.display()
    );
    for u in urls {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{u}\"\n"
        ));
    }
    s
}

/// The service started in-process over a fresh store in `dir`.
pub async fn start(dir: &tempfile::TempDir, toml: &str) -> Running {
    let config = Config::parse(toml).unwrap();
    let store =
        Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap_or_else(|e| panic!("{e}")));
    let _ = &config.store;
    let executor = breakwater_dispatch::executor::default_executor().unwrap();
    server::start(config, store, executor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// An `Order` `INSERT` event as JSON, with `id` when given.
pub fn event(id: Option<Uuid>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "event_type": "INSERT",
        "entity_type": "Order",
        "entity_id": Uuid::new_v4(),
        "data": { "total": 42 },
        "timestamp": "2026-01-22T10:00:00Z",
    });
    if let Some(id) = id {
        v["id"] = serde_json::Value::String(id.to_string());
    }
    v
}

/// Waits (on real I/O, polling every 20 ms) until `f` holds; panics with
/// `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts `body` to `POST /events`.
pub async fn post_events(base: &str, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/events"))
        .json(body)
        .send()
        .await
        .unwrap()
}
