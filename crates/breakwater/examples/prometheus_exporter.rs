//! Serves breakwater's Prometheus metrics on loopback while driving a
//! registry of breakers through every state, so that every series (and every
//! dashboard panel and alert built on them) has live data.
//!
//! ```text
//! cargo run --example prometheus_exporter --features prometheus -- [OPTIONS]
//!
//!   --listen ADDR      where to serve (default 127.0.0.1:9898; loopback only)
//!   --duration SECS    exit after this long (default 120)
//!   --forever          run until killed (Ctrl-C), ignoring --duration
//! ```
//!
//! Endpoints (simulated in-process, nothing leaves the machine):
//!
//! | endpoint | behaviour | states it shows |
//! | --- | --- | --- |
//! | `http://stable:80` | always succeeds | Closed |
//! | `http://slow:80` | one call in three takes 60 ms (`slow_call_ms` 50) | Closed, slow calls |
//! | `http://recovering:80` | dead for 12 s in every 30 s | Open, HalfOpen, reopen with backoff, Closed |
//! | `http://flapping:80` | fails twice, recovers, again, every 1.5 s | many openings |
//! | `http://held:80` | always succeeds; held Open on request | Open while held |
//! | `http://new-N:80` | a new endpoint every 5 s | overflows: the registry is sized for the five above |
//!
//! Routes: `GET /metrics` (OpenMetrics text); `POST /control/open/{endpoint}`
//! holds an endpoint's breaker open, `POST /control/reset/{endpoint}`
//! returns it to normal (`{endpoint}` percent-encoded, e.g.
//! `http%3A%2F%2Fheld%3A80`). The first line printed is
//! `listening on ADDR`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use breakwater::prometheus::BreakerCollector;
use breakwater::RegistryLimits;
use breakwater::{CircuitBreakerConfig, PerEndpointCircuitBreaker};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

const STABLE: &str = "http://stable:80";
const SLOW: &str = "http://slow:80";
const RECOVERING: &str = "http://recovering:80";
const FLAPPING: &str = "http://flapping:80";
const HELD: &str = "http://held:80";

struct Options {
    listen: SocketAddr,
    duration: Option<Duration>,
}

fn options() -> Result<Options, String> {
    let mut listen: SocketAddr = "127.0.0.1:9898".parse().expect("a valid address");
    let mut duration = Some(Duration::from_secs(120));
    let mut forever = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().ok_or("--listen needs an address")?;
                listen = v
                    .parse()
                    .map_err(|e| format!("--listen: {v:?} is not an address: {e}"))?;
                if !listen.ip().is_loopback() {
                    return Err(format!("--listen: {listen} is not a loopback address"));
                }
            }
            "--duration" => {
                let v = args.next().ok_or("--duration needs a number of seconds")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|e| format!("--duration: {v:?} is not a number of seconds: {e}"))?;
                duration = Some(Duration::from_secs(secs));
            }
            "--forever" => forever = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Options {
        listen,
        duration: if forever { None } else { duration },
    })
}

struct App {
    registry: Registry,
    breakers: Arc<PerEndpointCircuitBreaker>,
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut text = String::new();
    match encode(&mut text, &app.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding failed: {e}"),
        ),
    }
}

async fn control(
    State(app): State<Arc<App>>,
    Path((action, endpoint)): Path<(String, String)>,
) -> impl IntoResponse {
    let Some(breaker) = app.breakers.get(&endpoint) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no breaker for {endpoint:?}\n"),
        );
    };
    match action.as_str() {
        "open" => breaker.force_open(),
        "reset" => breaker.reset(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("action: {action:?} is not one of open, reset\n"),
            )
        }
    }
    (StatusCode::OK, format!("{endpoint}: {}\n", breaker.state()))
}

/// Calls `endpoint` every `every`, with `outcome(n)` deciding whether the
/// n-th call succeeds and how long it takes.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn drive(
    breakers: Arc<PerEndpointCircuitBreaker>,
    endpoint: &'static str,
    every: Duration,
    outcome: impl Fn(u64) -> (bool, Duration),
) {
    // Holding the breaker keeps it retained, as a long-lived client would.
    let breaker = breakers.get_or_create(endpoint);
    let mut tick = tokio::time::interval(every);
    for n in 0.. {
        tick.tick().await;
        let (ok, takes) = outcome(n);
        let _ = breaker
            .call(|| async move {
                tokio::time::sleep(takes).await;
                if ok {
                    Ok(())
                } else {
                    Err("503 Service Unavailable")
                }
            })
            .await;
    }
}

#[tokio::main]
async fn main() {
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("prometheus_exporter: {e}");
            std::process::exit(2);
        }
    };

    let config = CircuitBreakerConfig {
        sample_size: 10,
        failure_threshold: 0.5,
        open_timeout_ms: 2_000,
        backoff_multiplier: 2.0,
        max_open_timeout_ms: 8_000,
        half_open_max_requests: 2,
        jitter_ratio: 0.1,
        ..Default::default()
    };
    // Sized for exactly the five long-lived endpoints, so that newcomers
    // overflow and `breakwater_registry_overflows_total` moves.
    let breakers = Arc::new(PerEndpointCircuitBreaker::with_limits(
        config.clone(),
        RegistryLimits {
            max_endpoints: 5,
            ..Default::default()
        },
    ));
    breakers
        .set_config(
            SLOW,
            CircuitBreakerConfig {
                slow_call_ms: Some(50),
                ..config.clone()
            },
        )
        .expect("a valid configuration");
    breakers
        .set_config(
            FLAPPING,
            CircuitBreakerConfig {
                sample_size: 2,
                open_timeout_ms: 300,
                half_open_max_requests: 1,
                backoff_multiplier: 1.0,
                max_open_timeout_ms: 300,
                ..config
            },
        )
        .expect("a valid configuration");

    let mut registry = Registry::default();
    registry.register_collector(Box::new(BreakerCollector::for_registry(breakers.clone())));
    let app = Arc::new(App {
        registry,
        breakers: breakers.clone(),
    });

    tokio::spawn(drive(breakers.clone(), STABLE, ms(50), |_| (true, ms(1))));
    tokio::spawn(drive(breakers.clone(), HELD, ms(100), |_| (true, ms(1))));
    tokio::spawn(drive(breakers.clone(), SLOW, ms(100), |n| {
        (true, if n % 3 == 0 { ms(60) } else { ms(5) })
    }));
    // 20 calls a second; dead for the first 12 s of every 30 s.
    tokio::spawn(drive(breakers.clone(), RECOVERING, ms(50), |n| {
        ((n % 600) >= 240, ms(2))
    }));
    // Two failures open it (a window of two); 300 ms later a success closes it.
    tokio::spawn(drive(breakers.clone(), FLAPPING, ms(250), |n| {
        (n % 6 >= 2, ms(1))
    }));
    let newcomers = breakers.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        for n in 0.. {
            tick.tick().await;
            let endpoint = format!("http://new-{n}:80");
            let _ = newcomers
                .call(&endpoint, || async { Ok::<_, &str>(()) })
                .await;
        }
    });

    let listener = match tokio::net::TcpListener::bind(opts.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("prometheus_exporter: cannot listen on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {addr}");

    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/control/{action}/{endpoint}", post(control))
        .with_state(app);
    let stop = async move {
        match opts.duration {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        eprintln!("prometheus_exporter: server failed: {e}");
        std::process::exit(1);
    }
}
