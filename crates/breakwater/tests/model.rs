//! The breaker against a tiny reference model of SPEC §1.
//!
//! [`Model`] is a plain struct that re-states the semantics the simple way:
//! a `VecDeque` of the last `sample_size` outcomes, a phase, a deadline, a
//! streak, probe counters and force flags. Random sequences of operations
//! (calls that succeed, fail, panic or are cancelled; permits held across
//! steps; calls that hang until a timeout; clock advances; forced states and
//! resets) run against the real [`CircuitBreaker`] and the model, and after
//! every step `state()`, `failure_rate()`, `retry_after()` and the counters
//! of `metrics()` must agree, as must every admission decision.
//!
//! Time is tokio's paused clock, one runtime per case; `jitter_ratio` is 0 so
//! open durations are exact. `PROPTEST_CASES` sets the number of cases.
//!
//! Bugs found this way are pinned down by the `regression_*` tests at the
//! end.
//!
//! Where SPEC §1 leaves a detail open the model follows the module docs of
//! `breakwater::resilience`: every change of phase (and every force or
//! reset) starts a new generation; the window survives an opening (so
//! `failure_rate()` while Open shows the window that tripped) and is emptied
//! on close, on reset and by `force_closed()` from Open or HalfOpen; a slow
//! probe counts as a failed one; a disabled breaker (`enabled: false`)
//! records outcomes but only a force or a reset changes its state.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use breakwater::{
    CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState, Permit, Transition, Verdict,
};
use futures_util::FutureExt;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};
use tokio::time::Instant;

// ---- the reference model -------------------------------------------------

/// Microseconds per millisecond.
const MS: u64 = 1_000;

/// A call admitted by the model.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
    probe: bool,
    /// When the call started (us).
    start: u64,
    /// When `call` cancels it as timed out (us), if it has a time limit.
    deadline: Option<u64>,
}

/// The answer to a request to run a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admitted { probe: bool },
    Rejected { retry_after: Option<Duration> },
}

/// How a held call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Success,
    Failure,
    Ignore,
    Drop,
    Panic,
}

/// One recorded outcome: (failed, slow).
type Outcome = (bool, bool);

/// SPEC §1, the obvious way.
#[derive(Debug)]
struct Model {
    config: CircuitBreakerConfig,
    /// Time since the breaker was built (us).
    now: u64,
    state: CircuitState,
    forced_open: bool,
    forced_closed: bool,
    /// End of the current (unforced) opening (us).
    until: u64,
    /// Length of the latest opening (us): the default probe time limit.
    open_len: u64,
    generation: u64,
    streak: u32,
    in_flight: usize,
    probes_ok: usize,
    /// Last `sample_size` outcomes, oldest first.
    window: VecDeque<Outcome>,
    blocked: u64,
    successes: u64,
    failures: u64,
    slow: u64,
    ignored: u64,
    cancelled: u64,
    probes: u64,
    transitions: [[u64; 3]; 3],
    /// Every transition so far.
    events: Vec<Event>,
}

/// A transition the breaker should publish.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    from: CircuitState,
    to: CircuitState,
    /// Earliest and latest time (us) it may carry.
    at: (u64, u64),
    /// For an opening that ends by itself: its length (us).
    open_for: Option<u64>,
}

fn gauge(s: CircuitState) -> usize {
    s.as_gauge() as usize
}

