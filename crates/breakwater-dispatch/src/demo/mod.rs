//! `breakwater demo`: the whole pipeline on loopback.
//!
//! Three webhook receivers run in-process: a healthy one, a flaky one (about
//! 40% of requests answered 500) and a dead one (503 for the first half of
//! the run, then healthy). Events are posted at a steady rate to the real
//! `POST /events` of a real service over a temporary SQLite store; every
//! event asks for one action per receiver. A table shows each endpoint
//! every second, and a summary at the end says whether the dead endpoint's
//! breaker opened, deferred its actions, and delivered them all once the
//! receiver recovered.
//!
//! The service's console is open during the run: the demo makes a random
//! admin token and prints a URL that logs a browser in with it
//! (`/console/login?token=...`, which only the demo accepts: a token in a
//! URL ends up in browser histories, so `serve` never takes one), to watch
//! the dead endpoint's breaker open and its actions come through.
//!
//! `breakwater demo --fleet N` ([`fleet`]) shows the same receivers served
//! by a fleet of `serve` processes sharing a throwaway Postgres database,
//! one of them killed mid-run.

pub mod fleet;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use breakwater::traits::{ActionConfig, EventKind, WebhookAction};
use breakwater::{CircuitBreakerConfig, CircuitState};

use crate::config::{Config, DeliveryConfig, Observer, RetryConfig};
use crate::engine::BreakerView;
use crate::server;
use crate::store::SqliteStore;

/// Events posted per second.
const RATE: u64 = 20;
/// How long the demo waits, after the last event, for deliveries to finish.
const DRAIN: Duration = Duration::from_secs(20);

/// The demo's options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long events are generated.
    pub duration: Duration,
    /// Where the API (and `/metrics`) is served; a free port if it is taken.
    pub listen: SocketAddr,
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Healthy,
    Flaky,
    DeadUntil(Instant),
}

