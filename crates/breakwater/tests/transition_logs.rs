//! Transitions are logged (open at warn, the others at info) with endpoint,
//! from, to, failure rate and retry-after; calls are not.
//!
//! This test has a binary of its own: `tracing` caches per call site whether
//! anyone listens, and a call site first reached by another test's thread
//! while this test's scoped subscriber is being installed can be cached as
//! silent for good. Alone in its process, nothing else reaches the call sites.

use std::time::Duration;

use breakwater::{CircuitBreakerConfig, CircuitState, PerEndpointCircuitBreaker};
use tracing::Level;

mod support;

use support::logs::Capture;

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 2,
        open_timeout_ms: 1_000,
        half_open_max_requests: 1,
        jitter_ratio: 0.0,
        ..Default::default()
    }
}

#[test]
fn transitions_are_logged_and_calls_are_not() {
    let capture = Capture::default();
    let lines = capture.0.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture, || {
        rt.block_on(async {
            let reg = PerEndpointCircuitBreaker::new(config());
            let b = reg.get_or_create("http://flaky:80");
            for _ in 0..100 {
                b.try_acquire().unwrap().success();
            }
            assert!(lines.lock().unwrap().is_empty(), "calls were logged");
            // [success, failure]: 50% of the window opens it.
            b.try_acquire().unwrap().failure();
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(b.state(), CircuitState::HalfOpen);
            b.try_acquire().unwrap().success();
        })
    });
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let (open, half, closed) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(open.level, Some(Level::WARN));
    assert_eq!(open.get("endpoint"), Some("http://flaky:80"));
    assert_eq!(open.get("from"), Some("closed"));
    assert_eq!(open.get("to"), Some("open"));
    assert_eq!(open.get("failure_rate"), Some("0.5"));
    assert_eq!(open.get("retry_after"), Some("Some(1s)"));
    assert_eq!(half.level, Some(Level::INFO));
    assert_eq!(
        (half.get("from"), half.get("to")),
        (Some("open"), Some("half_open"))
    );
    assert_eq!(closed.level, Some(Level::INFO));
    assert_eq!(closed.get("to"), Some("closed"));
    assert_eq!(closed.get("endpoint"), Some("http://flaky:80"));
}
