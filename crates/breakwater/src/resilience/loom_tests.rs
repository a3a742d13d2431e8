//! loom models of the state word (run with RUSTFLAGS="--cfg breakwater_loom").
//!
//! Each model drives a [`Core`] from a few threads with a fake clock (a
//! plain number of microseconds per call) and checks one guarantee of the
//! breaker over every interleaving loom explores: a trip happens once, the
//! probe limit holds, probe slots come back, stale outcomes change nothing,
//! window tallies match the window's slots, a window is calm only while it
//! is full of successes, and a success that leaves a calm window alone is
//! ordered before the failure or clear it races, and counted once.
//!
//! `scripts/loom.sh` runs them. `LOOM_MAX_PREEMPTIONS` overrides the bound
//! each model sets for itself.
//!
//! Models whose doc starts with "Regression" reproduce a bug the library
//! once had and pass since it was fixed; they keep it fixed:
//!
//! * `a_window_full_of_failures_trips_at_threshold_one`: torn `Relaxed`
//!   window tallies could leave a window full of failures unjudged;
//! * `a_stale_closed_failure_never_lands_in_the_fresh_window`: a late
//!   failure could land in the window of the next Closed generation;
//! * `a_stale_time_window_failure_never_lands_in_the_fresh_window`: the
//!   same, for a time window (`window_ms`).

use loom::sync::atomic::{AtomicU64, AtomicUsize};
use loom::sync::Arc;
use loom::thread;

use super::core::{Change, Core, LazyNow, Ticket};
use super::state::CircuitState;
use super::window::{CountWindow, Tally, FAILURE, SLOW, SUCCESS};
use crate::config::CircuitBreakerConfig;
use crate::sync::Ordering;

/// Every opening lasts exactly this long (1 ms, no backoff, no jitter).
const OPEN_US: u64 = 1_000;

/// Explores `f` with at most `preemptions` preemptions per interleaving,
/// unless `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(f);
}

/// A small breaker: a count window of `sample_size`, `probes` probes, every
/// opening [`OPEN_US`] long.
fn core(sample_size: usize, probes: usize, failure_threshold: f64) -> Core {
    with_minimum(sample_size, sample_size, probes, failure_threshold)
}

/// As [`core`], judging the rate from `minimum_calls` outcomes on.
fn with_minimum(
    sample_size: usize,
    minimum_calls: usize,
    probes: usize,
    failure_threshold: f64,
) -> Core {
    let config = CircuitBreakerConfig {
        failure_threshold,
        sample_size,
        minimum_calls: Some(minimum_calls),
        half_open_max_requests: probes,
        open_timeout_ms: 1,
        max_open_timeout_ms: 1,
        backoff_multiplier: 1.0,
        jitter_ratio: 0.0,
        ..Default::default()
    };
    Core::new(&config, 7)
}

/// The transitions one thread caused, in order.
#[derive(Debug, Default)]
struct Log(Vec<Change>);

impl Log {
    fn count(&self, to: CircuitState) -> usize {
        self.0.iter().filter(|c| c.to == to).count()
    }
}

/// How many transitions to `to` all `logs` hold together.
fn count(logs: &[&Log], to: CircuitState) -> usize {
    logs.iter().map(|l| l.count(to)).sum()
}

fn acquire(core: &Core, t: u64, log: &mut Log) -> Option<Ticket> {
    core.acquire(&mut LazyNow::new(|| t), &mut |c| log.0.push(c))
        .ok()
}

fn complete(core: &Core, ticket: Ticket, outcome: u8, t: u64, log: &mut Log) {
    core.complete(ticket, outcome, &mut LazyNow::new(|| t), &mut |c| {
        log.0.push(c)
    });
}

fn tally(core: &Core) -> Tally {
    core.tally(&mut LazyNow::new(|| 0))
}

fn state(core: &Core, t: u64) -> CircuitState {
    core.state(&mut LazyNow::new(|| t), &mut |_| {})
}

/// Fails calls at `t` until the breaker is Open (at most `limit` calls, so
/// that a model stays finite whatever the interleaving).
fn trip(core: &Core, t: u64, limit: usize, log: &mut Log) {
    for _ in 0..limit {
        if core.word().state() == CircuitState::Open {
            break;
        }
        match acquire(core, t, log) {
            Some(ticket) if !ticket.probe => complete(core, ticket, FAILURE, t, log),
            Some(ticket) => panic!("a probe while tripping a Closed breaker: {ticket:?}"),
            // Another thread opened it since.
            None => break,
        }
    }
    assert_eq!(
        core.word().state(),
        CircuitState::Open,
        "{limit} failures did not open the breaker"
    );
}

