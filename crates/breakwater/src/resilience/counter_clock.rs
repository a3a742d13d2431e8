//! The processor's time-stamp counter as a second, cheaper clock for one
//! question only: "is this Open breaker certainly still before its
//! deadline?"
//!
//! An Open rejection must never refuse a call made after the deadline, so it
//! cannot trust a cached reading; but a clock read through the kernel
//! (`Instant::now`) costs more than the rest of a rejection. Reading the
//! counter costs less than half of that. The counter is trusted only where
//! the kernel trusts it: on x86-64 Linux whose current clock source is
//! `tsc`, which the kernel picks only when the counter ticks at a constant
//! rate and agrees across cores. Its rate against the system clock is
//! measured once per process (by `quanta`, on a short-lived background
//! thread started by the first opening) and every bound below allows it to
//! be off by [`RATE_SLACK`], twice what NTP may slew the system clock.
//!
//! How an opening uses it. The first rejection that reads the real clock
//! (`t` microseconds, deadline `until`) also reads the counter just before
//! (`r`) and stores the counter value below which the deadline has certainly
//! not come: `r + (until - t)` microseconds at the slowest rate the counter
//! may have, less [`SKEW_US`] for the counters of two cores and the
//! reordering of the read. A later rejection then reads only the counter: if
//! it is below that value, the call is refused; otherwise (the last moments
//! of the opening, about one part in a thousand of it) the real clock
//! decides, as before. The value carries the opening's generation tag, so
//! that it is never applied to another opening.
//!
//! Time paused by tokio's test utilities runs apart from the counter, so an
//! opening takes the counter only when its first clock-reading rejection
//! happens outside any tokio runtime or in a multi-thread one: tokio pauses
//! time only in a current-thread runtime, and a breaker used there always
//! reads tokio's clock.

/// How far the counter's rate may be from the rate measured at start-up,
/// as a fraction: one part in 1024 (977 ppm). NTP slews the system clock by
/// at most 500 ppm; the measurement itself is good to a few ppm.
const RATE_SLACK: f64 = 1.0 / 1024.0;

/// Microseconds allowed for two cores' counters to differ, and for a read
/// of the counter to run a little ahead of the instructions before it.
const SKEW_US: f64 = 1.0;

/// Counter values are kept in units of 256 ticks (about 0.1 µs at a few
/// GHz), from the process's first reading: 52 bits of them (what a word
/// leaves beside a generation tag) last over 15 years at 2.3 GHz.
const UNIT_SHIFT: u32 = 8;

/// The measured counter, once ready.
#[derive(Debug)]
pub(crate) struct Counter {
    clock: quanta::Clock,
    /// The raw reading that unit 0 stands for.
    base: u64,
    /// Counter units per microsecond, as measured.
    units_per_us: f64,
    /// The inverse, in fixed point (microseconds per unit times 2^48), for
    /// turning units back into a wait with one multiplication (a float
    /// conversion costs the rejection a few nanoseconds more). 48 bits keep
    /// an hour's wait within a microsecond.
    us_per_unit_q48: u64,
}

impl Counter {
    /// Now, in units since `base`; `None` if the counter reads below its
    /// base (another core's counter a little behind).
    #[inline(always)]
    pub(crate) fn units(&self) -> Option<u64> {
        self.clock
            .raw()
            .checked_sub(self.base)
            .map(|ticks| ticks >> UNIT_SHIFT)
    }

    /// The last unit before which a deadline `left_us` microseconds after
    /// a clock read has certainly not come, given the counter read `r`
    /// (in units) just before that clock read. `None` when there is no
    /// such time worth keeping (the deadline is too near) or it does not
    /// fit in `bits`.
    pub(crate) fn certainly_before(&self, r: u64, left_us: u64, bits: u32) -> Option<u64> {
        let ahead = (left_us as f64 - SKEW_US) * self.units_per_us * (1.0 - RATE_SLACK);
        if ahead < 1.0 {
            return None;
        }
        ahead_of(r, ahead as u64, bits)
    }

    /// The deadline's nominal unit: at the measured rate, with no slack.
    pub(crate) fn nominal(&self, r: u64, left_us: u64, bits: u32) -> Option<u64> {
        ahead_of(r, (left_us as f64 * self.units_per_us) as u64, bits)
    }

    /// Microseconds from unit `now` to unit `until` at the measured rate.
    #[inline(always)]
    pub(crate) fn us_between(&self, now: u64, until: u64) -> u64 {
        ((until.saturating_sub(now) as u128 * self.us_per_unit_q48 as u128) >> 48) as u64
    }
}