impl Model {
    fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            now: 0,
            state: CircuitState::Closed,
            forced_open: false,
            forced_closed: false,
            until: 0,
            open_len: 0,
            generation: 0,
            streak: 0,
            in_flight: 0,
            probes_ok: 0,
            window: VecDeque::new(),
            blocked: 0,
            successes: 0,
            failures: 0,
            slow: 0,
            ignored: 0,
            cancelled: 0,
            probes: 0,
            transitions: [[0; 3]; 3],
            events: Vec::new(),
        }
    }

    /// An elapsed open timeout means HalfOpen, whether or not anyone looked.
    fn settle(&mut self) {
        if self.state == CircuitState::Open && !self.forced_open && self.now >= self.until {
            self.enter(CircuitState::HalfOpen);
            // Published when someone notices: at the deadline or later.
            if let Some(e) = self.events.last_mut() {
                e.at = (self.until, self.now);
            }
        }
    }

    /// A new phase: a new generation, no probes, no force.
    fn enter(&mut self, to: CircuitState) {
        if self.state != to {
            self.transitions[gauge(self.state)][gauge(to)] += 1;
            self.events.push(Event {
                from: self.state,
                to,
                at: (self.now, self.now),
                open_for: None,
            });
        }
        self.state = to;
        self.generation += 1;
        self.in_flight = 0;
        self.probes_ok = 0;
        self.forced_open = false;
        self.forced_closed = false;
    }

    /// Length of the `streak`-th consecutive opening (no jitter):
    /// `min(open_timeout * multiplier^(streak-1), max_open_timeout)`.
    fn open_duration(&self, streak: u32) -> u64 {
        let c = &self.config;
        let scaled = (c.open_timeout_ms * MS) as f64 * c.backoff_multiplier.powi(streak as i32 - 1);
        (scaled as u64).min(c.max_open_timeout_ms * MS)
    }

    fn open(&mut self) {
        let streak = (self.streak + 1).min(255);
        self.enter(CircuitState::Open);
        self.streak = streak;
        self.open_len = self.open_duration(streak);
        self.until = self.now + self.open_len;
        if let Some(e) = self.events.last_mut() {
            e.open_for = Some(self.open_len);
        }
    }

    fn close(&mut self) {
        self.enter(CircuitState::Closed);
        self.streak = 0;
        self.clear_window();
    }

    fn clear_window(&mut self) {
        self.window.clear();
    }

    fn force_open(&mut self) {
        self.settle();
        self.enter(CircuitState::Open);
        self.forced_open = true;
    }

    fn force_closed(&mut self) {
        self.settle();
        let was = self.state;
        self.enter(CircuitState::Closed);
        self.forced_closed = true;
        self.streak = 0;
        if was != CircuitState::Closed {
            self.clear_window();
        }
    }

    fn reset(&mut self) {
        self.settle();
        self.close();
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms * MS;
    }

    /// The time limit `call` puts on a call admitted now.
    fn time_limit(&self, probe: bool) -> Option<u64> {
        let call = self.config.call_timeout_ms.map(|ms| ms * MS);
        if !probe {
            return call;
        }
        let probe = self
            .config
            .probe_timeout_ms
            .map_or(self.open_len, |ms| ms * MS);
        Some(call.map_or(probe, |c| c.min(probe)))
    }

    fn acquire(&mut self) -> Result<Ticket, Admission> {
        self.settle();
        let probe = match self.state {
            CircuitState::Closed => false,
            CircuitState::Open => {
                self.blocked += 1;
                let retry_after =
                    (!self.forced_open).then(|| Duration::from_micros(self.until - self.now));
                return Err(Admission::Rejected { retry_after });
            }
            CircuitState::HalfOpen => {
                if self.in_flight >= self.config.half_open_max_requests {
                    self.blocked += 1;
                    return Err(Admission::Rejected { retry_after: None });
                }
                self.in_flight += 1;
                self.probes += 1;
                true
            }
        };
        Ok(Ticket {
            generation: self.generation,
            probe,
            start: self.now,
            deadline: self.time_limit(probe).map(|l| self.now + l),
        })
    }

    /// The breaker's admission `real` where the model said `m`, if it only
    /// differs by the documented imprecision of an Open rejection that used
    /// the timer task's clock reading (module docs: `retry_after` "at most
    /// one tick too long"): then what the model should have said.
    fn within_a_tick(
        &mut self,
        m: Result<Ticket, Admission>,
        real: Admission,
    ) -> Option<Result<Ticket, Admission>> {
        let tick = (self.open_len / 1000).clamp(MS, 100 * MS);
        let Admission::Rejected {
            retry_after: Some(got),
        } = real
        else {
            return None;
        };
        let got = got.as_micros() as u64;
        match m {
            Err(Admission::Rejected {
                retry_after: Some(want),
            }) => {
                let want = want.as_micros() as u64;
                (want <= got && got <= want + tick).then_some(m)
            }
            // The opening ended less than a tick ago and the breaker has not
            // noticed yet: the first probe is refused instead.
            Ok(t)
                if t.probe
                    && self.in_flight == 1
                    && self.probes_ok == 0
                    && self.now < self.until + tick
                    && got <= tick =>
            {
                self.in_flight -= 1;
                self.probes -= 1;
                self.blocked += 1;
                Some(Err(real))
            }
            _ => None,
        }
    }

    /// Whether `t` belongs to the current generation.
    fn current(&self, t: &Ticket) -> bool {
        t.generation == self.generation
    }

    /// A call ended without an outcome: cancelled or ignored.
    fn release(&mut self, t: Ticket, cancelled: bool) {
        self.settle();
        if cancelled {
            self.cancelled += 1;
        } else {
            self.ignored += 1;
        }
        if t.probe && self.current(&t) {
            self.in_flight -= 1;
        }
    }

    /// A call ended with an outcome.
    fn complete(&mut self, t: Ticket, failed: bool) {
        self.settle();
        let slow = self
            .config
            .slow_call_ms
            .is_some_and(|ms| self.now - t.start > ms * MS);
        if failed {
            self.failures += 1;
        } else {
            self.successes += 1;
        }
        if slow {
            self.slow += 1;
        }
        if !self.current(&t) {
            return; // stale: its state is gone
        }
        if t.probe {
            self.in_flight -= 1;
            if failed || slow {
                self.open();
            } else {
                self.probes_ok += 1;
                if self.probes_ok >= self.config.half_open_max_requests {
                    self.close();
                }
            }
            return;
        }
        self.window.push_back((failed, slow));
        if self.window.len() > self.config.sample_size {
            self.window.pop_front();
        }
        let judged = self.config.enabled && !self.forced_closed;
        if judged && self.window.len() >= self.config.minimum_calls() {
            let slow_rate = self.rate(|&(_, s)| s);
            let tripped = self.failure_rate() >= self.config.failure_threshold
                || (self.config.slow_call_ms.is_some()
                    && slow_rate >= self.config.slow_call_rate_threshold);
            if tripped {
                self.open();
            }
        }
    }

    fn rate(&self, f: impl Fn(&Outcome) -> bool) -> f64 {
        if self.window.is_empty() {
            0.0
        } else {
            self.window.iter().filter(|o| f(o)).count() as f64 / self.window.len() as f64
        }
    }

    fn failure_rate(&self) -> f64 {
        self.rate(|&(f, _)| f)
    }

    fn retry_after(&self) -> Option<Duration> {
        (self.state == CircuitState::Open && !self.forced_open)
            .then(|| Duration::from_micros(self.until - self.now))
    }

    fn observed(&mut self) -> Observed {
        self.settle();
        let recorded = self.successes + self.failures;
        let allowed = recorded + self.ignored + self.cancelled;
        Observed {
            state: self.state,
            failure_rate: self.failure_rate(),
            retry_after: self.retry_after(),
            window_len: self.window.len() as u64,
            requests: allowed + self.blocked,
            allowed,
            blocked: self.blocked,
            successes: self.successes,
            failures: self.failures,
            slow_calls: self.slow,
            ignored: self.ignored,
            cancelled: self.cancelled,
            half_open_tests: self.probes,
            state_changes: self.transitions.iter().flatten().sum(),
            transitions: self.transitions,
            open_streak: self.streak,
        }
    }
}

