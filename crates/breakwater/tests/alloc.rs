//! Allocation tests, with `dhat` as the global allocator.
//!
//! * Every per-call path allocates nothing: a Closed call (success and
//!   failure, by permit and through `call`), an Open rejection of a breaker
//!   tripped by failures, a HalfOpen probe and a HalfOpen rejection, and a
//!   registry call past a full cap (accepted and rejected). Each is
//!   measured as `total_blocks` unchanged over 10 000 calls, after the
//!   breaker was built and warmed up (building a breaker, and opening one
//!   inside a tokio runtime, which spawns the opening's timer task, may
//!   allocate; a call may not).
//! * The live heap stays flat over state cycles: 10^6 `force_open`/`reset`
//!   cycles and 10^4 real trip → half-open → close cycles (some with a
//!   failed probe on the way) on a paused clock.
//!
//! dhat's testing profiler is process-global, so everything runs in one
//! `#[test]`, nothing in a measured stretch prints, and a measurement that
//! caught the test harness's own start-up allocations is repeated (see
//! [`assert_no_alloc`]).

use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use futures_util::FutureExt;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CALLS: usize = 10_000;

/// Allocations made by `f`.
fn blocks_during(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

/// Asserts that `CALLS` runs of `call` (after a warm-up) allocate nothing.
///
/// dhat counts every thread, and libtest's main thread makes a few
/// allocations of its own (waiting on its result channel) just as the test
/// starts; a measurement that saw some is therefore repeated, up to three
/// times. A call that allocates shows up in every attempt.
fn assert_no_alloc(what: &str, mut call: impl FnMut()) {
    for _ in 0..100 {
        call();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let blocks = blocks_during(|| {
            for _ in 0..CALLS {
                call();
            }
        });
        if blocks == 0 {
            return;
        }
        seen.push(blocks);
    }
    panic!("{what}: allocations in each of 3 runs of {CALLS} calls: {seen:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused current-thread runtime")
}

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sample_size: 100,
        failure_threshold: 1.0,
        // Long enough that no opening below ends while calls are measured.
        open_timeout_ms: 3_600_000,
        max_open_timeout_ms: 3_600_000,
        jitter_ratio: 0.0,
        ..Default::default()
    }
}

/// A breaker opened by `sample_size` real failures.
fn tripped(config: CircuitBreakerConfig) -> CircuitBreaker {
    let b = CircuitBreaker::new(config);
    while b.state() == CircuitState::Closed {
        b.try_acquire().expect("closed").failure();
    }
    assert_eq!(b.state(), CircuitState::Open);
    b
}

fn closed_calls() {
    // Failures alternate with successes: a 50% rate never reaches 1.0.
    let b = CircuitBreaker::new(config());
    assert_no_alloc("Closed: try_acquire + success", || {
        b.try_acquire().expect("closed").success()
    });
    assert_no_alloc("Closed: try_acquire + failure", || {
        b.try_acquire().expect("closed").failure();
        b.try_acquire().expect("closed").success();
    });
    assert_no_alloc("Closed: call(ready Ok)", || {
        let r = b.call(|| async { Ok::<u32, ()>(7) }).now_or_never();
        assert_eq!(r, Some(Ok(7)));
    });
    assert_no_alloc("Closed: call(ready Err)", || {
        let r = b.call(|| async { Err::<u32, u32>(7) }).now_or_never();
        assert!(matches!(r, Some(Err(e)) if e.inner() == Some(&7)));
        b.try_acquire().expect("closed").success();
    });
    assert_eq!(b.state(), CircuitState::Closed);
    let m = b.metrics();
    assert!(m.failures >= 2 * CALLS as u64, "{m:?}");
    assert_eq!(m.state_changes, 0);
}