/// Asks for a probe at `t`, at or after the deadline of the current
/// opening. Until the thread that opened the breaker has published that
/// deadline (and this thread sees it), rejections advise no wait and
/// nothing moves to HalfOpen, so this waits for the opener to get that far.
fn probe(core: &Core, t: u64, log: &mut Log) -> Ticket {
    loop {
        if let Some(ticket) = acquire(core, t, log) {
            assert!(ticket.probe, "{ticket:?}");
            return ticket;
        }
        let w = core.word();
        assert_eq!(w.state(), CircuitState::Open, "refused at {t}: {w:?}");
        thread::yield_now();
    }
}

/// A breaker that is HalfOpen (the first of `probes` probe slots not yet
/// taken), with the time at which it half-opened.
fn half_open(probes: usize) -> (Core, u64) {
    let core = core(2, probes, 0.5);
    let mut log = Log::default();
    trip(&core, 0, 3, &mut log);
    assert_eq!(state(&core, OPEN_US), CircuitState::HalfOpen);
    assert_eq!(core.word().in_flight(), 0);
    (core, OPEN_US)
}

/// While a thread holds a probe ticket of the current generation, the word
/// counts it among the probes in flight.
fn assert_counted(core: &Core, ticket: Ticket) {
    let w = core.word();
    if w.generation() == ticket.generation && w.state() == CircuitState::HalfOpen {
        assert!(
            w.in_flight() >= 1,
            "a probe of generation {} is held but none is in flight: {w:?}",
            ticket.generation
        );
    }
}

// ---------------------------------------------------------------- trips

/// Three failures that fill a window of two at once open the breaker once:
/// one thread wins the compare-exchange, the others see a changed word.
#[test]
fn concurrent_failures_trip_exactly_once() {
    model(2, || {
        let core = Arc::new(core(2, 1, 0.5));
        // Closed admission writes nothing: take the tickets up front.
        let tickets: Vec<Ticket> = (0..3)
            .map(|_| acquire(&core, 0, &mut Log::default()).expect("Closed admits"))
            .collect();
        let threads: Vec<_> = tickets[1..]
            .iter()
            .map(|&ticket| {
                let core = core.clone();
                thread::spawn(move || {
                    let mut log = Log::default();
                    complete(&core, ticket, FAILURE, 0, &mut log);
                    log
                })
            })
            .collect();
        let mut mine = Log::default();
        complete(&core, tickets[0], FAILURE, 0, &mut mine);
        let logs: Vec<Log> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let all: Vec<&Log> = logs.iter().chain([&mine]).collect();

        assert_eq!(count(&all, CircuitState::Open), 1, "{all:?}");
        assert_eq!(all.iter().map(|l| l.0.len()).sum::<usize>(), 1, "{all:?}");
        let w = core.word();
        assert_eq!(w.state(), CircuitState::Open);
        assert_eq!(w.generation(), 1, "one transition, one generation");
        assert_eq!(w.streak(), 1);
        assert_eq!(core.open_deadline(w), Some(OPEN_US));
        assert_eq!(core.totals.failures.load(Ordering::Relaxed), 3);
        assert_eq!(core.totals.transitions[1].load(Ordering::Relaxed), 1);
    });
}

/// Regression (window/count.rs, `CountWindow::tally` once read `filled` and
/// `failures` with `Relaxed`): two failures that fill a window of two
/// together must open a breaker whose threshold is 1.0 (the rate is 2/2).
/// With torn tallies each judging thread could see the other's `failures`
/// increment without its `filled` one (or the reverse): one judged 1
/// failure of 2 (0.5 < 1.0), the other 1 outcome (< minimum_calls), and the
/// breaker stayed Closed with a window full of failures.
#[test]
fn a_window_full_of_failures_trips_at_threshold_one() {
    model(2, || {
        let core = Arc::new(core(2, 1, 1.0));
        let a = acquire(&core, 0, &mut Log::default()).unwrap();
        let b = acquire(&core, 0, &mut Log::default()).unwrap();
        let other = {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                complete(&core, b, FAILURE, 0, &mut log);
                log
            })
        };
        let mut mine = Log::default();
        complete(&core, a, FAILURE, 0, &mut mine);
        let theirs = other.join().unwrap();

        assert_eq!(
            tally(&core),
            Tally {
                len: 2,
                failures: 2,
                slow: 0
            }
        );
        assert_eq!(
            core.word().state(),
            CircuitState::Open,
            "two failures of two at threshold 1.0 left the breaker Closed \
             (the judging threads saw torn window tallies)"
        );
        assert_eq!(count(&[&mine, &theirs], CircuitState::Open), 1);
    });
}

