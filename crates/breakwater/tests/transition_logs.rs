//! Transitions are logged (open at warn, the others at info) with endpoint,
//! from, to, failure rate and retry-after; calls are not.
//!
//! This test has a binary of its own: `tracing` caches per call site whether
//! anyone listens, and a call site first reached by another test's thread
//! while this test's scoped subscriber is being installed can be cached as
//! silent for good. Alone in its process, nothing else reaches the call sites.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::{CircuitBreakerConfig, CircuitState, PerEndpointCircuitBreaker};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 2,
        open_timeout_ms: 1_000,
        half_open_max_requests: 1,
        jitter_ratio: 0.0,
        ..Default::default()
    }
}

#[derive(Debug, Clone, Default)]
struct Line {
    level: Option<Level>,
    fields: Vec<(String, String)>,
}

impl Line {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.fields
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .push((field.name().to_string(), value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .push((field.name().to_string(), value.to_string()));
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line {
            level: Some(*event.metadata().level()),
            ..Line::default()
        };
        event.record(&mut line);
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
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
