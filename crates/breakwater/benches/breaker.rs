//! Side-by-side micro-benchmarks of breakwater and three peer crates:
//! failsafe 1.3, recloser 1.4 and tower-resilience 0.13's circuit breaker.
//!
//! Every scenario is one criterion group with one function per library
//! (`breakwater`, `failsafe`, `recloser`, `tower-resilience`), so that one
//! `cargo bench -p breakwater --bench breaker` measures them all in the same
//! run. `benches/ratios.py` turns criterion's output into the table of
//! `BENCHMARKS.md`.
//!
//! Setup choices, the same for every library where the library allows it:
//! - closed scenarios: a count window of 100 outcomes, failure threshold 0.5,
//!   an open timeout of one hour, so that nothing trips while measuring;
//!   failsafe is given its cheapest policy (`consecutive_failures`);
//! - `open_rejection`: each breaker is tripped by real failures (a window of
//!   10 outcomes, 10 of them needed before judging) with a one-hour open
//!   timeout, then a call is rejected;
//! - async calls use an immediately-ready future polled once with
//!   `now_or_never`, so no runtime cost is measured;
//! - `open_rejection_runtime` measures breakwater alone, tripped inside a
//!   tokio runtime (see that function);
//! - tower-resilience has no synchronous API: its "sync" figures drive
//!   `poll_ready` + `call` with `now_or_never` too.

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use failsafe::backoff::Constant;
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use futures_util::FutureExt;
use recloser::{AsyncRecloser, Recloser};
use tower::{Service, ServiceExt};
use tower_resilience::circuitbreaker::{
    CircuitBreakerError, CircuitBreakerLayer, CircuitState as TowerState,
};

/// The error every benchmarked operation fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BenchErr;

/// Count window of the closed scenarios.
const WINDOW: usize = 100;
/// Count window (and minimum calls) of the open-rejection scenario.
const TRIP_WINDOW: usize = 10;
/// Open timeout: long enough never to end during a run.
const OPEN_FOR: Duration = Duration::from_secs(3600);
/// The request value that makes the tower inner service fail.
const FAIL: u64 = u64::MAX;

// ---------------------------------------------------------------------------
// Construction of each library's breaker.
// ---------------------------------------------------------------------------

fn bw_closed() -> CircuitBreaker {
    CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 0.5,
        sample_size: WINDOW,
        open_timeout_ms: OPEN_FOR.as_millis() as u64,
        // The default cap (300 s) is below a one-hour opening.
        max_open_timeout_ms: OPEN_FOR.as_millis() as u64,
        ..Default::default()
    })
}

fn bw_tripped() -> CircuitBreaker {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: TRIP_WINDOW,
        minimum_calls: Some(TRIP_WINDOW),
        open_timeout_ms: OPEN_FOR.as_millis() as u64,
        // The default cap (300 s) is below a one-hour opening.
        max_open_timeout_ms: OPEN_FOR.as_millis() as u64,
        ..Default::default()
    });
    for _ in 0..TRIP_WINDOW {
        cb.try_acquire().expect("closed").failure();
    }
    assert_eq!(cb.state(), CircuitState::Open, "breakwater did not trip");
    // The first rejections in a process start measuring the processor's
    // counter (on a background thread, at most 0.2 s); until it is
    // measured, rejections read the system clock. Measure what follows.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        assert!(cb.try_acquire().is_err());
    }
    cb
}

type Failsafe = failsafe::StateMachine<ConsecutiveFailures<Constant>, ()>;

fn failsafe_new(consecutive: usize) -> Failsafe {
    let policy = consecutive_failures(consecutive as u32, failsafe::backoff::constant(OPEN_FOR));
    failsafe::Config::new().failure_policy(policy).build()
}

fn failsafe_tripped() -> Failsafe {
    let fs = failsafe_new(TRIP_WINDOW);
    for _ in 0..TRIP_WINDOW {
        let _ = failsafe::CircuitBreaker::call(&fs, || Err::<u64, _>(BenchErr));
    }
    assert!(!fs.is_call_permitted(), "failsafe did not trip");
    fs
}

fn recloser_new(window: usize) -> Recloser {
    Recloser::custom()
        .error_rate(0.5)
        .closed_len(window)
        .open_wait(OPEN_FOR)
        .build()
}

