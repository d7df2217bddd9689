//! Confidence intervals for proportions: Wilson's score interval for one
//! proportion, and Newcombe's hybrid score interval for the difference of
//! two independent proportions (Newcombe 1998, method 10), which combines
//! the two Wilson intervals.
//!
//! R. G. Newcombe, "Interval estimation for the difference between
//! independent proportions: comparison of eleven methods", Statistics in
//! Medicine 17 (1998) 873–890. Method 10 keeps close to its nominal
//! coverage for small groups and for rates near 0 or 1, where the Wald
//! interval (p ± z·se) fails, and never leaves [−1, 1].
//!
//! Pure arithmetic: knows nothing of journeys or stores.

/// The two-sided 95% normal quantile, z₀.₉₇₅.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson's score interval for `x` successes out of `n` (no continuity
/// correction): (2x + z² ± z·√(z² + 4x(1 − x/n))) / (2(n + z²)).
/// `None` when `n` is 0 or `x > n`.
pub fn wilson(x: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 || x > n {
        return None;
    }
    let (x, n) = (x as f64, n as f64);
    let z2 = z * z;
    let p = x / n;
    let centre = 2.0 * x + z2;
    let half = z * (z2 + 4.0 * x * (1.0 - p)).sqrt();
    let denominator = 2.0 * (n + z2);
    let lo = ((centre - half) / denominator).clamp(0.0, 1.0);
    let hi = ((centre + half) / denominator).clamp(0.0, 1.0);
    Some((lo, hi))
}

/// Newcombe's hybrid score interval for p₁ − p₂, with p₁ = x₁/n₁ and
/// p₂ = x₂/n₂, from the Wilson intervals (l₁, u₁) and (l₂, u₂):
///
/// ```text
/// lower = (p₁ − p₂) − √((p₁ − l₁)² + (u₂ − p₂)²)
/// upper = (p₁ − p₂) + √((u₁ − p₁)² + (p₂ − l₂)²)
/// ```
///
/// `None` when either group is empty.
pub fn newcombe(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> Option<(f64, f64)> {
    let (l1, u1) = wilson(x1, n1, z)?;
    let (l2, u2) = wilson(x2, n2, z)?;
    let p1 = x1 as f64 / n1 as f64;
    let p2 = x2 as f64 / n2 as f64;
    let d = p1 - p2;
    let lower = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let upper = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    Some((lower.clamp(-1.0, 1.0), upper.clamp(-1.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round4(v: f64) -> f64 {
        (v * 10_000.0).round() / 10_000.0
    }

    /// Newcombe (1998), Table II, method 10 ("score, no continuity
    /// correction"), to the four decimals printed there.
    #[test]
    fn newcombe_table_ii_method_10() {
        // (x₁, n₁, x₂, n₂) and the published (lower, upper).
        type Case = ((u64, u64, u64, u64), (f64, f64));
        let cases: [Case; 7] = [
            ((56, 70, 48, 80), (0.0524, 0.3339)),
            ((9, 10, 3, 10), (0.1705, 0.8090)),
            ((5, 56, 0, 29), (-0.0381, 0.1926)),
            ((0, 10, 0, 20), (-0.1611, 0.2775)),
            ((0, 10, 0, 10), (-0.2775, 0.2775)),
            ((10, 10, 0, 20), (0.6791, 1.0000)),
            ((10, 10, 0, 10), (0.6075, 1.0000)),
        ];
        for ((x1, n1, x2, n2), (lo, hi)) in cases {
            let (l, u) = newcombe(x1, n1, x2, n2, Z95).expect("non-empty groups");
            assert_eq!((round4(l), round4(u)), (lo, hi), "{x1}/{n1} - {x2}/{n2}");
        }
    }

    /// The Wilson intervals of Newcombe's companion paper ("Two-sided
    /// confidence intervals for the single proportion: comparison of seven
    /// methods", Statistics in Medicine 17 (1998) 857–872, Table I, method
    /// 3): 81/263 → 0.2553 to 0.3662, 15/148 → 0.0624 to 0.1605, 0/20 → 0
    /// to 0.1611, 1/29 → 0.0061 to 0.1718.
    #[test]
    fn wilson_published_values() {
        for ((x, n), (lo, hi)) in [
            ((81, 263), (0.2553, 0.3662)),
            ((15, 148), (0.0624, 0.1605)),
            ((0, 20), (0.0, 0.1611)),
            ((1, 29), (0.0061, 0.1718)),
        ] {
            let (l, u) = wilson(x, n, Z95).expect("n > 0");
            assert_eq!((round4(l), round4(u)), (lo, hi), "{x}/{n}");
        }
    }

    /// By hand, for 30/100 against 10/100 (z = 1.96 to four places):
    /// Wilson 30/100: (60 + 3.8415 ± 1.96·√(3.8415 + 84)) / 207.6829
    /// = (63.8415 ± 18.3712) / 207.6829 → 0.2189, 0.3958;
    /// Wilson 10/100: (23.8415 ± 1.96·√(3.8415 + 36)) / 207.6829
    /// = (23.8415 ± 12.3720) / 207.6829 → 0.0552, 0.1744;
    /// lower = 0.2 − √(0.0811² + 0.0744²) = 0.2 − 0.1101 = 0.0899,
    /// upper = 0.2 + √(0.0958² + 0.0448²) = 0.2 + 0.1057 = 0.3057.
    #[test]
    fn hand_computation() {
        let (l, u) = newcombe(30, 100, 10, 100, Z95).expect("non-empty");
        assert!((l - 0.0899).abs() < 1e-3, "{l}");
        assert!((u - 0.3057).abs() < 1e-3, "{u}");
    }

    #[test]
    fn empty_groups_have_no_interval() {
        assert_eq!(wilson(0, 0, Z95), None);
        assert_eq!(wilson(3, 2, Z95), None);
        assert_eq!(newcombe(1, 10, 0, 0, Z95), None);
        assert_eq!(newcombe(0, 0, 1, 10, Z95), None);
    }

    #[test]
    fn intervals_contain_the_estimate_and_stay_in_range() {
        for (x1, n1, x2, n2) in [(0, 1, 1, 1), (1, 1, 0, 1), (7, 9, 2, 3), (0, 5, 5, 5)] {
            let (l, u) = newcombe(x1, n1, x2, n2, Z95).expect("non-empty");
            let d = x1 as f64 / n1 as f64 - x2 as f64 / n2 as f64;
            assert!((-1.0..=1.0).contains(&l) && (-1.0..=1.0).contains(&u));
            assert!(l <= d && d <= u, "{l} {d} {u}");
        }
    }

    /// The interval's actual coverage, by simulation: 4 000 pairs of
    /// binomial samples (n = 200 and 100, p = 0.30 and 0.20) from a fixed
    /// seed; a 95% interval covers the true difference in 93–97% of them.
    #[test]
    fn coverage_is_close_to_nominal() {
        let mut state: u64 = 0x5EED_1234;
        let mut uniform = || {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (p1, n1, p2, n2) = (0.30, 200u64, 0.20, 100u64);
        let trials = 4_000;
        let mut covered = 0;
        for _ in 0..trials {
            let x1 = (0..n1).filter(|_| uniform() < p1).count() as u64;
            let x2 = (0..n2).filter(|_| uniform() < p2).count() as u64;
            let (l, u) = newcombe(x1, n1, x2, n2, Z95).expect("non-empty");
            if l <= p1 - p2 && p1 - p2 <= u {
                covered += 1;
            }
        }
        let rate = covered as f64 / trials as f64;
        assert!((0.93..=0.97).contains(&rate), "coverage {rate}");
    }
}
