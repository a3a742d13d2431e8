//! Sliding windows of call outcomes.
//!
//! The **count window** (the default) holds the last `sample_size` outcomes in
//! a ring of one byte per slot. Recording an outcome swaps it into its slot
//! and adjusts the running tallies by the difference with what it replaced,
//! so the tallies always equal the ring's contents once writers are done, and
//! reading the failure rate is three loads. The ring needs no clock, which is
//! why it is the default: a Closed call pays no clock read at all. When the
//! slot already holds the same outcome (the steady state of a healthy
//! service) nothing is written at all. A window full of plain successes is
//! marked *calm*: a success then changes nothing wherever it lands, so the
//! breaker records it without a window position at all.
//!
//! The **time window** keeps ten buckets, each covering a tenth of
//! `window_ms`; an outcome lands in the bucket of the moment it finished and
//! buckets older than the window are ignored and reused.
//!
//! Both are lock-free. An outcome whose generation ended before it was
//! written (the breaker opened and closed again, or was reset, meanwhile)
//! never stays in the emptied window: the count window takes it back, the
//! time window writes it under the tag of the clear it predates.

mod count;
mod time;

pub(crate) use count::CountWindow;
pub(crate) use time::TimeWindow;

/// Slot value of an empty slot.
pub(crate) const EMPTY: u8 = 0;
/// Bit of a successful outcome.
pub(crate) const SUCCESS: u8 = 1;
/// Bit of a failed outcome.
pub(crate) const FAILURE: u8 = 2;
/// Bit added to either when the call was slow.
pub(crate) const SLOW: u8 = 4;

/// Tallies of the outcomes in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) len: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Tally {
    /// Fraction of failures, 0.0 for an empty window.
    pub(crate) fn failure_rate(self) -> f64 {
        ratio(self.failures, self.len)
    }

    /// Fraction of slow calls, 0.0 for an empty window.
    pub(crate) fn slow_rate(self) -> f64 {
        ratio(self.slow, self.len)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part.min(whole) as f64 / whole as f64
    }
}

