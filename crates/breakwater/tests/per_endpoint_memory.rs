//! Memory of the per-endpoint registry, counted by dhat's global allocator.
//!
//! A `#[global_allocator]` applies to the whole test binary, so this file
//! holds one test and nothing else. Figures are heap bytes requested (the
//! allocator's own rounding and headers come on top) and are printed; run
//! with `--nocapture` to see them.

use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use breakwater::{PerEndpointCircuitBreaker, RegistryLimits};
use futures_util::FutureExt;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Endpoints to measure the cost of one idle endpoint with.
const SAMPLE: usize = 10_000;
/// Distinct endpoints pushed through a registry with the default limits.
const DISTINCT: usize = 100_000;
/// Endpoints kept open while the others churn.
const OPEN: usize = 100;

fn heap() -> usize {
    dhat::HeapStats::get().curr_bytes
}

/// A realistic key: `scheme://host:port`, 38 bytes.
fn endpoint(i: usize) -> String {
    format!("https://svc-{i:06}.internal.example:8443")
}

fn call_ok(reg: &PerEndpointCircuitBreaker, endpoint: &str) {
    let call = reg.call(endpoint, || async { Ok::<_, ()>(()) });
    call.now_or_never().expect("ready").expect("closed");
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded_with_unbounded_distinct_endpoints() {
    let _profiler = dhat::Profiler::builder()
        .testing()
        .trim_backtraces(Some(4))
        .build();
    let config = CircuitBreakerConfig::default();

    // What one breaker costs on its own, for comparison.
    let mut alone = Vec::with_capacity(SAMPLE);
    let before = heap();
    for _ in 0..SAMPLE {
        alone.push(std::sync::Arc::new(CircuitBreaker::new(config.clone())));
    }
    let per_breaker = (heap() - before) / SAMPLE;
    drop(alone);

    // One idle endpoint: its breaker, its key and its share of the map.
    let roomy = RegistryLimits {
        max_endpoints: 1_000_000,
        ..Default::default()
    };
    let reg = PerEndpointCircuitBreaker::with_limits(config.clone(), roomy);
    let before = heap();
    for i in 0..SAMPLE {
        call_ok(&reg, &endpoint(i));
    }
    assert_eq!(reg.len(), SAMPLE);
    let per_endpoint = (heap() - before) / SAMPLE;
    drop(reg);
    println!(
        "bytes per idle endpoint: {per_endpoint} (a breaker built on its own, \
         with its own copy of the configuration: {per_breaker})"
    );
    // The SPEC's target: at most 1 KiB per idle endpoint, everything counted
    // (breaker, key, slot, the map's share).
    assert!(
        per_endpoint <= 1024,
        "{per_endpoint} bytes per idle endpoint"
    );

    // 100 000 distinct endpoints through a registry with the default
    // limits (10 000 breakers, 10 minutes), while 100 endpoints stay open.
    let limits = RegistryLimits::default();
    let open_long = CircuitBreakerConfig {
        sample_size: 1,
        open_timeout_ms: 3_600_000,
        max_open_timeout_ms: 3_600_000,
        ..config.clone()
    };
    let base = heap();
    let reg = PerEndpointCircuitBreaker::with_limits(config.clone(), limits);
    for i in 0..OPEN {
        let name = format!("open-{i}");
        reg.set_config(&name, open_long.clone()).unwrap();
        let failed = reg.call(&name, || async { Err::<(), _>("down") });
        assert!(failed.now_or_never().unwrap().is_err());
        assert_eq!(reg.get_or_create(&name).state(), CircuitState::Open);
    }
    let mut peak = 0;
    for i in 0..DISTINCT {
        call_ok(&reg, &endpoint(i));
        if i % 1_000 == 999 {
            assert!(reg.len() <= limits.max_endpoints);
            peak = peak.max(heap() - base);
        }
    }
    let full = heap() - base;
    println!(
        "after {DISTINCT} distinct endpoints: {} retained, {full} bytes \
         ({} per retained breaker), peak {peak} bytes, {} overflows",
        reg.len(),
        full / reg.len(),
        reg.overflows()
    );
    // Room is made in batches, down to 15/16 of the cap.
    let cap = limits.max_endpoints;
    assert!((cap - cap / 16..=cap).contains(&reg.len()), "the cap holds");
    assert_eq!(reg.overflows(), 0, "closed breakers made room");
    let bound = limits.max_endpoints * (per_endpoint + 256);
    assert!(peak <= bound, "peak {peak} bytes > {bound}");
    for i in 0..OPEN {
        let name = format!("open-{i}");
        assert_eq!(
            reg.statistics_for(&name).map(|s| s.metrics.state),
            Some(CircuitState::Open),
            "{name} kept"
        );
    }

    // Ten idle minutes later, only the open breakers are left.
    tokio::time::advance(limits.idle_ttl + Duration::from_secs(1)).await;
    let evicted = reg.evict_idle();
    let idle = heap() - base;
    println!(
        "after the idle TTL: evicted {evicted}, {} retained, {idle} bytes",
        reg.len()
    );
    assert_eq!(reg.len(), OPEN);
    assert!(
        idle <= OPEN * 4 * 1024 + 64 * 1024,
        "{idle} bytes left for {OPEN} open breakers"
    );
    assert!(reg
        .get_all_states()
        .iter()
        .all(|(e, s)| e.starts_with("open-") && *s == CircuitState::Open));
}