// ---------------------------------------------------------------- probes

/// Three threads race for two probe slots as the opening ends: two get
/// one, the third is refused, the move to HalfOpen happens once and the
/// word never counts more than two probes.
#[test]
fn half_open_never_admits_more_than_the_probe_limit() {
    model(2, || {
        let core = Arc::new(core(2, 2, 0.5));
        trip(&core, 0, 3, &mut Log::default());
        let granted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let core = core.clone();
                let granted = granted.clone();
                thread::spawn(move || {
                    let mut log = Log::default();
                    let ticket = acquire(&core, OPEN_US, &mut log);
                    if let Some(ticket) = ticket {
                        assert!(ticket.probe);
                        let n = granted.fetch_add(1, Ordering::Relaxed) + 1;
                        assert!(n <= 2, "{n} probes granted");
                        let w = core.word();
                        assert!(w.in_flight() <= 2, "{w:?}");
                        assert_counted(&core, ticket);
                    }
                    (ticket, log)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let logs: Vec<&Log> = results.iter().map(|(_, l)| l).collect();

        let tickets: Vec<Ticket> = results.iter().filter_map(|(t, _)| *t).collect();
        assert_eq!(tickets.len(), 2, "nobody released, so both slots are taken");
        assert_eq!(granted.load(Ordering::Relaxed), 2);
        assert_eq!(count(&logs, CircuitState::HalfOpen), 1, "{logs:?}");
        let w = core.word();
        assert_eq!(w.state(), CircuitState::HalfOpen);
        assert_eq!(w.in_flight(), 2);
        assert!(tickets.iter().all(|t| t.generation == w.generation()));
        assert_eq!(core.totals.probes.load(Ordering::Relaxed), 2);
        assert_eq!(core.blocked(), 1);
    });
}

/// What a probe-holding thread does with its ticket.
#[derive(Debug, Clone, Copy)]
enum Then {
    Succeed,
    Fail,
    Cancel,
    Ignore,
}

/// Runs one thread per entry of `plan` against a HalfOpen breaker with
/// `probes` slots; each asks for a probe and, if admitted, does what its
/// entry says. Returns the breaker and every thread's log.
fn race_probes(probes: usize, plan: &'static [Then]) -> (Arc<Core>, Vec<Log>) {
    let (core, t) = half_open(probes);
    let core = Arc::new(core);
    let threads: Vec<_> = plan
        .iter()
        .map(|&then| {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                if let Some(ticket) = acquire(&core, t, &mut log) {
                    assert_counted(&core, ticket);
                    match then {
                        Then::Succeed => complete(&core, ticket, SUCCESS, t, &mut log),
                        Then::Fail => complete(&core, ticket, FAILURE, t, &mut log),
                        Then::Cancel => core.release(ticket, true),
                        Then::Ignore => core.release(ticket, false),
                    }
                }
                log
            })
        })
        .collect();
    let logs = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (core, logs)
}

/// Once every probe holder has finished, in whatever way, no slot is
/// left taken: the breaker is not HalfOpen with probes in flight.
fn assert_no_slot_held(core: &Core) {
    let w = core.word();
    assert!(
        w.state() != CircuitState::HalfOpen || w.in_flight() == 0,
        "every probe holder finished but {} probe slot(s) are still taken: {w:?}",
        w.in_flight()
    );
}

/// Success, cancellation and failure racing in HalfOpen return every slot.
#[test]
fn probe_slots_come_back_after_success_cancel_and_failure() {
    model(2, || {
        let (core, logs) = race_probes(2, &[Then::Succeed, Then::Cancel, Then::Fail]);
        assert_no_slot_held(&core);
        let logs: Vec<&Log> = logs.iter().collect();
        // At most one of the two successes a close needs came in.
        assert_eq!(count(&logs, CircuitState::Closed), 0, "{logs:?}");
        assert_ne!(core.word().state(), CircuitState::Closed);
    });
}

