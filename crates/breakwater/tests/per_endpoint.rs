//! The per-endpoint registry: the plan's four tests, then independence,
//! configuration overrides, eviction and the cap. Timing runs on paused
//! tokio time.

use std::sync::Arc;
use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};
use breakwater::{EndpointStatistics, PerEndpointCircuitBreaker, RegistryLimits};
use futures_util::FutureExt;
use tokio::time::advance;

mod support;

use support::send_val;

/// Opens after four outcomes with at least half failed; stays open 1 s.
fn quick() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 4,
        minimum_calls: Some(4),
        open_timeout_ms: 1_000,
        jitter_ratio: 0.0,
        half_open_max_requests: 1,
        ..Default::default()
    }
}

fn limits(idle_ttl_secs: u64, max_endpoints: usize) -> RegistryLimits {
    RegistryLimits {
        idle_ttl: Duration::from_secs(idle_ttl_secs),
        max_endpoints,
        ..Default::default()
    }
}

async fn ok(
    reg: &PerEndpointCircuitBreaker,
    endpoint: &str,
) -> Result<u32, CircuitError<&'static str>> {
    reg.call(endpoint, || async { Ok(1) }).await
}

async fn fail(
    reg: &PerEndpointCircuitBreaker,
    endpoint: &str,
) -> Result<u32, CircuitError<&'static str>> {
    reg.call(endpoint, || async { Err("boom") }).await
}

async fn trip(reg: &PerEndpointCircuitBreaker, endpoint: &str) {
    for _ in 0..4 {
        let _ = fail(reg, endpoint).await;
    }
    assert_eq!(reg.get_or_create(endpoint).state(), CircuitState::Open);
}

fn state_of(reg: &PerEndpointCircuitBreaker, endpoint: &str) -> Option<CircuitState> {
    reg.statistics_for(endpoint).map(|s| s.metrics.state)
}

// ---------------------------------------------------------------------------
// The plan's tests.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn test_per_endpoint_independent_breakers() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let a = reg.get_or_create("a");
    let b = reg.get_or_create("b");
    assert!(!Arc::ptr_eq(&a, &b), "each endpoint has its own breaker");
    assert!(
        Arc::ptr_eq(&a, &reg.get_or_create("a")),
        "the same endpoint, the same breaker"
    );
    assert_eq!(reg.len(), 2);

    trip(&reg, "a").await;
    assert_eq!(a.state(), CircuitState::Open);
    assert_eq!(b.state(), CircuitState::Closed);
    assert!(ok(&reg, "a").await.unwrap_err().is_open());
    assert_eq!(ok(&reg, "b").await, Ok(1), "b still runs its calls");
    // b's own window saw none of a's failures.
    assert_eq!(b.failure_rate(), 0.0);
    assert_eq!(b.metrics().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn test_per_endpoint_state_isolation() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let names = ["a", "b", "c", "d"];
    for n in names {
        assert_eq!(ok(&reg, n).await, Ok(1));
    }
    let before: Vec<_> = names
        .iter()
        .map(|n| reg.statistics_for(n).unwrap())
        .collect();

    // Drive "a" through Open and HalfOpen, and force "b" open.
    trip(&reg, "a").await;
    reg.get_or_create("b").force_open();
    advance(Duration::from_secs(1)).await;
    assert_eq!(reg.get_or_create("a").state(), CircuitState::HalfOpen);
    for _ in 0..3 {
        let _ = fail(&reg, "c").await; // with the success before: 3 of 4 failed
    }
    assert_eq!(state_of(&reg, "c"), Some(CircuitState::Open));

    // "d" saw none of it: same counters, same state, calls still run.
    let d = reg.statistics_for("d").unwrap();
    assert_eq!(d, before[3]);
    assert_eq!(d.metrics.state, CircuitState::Closed);
    assert_eq!(ok(&reg, "d").await, Ok(1));

    // Each of the others is in its own state.
    assert_eq!(state_of(&reg, "a"), Some(CircuitState::HalfOpen));
    assert_eq!(state_of(&reg, "b"), Some(CircuitState::Open));
    assert_eq!(state_of(&reg, "c"), Some(CircuitState::Open));

    // A successful probe closes "a" and nothing else.
    assert_eq!(ok(&reg, "a").await, Ok(1));
    assert_eq!(state_of(&reg, "a"), Some(CircuitState::Closed));
    assert_eq!(state_of(&reg, "b"), Some(CircuitState::Open));
    assert_eq!(state_of(&reg, "c"), Some(CircuitState::Open));
}

