//! The tower layer's overhead over the bare service, side by side with
//! tower-resilience 0.13's circuit breaker layer.
//!
//! ```text
//! cargo bench -p breakwater --features tower --bench layer
//! ```
//!
//! Each iteration is one request through a `tower::service_fn` whose future
//! is ready at once: `ready()` then `call()`, each polled once with
//! `now_or_never`, so no runtime is measured. Groups:
//! - `layer_closed`: `bare` (the service alone), `breakwater`
//!   ([`CircuitBreakerLayer`], a Closed breaker), `tower-resilience` (its
//!   layer, Closed); the overhead of a layer is its time minus `bare`'s;
//! - `layer_per_key`: `bare` and breakwater's [`PerKeyCircuitBreakerLayer`]
//!   with a `&'static str` key (one registry lookup per request);
//! - `layer_open`: a rejection by a tripped breaker, both layers.
//!
//! After the run it prints each layer's overhead and breakwater's overhead
//! divided by tower-resilience's, from criterion's estimates.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use breakwater::layer::{CircuitBreakerLayer, PerKeyCircuitBreakerLayer};
use breakwater::PerEndpointCircuitBreaker;
use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use futures_util::FutureExt;
use tower::{Layer, Service, ServiceExt};

/// The error the inner service fails with when asked for [`FAIL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BenchErr;

impl std::fmt::Display for BenchErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bench error")
    }
}

impl std::error::Error for BenchErr {}

/// The request that makes the inner service fail.
const FAIL: u64 = u64::MAX;
/// Count window of the closed scenarios.
const WINDOW: usize = 100;
/// Count window (and minimum calls) of the open scenario.
const TRIP_WINDOW: usize = 10;
/// Open timeout: long enough never to end during a run.
const OPEN_FOR: Duration = Duration::from_secs(3600);

/// The bare service: an immediately ready future, failing on [`FAIL`].
fn inner(
) -> impl Service<u64, Response = u64, Error = BenchErr, Future: Send + 'static> + Clone + Send + 'static
{
    tower::service_fn(|req: u64| {
        std::future::ready(if req == FAIL { Err(BenchErr) } else { Ok(req) })
    })
}

fn config(window: usize) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 0.5,
        sample_size: window,
        minimum_calls: Some(window),
        open_timeout_ms: OPEN_FOR.as_millis() as u64,
        // The default cap (300 s) is below a one-hour opening.
        max_open_timeout_ms: OPEN_FOR.as_millis() as u64,
        ..Default::default()
    }
}

fn tower_resilience_layer(window: usize) -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(window)
        .minimum_number_of_calls(window)
        .wait_duration_in_open(OPEN_FOR)
        .build()
        .expect("valid tower-resilience config")
}

/// One request: `ready()` then `call()`, each polled once. `None` would mean
/// something was not ready at once (never here).
#[inline]
fn request<S: Service<u64>>(svc: &mut S, req: u64) -> Option<Result<S::Response, S::Error>> {
    match svc.ready().now_or_never()? {
        Ok(ready) => ready.call(req).now_or_never(),
        Err(e) => Some(Err(e)),
    }
}

fn trip<S: Service<u64>>(svc: &mut S) {
    for _ in 0..TRIP_WINDOW {
        let _ = request(svc, FAIL);
    }
}

fn layer_closed(g: &mut BenchmarkGroup<'_, WallTime>) {
    let mut bare = inner();
    g.bench_function("bare", |b| b.iter(|| request(black_box(&mut bare), 1)));

    let breaker = Arc::new(CircuitBreaker::new(config(WINDOW)));
    let mut ours = CircuitBreakerLayer::new(breaker.clone()).layer(inner());
    g.bench_function("breakwater", |b| {
        b.iter(|| request(black_box(&mut ours), 1))
    });
    assert_eq!(breaker.state(), CircuitState::Closed);

    let mut theirs = tower_resilience_layer(WINDOW).layer(inner());
    g.bench_function("tower-resilience", |b| {
        b.iter(|| request(black_box(&mut theirs), 1))
    });
    assert_eq!(
        theirs.state_sync(),
        tower_resilience::circuitbreaker::CircuitState::Closed
    );
}

