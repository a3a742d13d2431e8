//! What metrics cost.
//!
//! * `call`: a Closed call (`call` on a ready future, polled once with
//!   `now_or_never`) on a breaker nobody collects, next to the same call on
//!   a breaker registered with a `BreakerCollector` that has been scraped.
//!   Target: the same cost (the collector reads at scrape time only).
//! * `scrape_10k`: encoding a `BreakerCollector` over a registry of 10 000
//!   endpoints, next to prometheus-client encoding the same number of plain
//!   series (the same families, label sets and histogram buckets, held in
//!   prometheus-client's own `Family`s). Target: at most 1.5 times.
//!
//! `cargo bench -p breakwater --features prometheus --bench metrics -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use breakwater::prometheus::BreakerCollector;
use breakwater::PerEndpointCircuitBreaker;
use breakwater::{CircuitBreaker, CircuitBreakerConfig};
use criterion::Criterion;
use futures_util::FutureExt;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const ENDPOINTS: usize = 10_000;

/// The open-duration buckets the collector exports.
const BOUNDS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 100,
        open_timeout_ms: 3_600_000,
        max_open_timeout_ms: 3_600_000,
        ..Default::default()
    }
}

fn endpoint(i: usize) -> String {
    format!("https://svc-{i:06}.internal.example:8443")
}

fn call(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");
    let bare = CircuitBreaker::new(config());
    group.bench_function("no_collector", |b| {
        b.iter(|| {
            let call = bare.call(|| async { Ok::<u64, ()>(black_box(1)) });
            black_box(call.now_or_never())
        })
    });

    let collected = Arc::new(CircuitBreaker::new(config()));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BreakerCollector::for_breaker(
        "collected",
        collected.clone(),
    )));
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(text.contains("breakwater_circuit_state{endpoint=\"collected\"} 0"));
    group.bench_function("collector_registered", |b| {
        b.iter(|| {
            let call = collected.call(|| async { Ok::<u64, ()>(black_box(1)) });
            black_box(call.now_or_never())
        })
    });
    group.finish();
}

type Labels = Vec<(&'static str, String)>;

/// prometheus-client's own metrics holding what the collector exports for
/// `ENDPOINTS` endpoints.
fn plain_registry() -> Registry {
    let mut r = Registry::default();
    let state = Family::<Labels, Gauge>::default();
    let changes = Family::<Labels, Counter>::default();
    let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
        Histogram::new(BOUNDS.iter().copied())
    });
    let counters: Vec<Family<Labels, Counter>> = (0..6).map(|_| Family::default()).collect();
    let gauges: Vec<Family<Labels, Gauge<f64, AtomicU64>>> =
        (0..4).map(|_| Family::default()).collect();
    for i in 0..ENDPOINTS {
        let e = endpoint(i);
        let labels = vec![("endpoint", e.clone())];
        state.get_or_create(&labels).set(0);
        for (from, to) in [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
            ("half_open", "open"),
            // The reset after each opening.
            ("open", "closed"),
        ] {
            let l = vec![
                ("endpoint", e.clone()),
                ("from", from.to_string()),
                ("to", to.to_string()),
            ];
            changes.get_or_create(&l).inc_by(1);
        }
        durations.get_or_create(&labels).observe(2.0);
        for c in &counters {
            c.get_or_create(&labels).inc_by(100);
        }
        for g in &gauges {
            g.get_or_create(&labels).set(12.5);
        }
    }
    // The collector's names, so that both expositions have the same size.
    r.register("breakwater_circuit_state", "State.", state);
    r.register("breakwater_circuit_state_changes", "Transitions.", changes);
    r.register(
        "breakwater_circuit_open_duration_seconds",
        "Openings.",
        durations,
    );
    let counter_names = [
        "requests",
        "requests_allowed",
        "requests_blocked",
        "half_open_tests",
        "failures",
        "slow_calls",
    ];
    for (name, c) in counter_names.iter().zip(counters) {
        r.register(format!("breakwater_circuit_{name}"), "A counter.", c);
    }
    let gauge_names = [
        "success_rate_percent",
        "failure_rate_percent",
        "failure_threshold_percent",
        "last_state_change_timestamp_seconds",
    ];
    for (name, g) in gauge_names.iter().zip(gauges) {
        r.register(format!("breakwater_circuit_{name}"), "A gauge.", g);
    }
    r
}

fn scrape(c: &mut Criterion) {
    let breakers = Arc::new(PerEndpointCircuitBreaker::new(config()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..ENDPOINTS {
            let b = breakers.get_or_create(&endpoint(i));
            for _ in 0..100 {
                b.try_acquire().unwrap().success();
            }
            // One opening each, so that every series (the last change's
            // timestamp too) is there.
            b.force_open();
            b.reset();
        }
    });
    let mut collected = Registry::default();
    collected.register_collector(Box::new(
        BreakerCollector::builder()
            .max_endpoints(ENDPOINTS)
            .registry(breakers.clone())
            .build()
            .unwrap(),
    ));
    let plain = plain_registry();

    let lines = |r: &Registry| {
        let mut text = String::new();
        encode(&mut text, r).unwrap();
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    let (ours, theirs) = (lines(&collected), lines(&plain));
    // The collector also exports the registry's two series.
    assert_eq!(
        ours,
        theirs + 2,
        "the two expositions should be the same size"
    );
    println!("scrape_10k: {ours} samples from the collector, {theirs} plain");

    let mut group = c.benchmark_group("scrape_10k");
    group.sample_size(10);
    group.bench_function("collector", |b| {
        let mut text = String::with_capacity(8 << 20);
        b.iter(|| {
            text.clear();
            encode(&mut text, &collected).unwrap();
            black_box(text.len())
        })
    });
    group.bench_function("prometheus_client_plain", |b| {
        let mut text = String::with_capacity(8 << 20);
        b.iter(|| {
            text.clear();
            encode(&mut text, &plain).unwrap();
            black_box(text.len())
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    call(&mut c);
    scrape(&mut c);
    c.final_summary();
}