/// What the test compares after a step.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    state: CircuitState,
    failure_rate: f64,
    retry_after: Option<Duration>,
    window_len: u64,
    requests: u64,
    allowed: u64,
    blocked: u64,
    successes: u64,
    failures: u64,
    slow_calls: u64,
    ignored: u64,
    cancelled: u64,
    half_open_tests: u64,
    state_changes: u64,
    transitions: [[u64; 3]; 3],
    open_streak: u32,
}

fn observe(b: &CircuitBreaker) -> Observed {
    let state = b.state();
    let failure_rate = b.failure_rate();
    let retry_after = b.retry_after();
    let m = b.metrics();
    Observed {
        state,
        failure_rate,
        retry_after,
        window_len: m.window_len,
        requests: m.requests,
        allowed: m.allowed,
        blocked: m.blocked,
        successes: m.successes,
        failures: m.failures,
        slow_calls: m.slow_calls,
        ignored: m.ignored,
        cancelled: m.cancelled,
        half_open_tests: m.half_open_tests,
        state_changes: m.state_changes,
        transitions: m.transitions,
        open_streak: m.open_streak,
    }
}

// ---- operations ----------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A call that ends at once, through `call_with` or a permit.
    Call {
        verdict: Verdict,
        via_call: bool,
    },
    /// A call that panics: its future through `call`, or with a permit held.
    Panic {
        via_call: bool,
    },
    /// A permit dropped unused (a cancelled call).
    Cancel,
    /// A permit acquired now and finished by a later `Finish`.
    Hold,
    /// A `call` whose future never finishes: a timeout or a drop ends it.
    Hang,
    /// Finishes one of the held calls.
    Finish {
        which: Index,
        how: How,
    },
    /// Advances the clock; `observe: false` skips the checks that read
    /// `state()`, `yields` lets timer tasks run afterwards.
    Advance {
        ms: u64,
        observe: bool,
        yields: bool,
    },
    /// Advances the clock to `offset_ms` from one of the pending
    /// deadlines: the end of the opening, a hung call's time limit, the
    /// moment a held call becomes slow (1 ms when there is none).
    ToDeadline {
        which: Index,
        offset_ms: i64,
        observe: bool,
    },
    /// `n` admissions in a row, each granted one dropped at once.
    Burst {
        n: usize,
    },
    ForceOpen,
    ForceClosed,
    Reset,
}

/// Weights for an outcome that fails with probability about `p_fail`.
fn weights(p_fail: f64) -> (u32, u32) {
    let fail = (p_fail * 10.0).round() as u32;
    (11 - fail, fail + 1)
}

fn verdict(p_fail: f64) -> impl Strategy<Value = Verdict> {
    let (ok, fail) = weights(p_fail);
    prop_oneof![
        ok => Just(Verdict::Success),
        fail => Just(Verdict::Failure),
        1 => Just(Verdict::Ignore),
    ]
}

