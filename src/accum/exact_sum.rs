//! Exact float sums that values can leave as freely as they come.
//!
//! A running `f64` total drifts: add `1e16`, add `1.0`, remove `1e16`, and it reads `0.0`
//! instead of `1.0`; compensated (Kahan) sums shrink the drift but still let it grow with
//! the history of writes. This accumulator keeps the sum *exactly*, as a Shewchuk
//! expansion: a short list of non-overlapping `f64` partials whose exact sum is the exact
//! sum of the values present (the algorithm of Python's `math.fsum`). Adding or removing
//! a value is exact, so the state depends only on the values present, never on history.
//!
//! **Error bound**: [`ExactSum::value`] is the exact sum rounded to the nearest `f64`
//! (ties to even), so it is within half an ulp of the true sum; when no value is left it
//! is exactly `0.0`. The partials are non-overlapping, so there are at most about 40 of
//! them even across the whole `f64` range, and usually one or two.
//!
//! **Range**: the engine accepts float values of magnitude at most [`MAX_FLOAT`]
//! (2^960), so no exact sum of fewer than 2^62 of them, nor any intermediate of the
//! algorithm, can leave the finite range: adding never fails.

use smallvec::SmallVec;

use crate::limits::MAX_FLOAT;

/// The exact sum of a multiset of finite `f64` values.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ExactSum {
    /// Non-zero, non-overlapping, increasing in magnitude.
    partials: SmallVec<[f64; 2]>,
}

impl ExactSum {
    /// Adds `x` exactly (subtract by adding `-x`); `|x|` must be at most [`MAX_FLOAT`].
    pub(crate) fn add(&mut self, mut x: f64) {
        debug_assert!(x.abs() <= MAX_FLOAT);
        let mut kept = 0;
        for i in 0..self.partials.len() {
            let mut y = self.partials[i];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            debug_assert!(hi.is_finite(), "values are bounded by MAX_FLOAT");
            // Fast two-sum: exact since |x| >= |y|.
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x != 0.0 {
            self.partials.push(x);
        }
    }

    /// The exact sum, correctly rounded to the nearest `f64`; `0.0` when empty.
    pub(crate) fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half-way cases correctly: the rest of the partials decide the direction.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi + 0.0
    }

    /// How many partials the expansion holds.
    #[cfg(test)]
    pub(crate) fn partials(&self) -> usize {
        self.partials.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_drift_where_a_plain_sum_drifts() {
        let mut s = ExactSum::default();
        s.add(1e16);
        s.add(1.0);
        s.add(-1e16);
        assert_eq!(s.value(), 1.0);
        s.add(-1.0);
        assert_eq!(s.value(), 0.0);
        assert_eq!(s.partials(), 0);
    }

    #[test]
    fn max_float_is_two_to_the_960() {
        assert_eq!(MAX_FLOAT, 2f64.powi(960));
    }

    #[test]
    fn extreme_values_stay_exact() {
        let mut s = ExactSum::default();
        for _ in 0..1000 {
            s.add(MAX_FLOAT);
        }
        s.add(f64::from_bits(1)); // the smallest subnormal
        for _ in 0..1000 {
            s.add(-MAX_FLOAT);
        }
        assert_eq!(s.value(), f64::from_bits(1));
    }

    /// Values `k * 2^-20` with |k| < 2^40: their exact sum is an i128 of the k's, and
    /// `i128 as f64` rounds to nearest-even, so the oracle is exact and independent.
    fn fixed() -> impl Strategy<Value = i64> {
        -(1i64 << 40)..(1i64 << 40)
    }

    proptest! {
        #[test]
        fn matches_exact_oracle(ops in prop::collection::vec((fixed(), any::<bool>()), 1..60)) {
            let scale = 2f64.powi(-20);
            let mut s = ExactSum::default();
            let mut present: Vec<i64> = Vec::new();
            for (k, remove) in ops {
                if remove && !present.is_empty() {
                    let idx = (k.unsigned_abs() as usize) % present.len();
                    let gone = present.swap_remove(idx);
                    s.add(-(gone as f64) * scale);
                } else {
                    present.push(k);
                    s.add(k as f64 * scale);
                }
                let exact: i128 = present.iter().map(|&k| i128::from(k)).sum();
                prop_assert_eq!(s.value(), exact as f64 * scale);
            }
        }

        #[test]
        fn wide_range_add_then_remove_is_zero(vals in prop::collection::vec(
            (any::<i32>(), -1000i32..900), 1..40)) {
            let xs: Vec<f64> = vals.iter().map(|&(m, e)| f64::from(m) * 2f64.powi(e)).collect();
            let mut s = ExactSum::default();
            for &x in &xs { s.add(x) }
            for &x in xs.iter().rev() { s.add(-x) }
            prop_assert_eq!(s.value().to_bits(), 0.0f64.to_bits());
        }
    }
}
