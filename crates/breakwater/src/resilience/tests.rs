//! The plan's named tests, and one test per rule of the breaker's semantics.
//! Time is tokio's paused clock: tests advance it, never sleep on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::advance;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

fn config(sample_size: usize) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size,
        open_timeout_ms: 1_000,
        max_open_timeout_ms: 60_000,
        jitter_ratio: 0.0,
        half_open_max_requests: 2,
        ..Default::default()
    }
}

async fn ok(cb: &CircuitBreaker) -> Result<u32, CircuitError<Boom>> {
    cb.call(|| async { Ok(1) }).await
}

async fn fail(cb: &CircuitBreaker) -> Result<u32, CircuitError<Boom>> {
    cb.call(|| async { Err(Boom) }).await
}

/// Trips a breaker of `config(n)` with `n` failures.
async fn tripped(n: usize) -> CircuitBreaker {
    let cb = CircuitBreaker::new(config(n));
    for _ in 0..n {
        let _ = fail(&cb).await;
    }
    assert_eq!(cb.state(), CircuitState::Open);
    cb
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- the plan's tests ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_closed_state() {
    let cb = CircuitBreaker::new(config(10));
    assert_eq!(cb.state(), CircuitState::Closed);
    for _ in 0..6 {
        assert_eq!(ok(&cb).await, Ok(1));
    }
    // 4 failures of 10: 40% < 50%, stays Closed and every call ran.
    for _ in 0..4 {
        assert_eq!(fail(&cb).await, Err(CircuitError::Inner(Boom)));
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    assert!((cb.failure_rate() - 0.4).abs() < 1e-12);
    let m = cb.metrics();
    assert_eq!(
        (m.allowed, m.blocked, m.successes, m.failures),
        (10, 0, 6, 4)
    );
    assert_eq!(m.requests, 10);
    assert_eq!(m.state_changes, 0);
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_open_state() {
    let cb = CircuitBreaker::new(config(4));
    for _ in 0..2 {
        ok(&cb).await.unwrap();
    }
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Closed, "25% < 50%");
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open, "50% >= 50% opens");

    let ran = AtomicUsize::new(0);
    advance(ms(300)).await;
    let err = cb
        .call(|| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Boom>(())
        })
        .await
        .unwrap_err();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "an open circuit runs nothing"
    );
    assert_eq!(
        err,
        CircuitError::Open {
            retry_after: Some(ms(700))
        }
    );
    assert!(err.is_open());
    assert_eq!(cb.metrics().blocked, 1);
    assert_eq!(cb.retry_after(), Some(ms(700)));
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_half_open_recovery() {
    let cb = tripped(4).await;
    advance(ms(999)).await;
    assert_eq!(cb.state(), CircuitState::Open);
    advance(ms(1)).await;
    assert_eq!(cb.state(), CircuitState::HalfOpen, "visible without a call");

    // Two probe slots: a third concurrent call is refused without a wait.
    let p1 = cb.try_acquire().unwrap();
    let p2 = cb.try_acquire().unwrap();
    assert!(p1.is_probe() && p2.is_probe());
    assert_eq!(
        cb.try_acquire().unwrap_err(),
        CircuitError::Open { retry_after: None }
    );
    p1.success();
    assert_eq!(cb.state(), CircuitState::HalfOpen, "one success of two");
    p2.success();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.failure_rate(), 0.0, "the window starts empty");
    assert_eq!(cb.metrics().window_len, 0);
    assert_eq!(cb.metrics().open_streak, 0);
    assert_eq!(cb.metrics().half_open_tests, 2);
}

#[tokio::test(start_paused = true)]
async fn test_circuit_breaker_timeout_calculation() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 1,
        open_timeout_ms: 100,
        backoff_multiplier: 3.0,
        max_open_timeout_ms: 1_000,
        jitter_ratio: 0.0,
        half_open_max_requests: 1,
        ..Default::default()
    });
    let mut seen = Vec::new();
    fail(&cb).await.unwrap_err();
    for _ in 0..4 {
        let wait = cb.retry_after().unwrap();
        seen.push(wait.as_millis());
        advance(wait).await;
        assert_eq!(cb.state(), CircuitState::HalfOpen);
        fail(&cb).await.unwrap_err(); // the probe fails: reopen, longer
    }
    assert_eq!(seen, [100, 300, 900, 1_000], "x3 each time, capped at 1 s");

    // Closing resets the streak: the next opening is the first again.
    advance(cb.retry_after().unwrap()).await;
    ok(&cb).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.retry_after(), Some(ms(100)));

    // With jitter, each opening lies within [1 - j, 1 + j] of nominal.
    let mut lengths = Vec::new();
    for _ in 0..50 {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 1,
            open_timeout_ms: 1_000,
            jitter_ratio: 0.2,
            ..Default::default()
        });
        fail(&cb).await.unwrap_err();
        lengths.push(cb.retry_after().unwrap());
    }
    assert!(lengths.iter().all(|d| *d >= ms(800) && *d <= ms(1_200)));
    assert!(lengths.iter().any(|d| *d != lengths[0]), "jitter varies");
}

#[test]
fn test_circuit_breaker_config_defaults() {
    let c = CircuitBreakerConfig::default();
    assert!(c.enabled);
    assert_eq!(c.failure_threshold, 0.5);
    assert_eq!(c.sample_size, 100);
    assert_eq!(c.minimum_calls, None);
    assert_eq!(c.minimum_calls(), 100);
    assert_eq!(c.open_timeout_ms, 30_000);
    assert_eq!(c.half_open_max_requests, 5);
    assert_eq!(c.backoff_multiplier, 2.0);
    assert_eq!(c.max_open_timeout_ms, 300_000);
    assert_eq!(c.jitter_ratio, 0.1);
    assert_eq!(c.window_ms, None);
    assert_eq!(c.slow_call_ms, None);
    assert_eq!(c.slow_call_rate_threshold, 1.0);
    assert_eq!(c.probe_timeout_ms, None);
    assert_eq!(c.call_timeout_ms, None);
    assert!(c.validate().is_ok());
    // An empty document is the defaults.
    let parsed: CircuitBreakerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, c);
}

