//! Graceful degradation (SPEC §4): the plan's named tests, hysteresis (no
//! flapping around a watermark), and the rule over many endpoints. Time is
//! tokio's paused clock.
#![cfg(feature = "resilience")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};
use breakwater::{DegradationLevel, EndpointHealth, EndpointHealthSource, GracefulDegradation};
use breakwater::{ResilienceStrategy, ResilientExecutor};

use DegradationLevel::{Critical, Degraded, Normal};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// A breaker over the last `sample_size` calls that opens at 50% failures
/// (so its degradation watermarks are 0.125 and 0.25), stays open one
/// second and closes after two successful probes.
fn breaker(sample_size: usize) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        sample_size,
        open_timeout_ms: 1_000,
        jitter_ratio: 0.0,
        half_open_max_requests: 2,
        ..Default::default()
    }))
}

/// Records `failures` failures, then `successes` successes.
fn record(cb: &CircuitBreaker, failures: usize, successes: usize) {
    for _ in 0..failures {
        cb.try_acquire().expect("admitted").failure();
    }
    for _ in 0..successes {
        cb.try_acquire().expect("admitted").success();
    }
}

async fn call(cb: &CircuitBreaker, ok: bool) -> Result<(), CircuitError<Boom>> {
    cb.call(|| async move {
        if ok {
            Ok(())
        } else {
            Err(Boom)
        }
    })
    .await
}

// ---- the plan's tests ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn test_degradation_levels() {
    let cb = breaker(10);
    let degradation = GracefulDegradation::new(cb.clone());
    assert_eq!(degradation.watermarks(), (0.125, 0.25));

    // Closed, no failures: Normal.
    assert_eq!(degradation.get_degradation_level(), Normal);
    assert!(!degradation.is_degraded());

    // Closed, failure rate at or above the high watermark: Degraded.
    record(&cb, 3, 7);
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(degradation.get_degradation_level(), Degraded);
    assert!(degradation.is_degraded());

    // Open: Critical (S S S S S F F F F F: 0.5).
    record(&cb, 5, 0);
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(degradation.get_degradation_level(), Critical);
    assert!(degradation.is_degraded());

    // HalfOpen: Degraded.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    assert_eq!(degradation.get_degradation_level(), Degraded);

    // Disabled: Normal, whatever the breaker says; clones share the switch.
    cb.force_open();
    let clone = degradation.clone();
    clone.set_enabled(false);
    assert!(!degradation.is_enabled());
    assert_eq!(degradation.get_degradation_level(), Normal);
    assert!(!degradation.is_degraded());
    degradation.set_enabled(true);
    assert_eq!(clone.get_degradation_level(), Critical);

    // Levels are ordered from best to worst and have stable names.
    assert!(Normal < Degraded && Degraded < Critical);
    assert_eq!(Normal.max(Critical), Critical);
    assert_eq!(
        [Normal, Degraded, Critical].map(|l| l.to_string()),
        ["normal", "degraded", "critical"]
    );
}

#[tokio::test(start_paused = true)]
async fn test_degradation_automatic_transition() {
    // Nobody tells the degradation anything: it follows the calls that go
    // through the breaker.
    let cb = breaker(8);
    let degradation = GracefulDegradation::new(cb.clone());
    for _ in 0..8 {
        call(&cb, true).await.unwrap();
    }
    assert_eq!(degradation.get_degradation_level(), Normal);

    let mut levels = Vec::new();
    for _ in 0..4 {
        let _ = call(&cb, false).await;
        levels.push(degradation.get_degradation_level());
    }
    // 1/8 (below 0.25), 2/8 (at the watermark), 3/8, then 4/8 opens it.
    assert_eq!(levels, [Normal, Degraded, Degraded, Critical]);
    assert_eq!(cb.state(), CircuitState::Open);

    // The open timeout passes: HalfOpen, so Degraded, without any call.
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(degradation.get_degradation_level(), Critical);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(degradation.get_degradation_level(), Degraded);

    // A failed probe: Critical again.
    let _ = call(&cb, false).await;
    assert_eq!(degradation.get_degradation_level(), Critical);
}

