//! How long each opening lasts.
//!
//! The n-th consecutive opening (n = 1 after a close) lasts
//! `min(open_timeout * multiplier^(n-1), max_open_timeout)`, scaled by a
//! random factor in `[1 - jitter, 1 + jitter]` so that breakers which opened
//! together (one outage, many endpoints) do not all probe at the same moment.

use crate::sync::{AtomicU64, Ordering};

/// Parameters of the open duration, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) base_us: u64,
    pub(crate) max_us: u64,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
}

impl Backoff {
    /// The open duration of the `streak`-th consecutive opening, before
    /// jitter. `streak` starts at 1.
    pub(crate) fn nominal_us(&self, streak: u32) -> u64 {
        let exp = streak.saturating_sub(1).min(1024) as i32;
        let scaled = self.base_us as f64 * self.multiplier.powi(exp);
        if scaled >= self.max_us as f64 {
            self.max_us
        } else {
            scaled as u64
        }
    }

    /// The open duration with jitter; `unit` is uniform in `[0, 1)`.
    pub(crate) fn duration_us(&self, streak: u32, unit: f64) -> u64 {
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        ((self.nominal_us(streak) as f64 * factor) as u64).max(1)
    }
}

/// A lock-free pseudo-random source (SplitMix64): good enough to spread
/// probes, not for anything secret.
#[derive(Debug)]
pub(crate) struct Jitter(AtomicU64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// A number uniform in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        // Relaxed: each caller only needs a distinct step of the sequence.
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(all(test, not(breakwater_loom)))]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base_us: 1_000,
        max_us: 10_000,
        multiplier: 2.0,
        jitter: 0.1,
    };

    #[test]
    fn doubles_up_to_the_cap() {
        let got: Vec<u64> = (1..=6).map(|n| B.nominal_us(n)).collect();
        assert_eq!(got, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(B.nominal_us(255), 10_000);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let j = Jitter::new(7);
        let mut lo = u64::MAX;
        let mut hi = 0;
        for _ in 0..10_000 {
            let d = B.duration_us(1, j.unit());
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(lo >= 900 && hi <= 1_100, "{lo}..{hi}");
        assert!(lo < 920 && hi > 1_080, "jitter should spread: {lo}..{hi}");
    }

    /// The first outputs of SplitMix64 seeded with 1234567, as published
    /// with the algorithm's reference implementation.
    const SPLITMIX64_1234567: [u64; 5] = [
        6_457_827_717_110_365_317,
        3_203_168_211_198_807_973,
        9_817_491_932_198_370_423,
        4_593_380_528_125_082_431,
        16_408_922_859_458_223_821,
    ];

    #[test]
    fn the_jitter_generator_follows_splitmix64() {
        let j = Jitter::new(1_234_567);
        for want in SPLITMIX64_1234567 {
            // The top 53 bits, scaled to [0, 1).
            let want = (want >> 11) as f64 / (1u64 << 53) as f64;
            assert_eq!(j.unit(), want);
        }
    }

    #[test]
    fn a_jitter_generator_spreads_waits_over_the_whole_range() {
        // 20 equal slices of [0, 1) each get about 1/20 of the draws, and so
        // do the halves of every slice: no part of the range is favoured.
        for seed in [0, 1, 0xDEAD_BEEF] {
            let j = Jitter::new(seed);
            let mut slices = [0u32; 40];
            for _ in 0..40_000 {
                let u = j.unit();
                assert!((0.0..1.0).contains(&u), "{u}");
                slices[(u * 40.0) as usize] += 1;
            }
            for (i, n) in slices.iter().enumerate() {
                assert!((850..1_150).contains(n), "seed {seed}, slice {i}: {n}");
            }
        }
    }

    #[test]
    fn jittered_durations_cover_both_sides_of_the_nominal_one_evenly() {
        // With jitter 0.1 a 1 ms opening lasts 900..1100 µs: as many below
        // 1 ms as above, and a draw of 0 or of nearly 1 gives the ends.
        assert_eq!(B.duration_us(1, 0.0), 900);
        assert_eq!(B.duration_us(1, 0.5), 1_000);
        assert_eq!(B.duration_us(1, 0.999_999), 1_099);
        assert_eq!(B.duration_us(3, 0.25), 3_800);
        let j = Jitter::new(42);
        let below = (0..10_000)
            .filter(|_| B.duration_us(1, j.unit()) < 1_000)
            .count();
        assert!((4_700..5_300).contains(&below), "{below}");
    }

    #[test]
    fn an_opening_lasts_at_least_a_microsecond() {
        let zero = Backoff { base_us: 0, ..B };
        assert_eq!(zero.duration_us(1, 0.5), 1);
        let full_jitter = Backoff { jitter: 1.0, ..B };
        assert_eq!(full_jitter.duration_us(1, 0.0), 1);
    }

    #[test]
    fn the_cap_applies_from_the_first_opening_that_reaches_it() {
        let b = Backoff {
            base_us: 3_000,
            max_us: 12_000,
            multiplier: 2.0,
            jitter: 0.0,
        };
        // 3, 6, then exactly the cap, then the cap.
        let got: Vec<u64> = (1..=4).map(|n| b.nominal_us(n)).collect();
        assert_eq!(got, [3_000, 6_000, 12_000, 12_000]);
        assert_eq!(b.duration_us(3, 0.7), 12_000);
        // A multiplier of 1 keeps every opening at the base.
        let flat = Backoff {
            multiplier: 1.0,
            ..b
        };
        assert_eq!(flat.nominal_us(9), 3_000);
    }
}