/// Cancelled and ignored probes record nothing and free their slots, so
/// the breaker can still admit a full set of probes and close.
#[test]
fn cancelled_probes_free_their_slots_and_the_breaker_can_close() {
    model(2, || {
        let (core, logs) = race_probes(2, &[Then::Cancel, Then::Ignore, Then::Cancel]);
        let w = core.word();
        assert_eq!(w.state(), CircuitState::HalfOpen);
        assert_eq!(w.in_flight(), 0, "{w:?}");
        assert_eq!(w.probes_ok(), 0, "a cancelled probe recorded an outcome");
        assert!(logs.iter().all(|l| l.0.is_empty()), "{logs:?}");
        // Both slots are free again: two probes succeed and close it.
        let mut log = Log::default();
        let a = acquire(&core, OPEN_US, &mut log).expect("slot 1 is free");
        let b = acquire(&core, OPEN_US, &mut log).expect("slot 2 is free");
        complete(&core, a, SUCCESS, OPEN_US, &mut log);
        complete(&core, b, SUCCESS, OPEN_US, &mut log);
        assert_eq!(core.word().state(), CircuitState::Closed);
        assert_eq!(log.count(CircuitState::Closed), 1);
    });
}

/// Two successes racing with a cancellation: exactly the successes count,
/// the second of them closes the breaker, and its window starts empty.
#[test]
fn racing_probe_successes_close_once() {
    model(2, || {
        let (core, logs) = race_probes(2, &[Then::Succeed, Then::Succeed, Then::Cancel]);
        assert_no_slot_held(&core);
        let logs: Vec<&Log> = logs.iter().collect();
        let w = core.word();
        let closes = count(&logs, CircuitState::Closed);
        assert!(closes <= 1, "{logs:?}");
        if w.state() == CircuitState::Closed {
            assert_eq!(closes, 1);
            assert_eq!(
                tally(&core),
                Tally::default(),
                "a closed breaker starts empty"
            );
        } else {
            // The cancel took a slot first, so one success was refused.
            assert_eq!(w.state(), CircuitState::HalfOpen);
            assert_eq!(w.probes_ok(), 1, "{w:?}");
        }
    });
}

// ---------------------------------------------------------------- stale outcomes

/// A success of a call admitted while Closed, finishing while the breaker
/// opens and half-opens, neither closes it nor counts as a probe success.
/// (One failure trips this breaker, so that the model does not depend on
/// the torn tallies of `a_window_full_of_failures_trips_at_threshold_one`.)
#[test]
fn a_stale_closed_success_never_closes_a_half_open_breaker() {
    model(2, || {
        let core = Arc::new(with_minimum(2, 1, 1, 0.5));
        let old = acquire(&core, 0, &mut Log::default()).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                complete(&core, old, SUCCESS, 0, &mut log);
                log
            })
        };
        let mut mine = Log::default();
        trip(&core, 0, 4, &mut mine);
        let real = probe(&core, OPEN_US, &mut mine);
        let theirs = late.join().unwrap();

        assert_eq!(count(&[&mine, &theirs], CircuitState::Closed), 0);
        let w = core.word();
        assert_eq!(w.state(), CircuitState::HalfOpen, "{w:?}");
        assert_eq!(w.generation(), real.generation);
        assert_eq!(
            w.probes_ok(),
            0,
            "a Closed ticket counted as a probe success"
        );
        assert_eq!(w.in_flight(), 1);
        // The real probe still decides.
        complete(&core, real, FAILURE, OPEN_US, &mut mine);
        assert_eq!(core.word().state(), CircuitState::Open);
    });
}

/// A probe success from an earlier HalfOpen period, racing with the
/// failure that ended it and the next HalfOpen period, is never counted
/// in the new period: with one success of two there, it must not close.
#[test]
fn a_stale_probe_success_never_counts_in_a_newer_half_open_period() {
    model(2, || {
        let (core, t) = half_open(2);
        let core = Arc::new(core);
        let mut mine = Log::default();
        let old = acquire(&core, t, &mut mine).unwrap();
        let failing = acquire(&core, t, &mut mine).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                complete(&core, old, SUCCESS, t, &mut log);
                log
            })
        };
        complete(&core, failing, FAILURE, t, &mut mine);
        let later = t + 10 * OPEN_US;
        let fresh = probe(&core, later, &mut mine);
        assert_ne!(fresh.generation, old.generation);
        complete(&core, fresh, SUCCESS, later, &mut mine);
        let theirs = late.join().unwrap();

        assert_eq!(count(&[&mine, &theirs], CircuitState::Closed), 0);
        let w = core.word();
        assert_eq!(w.state(), CircuitState::HalfOpen, "{w:?}");
        assert_eq!(w.generation(), fresh.generation);
        assert_eq!(w.probes_ok(), 1, "only the fresh probe's success counts");
        assert_eq!(w.in_flight(), 0);
    });
}