/// Unit `r` plus `ahead`, if that fits in `bits`.
fn ahead_of(r: u64, ahead: u64, bits: u32) -> Option<u64> {
    let until = r.checked_add(ahead)?;
    (until < 1 << bits).then_some(until)
}

/// The counter, if it is to be trusted and has been measured. The first
/// call starts the measurement (on a thread of its own) and answers `None`,
/// as every call does until it is done.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(breakwater_loom)))]
#[inline(always)]
pub(crate) fn counter() -> Option<&'static Counter> {
    match COUNTER.get() {
        Some(c) => c.as_ref(),
        None => {
            start();
            None
        }
    }
}

/// No counter is trusted on this platform: every rejection reads the clock.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(breakwater_loom))))]
#[inline(always)]
pub(crate) fn counter() -> Option<&'static Counter> {
    None
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(breakwater_loom)))]
static COUNTER: std::sync::OnceLock<Option<Counter>> = std::sync::OnceLock::new();

/// Starts measuring the counter, once per process.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(breakwater_loom)))]
#[cold]
#[inline(never)]
fn start() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::Relaxed) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("breakwater-clock".into())
        .spawn(|| {
            let _ = COUNTER.set(measure());
        });
    if spawned.is_err() {
        let _ = COUNTER.set(None);
    }
}

/// Measures the counter against the system clock, if the kernel keeps its
/// own time with it.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(breakwater_loom)))]
fn measure() -> Option<Counter> {
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .ok()?;
    if source.trim() != "tsc" {
        return None;
    }
    // Calibrates against the system clock (up to 0.2 s of this thread).
    let clock = quanta::Clock::new();
    const SPAN: u64 = 1 << 40;
    let ns = clock.delta_as_nanos(0, SPAN);
    if ns == 0 {
        return None;
    }
    let units_per_us = (SPAN >> UNIT_SHIFT) as f64 * 1000.0 / ns as f64;
    if !(units_per_us.is_finite() && units_per_us >= 1.0) {
        // Slower than a unit a microsecond: no use.
        return None;
    }
    let base = clock.raw();
    Some(Counter {
        clock,
        base,
        units_per_us,
        us_per_unit_q48: q48(units_per_us),
    })
}

/// Microseconds per unit in 48-bit fixed point, rounded up (a wait
/// rounded down would advise coming back a little too early). At least a
/// unit a microsecond, so it fits in 48 bits.
#[cfg_attr(breakwater_loom, allow(dead_code))]
fn q48(units_per_us: f64) -> u64 {
    ((1u64 << 48) as f64 / units_per_us).ceil() as u64
}

/// Whether an opening may be judged by the counter from here: tokio's
/// clock cannot be paused outside a runtime or in a multi-thread runtime,
/// so there it runs with the system clock, which the counter follows.
pub(crate) fn may_follow_counter() -> bool {
    match tokio::runtime::Handle::try_current() {
        Err(_) => true,
        Ok(handle) => matches!(
            handle.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        ),
    }
}