fn how(p_fail: f64) -> impl Strategy<Value = How> {
    let (ok, fail) = weights(p_fail);
    prop_oneof![
        ok => Just(How::Success),
        fail => Just(How::Failure),
        1 => Just(How::Ignore),
        1 => Just(How::Drop),
        1 => Just(How::Panic),
    ]
}

fn op(p_fail: f64) -> impl Strategy<Value = Op> {
    // Forced states last until a reset, so forcing is rare and resets are not.
    prop_oneof![
        48 => (verdict(p_fail), any::<bool>())
            .prop_map(|(verdict, via_call)| Op::Call { verdict, via_call }),
        6 => any::<bool>().prop_map(|via_call| Op::Panic { via_call }),
        6 => Just(Op::Cancel),
        15 => Just(Op::Hold),
        6 => Just(Op::Hang),
        24 => (any::<Index>(), how(p_fail)).prop_map(|(which, how)| Op::Finish { which, how }),
        15 => (
            prop_oneof![0u64..5, 5u64..150, 150u64..1_000],
            prop::bool::weighted(0.8),
            any::<bool>()
        )
            .prop_map(|(ms, observe, yields)| Op::Advance { ms, observe, yields }),
        15 => (any::<Index>(), -1i64..=1, prop::bool::weighted(0.7))
            .prop_map(|(which, offset_ms, observe)| Op::ToDeadline { which, offset_ms, observe }),
        3 => (1usize..100).prop_map(|n| Op::Burst { n }),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::ForceClosed),
        5 => Just(Op::Reset),
    ]
}

/// Phases of operations, each with its own share of failures, so that
/// cases both trip breakers and let them recover.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let phase = prop::sample::select(vec![0.0, 0.2, 0.5, 0.8, 1.0])
        .prop_flat_map(|p_fail| prop::collection::vec(op(p_fail), 1..30));
    prop::collection::vec(phase, 1..6).prop_map(|v| v.into_iter().flatten().collect())
}

fn config() -> impl Strategy<Value = CircuitBreakerConfig> {
    let times = (
        10u64..=100,
        prop::sample::select(vec![1.0, 2.0]),
        prop::sample::select(vec![1u64, 2, 4, 8]),
        prop::option::weighted(0.3, 5u64..=50),
        prop::sample::select(vec![0.5, 1.0]),
        prop::option::weighted(0.2, 5u64..=200),
        prop::option::weighted(0.2, 5u64..=200),
    );
    (1usize..=8)
        .prop_flat_map(|sample_size| {
            (
                Just(sample_size),
                prop::option::weighted(0.8, 1..=sample_size),
                prop::sample::select(vec![0.25, 0.5, 0.75, 1.0]),
                1usize..=3,
                prop::bool::weighted(0.9),
            )
        })
        .prop_flat_map(move |rules| (Just(rules), times.clone()))
        .prop_map(
            |(
                (sample_size, minimum_calls, failure_threshold, half_open_max_requests, enabled),
                (open, multiplier, cap, slow, slow_rate, call_timeout, probe_timeout),
            )| CircuitBreakerConfig {
                enabled,
                failure_threshold,
                sample_size,
                minimum_calls,
                open_timeout_ms: open,
                half_open_max_requests,
                backoff_multiplier: multiplier,
                max_open_timeout_ms: open * cap,
                jitter_ratio: 0.0,
                slow_call_ms: slow,
                slow_call_rate_threshold: slow_rate,
                call_timeout_ms: call_timeout,
                probe_timeout_ms: probe_timeout,
                ..Default::default()
            },
        )
}

// ---- driving the real breaker --------------------------------------------

/// The payload of the panics this test provokes; the hook keeps them quiet.
const INJECTED: &str = "model test: injected panic";

fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&INJECTED) {
                previous(info);
            }
        }));
    });
}

/// An operation that panics when polled.
async fn boom() -> Result<(), ()> {
    std::panic::panic_any(INJECTED)
}

type Hung<'a> = Pin<Box<dyn Future<Output = Result<(), CircuitError<()>>> + 'a>>;

/// A call in flight across steps.
enum Call<'a> {
    Permit(Permit<'a>),
    Hung(Hung<'a>),
}

struct Held<'a> {
    ticket: Ticket,
    call: Call<'a>,
}

fn admission(r: &Result<Permit<'_>, CircuitError<std::convert::Infallible>>) -> Admission {
    match r {
        Ok(p) => Admission::Admitted {
            probe: p.is_probe(),
        },
        Err(CircuitError::Open { retry_after }) => Admission::Rejected {
            retry_after: *retry_after,
        },
        Err(e) => panic!("try_acquire returned {e:?}"),
    }
}

fn expected(r: &Result<Ticket, Admission>) -> Admission {
    match r {
        Ok(t) => Admission::Admitted { probe: t.probe },
        Err(a) => *a,
    }
}