fn recloser_tripped() -> Recloser {
    let rec = recloser_new(TRIP_WINDOW);
    // recloser judges its ring only once it is full, so it needs one more
    // failure than the window length; stop at the first rejection.
    for _ in 0..10 * TRIP_WINDOW {
        if let Err(recloser::Error::Rejected) = rec.call(|| Err::<u64, _>(BenchErr)) {
            return rec;
        }
    }
    panic!("recloser did not trip");
}

/// The tower-resilience breaker around an immediately ready inner service
/// that fails when asked for [`FAIL`].
type Tower<S> = tower_resilience::circuitbreaker::CircuitBreaker<
    S,
    tower_resilience::circuitbreaker::DefaultClassifier,
>;

/// What the inner service of [`Tower`] is.
trait Inner:
    Service<u64, Response = u64, Error = BenchErr, Future: Send + 'static> + Clone + Send + 'static
{
}

impl<S> Inner for S where
    S: Service<u64, Response = u64, Error = BenchErr, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

fn tower_new(window: usize, minimum_calls: Option<usize>) -> Tower<impl Inner> {
    let mut builder = CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(window)
        .wait_duration_in_open(OPEN_FOR);
    if let Some(n) = minimum_calls {
        builder = builder.minimum_number_of_calls(n);
    }
    let layer = builder.build().expect("valid tower-resilience config");
    layer.layer_fn(tower::service_fn(|req: u64| {
        std::future::ready(if req == FAIL { Err(BenchErr) } else { Ok(req) })
    }))
}

fn tower_tripped() -> Tower<impl Inner> {
    let mut svc = tower_new(TRIP_WINDOW, Some(TRIP_WINDOW));
    for _ in 0..TRIP_WINDOW {
        let _ = tower_call(&mut svc, FAIL);
    }
    assert_eq!(
        svc.state_sync(),
        TowerState::Open,
        "tower-resilience did not trip"
    );
    svc
}

/// One call through a tower service: `poll_ready`, then `call`, each polled
/// once. `None` would mean the service was not ready at once (never here).
fn tower_call<S: Service<u64>>(svc: &mut S, req: u64) -> Option<Result<S::Response, S::Error>> {
    match svc.ready().now_or_never()? {
        Ok(ready) => ready.call(req).now_or_never(),
        Err(e) => Some(Err(e)),
    }
}

/// Whether every library's breaker is still closed after a closed scenario
/// (a tripped breaker would have measured rejections instead).
fn assert_closed<S>(bw: &CircuitBreaker, fs: &Failsafe, rec: &Recloser, tower: &Tower<S>) {
    assert_eq!(bw.state(), CircuitState::Closed, "breakwater tripped");
    assert!(fs.is_call_permitted(), "failsafe tripped");
    assert!(
        rec.call(|| Ok::<u64, BenchErr>(0)).is_ok(),
        "recloser tripped"
    );
    assert_eq!(
        tower.state_sync(),
        TowerState::Closed,
        "tower-resilience tripped"
    );
}

// ---------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------

/// Reading the state of a Closed breaker. recloser exposes no state query.
fn state(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bw = bw_closed();
    g.bench_function("breakwater", |b| b.iter(|| black_box(&bw).state()));
    let fs = failsafe_new(WINDOW);
    g.bench_function("failsafe", |b| {
        b.iter(|| black_box(&fs).is_call_permitted())
    });
    let tower = tower_new(WINDOW, None);
    g.bench_function("tower-resilience", |b| {
        b.iter(|| black_box(&tower).state_sync())
    });
}

/// A successful call on a Closed breaker, sync style.
fn closed_sync(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bw = bw_closed();
    g.bench_function("breakwater", |b| {
        b.iter(|| {
            let permit = black_box(&bw).try_acquire().expect("closed");
            permit.success();
        })
    });
    let fs = failsafe_new(WINDOW);
    g.bench_function("failsafe", |b| {
        b.iter(|| failsafe::CircuitBreaker::call(black_box(&fs), || Ok::<u64, BenchErr>(1)))
    });
    let rec = recloser_new(WINDOW);
    g.bench_function("recloser", |b| {
        b.iter(|| black_box(&rec).call(|| Ok::<u64, BenchErr>(1)))
    });
    let mut tower = tower_new(WINDOW, None);
    g.bench_function("tower-resilience", |b| {
        b.iter(|| tower_call(black_box(&mut tower), 1))
    });
    assert_closed(&bw, &fs, &rec, &tower);
}