#[cfg(all(test, not(breakwater_loom)))]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{CircuitBreaker, CircuitBreakerConfig, CircuitError};

    /// The counter, once measured (polled for at most 10 s); `None` where
    /// the kernel does not keep time with it. Where it does, the counter
    /// must be measured: a test that skipped the counter there would prove
    /// nothing.
    fn measured() -> Option<&'static Counter> {
        let start = Instant::now();
        let kernel_uses_it = cfg!(all(target_arch = "x86_64", target_os = "linux"))
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc");
        loop {
            if let Some(c) = counter() {
                return Some(c);
            }
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            if matches!(COUNTER.get(), Some(None)) {
                assert!(
                    !kernel_uses_it,
                    "the kernel keeps time with the counter, which was not measured"
                );
                return None;
            }
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            return None;
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the counter was not measured within 10 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    const OPEN_MS: u64 = 20;

    /// A breaker opened by two failures, and the times just before and
    /// just after its opening.
    fn opened() -> (CircuitBreaker, Instant, Instant) {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 2,
            minimum_calls: Some(2),
            open_timeout_ms: OPEN_MS,
            jitter_ratio: 0.0,
            ..Default::default()
        });
        cb.try_acquire().expect("closed").failure();
        let before = Instant::now();
        cb.try_acquire().expect("closed").failure();
        let after = Instant::now();
        assert_eq!(cb.state(), crate::CircuitState::Open);
        (cb, before, after)
    }

    /// A breaker opened by two failures for an hour, not yet rejecting.
    fn open_for_an_hour() -> CircuitBreaker {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            sample_size: 2,
            minimum_calls: Some(2),
            open_timeout_ms: 3_600_000,
            max_open_timeout_ms: 3_600_000,
            ..Default::default()
        });
        for _ in 0..2 {
            cb.try_acquire().expect("closed").failure();
        }
        cb
    }

    /// Real time, two threads calling across the deadline: no call that
    /// starts after the deadline is refused as Open, none that ends before
    /// it is admitted, and every advised wait ends at the deadline.
    #[test]
    fn in_real_time_no_call_after_the_deadline_is_refused_and_the_wait_ends_at_it() {
        let counter = measured();
        let open_for = Duration::from_millis(OPEN_MS);
        let tolerance = Duration::from_micros(200);
        for _round in 0..5 {
            let (cb, before, after) = opened();
            let (earliest, latest) = (before + open_for, after + open_for);
            // The first rejection reads the clock, and bounds the opening
            // by the counter for the rejections after it.
            assert!(cb.try_acquire().is_err());
            assert_eq!(cb.shared.core.follows_counter(), counter.is_some());
            let calls = std::thread::scope(|s| {
                let worker = || {
                    s.spawn(|| {
                        let mut seen = Vec::new();
                        let mut admitted = false;
                        while !admitted || Instant::now() < latest + open_for {
                            let start = Instant::now();
                            let r = cb.try_acquire().map(|p| {
                                // Cancelled: the probe slot is freed.
                                drop(p);
                            });
                            let end = Instant::now();
                            admitted |= r.is_ok();
                            seen.push((start, end, r));
                        }
                        seen
                    })
                };
                let (a, b) = (worker(), worker());
                let mut all = a.join().expect("worker");
                all.extend(b.join().expect("worker"));
                all
            });
            for (start, end, r) in calls {
                match r {
                    Ok(()) => assert!(end >= earliest, "admitted before the deadline"),
                    Err(CircuitError::Open {
                        retry_after: Some(wait),
                    }) => {
                        assert!(start < latest, "refused as Open after the deadline");
                        assert!(wait <= open_for, "{wait:?}");
                        assert!(start + wait <= latest + tolerance, "{wait:?} ends late");
                        assert!(end + wait + tolerance >= earliest, "{wait:?} ends early");
                    }
                    // HalfOpen with its probe slots busy.
                    Err(_) => assert!(end >= earliest),
                }
            }
        }
        if counter.is_none() {
            eprintln!("no trusted counter on this machine: every rejection read the clock");
        }
    }

    #[test]
    fn an_opening_rejected_outside_a_runtime_follows_the_counter() {
        if measured().is_none() {
            eprintln!("no trusted counter on this machine");
            return;
        }
        let cb = open_for_an_hour();
        assert!(!cb.shared.core.follows_counter(), "no rejection yet");
        let by_counter = || crate::resilience::core::COUNTER_REFUSALS.with(|c| c.get());
        let before = by_counter();
        let first = cb.try_acquire().expect_err("open");
        assert_eq!(by_counter(), before, "the first rejection reads the clock");
        assert!(cb.shared.core.follows_counter());
        let second = cb.try_acquire().expect_err("open");
        for _ in 0..99 {
            assert!(cb.try_acquire().is_err());
        }
        assert_eq!(
            by_counter(),
            before + 100,
            "the rest read the counter alone"
        );
        let (Some(a), Some(b)) = (first.retry_after(), second.retry_after()) else {
            panic!("both advise a wait: {first:?} {second:?}");
        };
        // The counter's wait follows the clock's: no more (but for the
        // microsecond the clock's reading is rounded to), a little less
        // later on.
        assert!(b <= a + Duration::from_micros(2), "{a:?} then {b:?}");
        assert!(
            a - b.min(a) < Duration::from_millis(100),
            "{a:?} then {b:?}"
        );
        // 5 ms later, the counter's wait is 5 ms (and the time the calls
        // took) shorter: it follows real time at the measured rate.
        let second_done = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let third_start = Instant::now();
        let later = cb.try_acquire().expect_err("open").retry_after();
        let third_done = Instant::now();
        let later = later.expect("a wait");
        let least = third_start - second_done;
        let most = third_done - second_done + Duration::from_micros(100);
        assert!(
            later + least <= b + Duration::from_micros(2),
            "{b:?} then {later:?}"
        );
        assert!(later + most >= b, "{b:?} then {later:?} after {least:?}");
    }

    /// An opening's bound (and deadline) carry a 12-bit tag of its
    /// generation. 4096 operator changes later, a forced opening has the
    /// same tag: it must still refuse with no wait, not by the old bound.
    #[test]
    fn a_forced_opening_whose_tag_matches_an_old_bound_advises_no_wait() {
        let counter = measured();
        let cb = open_for_an_hour();
        assert!(cb.try_acquire().expect_err("open").retry_after().is_some());
        assert_eq!(cb.shared.core.follows_counter(), counter.is_some());
        let opened = cb.shared.core.word().generation();
        for i in 1..=4096 {
            if i % 2 == 1 {
                cb.force_closed();
            } else {
                cb.force_open();
            }
        }
        let w = cb.shared.core.word();
        assert_eq!(w.generation() % 4096, opened % 4096);
        assert!(w.is_forced_open());
        for _ in 0..3 {
            let e = cb.try_acquire().expect_err("forced open");
            assert_eq!(e.retry_after(), None, "{e:?}");
        }
    }

    #[test]
    fn an_opening_rejected_in_a_current_thread_runtime_reads_the_clock() {
        if measured().is_none() {
            eprintln!("no trusted counter on this machine");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cb = open_for_an_hour();
            for _ in 0..3 {
                assert!(cb.try_acquire().is_err());
            }
            assert!(!cb.shared.core.follows_counter());
        });
    }

    fn fake(units_per_us: f64) -> Counter {
        Counter {
            clock: quanta::Clock::new(),
            base: 0,
            units_per_us,
            us_per_unit_q48: q48(units_per_us),
        }
    }

    #[test]
    fn the_certain_bound_allows_for_a_slower_counter_and_for_skew() {
        // 9 units a microsecond (2.3 GHz / 256).
        let c = fake(9.0);
        let r = 1_000;
        let until = c.certainly_before(r, 1_000_000, 52).expect("a bound");
        // A second at the measured rate is 9 000 000 units; the bound is
        // below by the rate slack (8 789 units) and the skew (9 units).
        let nominal = c.nominal(r, 1_000_000, 52).expect("nominal");
        assert_eq!(nominal, r + 9_000_000);
        let below = nominal - until;
        assert!((8_780..8_810).contains(&below), "{below}");
        // Even if the counter ran slow by the full slack, the deadline
        // comes no earlier than the bound.
        let slowest = 9.0 * (1.0 - RATE_SLACK);
        let deadline_at_slowest = r as f64 + (1_000_000.0 - SKEW_US) * slowest;
        assert!(until as f64 <= deadline_at_slowest + 1.0);
    }

    #[test]
    fn a_deadline_too_near_or_too_far_has_no_bound() {
        let c = fake(9.0);
        assert_eq!(c.certainly_before(5, 1, 52), None);
        assert_eq!(c.certainly_before(5, 0, 52), None);
        assert_eq!(c.certainly_before(u64::MAX - 3, 1_000, 52), None);
        assert_eq!(c.certainly_before((1 << 52) - 10, 1_000, 52), None);
        assert!(c.certainly_before(5, 2, 52).is_some());
    }

    #[test]
    fn the_bounds_keep_exactly_what_fits() {
        // (left - skew) at this rate, less the rate slack, is 1.0 exactly
        // for left = 2: one unit ahead is kept.
        let c = fake(1024.0 / 1023.0);
        assert_eq!(c.certainly_before(5, 2, 52), Some(6));
        // 24 units ahead: 999 + 24 fits in 10 bits, 1000 + 24 does not.
        assert_eq!(c.certainly_before(999, 25, 10), Some(1023));
        assert_eq!(c.certainly_before(1000, 25, 10), None);
        let c = fake(1.0);
        assert_eq!(c.nominal(999, 24, 10), Some(1023));
        assert_eq!(c.nominal(1000, 24, 10), None);
    }

    #[test]
    fn the_wait_is_the_units_left_at_the_measured_rate() {
        let c = fake(8.0);
        assert_eq!(c.us_between(100, 900), 100);
        assert_eq!(c.us_between(900, 100), 0);
    }

    #[test]
    fn outside_a_runtime_and_in_a_multi_thread_one_the_counter_may_be_followed() {
        assert!(may_follow_counter());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        rt.block_on(async { assert!(may_follow_counter()) });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async { assert!(!may_follow_counter()) });
    }
}
