//! `CircuitBreakerActionExecutor`: the plan's step 2 tests, on paused time.
#![cfg(feature = "actions")]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use breakwater::traits::{
    ActionConfig, ActionExecutor, ActionResult, CircuitBreakerActionExecutor, EntityEvent, Error,
    EventKind, Result, WebhookAction,
};
use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState, PerEndpointCircuitBreaker};
use tokio::time::advance;

/// A test double: answers from a script (then succeeds), counts its calls.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Result<()>>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn with(script: impl IntoIterator<Item = Result<()>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into_iter().collect()),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ActionExecutor for Scripted {
    async fn execute(&self, _: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
        next.map(|()| ActionResult {
            action_type: action.action_type().to_string(),
            success: true,
            message: "delivered".into(),
            duration_ms: 1,
            status_code: Some(200),
        })
    }
}

fn event() -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "order",
        uuid::Uuid::new_v4(),
        serde_json::json!({"id": 1}),
    )
}

fn hook(url: &str) -> ActionConfig {
    ActionConfig::Webhook(WebhookAction {
        url: url.into(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: None,
    })
}

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 4,
        open_timeout_ms: 1_000,
        half_open_max_requests: 2,
        jitter_ratio: 0.0,
        ..Default::default()
    }
}

fn down() -> Result<()> {
    Err(Error::transient("503 service unavailable"))
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_action_executor_closed() {
    let inner = Scripted::with([]);
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    for _ in 0..10 {
        let r = exec
            .execute(&event(), &hook("http://127.0.0.1:9/a"))
            .await
            .unwrap();
        assert!(r.success);
        assert_eq!(r.status_code, Some(200));
    }
    assert_eq!(inner.calls(), 10, "every action ran");
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().successes, 10);
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_action_executor_open() {
    let inner = Scripted::with((0..4).map(|_| down()));
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    for _ in 0..4 {
        let e = exec
            .execute(&event(), &hook("http://127.0.0.1:9/a"))
            .await
            .unwrap_err();
        assert!(e.is_transient());
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let e = exec
        .execute(&event(), &hook("http://127.0.0.1:9/a"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::CircuitOpen {
            endpoint: "http://127.0.0.1:9".into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    );
    assert!(
        e.is_circuit_open() && !e.is_permanent(),
        "never dead-lettered at once"
    );
    assert_eq!(
        inner.calls(),
        4,
        "the open circuit did not call the endpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_action_executor_half_open() {
    let inner = Scripted::with((0..4).map(|_| down()));
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = Arc::new(CircuitBreakerActionExecutor::new(
        inner.clone(),
        breaker.clone(),
    ));
    for _ in 0..4 {
        let _ = exec.execute(&event(), &hook("http://127.0.0.1:9/a")).await;
    }
    advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    // A probe runs for real; one success of the two needed keeps it HalfOpen.
    exec.execute(&event(), &hook("http://127.0.0.1:9/a"))
        .await
        .unwrap();
    assert_eq!(inner.calls(), 5);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(breaker.metrics().half_open_tests, 1);
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_rapid_failures() {
    // 1 000 actions against a dead endpoint: only the first few reach it.
    let inner = Scripted::with((0..1_000).map(|_| down()));
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    let mut open = 0;
    for _ in 0..1_000 {
        if exec
            .execute(&event(), &hook("http://127.0.0.1:9/a"))
            .await
            .unwrap_err()
            .is_circuit_open()
        {
            open += 1;
        }
    }
    assert_eq!(inner.calls(), 4, "sample_size failures, then fail-fast");
    assert_eq!(open, 996);
    let m = breaker.metrics();
    assert_eq!((m.failures, m.blocked), (4, 996));
    assert_eq!(
        m.transitions_between(CircuitState::Closed, CircuitState::Open),
        1,
        "tripped once"
    );
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_recovery_process() {
    let inner = Scripted::with([down(), down(), down(), down(), down()]);
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    let mut trail = vec![breaker.state()];
    for _ in 0..4 {
        let _ = exec.execute(&event(), &hook("http://127.0.0.1:9/a")).await;
    }
    trail.push(breaker.state());
    advance(Duration::from_secs(1)).await;
    trail.push(breaker.state());
    // The first probe fails (the fifth scripted error): open again, for 2 s.
    let _ = exec.execute(&event(), &hook("http://127.0.0.1:9/a")).await;
    trail.push(breaker.state());
    advance(Duration::from_secs(2)).await;
    trail.push(breaker.state());
    // The endpoint is back: two probes close the circuit.
    for _ in 0..2 {
        exec.execute(&event(), &hook("http://127.0.0.1:9/a"))
            .await
            .unwrap();
    }
    trail.push(breaker.state());
    use CircuitState::*;
    assert_eq!(trail, [Closed, Open, HalfOpen, Open, HalfOpen, Closed]);
    assert_eq!(breaker.metrics().open_streak, 0);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_do_not_open_the_circuit() {
    let inner = Scripted::with((0..10).map(|_| Err(Error::from_status(400, "bad payload", None))));
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    for _ in 0..10 {
        let e = exec
            .execute(&event(), &hook("http://127.0.0.1:9/a"))
            .await
            .unwrap_err();
        assert!(e.is_permanent());
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().ignored, 10);
}

#[tokio::test(start_paused = true)]
async fn gone_passes_through_and_does_not_open_the_circuit() {
    let inner = Scripted::with((0..10).map(|_| Err(Error::from_status(410, "unsubscribed", None))));
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    for _ in 0..10 {
        let e = exec
            .execute(&event(), &hook("http://127.0.0.1:9/a"))
            .await
            .unwrap_err();
        assert!(e.is_gone() && !e.is_transient() && !e.is_permanent(), "{e}");
    }
    assert_eq!(inner.calls(), 10);
    assert_eq!(breaker.state(), CircuitState::Closed);
    let m = breaker.metrics();
    assert_eq!((m.failures, m.ignored), (0, 10));
}

#[tokio::test(start_paused = true)]
async fn invalid_actions_are_refused_before_the_breaker() {
    let inner = Scripted::with([]);
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::new(inner.clone(), breaker.clone());
    let e = exec
        .execute(&event(), &hook("gopher://x"))
        .await
        .unwrap_err();
    match &e {
        Error::InvalidAction(bad) => assert_eq!(bad.field, "webhook.url"),
        other => panic!("expected InvalidAction, got {other:?}"),
    }
    assert!(e.is_permanent());
    assert_eq!(inner.calls(), 0);
    assert_eq!(breaker.metrics().requests, 0);
}

/// The executor keeps what it learnt of an action (checked, and its
/// endpoint) for the next event, and only that: a refused action is refused
/// every time, an action that changes is judged as it is now.
#[tokio::test(start_paused = true)]
async fn repeated_actions_are_judged_the_same_way_every_time() {
    let inner = Scripted::with([]);
    let breakers = Arc::new(PerEndpointCircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::per_endpoint(inner.clone(), breakers.clone());
    for _ in 0..3 {
        let e = exec
            .execute(&event(), &hook("http://127.0.0.1:0/x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidAction(bad) if bad.field == "webhook.url"),
            "{e:?}"
        );
    }
    let mut action = hook("http://127.0.0.1:9/x");
    for _ in 0..3 {
        exec.execute(&event(), &action).await.unwrap();
    }
    if let ActionConfig::Webhook(w) = &mut action {
        w.url = "http://127.0.0.1:10/x".into();
    }
    exec.execute(&event(), &action).await.unwrap();
    if let ActionConfig::Webhook(w) = &mut action {
        w.signing_secret = Some("whsec_short".into());
    }
    let e = exec.execute(&event(), &action).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidAction(bad) if bad.field == "webhook.signing_secret"),
        "{e:?}"
    );
    assert_eq!(inner.calls(), 4);
    let requests = |key: &str| breakers.get_or_create(key).metrics().requests;
    assert_eq!(requests("http://127.0.0.1:9"), 3);
    assert_eq!(requests("http://127.0.0.1:10"), 1);
}

#[tokio::test(start_paused = true)]
async fn per_endpoint_breakers_isolate_endpoints() {
    let inner = Scripted::with((0..4).map(|_| down()));
    let breakers = Arc::new(PerEndpointCircuitBreaker::new(config()));
    let exec = CircuitBreakerActionExecutor::per_endpoint(inner.clone(), breakers.clone());
    // The dead endpoint, under two different paths: one breaker.
    for path in ["a", "b", "c", "d"] {
        let _ = exec
            .execute(&event(), &hook(&format!("http://127.0.0.1:9/{path}")))
            .await;
    }
    assert!(exec
        .execute(&event(), &hook("http://127.0.0.1:9/e"))
        .await
        .unwrap_err()
        .is_circuit_open());
    // Another endpoint is untouched.
    exec.execute(&event(), &hook("http://127.0.0.1:10/a"))
        .await
        .unwrap();
    assert_eq!(
        breakers.get_all_states(),
        vec![
            ("http://127.0.0.1:10".to_string(), CircuitState::Closed),
            ("http://127.0.0.1:9".to_string(), CircuitState::Open),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn usable_as_a_trait_object() {
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let exec: Arc<dyn ActionExecutor> = Arc::new(CircuitBreakerActionExecutor::new(
        Scripted::with([]),
        breaker,
    ));
    assert!(
        exec.execute(&event(), &hook("http://127.0.0.1:9"))
            .await
            .unwrap()
            .success
    );
}