#[test]
fn test_circuit_breaker_config_validation() {
    let bad = CircuitBreakerConfig {
        enabled: true,
        failure_threshold: f64::NAN,
        sample_size: 0,
        minimum_calls: Some(5),
        open_timeout_ms: 0,
        half_open_max_requests: 0,
        backoff_multiplier: 0.5,
        max_open_timeout_ms: 10,
        jitter_ratio: 1.0,
        window_ms: Some(0),
        slow_call_ms: Some(0),
        slow_call_rate_threshold: 0.0,
        probe_timeout_ms: Some(0),
        call_timeout_ms: Some(u64::MAX),
    };
    let err = bad.validate().unwrap_err();
    let fields: Vec<_> = err.problems().iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "failure_threshold",
            "sample_size",
            "minimum_calls",
            "open_timeout_ms",
            "half_open_max_requests",
            "backoff_multiplier",
            "jitter_ratio",
            "window_ms",
            "slow_call_ms",
            "slow_call_rate_threshold",
            "probe_timeout_ms",
            "call_timeout_ms",
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with(
        "invalid circuit breaker config: failure_threshold: must be in (0, 1], got NaN"
    ));
    assert!(CircuitBreaker::try_new(bad.clone())
        .unwrap_err()
        .names("sample_size"));

    let over = CircuitBreakerConfig {
        max_open_timeout_ms: 5,
        open_timeout_ms: 10,
        ..Default::default()
    };
    assert!(over.validate().unwrap_err().names("max_open_timeout_ms"));
    let min = CircuitBreakerConfig {
        sample_size: 10,
        minimum_calls: Some(11),
        ..Default::default()
    };
    assert!(min.validate().unwrap_err().names("minimum_calls"));

    // Unknown keys are refused by name.
    let e =
        serde_json::from_str::<CircuitBreakerConfig>(r#"{"failure_treshold": 0.5}"#).unwrap_err();
    assert!(e.to_string().contains("failure_treshold"), "{e}");

    // `new` panics with the same message.
    let panic = std::panic::catch_unwind(|| CircuitBreaker::new(bad)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert_eq!(*msg, text);
}

// ---- failure rate and windows -------------------------------------------

#[tokio::test(start_paused = true)]
async fn minimum_calls_gate_the_judgement() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        minimum_calls: Some(3),
        ..config(10)
    });
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err();
    assert_eq!(
        cb.state(),
        CircuitState::Closed,
        "2 outcomes < minimum_calls"
    );
    assert_eq!(cb.failure_rate(), 1.0);
    // A success that brings the window to minimum_calls is judged too.
    ok(&cb).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Open, "2/3 >= 50%");
}

#[tokio::test(start_paused = true)]
async fn rate_is_judged_over_the_last_sample_size_outcomes() {
    let cb = CircuitBreaker::new(config(4));
    fail(&cb).await.unwrap_err();
    for _ in 0..4 {
        ok(&cb).await.unwrap();
    }
    assert_eq!(cb.failure_rate(), 0.0, "the failure slid out of the window");
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.failure_rate(), 0.25);
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn classifier_ignores_count_neither_way() {
    let cb = CircuitBreaker::new(config(2));
    for _ in 0..5 {
        let r = cb
            .call_with(
                |_: &Result<(), Boom>| Verdict::Ignore,
                || async { Err(Boom) },
            )
            .await;
        assert_eq!(
            r,
            Err(CircuitError::Inner(Boom)),
            "the error still reaches the caller"
        );
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    let m = cb.metrics();
    assert_eq!(
        (m.ignored, m.failures, m.successes, m.window_len),
        (5, 0, 0, 0)
    );
    // And an Ok can count as a failure.
    for _ in 0..2 {
        let _ = cb
            .call_with(
                |_: &Result<u16, Boom>| Verdict::Failure,
                || async { Ok(503) },
            )
            .await;
    }
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        slow_call_ms: Some(100),
        slow_call_rate_threshold: 0.5,
        ..config(4)
    });
    let slow = || async {
        tokio::time::sleep(ms(150)).await;
        Ok::<_, Boom>(())
    };
    cb.call(|| async { Ok::<_, Boom>(()) }).await.unwrap();
    cb.call(slow).await.unwrap();
    cb.call(|| async { Ok::<_, Boom>(()) }).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    cb.call(slow).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Open, "2 slow of 4 >= 50%");
    assert_eq!(cb.metrics().slow_calls, 2);
    assert_eq!(cb.metrics().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        window_ms: Some(10_000),
        minimum_calls: Some(4),
        ..config(100)
    });
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err();
    advance(ms(11_000)).await;
    assert_eq!(cb.failure_rate(), 0.0, "older than the window");
    ok(&cb).await.unwrap();
    fail(&cb).await.unwrap_err();
    ok(&cb).await.unwrap();
    assert_eq!(
        cb.state(),
        CircuitState::Closed,
        "3 recent outcomes < minimum_calls 4"
    );
    fail(&cb).await.unwrap_err();
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "2 of the last 4 within 10 s"
    );
}

// ---- open, half-open, timers ----------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_at_once_with_a_longer_timeout() {
    let cb = tripped(2).await;
    advance(ms(1_000)).await;
    let probe = cb.try_acquire().unwrap();
    probe.failure();
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(cb.retry_after(), Some(ms(2_000)));
    assert_eq!(cb.metrics().open_streak, 2);
}