#[tokio::test(start_paused = true)]
async fn test_per_endpoint_reset() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    trip(&reg, "a").await;
    trip(&reg, "b").await;
    let _ = fail(&reg, "c").await;

    assert!(reg.reset_endpoint("a"));
    let a = reg.statistics_for("a").unwrap().metrics;
    assert_eq!(a.state, CircuitState::Closed);
    assert_eq!(
        (a.window_len, a.open_streak),
        (0, 0),
        "empty window, no backoff streak"
    );
    assert_eq!(ok(&reg, "a").await, Ok(1));
    assert_eq!(
        state_of(&reg, "b"),
        Some(CircuitState::Open),
        "b is not reset"
    );
    assert_eq!(
        reg.statistics_for("c").unwrap().metrics.window_len,
        1,
        "c is not reset"
    );

    assert!(!reg.reset_endpoint("nobody"));
    assert!(reg.get("nobody").is_none(), "reset creates nothing");

    reg.reset_all();
    for (endpoint, state) in reg.get_all_states() {
        assert_eq!(state, CircuitState::Closed, "{endpoint}");
    }
    assert_eq!(reg.statistics_for("c").unwrap().metrics.window_len, 0);
    assert_eq!(ok(&reg, "b").await, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn test_per_endpoint_statistics() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    for _ in 0..3 {
        ok(&reg, "mail").await.unwrap();
    }
    fail(&reg, "mail").await.unwrap_err();
    trip(&reg, "chat").await;
    assert!(ok(&reg, "chat").await.unwrap_err().is_open());

    let stats = reg.statistics();
    let names: Vec<_> = stats.iter().map(|s| s.endpoint.as_str()).collect();
    assert_eq!(names, ["chat", "mail"], "sorted by endpoint");

    let chat = &stats[0].metrics;
    assert_eq!(chat.state, CircuitState::Open);
    assert_eq!((chat.requests, chat.allowed, chat.blocked), (5, 4, 1));
    assert_eq!((chat.successes, chat.failures), (0, 4));
    assert_eq!(chat.failure_rate, 1.0);

    let mail = &stats[1].metrics;
    assert_eq!(mail.state, CircuitState::Closed);
    assert_eq!((mail.requests, mail.allowed, mail.blocked), (4, 4, 0));
    assert_eq!((mail.successes, mail.failures), (3, 1));
    assert_eq!(mail.failure_rate, 0.25);

    assert_eq!(reg.statistics_for("mail").as_ref(), Some(&stats[1]));
    assert_eq!(
        reg.statistics_for("chat"),
        Some(EndpointStatistics {
            endpoint: "chat".into(),
            metrics: chat.clone()
        })
    );
    assert_eq!(reg.statistics_for("nobody"), None);
    assert_eq!(reg.len(), 2, "statistics create nothing");
}

// ---------------------------------------------------------------------------
// Keys and listing.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn get_all_states_is_sorted_by_endpoint() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    for e in ["zeta", "Alpha", "alpha", "", "béta", "beta", "10", "9", "ζ"] {
        reg.get_or_create(e);
    }
    reg.get_or_create("beta").force_open();
    let states = reg.get_all_states();
    let names: Vec<_> = states.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["", "10", "9", "Alpha", "alpha", "beta", "béta", "zeta", "ζ"]
    );
    assert!(states.iter().all(|(e, s)| *s
        == if e == "beta" {
            CircuitState::Open
        } else {
            CircuitState::Closed
        }));
    let stats: Vec<_> = reg.statistics().into_iter().map(|s| s.endpoint).collect();
    assert_eq!(stats, names);
}

#[tokio::test(start_paused = true)]
async fn odd_endpoint_strings_are_distinct_valid_keys() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let huge = "x".repeat(1 << 20);
    let keys: Vec<String> = vec![
        String::new(),
        " ".into(),
        "a".into(),
        "a ".into(),
        "A".into(),
        "\0".into(),
        "a\0b".into(),
        "ünïcödé/日本語/🚀".into(),
        "e\u{301}".into(), // "é" decomposed: not the same key as "é"
        "é".into(),
        "https://host:443/path?q=1#frag".into(),
        "\n\t\r".into(),
        huge.clone(),
        format!("{huge}y"),
    ];
    for k in &keys {
        assert_eq!(ok(&reg, k).await, Ok(1));
    }
    assert_eq!(reg.len(), keys.len(), "every string is a key of its own");

    // Failing one key leaves its near-twins alone.
    trip(&reg, "").await;
    trip(&reg, &huge).await;
    for k in &keys {
        let expected = if k.is_empty() || *k == huge {
            CircuitState::Open
        } else {
            CircuitState::Closed
        };
        assert_eq!(
            state_of(&reg, k),
            Some(expected),
            "{:?}",
            k.get(..20).unwrap_or(k)
        );
    }
    assert!(reg
        .get_all_states()
        .iter()
        .any(|(e, _)| e.len() == (1 << 20) + 1));
}

// ---------------------------------------------------------------------------
// Configuration overrides.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn config_override_applies_to_future_breakers() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let strict = CircuitBreakerConfig {
        sample_size: 2,
        minimum_calls: Some(1),
        ..quick()
    };
    reg.set_config("strict", strict.clone()).unwrap();
    assert!(reg.is_empty(), "an override creates no breaker");
    assert_eq!(reg.config_for("strict"), strict);
    assert_eq!(reg.config_for("other"), quick());

    let _ = fail(&reg, "strict").await;
    assert_eq!(
        state_of(&reg, "strict"),
        Some(CircuitState::Open),
        "one failure is enough"
    );
    let _ = fail(&reg, "other").await;
    assert_eq!(
        state_of(&reg, "other"),
        Some(CircuitState::Closed),
        "the default needs four"
    );
    assert_eq!(reg.get_or_create("strict").config(), strict);
    assert_eq!(reg.get_or_create("other").config(), quick());
}

