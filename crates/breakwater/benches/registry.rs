//! The cost of going through a `PerEndpointCircuitBreaker`: `call` on an
//! existing endpoint of a registry holding 10 000 of them, next to a bare
//! `CircuitBreaker::call`, both on an immediately ready future polled once
//! with `now_or_never` (so no runtime cost is measured). Target: the
//! registry's call costs at most 1.3 times the bare one. Beside them, the
//! floor of any registry whose call keeps the breaker alive while it runs:
//! hashing and comparing the key and taking a reference count.
//!
//! `cargo bench -p breakwater --bench registry`

use std::hint::black_box;
use std::time::Duration;

use breakwater::PerEndpointCircuitBreaker;
use breakwater::{CircuitBreaker, CircuitBreakerConfig};
use criterion::Criterion;
use futures_util::FutureExt;

/// Endpoints in the registry (its default cap).
const ENDPOINTS: usize = 10_000;

/// A count window of 100 and a one-hour opening: nothing trips while measuring.
fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 100,
        open_timeout_ms: 3_600_000,
        max_open_timeout_ms: 3_600_000,
        ..Default::default()
    }
}

/// A realistic key: `scheme://host:port`, 38 bytes.
fn endpoint(i: usize) -> String {
    format!("https://svc-{i:06}.internal.example:8443")
}

fn registry_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_call");

    let bare = CircuitBreaker::new(config());
    group.bench_function("bare_breaker", |b| {
        b.iter(|| {
            let call = bare.call(|| async { Ok::<u64, ()>(black_box(1)) });
            black_box(call.now_or_never())
        })
    });

    let registry = PerEndpointCircuitBreaker::new(config());
    for i in 0..ENDPOINTS {
        registry.get_or_create(&endpoint(i));
    }
    assert_eq!(registry.len(), ENDPOINTS);
    let key = endpoint(ENDPOINTS / 2);
    group.bench_function("registry_10k", |b| {
        b.iter(|| {
            let call = registry.call(black_box(&key), || async { Ok::<u64, ()>(black_box(1)) });
            black_box(call.now_or_never())
        })
    });
    group.bench_function("registry_10k_lookup_only", |b| {
        b.iter(|| black_box(registry.get_or_create(black_box(&key))))
    });

    // The floor of any lookup that keeps the breaker alive through an
    // async call: hash the key (the registry's hasher), compare it with the
    // stored one, and take and drop a reference count. No map, no lock.
    let stored: Box<str> = key.clone().into_boxed_str();
    let held = std::sync::Arc::new(CircuitBreaker::new(config()));
    let hasher = foldhash::fast::RandomState::default();
    group.bench_function("floor_hash_compare_refcount", |b| {
        b.iter(|| {
            let k: &str = black_box(&key);
            let h = std::hash::BuildHasher::hash_one(&hasher, k);
            let same = k == &**black_box(&stored);
            let arc = std::sync::Arc::clone(black_box(&held));
            black_box((h, same, &arc));
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    registry_call(&mut c);
    c.final_summary();
}
