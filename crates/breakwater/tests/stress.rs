//! Stress tests: many tasks and threads share one breaker that opens and
//! closes over and over, and every count has to add up.
//!
//! These run in real time with openings of a few milliseconds, but assert
//! nothing about timing: they loop until the breaker has gone through
//! enough Open → HalfOpen → Closed cycles, and give up (failing) after
//! [`LIMIT`], so that a deadlock fails instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};

/// How long a test may take before it counts as deadlocked.
const LIMIT: Duration = Duration::from_secs(60);
/// `half_open_max_requests`.
const PROBES: usize = 2;
/// Every opening lasts this long (no backoff, no jitter).
const OPEN_MS: u64 = 2;
/// Calls each task or thread makes, at least.
const CALLS: u64 = 2_000;
/// Closings (HalfOpen → Closed) the breaker goes through, at least.
const CYCLES: u64 = 5;

#[derive(Debug, PartialEq)]
struct Boom;

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 0.5,
        sample_size: 8,
        open_timeout_ms: OPEN_MS,
        max_open_timeout_ms: OPEN_MS,
        backoff_multiplier: 1.0,
        jitter_ratio: 0.0,
        half_open_max_requests: PROBES,
        ..Default::default()
    }
}

/// A downstream service that has an outage for 40 calls, then works for
/// 40 calls, and so on: the breaker opens in each outage, its probes fail
/// until the outage is over, and then they close it.
#[derive(Debug, Default)]
struct Service {
    runs: AtomicU64,
}

impl Service {
    /// Runs one call; returns whether it fails.
    fn run(&self) -> bool {
        (self.runs.fetch_add(1, Relaxed) / 40) % 2 == 0
    }

    fn runs(&self) -> u64 {
        self.runs.load(Relaxed)
    }
}

/// What one task or thread saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    ok: u64,
    failed: u64,
    timed_out: u64,
    refused: u64,
    ignored: u64,
    cancelled: u64,
    probes: u64,
}

impl std::ops::AddAssign for Seen {
    fn add_assign(&mut self, o: Self) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.timed_out += o.timed_out;
        self.refused += o.refused;
        self.ignored += o.ignored;
        self.cancelled += o.cancelled;
        self.probes += o.probes;
    }
}

fn closes(breaker: &CircuitBreaker) -> u64 {
    breaker
        .metrics()
        .transitions_between(CircuitState::HalfOpen, CircuitState::Closed)
}

/// Whether a worker that made `i` calls may stop.
fn done(breaker: &CircuitBreaker, i: u64) -> bool {
    i >= CALLS && i % 64 == 0 && closes(breaker) >= CYCLES
}

/// Checks the counters against what the callers saw, once every call has
/// finished.
fn assert_counts_add_up(breaker: &CircuitBreaker, seen: Seen, runs: u64) {
    let m = breaker.metrics();
    let finished = seen.ok + seen.failed + seen.timed_out + seen.ignored + seen.cancelled;
    assert_eq!(
        finished, runs,
        "every admitted call ran exactly once: {seen:?}"
    );
    assert_eq!(m.allowed, runs, "allowed: {m:?}");
    assert_eq!(m.blocked, seen.refused, "blocked: {m:?}");
    assert_eq!(m.requests, m.allowed + m.blocked, "requests: {m:?}");
    assert_eq!(m.successes, seen.ok, "successes: {m:?}");
    assert_eq!(m.failures, seen.failed + seen.timed_out, "failures: {m:?}");
    assert_eq!(m.ignored, seen.ignored, "ignored: {m:?}");
    assert_eq!(m.cancelled, seen.cancelled, "cancelled: {m:?}");
    assert!(m.half_open_tests <= m.allowed, "{m:?}");
    assert!(
        m.transitions_between(CircuitState::HalfOpen, CircuitState::Closed) >= CYCLES,
        "{m:?}"
    );
}

