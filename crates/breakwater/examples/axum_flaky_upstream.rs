//! An axum service that calls a flaky upstream on loopback through reqwest,
//! protected two ways:
//!
//! * `/direct/{item}`: a `reqwest::Client` used as a tower service behind a
//!   `CircuitBreakerLayer` that classifies by status (`HttpStatus`); while
//!   that breaker is open the service answers `503` with `Retry-After`
//!   (`error_response`) without calling the upstream;
//! * `/quote/{item}`: a `PerEndpointCircuitBreaker` registry (one breaker per
//!   upstream host) with a `ResilientExecutor` that retries once and answers
//!   from a fallback while the upstream's breaker is open, saying which
//!   answers were live.
//!
//! The upstream fails (`503`) from 0.25 s to 1 s after it starts and is
//! healthy before and after. A driver sends 60 requests (bounded, 40 ms apart), prints what
//! it got, then what the breakers did, and the program exits.
//!
//! Run it with
//! `cargo run -p breakwater --example axum_flaky_upstream --features tower,reqwest`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use breakwater::layer::{error_response, CircuitBreakerLayer, CircuitBreakerService, HttpStatus};
use breakwater::{
    CircuitBreaker, CircuitBreakerConfig, CircuitError, Fallback, Outcome,
    PerEndpointCircuitBreaker, ResilientExecutor, Retry,
};
use tower::{Layer, ServiceExt};

/// Quick to open and to probe again, so that the run shows a whole cycle.
fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 4,
        failure_threshold: 0.5,
        open_timeout_ms: 400,
        half_open_max_requests: 2,
        jitter_ratio: 0.0,
        call_timeout_ms: Some(2_000),
        ..Default::default()
    }
}

/// The flaky upstream's state: when it started, and what it served.
struct Upstream {
    started: Instant,
    hits: AtomicU32,
}

/// The flaky upstream: `503` from 0.25 s to 1 s after it started, `200`
/// before and after.
async fn upstream(State(up): State<Arc<Upstream>>, Path(item): Path<String>) -> Response {
    up.hits.fetch_add(1, Ordering::SeqCst);
    let age = up.started.elapsed();
    if (Duration::from_millis(250)..Duration::from_secs(1)).contains(&age) {
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response()
    } else {
        format!("{item}: 42.00").into_response()
    }
}

#[derive(Clone)]
struct App {
    upstream: String,
    /// The client behind the layer (`/direct`).
    guarded: CircuitBreakerService<reqwest::Client, HttpStatus>,
    client: reqwest::Client,
    /// One breaker per upstream host, retry and fallback (`/quote`).
    executor: Arc<ResilientExecutor<String, Arc<PerEndpointCircuitBreaker>>>,
}

/// Why a quote failed: the upstream answered with an error status, or
/// could not be reached.
#[derive(Debug)]
enum QuoteError {
    Status(StatusCode),
    Transport(reqwest::Error),
}

impl std::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "upstream answered {s}"),
            Self::Transport(e) => write!(f, "upstream unreachable: {e}"),
        }
    }
}

async fn direct(State(app): State<App>, Path(item): Path<String>) -> Response {
    let req = match app
        .client
        .get(format!("{}/price/{item}", app.upstream))
        .build()
    {
        Ok(req) => req,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    match app.guarded.clone().oneshot(req).await {
        Ok(res) => {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            (status, body).into_response()
        }
        // A rejection (or a timeout): 503 with Retry-After.
        Err(err) => error_response(&err).into_response(),
    }
}

async fn quote(State(app): State<App>, Path(item): Path<String>) -> Response {
    let url = format!("{}/price/{item}", app.upstream);
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let classify = |e: &QuoteError| match e {
        QuoteError::Status(s) if s.is_client_error() => Retry::Permanent,
        _ => Retry::Transient,
    };
    let outcome = app
        .executor
        .execute_on_outcome(&host, classify, || async {
            let res = app
                .client
                .get(&url)
                .send()
                .await
                .map_err(QuoteError::Transport)?;
            if !res.status().is_success() {
                return Err(QuoteError::Status(res.status()));
            }
            res.text().await.map_err(QuoteError::Transport)
        })
        .await;
    match outcome {
        Ok(Outcome::Live(body)) => format!("live {body}").into_response(),
        Ok(Outcome::Fallback { value, .. }) => format!("fallback {value}").into_response(),
        Err(CircuitError::Inner(e)) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        Err(other) => (StatusCode::SERVICE_UNAVAILABLE, other.to_string()).into_response(),
    }
}

async fn serve(router: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{addr}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let up = Arc::new(Upstream {
        started: Instant::now(),
        hits: AtomicU32::new(0),
    });
    let upstream_url = serve(
        Router::new()
            .route("/price/{item}", get(upstream))
            .with_state(up.clone()),
    )
    .await?;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let layer_breaker = Arc::new(CircuitBreaker::new(config()));
    layer_breaker.add_listener(|t: &breakwater::Transition| {
        println!("    [layer breaker] {:?} -> {:?}", t.from, t.to);
    });
    let registry = Arc::new(PerEndpointCircuitBreaker::new(config()));
    registry.add_listener(|t: &breakwater::Transition| {
        let host = t.name().unwrap_or("?");
        println!("    [registry breaker {host}] {:?} -> {:?}", t.from, t.to);
    });
    let executor =
        ResilientExecutor::per_endpoint_retrying(registry.clone(), 2, Duration::from_millis(20))
            .with_fallback(Fallback::on_open_with(|| "cached 41.50".to_owned()));
    let app = App {
        upstream: upstream_url,
        guarded: CircuitBreakerLayer::new(layer_breaker.clone())
            .classify(HttpStatus)
            .layer(client.clone()),
        client: client.clone(),
        executor: Arc::new(executor),
    };
    let service_url = serve(
        Router::new()
            .route("/direct/{item}", get(direct))
            .route("/quote/{item}", get(quote))
            .with_state(app.clone()),
    )
    .await?;

    for i in 0..60 {
        let path = if i % 2 == 0 { "direct" } else { "quote" };
        let res = client
            .get(format!("{service_url}/{path}/tea"))
            .send()
            .await?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (Retry-After: {v})"))
            .unwrap_or_default();
        let body = res.text().await?;
        println!("{i:2} /{path:<6} {status}{retry_after} {}", body.trim());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    println!(
        "\nupstream served {} requests",
        up.hits.load(Ordering::SeqCst)
    );
    let m = layer_breaker.metrics();
    println!(
        "layer breaker: {:?}, {} calls ran, {} refused, {} failures, {} probes",
        m.state, m.allowed, m.blocked, m.failures, m.half_open_tests
    );
    for stats in registry.statistics() {
        let m = &stats.metrics;
        println!(
            "registry breaker {}: {:?}, {} calls ran, {} refused, {} failures, {} probes",
            stats.endpoint, m.state, m.allowed, m.blocked, m.failures, m.half_open_tests
        );
    }
    let e = app.executor.metrics();
    println!(
        "executor: {} live, {} fallbacks, {} errors, {} retries",
        e.successes, e.fallbacks, e.errors, e.retries
    );
    Ok(())
}
