//! The f32 kernels against f64 references built here from `special::erfc` (checked against
//! tabulated values in `special.rs`) and the standard library's f64 `exp`.

use kiln_backend::{BackendStorage, HostData, Layout, UnaryOp};

use super::{Rng, c, st};
use crate::fast32;
use crate::special::erfc;

/// Φ(x) in f64.
fn cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// GELU and the size of its value (the error scale).
fn gelu_ref(x: f64) -> (f64, f64) {
    let y = x * cdf(x);
    (y, y.abs())
}

/// GELU's derivative Φ(x) + x·φ(x), and the size of its terms: near x ≈ −0.75 they cancel, and
/// f32 can only promise an error relative to the terms there.
fn gelu_grad_ref(x: f64) -> (f64, f64) {
    let xphi = x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf(x) + xphi, cdf(x) + xphi.abs())
}

/// The worst |got − want| / (scale + atol) over the points, NaN only where `want` is NaN.
fn worst(xs: &[f32], got: &[f32], want: impl Fn(f64) -> (f64, f64), atol: f64) -> f64 {
    let mut w: f64 = 0.0;
    for (&x, &g) in xs.iter().zip(got) {
        let (r, scale) = want(f64::from(x));
        if r.is_nan() {
            assert!(g.is_nan(), "at {x}: got {g}, want NaN");
            continue;
        }
        if r.is_infinite() {
            assert_eq!(f64::from(g), r, "at {x}");
            continue;
        }
        w = w.max((f64::from(g) - r).abs() / (scale + atol));
    }
    w
}

/// Random normals (the activations GELU sees), a dense grid out to the tails, and the edges.
fn points(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| if i % 2 == 0 { (rng.range(-1.0, 1.0) * 3.0) as f32 } else { rng.range(-14.0, 14.0) as f32 })
        .collect()
}

#[test]
fn exp_is_within_two_ulp_of_f64_exp() {
    let mut xs: Vec<f32> = (-2_000_000..=2_000_000).map(|i| i as f32 * 4.4e-5).collect();
    xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.7, -87.3, -100.0, -103.0]);
    for &x in &xs {
        let (got, want) = (fast32::exp(x), f64::from(x).exp());
        let ulp = f64::from(f32::from_bits((want as f32).to_bits() + 1)) - f64::from(want as f32);
        // Below ~−87.3 the result is subnormal: there the f32 spacing is fixed, 2⁻¹⁴⁹.
        let tol = 2.0 * ulp.abs().max(f64::from(f32::from_bits(1)));
        assert!((f64::from(got) - want).abs() <= tol, "exp({x}) = {got}, want {want}");
    }
    assert_eq!(fast32::exp(89.0), f32::INFINITY);
    assert_eq!(fast32::exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(fast32::exp(-105.0), 0.0);
    assert_eq!(fast32::exp(f32::NEG_INFINITY), 0.0);
    assert!(fast32::exp(f32::NAN).is_nan());
}

/// Through the backend's unary op, contiguous (sizes 1, 7, 1023, 4097) and strided: within
/// 6e−7 (5 f32 ulp) of the f64 value, relative to its size; results below f32's normal range
/// (|GELU(x)| < 1e−37 from x ≈ −13) within an absolute 1e−37·6e−7.
#[test]
fn gelu_and_its_derivative_match_f64_on_f32() {
    for (op, f) in [(UnaryOp::GeluErf, gelu_ref as fn(f64) -> (f64, f64)), (UnaryOp::GeluErfGrad, gelu_grad_ref)] {
        for n in [1, 7, 1023, 4097] {
            let xs = points(n, n as u64);
            let out = st(xs.clone()).unary(&c(&[n]), op).unwrap();
            let HostData::F32(got) = out.as_host() else { panic!("{} on f32 gave {:?}", op.name(), out.dtype()) };
            let w = worst(&xs, got, f, 1e-37);
            assert!(w <= 6e-7, "{} n={n}: worst relative error {w:e}", op.name());
        }
        // A strided view (every third element of a 3×5 block, transposed).
        let xs = points(15, 99);
        let l = Layout::new(vec![5, 3], vec![1, 5], 0);
        let out = st(xs.clone()).unary(&l, op).unwrap();
        let HostData::F32(got) = out.as_host() else { unreachable!() };
        let walked: Vec<f32> = (0..15).map(|i| xs[(i % 3) * 5 + i / 3]).collect();
        assert!(worst(&walked, got, f, 1e-37) <= 6e-7, "{} strided", op.name());
    }
}

#[test]
fn gelu_on_f32_at_the_edges() {
    let xs = [0.0f32, -0.0, f32::NAN, f32::INFINITY, -20.0, 20.0, 1e-30, -1e-30];
    let out = st(xs.to_vec()).unary(&c(&[xs.len()]), UnaryOp::GeluErf).unwrap();
    let HostData::F32(g) = out.as_host() else { unreachable!() };
    assert_eq!(g[0], 0.0);
    assert!(g[2].is_nan());
    assert_eq!(g[3], f32::INFINITY);
    assert!(g[4] == 0.0 || g[4].abs() < 1e-38, "gelu(−20) = {}", g[4]);
    assert_eq!(g[5], 20.0);
    assert_eq!(g[6], 5e-31);
    assert_eq!(g[7], -5e-31);
    let out = st(xs.to_vec()).unary(&c(&[xs.len()]), UnaryOp::GeluErfGrad).unwrap();
    let HostData::F32(d) = out.as_host() else { unreachable!() };
    assert_eq!((d[0], d[1], d[5], d[6]), (0.5, 0.5, 1.0, 0.5));
    assert!(d[2].is_nan());
    assert!(d[4].abs() < 1e-38);
}