fn open_rejections() {
    // Outside a runtime: no timer task, each rejection reads the clock.
    let b = tripped(config());
    assert_no_alloc("Open (no runtime): try_acquire rejected", || {
        assert!(b.try_acquire().is_err());
    });
    assert_no_alloc("Open (no runtime): call rejected", || {
        let r = b.call(|| async { Ok::<u32, ()>(7) }).now_or_never();
        assert!(matches!(r, Some(Err(e)) if e.is_open()));
    });

    // Inside a runtime: the opening spawned its timer task (allowed); the
    // rejections may not allocate.
    let rt = runtime();
    rt.block_on(async {
        let b = tripped(config());
        tokio::task::yield_now().await; // the timer task starts waiting
        assert_no_alloc("Open (runtime): try_acquire rejected", || {
            assert!(b.try_acquire().is_err());
        });
        tokio::time::advance(Duration::from_millis(5)).await;
        tokio::task::yield_now().await;
        assert_no_alloc("Open (runtime, later): try_acquire rejected", || {
            assert!(b.try_acquire().is_err());
        });
        assert_eq!(b.state(), CircuitState::Open);
    });
}

/// A breaker tripped by failures whose opening has ended.
async fn half_open(config: CircuitBreakerConfig) -> CircuitBreaker {
    let b = tripped(config);
    tokio::time::advance(Duration::from_millis(b.config().open_timeout_ms)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b
}

fn half_open_calls() {
    // Enough probes needed to close that the 10 100 successes below do not.
    let wide = || CircuitBreakerConfig {
        half_open_max_requests: 16_000,
        ..config()
    };
    let rt = runtime();
    rt.block_on(async {
        let b = half_open(wide()).await;
        assert_no_alloc("HalfOpen: probe admitted + cancelled", || {
            let p = b.try_acquire().expect("a free probe slot");
            assert!(p.is_probe());
        });
        assert_no_alloc("HalfOpen: probe admitted + success", || {
            b.try_acquire().expect("a free probe slot").success();
        });
        assert_eq!(b.state(), CircuitState::HalfOpen);

        // Through `call`, a probe runs under a time limit (a tokio timer).
        let b = half_open(wide()).await;
        assert_no_alloc("HalfOpen: probe through call(ready Ok)", || {
            let r = b.call(|| async { Ok::<u32, ()>(7) }).now_or_never();
            assert_eq!(r, Some(Ok(7)));
        });
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.metrics().half_open_tests > 10_000);

        // All slots busy: rejections.
        let b = half_open(CircuitBreakerConfig {
            half_open_max_requests: 2,
            ..config()
        })
        .await;
        let _busy = [
            b.try_acquire().expect("slot 1"),
            b.try_acquire().expect("slot 2"),
        ];
        assert_no_alloc("HalfOpen: rejected, all slots busy", || {
            assert!(b.try_acquire().is_err());
        });
        assert_no_alloc("HalfOpen: call rejected, all slots busy", || {
            let r = b.call(|| async { Ok::<u32, ()>(7) }).now_or_never();
            assert!(matches!(r, Some(Err(e)) if e.is_open()));
        });
        assert_eq!(b.state(), CircuitState::HalfOpen);
    });
}

fn live_bytes() -> usize {
    dhat::HeapStats::get().curr_bytes
}

/// Asserts that the live heap after `cycles` runs of `cycle` is within 1 KiB
/// of what it was before, and did not grow between a tenth of the run and
/// its end.
fn assert_flat(what: &str, cycles: usize, mut cycle: impl FnMut(usize)) {
    const SLACK: usize = 1024;
    let mut i = 0;
    let mut run = |n: usize| {
        for _ in 0..n {
            cycle(i);
            i += 1;
        }
    };
    run(cycles / 100); // warm-up
    let before = live_bytes();
    run(cycles / 10);
    let tenth = live_bytes();
    run(cycles - cycles / 10);
    let after = live_bytes();
    assert!(
        after <= before + SLACK,
        "{what}: live heap {before} B before, {after} B after {cycles} cycles"
    );
    assert!(
        after <= tenth + SLACK,
        "{what}: live heap grew from {tenth} B after {} cycles to {after} B after {cycles}",
        cycles / 10
    );
}

fn forced_cycles() {
    let b = CircuitBreaker::new(config());
    assert_flat("force_open/reset", 1_000_000, |_| {
        b.force_open();
        b.reset();
    });
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.metrics().state_changes, 2 * 1_010_000);
}