#[tokio::test(start_paused = true)]
async fn the_timer_half_opens_without_any_call() {
    let cb = tripped(2).await;
    let mut events = cb.subscribe();
    advance(ms(1_000)).await;
    // No call and no state(): the opening's timer task moved it.
    let t = tokio::time::timeout(ms(1), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::HalfOpen));
    assert_eq!(
        cb.metrics()
            .transitions_between(CircuitState::Open, CircuitState::HalfOpen),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_under_load_advise_a_wait_within_one_tick() {
    let cb = tripped(2).await;
    // Enough rejections to wake the ticker, then let time pass.
    for _ in 0..200 {
        cb.try_acquire().unwrap_err();
        tokio::task::yield_now().await;
    }
    for step in 1..=9 {
        advance(ms(100)).await;
        // Let the timer task, a task of its own, run at the new time.
        tokio::task::yield_now().await;
        let truth = ms(1_000 - 100 * step);
        let advised = cb.try_acquire().unwrap_err().retry_after().unwrap();
        assert!(
            advised >= truth,
            "never shorter than the truth: {advised:?} < {truth:?}"
        );
        assert!(
            advised <= truth + ms(2),
            "at most a tick longer: {advised:?} vs {truth:?}"
        );
    }
}

/// Moves the paused clock by `d` without letting any task run: what a
/// runtime whose thread is blocked (or whose timers fire late) looks like
/// to the code that runs next on it.
fn advance_while_blocked(d: Duration) {
    use futures_util::FutureExt;
    // The first poll moves the clock, then yields: dropping the future
    // there leaves every timer task unpolled.
    assert!(advance(d).now_or_never().is_none());
}

/// Regression (a late timer task): the breaker is open for 1 s and its
/// timer task keeps a fresh clock reading for rejections; then the runtime
/// is blocked past the deadline. The next call must be a probe (not a
/// rejection trusting the old reading), and `state()` agrees.
#[tokio::test(start_paused = true)]
async fn regression_no_call_is_refused_after_the_deadline_however_late_the_timer() {
    let cb = tripped(2).await;
    for _ in 0..200 {
        cb.try_acquire().unwrap_err();
        tokio::task::yield_now().await;
    }
    advance(ms(100)).await;
    tokio::task::yield_now().await;
    cb.try_acquire().unwrap_err();
    advance_while_blocked(ms(1_150));
    for i in 0..100 {
        match cb.try_acquire() {
            Ok(permit) => {
                assert!(permit.is_probe(), "call {i} after the deadline");
                drop(permit);
            }
            Err(e) => panic!("call {i} after the deadline was refused: {e:?}"),
        }
    }
    assert_eq!(cb.state(), CircuitState::HalfOpen);

    // And the rejections before the deadline advise the exact wait.
    let cb = tripped(2).await;
    for _ in 0..200 {
        cb.try_acquire().unwrap_err();
        tokio::task::yield_now().await;
    }
    advance(ms(10)).await;
    advance_while_blocked(ms(500));
    for _ in 0..100 {
        assert_eq!(cb.try_acquire().unwrap_err().retry_after(), Some(ms(490)));
    }
    advance_while_blocked(ms(490));
    assert!(cb.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_is_cancelled_and_counts_as_a_failure() {
    let cb = tripped(2).await;
    advance(ms(1_000)).await;
    // The probe never finishes; the default probe timeout is the opening
    // that just ended (1 s). Paused time auto-advances to it.
    let err = cb
        .call(std::future::pending::<Result<(), Boom>>)
        .await
        .unwrap_err();
    assert_eq!(err, CircuitError::Timeout { limit: ms(1_000) });
    assert_eq!(err.to_string(), "call timed out after 1s");
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(cb.metrics().open_streak, 2);
}

#[tokio::test(start_paused = true)]
async fn probe_timeout_can_be_configured() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        probe_timeout_ms: Some(50),
        ..config(1)
    });
    fail(&cb).await.unwrap_err();
    advance(ms(1_000)).await;
    let p = cb.try_acquire().unwrap();
    assert_eq!(p.time_limit(), Some(ms(50)));
    drop(p);
    let start = tokio::time::Instant::now();
    let err = cb
        .call(std::future::pending::<Result<(), Boom>>)
        .await
        .unwrap_err();
    assert_eq!(err, CircuitError::Timeout { limit: ms(50) });
    assert_eq!(start.elapsed(), ms(50));
}

/// Regression: a timeout did not say which limit fired (the action
/// executor reported a probe cut off at 500 ms as "60 s", or as 0 ns when
/// only the probe limit was set). With both limits set, a probe gets the
/// shorter one, and the error carries it.
#[tokio::test(start_paused = true)]
async fn a_timeout_carries_the_limit_that_fired() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        call_timeout_ms: Some(60_000),
        probe_timeout_ms: Some(500),
        ..config(1)
    });
    let hung = || cb.call(std::future::pending::<Result<(), Boom>>);
    assert_eq!(
        hung().await,
        Err(CircuitError::Timeout { limit: ms(60_000) })
    );
    assert_eq!(cb.state(), CircuitState::Open);
    advance(ms(1_000)).await;
    let err = hung().await.unwrap_err();
    assert_eq!(err, CircuitError::Timeout { limit: ms(500) });
    assert_eq!(err.to_string(), "call timed out after 500ms");
    assert!(err.is_timeout() && !err.is_open());
    assert_eq!(err.into_inner(), None);
}