/// Checks that the transitions counted form one path from Closed to the
/// current state: into each state as often as out of it, give or take the
/// start (Closed) and the end (the current state), and only along the
/// edges of the state diagram.
fn assert_transitions_form_a_path(breaker: &CircuitBreaker) {
    use CircuitState::{Closed, HalfOpen, Open};
    // A timer task may be moving an Open breaker to HalfOpen right now:
    // wait until the state is one that only calls change, then re-read
    // until a transition that is being counted has been counted.
    for attempt in 0.. {
        let m = breaker.metrics();
        if m.state != Open {
            let t = m.transitions;
            let i = |s: CircuitState| s.as_gauge() as usize;
            for (from, to) in [(Closed, HalfOpen), (Open, Closed)] {
                assert_eq!(t[i(from)][i(to)], 0, "{from} -> {to}: {m:?}");
            }
            for s in [Closed, Open, HalfOpen] {
                assert_eq!(t[i(s)][i(s)], 0, "{s} -> {s}: {m:?}");
            }
            let balance = |s: CircuitState| {
                let into: u64 = (0..3).map(|from| t[from][i(s)]).sum();
                let out: u64 = (0..3).map(|to| t[i(s)][to]).sum();
                into as i64 - out as i64 + i64::from(s == Closed) - i64::from(s == m.state)
            };
            if [Closed, Open, HalfOpen].iter().all(|&s| balance(s) == 0) {
                return;
            }
            assert!(
                attempt < 10_000,
                "the transitions do not form a path from Closed to {}: {:?}",
                m.state,
                m.transitions
            );
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Runs `f` on a thread of its own and fails if it takes longer than
/// [`LIMIT`].
fn within_limit<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("not finished after {LIMIT:?}: deadlock or livelock")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test panicked (see above)"),
    }
}

/// Awaits `f`, failing if it takes longer than [`LIMIT`].
async fn within_limit_async<T>(f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("not finished after {LIMIT:?}: deadlock or livelock"),
    }
}

// ------------------------------------------------------------- tokio, call