#[tokio::test(start_paused = true)]
async fn config_override_applies_to_existing_breaker_and_keeps_its_state() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    ok(&reg, "svc").await.unwrap();
    let _ = fail(&reg, "svc").await;
    let breaker = reg.get_or_create("svc");
    assert_eq!(breaker.metrics().window_len, 2);

    // Judge after 3 outcomes instead of 4: the next failure (2 of 3) opens.
    let sooner = CircuitBreakerConfig {
        minimum_calls: Some(3),
        ..quick()
    };
    reg.set_config("svc", sooner.clone()).unwrap();
    assert_eq!(breaker.config(), sooner, "applied to the breaker in place");
    assert_eq!(breaker.metrics().window_len, 2, "its outcomes are kept");
    let _ = fail(&reg, "svc").await;
    assert_eq!(breaker.state(), CircuitState::Open);

    // Applied in place while Open: the state is kept too.
    reg.set_config("svc", quick()).unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(
        Arc::ptr_eq(&breaker, &reg.get_or_create("svc")),
        "not replaced"
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_override_is_rejected_and_changes_nothing() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let bad = CircuitBreakerConfig {
        failure_threshold: 0.0,
        sample_size: 0,
        ..quick()
    };
    let err = reg.set_config("svc", bad).unwrap_err();
    assert!(
        err.names("failure_threshold") && err.names("sample_size"),
        "{err}"
    );
    assert_eq!(reg.config_for("svc"), quick());
    assert!(reg.is_empty());

    // Growing the window of a live breaker is applied in place too.
    let breaker = reg.get_or_create("svc");
    let longer = CircuitBreakerConfig {
        sample_size: 400,
        minimum_calls: None,
        ..quick()
    };
    reg.set_config("svc", longer.clone()).unwrap();
    assert_eq!(breaker.config(), longer);
    assert_eq!(reg.config_for("svc"), longer);
    assert!(
        Arc::ptr_eq(&breaker, &reg.get_or_create("svc")),
        "not replaced"
    );
}

#[tokio::test(start_paused = true)]
async fn remove_config_goes_back_to_the_default() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let other = CircuitBreakerConfig {
        failure_threshold: 0.9,
        ..quick()
    };
    reg.set_config("svc", other.clone()).unwrap();
    let breaker = reg.get_or_create("svc");
    assert_eq!(breaker.config(), other);
    assert_eq!(reg.remove_config("svc").unwrap(), Some(other));
    assert_eq!(breaker.config(), quick());
    assert_eq!(reg.config_for("svc"), quick());
    assert_eq!(reg.remove_config("svc").unwrap(), None);
}

#[test]
fn invalid_registry_settings_are_rejected() {
    let bad = CircuitBreakerConfig {
        jitter_ratio: 1.0,
        ..Default::default()
    };
    assert!(PerEndpointCircuitBreaker::try_new(bad.clone())
        .unwrap_err()
        .names("jitter_ratio"));
    let no_room = limits(60, 0);
    let err = PerEndpointCircuitBreaker::try_with_limits(quick(), no_room).unwrap_err();
    assert!(err.names("max_endpoints"), "{err}");
    let panicked = std::panic::catch_unwind(|| PerEndpointCircuitBreaker::new(bad));
    assert!(panicked.is_err());
    assert_eq!(
        PerEndpointCircuitBreaker::default().limits(),
        RegistryLimits::default()
    );
    let own = RegistryLimits {
        abandoned_ttl: Duration::from_secs(7_200),
        ..limits(30, 7)
    };
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), own);
    assert_eq!(reg.limits(), own, "the limits it was given");
    assert_eq!(reg.default_config(), &quick());
    assert_eq!(
        RegistryLimits::default(),
        RegistryLimits {
            idle_ttl: Duration::from_secs(600),
            max_endpoints: 10_000,
            abandoned_ttl: Duration::from_secs(3_600),
        }
    );
}

// ---------------------------------------------------------------------------
// Idle eviction.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn idle_closed_breaker_is_evicted_after_the_ttl_and_not_before() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 100));
    ok(&reg, "idle").await.unwrap();
    advance(Duration::from_secs(59)).await;
    assert_eq!(reg.evict_idle(), 0);
    assert!(reg.get("idle").is_some());
    // `get` above was a use: the TTL starts again from the next sweep.
    advance(Duration::from_secs(59)).await;
    assert_eq!(reg.evict_idle(), 0, "stamped at the sweep after its use");
    advance(Duration::from_secs(60)).await;
    assert_eq!(reg.evict_idle(), 1);
    assert!(reg.is_empty());
    assert_eq!(reg.statistics_for("idle"), None);
}