/// The admission a result of `call` shows (whether a call it ran was a
/// probe is not visible: the model's guess is taken).
fn called<T, E>(r: &Result<T, CircuitError<E>>, m: &Result<Ticket, Admission>) -> Admission {
    match r {
        Err(CircuitError::Open { retry_after }) => Admission::Rejected {
            retry_after: *retry_after,
        },
        _ => Admission::Admitted {
            probe: m.as_ref().is_ok_and(|t| t.probe),
        },
    }
}

/// What `call` returns given the model's admission `m` of a call that
/// returns `Err` when `fail`.
fn call_result(m: &Result<Ticket, Admission>, fail: bool) -> Result<(), CircuitError<()>> {
    match m {
        Ok(_) if fail => Err(CircuitError::Inner(())),
        Ok(_) => Ok(()),
        Err(Admission::Rejected { retry_after }) => Err(CircuitError::Open {
            retry_after: *retry_after,
        }),
        Err(Admission::Admitted { .. }) => unreachable!(),
    }
}

struct Run<'a> {
    breaker: &'a CircuitBreaker,
    /// What the breaker published.
    events: Arc<Mutex<Vec<Transition>>>,
    model: Model,
    held: Vec<Held<'a>>,
    start: Instant,
}

impl<'a> Run<'a> {
    /// Checks the breaker's admission `real` against the model's `m`, and
    /// returns the model's answer (adjusted within the documented tolerance).
    fn admit(
        &mut self,
        m: Result<Ticket, Admission>,
        real: Admission,
    ) -> Result<Result<Ticket, Admission>, TestCaseError> {
        if real == expected(&m) {
            return Ok(m);
        }
        match self.model.within_a_tick(m, real) {
            Some(m) => Ok(m),
            None => Err(TestCaseError::fail(format!(
                "admission: breaker {real:?}, model {m:?}"
            ))),
        }
    }