#[cfg(all(test, not(breakwater_loom)))]
mod tests {
    use super::count::Recorded;
    use super::time::COUNT_MAX;
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n() {
        let w = CountWindow::new(4);
        for (pos, o) in [FAILURE, FAILURE, SUCCESS, SUCCESS, SUCCESS, SUCCESS]
            .into_iter()
            .enumerate()
        {
            w.record(pos as u64, o);
        }
        assert_eq!(
            w.tally(),
            Tally {
                len: 4,
                failures: 0,
                slow: 0
            }
        );
        w.record(6, FAILURE | SLOW);
        assert_eq!(
            w.tally(),
            Tally {
                len: 4,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(
            w.outcomes(7),
            vec![SUCCESS, SUCCESS, SUCCESS, FAILURE | SLOW]
        );
    }

    #[test]
    fn fast_modulo_matches_the_remainder() {
        for size in [1u64, 2, 3, 7, 10, 100, 1000, 65_537, 1 << 20] {
            let w = CountWindow::new(size as usize);
            for pos in (0..5_000u64).chain([u32::MAX as u64 - 3, u32::MAX as u64]) {
                assert_eq!(w.index(pos) as u64, pos % size, "{pos} % {size}");
            }
        }
    }

    #[test]
    fn record_reports_when_the_rate_may_rise() {
        let w = CountWindow::new(2);
        assert!(w.record(0, SUCCESS).rise, "window grew");
        assert!(w.record(1, SUCCESS).rise, "window grew");
        assert_eq!(
            w.record(2, SUCCESS),
            Recorded::default(),
            "same outcome: nothing changed"
        );
        assert!(w.record(3, FAILURE).rise);
        let r = w.record(5, SUCCESS); // over the failure at 3
        assert!(r.wrote && !r.rise, "a success can only lower the rate");
        w.undo(5, SUCCESS);
        assert_eq!(
            w.tally(),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            },
            "taken back"
        );
        w.undo(2, FAILURE);
        assert_eq!(w.tally().len, 1, "the slot holds another outcome: kept");
    }

    #[test]
    fn clear_and_resize() {
        let w = CountWindow::new(5);
        for pos in 0..5 {
            w.record(pos, if pos % 2 == 0 { FAILURE } else { SUCCESS });
        }
        w.resize(3, 5);
        assert_eq!(w.outcomes(5), vec![FAILURE, SUCCESS, FAILURE]);
        assert_eq!(
            w.tally(),
            Tally {
                len: 3,
                failures: 2,
                slow: 0
            }
        );
        w.resize(5, 5);
        assert_eq!(w.tally().len, 3);
        w.clear();
        assert_eq!(w.tally(), Tally::default());
        assert_eq!(w.tally().failure_rate(), 0.0);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = TimeWindow::new(10_000); // 10 ms, 1 ms buckets
        w.record(0, FAILURE, || true);
        w.record(500, SUCCESS, || true);
        assert_eq!(
            w.tally(900),
            Tally {
                len: 2,
                failures: 1,
                slow: 0
            }
        );
        w.record(9_500, SUCCESS, || true);
        assert_eq!(w.tally(9_900).len, 3);
        // At 10.5 ms the first bucket (0..1 ms) has left the window.
        assert_eq!(
            w.tally(10_500),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            }
        );
        // Its slot is reused by a new period and starts from zero.
        w.record(10_600, FAILURE, || true);
        assert_eq!(
            w.tally(10_700),
            Tally {
                len: 2,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.tally(100_000), Tally::default());
    }

    #[test]
    fn time_window_counts_failures_and_slow_calls_apart() {
        let w = TimeWindow::new(10_000); // 10 ms, 1 ms buckets
        for o in [SUCCESS, FAILURE, FAILURE | SLOW, SUCCESS | SLOW, FAILURE] {
            assert!(w.record(100, o, || true));
        }
        assert_eq!(
            w.tally(200),
            Tally {
                len: 5,
                failures: 3,
                slow: 2
            }
        );
        // Over two buckets, the tallies add up.
        assert!(w.record(3_100, SUCCESS | SLOW, || true));
        assert_eq!(
            w.tally(3_200),
            Tally {
                len: 6,
                failures: 3,
                slow: 3
            }
        );
    }

    #[test]
    fn a_stale_outcome_is_refused_and_counted_nowhere() {
        let w = TimeWindow::new(10_000);
        assert!(!w.record(100, FAILURE, || false));
        assert_eq!(w.tally(200), Tally::default());
        assert!(w.record(100, FAILURE, || true));
        assert_eq!(w.tally(200).len, 1);
    }

    #[test]
    fn a_cleared_time_window_reads_empty_and_counts_again_from_zero() {
        let w = TimeWindow::new(10_000);
        w.record(100, FAILURE, || true);
        w.record(2_100, FAILURE, || true);
        w.clear();
        assert_eq!(w.tally(2_200), Tally::default());
        // The bucket written before the clear, in the same period, starts
        // again from zero.
        w.record(2_150, SUCCESS, || true);
        assert_eq!(
            w.tally(2_200),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            }
        );
        w.record(2_160, SUCCESS, || true);
        assert_eq!(w.tally(2_200).len, 2);
    }

    #[test]
    fn every_clear_empties_the_time_window_anew() {
        // A bucket left untouched reads as empty after any number of clears
        // below 1024 (the clear tag's range).
        let w = TimeWindow::new(10_000);
        w.record(100, FAILURE, || true);
        for clears in 1..1024 {
            w.clear();
            assert_eq!(w.tally(200), Tally::default(), "after {clears} clears");
        }
    }

    #[test]
    fn a_time_window_keeps_its_outcomes_unless_its_length_changes() {
        let w = TimeWindow::new(10_000);
        w.record(100, FAILURE, || true);
        w.set_length(10_000);
        assert_eq!(w.tally(200).len, 1);
        w.set_length(20_000);
        assert_eq!(w.tally(200), Tally::default());
    }

    #[test]
    fn a_full_bucket_stops_counting_until_its_next_period() {
        let w = TimeWindow::new(10_000);
        for _ in 0..COUNT_MAX {
            assert!(w.record(100, FAILURE, || true));
        }
        let full = Tally {
            len: COUNT_MAX,
            failures: COUNT_MAX,
            slow: 0,
        };
        assert_eq!(w.tally(200), full);
        // One more in the same period is not counted (it would carry into
        // the next field), and does not change the rates.
        assert!(w.record(200, SUCCESS | SLOW, || true));
        assert_eq!(w.tally(300), full);
        // The bucket's next period, one window later, starts from zero.
        assert!(w.record(10_100, SUCCESS, || true));
        assert_eq!(
            w.tally(10_200),
            Tally {
                len: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn a_tally_counts_no_bucket_of_a_later_period_than_its_own() {
        // A call that finished after the tally read the clock wrote a
        // bucket of a later period: it is not yet in the tally's window.
        let w = TimeWindow::new(10_000);
        w.record(1_100, FAILURE, || true);
        w.record(6_100, FAILURE, || true);
        assert_eq!(
            w.tally(5_500),
            Tally {
                len: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.tally(6_200).len, 2);
    }
}