#[derive(Debug)]
struct Receiver {
    name: &'static str,
    url: String,
    endpoint: String,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

async fn receiver(name: &'static str, behaviour: Behaviour) -> anyhow::Result<Receiver> {
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let (ok2, refused2) = (ok.clone(), refused.clone());
    let app = Router::new().route(
        "/hook",
        post(move || {
            let (ok, refused) = (ok2.clone(), refused2.clone());
            async move {
                let fail = match behaviour {
                    Behaviour::Healthy => false,
                    Behaviour::Flaky => rand::random::<f64>() < 0.4,
                    Behaviour::DeadUntil(t) => Instant::now() < t,
                };
                if fail {
                    refused.fetch_add(1, Ordering::Relaxed);
                    if matches!(behaviour, Behaviour::Flaky) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://{addr}/hook");
    let endpoint = hook(&url).endpoint();
    Ok(Receiver {
        name,
        url,
        endpoint,
        ok,
        refused,
    })
}

fn hook(url: &str) -> ActionConfig {
    ActionConfig::Webhook(WebhookAction {
        url: url.to_string(),
        method: "POST".into(),
        headers: BTreeMap::new(),
        body_template: None,
        signing_secret: None,
    })
}

/// The demo's configuration: small windows and short openings so that the
/// dead endpoint's breaker visibly opens and recovers within the run; the
/// flaky endpoint gets a higher threshold (an override) so that 40% errors
/// are retried rather than tripping it.
fn demo_config(store: std::path::PathBuf, receivers: &[Receiver]) -> Config {
    let defaults = CircuitBreakerConfig {
        sample_size: 20,
        minimum_calls: Some(10),
        failure_threshold: 0.5,
        open_timeout_ms: 1_000,
        max_open_timeout_ms: 4_000,
        half_open_max_requests: 2,
        ..CircuitBreakerConfig::default()
    };
    let mut config = Config {
        store: crate::config::StoreLocation::Sqlite(store),
        retry: RetryConfig {
            max_attempts: 12,
            backoff_ms: 100,
            max_backoff_ms: 2_000,
        },
        delivery: DeliveryConfig {
            max_in_flight_per_endpoint: 16,
            ..DeliveryConfig::default()
        },
        ..Config::default()
    };
    config.circuit_breaker.defaults = defaults.clone();
    let flaky = &receivers[1];
    config.circuit_breaker.endpoints.insert(
        flaky.endpoint.clone(),
        CircuitBreakerConfig {
            failure_threshold: 0.8,
            ..defaults
        },
    );
    config.observers.push(Observer {
        name: "order-created".into(),
        entity_type: "Order".into(),
        event_type: EventKind::Insert,
        actions: receivers.iter().map(|r| hook(&r.url)).collect(),
    });
    config
}

fn state_name(v: &BreakerView) -> String {
    if v.disabled {
        "DISABLED".into()
    } else {
        v.state.to_uppercase()
    }
}

struct Table {
    tty: bool,
    printed: usize,
}

impl Table {
    fn show(&mut self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        if self.tty && self.printed > 0 {
            // Back to the top of the previous table and clear below.
            let _ = write!(out, "\x1b[{}A\x1b[J", self.printed);
        }
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        if !self.tty {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        self.printed = lines.len();
    }
}

fn render(
    started: Instant,
    total: Duration,
    generating: bool,
    accepted: u64,
    queue: usize,
    receivers: &[Receiver],
    views: &[BreakerView],
) -> Vec<String> {
    let elapsed = started.elapsed();
    let width = 30usize;
    let done =
        ((elapsed.as_secs_f64() / total.as_secs_f64()) * width as f64).min(width as f64) as usize;
    let phase = if generating { "generating" } else { "draining" };
    let mut lines = vec![format!(
        "[{}{}] {:>5.1}s/{}s {phase}: {accepted} events accepted, {queue} actions pending",
        "#".repeat(done),
        "-".repeat(width - done),
        elapsed.as_secs_f64(),
        total.as_secs(),
    )];
    lines.push(format!(
        "{:<8} {:<24} {:<9} {:>6} {:>9} {:>8} {:>8} {:>6}",
        "receiver", "endpoint", "state", "fail%", "delivered", "blocked", "deferred", "dead"
    ));
    for r in receivers {
        if let Some(v) = views.iter().find(|v| v.endpoint == r.endpoint) {
            lines.push(format!(
                "{:<8} {:<24} {:<9} {:>5.0}% {:>9} {:>8} {:>8} {:>6}",
                r.name,
                r.endpoint,
                state_name(v),
                v.failure_rate * 100.0,
                v.delivered,
                v.blocked,
                v.deferred,
                v.dead_lettered
            ));
        }
    }
    lines
}

/// Runs the demo; `true` when the summary shows what it should.
///
/// # Errors
///
/// When a receiver, the store or the service cannot start.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let recover_at = started + options.duration / 2;
    let receivers = vec![
        receiver("healthy", Behaviour::Healthy).await?,
        receiver("flaky", Behaviour::Flaky).await?,
        receiver("dead", Behaviour::DeadUntil(recover_at)).await?,
    ];
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let config = demo_config(dir.path().join("demo.db"), &receivers);
    let store = Arc::new(SqliteStore::open(
        config
            .store
            .sqlite()
            .context("the demo keeps its events in a SQLite file")?,
    )?);
    let executor = crate::executor::default_executor().map_err(|e| anyhow::anyhow!(e))?;
    // A taken --listen port falls back to a free one rather than failing the demo.
    let listen = match std::net::TcpListener::bind(options.listen) {
        Ok(probe) => {
            drop(probe);
            options.listen
        }
        Err(e) => {
            eprintln!(
                "cannot listen on {} ({e}); using a free port instead",
                options.listen
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    // The console's admin token: random, for this run only.
    let token: String = rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = crate::app::Tokens {
        admin: Some(token.clone()),
        ..crate::app::Tokens::default()
    };
    let running = server::start_with_tokens(config, store, executor, listen, tokens).await?;
    running.state.console().allow_url_login();
    let addr = running.addr;
    let tty = std::io::stdout().is_terminal();
    println!(
        "breakwater demo: metrics at http://{addr}/metrics, breakers at http://{addr}/breakers"
    );
    println!("  console  http://{addr}/console/login?token={token}");
    println!("           (open it in a browser: logged in as admin for this run)");
    for r in &receivers {
        let what = match r.name {
            "healthy" => "always 200".to_string(),
            "flaky" => "500 for ~40% of requests".to_string(),
            _ => format!(
                "503 for the first {}s, then 200",
                (options.duration / 2).as_secs()
            ),
        };
        println!("  {:<8} {}  {what}", r.name, r.url);
    }
    println!();

    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let generator = {
        let accepted = accepted.clone();
        let refused = refused.clone();
        let duration = options.duration;
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let url = format!("http://{addr}/events");
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
            let until = Instant::now() + duration;
            let mut n = 0u64;
            while Instant::now() < until {
                tick.tick().await;
                n += 1;
                let body = serde_json::json!({
                    "event_type": "INSERT",
                    "entity_type": "Order",
                    "entity_id": uuid::Uuid::new_v4(),
                    "data": { "order": n, "total_cents": 1000 + n },
                    "timestamp": chrono::Utc::now(),
                });
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let engine = running.state.engine.clone();
    let mut table = Table { tty, printed: 0 };
    let total = options.duration + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let drain_deadline = started + options.duration + DRAIN;
    loop {
        tick.tick().await;
        let generating = !generator.is_finished();
        table.show(&render(
            started,
            total,
            generating,
            accepted.load(Ordering::Relaxed),
            engine.held(),
            &receivers,
            &engine.breaker_views(),
        ));
        if !generating && (engine.held() == 0 || Instant::now() >= drain_deadline) {
            break;
        }
    }

    let views = engine.breaker_views();
    let accepted = accepted.load(Ordering::Relaxed);
    let view = |r: &Receiver| views.iter().find(|v| v.endpoint == r.endpoint).cloned();
    let breaker_opened = |r: &Receiver| {
        engine.breakers().get(&r.endpoint).map_or(0, |b| {
            let m = b.metrics();
            m.transitions_between(CircuitState::Closed, CircuitState::Open)
                + m.transitions_between(CircuitState::HalfOpen, CircuitState::Open)
        })
    };
    println!();
    println!(
        "summary after {:.1}s: {accepted} events accepted ({} refused), {} actions",
        started.elapsed().as_secs_f64(),
        refused.load(Ordering::Relaxed),
        accepted * 3
    );
    for r in &receivers {
        let v = view(r);
        let (delivered, deferred, retried, dead) = v.as_ref().map_or((0, 0, 0, 0), |v| {
            (v.delivered, v.deferred, v.retried, v.dead_lettered)
        });
        println!(
            "  {:<8} delivered {delivered}/{accepted}, breaker opened {} time(s), {deferred} deferral(s), {retried} retried, {dead} dead-lettered; receiver answered {} ok, {} errors",
            r.name,
            breaker_opened(r),
            r.ok.load(Ordering::Relaxed),
            r.refused.load(Ordering::Relaxed),
        );
    }
    let dead = &receivers[2];
    let dv = view(dead);
    let opened = breaker_opened(dead);
    let deferred = dv.as_ref().map_or(0, |v| v.deferred);
    let delivered = dv.as_ref().map_or(0, |v| v.delivered);
    let healthy = view(&receivers[0]).map_or(0, |v| v.delivered);
    println!(
        "dead endpoint: breaker opened {opened} time(s); {deferred} deferral(s) while open; {delivered}/{accepted} delivered after it recovered"
    );
    let ok =
        accepted > 0 && opened > 0 && deferred > 0 && delivered == accepted && healthy == accepted;
    println!(
        "RESULT: {}",
        if ok {
            "ok (the dead endpoint's breaker opened, its actions were deferred, then all were delivered; the healthy endpoint delivered everything)"
        } else {
            "FAILED (see the table above)"
        }
    );
    running.shutdown(Duration::from_secs(5)).await;
    drop(dir);
    Ok(ok)
}