/// One task's calls through `call`.
async fn call_loop(breaker: Arc<CircuitBreaker>, service: Arc<Service>) -> Seen {
    let mut seen = Seen::default();
    let mut i = 0;
    while !done(&breaker, i) {
        i += 1;
        let ran = AtomicBool::new(false);
        let result = breaker
            .call(|| {
                assert!(!ran.swap(true, Relaxed), "an operation ran twice");
                let fails = service.run();
                async move {
                    tokio::task::yield_now().await;
                    if fails {
                        Err(Boom)
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        let ran = ran.load(Relaxed);
        match result {
            Err(CircuitError::Open { .. }) => {
                assert!(!ran, "a call refused with Open ran its operation");
                seen.refused += 1;
                tokio::task::yield_now().await;
            }
            Ok(()) => {
                assert!(ran, "Ok without running the operation");
                seen.ok += 1;
            }
            Err(CircuitError::Inner(Boom)) => {
                assert!(ran, "an Inner error without running the operation");
                seen.failed += 1;
            }
            // A probe that outlived its time limit (the opening's length).
            Err(CircuitError::Timeout { .. }) => {
                assert!(ran, "a timeout without running the operation");
                seen.timed_out += 1;
            }
        }
    }
    seen
}

/// Sixteen tasks call through one breaker while it opens and closes over
/// and over: a refused call never runs its operation, an admitted one runs
/// exactly once, and the breaker's counters match what the callers saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_from_many_tasks_add_up_while_the_breaker_cycles() {
    let breaker = Arc::new(CircuitBreaker::new(config()));
    let service = Arc::new(Service::default());
    let seen = within_limit_async(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| tokio::spawn(call_loop(breaker.clone(), service.clone())))
            .collect();
        let mut seen = Seen::default();
        for task in tasks {
            seen += task.await.expect("a caller task panicked");
        }
        seen
    })
    .await;
    assert_counts_add_up(&breaker, seen, service.runs());
    let b = breaker.clone();
    within_limit(move || assert_transitions_form_a_path(&b));
}

// ------------------------------------------------------ threads, try_acquire

/// A small xorshift generator: which permits get dropped or ignored.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Probe permits held right now, and the most ever held at once.
#[derive(Debug, Default)]
struct Live {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// One thread's calls through `try_acquire`.
///
/// A probe limit bounds the probes of one HalfOpen period. A probe permit
/// that outlives its period (another probe failed, the breaker reopened
/// and half-opened again while this thread was descheduled) is stale and
/// rightly not counted by the breaker, so counting live permits is only
/// sound if no period can end while a counted permit is held. `gate` sees
/// to that: permits are taken and counted under its read lock, and a probe
/// reports success or failure (the only things that end a HalfOpen period
/// here) under its write lock, after it stopped counting itself.
fn permit_loop(
    breaker: &CircuitBreaker,
    service: &Service,
    gate: &RwLock<()>,
    live: &Live,
    seed: u64,
) -> Seen {
    let mut seen = Seen::default();
    let mut rng = Rng(seed | 1);
    let mut i = 0;
    while !done(breaker, i) {
        i += 1;
        let shared = gate.read().unwrap_or_else(|p| p.into_inner());
        let permit = match breaker.try_acquire() {
            Ok(permit) => permit,
            Err(CircuitError::Open { .. }) => {
                seen.refused += 1;
                drop(shared);
                std::thread::yield_now();
                continue;
            }
            Err(e) => panic!("try_acquire can only refuse with Open, got {e:?}"),
        };
        let probe = permit.is_probe();
        if probe {
            seen.probes += 1;
            let n = live.now.fetch_add(1, Relaxed) + 1;
            live.max.fetch_max(n, Relaxed);
            assert!(
                n <= PROBES,
                "{n} probe permits of one HalfOpen period are held at once, limit {PROBES}"
            );
        }
        let fails = service.run();
        let choice = rng.next() % 16;
        if probe {
            live.now.fetch_sub(1, Relaxed);
        }
        match choice {
            0 => {
                // Cancelled: records nothing, frees the probe slot.
                drop(permit);
                seen.cancelled += 1;
            }
            1 => {
                permit.ignore();
                seen.ignored += 1;
            }
            _ => {
                let _exclusive = probe.then(|| {
                    drop(shared);
                    gate.write().unwrap_or_else(|p| p.into_inner())
                });
                if fails {
                    permit.failure();
                    seen.failed += 1;
                } else {
                    permit.success();
                    seen.ok += 1;
                }
            }
        }
    }
    seen
}

/// Twelve threads take permits with `try_acquire` and succeed, fail,
/// ignore or drop them while the breaker opens and closes over and over:
/// no more than `half_open_max_requests` probe permits of one HalfOpen
/// period are ever held at once, and the counters add up.
#[test]
fn permits_from_many_threads_keep_the_probe_limit_and_add_up() {
    let (breaker, seen, runs, live) = within_limit(|| {
        let breaker = CircuitBreaker::new(config());
        let service = Service::default();
        let gate = RwLock::new(());
        let live = Live::default();
        let seen = std::thread::scope(|s| {
            let threads: Vec<_> = (0..12u64)
                .map(|n| {
                    let (b, svc, g, l) = (&breaker, &service, &gate, &live);
                    s.spawn(move || permit_loop(b, svc, g, l, 0x9E37_79B9 * (n + 1)))
                })
                .collect();
            let mut seen = Seen::default();
            for t in threads {
                seen += t.join().expect("a caller thread panicked");
            }
            seen
        });
        (breaker, seen, service.runs(), live)
    });
    assert_counts_add_up(&breaker, seen, runs);
    assert_eq!(breaker.metrics().half_open_tests, seen.probes);
    assert!(live.max.load(Relaxed) >= 1, "no probe ever ran");
    assert_eq!(live.now.load(Relaxed), 0);
    let breaker = Arc::new(breaker);
    within_limit(move || assert_transitions_form_a_path(&breaker));
}

// ------------------------------------------------------------ cancellation

/// Polls the state until it is `want`.
async fn wait_for(breaker: &CircuitBreaker, want: CircuitState) {
    while breaker.state() != want {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Probes that never finish, given up on by their callers (a `select!`
/// against a short sleep, or an aborted task), free their slots and record
/// nothing: afterwards the breaker is still HalfOpen, admits a full set of
/// probes again, and closes when they succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_probes_leave_no_slot_held() {
    let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 4,
        open_timeout_ms: 5,
        max_open_timeout_ms: 5,
        backoff_multiplier: 1.0,
        jitter_ratio: 0.0,
        half_open_max_requests: PROBES,
        // Only the callers give up on a probe here, never the breaker.
        probe_timeout_ms: Some(600_000),
        ..Default::default()
    }));
    let started = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    within_limit_async(async {
        for _ in 0..4 {
            let r = breaker.call(|| async { Err::<(), _>(Boom) }).await;
            assert_eq!(r, Err(CircuitError::Inner(Boom)));
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        wait_for(&breaker, CircuitState::HalfOpen).await;

        let hang = |breaker: Arc<CircuitBreaker>, started: Arc<AtomicU64>| async move {
            breaker
                .call(|| {
                    started.fetch_add(1, Relaxed);
                    std::future::pending::<Result<(), Boom>>()
                })
                .await
        };
        let refusal = |r: Result<(), CircuitError<Boom>>, refused: &AtomicU64| match r {
            // HalfOpen with every slot busy: no wait to advise.
            Err(CircuitError::Open { retry_after: None }) => {
                refused.fetch_add(1, Relaxed);
            }
            other => panic!("a never-finishing probe returned {other:?}"),
        };

        // Callers that give up after a short while.
        let impatient: Vec<_> = (0..16)
            .map(|_| {
                let (b, s, r) = (breaker.clone(), started.clone(), refused.clone());
                tokio::spawn(async move {
                    for _ in 0..50 {
                        tokio::select! {
                            res = hang(b.clone(), s.clone()) => refusal(res, &r),
                            () = tokio::time::sleep(Duration::from_micros(200)) => {}
                        }
                    }
                })
            })
            .collect();
        // Callers whose whole task is aborted.
        let doomed: Vec<_> = (0..8)
            .map(|_| {
                let (b, s, r) = (breaker.clone(), started.clone(), refused.clone());
                tokio::spawn(async move { refusal(hang(b, s).await, &r) })
            })
            .collect();
        for task in impatient {
            task.await.expect("an impatient caller panicked");
        }
        for task in &doomed {
            task.abort();
        }
        for task in doomed {
            match task.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => panic!("an aborted caller panicked: {e}"),
            }
        }
    })
    .await;

    let m = breaker.metrics();
    let started = started.load(Relaxed);
    assert!(started >= 1, "no probe was ever admitted");
    assert_eq!(
        m.state,
        CircuitState::HalfOpen,
        "nothing was recorded: {m:?}"
    );
    assert_eq!(
        m.cancelled, started,
        "every admitted probe was cancelled: {m:?}"
    );
    assert_eq!(m.half_open_tests, started, "{m:?}");
    assert_eq!(m.blocked, refused.load(Relaxed), "{m:?}");
    assert_eq!((m.successes, m.failures), (0, 4), "{m:?}");

    // Every slot is free again: a full set of probes, and no more.
    let probes: Vec<_> = (0..PROBES)
        .map(|n| {
            let p = breaker
                .try_acquire()
                .unwrap_or_else(|e| panic!("probe slot {n} is still held: {e:?}"));
            assert!(p.is_probe());
            p
        })
        .collect();
    assert!(breaker.try_acquire().is_err(), "more probes than slots");
    for p in probes {
        p.success();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    breaker
        .call(|| async { Ok::<_, Boom>(()) })
        .await
        .expect("a closed breaker runs calls");
}
