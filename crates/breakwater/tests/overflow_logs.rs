//! A full registry warns when new endpoints start sharing overflow breakers,
//! at most once per sweep period, with the cap and the overflow count.
//!
//! This test has a binary of its own: `tracing` caches per call site whether
//! anyone listens, and a call site first reached by another test's thread
//! while this test's scoped subscriber is being installed can be cached as
//! silent for good. Alone in its process, nothing else reaches the call sites.

use std::sync::Mutex;
use std::time::Duration;

use breakwater::{CircuitBreakerConfig, CircuitState, PerEndpointCircuitBreaker, RegistryLimits};
use tracing::Level;

mod support;

use support::logs::{Capture, Line};

/// The warnings about a full registry among the captured lines.
fn full_warnings(lines: &Mutex<Vec<Line>>) -> Vec<Line> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.get("overflows").is_some())
        .cloned()
        .collect()
}

#[test]
fn a_full_registry_warns_once_per_sweep_period() {
    let capture = Capture::default();
    let lines = capture.0.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    // A sweep period is a quarter of the idle TTL: 15 s.
    let limits = RegistryLimits {
        idle_ttl: Duration::from_secs(60),
        max_endpoints: 2,
        ..Default::default()
    };
    tracing::subscriber::with_default(capture, || {
        rt.block_on(async {
            let reg =
                PerEndpointCircuitBreaker::with_limits(CircuitBreakerConfig::default(), limits);
            for e in ["o1", "o2"] {
                reg.get_or_create(e).force_open();
            }
            assert!(full_warnings(&lines).is_empty(), "not full yet");

            // The first endpoint that finds no room warns at once.
            let shared = reg.get_or_create("new-1");
            assert_eq!(shared.state(), CircuitState::Closed);
            assert_eq!(reg.overflows(), 1);
            assert_eq!(full_warnings(&lines).len(), 1);

            // Later ones within the sweep period do not.
            reg.get_or_create("new-2");
            tokio::time::advance(Duration::from_millis(14_999)).await;
            reg.get_or_create("new-3");
            assert_eq!(reg.overflows(), 3);
            assert_eq!(full_warnings(&lines).len(), 1, "quiet for a period");

            // A period after the warning, the next one warns again, with
            // the count so far.
            tokio::time::advance(Duration::from_millis(1)).await;
            reg.get_or_create("new-4");
            reg.get_or_create("new-5");
            assert_eq!(reg.overflows(), 5);
            assert_eq!(reg.len(), 2);
        })
    });
    let warnings = full_warnings(&lines);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for (w, overflows) in warnings.iter().zip(["1", "4"]) {
        assert_eq!(w.level, Some(Level::WARN));
        assert_eq!(w.get("max_endpoints"), Some("2"));
        assert_eq!(w.get("overflows"), Some(overflows));
        assert!(
            w.get("message")
                .is_some_and(|m| m.contains("registry is full")),
            "{w:?}"
        );
    }
}