#[tokio::test(start_paused = true)]
async fn call_timeout_cancels_and_counts_a_failure() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        call_timeout_ms: Some(200),
        ..config(2)
    });
    for _ in 0..2 {
        let err = cb
            .call(|| async {
                tokio::time::sleep(ms(500)).await;
                Ok::<_, Boom>(())
            })
            .await
            .unwrap_err();
        assert!(err.is_timeout());
    }
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(cb.metrics().failures, 2);
}

/// A time-limited call makes its timer only once its future is `Pending`:
/// one that is ready at once runs without a runtime and is recorded.
#[test]
fn a_time_limited_call_ready_at_once_needs_no_timer() {
    use futures_util::FutureExt;
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        call_timeout_ms: Some(200),
        ..config(2)
    });
    assert_eq!(cb.try_acquire().unwrap().time_limit(), Some(ms(200)));
    let r = cb.call(|| async { Ok::<_, Boom>(7) }).now_or_never();
    assert_eq!(r, Some(Ok(7)));
    let r = cb.call(|| async { Err::<u32, _>(Boom) }).now_or_never();
    assert_eq!(r, Some(Err(CircuitError::Inner(Boom))));
    let m = cb.metrics();
    assert_eq!((m.successes, m.failures), (1, 1));
}

/// Dropping a call's future drops the call's own future first and then
/// frees its permit, as the locals of an `async fn` are dropped.
#[test]
fn a_dropped_call_drops_its_future_before_freeing_its_permit() {
    struct Hung<'a> {
        cb: &'a CircuitBreaker,
        cancelled_then: &'a AtomicUsize,
    }
    impl std::future::Future for Hung<'_> {
        type Output = Result<(), Boom>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Pending
        }
    }
    impl Drop for Hung<'_> {
        fn drop(&mut self) {
            let cancelled = self.cb.metrics().cancelled as usize;
            self.cancelled_then.store(cancelled + 1, Ordering::SeqCst);
        }
    }
    let cb = CircuitBreaker::new(config(2));
    let cancelled_then = AtomicUsize::new(0);
    let mut call = Box::pin(cb.call(|| Hung {
        cb: &cb,
        cancelled_then: &cancelled_then,
    }));
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    assert!(call.as_mut().poll(&mut cx).is_pending());
    drop(call);
    // Nothing was cancelled yet when the call's future was dropped.
    assert_eq!(cancelled_then.load(Ordering::SeqCst), 1);
    assert_eq!(cb.metrics().cancelled, 1);
}

/// A call whose future spends tokio's whole cooperative budget on every
/// poll still times out (as under `tokio::time::timeout`).
#[tokio::test]
async fn a_call_that_spends_its_budget_still_times_out() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        call_timeout_ms: Some(20),
        ..config(2)
    });
    let start = tokio::time::Instant::now();
    let err = cb
        .call(|| async {
            loop {
                tokio::task::consume_budget().await;
            }
            #[allow(unreachable_code)]
            Ok::<(), Boom>(())
        })
        .await
        .unwrap_err();
    assert_eq!(err, CircuitError::Timeout { limit: ms(20) });
    assert!(start.elapsed() >= ms(20));
    assert_eq!(cb.metrics().failures, 1);
}

// ---- generations: stale outcomes ----------------------------------------

#[tokio::test(start_paused = true)]
async fn a_late_success_does_not_close_a_half_open_breaker() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        half_open_max_requests: 1,
        ..config(2)
    });
    let slow = cb.try_acquire().unwrap(); // admitted while Closed
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open);
    advance(ms(1_000)).await;
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    slow.success(); // finishes now, but describes the old Closed state
    assert_eq!(
        cb.state(),
        CircuitState::HalfOpen,
        "a stale success must not close it"
    );
    // The probe slot is still free for a real probe.
    cb.try_acquire().unwrap().success();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_failure_does_not_land_in_a_fresh_window() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        half_open_max_requests: 1,
        ..config(2)
    });
    let slow = cb.try_acquire().unwrap();
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err();
    advance(ms(1_000)).await;
    ok(&cb).await.unwrap(); // the probe: closes with an empty window
    assert_eq!(cb.state(), CircuitState::Closed);
    slow.failure();
    assert_eq!(cb.failure_rate(), 0.0, "the stale failure was ignored");
    assert_eq!(cb.metrics().window_len, 0);
    assert_eq!(
        cb.metrics().failures,
        3,
        "but it is still counted as a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_probe_outcome_is_ignored_after_the_breaker_reopened() {
    let cb = tripped(2).await;
    advance(ms(1_000)).await;
    let p1 = cb.try_acquire().unwrap();
    let p2 = cb.try_acquire().unwrap();
    p1.failure(); // reopens
    assert_eq!(cb.state(), CircuitState::Open);
    p2.success();
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(cb.retry_after(), Some(ms(2_000)));
}