#[tokio::test(start_paused = true)]
async fn test_degradation_recovery() {
    // From Critical: the probes succeed, the breaker closes with an empty
    // window, and the level is Normal again.
    let cb = breaker(10);
    let degradation = GracefulDegradation::new(cb.clone());
    record(&cb, 10, 0);
    assert_eq!(degradation.get_degradation_level(), Critical);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(degradation.get_degradation_level(), Degraded);
    call(&cb, true).await.unwrap();
    assert_eq!(degradation.get_degradation_level(), Degraded);
    call(&cb, true).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(degradation.get_degradation_level(), Normal);

    // From a Degraded rate: it takes a rate below the low watermark (0.125)
    // to recover, not just one below the high one (0.25).
    record(&cb, 3, 7); // F F F S S S S S S S: 0.3
    assert_eq!(degradation.get_degradation_level(), Degraded);
    record(&cb, 0, 1); // 0.2: between the watermarks, still Degraded
    assert_eq!(cb.failure_rate(), 0.2);
    assert_eq!(degradation.get_degradation_level(), Degraded);
    record(&cb, 0, 1); // 0.1: below the low watermark
    assert_eq!(degradation.get_degradation_level(), Normal);
    // And 0.2 from Normal stays Normal: the way up needs 0.25.
    record(&cb, 2, 0);
    assert_eq!(cb.failure_rate(), 0.2);
    assert_eq!(degradation.get_degradation_level(), Normal);
}

#[tokio::test(start_paused = true)]
async fn test_degradation_with_fallback() {
    // The caller serves full answers when Normal, cheap ones when Degraded,
    // and the fallback without calling the service at all when Critical.
    let cb = breaker(10);
    let degradation = GracefulDegradation::new(cb.clone());
    let executor = ResilientExecutor::new(
        cb.clone(),
        ResilienceStrategy::Fallback("fallback".to_string()),
    );
    let calls = Mutex::new(Vec::new());
    let serve = || {
        degradation.with_degradation(|level| {
            let (executor, calls) = (&executor, &calls);
            async move {
                if level == Critical {
                    return Ok::<_, CircuitError<Boom>>("fallback".to_string());
                }
                let kind = if level == Normal { "full" } else { "cheap" };
                executor
                    .execute(|| {
                        calls.lock().unwrap().push(kind);
                        async move { Ok(format!("{kind} answer")) }
                    })
                    .await
            }
        })
    };

    assert_eq!(serve().await.unwrap(), "full answer");
    record(&cb, 3, 6);
    assert_eq!(serve().await.unwrap(), "cheap answer");
    record(&cb, 5, 0); // the last 10: S S S S S F F F F F
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(serve().await.unwrap(), "fallback");
    assert_eq!(*calls.lock().unwrap(), ["full", "cheap"]);

    // The executor's own fallback agrees with the level: Critical means the
    // breaker refuses, so it would have answered "fallback" too.
    let direct = executor
        .execute(|| async { Ok::<_, Boom>("live".to_string()) })
        .await;
    assert_eq!(direct.unwrap(), "fallback");
}

// ---- hysteresis ----------------------------------------------------------

/// The level after each of `rounds` windows whose failure rate alternates
/// between 0.3 and 0.2, around a high watermark of 0.25.
fn hovering_levels(
    degradation: &GracefulDegradation,
    cb: &CircuitBreaker,
) -> Vec<DegradationLevel> {
    let mut levels = Vec::new();
    for round in 0..20 {
        let failures = if round % 2 == 0 { 6 } else { 4 };
        // A whole new window of 20: the rate is exactly failures / 20.
        record(cb, failures, 20 - failures);
        levels.push(degradation.get_degradation_level());
    }
    levels
}

fn changes(levels: &[DegradationLevel]) -> usize {
    levels.windows(2).filter(|w| w[0] != w[1]).count()
}

#[tokio::test(start_paused = true)]
async fn degradation_does_not_flap_when_the_rate_hovers_at_a_watermark() {
    let hovering = || {
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 20,
            failure_threshold: 1.0, // never opens here
            ..Default::default()
        }))
    };

    let cb = hovering();
    let degradation = GracefulDegradation::new(cb.clone()).with_watermarks(0.1, 0.25);
    let levels = hovering_levels(&degradation, &cb);
    assert!(levels.iter().all(|l| *l == Degraded), "{levels:?}");
    assert_eq!(changes(&levels), 0);

    // Without hysteresis (low == high) the same traffic flaps every round:
    // the test above would catch it.
    let cb = hovering();
    let degradation = GracefulDegradation::new(cb.clone()).with_watermarks(0.25, 0.25);
    let levels = hovering_levels(&degradation, &cb);
    assert_eq!(changes(&levels), levels.len() - 1, "{levels:?}");
}

#[test]
#[should_panic(expected = "watermarks must satisfy 0 < low <= high <= 1")]
fn watermarks_must_be_ordered() {
    let _ = GracefulDegradation::new(breaker(10)).with_watermarks(0.3, 0.2);
}

#[test]
#[should_panic(expected = "critical_fraction must be in (0, 1]")]
fn critical_fraction_must_be_a_fraction() {
    let _ = GracefulDegradation::new(breaker(10)).with_critical_fraction(0.0);
}

// ---- over many endpoints -------------------------------------------------