#[tokio::test(start_paused = true)]
async fn an_evicted_endpoint_comes_back_fresh() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 100));
    let _ = fail(&reg, "svc").await;
    // Held weakly: a strong handle would keep the breaker from eviction.
    let first = Arc::downgrade(&reg.get_or_create("svc"));
    advance(Duration::from_secs(60)).await;
    assert_eq!(
        reg.evict_idle(),
        0,
        "looked up at 0 s: stamped by this sweep"
    );
    advance(Duration::from_secs(60)).await;
    assert_eq!(reg.evict_idle(), 1);
    ok(&reg, "svc").await.unwrap();
    let again = reg.statistics_for("svc").unwrap().metrics;
    assert_eq!(
        (again.successes, again.failures, again.window_len),
        (1, 0, 1)
    );
    assert!(first.upgrade().is_none(), "the evicted breaker was dropped");
}

#[tokio::test(start_paused = true)]
async fn steady_use_keeps_a_breaker() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 100));
    for _ in 0..20 {
        ok(&reg, "busy").await.unwrap();
        advance(Duration::from_secs(20)).await;
        assert_eq!(reg.evict_idle(), 0);
    }
    assert_eq!(reg.statistics_for("busy").unwrap().metrics.successes, 20);
}

#[tokio::test(start_paused = true)]
async fn a_held_breaker_is_not_evicted() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 100));
    let held = reg.get_or_create("held");
    advance(Duration::from_secs(600)).await;
    assert_eq!(reg.evict_idle(), 0);
    held.try_acquire().unwrap().success(); // used directly, not through the registry
    drop(held);
    advance(Duration::from_secs(59)).await;
    assert_eq!(reg.evict_idle(), 0, "stamped by the sweep that saw it held");
    advance(Duration::from_secs(1)).await;
    assert_eq!(reg.evict_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_keeps_its_breaker() {
    let reg = Arc::new(PerEndpointCircuitBreaker::with_limits(
        quick(),
        limits(60, 100),
    ));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let reg = reg.clone();
        async move {
            reg.call("slow", || async { rx.await.map_err(|_| "dropped") })
                .await
        }
    });
    while reg.is_empty() {
        tokio::task::yield_now().await;
    }
    advance(Duration::from_secs(600)).await;
    assert_eq!(reg.evict_idle(), 0, "a call is running through it");
    tx.send(()).unwrap();
    assert_eq!(task.await.unwrap(), Ok(()));
    assert_eq!(
        reg.statistics_for("slow").unwrap().metrics.successes,
        1,
        "recorded in the registry's breaker"
    );
    advance(Duration::from_secs(60)).await;
    assert_eq!(reg.evict_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn open_and_half_open_breakers_are_never_evicted() {
    let reg = PerEndpointCircuitBreaker::with_limits(
        CircuitBreakerConfig {
            open_timeout_ms: 3_600_000,
            max_open_timeout_ms: 3_600_000,
            ..quick()
        },
        RegistryLimits {
            abandoned_ttl: Duration::from_secs(86_400),
            ..limits(60, 100)
        },
    );
    reg.set_config("half", quick()).unwrap(); // opens for 1 s only
    trip(&reg, "open").await;
    trip(&reg, "half").await;
    reg.get_or_create("forced").force_open();
    reg.get_or_create("closed");
    advance(Duration::from_secs(1)).await;
    assert_eq!(state_of(&reg, "half"), Some(CircuitState::HalfOpen));

    advance(Duration::from_secs(3_000)).await;
    assert_eq!(reg.evict_idle(), 1, "only the closed one");
    assert_eq!(
        reg.get_all_states(),
        [
            ("forced".to_string(), CircuitState::Open),
            ("half".to_string(), CircuitState::HalfOpen),
            ("open".to_string(), CircuitState::Open),
        ]
    );

    // Once its opening ends by itself, an unused breaker stays HalfOpen,
    // and stays retained (until `abandoned_ttl`, a day here).
    advance(Duration::from_secs(3_600)).await;
    assert_eq!(reg.evict_idle(), 0);
    assert_eq!(state_of(&reg, "open"), Some(CircuitState::HalfOpen));
    // Closed again, it is evicted like any other once idle.
    ok(&reg, "half").await.unwrap();
    assert_eq!(state_of(&reg, "half"), Some(CircuitState::Closed));
    assert_eq!(reg.evict_idle(), 0, "just used");
    advance(Duration::from_secs(60)).await;
    assert_eq!(reg.evict_idle(), 1);
    assert_eq!(reg.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_sweeps_idle_breakers_without_evict_idle() {
    // TTL 60 s, so misses sweep at most every 15 s.
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 100));
    for i in 0..10 {
        reg.get_or_create(&format!("old-{i}"));
    }
    advance(Duration::from_secs(61)).await;
    ok(&reg, "old-0").await.unwrap();
    assert_eq!(reg.len(), 10, "neither time nor hits sweep");
    reg.get_or_create("a"); // t = 61: a miss sweeps
    assert_eq!(reg.len(), 2, "all old ones but the one just used went");
    advance(Duration::from_secs(1)).await;
    reg.get_or_create("w"); // t = 62: too soon to sweep again
    advance(Duration::from_secs(59)).await;
    reg.get_or_create("b"); // t = 121: sweeps; "a" (60 s) goes, "w" (59 s) stays
    assert!(reg.statistics_for("a").is_none());
    assert!(reg.statistics_for("w").is_some());
    advance(Duration::from_secs(14)).await;
    reg.get_or_create("c"); // t = 135: 14 s after the last sweep: none
    assert!(reg.statistics_for("w").is_some(), "idle, but no sweep yet");
    advance(Duration::from_secs(1)).await;
    reg.get_or_create("d"); // t = 136: sweeps
    assert!(reg.statistics_for("w").is_none());
    let names: Vec<_> = reg.get_all_states().into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, ["b", "c", "d"]);
}