// ---- cancellation and panics ----------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot_and_records_nothing() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        half_open_max_requests: 1,
        ..config(2)
    });
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err();
    advance(ms(1_000)).await;
    let hung = cb.call(std::future::pending::<Result<(), Boom>>);
    // The outer task gives up on the probe after 10 ms.
    assert!(tokio::time::timeout(ms(10), hung).await.is_err());
    assert_eq!(cb.state(), CircuitState::HalfOpen, "nothing recorded");
    assert_eq!(cb.metrics().cancelled, 1);
    ok(&cb).await.expect("the slot is free again");
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_owned_permit_dropped_unused_frees_its_probe_slot() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        half_open_max_requests: 1,
        ..config(1)
    });
    fail(&cb).await.unwrap_err();
    advance(ms(1_000)).await;
    let probe = cb.try_acquire_owned().unwrap();
    assert!(probe.is_probe());
    assert!(cb.try_acquire_owned().is_err(), "one probe at a time");
    drop(probe);
    assert_eq!(cb.metrics().cancelled, 1);
    assert_eq!(cb.state(), CircuitState::HalfOpen, "nothing recorded");
    // A panic while holding one is the probe failing.
    let probe = cb.try_acquire_owned().expect("the slot is free again");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = probe;
        panic!("the call panicked");
    }));
    assert!(panicked.is_err());
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(cb.metrics().failures, 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_closed_call_records_nothing() {
    let cb = CircuitBreaker::new(config(1));
    let fut = cb.call(std::future::pending::<Result<(), Boom>>);
    assert!(tokio::time::timeout(ms(10), fut).await.is_err());
    assert_eq!(cb.metrics().window_len, 0);
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_panic_counts_as_a_failure_and_poisons_nothing() {
    use futures_util::FutureExt;
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        half_open_max_requests: 1,
        ..config(2)
    });
    for _ in 0..2 {
        let r = std::panic::AssertUnwindSafe(cb.call(|| async {
            if true {
                panic!("the operation panicked");
            }
            Ok::<(), Boom>(())
        }))
        .catch_unwind()
        .await;
        assert!(r.is_err(), "the panic reaches the caller");
    }
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(cb.metrics().failures, 2);
    // A panicking probe reopens; a panicking closure (before any future) too.
    advance(ms(1_000)).await;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _p = cb.try_acquire().unwrap();
        panic!("while holding a probe permit");
    }));
    assert!(r.is_err());
    assert_eq!(cb.state(), CircuitState::Open);
    // Still fully usable.
    advance(ms(2_000)).await;
    ok(&cb).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_listener_does_not_break_the_breaker() {
    let cb = CircuitBreaker::new(config(1));
    let seen = Arc::new(AtomicUsize::new(0));
    cb.add_listener(|_: &Transition| panic!("listener bug"));
    let s = seen.clone();
    cb.add_listener(move |_: &Transition| {
        s.fetch_add(1, Ordering::SeqCst);
    });
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "later listeners still run");
    cb.reset();
    ok(&cb).await.unwrap();
}

// ---- modes: disabled, forced, reset ---------------------------------------

#[tokio::test(start_paused = true)]
async fn disabled_counts_but_never_changes_state() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        enabled: false,
        ..config(2)
    });
    for _ in 0..10 {
        assert_eq!(fail(&cb).await, Err(CircuitError::Inner(Boom)));
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.metrics().failures, 10);
    assert_eq!(cb.failure_rate(), 1.0);
    // Enabling it at runtime judges the next outcome.
    cb.update_config(config(2)).unwrap();
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn force_open_holds_until_reset_or_force_closed() {
    let cb = CircuitBreaker::new(config(2));
    cb.force_open();
    assert_eq!(cb.state(), CircuitState::Open);
    advance(ms(3_600_000)).await;
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "no timeout ends a forced opening"
    );
    assert_eq!(
        fail(&cb).await,
        Err(CircuitError::Open { retry_after: None })
    );
    cb.force_closed();
    assert_eq!(cb.state(), CircuitState::Closed);
    for _ in 0..10 {
        fail(&cb).await.unwrap_err();
    }
    assert_eq!(
        cb.state(),
        CircuitState::Closed,
        "forced closed: counted, never trips"
    );
    assert_eq!(cb.failure_rate(), 1.0);
    cb.reset();
    assert_eq!(cb.failure_rate(), 0.0, "reset empties the window");
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open, "a normal breaker again");
    assert_eq!(
        cb.retry_after(),
        Some(ms(1_000)),
        "reset cleared the streak"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disabled_open_breaker_is_reset_in_one_transition() {
    let cb = tripped(1).await;
    cb.update_config(CircuitBreakerConfig {
        enabled: false,
        ..config(1)
    })
    .unwrap();
    let mut rx = cb.subscribe();
    advance(ms(5_000)).await;
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "disabled: the state is frozen"
    );
    cb.reset();
    assert_eq!(cb.state(), CircuitState::Closed);
    let t = rx.try_recv().unwrap();
    assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::Closed));
    assert!(rx.try_recv().is_err(), "no HalfOpen on the way");
    assert_eq!(cb.metrics().state_changes, 2);
}

#[tokio::test(start_paused = true)]
async fn reset_clears_the_backoff_streak() {
    let cb = tripped(1).await;
    advance(ms(1_000)).await;
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.metrics().open_streak, 2);
    cb.reset();
    assert_eq!(cb.metrics().open_streak, 0);
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_reads_have_no_side_effects_on_counters() {
    let cb = tripped(2).await;
    let before = cb.metrics();
    for _ in 0..100 {
        cb.state();
        cb.failure_rate();
    }
    let after = cb.metrics();
    assert_eq!(
        (before.requests, before.blocked, before.allowed),
        (after.requests, after.blocked, after.allowed)
    );
}

// ---- reconfiguration and restarts ----------------------------------------

#[tokio::test(start_paused = true)]
async fn update_config_keeps_state_and_outcomes() {
    let cb = CircuitBreaker::new(config(4));
    fail(&cb).await.unwrap_err();
    ok(&cb).await.unwrap();
    ok(&cb).await.unwrap();
    cb.update_config(CircuitBreakerConfig {
        failure_threshold: 0.9,
        ..config(4)
    })
    .unwrap();
    assert!(
        (cb.failure_rate() - 1.0 / 3.0).abs() < 1e-12,
        "outcomes kept"
    );
    cb.update_config(CircuitBreakerConfig {
        failure_threshold: 0.3,
        ..config(2)
    })
    .unwrap();
    assert_eq!(cb.metrics().window_len, 2, "shrunk to the last two");
    assert_eq!(cb.failure_rate(), 0.0);
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open, "the new threshold applies");
    let left = cb.retry_after();
    cb.update_config(CircuitBreakerConfig {
        open_timeout_ms: 5_000,
        ..config(2)
    })
    .unwrap();
    assert_eq!(cb.state(), CircuitState::Open, "state kept");
    assert_eq!(cb.retry_after(), left, "the opening keeps its deadline");

    let err = cb
        .update_config(CircuitBreakerConfig {
            failure_threshold: 2.0,
            ..config(2)
        })
        .unwrap_err();
    assert!(err.names("failure_threshold"));
    assert_eq!(
        cb.config().failure_threshold,
        0.5,
        "nothing changed on error"
    );
}