    async fn step(&mut self, op: &Op) -> Result<bool, TestCaseError> {
        let b = self.breaker;
        let mut observe = true;
        match *op {
            Op::Call { verdict, via_call } => {
                let fail = verdict == Verdict::Failure;
                let mut m = self.model.acquire();
                if via_call {
                    let r = b
                        .call_with(
                            move |_: &Result<(), ()>| verdict,
                            || async move {
                                if fail {
                                    Err(())
                                } else {
                                    Ok(())
                                }
                            },
                        )
                        .await;
                    m = self.admit(m, called(&r, &m))?;
                    prop_assert_eq!(r, call_result(&m, fail));
                } else {
                    let r = b.try_acquire();
                    m = self.admit(m, admission(&r))?;
                    if let Ok(p) = r {
                        p.record(verdict);
                    }
                }
                if let Ok(t) = m {
                    match verdict {
                        Verdict::Ignore => self.model.release(t, false),
                        _ => self.model.complete(t, fail),
                    }
                }
            }
            Op::Panic { via_call } => {
                let mut m = self.model.acquire();
                if via_call {
                    let r = AssertUnwindSafe(b.call(boom)).catch_unwind().await;
                    match r {
                        // It ran, and panicked.
                        Err(_) => m = self.admit(m, expected(&m))?,
                        Ok(r) => {
                            m = self.admit(m, called(&r, &m))?;
                            prop_assert!(m.is_err(), "admitted but did not run: {:?}", r);
                            prop_assert_eq!(r, call_result(&m, true));
                        }
                    }
                } else {
                    let mut seen = None;
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let r = b.try_acquire();
                        seen = Some(admission(&r));
                        if r.is_ok() {
                            std::panic::panic_any(INJECTED);
                        }
                    }));
                    let seen = seen.expect("try_acquire returned");
                    m = self.admit(m, seen)?;
                    prop_assert_eq!(r.is_err(), m.is_ok(), "panicked iff admitted");
                }
                if let Ok(t) = m {
                    self.model.complete(t, true);
                }
            }
            Op::Cancel => {
                let m = self.model.acquire();
                let r = b.try_acquire();
                let m = self.admit(m, admission(&r))?;
                drop(r);
                if let Ok(t) = m {
                    self.model.release(t, true);
                }
            }
            Op::Burst { n } => {
                for _ in 0..n {
                    let m = self.model.acquire();
                    let r = b.try_acquire();
                    let m = self.admit(m, admission(&r))?;
                    drop(r);
                    if let Ok(t) = m {
                        self.model.release(t, true);
                    }
                }
            }
            Op::Hold => {
                let m = self.model.acquire();
                let r = b.try_acquire();
                let m = self.admit(m, admission(&r))?;
                if let (Ok(ticket), Ok(p)) = (m, r) {
                    self.held.push(Held {
                        ticket,
                        call: Call::Permit(p),
                    });
                }
            }
            Op::Hang => {
                let m = self.model.acquire();
                let mut fut: Hung<'a> = Box::pin(b.call(std::future::pending::<Result<(), ()>>));
                match (&mut fut).now_or_never() {
                    None => match self.admit(m, expected(&m))? {
                        Ok(ticket) => self.held.push(Held {
                            ticket,
                            call: Call::Hung(fut),
                        }),
                        Err(a) => prop_assert!(false, "hung call running, model {:?}", a),
                    },
                    Some(r) => {
                        let m = self.admit(m, called(&r, &m))?;
                        prop_assert!(m.is_err(), "admitted but returned {:?}", r);
                        prop_assert_eq!(r, call_result(&m, true));
                    }
                }
            }
            Op::Finish { ref which, how } => {
                if !self.held.is_empty() {
                    let Held { ticket, call } = self.held.remove(which.index(self.held.len()));
                    self.finish(ticket, call, how);
                }
            }
            Op::Advance {
                ms,
                observe: o,
                yields,
            } => {
                self.advance(ms, yields).await;
                observe = o;
            }
            Op::ToDeadline {
                ref which,
                offset_ms,
                observe: o,
            } => {
                let deadlines = self.deadlines();
                let ms = if deadlines.is_empty() {
                    1
                } else {
                    let target = (deadlines[which.index(deadlines.len())] / MS) as i64 + offset_ms;
                    (target - (self.model.now / MS) as i64).max(0) as u64
                };
                self.advance(ms, false).await;
                observe = o;
            }
            Op::ForceOpen => {
                b.force_open();
                self.model.force_open();
            }
            Op::ForceClosed => {
                b.force_closed();
                self.model.force_closed();
            }
            Op::Reset => {
                b.reset();
                self.model.reset();
            }
        }
        self.poll_hung()?;
        Ok(observe)
    }

    fn finish(&mut self, ticket: Ticket, call: Call<'a>, how: How) {
        let p = match call {
            Call::Permit(p) => p,
            Call::Hung(fut) => {
                drop(fut);
                return self.model.release(ticket, true);
            }
        };
        match how {
            How::Success => p.success(),
            How::Failure => p.failure(),
            How::Ignore => p.ignore(),
            How::Drop => drop(p),
            How::Panic => {
                let r = std::panic::catch_unwind(AssertUnwindSafe(move || {
                    let _p = p;
                    std::panic::panic_any(INJECTED);
                }));
                assert!(r.is_err());
            }
        }
        match how {
            How::Success => self.model.complete(ticket, false),
            How::Failure | How::Panic => self.model.complete(ticket, true),
            How::Ignore => self.model.release(ticket, false),
            How::Drop => self.model.release(ticket, true),
        }
    }

    /// The moments (us) at which something is due to change.
    fn deadlines(&mut self) -> Vec<u64> {
        self.model.settle();
        let m = &self.model;
        let mut all = Vec::new();
        if m.state == CircuitState::Open && !m.forced_open {
            all.push(m.until);
        }
        for h in &self.held {
            all.extend(h.ticket.deadline);
            all.extend(m.config.slow_call_ms.map(|ms| h.ticket.start + ms * MS));
        }
        all
    }

    /// Moves the clock, then lets the runtime run the tasks that woke (the
    /// openings' timer tasks): the model assumes a runtime that runs its
    /// tasks on time. What a starved timer task does is bounded separately
    /// (`a_starved_timer_*` below). `yields` adds more turns.
    async fn advance(&mut self, ms: u64, yields: bool) {
        tokio::time::advance(Duration::from_millis(ms)).await;
        for _ in 0..if yields { 3 } else { 1 } {
            tokio::task::yield_now().await;
        }
        self.model.advance(ms);
    }

    /// Polls the hung calls: those past their time limit end as timeouts.
    fn poll_hung(&mut self) -> Result<(), TestCaseError> {
        let mut i = 0;
        while i < self.held.len() {
            let due = self.held[i]
                .ticket
                .deadline
                .is_some_and(|d| d <= self.model.now);
            let r = match &mut self.held[i].call {
                Call::Hung(fut) => fut.now_or_never(),
                Call::Permit(_) => {
                    i += 1;
                    continue;
                }
            };
            match r {
                None if !due => i += 1,
                Some(Err(CircuitError::Timeout { .. })) if due => {
                    let ticket = self.held.remove(i).ticket;
                    self.model.complete(ticket, true);
                }
                r => prop_assert!(
                    false,
                    "hung call {:?} returned {:?} at {} us",
                    self.held[i].ticket,
                    r,
                    self.model.now
                ),
            }
        }
        Ok(())
    }

    /// The published transitions are the model's.
    fn check_events(&self) -> Result<(), TestCaseError> {
        let got = self.events.lock().unwrap();
        let want = &self.model.events;
        prop_assert_eq!(got.len(), want.len(), "transitions {:?}", *got);
        for (g, w) in got.iter().zip(want) {
            let at = (g.at - self.start).as_micros() as u64;
            let open_for = g.open_for.map(|d| d.as_micros() as u64);
            prop_assert!(
                (g.from, g.to, open_for) == (w.from, w.to, w.open_for)
                    && (w.at.0..=w.at.1).contains(&at),
                "published {:?} (at {} us), expected {:?}",
                g,
                at,
                w
            );
        }
        Ok(())
    }

    fn check(&mut self, full: bool) -> Result<(), TestCaseError> {
        let elapsed = self.start.elapsed().as_micros() as u64;
        prop_assert_eq!(elapsed, self.model.now, "the paused clock moved by itself");
        if full {
            let want = self.model.observed();
            let got = observe(self.breaker);
            prop_assert_eq!(&got, &want);
            self.check_events()?;
            let last = self.events.lock().unwrap().last().map(|t| t.at);
            prop_assert_eq!(self.breaker.metrics().last_state_change, last);
        } else {
            prop_assert_eq!(self.breaker.failure_rate(), self.model.failure_rate());
        }
        Ok(())
    }
}