fn layer_per_key(g: &mut BenchmarkGroup<'_, WallTime>) {
    let mut bare = inner();
    g.bench_function("bare", |b| b.iter(|| request(black_box(&mut bare), 1)));

    let breakers = Arc::new(PerEndpointCircuitBreaker::new(config(WINDOW)));
    let mut ours = PerKeyCircuitBreakerLayer::new(breakers.clone(), |_: &u64| "api.example:443")
        .layer(inner());
    g.bench_function("breakwater", |b| {
        b.iter(|| request(black_box(&mut ours), 1))
    });
    assert_eq!(
        breakers.get_or_create("api.example:443").state(),
        CircuitState::Closed
    );
}

fn layer_open(g: &mut BenchmarkGroup<'_, WallTime>) {
    let breaker = Arc::new(CircuitBreaker::new(config(TRIP_WINDOW)));
    let mut ours = CircuitBreakerLayer::new(breaker.clone()).layer(inner());
    trip(&mut ours);
    assert_eq!(breaker.state(), CircuitState::Open);
    g.bench_function("breakwater", |b| {
        b.iter(|| {
            let r = request(black_box(&mut ours), 1);
            debug_assert!(matches!(r, Some(Err(_))));
            r
        })
    });

    let mut theirs = tower_resilience_layer(TRIP_WINDOW).layer(inner());
    trip(&mut theirs);
    assert_eq!(
        theirs.state_sync(),
        tower_resilience::circuitbreaker::CircuitState::Open
    );
    g.bench_function("tower-resilience", |b| {
        b.iter(|| {
            let r = request(black_box(&mut theirs), 1);
            debug_assert!(matches!(r, Some(Err(_))));
            r
        })
    });
}

/// Where criterion writes its estimates: `$CARGO_TARGET_DIR/criterion`, else
/// `<target>/criterion` next to this binary's `<target>/<profile>/deps`.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median, in nanoseconds, criterion measured for `group/function`.
fn median_ns(dir: &std::path::Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints each layer's overhead over `bare`, and breakwater's overhead over
/// tower-resilience's.
fn report() {
    // Only `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // benchmark once and measures nothing.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let Some(dir) = criterion_dir() else { return };
    let get = |group, function| median_ns(&dir, group, function);
    println!("\noverhead over the bare service (criterion medians):");
    for group in ["layer_closed", "layer_per_key"] {
        let Some(bare) = get(group, "bare") else {
            continue;
        };
        let ours = get(group, "breakwater").map(|t| t - bare);
        let theirs = get(group, "tower-resilience").map(|t| t - bare);
        let show = |o: Option<f64>| o.map_or_else(|| "-".to_owned(), |o| format!("{o:.2} ns"));
        println!(
            "  {group}: bare {bare:.2} ns, breakwater +{}, tower-resilience +{}",
            show(ours),
            show(theirs)
        );
        if let (Some(ours), Some(theirs)) = (ours, theirs) {
            println!(
                "  {group}: breakwater overhead / tower-resilience overhead = {:.3} (target <= 0.3)",
                ours / theirs
            );
        }
    }
    if let (Some(ours), Some(theirs)) = (
        get("layer_open", "breakwater"),
        get("layer_open", "tower-resilience"),
    ) {
        println!(
            "  layer_open: breakwater {ours:.2} ns, tower-resilience {theirs:.2} ns, ratio {:.3}",
            ours / theirs
        );
    }
}

/// One criterion group's benchmarks.
type Scenario = fn(&mut BenchmarkGroup<'_, WallTime>);

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    let scenarios: [(&str, Scenario); 3] = [
        ("layer_closed", layer_closed),
        ("layer_per_key", layer_per_key),
        ("layer_open", layer_open),
    ];
    for (name, scenario) in scenarios {
        let mut group = c.benchmark_group(name);
        scenario(&mut group);
        group.finish();
    }
    c.final_summary();
    report();
}