#[tokio::test(start_paused = true)]
async fn shrinking_the_window_to_one_outcome_keeps_only_the_latest() {
    let cb = CircuitBreaker::new(config(4));
    fail(&cb).await.unwrap_err();
    ok(&cb).await.unwrap();
    cb.update_config(config(1)).unwrap();
    assert_eq!(cb.snapshot().outcomes, "S");
    assert_eq!(cb.failure_rate(), 0.0);
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_restored_stays_open_for_the_time_it_had_left() {
    let cb = tripped(2).await;
    advance(ms(400)).await;
    let json = serde_json::to_string(&cb.snapshot()).unwrap();
    drop(cb);
    let snapshot: CircuitSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(snapshot.open_remaining_ms, Some(600));
    let restored = CircuitBreaker::restore(config(2), snapshot).unwrap();
    assert_eq!(restored.state(), CircuitState::Open);
    let left = restored.retry_after().unwrap();
    // Less the wall-clock time the restore took (a few ms at most).
    assert!(left <= ms(600) && left >= ms(500), "{left:?}");
    advance(left - ms(1)).await;
    assert_eq!(restored.state(), CircuitState::Open);
    advance(ms(1)).await;
    assert_eq!(restored.state(), CircuitState::HalfOpen);
    assert_eq!(restored.metrics().open_streak, 1);
}

/// A snapshot carries the wall-clock time it was taken; restoring it takes
/// the wall-clock time since then off the remaining opening.
#[tokio::test(start_paused = true)]
async fn a_restored_opening_loses_the_wall_clock_time_since_the_snapshot() {
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let cb = tripped(2).await;
    let before = unix_now();
    let snapshot = cb.snapshot();
    let after = unix_now();
    assert!(
        (before..=after).contains(&snapshot.taken_at_unix_ms),
        "taken at {} outside {before}..={after}",
        snapshot.taken_at_unix_ms
    );
    assert_eq!(snapshot.open_remaining_ms, Some(1_000));
    // Taken 300 ms ago (by the wall clock): 700 ms of the opening are left.
    let older = CircuitSnapshot {
        taken_at_unix_ms: snapshot.taken_at_unix_ms - 300,
        ..snapshot
    };
    let restored = CircuitBreaker::restore(config(2), older).unwrap();
    let left = restored.retry_after().unwrap();
    // Less the wall-clock time the restore took (a few ms at most).
    assert!(left <= ms(700) && left >= ms(600), "{left:?}");
}

/// A snapshot cannot hold a breaker open past the longest opening its
/// configuration makes (`max_open_timeout_ms` with the jitter).
#[tokio::test(start_paused = true)]
async fn a_restored_opening_is_cut_to_the_longest_the_config_makes() {
    let cb = tripped(2).await;
    let snapshot = CircuitSnapshot {
        open_remaining_ms: Some(u64::MAX),
        open_length_ms: Some(u64::MAX),
        ..cb.snapshot()
    };
    let capped = CircuitBreakerConfig {
        max_open_timeout_ms: 5_000,
        jitter_ratio: 0.1,
        ..config(2)
    };
    let restored = CircuitBreaker::restore(capped, snapshot).unwrap();
    assert_eq!(restored.state(), CircuitState::Open);
    let left = restored.retry_after().unwrap();
    assert!(left <= ms(5_500) && left >= ms(5_400), "{left:?}");
    advance(ms(5_500)).await;
    assert_eq!(restored.state(), CircuitState::HalfOpen);
    let probe = restored.try_acquire().unwrap();
    assert_eq!(probe.time_limit(), Some(ms(5_500)), "the probes' limit too");
    drop(probe);
    // A remaining time within the bound is kept as it is.
    let cb = tripped(2).await;
    let kept = CircuitBreaker::restore(config(2), cb.snapshot()).unwrap();
    assert!(kept.retry_after().unwrap() > ms(900));
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_carries_the_length_of_the_latest_opening() {
    let cb = CircuitBreaker::new(config(1));
    assert_eq!(cb.snapshot().open_length_ms, None, "never opened");
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.snapshot().open_length_ms, Some(1_000));
    advance(ms(1_000)).await;
    fail(&cb).await.unwrap_err();
    assert_eq!(
        cb.snapshot().open_length_ms,
        Some(2_000),
        "the second opening"
    );
    advance(ms(2_000)).await;
    // HalfOpen: the opening that just ended is the probes' time limit, on
    // this breaker and on one restored from its snapshot.
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    let snap = cb.snapshot();
    assert_eq!(snap.open_length_ms, Some(2_000));
    let restored = CircuitBreaker::restore(config(1), snap).unwrap();
    let probe = restored.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(probe.time_limit(), Some(ms(2_000)));
}

#[tokio::test(start_paused = true)]
async fn a_forced_opening_is_restored_forced() {
    let cb = tripped(1).await;
    cb.force_open();
    let snap = cb.snapshot();
    assert_eq!(snap.state, CircuitState::Open);
    assert_eq!(snap.forced, Some(CircuitState::Open));
    assert_eq!(snap.open_remaining_ms, None, "no timeout ends it");
    let restored = CircuitBreaker::restore(config(1), snap).unwrap();
    advance(ms(3_600_000)).await;
    assert_eq!(restored.state(), CircuitState::Open);
    assert_eq!(restored.snapshot().forced, Some(CircuitState::Open));
    assert_eq!(restored.retry_after(), None);
}

#[tokio::test(start_paused = true)]
async fn snapshots_keep_the_window_and_forced_modes() {
    let cb = CircuitBreaker::new(config(4));
    fail(&cb).await.unwrap_err();
    ok(&cb).await.unwrap();
    cb.force_closed();
    let snap = cb.snapshot();
    assert_eq!(snap.outcomes, "FS");
    assert_eq!(snap.forced, Some(CircuitState::Closed));
    let restored = CircuitBreaker::restore(config(4), snap.clone()).unwrap();
    assert_eq!(restored.failure_rate(), 0.5);
    for _ in 0..4 {
        fail(&restored).await.unwrap_err();
    }
    assert_eq!(
        restored.state(),
        CircuitState::Closed,
        "still forced closed"
    );

    let bad = CircuitSnapshot {
        outcomes: "SFx".into(),
        ..snap
    };
    let err = CircuitBreaker::restore(config(4), bad).unwrap_err();
    assert!(err.names("snapshot.outcomes"), "{err}");
}

// ---- events -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn transitions_are_published_with_from_to_and_time() {
    let cb = CircuitBreaker::new(config(1));
    let mut rx = cb.subscribe();
    let start = tokio::time::Instant::now();
    fail(&cb).await.unwrap_err();
    let t = rx.recv().await.unwrap();
    assert_eq!(
        (t.from, t.to, t.at),
        (CircuitState::Closed, CircuitState::Open, start)
    );
    assert_eq!(t.open_for, Some(ms(1_000)));
    advance(ms(1_000)).await;
    ok(&cb).await.unwrap();
    ok(&cb).await.unwrap();
    let seq: Vec<_> = [rx.recv().await.unwrap(), rx.recv().await.unwrap()]
        .iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        seq,
        [
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed)
        ]
    );
    assert_eq!(cb.metrics().state_changes, 3);
    assert!(cb.metrics().last_state_change.is_some());
}