fn health(endpoint: &str, state: CircuitState, failure_rate: f64) -> EndpointHealth {
    EndpointHealth {
        endpoint: endpoint.to_owned(),
        state,
        failure_rate,
    }
}

#[test]
fn per_endpoint_degradation_follows_the_documented_rule() {
    use CircuitState::{Closed, HalfOpen, Open};

    let now: Arc<Mutex<Vec<EndpointHealth>>> = Arc::default();
    let seen = now.clone();
    let degradation = GracefulDegradation::per_endpoint(move || seen.lock().unwrap().clone());
    let level = |endpoints: Vec<EndpointHealth>| {
        *now.lock().unwrap() = endpoints;
        degradation.get_degradation_level()
    };

    // No endpoints, or all healthy: Normal.
    assert_eq!(level(vec![]), Normal);
    assert_eq!(
        level(vec![health("a", Closed, 0.1), health("b", Closed, 0.0)]),
        Normal
    );
    // Any endpoint recovering, or a minority down: Degraded.
    assert_eq!(
        level(vec![health("a", Closed, 0.0), health("b", HalfOpen, 0.0)]),
        Degraded
    );
    let one_of_three = vec![
        health("a", Closed, 0.0),
        health("b", Open, 1.0),
        health("c", Closed, 0.0),
    ];
    assert_eq!(level(one_of_three.clone()), Degraded);
    // At least half of them down (the default critical fraction): Critical.
    let two_of_four = vec![
        health("a", Open, 1.0),
        health("b", Open, 1.0),
        health("c", Closed, 0.0),
        health("d", HalfOpen, 0.0),
    ];
    assert_eq!(level(two_of_four.clone()), Critical);

    // The highest Closed failure rate, with hysteresis: up at 0.25, down
    // only below 0.125.
    let rates = |r: f64| vec![health("a", Closed, 0.0), health("b", Closed, r)];
    assert_eq!(level(rates(0.2)), Normal);
    assert_eq!(level(rates(0.25)), Degraded);
    assert_eq!(level(rates(0.2)), Degraded);
    assert_eq!(level(rates(0.13)), Degraded);
    assert_eq!(level(rates(0.1)), Normal);

    // Disabled: Normal.
    degradation.set_enabled(false);
    assert_eq!(level(two_of_four.clone()), Normal);
    degradation.set_enabled(true);

    // "Critical only when all are down", and "critical when any is down".
    let lenient = degradation.clone().with_critical_fraction(1.0);
    *now.lock().unwrap() = two_of_four;
    assert_eq!(lenient.get_degradation_level(), Degraded);
    let strict = degradation.clone().with_critical_fraction(0.01);
    *now.lock().unwrap() = one_of_three;
    assert_eq!(strict.get_degradation_level(), Critical);
}

/// Real breakers by endpoint, seen through [`EndpointHealthSource`]: what a
/// per-endpoint registry provides.
#[derive(Default)]
struct Registry {
    breakers: Mutex<BTreeMap<String, Arc<CircuitBreaker>>>,
}

impl Registry {
    fn get_or_create(&self, endpoint: &str) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap();
        map.entry(endpoint.to_owned())
            .or_insert_with(|| breaker(4))
            .clone()
    }
}

impl EndpointHealthSource for Registry {
    fn endpoint_health(&self) -> Vec<EndpointHealth> {
        let map = self.breakers.lock().unwrap();
        map.iter()
            .map(|(endpoint, b)| health(endpoint, b.state(), b.failure_rate()))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn per_endpoint_degradation_over_real_breakers() {
    let registry = Arc::new(Registry::default());
    let degradation = GracefulDegradation::per_endpoint(registry.clone());
    for endpoint in ["a", "b", "c"] {
        record(&registry.get_or_create(endpoint), 0, 4);
    }
    assert_eq!(degradation.get_degradation_level(), Normal);

    // One endpoint of three dies: Degraded.
    record(&registry.get_or_create("b"), 2, 0);
    assert_eq!(degradation.get_degradation_level(), Degraded);
    // A second one: two of three are Open, Critical.
    record(&registry.get_or_create("c"), 2, 0);
    assert_eq!(degradation.get_degradation_level(), Critical);

    // They recover: HalfOpen (Degraded), then Closed (Normal).
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(degradation.get_degradation_level(), Degraded);
    for endpoint in ["b", "c"] {
        record(&registry.get_or_create(endpoint), 0, 2);
    }
    assert_eq!(degradation.get_degradation_level(), Normal);
}

// ---------------------------------------------------------------------------
// Regressions: judging too early, stale watermarks, abandoned endpoints.
// ---------------------------------------------------------------------------

/// Regression: one failed call on a fresh breaker (1 of 1, with
/// `minimum_calls` 100) reported Degraded. A rate is judged only once the
/// window holds `minimum_calls` outcomes, as the breaker judges it.
#[tokio::test(start_paused = true)]
async fn one_failure_on_a_fresh_breaker_degrades_nothing() {
    let cb = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
    let degradation = GracefulDegradation::new(cb.clone());
    record(&cb, 1, 0);
    assert_eq!(cb.failure_rate(), 1.0);
    assert_eq!(degradation.get_degradation_level(), Normal);
    // 99 more outcomes fill `minimum_calls`: 30% now counts.
    record(&cb, 29, 70);
    assert_eq!(degradation.get_degradation_level(), Degraded);
}

/// Regression: one failure on one new endpoint degraded a registry of 101.
#[tokio::test(start_paused = true)]
async fn one_failure_on_a_new_endpoint_does_not_degrade_a_registry() {
    use breakwater::PerEndpointCircuitBreaker;
    let reg = Arc::new(PerEndpointCircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 10,
        ..Default::default()
    }));
    let degradation = GracefulDegradation::per_endpoint(reg.clone());
    for i in 0..100 {
        record(&reg.get_or_create(&format!("ok-{i}")), 0, 10);
    }
    record(&reg.get_or_create("new"), 1, 0);
    assert_eq!(degradation.get_degradation_level(), Normal);
    // Once its window is judged, its rate counts.
    record(&reg.get_or_create("new"), 2, 7);
    assert_eq!(degradation.get_degradation_level(), Degraded);
}