async fn run(config: CircuitBreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let breaker = CircuitBreaker::new(config.clone());
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    breaker.add_listener(move |t: &Transition| log.lock().unwrap().push(t.clone()));
    let mut run = Run {
        breaker: &breaker,
        events,
        model: Model::new(config),
        held: Vec::new(),
        start: Instant::now(),
    };
    for (i, op) in ops.iter().enumerate() {
        let r = match run.step(op).await {
            Ok(full) => run.check(full),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            return Err(TestCaseError::fail(format!(
                "step {i} ({op:?}): {e}\nmodel: {:?}",
                run.model
            )));
        }
    }
    while let Some(Held { ticket, call }) = run.held.pop() {
        run.finish(ticket, call, How::Drop);
    }
    run.check(true)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused current-thread runtime")
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // Only tests/model.rs is ours to write: no regression files next to it.
        failure_persistence: None,
        max_shrink_iters: 20_000,
        // Keeps a failing run (a known bug) near the time of a passing one.
        max_shrink_time: 15_000,
        ..Config::default()
    })]

    #[test]
    fn breaker_agrees_with_model(config in config(), ops in ops()) {
        quiet_injected_panics();
        runtime().block_on(run(config, ops))?;
    }
}

// ---- regressions -----------------------------------------------------------

/// Bug: a stale outcome (a call admitted before the breaker opened, finishing
/// after it closed again) is ignored, but still takes a position in the count
/// window's ring (`Core::complete` bumps the cursor before it checks the
/// generation). The next outcomes then wrap onto each other: with
/// `sample_size: 2`, failure, stale success, failure leaves ONE failure in the
/// window instead of two, so the breaker does not open.
#[test]
fn regression_stale_outcome_leaves_hole_in_count_window() {
    runtime().block_on(async {
        let b = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 2,
            failure_threshold: 1.0,
            half_open_max_requests: 1,
            open_timeout_ms: 10,
            jitter_ratio: 0.0,
            ..Default::default()
        });
        let late = b.try_acquire().unwrap(); // admitted while Closed
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_millis(10)).await;
        b.try_acquire().unwrap().success(); // the probe closes it
        assert_eq!(b.state(), CircuitState::Closed);

        b.try_acquire().unwrap().failure();
        late.success(); // stale: must change nothing
        b.try_acquire().unwrap().failure();
        assert_eq!(b.metrics().window_len, 2, "two failures since the close");
        assert_eq!(b.state(), CircuitState::Open, "2 failures of 2 >= 1.0");
    });
}

/// Bug: once the open timeout has elapsed the breaker is HalfOpen (SPEC §1:
/// "state() reports HalfOpen from that moment"), but `force_open()`,
/// `force_closed()` and `reset()` act on the raw word, which is still Open
/// until someone calls `state()`/`try_acquire()` or the timer task runs. So
/// the HalfOpen phase is never published and the transition is recorded
/// from Open: here Open -> Open (nothing at all) instead of Open ->
/// HalfOpen -> Open. Without a tokio runtime (no timer task) it always
/// happens; with one, whenever the timer task has not run yet.
#[test]
fn regression_force_after_elapsed_timeout_skips_half_open() {
    runtime().block_on(async {
        let b = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 1,
            open_timeout_ms: 10,
            jitter_ratio: 0.0,
            ..Default::default()
        });
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_millis(10)).await;
        // The breaker is HalfOpen now (b.state() would say so)...
        b.force_open();
        let m = b.metrics();
        assert_eq!(
            m.transitions_between(CircuitState::Open, CircuitState::HalfOpen),
            1,
            "the elapsed opening ended: Open -> HalfOpen"
        );
        assert_eq!(
            m.transitions_between(CircuitState::HalfOpen, CircuitState::Open),
            1,
            "force_open() moved HalfOpen -> Open"
        );
    });
}

