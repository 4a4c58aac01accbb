//! f32 arithmetic for the hottest float kernels of f32 tensors (GELU and its derivative, Adam,
//! attention, norms), instead of converting every element to f64 and back.
//!
//! Everything here is branch-free per element (a `select` where a value depends on a sign or a
//! range) and calls no libm function, so a loop over a slice vectorises to 8 lanes under
//! [`crate::kernel::vectorised`]. The results are within a few f32 ulp of the f64 oracle's
//! (the tests say how many); f64 and f16 tensors keep the f64 paths.

/// `e^x` for f32: `x = n·ln2 + r` with |r| ≤ ln2/2 (Cody–Waite: `n·LN2_HI` is exact because
/// `LN2_HI` has 9 significant bits and |n| ≤ 150), `e^r` by its Taylor polynomial to r⁷/7!
/// (truncation below 1e−8 relative), then `2ⁿ` built from exponent bits in two halves so that
/// both factors stay normal for any `n` in range: the product overflows to inf above ~88.72 and
/// goes subnormal, then 0, below ~−87.3, as a correctly rounded exp would. Within 2 ulp of e^x.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    exp_of_sum(x, 0.0)
}

/// `e^{x + lo}` for a correction |lo| ≪ 1 that `x + lo` would round away (see [`exp`]): `lo`
/// joins the reduced argument, where it is no longer small beside the rest.
#[inline(always)]
#[allow(clippy::manual_clamp, reason = "max/min turn NaN into a bound, which vectorises; NaN is restored at the end")]
fn exp_of_sum(x: f32, lo: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355/512
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    // Adding 1.5·2²³ rounds to an integer (to nearest) and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // e^−104 rounds to 0 in f32 and e^89 to inf: clamping there changes no result, and keeps
    // n (and the exponent arithmetic below) small. NaN is put back at the end.
    let xc = x.max(-104.0).min(89.0);
    let k = xc * LOG2E + ROUND;
    let n = k - ROUND;
    // xc − n·LN2_HI is exact (Sterbenz: the two are within a factor 2, or n = 0).
    let r = ((xc - n * LN2_HI) + lo) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ni = k.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let half = ni >> 1;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let y = p * pow2(half) * pow2(ni - half);
    if x.is_nan() { x } else { y }
}

/// `erfc(z)/e^{−z²}` for z ≥ 0 (`z = ∞` gives 0), as `τ·e^{G(τ)}` with `τ = 1/(1 + z/2)` ∈ (0, 1]:
/// `G(τ) = ln(erfc(z)/τ) + z²` is smooth on [0, 1], and `G` below is its weighted least-squares
/// polynomial of degree 9 (fitted for Kiln against 40-digit mpmath values; |error| < 1.1e−7,
/// so the relative error of erfc is about one f32 ulp before the f32 rounding of the terms).
#[inline(always)]
fn erfc_scaled(z: f32) -> f32 {
    const G: [f32; 10] = [
        -1.265_512_2,
        1.000_022_8,
        0.374_122_32,
        0.096_412_03,
        -0.184_077_02,
        0.271_648_32,
        -1.121_572_9,
        1.473_697_3,
        -0.813_548_45,
        0.168_807_72,
    ];
    let t = 1.0 / (1.0 + 0.5 * z);
    let g = G[..9].iter().rev().fold(G[9], |acc, &c| acc * t + c);
    t * exp(g)
}

/// `(Φ(x), e^{−x²/2})`: the standard normal CDF and the unnormalised density. Φ comes from
/// `erfc(|x|/√2)/2` on both sides (`1 − that` for x > 0), so the left tail keeps its relative
/// precision where `1 + erf` would cancel.
#[inline(always)]
#[allow(clippy::manual_clamp, reason = "max/min drop NaN on purpose (see the comment in the body)")]
fn normal_cdf_and_density(x: f32) -> (f32, f32) {
    // Beyond ±20 both are 0 or 1 in f32 already; clamping keeps ±inf from making x − hi NaN
    // below (and drops NaN, which the callers' factor x carries through instead).
    let x = x.max(-20.0).min(20.0);
    // −x²/2 as an exact head and a small tail: with x = hi + lo, hi holding the top 12
    // significand bits, hi² is exact, and rounding x² itself would cost e^{−x²/2} a relative
    // error of x²/2 ulp (16 ulp at x = 8).
    let hi = f32::from_bits(x.to_bits() & 0xffff_f000);
    let lo = x - hi;
    let density = exp_of_sum(-0.5 * (hi * hi), -0.5 * (lo * (x + hi)));
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let tail = 0.5 * density * erfc_scaled(z);
    let cdf = if x < 0.0 { tail } else { 1.0 - tail };
    (cdf, density)
}

/// GELU, `x·Φ(x)`.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    x * normal_cdf_and_density(x).0
}

/// GELU's derivative, `Φ(x) + x·φ(x)` with `φ(x) = e^{−x²/2}/√(2π)`.
#[inline(always)]
pub(crate) fn gelu_erf_grad(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let (cdf, density) = normal_cdf_and_density(x);
    cdf + x * (FRAC_1_SQRT_2PI * density)
}
