//! Special functions the standard library lacks, accurate to a few ulp in f64: the oracle's
//! GELU must be better than any kernel it checks.
//!
//! `erf` uses the series `erf(x) = 2/√π · e^{−x²} · Σ 2ⁿx^{2n+1} / (1·3·…·(2n+1))`, whose terms
//! are all positive (no cancellation), for |x| < 2; `erfc` uses the Laplace continued fraction
//! `erfc(x) = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …))))` for x ≥ 2, evaluated backwards with
//! enough terms (≈ 12 + 220/x²) to converge to f64 precision. Checked against musl's `erf`/`erfc`
//! over [0, 27] in steps of 1e-3: relative error below 1e-15 for `erf` everywhere and for `erfc`
//! on x ≥ 2; below 2 `erfc = 1 − erf` has absolute error ~1e-16.

use std::f64::consts::{FRAC_2_SQRT_PI, PI};

/// Beyond this, erfc(x) underflows to 0 in f64 (it is ~1e-319 at 26.6).
const ERFC_ZERO: f64 = 27.0;

/// The error function.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.0 { erf_series(a) } else { 1.0 - erfc_tail(a) };
    // copysign keeps erf(−0) = −0.
    r.copysign(x)
}

/// The complementary error function `1 − erf(x)`, without the cancellation for large x.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        let a = -x;
        return 1.0 + if a < 2.0 { erf_series(a) } else { 1.0 - erfc_tail(a) };
    }
    if x < 2.0 { 1.0 - erf_series(x) } else { erfc_tail(x) }
}

/// erf for 0 ≤ x < 2.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    // Terms shrink once n > x² (≤ 4 here), so 100 is far more than needed; the bound only guards
    // against a loop that never ends.
    for n in 1..100 {
        term *= 2.0 * x2 / f64::from(2 * n + 1);
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    FRAC_2_SQRT_PI * exp_neg_square(x) * sum
}

/// erfc for x ≥ 2.
fn erfc_tail(x: f64) -> f64 {
    if x >= ERFC_ZERO {
        return 0.0;
    }
    let terms = (12.0 + 220.0 / (x * x)) as u32;
    let mut f = x;
    for n in (1..=terms).rev() {
        f = x + 0.5 * f64::from(n) / f;
    }
    exp_neg_square(x) / (PI.sqrt() * f)
}

/// e^{−x²} without the rounding error of forming x² (which e^{…} would amplify by x²): split x
/// into a 26-bit head, whose square is exact, and the rest.
fn exp_neg_square(x: f64) -> f64 {
    let hi = f64::from_bits(x.to_bits() & 0xffff_ffff_f800_0000);
    let lo = x - hi;
    (-hi * hi).exp() * (-lo * (x + hi)).exp()
}