// ---------------------------------------------------------------------------
// The cap.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_full_registry_evicts_least_recently_used_closed_breakers() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(3_600, 16));
    for i in 0..16 {
        reg.get_or_create(&format!("e{i:02}"));
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(reg.len(), 16);
    reg.get_or_create("new-1");
    assert_eq!(reg.len(), 16);
    assert!(reg.get("e00").is_none(), "the oldest went");
    assert!(reg.statistics_for("new-1").is_some());

    // Held, open or recently used breakers are passed over.
    let held = reg.get_or_create("e01");
    reg.get_or_create("e02").force_open();
    let _ = reg.get("e03");
    advance(Duration::from_secs(1)).await;
    reg.get_or_create("new-2");
    assert_eq!(reg.len(), 16);
    assert!(
        reg.get("e04").is_none(),
        "the oldest unused closed one went"
    );
    for kept in ["e01", "e02", "e03", "e05", "new-1", "new-2"] {
        assert!(reg.statistics_for(kept).is_some(), "{kept}");
    }
    assert_eq!(held.state(), CircuitState::Closed);
    assert_eq!(reg.overflows(), 0);
}

#[tokio::test(start_paused = true)]
async fn making_room_never_evicts_a_held_breaker_as_old_as_the_oldest() {
    // Every breaker is as old as the others (all made at the same instant,
    // the sweep's too), so the held ones are among the least recently used
    // candidates; only the one nobody holds may go.
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(3_600, 32));
    let held: Vec<_> = (0..31)
        .map(|i| reg.get_or_create(&format!("held-{i:02}")))
        .collect();
    reg.get_or_create("free");
    assert_eq!(reg.len(), 32);
    reg.get_or_create("new");
    assert!(reg.get("free").is_none(), "the unheld one made room");
    assert!(reg.statistics_for("new").is_some(), "retained");
    for (i, breaker) in held.iter().enumerate() {
        let retained = reg.get(&format!("held-{i:02}")).expect("kept");
        assert!(
            Arc::ptr_eq(&retained, breaker),
            "held-{i:02} is the same breaker"
        );
    }
    assert_eq!(reg.len(), 32);
    assert_eq!(reg.overflows(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_registry_full_of_open_breakers_still_serves_new_endpoints() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 4));
    for e in ["o1", "o2", "o3", "o4"] {
        trip(&reg, e).await;
    }
    // The new endpoint's calls run, through a shared overflow breaker.
    assert_eq!(ok(&reg, "new").await, Ok(1));
    assert_eq!(fail(&reg, "new").await, Err(CircuitError::Inner("boom")));
    assert_eq!(reg.len(), 4);
    assert!(reg.get("new").is_none());
    assert_eq!(reg.overflows(), 2);
    let unretained = reg.get_or_create("new");
    assert_eq!(unretained.state(), CircuitState::Closed);
    assert_eq!(
        unretained.config(),
        quick(),
        "with the default configuration"
    );
    assert_eq!(
        unretained.metrics().failures,
        1,
        "the same breaker each time"
    );
    assert_eq!(reg.overflows(), 3);
    for e in ["o1", "o2", "o3", "o4"] {
        assert!(reg.get(e).is_some(), "{e} kept");
    }

    // Once a breaker closes, room is made (a sweep period later).
    reg.reset_endpoint("o1");
    advance(Duration::from_secs(15)).await;
    assert_eq!(ok(&reg, "new").await, Ok(1));
    assert!(reg.get("new").is_some(), "retained now");
    assert!(reg.get("o1").is_none(), "the closed one made room");
    assert_eq!(reg.len(), 4);
    assert_eq!(reg.overflows(), 3);
    for e in ["o2", "o3", "o4"] {
        assert_eq!(state_of(&reg, e), Some(CircuitState::HalfOpen), "{e}");
    }
}

// ---------------------------------------------------------------------------
// Types and threads.
// ---------------------------------------------------------------------------

#[test]
fn the_registry_and_its_futures_are_send_sync_debug() {
    fn send_sync_debug<T: Send + Sync + std::fmt::Debug>() {}
    send_sync_debug::<PerEndpointCircuitBreaker>();
    send_sync_debug::<RegistryLimits>();
    send_sync_debug::<EndpointStatistics>();
    let reg = PerEndpointCircuitBreaker::new(quick());
    send_val(&reg.call("a", || async { Ok::<_, ()>(()) }));
    send_val(&reg.call_with(
        "a",
        |_: &Result<(), ()>| breakwater::Verdict::Ignore,
        || async { Ok(()) },
    ));
    let shown = format!("{reg:?}");
    assert!(shown.starts_with("PerEndpointCircuitBreaker"), "{shown}");
}