/// A successful call on a Closed breaker with an immediately ready future,
/// polled once.
fn closed_async(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bw = bw_closed();
    g.bench_function("breakwater", |b| {
        b.iter(|| {
            black_box(&bw)
                .call(|| async { Ok::<u64, BenchErr>(1) })
                .now_or_never()
        })
    });
    let fs = failsafe_new(WINDOW);
    g.bench_function("failsafe", |b| {
        b.iter(|| {
            failsafe::futures::CircuitBreaker::call(black_box(&fs), async {
                Ok::<u64, BenchErr>(1)
            })
            .now_or_never()
        })
    });
    let rec = AsyncRecloser::from(recloser_new(WINDOW));
    g.bench_function("recloser", |b| {
        b.iter(|| {
            black_box(&rec)
                .call(async { Ok::<u64, BenchErr>(1) })
                .now_or_never()
        })
    });
    let mut tower = tower_new(WINDOW, None);
    g.bench_function("tower-resilience", |b| {
        b.iter(|| tower_call(black_box(&mut tower), 1))
    });
    assert_eq!(bw.state(), CircuitState::Closed, "breakwater tripped");
    assert!(fs.is_call_permitted(), "failsafe tripped");
    assert_eq!(
        tower.state_sync(),
        TowerState::Closed,
        "tower-resilience tripped"
    );
}

/// A call on a breaker that real failures have opened.
fn open_rejection(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bw = bw_tripped();
    g.bench_function("breakwater", |b| {
        b.iter(|| match black_box(&bw).try_acquire() {
            Ok(_) => panic!("breakwater admitted a call while open"),
            Err(e) => e,
        })
    });
    let fs = failsafe_tripped();
    g.bench_function("failsafe", |b| {
        b.iter(|| {
            let r = failsafe::CircuitBreaker::call(black_box(&fs), || Ok::<u64, BenchErr>(1));
            assert!(r.is_err());
            r
        })
    });
    let rec = recloser_tripped();
    g.bench_function("recloser", |b| {
        b.iter(|| {
            let r = black_box(&rec).call(|| Ok::<u64, BenchErr>(1));
            assert!(r.is_err());
            r
        })
    });
    let mut tower = tower_tripped();
    g.bench_function("tower-resilience", |b| {
        b.iter(|| {
            let r = tower_call(black_box(&mut tower), 1);
            assert!(matches!(r, Some(Err(CircuitBreakerError::OpenCircuit))));
            r
        })
    });
}

/// breakwater's `open_rejection` when it was tripped inside a tokio runtime
/// (its opening has a timer task; every refusal still reads the clock, so
/// that no call after the deadline is refused). Not one of the compared
/// scenarios (the peers have no such mode); `ratios.py` sets it against
/// `open_rejection`'s peers.
fn open_rejection_runtime(g: &mut BenchmarkGroup<'_, WallTime>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bw = {
        let _in_runtime = rt.enter();
        bw_tripped()
    };
    g.bench_function("breakwater", |b| {
        b.iter(|| match black_box(&bw).try_acquire() {
            Ok(_) => panic!("breakwater admitted a call while open"),
            Err(e) => e,
        })
    });
}

/// Counts calls in `i`; true for every tenth one.
fn tenth(i: &mut u8) -> bool {
    *i += 1;
    if *i == 10 {
        *i = 0;
        true
    } else {
        false
    }
}

/// Sync-style calls of which every tenth fails; the 0.5 threshold is never
/// reached.
fn failures_10pct(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bw = bw_closed();
    let mut i = 0;
    g.bench_function("breakwater", |b| {
        b.iter(|| {
            let permit = black_box(&bw).try_acquire().expect("closed");
            if tenth(&mut i) {
                permit.failure();
            } else {
                permit.success();
            }
        })
    });
    let fs = failsafe_new(WINDOW);
    g.bench_function("failsafe", |b| {
        b.iter(|| {
            let fail = tenth(&mut i);
            failsafe::CircuitBreaker::call(black_box(&fs), || {
                if fail {
                    Err(BenchErr)
                } else {
                    Ok(1u64)
                }
            })
        })
    });
    let rec = recloser_new(WINDOW);
    g.bench_function("recloser", |b| {
        b.iter(|| {
            let fail = tenth(&mut i);
            black_box(&rec).call(|| if fail { Err(BenchErr) } else { Ok(1u64) })
        })
    });
    let mut tower = tower_new(WINDOW, None);
    g.bench_function("tower-resilience", |b| {
        b.iter(|| {
            let req = if tenth(&mut i) { FAIL } else { 1 };
            tower_call(black_box(&mut tower), req)
        })
    });
    assert_closed(&bw, &fs, &rec, &tower);
}