#[test]
fn works_without_a_runtime() {
    // No tokio runtime: no timer task is spawned, rejections read the clock.
    let cb = CircuitBreaker::new(config(1));
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.state(), CircuitState::Open);
    let advised = cb.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(advised <= ms(1_000) && advised > ms(900), "{advised:?}");
    cb.reset();
    cb.try_acquire().unwrap().success();
}

#[test]
fn public_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<CircuitBreaker>();
    both::<Permit<'static>>();
    both::<CircuitError<Boom>>();
    both::<CircuitMetrics>();
    fn send<T: Send>(_: &T) {}
    let cb = CircuitBreaker::new(CircuitBreakerConfig::default());
    send(&cb.call(|| async { Ok::<_, Boom>(()) }));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_and_its_permits_print_the_state_in_debug() {
    let cb = CircuitBreaker::new(config(1));
    assert_eq!(
        format!("{cb:?}"),
        "CircuitBreaker { state: Closed, generation: 0, open_streak: 0, .. }"
    );
    let permit = cb.try_acquire().unwrap();
    let closed = format!("{permit:?}");
    assert!(
        closed.starts_with("Permit { shared: Shared { word: Word("),
        "{closed}"
    );
    permit.failure();
    assert_eq!(
        format!("{cb:?}"),
        "CircuitBreaker { state: Open, generation: 1, open_streak: 1, .. }"
    );
    advance(ms(1_000)).await;
    let owned = cb.try_acquire_owned().unwrap();
    let half_open = format!("{owned:?}");
    assert!(
        half_open.starts_with("OwnedPermit { shared: Shared { word: Word("),
        "{half_open}"
    );
    let word = |s: &str| {
        s.split("Word(")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .map(str::to_owned)
    };
    assert!(word(&closed).is_some_and(|w| w.parse::<u64>().is_ok()));
    assert_ne!(
        word(&closed),
        word(&half_open),
        "the word follows the state"
    );
}

#[tokio::test(start_paused = true)]
async fn breakers_made_together_open_for_different_lengths() {
    // Each breaker seeds its own jitter generator, so that breakers made and
    // tripped together do not probe in lockstep. Over a year of jitter (the
    // lengths are in microseconds), 1 024 openings from distinct seeds
    // collide with a probability below 1e-7.
    const N: usize = 1_024;
    let year = crate::config::MAX_DURATION_MS;
    let cfg = CircuitBreakerConfig {
        sample_size: 1,
        open_timeout_ms: year,
        max_open_timeout_ms: year,
        jitter_ratio: 0.5,
        ..Default::default()
    };
    let mut lengths: Vec<Duration> = (0..N)
        .map(|_| {
            let cb = CircuitBreaker::new(cfg.clone());
            cb.try_acquire().unwrap().failure();
            cb.try_acquire().unwrap_err().retry_after().unwrap()
        })
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    assert_eq!(lengths.len(), N, "openings of the same length");
}