#[test]
fn threads_share_the_registry() {
    let reg = Arc::new(PerEndpointCircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 10,
        ..Default::default()
    }));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let shared = reg.call("shared", || async { Ok::<_, ()>(()) });
                    shared.now_or_never().unwrap().unwrap();
                    let own = format!("t{t}-{}", i % 50);
                    let own = reg.call(&own, || async { Err::<(), _>(()) });
                    assert!(own.now_or_never().unwrap().is_err());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(reg.len(), 1 + 4 * 50);
    let shared = reg.statistics_for("shared").unwrap().metrics;
    assert_eq!((shared.successes, shared.failures), (8_000, 0));
    assert_eq!(shared.state, CircuitState::Closed);
    for s in reg
        .statistics()
        .into_iter()
        .filter(|s| s.endpoint != "shared")
    {
        assert_eq!(s.metrics.state, CircuitState::Open, "{}", s.endpoint);
    }
}

#[test]
fn a_breaker_from_the_registry_is_a_plain_breaker() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    let from_registry: Arc<CircuitBreaker> = reg.get_or_create("svc");
    from_registry.try_acquire().unwrap().failure();
    assert_eq!(reg.statistics_for("svc").unwrap().metrics.failures, 1);
}

// ---------------------------------------------------------------------------
// Listeners that call back into the registry.
// ---------------------------------------------------------------------------

/// Runs `f` on a thread of its own and fails (instead of hanging the test
/// binary) when it does not finish within 10 s: a deadlock.
fn finishes(what: &str, f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} deadlocked"));
}

/// Records one success or failure per entry on `b`.
fn outcomes(b: &CircuitBreaker, oks: &[bool]) {
    for &ok in oks {
        let permit = b.try_acquire().unwrap();
        if ok {
            permit.success();
        } else {
            permit.failure();
        }
    }
}

/// Regression: `set_config` and `remove_config` ran `update_config` (which
/// can open the breaker and run its listeners) under the map's shard write
/// lock, so a listener that read the registry hung forever.
#[test]
fn a_listener_may_call_back_into_the_registry_during_set_config() {
    finishes("set_config", || {
        let reg = Arc::new(PerEndpointCircuitBreaker::new(quick()));
        let b = reg.get_or_create("api");
        outcomes(&b, &[true, true, false, true]);
        assert_eq!(b.state(), CircuitState::Closed, "25% < 50%");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let (reg, seen) = (Arc::downgrade(&reg), seen.clone());
            b.add_listener(move |_: &breakwater::Transition| {
                let reg = reg.upgrade().unwrap();
                let states = reg.get_all_states();
                assert!(reg.get("api").is_some());
                seen.lock().unwrap().push(states);
            });
        }
        drop(b);
        // A lower threshold opens the breaker at once, in `set_config`.
        let strict = CircuitBreakerConfig {
            failure_threshold: 0.25,
            ..quick()
        };
        reg.set_config("api", strict).unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [vec![("api".to_string(), CircuitState::Open)]]
        );
        // And `remove_config`, going back to a stricter default.
        let mut relaxed = CircuitBreakerConfig::clone(reg.default_config());
        relaxed.failure_threshold = 0.25;
        let reg2 = Arc::new(PerEndpointCircuitBreaker::new(relaxed));
        let b2 = reg2.get_or_create("x");
        reg2.set_config("x", quick()).unwrap();
        outcomes(&b2, &[true, true, false, true]);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        {
            let (reg2w, calls) = (Arc::downgrade(&reg2), calls.clone());
            b2.add_listener(move |_: &breakwater::Transition| {
                let reg2 = reg2w.upgrade().unwrap();
                let _ = reg2.get_all_states();
                let _ = reg2.get("x");
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        drop(b2);
        // Removing the override goes back to the 25% default: opens at once.
        assert_eq!(reg2.remove_config("x").unwrap(), Some(quick()));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            reg2.get_all_states(),
            [("x".to_string(), CircuitState::Open)]
        );
    });
}

// ---------------------------------------------------------------------------
// Abandoned endpoints, overflow and removal.
// ---------------------------------------------------------------------------

