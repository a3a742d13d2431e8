//! Names on breakers, the registry-wide transition stream, transition logs
//! and the Prometheus collector (feature `prometheus`).
#![cfg(feature = "prometheus")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use breakwater::prometheus::{BreakerCollector, CollectorError};
use breakwater::RegistryLimits;
use breakwater::{
    CircuitBreaker, CircuitBreakerConfig, CircuitState, PerEndpointCircuitBreaker, Transition,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 2,
        open_timeout_ms: 1_000,
        half_open_max_requests: 1,
        jitter_ratio: 0.0,
        ..Default::default()
    }
}

fn scrape(collector: BreakerCollector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

async fn fail(b: &CircuitBreaker) {
    let _ = b.call(|| async { Err::<(), _>("503") }).await;
}

async fn succeed(b: &CircuitBreaker) {
    b.call(|| async { Ok::<_, &str>(()) }).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn transitions_carry_the_breaker_name() {
    let b = CircuitBreaker::named("payments", config());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    b.add_listener(move |t: &Transition| log.lock().unwrap().push(t.clone()));
    fail(&b).await;
    fail(&b).await;
    let t = seen.lock().unwrap()[0].clone();
    assert_eq!(t.name(), Some("payments"));
    assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
    assert_eq!(t.open_for, Some(Duration::from_secs(1)));
    assert_eq!(CircuitBreaker::new(config()).name(), None);
}

#[tokio::test(start_paused = true)]
async fn registry_stream_names_endpoints_and_survives_eviction() {
    let reg = Arc::new(PerEndpointCircuitBreaker::with_limits(
        config(),
        RegistryLimits {
            idle_ttl: Duration::from_secs(60),
            ..Default::default()
        },
    ));
    let mut events = reg.subscribe();
    // A listener may call back into the registry: it runs outside its locks.
    let states = Arc::new(Mutex::new(Vec::new()));
    let (r, s) = (Arc::downgrade(&reg), states.clone());
    reg.add_listener(move |t: &Transition| {
        if let Some(reg) = r.upgrade() {
            s.lock()
                .unwrap()
                .push((t.name().unwrap().to_string(), reg.get_all_states().len()));
        }
    });

    reg.get_or_create("http://a:80").force_open();
    let t = events.try_recv().unwrap();
    assert_eq!((t.name(), t.to), (Some("http://a:80"), CircuitState::Open));
    reg.reset_endpoint("http://a:80");
    assert_eq!(events.try_recv().unwrap().to, CircuitState::Closed);

    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(reg.evict_idle(), 1);
    assert!(reg.is_empty());

    // A fresh breaker for the same endpoint still reaches the same stream.
    fail(&reg.get_or_create("http://a:80")).await;
    fail(&reg.get_or_create("http://a:80")).await;
    let t = events.try_recv().unwrap();
    assert_eq!((t.name(), t.to), (Some("http://a:80"), CircuitState::Open));
    assert_eq!(states.lock().unwrap().len(), 3);
    assert_eq!(states.lock().unwrap()[2], ("http://a:80".to_string(), 1));
}

#[tokio::test(start_paused = true)]
async fn every_series_is_exported_with_help() {
    let reg = Arc::new(PerEndpointCircuitBreaker::new(config()));
    fail(&reg.get_or_create("http://a:80")).await;
    fail(&reg.get_or_create("http://a:80")).await;
    let text = scrape(BreakerCollector::for_registry(reg));
    for (family, sample) in [
        ("breakwater_circuit_state", "breakwater_circuit_state"),
        (
            "breakwater_circuit_state_changes",
            "breakwater_circuit_state_changes_total",
        ),
        (
            "breakwater_circuit_open_duration_seconds",
            "breakwater_circuit_open_duration_seconds_bucket",
        ),
        (
            "breakwater_circuit_requests",
            "breakwater_circuit_requests_total",
        ),
        (
            "breakwater_circuit_requests_allowed",
            "breakwater_circuit_requests_allowed_total",
        ),
        (
            "breakwater_circuit_requests_blocked",
            "breakwater_circuit_requests_blocked_total",
        ),
        (
            "breakwater_circuit_half_open_tests",
            "breakwater_circuit_half_open_tests_total",
        ),
        (
            "breakwater_circuit_failures",
            "breakwater_circuit_failures_total",
        ),
        (
            "breakwater_circuit_slow_calls",
            "breakwater_circuit_slow_calls_total",
        ),
        (
            "breakwater_circuit_success_rate_percent",
            "breakwater_circuit_success_rate_percent",
        ),
        (
            "breakwater_circuit_failure_rate_percent",
            "breakwater_circuit_failure_rate_percent",
        ),
        (
            "breakwater_circuit_failure_threshold_percent",
            "breakwater_circuit_failure_threshold_percent",
        ),
        (
            "breakwater_circuit_last_state_change_timestamp_seconds",
            "breakwater_circuit_last_state_change_timestamp_seconds",
        ),
        (
            "breakwater_registry_endpoints",
            "breakwater_registry_endpoints",
        ),
        (
            "breakwater_registry_overflows",
            "breakwater_registry_overflows_total",
        ),
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no help for {family}:\n{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with(sample)),
            "no sample of {sample}:\n{text}"
        );
    }
    let s = |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert_eq!(s("breakwater_circuit_state{endpoint=\"http://a:80\"}"), 1.0);
    assert_eq!(
        s("breakwater_circuit_state_changes_total{endpoint=\"http://a:80\",from=\"closed\",to=\"open\"}"),
        1.0
    );
    assert_eq!(
        s("breakwater_circuit_failure_rate_percent{endpoint=\"http://a:80\"}"),
        100.0
    );
    assert_eq!(
        s("breakwater_circuit_failures_total{endpoint=\"http://a:80\"}"),
        2.0
    );
    assert_eq!(s("breakwater_registry_endpoints"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn open_durations_and_counters_follow_a_full_cycle() {
    let b = Arc::new(CircuitBreaker::named("db", config()));
    fail(&b).await;
    fail(&b).await; // Open for 1 s
    assert!(b.call(|| async { Ok::<_, &str>(()) }).await.is_err()); // blocked
    tokio::time::advance(Duration::from_millis(1_000)).await;
    fail(&b).await; // the probe fails: Open for 2 s
    tokio::time::advance(Duration::from_millis(2_000)).await;
    succeed(&b).await; // the probe succeeds: Closed

    let text = scrape(BreakerCollector::for_breaker("db", b.clone()));
    let s = |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert_eq!(s("breakwater_circuit_state{endpoint=\"db\"}"), 0.0);
    assert_eq!(
        s("breakwater_circuit_open_duration_seconds_count{endpoint=\"db\"}"),
        2.0
    );
    assert_eq!(
        s("breakwater_circuit_open_duration_seconds_sum{endpoint=\"db\"}"),
        3.0
    );
    assert_eq!(
        s("breakwater_circuit_open_duration_seconds_bucket{le=\"0.5\",endpoint=\"db\"}"),
        0.0
    );
    assert_eq!(
        s("breakwater_circuit_open_duration_seconds_bucket{le=\"1.0\",endpoint=\"db\"}"),
        1.0
    );
    assert_eq!(
        s("breakwater_circuit_open_duration_seconds_bucket{le=\"2.5\",endpoint=\"db\"}"),
        2.0
    );
    assert_eq!(s("breakwater_circuit_requests_total{endpoint=\"db\"}"), 5.0);
    assert_eq!(
        s("breakwater_circuit_requests_blocked_total{endpoint=\"db\"}"),
        1.0
    );
    assert_eq!(
        s("breakwater_circuit_half_open_tests_total{endpoint=\"db\"}"),
        2.0
    );
    for (from, to, n) in [
        ("closed", "open", 1.0),
        ("open", "half_open", 2.0),
        ("half_open", "open", 1.0),
        ("half_open", "closed", 1.0),
    ] {
        let series = format!(
            "breakwater_circuit_state_changes_total{{endpoint=\"db\",from=\"{from}\",to=\"{to}\"}}"
        );
        assert_eq!(s(&series), n, "{series}");
    }
    // Wall-clock time of the last transition.
    let at = s("breakwater_circuit_last_state_change_timestamp_seconds{endpoint=\"db\"}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 60.0, "{at} vs {now}");
    assert!(b.last_state_change_time().is_some());
}

#[tokio::test(start_paused = true)]
async fn endpoints_beyond_the_cap_are_summed_under_other() {
    let reg = Arc::new(PerEndpointCircuitBreaker::new(config()));
    for (endpoint, calls) in [("a", 1), ("b", 5), ("c", 2), ("d", 3)] {
        for _ in 0..calls {
            succeed(&reg.get_or_create(endpoint)).await;
        }
    }
    reg.get_or_create("c").force_open();
    let collector = BreakerCollector::builder()
        .max_endpoints(2)
        .registry(reg)
        .build()
        .unwrap();
    let text = scrape(collector);
    let s = |series: &str| value(&text, series);
    // The open one first, then the busiest; the rest summed.
    assert_eq!(s("breakwater_circuit_state{endpoint=\"c\"}"), Some(1.0));
    assert_eq!(
        s("breakwater_circuit_requests_total{endpoint=\"b\"}"),
        Some(5.0)
    );
    assert_eq!(s("breakwater_circuit_requests_total{endpoint=\"a\"}"), None);
    assert_eq!(s("breakwater_circuit_requests_total{endpoint=\"d\"}"), None);
    assert_eq!(
        s("breakwater_circuit_requests_total{endpoint=\"_other\"}"),
        Some(4.0)
    );
    assert_eq!(s("breakwater_circuit_state{endpoint=\"_other\"}"), None);
    assert_eq!(
        s("breakwater_circuit_failure_rate_percent{endpoint=\"_other\"}"),
        Some(0.0)
    );
    assert_eq!(s("breakwater_registry_endpoints"), Some(4.0));
}

#[tokio::test(start_paused = true)]
async fn a_name_taken_twice_is_counted_under_other() {
    let reg = Arc::new(PerEndpointCircuitBreaker::new(config()));
    succeed(&reg.get_or_create("shared")).await;
    let mine = Arc::new(CircuitBreaker::new(config()));
    for _ in 0..3 {
        succeed(&mine).await;
    }
    let collector = BreakerCollector::builder()
        .breaker("shared", mine)
        .registry(reg)
        .build()
        .unwrap();
    let text = scrape(collector);
    assert_eq!(
        value(
            &text,
            "breakwater_circuit_requests_total{endpoint=\"shared\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "breakwater_circuit_requests_total{endpoint=\"_other\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        text.matches("breakwater_circuit_state{endpoint=\"shared\"}")
            .count(),
        1
    );
}

#[test]
fn the_prefix_can_be_changed_and_is_checked() {
    let b = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
    let text = scrape(
        BreakerCollector::builder()
            .prefix("shop_cb")
            .breaker("x", b.clone())
            .build()
            .unwrap(),
    );
    assert!(text.contains("shop_cb_circuit_state{endpoint=\"x\"} 0\n"));
    assert!(!text.contains("breakwater_"));
    let bare = scrape(
        BreakerCollector::builder()
            .prefix("")
            .breaker("x", b)
            .build()
            .unwrap(),
    );
    assert!(bare.contains("\ncircuit_requests_total{endpoint=\"x\"} 0\n"));

    let err = BreakerCollector::builder()
        .prefix("my-app")
        .build()
        .unwrap_err();
    assert_eq!(err, CollectorError::InvalidPrefix("my-app".to_string()));
    assert!(err.to_string().starts_with("prefix: \"my-app\""));
}

#[test]
fn label_values_are_escaped() {
    let b = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
    let text = scrape(BreakerCollector::for_breaker("a\"b\\c\nd", b));
    assert!(
        text.contains("breakwater_circuit_state{endpoint=\"a\\\"b\\\\c\\nd\"} 0\n"),
        "{text}"
    );
}

/// A scrape reads; it changes no counter and no state.
#[tokio::test(start_paused = true)]
async fn a_scrape_changes_nothing() {
    let b = Arc::new(CircuitBreaker::named("x", config()));
    succeed(&b).await;
    let before = b.metrics();
    let collector = Arc::new(BreakerCollector::for_breaker("x", b.clone()));
    let first = scrape_shared(&collector);
    let second = scrape_shared(&collector);
    assert_eq!(first, second);
    assert_eq!(b.metrics(), before);
}

fn scrape_shared(collector: &Arc<BreakerCollector>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector.clone()));
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

#[tokio::test(start_paused = true)]
async fn a_cap_of_zero_sums_every_endpoint() {
    let reg = Arc::new(PerEndpointCircuitBreaker::new(config()));
    succeed(&reg.get_or_create("a")).await;
    fail(&reg.get_or_create("b")).await;
    reg.get_or_create("c").force_open();
    let text = scrape(
        BreakerCollector::builder()
            .max_endpoints(0)
            .registry(reg)
            .build()
            .unwrap(),
    );
    assert!(!text.contains("endpoint=\"a\""), "{text}");
    let s = |series: &str| value(&text, series);
    assert_eq!(
        s("breakwater_circuit_requests_total{endpoint=\"_other\"}"),
        Some(2.0)
    );
    assert_eq!(
        s("breakwater_circuit_failure_rate_percent{endpoint=\"_other\"}"),
        Some(50.0)
    );
    assert_eq!(
        s("breakwater_circuit_state_changes_total{endpoint=\"_other\",from=\"closed\",to=\"open\"}"),
        Some(1.0)
    );
    assert!(
        s("breakwater_circuit_last_state_change_timestamp_seconds{endpoint=\"_other\"}").is_some()
    );
}
