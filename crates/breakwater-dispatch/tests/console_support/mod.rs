//! What the console's tests share: tokens, a receiver whose answer can be
//! changed while it runs, the service started in-process, and a plain HTTP
//! client that logs in like a browser.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

pub mod browser;

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use breakwater_dispatch::config::Config;
use breakwater_dispatch::server::{self, Running};
use breakwater_dispatch::store::SqliteStore;
use uuid::Uuid;

pub const ADMIN: &str = "console-admin-token-0123456789";
pub const VIEWER: &str = "console-viewer-token-0123456789";

/// Sets the variables the configurations of [`toml`] name (the same values
/// in every test, so that tests running at once agree).
pub fn tokens() {
    std::env::set_var("BW_CONSOLE_ADMIN_TOKEN", ADMIN);
    std::env::set_var("BW_CONSOLE_VIEWER_TOKEN", VIEWER);
}

/// A webhook receiver on 127.0.0.1 answering `status` with `body`, both
/// changeable while it runs.
#[derive(Clone)]
pub struct Hook {
    pub url: String,
    pub endpoint: String,
    pub status: Arc<AtomicU16>,
    pub body: Arc<Mutex<String>>,
    pub hits: Arc<AtomicU64>,
    pub ok: Arc<AtomicU64>,
}

impl Hook {
    pub async fn start(status: u16, body: &str) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let body = Arc::new(Mutex::new(body.to_string()));
        let hits = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, b, h, o) = (status.clone(), body.clone(), hits.clone(), ok.clone());
        let app = Router::new().route(
            "/hook",
            post(move || {
                let (s, b, h, o) = (s.clone(), b.clone(), h.clone(), o.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let code = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                    if code.is_success() {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    let text = b.lock().unwrap().clone();
                    (code, [("content-type", "application/json")], text)
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
            body,
            hits,
            ok,
        }
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// A configuration with both console tokens, a quick breaker and quick
/// retries (`max_attempts`), and one observer (`Order` `INSERT`) calling
/// each of `urls`.
pub fn toml(store: &std::path::Path, urls: &[&str], max_attempts: u32, extra: &str) -> String {
    let mut s = format!(
        r#"listen = "127.0.0.1:0"
store = "{}"
admin_token_env = "BW_CONSOLE_ADMIN_TOKEN"
viewer_token_env = "BW_CONSOLE_VIEWER_TOKEN"
[circuit_breaker]
sample_size = 10
minimum_calls = 5
failure_threshold = 0.5
open_timeout_ms = 300
max_open_timeout_ms = 1000
half_open_max_requests = 2
[retry]
max_attempts = {max_attempts}
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
    tokens();
    let config = Config::parse(toml).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
    let executor = breakwater_dispatch::executor::default_executor().unwrap();
    server::start(config, store, executor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// An `Order` `INSERT` event.
pub fn event(id: Uuid) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "event_type": "INSERT",
        "entity_type": "Order",
        "entity_id": Uuid::new_v4(),
        "data": { "total": 42 },
        "timestamp": "2026-01-22T10:00:00Z",
    })
}

/// Posts `n` events; returns their ids.
pub async fn post_events(base: &str, n: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let body: Vec<_> = ids.iter().map(|id| event(*id)).collect();
    let r = reqwest::Client::new()
        .post(format!("{base}/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    ids
}

/// Waits (polling every 20 ms) until `f` holds; panics with `what` after
/// `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of the console that does what a browser would, by hand: no
/// redirects followed, the session cookie passed explicitly.
pub struct Web {
    pub base: String,
    pub client: reqwest::Client,
}

impl Web {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Logs in with `token`; returns the `Cookie` header value to send.
    pub async fn login(&self, token: &str) -> String {
        let r = self
            .post(
                "/console/login",
                None,
                Some(&self.base),
                &[("token", token)],
            )
            .await;
        assert_eq!(r.status(), 303, "login refused");
        let set = r.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send().await.unwrap()
    }
}
