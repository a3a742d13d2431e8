//! Resilience strategies (SPEC §3): the plan's named tests, and the rules of
//! retrying (never a rejection, never a permanent error, waits within their
//! caps). Time is tokio's paused clock: waits are measured, never slept.
#![cfg(feature = "resilience")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::{
    BreakerSource, CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState,
    ExecutorMetrics, Fallback, Outcome, ResilienceStrategy, ResilientExecutor, Retry,
};
use tokio::time::Instant;

mod support;

use support::{ms, send_sync_val, send_val, Boom};

/// A breaker that judges the last `sample_size` calls (at 50% failures) and
/// stays open exactly one second.
fn config(sample_size: usize) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size,
        open_timeout_ms: 1_000,
        jitter_ratio: 0.0,
        half_open_max_requests: 1,
        ..Default::default()
    }
}

fn breaker(sample_size: usize) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(config(sample_size)))
}

fn retry(max_attempts: u32, backoff_ms: u64) -> ResilienceStrategy<u32> {
    ResilienceStrategy::RetryWithBreaker {
        max_attempts,
        backoff_ms,
    }
}

/// One breaker per endpoint, created on first use: what a per-endpoint
/// registry provides through [`BreakerSource`].
#[derive(Default)]
struct Registry {
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerSource for Registry {
    fn breaker_for(&self, key: &str) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap();
        map.entry(key.to_owned())
            .or_insert_with(|| breaker(2))
            .clone()
    }
}