/// A probe of an earlier HalfOpen period cancelled while the breaker
/// reopens and half-opens again frees nothing in the new period: both of
/// its slots stay taken by the new probes.
#[test]
fn a_stale_probe_cancel_never_frees_a_slot_of_a_newer_half_open_period() {
    model(2, || {
        let (core, t) = half_open(2);
        let core = Arc::new(core);
        let mut mine = Log::default();
        let old = acquire(&core, t, &mut mine).unwrap();
        let failing = acquire(&core, t, &mut mine).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || core.release(old, true))
        };
        complete(&core, failing, FAILURE, t, &mut mine);
        let later = t + 10 * OPEN_US;
        let a = probe(&core, later, &mut mine);
        let b = acquire(&core, later, &mut mine);
        late.join().unwrap();

        let w = core.word();
        assert_eq!(w.state(), CircuitState::HalfOpen, "{w:?}");
        assert_eq!(w.generation(), a.generation);
        let held = 1 + usize::from(b.is_some());
        assert_eq!(
            w.in_flight() as usize,
            held,
            "{held} probes of the new period are held: {w:?}"
        );
        let extra = (0..2)
            .filter_map(|_| acquire(&core, later, &mut mine))
            .count();
        assert_eq!(held + extra, 2, "more probes than slots in one period");
    });
}

/// Regression (core, `Core::complete` → `complete_slow`: the generation
/// check on the word once happened before, and separately from, the window
/// write): a failure of a call admitted while Closed that passes the
/// generation check, and is then preempted while the breaker opens,
/// half-opens and closes again, must not land in the fresh window of the
/// new Closed generation (the close cleared the window before the stale
/// write). The breaker promises "a late failure cannot land in a fresh
/// window"; when it did, one success of the new generation opened the
/// breaker (1 failure of 2 outcomes reached the 0.5 threshold). One failure trips this breaker
/// (`minimum_calls` 1), so that the trip itself never depends on the torn
/// tallies of `a_window_full_of_failures_trips_at_threshold_one`.
#[test]
fn a_stale_closed_failure_never_lands_in_the_fresh_window() {
    model(2, || {
        let core = Arc::new(with_minimum(2, 1, 1, 0.5));
        let old = acquire(&core, 0, &mut Log::default()).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                complete(&core, old, FAILURE, 0, &mut log);
                log
            })
        };
        let mut mine = Log::default();
        trip(&core, 0, 4, &mut mine);
        let real = probe(&core, OPEN_US, &mut mine);
        complete(&core, real, SUCCESS, OPEN_US, &mut mine);
        assert_eq!(core.word().state(), CircuitState::Closed);
        let closed = core.word().generation();
        let theirs = late.join().unwrap();

        assert_eq!(theirs.count(CircuitState::Closed), 0, "{theirs:?}");
        let w = core.word();
        assert_eq!(w.state(), CircuitState::Closed, "{w:?}");
        assert_eq!(w.generation(), closed);
        assert_eq!(
            tally(&core),
            Tally::default(),
            "the new Closed generation recorded nothing, yet its window holds {:?}",
            core.outcomes()
        );
        // And so one success of the new generation leaves it Closed.
        let fresh = acquire(&core, 2 * OPEN_US, &mut mine).unwrap();
        complete(&core, fresh, SUCCESS, 2 * OPEN_US, &mut mine);
        assert_eq!(
            core.word().state(),
            CircuitState::Closed,
            "a success opened the breaker"
        );
    });
}