/// Trips a `sample_size: 1`, 10 ms breaker and refuses 66 calls, which
/// once woke the opening's timer task to keep a cached clock reading.
async fn open_and_refused() -> CircuitBreaker {
    let b = CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 1,
        open_timeout_ms: 10,
        jitter_ratio: 0.0,
        ..Default::default()
    });
    b.try_acquire().unwrap().failure();
    tokio::task::yield_now().await; // the timer task starts waiting
    for _ in 0..66 {
        assert!(b.try_acquire().is_err());
    }
    tokio::task::yield_now().await;
    b
}

/// Moves the paused clock without letting any task run (a blocked runtime,
/// a late timer): the first poll of `advance` moves the clock, then yields.
fn advance_starving_timers(d: Duration) {
    assert!(tokio::time::advance(d).now_or_never().is_none());
}

/// A starved timer task (the runtime did not run it since the clock moved):
/// no call after the deadline is refused, before or after `state()`, and
/// the two agree.
#[test]
fn a_starved_timer_never_refuses_a_call_after_the_deadline() {
    runtime().block_on(async {
        let b = open_and_refused().await;
        advance_starving_timers(Duration::from_millis(12)); // past the deadline
        let refused = (0..64)
            .filter(|_| b.try_acquire().map(drop).is_err())
            .count();
        assert_eq!(refused, 0, "{refused} calls refused after the deadline");
        assert_eq!(b.state(), CircuitState::HalfOpen);
    });
}

/// The same starved timer task, before the deadline: the advised wait is
/// exact.
#[test]
fn a_starved_timer_never_advises_a_wrong_wait() {
    runtime().block_on(async {
        let b = open_and_refused().await;
        advance_starving_timers(Duration::from_millis(5));
        for _ in 0..100 {
            let left = b.try_acquire().map(drop).unwrap_err().retry_after();
            assert_eq!(left, Some(Duration::from_millis(5)), "5 ms left of 10");
        }
    });
}

fn extreme_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(breakwater::MAX_DURATION_MS),
        any::<u64>(),
        1..=breakwater::MAX_DURATION_MS,
    ]
}

fn extreme_multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(1e300),
        Just(f64::MAX),
        Just(f64::INFINITY),
        Just(f64::NAN),
        Just(0.5),
        1.0..1e6,
    ]
}

fn extreme_jitter() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(0.999), Just(1.0), Just(-0.1), 0.0..1.0]
}

proptest! {
    #![proptest_config(Config {
        cases: cases().min(512),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Extreme configurations (`u64::MAX` ms, multiplier 1e300, jitter
    /// 0.999, and invalid ones): validation never panics and names a field
    /// for each invalid one; a valid one builds a breaker whose openings,
    /// however many probes fail in a row, never panic and never last longer
    /// than `max_open_timeout_ms` scaled by the jitter.
    #[test]
    fn extreme_configs_never_panic_and_openings_stay_within_their_cap(
        open_timeout_ms in extreme_ms(),
        max_open_timeout_ms in extreme_ms(),
        backoff_multiplier in extreme_multiplier(),
        jitter_ratio in extreme_jitter(),
        window_ms in proptest::option::of(extreme_ms()),
        probe_timeout_ms in proptest::option::of(extreme_ms()),
        call_timeout_ms in proptest::option::of(extreme_ms()),
        failed_probes in 0_usize..40,
    ) {
        let config = CircuitBreakerConfig {
            sample_size: 1,
            open_timeout_ms,
            max_open_timeout_ms,
            backoff_multiplier,
            jitter_ratio,
            window_ms,
            probe_timeout_ms,
            call_timeout_ms,
            half_open_max_requests: 1,
            ..Default::default()
        };
        if let Err(e) = config.validate() {
            prop_assert!(!e.problems().is_empty());
            prop_assert!(CircuitBreaker::try_new(config).is_err());
            return Ok(());
        }
        runtime().block_on(async {
            let cap = Duration::from_millis(max_open_timeout_ms)
                .mul_f64(1.0 + jitter_ratio)
                .saturating_add(Duration::from_micros(1));
            let b = CircuitBreaker::new(config);
            b.try_acquire().unwrap().failure();
            for _ in 0..failed_probes {
                prop_assert_eq!(b.state(), CircuitState::Open);
                let left = b.retry_after().expect("an unforced opening has a deadline");
                prop_assert!(left <= cap, "{:?} > {:?}", left, cap);
                prop_assert!(!left.is_zero());
                tokio::time::advance(left).await;
                let probe = b.try_acquire().expect("the deadline passed: a probe");
                prop_assert!(probe.is_probe());
                prop_assert!(probe.time_limit().is_some());
                probe.failure();
            }
            Ok(())
        })?;
    }
}
