//! The attempt history and replay API, end to end: the service in-process
//! over a SQLite store, receivers on 127.0.0.1, real HTTP. Every wait polls
//! with a bounded deadline. The helpers are here, the tests in
//! `tests/history_api/`, one file per area.

mod support;

// The tests' files are under `tests/history_api/`, not test targets of their own.
#[path = "history_api/access.rs"]
mod access;
#[path = "history_api/attempts.rs"]
mod attempts;
#[path = "history_api/listing.rs"]
mod listing;
#[path = "history_api/replays.rs"]
mod replays;

use std::future::Future;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use breakwater_dispatch::server::Running;
use serde_json::{json, Value};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(60);
const ADMIN: &str = "history-admin-token";
const VIEWER: &str = "history-viewer-token";

/// The tokens' variables, set for every test of this binary alike.
fn tokens() {
    std::env::set_var("BW_HISTORY_ADMIN", ADMIN);
    std::env::set_var("BW_HISTORY_VIEWER", VIEWER);
}

/// A receiver on its own port (its own endpoint): answers `status` (after
/// `fail_first` answers of 503), with `Set-Cookie: s=abc`, and a body that
/// echoes the request's `Authorization`, then `pad` bytes of `x`.
#[derive(Clone)]
struct Hook {
    url: String,
    endpoint: String,
    status: Arc<AtomicU16>,
    fail_first: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
}

impl Hook {
    async fn start(status: u16, pad: usize) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let fail_first = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, f, k) = (status.clone(), fail_first.clone(), ok.clone());
        let app = Router::new().fallback(move |headers: HeaderMap| {
            let (s, f, k) = (s.clone(), f.clone(), k.clone());
            async move {
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let code = if failing {
                    503
                } else {
                    s.load(Ordering::SeqCst)
                };
                if (200..300).contains(&code) {
                    k.fetch_add(1, Ordering::SeqCst);
                }
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = format!("you sent {auth}.{}", "x".repeat(pad));
                (
                    StatusCode::from_u16(code).unwrap(),
                    [("set-cookie", "s=abc; HttpOnly")],
                    body,
                )
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/hook"),
            endpoint: format!("http://{addr}"),
            status,
            fail_first,
            ok,
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// A configuration: observer `orders` (Order INSERT) calls `orders`, with
/// `Authorization: Bearer xyz`; observer `invoices` (Invoice UPDATE) calls
/// `invoices`.
fn config(dir: &tempfile::TempDir, orders: &[&Hook], invoices: &[&Hook], extra: &str) -> String {
    let mut s = format!(
        r#"listen = "127.0.0.1:0"
store = "{}"
admin_token_env = "BW_HISTORY_ADMIN"
viewer_token_env = "BW_HISTORY_VIEWER"
[circuit_breaker]
sample_size = 10
minimum_calls = 5
failure_threshold = 0.9
open_timeout_ms = 300
[retry]
max_attempts = 5
backoff_ms = 20
max_backoff_ms = 100
{extra}
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
"#,
        dir.path().join("t.db").display()
    );
    for h in orders {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer xyz\" }}\n",
            h.url
        ));
    }
    s.push_str(
        "[[observers]]\nname = \"invoices\"\nentity_type = \"Invoice\"\nevent_type = \"UPDATE\"\n",
    );
    for h in invoices {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            h.url
        ));
    }
    s
}

async fn start(dir: &tempfile::TempDir, toml: &str) -> (Running, String) {
    tokens();
    let svc = support::start(dir, toml).await;
    let base = format!("http://{}", svc.addr);
    (svc, base)
}

fn event(entity_type: &str, kind: &str) -> Value {
    json!({
        "id": Uuid::new_v4(),
        "event_type": kind,
        "entity_type": entity_type,
        "entity_id": Uuid::new_v4(),
        "data": {"total": 42},
    })
}

/// Posts `events` in one request; returns their ids.
async fn post(base: &str, events: Vec<Value>) -> Vec<Uuid> {
    let ids = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let r = support::post_events(base, &Value::Array(events)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    ids
}

/// A request with `token` (none when empty).
fn with(token: &str, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if token.is_empty() {
        r
    } else {
        r.bearer_auth(token)
    }
}

async fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    let r = with(token, reqwest::Client::new().get(format!("{base}{path}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn send(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let r = match method {
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("{other}"),
    };
    let r = match body {
        Some(b) => r.json(&b),
        None => r,
    };
    let r = with(token, r).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `f` every 20 ms until it gives a value; panics with `what` after
/// `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every action matching `query`, all pages of `limit` read.
async fn all_actions(base: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let sep = if query.is_empty() { "" } else { "&" };
        let (s, page) = get(
            base,
            &format!("/actions?limit=500{sep}{query}{before}"),
            VIEWER,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        out.extend(page["actions"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => return out,
        }
    }
}

/// The count a dry run of a replay (or purge, with `what`) answers.
async fn dry_run(base: &str, what: &str, filter: Value) -> u64 {
    let (s, body) = send(
        base,
        "POST",
        &format!("/actions/{what}"),
        ADMIN,
        Some(json!({"filter": filter, "dry_run": true})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["count"].as_u64().unwrap()
}
