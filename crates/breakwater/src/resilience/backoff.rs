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
}