#[tokio::test(start_paused = true)]
async fn update_config_grows_the_window_keeping_its_outcomes() {
    let cb = CircuitBreaker::new(config(4));
    fail(&cb).await.unwrap_err();
    ok(&cb).await.unwrap();
    ok(&cb).await.unwrap();
    let grown = |n| CircuitBreakerConfig {
        minimum_calls: Some(1),
        failure_threshold: 0.9,
        ..config(n)
    };
    cb.update_config(grown(8)).unwrap();
    assert_eq!(cb.snapshot().outcomes, "FSS", "every outcome kept");
    assert_eq!(cb.config().sample_size, 8);
    // The longer window fills past the old length and then slides.
    for _ in 0..6 {
        ok(&cb).await.unwrap();
    }
    assert_eq!(cb.metrics().window_len, 8);
    assert_eq!(cb.failure_rate(), 0.0, "the failure slid out after 8");
    // Growing again, past the first growth, and shrinking back.
    cb.update_config(grown(100)).unwrap();
    for _ in 0..50 {
        fail(&cb).await.unwrap_err();
    }
    assert_eq!(cb.metrics().window_len, 58);
    assert_eq!(cb.state(), CircuitState::Closed, "50 of 58 is under 0.9");
    cb.update_config(grown(10)).unwrap();
    assert_eq!(cb.metrics().window_len, 10);
    assert_eq!(cb.failure_rate(), 1.0, "the last ten were failures");
    assert_eq!(cb.state(), CircuitState::Open, "judged at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_grows_while_calls_record_and_keeps_its_tallies() {
    // Calls on four threads while the window grows and shrinks: once they
    // are done, the tallies are exactly what the ring in use holds.
    let cb = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 1.0,
        ..config(4)
    }));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let cb = cb.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20_000u64 {
                let permit = cb.try_acquire().unwrap();
                if (i + t) % 3 == 0 {
                    permit.failure();
                } else {
                    permit.success();
                }
            }
        }));
    }
    for n in [8, 16, 5, 64, 3, 200, 50] {
        tokio::task::yield_now().await;
        cb.update_config(CircuitBreakerConfig {
            failure_threshold: 1.0,
            ..config(n)
        })
        .unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let outcomes = cb.snapshot().outcomes;
    let m = cb.metrics();
    assert_eq!(m.window_len as usize, outcomes.len(), "{outcomes}");
    assert_eq!(m.window_len, 50);
    let failures = outcomes.chars().filter(|&c| c == 'F').count() as f64;
    assert!((cb.failure_rate() - failures / 50.0).abs() < 1e-12);
}

#[test]
fn an_endpoint_override_can_grow_a_live_breaker() {
    let window = |sample_size| CircuitBreakerConfig {
        sample_size,
        ..Default::default()
    };
    let registry = PerEndpointCircuitBreaker::new(window(10));
    let live = registry.get_or_create("e");
    live.try_acquire().unwrap().failure();
    registry.set_config("e", window(100)).unwrap();
    assert_eq!(live.config(), window(100));
    assert_eq!(live.snapshot().outcomes, "F", "its outcome kept");
    assert_eq!(registry.remove_config("e").unwrap(), Some(window(100)));
    assert_eq!(live.config(), window(10));
}

#[test]
fn successes_on_many_threads_are_counted_exactly_in_a_calm_window() {
    // Once the window is full of successes, a success only counts itself in
    // its thread's stripe: the metrics add the stripes up exactly, and a
    // failure now and then (which calms the window down only once it has
    // left it) changes nothing to that.
    let cb = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 1.0,
        ..config(16)
    }));
    const THREADS: u64 = 6;
    const CALLS: u64 = 20_000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let cb = &cb;
            s.spawn(move || {
                for i in 0..CALLS {
                    let permit = cb.try_acquire().expect("threshold 1.0 never trips here");
                    if t == 0 && i % 1_000 == 999 {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                }
            });
        }
    });
    let m = cb.metrics();
    let failures = CALLS / 1_000;
    assert_eq!(m.failures, failures);
    assert_eq!(m.successes, THREADS * CALLS - failures);
    assert_eq!(m.allowed, THREADS * CALLS);
    assert_eq!(m.requests, THREADS * CALLS);
    assert_eq!(m.window_len, 16);
    let outcomes = cb.snapshot().outcomes;
    let in_window = outcomes.chars().filter(|&c| c == 'F').count() as f64;
    assert_eq!(cb.failure_rate(), in_window / 16.0, "{outcomes}");
}

#[test]
fn a_calm_window_keeps_its_order_counts_and_snapshot_exact() {
    // Never trips, so that every call below is admitted.
    let config = |n| CircuitBreakerConfig {
        failure_threshold: 1.0,
        ..config(n)
    };
    let cb = CircuitBreaker::new(config(4));
    for _ in 0..10 {
        cb.try_acquire().unwrap().success();
    }
    // Ten successes in a window of four: the last six took no position.
    assert_eq!(cb.snapshot().outcomes, "SSSS");
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.snapshot().outcomes, "SSSF", "the failure is the newest");
    cb.try_acquire().unwrap().success();
    assert_eq!(cb.snapshot().outcomes, "SSFS");
    let m = cb.metrics();
    assert_eq!((m.successes, m.failures, m.window_len), (11, 1, 4));
    assert_eq!(m.failure_rate, 0.25);
    // A shorter window keeps the newest outcomes, a longer one all of them.
    cb.update_config(config(2)).unwrap();
    assert_eq!(cb.snapshot().outcomes, "FS");
    cb.update_config(config(8)).unwrap();
    assert_eq!(cb.snapshot().outcomes, "FS");
    for _ in 0..20 {
        cb.try_acquire().unwrap().success();
    }
    assert_eq!(cb.snapshot().outcomes, "SSSSSSSS");
    let m = cb.metrics();
    assert_eq!((m.successes, m.failures, m.window_len), (31, 1, 8));
    // A snapshot of a calm window restores a calm window.
    let restored = CircuitBreaker::restore(config(8), cb.snapshot()).unwrap();
    assert_eq!(restored.snapshot().outcomes, "SSSSSSSS");
    restored.try_acquire().unwrap().failure();
    assert_eq!(restored.snapshot().outcomes, "SSSSSSSF");
}