impl Registry {
    fn states(&self) -> Vec<(String, CircuitState)> {
        let map = self.breakers.lock().unwrap();
        let mut states: Vec<_> = map.iter().map(|(k, b)| (k.clone(), b.state())).collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

// ---- the plan's tests ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn test_strategy_fail_fast() {
    let cb = breaker(4);
    let executor = ResilientExecutor::new(cb.clone(), ResilienceStrategy::FailFast);

    // Closed: the value passes through.
    assert_eq!(executor.execute(|| async { Ok::<_, Boom>(7) }).await, Ok(7));

    // A failed call returns its own error, and is not retried.
    let mut calls = 0;
    let result = executor
        .execute(|| {
            calls += 1;
            async { Err::<u32, _>(Boom(1)) }
        })
        .await;
    assert_eq!(result, Err(CircuitError::Inner(Boom(1))));
    assert_eq!(calls, 1);

    // Two more failures: 3 of the last 4 calls failed, the breaker opens.
    for _ in 0..2 {
        let _ = executor.execute(|| async { Err::<u32, _>(Boom(2)) }).await;
    }
    assert_eq!(cb.state(), CircuitState::Open);

    // Open: the error at once, with the time to wait, without running the call.
    let started = Instant::now();
    let mut calls = 0;
    let err = executor
        .execute(|| {
            calls += 1;
            async { Ok::<u32, Boom>(1) }
        })
        .await
        .unwrap_err();
    assert!(err.is_open());
    assert_eq!(err.retry_after(), Some(ms(1_000)));
    assert_eq!(calls, 0);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn test_strategy_fallback() {
    let cb = breaker(100);
    let executor = ResilientExecutor::new(
        cb.clone(),
        ResilienceStrategy::Fallback("default".to_string()),
    );
    let live = || async { Ok::<_, Boom>("live".to_string()) };

    // Closed: the live value.
    assert_eq!(executor.execute(live).await.unwrap(), "live");
    // A failed call is not an open circuit: its error, by default.
    let failed = executor
        .execute(|| async { Err::<String, _>(Boom(1)) })
        .await;
    assert_eq!(failed, Err(CircuitError::Inner(Boom(1))));

    // Open: the fallback, and the service is not called.
    cb.force_open();
    let mut calls = 0;
    let value = executor
        .execute(|| {
            calls += 1;
            live()
        })
        .await
        .unwrap();
    assert_eq!(value, "default");
    assert_eq!(calls, 0);

    // A fallback computed by a closure, each time it is needed.
    let made = Arc::new(AtomicU32::new(0));
    let counter = made.clone();
    let computed = ResilientExecutor::new(
        cb.clone(),
        ResilienceStrategy::fallback_with(move || {
            format!("computed {}", counter.fetch_add(1, Ordering::Relaxed) + 1)
        }),
    );
    assert_eq!(computed.execute(live).await.unwrap(), "computed 1");
    assert_eq!(computed.execute(live).await.unwrap(), "computed 2");
    assert_eq!(made.load(Ordering::Relaxed), 2);

    // Configured to, a failed call yields the fallback too; a success does not.
    cb.reset();
    let lenient = ResilientExecutor::fail_fast(cb.clone())
        .with_fallback(Fallback::on_open_or_failure("default".to_string()));
    let mut calls = 0;
    let value = lenient
        .execute(|| {
            calls += 1;
            async { Err::<String, _>(Boom(2)) }
        })
        .await
        .unwrap();
    assert_eq!((value.as_str(), calls), ("default", 1));
    assert_eq!(lenient.execute(live).await.unwrap(), "live");
}

#[tokio::test(start_paused = true)]
async fn test_strategy_retry_with_breaker() {
    let cb = breaker(100);
    let executor = ResilientExecutor::new(cb.clone(), retry(5, 100)).without_jitter();

    // Fails twice, then succeeds: waits 100 ms, then 200 ms (doubling).
    let started = Instant::now();
    let mut calls = 0;
    let value = executor
        .execute(|| {
            calls += 1;
            let n = calls;
            async move {
                if n <= 2 {
                    Err(Boom(n))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(value, Ok(3));
    assert_eq!(calls, 3);
    assert_eq!(started.elapsed(), ms(300));
    // Every attempt went through the breaker.
    let m = cb.metrics();
    assert_eq!((m.failures, m.successes), (2, 1));

    // Always failing: `max_attempts` in all, then the last error.
    let started = Instant::now();
    let mut calls = 0;
    let result = executor
        .execute(|| {
            calls += 1;
            let n = calls;
            async move { Err::<u32, _>(Boom(n)) }
        })
        .await;
    assert_eq!(result, Err(CircuitError::Inner(Boom(5))));
    assert_eq!(calls, 5);
    assert_eq!(started.elapsed(), ms(100 + 200 + 400 + 800));

    // Full jitter: each wait is drawn from [0, nominal), so the total stays
    // below the nominal one and differs from run to run.
    let jittered = ResilientExecutor::new(breaker(1_000), retry(3, 100));
    let mut totals = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let mut calls = 0;
        let _ = jittered
            .execute(|| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Boom(n))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(calls, 3);
        totals.push(started.elapsed());
    }
    assert!(totals.iter().all(|t| *t <= ms(300)), "{totals:?}");
    totals.sort();
    totals.dedup();
    assert!(
        totals.len() > 10,
        "jitter should spread the waits: {totals:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn test_strategy_combination() {
    // Retry, then a fallback once the attempts are spent.
    let cb = breaker(100);
    let executor = ResilientExecutor::new(cb.clone(), retry(3, 100))
        .without_jitter()
        .with_fallback(Fallback::on_open_or_failure(0));
    let started = Instant::now();
    let mut calls = 0;
    let value = executor
        .execute(|| {
            calls += 1;
            async { Err::<u32, _>(Boom(1)) }
        })
        .await;
    assert_eq!(value, Ok(0));
    assert_eq!((calls, started.elapsed()), (3, ms(300)));

    // Retry, then the fallback as soon as the breaker opens (no more waiting).
    let executor = ResilientExecutor::new(breaker(2), retry(5, 100))
        .without_jitter()
        .with_fallback(Fallback::on_open(0));
    let started = Instant::now();
    let mut calls = 0;
    let value = executor
        .execute(|| {
            calls += 1;
            async { Err::<u32, _>(Boom(1)) }
        })
        .await;
    assert_eq!(value, Ok(0));
    assert_eq!((calls, started.elapsed()), (2, ms(100)));
    assert_eq!(executor.breaker().state(), CircuitState::Open);

    // The same strategy over one breaker per endpoint: a dead endpoint opens
    // its own breaker and gets the fallback; the healthy one is untouched.
    let registry = Arc::new(Registry::default());
    let executor = ResilientExecutor::per_endpoint(
        registry.clone(),
        ResilienceStrategy::RetryWithBreaker {
            max_attempts: 3,
            backoff_ms: 100,
        },
    )
    .without_jitter()
    .with_fallback(Fallback::on_open("cached"));
    let mut dead_calls = 0;
    let down = executor
        .execute_on("down.example", || {
            dead_calls += 1;
            async { Err::<&str, _>(Boom(1)) }
        })
        .await;
    assert_eq!((down, dead_calls), (Ok("cached"), 2));
    let up = executor
        .execute_on("up.example", || async { Ok::<_, Boom>("live") })
        .await;
    assert_eq!(up, Ok("live"));
    // The open endpoint is not called again; the other one still is.
    let down = executor
        .execute_on("down.example", || {
            dead_calls += 1;
            async { Ok::<_, Boom>("live") }
        })
        .await;
    assert_eq!((down, dead_calls), (Ok("cached"), 2));
    assert_eq!(
        registry.states(),
        [
            ("down.example".to_string(), CircuitState::Open),
            ("up.example".to_string(), CircuitState::Closed),
        ]
    );
    assert_eq!(executor.breaker_for("up.example").metrics().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn test_strategy_metrics_tracking() {
    let cb = breaker(4);
    let executor = ResilientExecutor::new(cb.clone(), retry(3, 100))
        .without_jitter()
        .with_fallback(Fallback::on_open(0));
    assert_eq!(executor.metrics(), ExecutorMetrics::default());

    // 1. Succeeds at once.
    assert_eq!(executor.execute(|| async { Ok::<_, Boom>(1) }).await, Ok(1));
    // 2. Fails once, then succeeds.
    let mut calls = 0;
    let second = executor
        .execute(|| {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    Err(Boom(n))
                } else {
                    Ok(2)
                }
            }
        })
        .await;
    assert_eq!(second, Ok(2));
    // 3. Fails; that failure opens the breaker (2 of the last 4), so the
    //    executor stops without waiting and falls back.
    assert_eq!(
        executor.execute(|| async { Err::<u32, _>(Boom(3)) }).await,
        Ok(0)
    );
    // 4. Refused by the open breaker: the fallback.
    assert_eq!(executor.execute(|| async { Ok::<_, Boom>(4) }).await, Ok(0));

    assert_eq!(
        executor.metrics(),
        ExecutorMetrics {
            successes: 2,
            fallbacks: 2,
            errors: 0,
            attempts: 4,
            retries: 1,
            rejections: 2,
        }
    );
    // The breaker saw the same calls: four ran, one was blocked.
    let m = cb.metrics();
    assert_eq!(m.state, CircuitState::Open);
    assert_eq!((m.requests, m.allowed, m.blocked), (5, 4, 1));
    assert_eq!((m.successes, m.failures), (2, 2));

    // Without a fallback, a rejection is counted as an error.
    let fail_fast = ResilientExecutor::new(cb.clone(), ResilienceStrategy::FailFast);
    let _ = fail_fast.execute(|| async { Ok::<u32, Boom>(5) }).await;
    let m = fail_fast.metrics();
    assert_eq!((m.errors, m.rejections, m.attempts), (1, 1, 0));
}

// ---- the rules of retrying -----------------------------------------------

#[tokio::test(start_paused = true)]
async fn retry_never_retries_an_open_circuit_rejection() {
    // Refused on the first attempt: returned at once, never run, no wait.
    let cb = breaker(100);
    cb.force_open();
    let executor = ResilientExecutor::new(cb.clone(), retry(5, 100));
    let started = Instant::now();
    let mut calls = 0;
    let result = executor
        .execute(|| {
            calls += 1;
            async { Ok::<u32, Boom>(1) }
        })
        .await;
    assert_eq!(result, Err(CircuitError::Open { retry_after: None }));
    assert_eq!((calls, started.elapsed()), (0, Duration::ZERO));
    assert_eq!(cb.metrics().blocked, 1);

    // The second failure opens the breaker: stop at once, with its retry_after,
    // instead of waiting for an attempt that would be refused.
    let cb = breaker(2);
    let executor = ResilientExecutor::new(cb.clone(), retry(5, 100)).without_jitter();
    let started = Instant::now();
    let mut calls = 0;
    let err = executor
        .execute(|| {
            calls += 1;
            async { Err::<u32, _>(Boom(1)) }
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CircuitError::Open {
            retry_after: Some(ms(1_000))
        }
    );
    assert_eq!((calls, started.elapsed()), (2, ms(100)));
    assert_eq!(cb.metrics().blocked, 0, "no attempt was made against it");
}

#[tokio::test(start_paused = true)]
async fn retry_never_retries_a_permanent_error() {
    let cb = breaker(100);
    let executor = ResilientExecutor::new(cb.clone(), retry(5, 100)).without_jitter();
    // 5xx is transient, the rest permanent.
    let classify = |e: &Boom| {
        if e.0 >= 500 {
            Retry::Transient
        } else {
            Retry::Permanent
        }
    };

    let started = Instant::now();
    let mut calls = 0;
    let result = executor
        .execute_with(classify, || {
            calls += 1;
            async { Err::<u32, _>(Boom(404)) }
        })
        .await;
    assert_eq!(result, Err(CircuitError::Inner(Boom(404))));
    assert_eq!((calls, started.elapsed()), (1, Duration::ZERO));
    // A permanent error says nothing about the service: not a failure.
    let m = cb.metrics();
    assert_eq!((m.failures, m.ignored), (0, 1));

    // Transient, transient, then permanent: the retries stop there.
    let mut calls = 0;
    let result = executor
        .execute_with(classify, || {
            calls += 1;
            let code = if calls < 3 { 503 } else { 422 };
            async move { Err::<u32, _>(Boom(code)) }
        })
        .await;
    assert_eq!(result, Err(CircuitError::Inner(Boom(422))));
    assert_eq!(calls, 3);
    let m = cb.metrics();
    assert_eq!((m.failures, m.ignored), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn retry_total_delay_respects_the_cap() {
    let always_failing = |calls: &mut u32| {
        *calls += 1;
        std::future::ready(Err::<u32, _>(Boom(*calls)))
    };

    // Each wait is capped by max_backoff: 100, 200, 250, 250, 250.
    let executor = ResilientExecutor::new(breaker(1_000), retry(6, 100))
        .without_jitter()
        .with_max_backoff(ms(250));
    let started = Instant::now();
    let mut calls = 0;
    let _ = executor.execute(|| always_failing(&mut calls)).await;
    assert_eq!((calls, started.elapsed()), (6, ms(1_050)));

    // With jitter, never more than the capped nominal waits.
    let executor = ResilientExecutor::new(breaker(10_000), retry(6, 100)).with_max_backoff(ms(250));
    for _ in 0..50 {
        let started = Instant::now();
        let mut calls = 0;
        let _ = executor.execute(|| always_failing(&mut calls)).await;
        assert_eq!(calls, 6);
        assert!(started.elapsed() <= ms(1_050), "{:?}", started.elapsed());
    }

    // A total budget: 100 + 200, then the 100 ms left, then no more.
    let executor = ResilientExecutor::new(breaker(1_000), retry(10, 100))
        .without_jitter()
        .with_max_total_delay(ms(400));
    let started = Instant::now();
    let mut calls = 0;
    let _ = executor.execute(|| always_failing(&mut calls)).await;
    assert_eq!((calls, started.elapsed()), (4, ms(400)));

    // With jitter, the budget still holds, over many attempts.
    let executor =
        ResilientExecutor::new(breaker(10_000), retry(20, 100)).with_max_total_delay(ms(150));
    for _ in 0..50 {
        let started = Instant::now();
        let mut calls = 0;
        let _ = executor.execute(|| always_failing(&mut calls)).await;
        assert!(started.elapsed() <= ms(150), "{:?}", started.elapsed());
    }
}

#[tokio::test(start_paused = true)]
async fn retry_honours_a_retry_after_hint() {
    let executor = ResilientExecutor::new(breaker(100), retry(3, 100))
        .with_max_backoff(ms(1_000))
        .with_fallback(Fallback::on_open_or_failure(0));
    let hint = |e: &Boom| Retry::After(ms(u64::from(e.0)));

    // The hinted wait, exactly (no jitter, no doubling).
    let started = Instant::now();
    let mut calls = 0;
    let value = executor
        .execute_with(hint, || {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    Err(Boom(750))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(value, Ok(2));
    assert_eq!(started.elapsed(), ms(750));

    // A hint beyond the cap ends the retries: retrying sooner would ignore it.
    let started = Instant::now();
    let mut calls = 0;
    let value = executor
        .execute_with(hint, || {
            calls += 1;
            async { Err::<u32, _>(Boom(5_000)) }
        })
        .await;
    assert_eq!(value, Ok(0));
    assert_eq!((calls, started.elapsed()), (1, Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_as_transient() {
    let cb = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        call_timeout_ms: Some(50),
        ..config(100)
    }));
    let executor = ResilientExecutor::new(cb.clone(), retry(2, 100)).without_jitter();
    let mut calls = 0;
    let started = Instant::now();
    let value = executor
        .execute(|| {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    tokio::time::sleep(ms(1_000)).await;
                }
                Ok::<_, Boom>(n)
            }
        })
        .await;
    assert_eq!(value, Ok(2));
    assert_eq!(started.elapsed(), ms(50 + 100));
    assert_eq!(cb.metrics().failures, 1);
}

#[test]
fn executors_and_their_futures_are_send_and_sync() {
    let single = ResilientExecutor::new(breaker(10), ResilienceStrategy::Fallback(0_u32));
    let keyed = ResilientExecutor::per_endpoint(Arc::new(Registry::default()), retry(3, 10));
    send_sync_val(&single);
    send_sync_val(&keyed);
    send_val(&single.execute(|| async { Ok::<_, Boom>(1) }));
    send_val(&keyed.execute_on("a", || async { Ok::<_, Boom>(1) }));
}

// ---------------------------------------------------------------------------
// Extreme durations: saturating arithmetic, waits within their caps.
// ---------------------------------------------------------------------------

/// Regression: `Retry::After(Duration::MAX)` with a maximum backoff of
/// `Duration::MAX` panicked adding up the waits.
#[tokio::test(start_paused = true)]
async fn a_retry_after_of_duration_max_does_not_overflow() {
    let executor =
        ResilientExecutor::new(breaker(100), retry(3, u64::MAX)).with_max_backoff(Duration::MAX);
    let mut calls = 0;
    let result = executor
        .execute_with(
            |_: &Boom| Retry::After(Duration::MAX),
            || {
                calls += 1;
                async { Err::<u32, _>(Boom(1)) }
            },
        )
        .await;
    assert_eq!(result, Err(CircuitError::Inner(Boom(1))));
    assert_eq!(calls, 3);
}

/// Regression: full jitter rounded down to whole milliseconds, so a 1 ms
/// backoff always waited 0.
#[tokio::test(start_paused = true)]
async fn full_jitter_of_a_one_millisecond_backoff_sometimes_waits() {
    let executor = ResilientExecutor::new(breaker(1_000), retry(64, 1)).with_max_backoff(ms(1));
    let mut at = Vec::new();
    let _ = executor
        .execute(|| {
            at.push(Instant::now());
            async { Err::<u32, _>(Boom(1)) }
        })
        .await;
    assert_eq!(at.len(), 64);
    let waits: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(waits.iter().all(|w| *w <= ms(1)), "{waits:?}");
    // 63 draws of 0 or 1 ms: all 0 has probability 2^-63.
    assert!(waits.contains(&ms(1)), "{waits:?}");
    assert!(waits.contains(&Duration::ZERO), "{waits:?}");
}

mod extreme {
    use super::*;
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            Just(Duration::from_millis(u64::MAX)),
            (0_u64..5_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_millis),
            (any::<u64>(), 0_u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    fn backoff_ms() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>(), 0_u64..1_000]
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a paused current-thread runtime")
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the backoff, caps, budget and hints: no panic, no
        /// overflow, every wait within `max_backoff`, all waits within the
        /// budget (tokio's timer waits at most about 30 years for a longer
        /// sleep, which is within any cap that long).
        #[test]
        fn retry_waits_stay_within_their_caps(
            attempts in 1_u32..6,
            backoff in backoff_ms(),
            max_backoff in duration(),
            budget in proptest::option::of(duration()),
            jitter in any::<bool>(),
            hints in proptest::collection::vec(proptest::option::of(duration()), 6),
        ) {
            runtime().block_on(async {
                let mut executor = ResilientExecutor::new(breaker(1_000), retry(attempts, backoff))
                    .with_max_backoff(max_backoff)
                    ;
                if !jitter {
                    executor = executor.without_jitter();
                }
                if let Some(budget) = budget {
                    executor = executor.with_max_total_delay(budget);
                }
                let hints = hints.clone();
                let mut at = Vec::new();
                let result = executor
                    .execute_with(
                        |e: &Boom| match hints[e.0 as usize] {
                            Some(hint) => Retry::After(hint),
                            None => Retry::Transient,
                        },
                        || {
                            let n = at.len() as u32;
                            at.push(Instant::now());
                            async move { Err::<u32, _>(Boom(n)) }
                        },
                    )
                    .await;
                prop_assert!(matches!(result, Err(CircuitError::Inner(_))), "{result:?}");
                prop_assert!(!at.is_empty() && at.len() <= attempts as usize);
                let mut total = Duration::ZERO;
                for w in at.windows(2) {
                    let wait = w[1] - w[0];
                    prop_assert!(wait <= max_backoff, "{wait:?} > {max_backoff:?}");
                    total = total.saturating_add(wait);
                }
                if let Some(budget) = budget {
                    prop_assert!(total <= budget, "{total:?} > {budget:?}");
                }
                Ok(())
            })?;
        }
    }
}

/// A response-like value that cannot be cloned (as `reqwest::Response`).
#[derive(Debug, PartialEq, Eq)]
struct NotClone(u32);

#[tokio::test(start_paused = true)]
async fn retry_only_executors_take_values_that_are_not_clone() {
    let executor = ResilientExecutor::retrying(breaker(100), 3, ms(100)).without_jitter();
    let mut calls = 0;
    let value = executor
        .execute(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Boom(n))
                } else {
                    Ok(NotClone(n))
                }
            }
        })
        .await;
    assert_eq!(value, Ok(NotClone(3)));

    // Per endpoint, fail fast, and a computed fallback: no `Clone` either.
    let keyed = ResilientExecutor::per_endpoint_retrying(Arc::new(Registry::default()), 2, ms(10))
        .with_fallback(Fallback::on_open_with(|| NotClone(0)));
    keyed.breaker_for("down").force_open();
    let down = keyed
        .execute_on("down", || async { Ok::<_, Boom>(NotClone(1)) })
        .await;
    assert_eq!(down, Ok(NotClone(0)));
    let fail_fast = ResilientExecutor::fail_fast(breaker(100));
    let err = fail_fast
        .execute(|| async { Err::<NotClone, _>(Boom(7)) })
        .await;
    assert_eq!(err, Err(CircuitError::Inner(Boom(7))));
}

#[tokio::test(start_paused = true)]
async fn an_outcome_tells_a_fallback_from_a_live_answer() {
    let cb = breaker(100);
    let on_open = ResilientExecutor::new(cb.clone(), ResilienceStrategy::Fallback(0_u32));
    let transient = |_: &Boom| Retry::Transient;

    let live = on_open.execute_outcome(transient, || async { Ok(5) }).await;
    assert_eq!(live, Ok(Outcome::Live(5)));
    let live = live.unwrap();
    assert!(live.is_live() && !live.is_fallback());
    assert_eq!((*live.value(), live.cause()), (5, None));
    assert_eq!(live.into_value(), 5);

    // `Fallback` (= `Fallback::on_open`) does not answer a failed call.
    let failed = on_open
        .execute_outcome(transient, || async { Err(Boom(1)) })
        .await;
    assert_eq!(failed, Err(CircuitError::Inner(Boom(1))));

    cb.force_open();
    let stale = on_open
        .execute_outcome(transient, || async { Ok(5) })
        .await
        .unwrap();
    assert!(stale.is_fallback() && !stale.is_live());
    assert_eq!(*stale.value(), 0);
    assert!(stale.cause().is_some_and(CircuitError::is_open));

    // `on_open_or_failure` answers the failure too, and names it.
    cb.reset();
    let lenient =
        ResilientExecutor::fail_fast(cb.clone()).with_fallback(Fallback::on_open_or_failure(0_u32));
    let outcome = lenient
        .execute_outcome(transient, || async { Err(Boom(2)) })
        .await;
    assert_eq!(
        outcome,
        Ok(Outcome::Fallback {
            value: 0,
            cause: CircuitError::Inner(Boom(2)),
        })
    );
    assert_eq!(lenient.metrics().fallbacks, 1);

    // `without_fallback` takes it away again.
    let strict = lenient.without_fallback();
    let err = strict.execute(|| async { Err::<u32, _>(Boom(3)) }).await;
    assert_eq!(err, Err(CircuitError::Inner(Boom(3))));
}

#[tokio::test(start_paused = true)]
async fn jitter_can_be_turned_off_and_on_again() {
    let exact = ResilientExecutor::retrying(breaker(1_000), 3, ms(100))
        .with_jitter()
        .without_jitter();
    let started = Instant::now();
    let mut calls = 0;
    let _ = exact.execute(|| always_failing(&mut calls)).await;
    assert_eq!((calls, started.elapsed()), (3, ms(300)));

    // Back on: the waits are drawn, never longer than nominal.
    let jittered = exact.with_jitter();
    let started = Instant::now();
    let mut calls = 0;
    let _ = jittered.execute(|| always_failing(&mut calls)).await;
    assert_eq!(calls, 3);
    assert!(started.elapsed() <= ms(300));
}

#[cfg(feature = "actions")]
#[tokio::test(start_paused = true)]
async fn action_errors_classify_themselves_for_retries() {
    use breakwater::traits::Error;

    let executor = ResilientExecutor::<()>::retrying(breaker(1_000), 3, ms(100))
        .without_jitter()
        .with_max_backoff(ms(5_000));
    // A 503 with a Retry-After: retried after exactly the hint.
    let started = Instant::now();
    let mut calls = 0;
    let err = executor
        .execute_with(Retry::of_action_error, || {
            calls += 1;
            async { Err(Error::from_status(503, "busy", Some(ms(1_500)))) }
        })
        .await
        .unwrap_err();
    assert!(err.inner().is_some_and(Error::is_transient));
    assert_eq!((calls, started.elapsed()), (3, ms(3_000)));

    // A 404 and a 410: permanent, never retried, not counted.
    for status in [404, 410] {
        let failures = executor.breaker().metrics().failures;
        let mut calls = 0;
        let _ = executor
            .execute_with(Retry::of_action_error, || {
                calls += 1;
                async move { Err(Error::from_status(status, "no", None)) }
            })
            .await;
        assert_eq!(calls, 1, "status {status}");
        assert_eq!(executor.breaker().metrics().failures, failures);
    }
    assert_eq!(
        Retry::of_action_error(&Error::Timeout(ms(5))),
        Retry::Transient
    );
}

fn always_failing(calls: &mut u32) -> std::future::Ready<Result<u32, Boom>> {
    *calls += 1;
    std::future::ready(Err(Boom(*calls)))
}

#[test]
fn strategies_executors_and_fallbacks_print_their_settings_in_debug() {
    let debug = |s: &ResilienceStrategy<u32>| format!("{s:?}");
    assert_eq!(debug(&ResilienceStrategy::FailFast), "FailFast");
    assert_eq!(debug(&ResilienceStrategy::Fallback(7)), "Fallback(7)");
    assert_eq!(
        debug(&ResilienceStrategy::fallback_with(|| 7)),
        "FallbackWith(..)"
    );
    assert_eq!(
        debug(&retry(3, 100)),
        "RetryWithBreaker { max_attempts: 3, backoff_ms: 100 }"
    );
    let executor = ResilientExecutor::new(breaker(4), retry(3, 100))
        .with_max_total_delay(ms(900))
        .with_fallback(Fallback::on_open_or_failure_with(|| 5));
    // The default cap on a wait (10 s) and jitter (on) included.
    assert_eq!(
        format!("{executor:?}"),
        "ResilientExecutor { max_attempts: 3, backoff: 100ms, \
         fallback: Some(Fallback { source: \"computed\", when: OpenOrFailure }), \
         max_backoff: 10s, max_total_delay: Some(900ms), jitter: true, .. }"
    );
    assert_eq!(
        format!("{:?}", Fallback::on_open(7u32)),
        r#"Fallback { source: "value", when: Open }"#
    );
}