/// Regression: endpoints abandoned while failing sat HalfOpen for ever, so
/// a cap full of them left every new endpoint with a fresh, unkept breaker
/// per call: 100 calls to a dead new endpoint all reached it.
#[tokio::test(start_paused = true)]
async fn abandoned_half_open_endpoints_neither_block_protection_nor_hold_the_cap() {
    let reg = PerEndpointCircuitBreaker::with_limits(
        quick(),
        RegistryLimits {
            abandoned_ttl: Duration::from_secs(600),
            ..limits(60, 4)
        },
    );
    for e in ["o1", "o2", "o3", "o4"] {
        trip(&reg, e).await;
    }
    advance(Duration::from_secs(1)).await;
    for e in ["o1", "o2", "o3", "o4"] {
        assert_eq!(state_of(&reg, e), Some(CircuitState::HalfOpen), "{e}");
    }

    // The cap is full of breakers it must keep: a dead new endpoint still
    // gets a breaker that trips.
    let mut reached = 0;
    let mut refused = 0;
    for _ in 0..100 {
        match reg
            .call("dead", || {
                reached += 1;
                async { Err::<(), _>("down") }
            })
            .await
        {
            Err(CircuitError::Open { .. }) => refused += 1,
            Err(CircuitError::Inner(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reached, 4, "the overflow breaker opened after 4 failures");
    assert_eq!(refused, 96);
    assert!(reg.get("dead").is_none(), "not retained");

    // Idle HalfOpen breakers stay until `abandoned_ttl`...
    advance(Duration::from_secs(500)).await;
    assert_eq!(reg.evict_idle(), 0);
    // ... then go: nobody probed them for 10 minutes.
    advance(Duration::from_secs(100)).await;
    assert_eq!(reg.evict_idle(), 4);
    assert!(reg.is_empty());
    ok(&reg, "fresh").await.unwrap();
    assert!(reg.get("fresh").is_some(), "retained again");
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_with_a_probe_in_flight_is_never_evicted() {
    let reg = PerEndpointCircuitBreaker::with_limits(
        quick(),
        RegistryLimits {
            abandoned_ttl: Duration::from_secs(600),
            ..limits(60, 4)
        },
    );
    trip(&reg, "slow").await;
    advance(Duration::from_secs(1)).await;
    let probe = reg.get_or_create("slow").try_acquire_owned().unwrap();
    assert!(probe.is_probe());
    // Nobody holds the breaker but the map (the probe holds its core): the
    // first sweep ages it from now, so the second finds it abandoned.
    assert_eq!(reg.evict_idle(), 0);
    advance(Duration::from_secs(3_600)).await;
    assert_eq!(reg.evict_idle(), 0, "its probe is still running");
    assert_eq!(state_of(&reg, "slow"), Some(CircuitState::HalfOpen));
    probe.success();
    assert_eq!(state_of(&reg, "slow"), Some(CircuitState::Closed));
    advance(Duration::from_secs(60)).await;
    assert_eq!(reg.evict_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn remove_drops_one_breaker_whatever_its_state() {
    let reg = PerEndpointCircuitBreaker::new(quick());
    trip(&reg, "a").await;
    reg.get_or_create("b").force_open();
    reg.get_or_create("c");
    reg.set_config(
        "a",
        CircuitBreakerConfig {
            sample_size: 2,
            minimum_calls: Some(2),
            ..quick()
        },
    )
    .unwrap();
    assert!(reg.remove("a"));
    assert!(!reg.remove("a"));
    assert!(reg.remove("b"));
    assert_eq!(reg.len(), 1);
    assert_eq!(
        reg.get_all_states(),
        [("c".to_string(), CircuitState::Closed)]
    );
    let a = reg.get_or_create("a");
    assert_eq!(a.state(), CircuitState::Closed, "a fresh breaker");
    assert_eq!(a.config().sample_size, 2, "the override is kept");
}

/// A service restarting with saved snapshots: a tripped (not forced) breaker
/// comes back Open for the time it had left, named by its endpoint, on the
/// registry's stream; the other endpoints are untouched.
#[tokio::test(start_paused = true)]
async fn restore_puts_a_tripped_breaker_back_open_for_the_time_it_had_left() {
    let config = CircuitBreakerConfig {
        sample_size: 2,
        open_timeout_ms: 10_000,
        jitter_ratio: 0.0,
        ..Default::default()
    };
    let before = PerEndpointCircuitBreaker::new(config.clone());
    for _ in 0..2 {
        let _ = before.call("down", || async { Err::<(), _>("503") }).await;
    }
    assert_eq!(before.get("down").unwrap().state(), CircuitState::Open);
    tokio::time::advance(std::time::Duration::from_secs(4)).await;
    let saved = before.get("down").unwrap().snapshot();

    let after = PerEndpointCircuitBreaker::new(config);
    let mut events = after.subscribe();
    after.get_or_create("up");
    let restored = after.restore("down", saved).unwrap();
    assert_eq!(restored.name(), Some("down"));
    assert_eq!(
        after.get_all_states(),
        [
            ("down".to_string(), CircuitState::Open),
            ("up".to_string(), CircuitState::Closed)
        ]
    );
    let left = after.get("down").unwrap().retry_after().unwrap();
    assert!(
        left <= std::time::Duration::from_secs(6) && left > std::time::Duration::from_millis(5_500),
        "{left:?}"
    );
    let refused = after.call("down", || async { Ok::<_, &str>(()) }).await;
    assert!(matches!(
        refused,
        Err(breakwater::CircuitError::Open { .. })
    ));

    // It still recovers as a breaker of the registry does.
    tokio::time::advance(std::time::Duration::from_secs(6)).await;
    assert_eq!(after.get("down").unwrap().state(), CircuitState::HalfOpen);
    let t = events.recv().await.unwrap();
    assert_eq!((t.name(), t.to), (Some("down"), CircuitState::HalfOpen));
}

/// When the endpoints idle for longer than `idle_ttl` free enough room on
/// their own, a full registry evicts nothing else: endpoints in use stay.
#[tokio::test(start_paused = true)]
async fn when_idle_endpoints_alone_make_room_no_endpoint_in_use_goes() {
    // A minute's idle TTL: a sweep may run every 15 s.
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 32));
    for i in 0..32 {
        reg.get_or_create(&format!("e-{i:02}"));
    }
    assert_eq!(reg.evict_idle(), 0, "all of them were just used");
    tokio::time::advance(Duration::from_secs(50)).await;
    for i in 0..10 {
        assert!(reg.get(&format!("e-{i:02}")).is_some());
    }
    assert_eq!(reg.evict_idle(), 0, "idle for 50 s only");
    // 11 s later (no sweep is due yet), the 22 endpoints unused since the
    // start have been idle for 61 s; the registry is full.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(reg.len(), 32);
    reg.get_or_create("trigger");
    for i in 0..10 {
        assert!(reg.get(&format!("e-{i:02}")).is_some(), "e-{i:02} stays");
    }
    assert!(
        (10..32).all(|i| reg.get(&format!("e-{i:02}")).is_none()),
        "the idle ones went"
    );
    assert!(reg.get("trigger").is_some());
    assert_eq!(reg.len(), 11);
    assert_eq!(reg.overflows(), 0);
}

#[tokio::test(start_paused = true)]
async fn restoring_into_a_full_registry_makes_room_and_takes_a_place() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(3_600, 4));
    for e in ["e0", "e1", "e2", "e3"] {
        reg.get_or_create(e);
        advance(Duration::from_millis(1)).await;
    }
    let saved = {
        let b = CircuitBreaker::new(quick());
        b.force_open();
        b.snapshot()
    };
    reg.restore("restored", saved).unwrap();
    assert_eq!(reg.len(), 4, "one made room, the restored one took it");
    assert_eq!(reg.get_all_states().len(), 4);
    assert!(reg.get("e0").is_none(), "the least recently used went");
    assert_eq!(state_of(&reg, "restored"), Some(CircuitState::Open));
    // The cap still holds for the endpoints that come next.
    for i in 0..4 {
        advance(Duration::from_millis(1)).await;
        reg.get_or_create(&format!("new-{i}"));
        assert_eq!(reg.len(), 4);
        assert_eq!(reg.get_all_states().len(), 4);
    }
    assert_eq!(state_of(&reg, "restored"), Some(CircuitState::Open));
}

#[tokio::test(start_paused = true)]
async fn a_registry_listener_hears_every_breaker_and_breakers_lists_them() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 16));
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heard.clone();
    reg.add_listener(move |t: &breakwater::Transition| {
        log.lock()
            .unwrap()
            .push((t.name().map(str::to_owned), t.to));
    });
    trip(&reg, "a").await;
    reg.get_or_create("b").force_open();
    reg.get_or_create("c");
    // Across an eviction too: the endpoint's next breaker is heard.
    reg.reset_endpoint("a");
    advance(Duration::from_secs(61)).await;
    let first = reg.evict_idle();
    advance(Duration::from_secs(61)).await;
    assert_eq!(first + reg.evict_idle(), 2, "a and c were idle");
    assert!(reg.get("a").is_none());
    trip(&reg, "a").await;
    assert_eq!(
        *heard.lock().unwrap(),
        [
            (Some("a".to_owned()), CircuitState::Open),
            (Some("b".to_owned()), CircuitState::Open),
            (Some("a".to_owned()), CircuitState::Closed),
            (Some("a".to_owned()), CircuitState::Open),
        ]
    );
    let mut names: Vec<_> = reg
        .breakers()
        .iter()
        .map(|b| b.name().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, [Some("a".to_owned()), Some("b".to_owned())]);
}