/// Regression: the watermarks of one breaker were captured at construction
/// and did not follow `update_config`.
#[tokio::test(start_paused = true)]
async fn watermarks_follow_update_config() {
    let cb = breaker(8); // threshold 0.5: watermarks 0.125 and 0.25
    let degradation = GracefulDegradation::new(cb.clone());
    assert_eq!(degradation.watermarks(), (0.125, 0.25));
    record(&cb, 1, 7); // 12.5%
    assert_eq!(degradation.get_degradation_level(), Normal);
    cb.update_config(CircuitBreakerConfig {
        failure_threshold: 0.2,
        ..cb.config()
    })
    .unwrap();
    assert_eq!(degradation.watermarks(), (0.05, 0.1));
    assert_eq!(
        degradation.get_degradation_level(),
        Degraded,
        "12.5% >= 10%"
    );
    // Watermarks set by hand stay as set.
    let fixed = GracefulDegradation::new(cb.clone()).with_watermarks(0.3, 0.4);
    assert_eq!(fixed.get_degradation_level(), Normal);
}

/// Regression: one abandoned HalfOpen endpoint (nobody probes it) kept a
/// registry Degraded for good. It is evicted after `abandoned_ttl`, and the
/// registry's health sweeps when a sweep is due.
#[tokio::test(start_paused = true)]
async fn an_abandoned_half_open_endpoint_does_not_keep_a_registry_degraded() {
    use breakwater::{PerEndpointCircuitBreaker, RegistryLimits};
    let reg = Arc::new(PerEndpointCircuitBreaker::with_limits(
        CircuitBreakerConfig {
            sample_size: 2,
            open_timeout_ms: 1_000,
            jitter_ratio: 0.0,
            ..Default::default()
        },
        RegistryLimits {
            idle_ttl: Duration::from_secs(60),
            abandoned_ttl: Duration::from_secs(600),
            ..Default::default()
        },
    ));
    let degradation = GracefulDegradation::per_endpoint(reg.clone());
    for i in 0..3 {
        let _ = reg.get_or_create(&format!("ok-{i}"));
    }
    record(&reg.get_or_create("gone"), 2, 0);
    assert_eq!(degradation.get_degradation_level(), Degraded);
    tokio::time::advance(Duration::from_secs(1)).await;
    let state = reg.statistics_for("gone").map(|s| s.metrics.state);
    assert_eq!(state, Some(CircuitState::HalfOpen));
    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(
        degradation.get_degradation_level(),
        Degraded,
        "not yet abandoned"
    );
    tokio::time::advance(Duration::from_secs(301)).await;
    assert_eq!(degradation.get_degradation_level(), Normal);
    assert!(reg.get("gone").is_none());
}

#[tokio::test(start_paused = true)]
async fn debug_shows_the_switch_the_latch_and_the_watermarks() {
    let d = GracefulDegradation::new(breaker(4)).with_critical_fraction(0.5);
    d.set_enabled(false);
    let shown = format!("{d:?}");
    assert!(shown.starts_with("GracefulDegradation {"), "{shown}");
    for part in [
        "enabled: false",
        "degraded_mode: false",
        "watermarks: (0.125, 0.25)",
        "critical_fraction: 0.5",
    ] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
}
