//! The retry schedule: exponential backoff with full jitter, capped.
//!
//! Core's rule, computed once here and never per adapter: a nacked job's
//! retry time is `now + delay(attempt)`, where
//!
//! ```text
//! ceiling(attempt) = min(cap, base · 2^(attempt − 1))     (attempt 0 counts as 1)
//! delay(attempt)   = uniform in [0, ceiling(attempt)]      ("full jitter")
//! ```
//!
//! Full jitter spreads the retries of many jobs that failed together (a
//! target that was down) over the whole window instead of sending them
//! back in one wave. Defaults: `base` 1 s, `cap` 1 h, so attempt 1 waits up
//! to 1 s, attempt 2 up to 2 s, …, attempt 13 and later up to 1 h.
//!
//! Durations are counted in whole nanoseconds in a `u64` (so a cap above
//! about 584 years acts as 584 years); nothing here overflows or panics,
//! whatever the attempt, base or cap.

use std::time::Duration;

use rand::RngCore;

/// The longest delay this module computes: `u64::MAX` nanoseconds (about
/// 584 years). Larger caps act as this.
const MAX_NANOS: u64 = u64::MAX;

/// Exponential backoff with full jitter, capped (see the module docs).
///
/// `base` of zero makes every delay zero; a `base` above `cap` makes every
/// ceiling `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first attempt's delay. Default: 1 s.
    pub base: Duration,
    /// The largest ceiling. Default: 1 h.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

/// `d` in nanoseconds, saturated at [`MAX_NANOS`].
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(MAX_NANOS)
}

impl Backoff {
    /// `min(cap, base · 2^(attempt − 1))`, attempt 0 counting as 1;
    /// computed without overflow for every `u32`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        Duration::from_nanos(self.ceiling_nanos(attempt))
    }

    fn ceiling_nanos(&self, attempt: u32) -> u64 {
        let (base, cap) = (nanos(self.base), nanos(self.cap));
        let shift = attempt.saturating_sub(1);
        // base · 2^shift fits in a u64 exactly when shift < leading zeros
        // of base (and base is not zero).
        let doubled = if base == 0 {
            0
        } else if shift < base.leading_zeros() {
            base << shift
        } else {
            MAX_NANOS
        };
        doubled.min(cap)
    }

    /// The delay before retrying attempt `attempt`: uniform in
    /// `[0, ceiling(attempt)]`, drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl RngCore) -> Duration {
        self.delay_with(attempt, rng.next_u64())
    }

    /// [`Backoff::delay`] with the random draw given: `unit` read as the
    /// fraction `unit / 2^64` of the way from 0 to the ceiling, inclusive
    /// at both ends (`0` gives zero, `u64::MAX` gives the ceiling). For
    /// deterministic tests; `delay` calls it with a uniform `u64`.
    pub fn delay_with(&self, attempt: u32, unit: u64) -> Duration {
        let ceiling = u128::from(self.ceiling_nanos(attempt));
        // floor((ceiling + 1) · unit / 2^64) ∈ [0, ceiling]; the product is
        // below 2^64 · 2^64, so it fits in a u128.
        let scaled = ((ceiling + 1) * u128::from(unit)) >> 64;
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(MAX_NANOS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn defaults_are_one_second_doubling_to_one_hour() {
        let b = Backoff::default();
        assert_eq!(b.base, Duration::from_secs(1));
        assert_eq!(b.cap, Duration::from_secs(3600));
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(12), Duration::from_secs(2048));
        assert_eq!(b.ceiling(13), Duration::from_secs(3600));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn the_draw_maps_onto_the_closed_interval() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(3, 0), Duration::ZERO);
        assert_eq!(b.delay_with(3, u64::MAX), Duration::from_secs(4));
        assert_eq!(b.delay_with(3, 1 << 63), Duration::from_millis(2000));
        let zero = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(10),
        };
        assert_eq!(zero.ceiling(u32::MAX), Duration::ZERO);
        assert_eq!(zero.delay_with(7, u64::MAX), Duration::ZERO);
        let huge = Backoff {
            base: Duration::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(huge.ceiling(1), Duration::from_nanos(u64::MAX));
        assert_eq!(huge.delay_with(1, u64::MAX), Duration::from_nanos(u64::MAX));
        let inverted = Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(1),
        };
        assert_eq!(inverted.ceiling(1), Duration::from_secs(1));
    }

    #[test]
    fn delays_spread_over_the_whole_window() {
        // 10,000 draws at a 1,000 ms ceiling: the mean is near 500 ms, every
        // tenth of the window is hit about equally, none exceeds the ceiling.
        let b = Backoff {
            base: Duration::from_millis(1000),
            cap: Duration::from_secs(60),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut buckets = [0u32; 10];
        let mut total = Duration::ZERO;
        for _ in 0..10_000 {
            let d = b.delay(1, &mut rng);
            assert!(d <= Duration::from_secs(1));
            total += d;
            let i = usize::try_from(d.as_millis() / 100).unwrap().min(9);
            buckets[i] += 1;
        }
        let mean = total / 10_000;
        assert!(
            mean > Duration::from_millis(480) && mean < Duration::from_millis(520),
            "{mean:?}"
        );
        for (i, n) in buckets.iter().enumerate() {
            assert!((850..=1150).contains(n), "bucket {i}: {n}");
        }
    }

    proptest! {
        #[test]
        fn never_above_the_cap_and_never_overflows(
            base_ns in any::<u64>(),
            cap_ns in any::<u64>(),
            attempt in any::<u32>(),
            unit in any::<u64>(),
        ) {
            let b = Backoff { base: Duration::from_nanos(base_ns), cap: Duration::from_nanos(cap_ns) };
            let ceiling = b.ceiling(attempt);
            prop_assert!(ceiling <= b.cap);
            prop_assert!(b.delay_with(attempt, unit) <= ceiling);
            // The exact value where it is representable.
            let exact = u128::from(base_ns) << attempt.saturating_sub(1).min(64);
            let expected = if attempt.saturating_sub(1) >= 64 && base_ns > 0 {
                u128::from(cap_ns)
            } else {
                exact.min(u128::from(cap_ns))
            };
            prop_assert_eq!(ceiling.as_nanos(), expected);
        }

        #[test]
        fn ceilings_never_shrink_as_attempts_grow(
            base_ms in 0u64..100_000,
            cap_ms in 0u64..100_000_000,
            attempt in 0u32..u32::MAX,
        ) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) };
            prop_assert!(b.ceiling(attempt) <= b.ceiling(attempt + 1));
        }

        #[test]
        fn larger_draws_never_give_shorter_delays(attempt in 0u32..40, a in any::<u64>(), c in any::<u64>()) {
            let b = Backoff::default();
            let (lo, hi) = if a <= c { (a, c) } else { (c, a) };
            prop_assert!(b.delay_with(attempt, lo) <= b.delay_with(attempt, hi));
        }
    }
}