/// The registry's clock saturates below the stamps' "used" bit: after
/// 292 471 years of uptime, breakers still count as unused between sweeps
/// and make room for new endpoints.
#[tokio::test(start_paused = true)]
async fn a_registry_clock_at_its_end_still_makes_room() {
    let reg = PerEndpointCircuitBreaker::with_limits(quick(), limits(60, 2));
    advance(Duration::from_micros(1 << 63)).await;
    reg.get_or_create("a");
    reg.get_or_create("b");
    reg.get_or_create("c");
    assert_eq!(reg.overflows(), 0, "an unused breaker made room");
    assert_eq!(reg.len(), 2);
    assert!(reg.get("c").is_some());
}

/// TTLs longer than the registry's clock can count are held at its end: a
/// breaker idle for the clock's whole range still goes, Closed or HalfOpen
/// and abandoned.
#[tokio::test(start_paused = true)]
async fn ttls_past_the_clock_range_end_with_it() {
    let reg = PerEndpointCircuitBreaker::with_limits(
        quick(),
        RegistryLimits {
            idle_ttl: Duration::MAX,
            abandoned_ttl: Duration::MAX,
            max_endpoints: 16,
        },
    );
    reg.get_or_create("closed");
    trip(&reg, "failing").await;
    assert_eq!(reg.evict_idle(), 0, "just used");
    advance(Duration::from_micros(1 << 63)).await;
    assert_eq!(state_of(&reg, "failing"), Some(CircuitState::HalfOpen));
    assert_eq!(reg.evict_idle(), 2, "idle for the clock's whole range");
    assert!(reg.is_empty());
}