/// As [`a_stale_closed_failure_never_lands_in_the_fresh_window`], for a
/// time window (`window_ms`, 10 ms here, so every outcome of the model is
/// inside it): a failure admitted while Closed passes its generation check,
/// then, before its bucket write, the breaker opens, half-opens and closes
/// (emptying the window). The new Closed window must not hold it: with
/// `minimum_calls` 1, a fresh success would then see 1 failure in 2
/// outcomes and open the breaker.
#[test]
fn a_stale_time_window_failure_never_lands_in_the_fresh_window() {
    model(2, || {
        let config = CircuitBreakerConfig {
            failure_threshold: 0.5,
            sample_size: 2,
            minimum_calls: Some(1),
            half_open_max_requests: 1,
            open_timeout_ms: 1,
            max_open_timeout_ms: 1,
            backoff_multiplier: 1.0,
            jitter_ratio: 0.0,
            window_ms: Some(10),
            ..Default::default()
        };
        let core = Arc::new(Core::new(&config, 7));
        let old = acquire(&core, 0, &mut Log::default()).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                complete(&core, old, FAILURE, 0, &mut log);
                log
            })
        };
        let mut mine = Log::default();
        trip(&core, 0, 4, &mut mine);
        let real = probe(&core, OPEN_US, &mut mine);
        complete(&core, real, SUCCESS, OPEN_US, &mut mine);
        assert_eq!(core.word().state(), CircuitState::Closed);
        let closed = core.word().generation();
        let theirs = late.join().unwrap();

        assert_eq!(theirs.count(CircuitState::Closed), 0, "{theirs:?}");
        let w = core.word();
        assert_eq!((w.state(), w.generation()), (CircuitState::Closed, closed));
        let t = core.tally(&mut LazyNow::new(|| 2 * OPEN_US));
        assert_eq!(
            t,
            Tally::default(),
            "the new Closed generation recorded nothing, yet its window holds {t:?}"
        );
        let fresh = acquire(&core, 2 * OPEN_US, &mut mine).unwrap();
        complete(&core, fresh, SUCCESS, 2 * OPEN_US, &mut mine);
        assert_eq!(
            core.word().state(),
            CircuitState::Closed,
            "a success opened the breaker"
        );
    });
}

/// As [`a_stale_time_window_failure_never_lands_in_the_fresh_window`], with
/// `reset()` emptying the time window instead of a close.
#[test]
fn a_failure_racing_reset_never_lands_in_the_reset_time_window() {
    model(3, || {
        let config = CircuitBreakerConfig {
            failure_threshold: 0.5,
            sample_size: 2,
            minimum_calls: Some(1),
            window_ms: Some(10),
            jitter_ratio: 0.0,
            ..Default::default()
        };
        let core = Arc::new(Core::new(&config, 7));
        let old = acquire(&core, 0, &mut Log::default()).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || complete(&core, old, FAILURE, 0, &mut Log::default()))
        };
        core.reset(0, &mut |_| {});
        late.join().unwrap();
        let w = core.word();
        let t = core.tally(&mut LazyNow::new(|| 0));
        if w.state() == CircuitState::Closed && w.generation() != old.generation {
            // The failure either opened the breaker before the reset (and
            // the reset emptied the window) or came too late to count.
            assert_eq!(t, Tally::default(), "{w:?}");
        }
    });
}

/// The timer task of an opening runs late, racing a call at the deadline
/// whose probe fails and reopens the breaker: the old timer task must
/// leave the new opening alone, and that opening's rejections advise the
/// exact wait and end at its own deadline.
#[test]
fn a_late_ticker_never_ends_the_next_opening() {
    model(2, || {
        let core = Arc::new(core(2, 1, 0.5));
        trip(&core, 0, 3, &mut Log::default());
        let opening = core.word().generation();
        let ticker = {
            let core = core.clone();
            thread::spawn(move || {
                // The timer task of `opening`, running late: at 1500, in
                // the middle of the reopening if that came first.
                let t = OPEN_US + OPEN_US / 2;
                assert!(core.expire(opening, t, &mut |_| {}), "its opening is over");
            })
        };
        let mut log = Log::default();
        let ticket = probe(&core, OPEN_US, &mut log);
        complete(&core, ticket, FAILURE, OPEN_US, &mut log);
        ticker.join().unwrap();

        let w = core.word();
        assert_eq!(w.state(), CircuitState::Open, "{w:?}");
        let until = 2 * OPEN_US;
        assert_eq!(core.open_deadline(w), Some(until));
        let at = OPEN_US + OPEN_US / 2;
        let refusal = core
            .acquire(&mut LazyNow::new(|| at), &mut |c| log.0.push(c))
            .expect_err("the reopening is not over");
        assert_eq!(
            refusal.retry_after_us(),
            Some(until - at),
            "a rejection at {at} in the opening {OPEN_US}..{until} advised the wrong wait"
        );
        let at_deadline = acquire(&core, until, &mut log);
        assert!(
            at_deadline.is_some_and(|t| t.probe),
            "a call at the deadline was refused instead of half-opening the breaker"
        );
    });
}

// ---------------------------------------------------------------- windows

/// What a window-writing thread does.
#[derive(Debug, Clone, Copy)]
enum Write {
    Record(u8),
    Clear,
    /// Resizes the window to this length (at most one a plan: the
    /// breaker's configuration lock orders resizes).
    Resize(usize),
}