/// Polls `fut` until it is ready, yielding the thread between polls (as a
/// busy executor would run other tasks), so that no park/unpark latency is
/// measured.
fn spin_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::yield_now(),
        }
    }
}

/// Runs one worker per thread on two threads started together; returns the
/// wall time from the first start to the last finish.
fn on_two_threads<W: FnMut() + Send>(iters: u64, workers: [W; 2]) -> Duration {
    let barrier = Barrier::new(2);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut work| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        work();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("two spans");
    let end = spans.iter().map(|s| s.1).max().expect("two spans");
    end - start
}

/// Two threads making successful sync-style calls on one shared breaker;
/// the figure is the time per call per thread.
fn two_threads(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bw = Arc::new(bw_closed());
    g.bench_function("breakwater", |b| {
        b.iter_custom(|iters| {
            let cb: &CircuitBreaker = &bw;
            let worker = || {
                move || {
                    let permit = black_box(cb).try_acquire().expect("closed");
                    permit.success();
                }
            };
            on_two_threads(iters, [worker(), worker()])
        })
    });
    let fs = failsafe_new(WINDOW);
    g.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            let worker = || {
                let fs = fs.clone();
                move || {
                    let r =
                        failsafe::CircuitBreaker::call(black_box(&fs), || Ok::<u64, BenchErr>(1));
                    black_box(r).expect("closed");
                }
            };
            on_two_threads(iters, [worker(), worker()])
        })
    });
    let rec = Arc::new(recloser_new(WINDOW));
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            let worker = || {
                let rec = Arc::clone(&rec);
                move || {
                    let r = black_box(&*rec).call(|| Ok::<u64, BenchErr>(1));
                    black_box(r).expect("closed");
                }
            };
            on_two_threads(iters, [worker(), worker()])
        })
    });
    // tower-resilience guards its window with an async mutex: under
    // contention its call future is Pending, so here each call is polled
    // until it is ready rather than once.
    let tower = tower_new(WINDOW, None);
    g.bench_function("tower-resilience", |b| {
        b.iter_custom(|iters| {
            let worker = || {
                let mut svc = tower.clone();
                move || {
                    let svc = black_box(&mut svc);
                    let r = spin_on(async { svc.ready().await?.call(1).await });
                    black_box(r).expect("closed");
                }
            };
            on_two_threads(iters, [worker(), worker()])
        })
    });
    assert_closed(&bw, &fs, &rec, &tower);
}

/// What a few primitives cost on this machine, to read the others against.
fn reference(g: &mut BenchmarkGroup<'_, WallTime>) {
    // The processor's time-stamp counter, as an Open rejection reads it.
    let clock = quanta::Clock::new();
    g.bench_function("counter_read", |b| b.iter(|| black_box(&clock).raw()));
    g.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    g.bench_function("std_instant_now", |b| b.iter(Instant::now));
    let counter = AtomicU64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, Ordering::Relaxed))
    });
    let mutex = Mutex::new(0u64);
    g.bench_function("mutex_lock_unlock", |b| {
        b.iter(|| {
            let mut guard = black_box(&mutex).lock().expect("not poisoned");
            *guard += 1;
        })
    });
}

/// One criterion group's benchmarks.
type Scenario = fn(&mut BenchmarkGroup<'_, WallTime>);

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    let scenarios: [(&str, Scenario); 8] = [
        ("state", state),
        ("closed_sync", closed_sync),
        ("closed_async", closed_async),
        ("open_rejection", open_rejection),
        ("open_rejection_runtime", open_rejection_runtime),
        ("failures_10pct", failures_10pct),
        ("two_threads", two_threads),
        ("reference", reference),
    ];
    for (name, scenario) in scenarios {
        let mut group = c.benchmark_group(name);
        scenario(&mut group);
        group.finish();
    }
    c.final_summary();
}