/// One trip → half-open → close cycle (every third with a failed probe and
/// a second, twice as long opening); returns the openings.
async fn trip_probe_close(b: &CircuitBreaker, i: usize) -> u64 {
    for _ in 0..4 {
        b.try_acquire().expect("closed").failure();
    }
    assert_eq!(b.state(), CircuitState::Open);
    let mut wait = 10;
    let mut openings = 1;
    if i % 3 == 0 {
        tokio::time::advance(Duration::from_millis(wait)).await;
        b.try_acquire().expect("a probe").failure();
        assert_eq!(b.state(), CircuitState::Open);
        openings += 1;
        wait *= 2;
    }
    tokio::time::advance(Duration::from_millis(wait)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b.try_acquire().expect("a probe").success();
    b.try_acquire().expect("a probe").success();
    assert_eq!(b.state(), CircuitState::Closed);
    openings
}

fn real_cycles() {
    const CYCLES: usize = 10_000;
    const WARM: usize = CYCLES / 100;
    let rt = runtime();
    rt.block_on(async {
        let b = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 4,
            half_open_max_requests: 2,
            open_timeout_ms: 10,
            max_open_timeout_ms: 40,
            backoff_multiplier: 2.0,
            jitter_ratio: 0.0,
            ..Default::default()
        });
        let mut openings = 0;
        for i in 0..WARM {
            openings += trip_probe_close(&b, i).await;
        }
        let before = live_bytes();
        for i in WARM..WARM + CYCLES / 10 {
            openings += trip_probe_close(&b, i).await;
        }
        let tenth = live_bytes();
        for i in WARM + CYCLES / 10..WARM + CYCLES {
            openings += trip_probe_close(&b, i).await;
        }
        // Let the last timer tasks see that their opening is over.
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
        let after = live_bytes();
        assert!(
            after <= before + 1024,
            "trip/probe/close: live heap {before} B before, {after} B after {CYCLES} cycles"
        );
        assert!(
            after <= tenth + 1024,
            "trip/probe/close: live heap grew from {tenth} B after {} cycles to {after} B",
            CYCLES / 10
        );
        let m = b.metrics();
        assert_eq!(
            m.transitions_between(CircuitState::HalfOpen, CircuitState::Closed),
            (WARM + CYCLES) as u64
        );
        assert_eq!(
            m.transitions_between(CircuitState::Closed, CircuitState::Open)
                + m.transitions_between(CircuitState::HalfOpen, CircuitState::Open),
            openings
        );
    });
}

/// A registry full of breakers it must keep (Open ones): calls to a new
/// endpoint go through a shared overflow breaker, which allocates nothing
/// per call, and which trips like any breaker.
fn overflow_calls() {
    use breakwater::{PerEndpointCircuitBreaker, RegistryLimits};
    let reg = PerEndpointCircuitBreaker::with_limits(
        CircuitBreakerConfig {
            sample_size: 4,
            ..config()
        },
        RegistryLimits {
            max_endpoints: 2,
            ..Default::default()
        },
    );
    for e in ["a", "b"] {
        reg.get_or_create(e).force_open();
    }
    assert_no_alloc("overflow: call(ready Ok) past a full cap", || {
        let r = reg
            .call("new", || async { Ok::<u32, ()>(7) })
            .now_or_never();
        assert_eq!(r, Some(Ok(7)));
    });
    for _ in 0..4 {
        let r = reg
            .call("new", || async { Err::<u32, u32>(7) })
            .now_or_never();
        assert!(matches!(r, Some(Err(e)) if e.inner() == Some(&7)));
    }
    assert_no_alloc("overflow: call rejected past a full cap", || {
        let r = reg
            .call("new", || async { Ok::<u32, ()>(7) })
            .now_or_never();
        assert!(matches!(r, Some(Err(e)) if e.is_open()));
    });
    assert_eq!(reg.len(), 2);
}

#[test]
fn no_allocation_per_call_and_flat_heap_over_cycles() {
    let _profiler = dhat::Profiler::builder().testing().build();
    closed_calls();
    open_rejections();
    overflow_calls();
    half_open_calls();
    forced_cycles();
    real_cycles();
}