/// Runs one thread per entry of `plan` on a count window of `size`
/// (records take consecutive positions from a shared cursor), then checks
/// that the tallies equal the slots' contents.
fn race_window(size: usize, plan: &'static [Write]) {
    race_window_from(size, 0, plan);
}

/// [`race_window`] with the records' positions starting at `start`.
fn race_window_from(size: usize, start: u64, plan: &'static [Write]) {
    let window = Arc::new(CountWindow::new(size));
    let cursor = Arc::new(AtomicU64::new(start));
    let threads: Vec<_> = plan
        .iter()
        .map(|&write| {
            let window = window.clone();
            let cursor = cursor.clone();
            thread::spawn(move || match write {
                Write::Record(outcome) => {
                    let pos = cursor.fetch_add(1, Ordering::Relaxed);
                    window.record(pos, outcome);
                }
                Write::Clear => window.clear(),
                Write::Resize(size) => window.resize(size, cursor.load(Ordering::Relaxed)),
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Read every slot once: with at least `size` positions written, the
    // positions before the next one cover the whole ring.
    let size = window.size();
    let next = cursor.load(Ordering::Relaxed).max(size as u64);
    let slots = window.outcomes(next);
    let tally = window.tally();
    let of = |bit: u8| slots.iter().filter(|&&o| o & bit != 0).count() as u64;
    assert_eq!(
        tally,
        Tally {
            len: slots.len() as u64,
            failures: of(FAILURE),
            slow: of(SLOW),
        },
        "tallies differ from the slots {slots:?}"
    );
    // Once every change is done, the window is calm exactly when it is full
    // of plain successes: the last change to end settles it.
    let full_of_successes = slots.len() == size && slots.iter().all(|&o| o == SUCCESS);
    assert_eq!(window.is_calm(), full_of_successes, "slots {slots:?}");
    // Clearing takes every slot's outcome off the tallies again: anything
    // left over (or wrapped below zero) was counted wrongly.
    window.clear();
    assert_eq!(window.tally(), Tally::default());
    assert!(!window.is_calm());
}

/// Concurrent records, two of them on the same slot, keep the tallies equal
/// to what the slots hold.
#[test]
fn window_tallies_match_the_slots_after_concurrent_records() {
    model(3, || {
        race_window(
            2,
            &[
                Write::Record(FAILURE),
                Write::Record(SUCCESS | SLOW),
                Write::Record(FAILURE | SLOW),
            ],
        );
    });
}

/// Records racing with the window's growth into a new ring keep the
/// tallies equal to what the ring in use holds: a record that wrote to the
/// old ring after it was swept takes its outcome back. (Two preemptions
/// find the interleaving that breaks it without the take-back; three take
/// minutes.)
#[test]
fn window_tallies_match_the_slots_when_the_window_grows_during_records() {
    model(2, || {
        race_window(
            2,
            &[
                Write::Record(FAILURE),
                Write::Resize(4),
                Write::Record(SUCCESS),
            ],
        );
    });
}

/// Records racing with the window's shrinking keep the tallies equal to
/// what the shorter window holds: a record that computed its slot with the
/// old length and wrote beyond the new one after the sweep takes its
/// outcome back.
#[test]
fn window_tallies_match_the_slots_when_the_window_shrinks_during_records() {
    model(2, || {
        race_window_from(
            4,
            2,
            &[
                Write::Record(FAILURE),
                Write::Resize(2),
                Write::Record(SUCCESS),
            ],
        );
    });
}

/// Records racing with a clear keep the tallies equal to the slots.
#[test]
fn window_tallies_match_the_slots_when_a_clear_races_with_records() {
    model(3, || {
        race_window(
            2,
            &[Write::Record(FAILURE), Write::Clear, Write::Record(SUCCESS)],
        );
    });
}

/// Successes that fill a window of two while a failure is recorded: the
/// window ends calm exactly when it holds only successes (here never, as
/// the failure stays in a window of two), so no later success skips a
/// window that holds a failure.
#[test]
fn a_window_is_calm_only_when_full_of_successes_after_racing_records() {
    model(3, || {
        race_window(
            2,
            &[
                Write::Record(SUCCESS),
                Write::Record(SUCCESS),
                Write::Record(FAILURE),
            ],
        );
    });
}

// ---------------------------------------------------------------- calm windows

/// A breaker whose window of two is full of successes (calm), opening on
/// one failure in two outcomes.
fn calm_core() -> Core {
    let core = core(2, 1, 0.5);
    for _ in 0..2 {
        let ticket = acquire(&core, 0, &mut Log::default()).unwrap();
        complete(&core, ticket, SUCCESS, 0, &mut Log::default());
    }
    assert!(core.window_is_calm());
    core
}

/// A success that finds the window calm takes no window position and only
/// counts itself in its stripe. Racing a failure, it is ordered before the
/// failure whatever the interleaving: the window ends with one success and
/// the failure (as if the success had taken the position before it), the
/// failure opens the breaker once, and every outcome is counted once.
#[test]
fn a_success_skipping_a_calm_window_is_ordered_before_a_racing_failure() {
    model(3, || {
        let core = Arc::new(calm_core());
        let ok = acquire(&core, 0, &mut Log::default()).unwrap();
        let bad = acquire(&core, 0, &mut Log::default()).unwrap();
        let success = {
            let core = core.clone();
            thread::spawn(move || {
                let mut log = Log::default();
                complete(&core, ok, SUCCESS, 0, &mut log);
                log
            })
        };
        let mut mine = Log::default();
        complete(&core, bad, FAILURE, 0, &mut mine);
        let theirs = success.join().unwrap();

        assert_eq!(count(&[&mine, &theirs], CircuitState::Open), 1);
        assert_eq!(core.word().state(), CircuitState::Open);
        let outcomes = core.outcomes();
        assert!(
            outcomes == [SUCCESS, FAILURE] || outcomes == [FAILURE, SUCCESS],
            "{outcomes:?}"
        );
        assert_eq!(
            tally(&core),
            Tally {
                len: 2,
                failures: 1,
                slow: 0
            }
        );
        assert!(!core.window_is_calm());
        assert_eq!(core.recorded(), 4, "two before, the success, the failure");
        assert_eq!(core.totals.failures.load(Ordering::Relaxed), 1);
    });
}

/// A success admitted before a reset that clears a calm window, completed
/// while the reset runs: whether it skipped the window or not, the fresh
/// window of the new generation holds nothing, is not calm, and the success
/// is counted once.
#[test]
fn a_success_skipping_a_calm_window_never_lands_in_the_window_a_reset_clears() {
    model(3, || {
        let core = Arc::new(calm_core());
        let old = acquire(&core, 0, &mut Log::default()).unwrap();
        let late = {
            let core = core.clone();
            thread::spawn(move || {
                complete(&core, old, SUCCESS, 0, &mut Log::default());
            })
        };
        core.reset(0, &mut |_| {});
        late.join().unwrap();

        assert_eq!(core.word().state(), CircuitState::Closed);
        assert_ne!(core.word().generation(), old.generation);
        assert_eq!(tally(&core), Tally::default(), "{:?}", core.outcomes());
        assert!(!core.window_is_calm());
        assert_eq!(core.recorded(), 3);
        // The fresh window fills up again from its first outcome.
        let fresh = acquire(&core, 0, &mut Log::default()).unwrap();
        complete(&core, fresh, SUCCESS, 0, &mut Log::default());
        assert_eq!(core.outcomes(), [SUCCESS]);
    });
}

/// Two successes on a calm window, each thread on its own stripe, and a
/// failure: every outcome is counted exactly once across the cursor and the
/// stripes, and the window is calm again only if both successes came after
/// the failure and pushed it out of the window of two.
#[test]
fn successes_on_both_stripes_and_a_failure_are_each_counted_once() {
    model(2, || {
        let core = Arc::new(calm_core());
        let tickets: Vec<Ticket> = (0..3)
            .map(|_| acquire(&core, 0, &mut Log::default()).unwrap())
            .collect();
        let threads: Vec<_> = tickets[..2]
            .iter()
            .map(|&ticket| {
                let core = core.clone();
                thread::spawn(move || complete(&core, ticket, SUCCESS, 0, &mut Log::default()))
            })
            .collect();
        complete(&core, tickets[2], FAILURE, 0, &mut Log::default());
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(core.recorded(), 5);
        assert_eq!(core.totals.failures.load(Ordering::Relaxed), 1);
        let outcomes = core.outcomes();
        assert_eq!(outcomes.len(), 2);
        let failures = outcomes.iter().filter(|&&o| o == FAILURE).count() as u64;
        assert_eq!(
            tally(&core),
            Tally {
                len: 2,
                failures,
                slow: 0
            }
        );
        assert_eq!(core.window_is_calm(), failures == 0, "{outcomes:?}");
    });
}
