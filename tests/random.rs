//! Kiln's random numbers: one Philox 4x32-10 stream, generated where the tensor lives.
//! - GPU ≡ CPU: raw words, uniforms and Bernoulli masks bit for bit, normals within 1e-5, at
//!   odd sizes and non-zero offsets (including ones whose block counter carries past 32 bits
//!   and wraps past 64), fused (scalar and vec4 kernels) and unfused.
//! - The stream itself: the generator's first block is Random123's known answer; element i is
//!   lane i % 4 of block offset + i / 4 (checked against `kiln::philox` directly).
//! - Statistics of the GPU stream: moments with 5σ bounds from n, a 64-bin χ², Kolmogorov–
//!   Smirnov against the uniform and normal CDFs, correlations between and within calls.
//! - Dropout: GPU ≡ CPU forward and backward, the backward equal to grad·mask/keep, the mask
//!   never written by the fusion engine.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln::prelude::*;
use kiln::{RngState, philox, rng_state, set_rng_state};
use std::sync::{Mutex, MutexGuard};

/// The generator and the fusion switch are process-wide: tests that set either hold this.
fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const SIZES: [usize; 6] = [1, 7, 1023, 4096, 4097, (1 << 20) + 1];

/// (seed, offset) pairs: the start, an arbitrary one, one whose counter's low word overflows
/// inside the tensor, and one that wraps past 2^64 blocks.
const STATES: [RngState; 4] = [
    RngState { seed: 0, offset: 0 },
    RngState { seed: 0x0123_4567_89ab_cdef, offset: 12_345 },
    RngState { seed: 77, offset: 0xffff_fff0 },
    RngState { seed: u64::MAX, offset: u64::MAX - 5 },
];

fn draw(state: RngState, f: impl Fn() -> Result<Tensor>) -> Vec<f64> {
    set_rng_state(state);
    f().unwrap().to_f64_vec().unwrap()
}

/// Element i from the definition: lane i % 4 of block `offset + i / 4`, key = seed.
fn reference_bits(state: RngState, n: usize) -> Vec<f64> {
    let key = kiln::PhiloxKey { seed: state.seed, counter: state.offset };
    (0..n).map(|i| key.block((i / 4) as u64)[i % 4] as f64).collect()
}

/// Asserts |a − b| ≤ tol everywhere; returns the largest difference.
fn assert_max_diff(what: &str, a: &[f64], b: &[f64], tol: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let (i, d) = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold((0, 0.0), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(d <= tol, "{what}: element {i}: gpu {} vs cpu {} (|Δ| = {d:e})", a[i], b[i]);
    d
}

#[test]
fn gpu_streams_equal_the_cpu_and_the_definition() {
    let Some(g) = common::gpu("gpu_streams_equal_the_cpu_and_the_definition") else { return };
    let _l = lock();
    let cpu = Device::cpu();
    let mut normal_diff = 0f64;
    for fused in [true, false] {
        kiln::set_fusion(fused);
        for &n in &SIZES {
            // The largest size once, at one state: it is the slow one on lavapipe.
            let states = if n > 5000 { &STATES[1..2] } else { &STATES[..] };
            for &st in states {
                let what = format!("n = {n}, {st:?}, fused = {fused}");
                let bits = draw(st, || Tensor::random_bits(&[n], &g));
                assert_eq!(bits, draw(st, || Tensor::random_bits(&[n], &cpu)), "bits, {what}");
                assert_eq!(bits, reference_bits(st, n), "bits vs the definition, {what}");
                let u = draw(st, || Tensor::rand(&[n], &g));
                assert_eq!(u, draw(st, || Tensor::rand(&[n], &cpu)), "rand, {what}");
                let want: Vec<f64> = bits.iter().map(|&w| (w as u32 >> 8) as f64 / 16_777_216.0).collect();
                assert_eq!(u, want, "rand is (w >> 8)·2^-24, {what}");
                let z = draw(st, || Tensor::randn(&[n], &g));
                let d = assert_max_diff(&format!("randn, {what}"), &z, &draw(st, || Tensor::randn(&[n], &cpu)), 1e-5);
                normal_diff = normal_diff.max(d);
                let m = draw(st, || Tensor::bernoulli(&[n], 0.3, &g));
                assert_eq!(m, draw(st, || Tensor::bernoulli(&[n], 0.3, &cpu)), "bernoulli, {what}");
                let want: Vec<f64> = u.iter().map(|&u| f64::from(u32::from((u as f32) < 0.3f32))).collect();
                assert_eq!(m, want, "bernoulli is uniform < p, {what}");
                let r = draw(st, || Tensor::rand_uniform(&[n], -3.0, 5.0, &g));
                assert_eq!(r, draw(st, || Tensor::rand_uniform(&[n], -3.0, 5.0, &cpu)), "rand_uniform, {what}");
                // The generator moved past exactly ⌈n/4⌉ blocks.
                assert_eq!(
                    rng_state(),
                    RngState { seed: st.seed, offset: st.offset.wrapping_add(n.div_ceil(4) as u64) }
                );
            }
        }
    }
    kiln::set_fusion(true);
    eprintln!("randn: largest |gpu − cpu| {normal_diff:e}");
}

#[test]
fn the_first_block_is_random123s_known_answer() {
    let Some(g) = common::gpu("the_first_block_is_random123s_known_answer") else { return };
    let _l = lock();
    // Seed 0, block 0: Philox4x32-10 of counter 0 under key 0.
    let kat = [0x6627_e8d5u32, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8];
    assert_eq!(philox::philox4x32_10([0; 4], [0; 2]), kat);
    for d in [Device::cpu(), g] {
        kiln::manual_seed(0);
        assert_eq!(Tensor::random_bits(&[4], &d).unwrap().to_vec::<u32>().unwrap(), kat, "{d:?}");
    }
}

#[test]
fn manual_seed_reproduces_every_random_op_on_both_devices() {
    let Some(g) = common::gpu("manual_seed_reproduces_every_random_op_on_both_devices") else { return };
    let _l = lock();
    for d in [Device::cpu(), g] {
        let run = || {
            kiln::manual_seed(1234);
            let x = Tensor::ones(&[3, 333], &d).unwrap();
            [
                Tensor::rand(&[5, 7], &d).unwrap(),
                Tensor::randn(&[1023], &d).unwrap(),
                Tensor::rand_like(&x).unwrap(),
                Tensor::randn_like(&x).unwrap(),
                x.dropout(0.4).unwrap(),
            ]
            .map(|t| t.to_f64_vec().unwrap())
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b, "{d:?}");
        // Consecutive calls take different blocks, hence different numbers.
        kiln::manual_seed(1234);
        let first = Tensor::rand(&[35], &d).unwrap().to_vec::<f32>().unwrap();
        let second = Tensor::rand(&[35], &d).unwrap().to_vec::<f32>().unwrap();
        let same = first.iter().zip(&second).filter(|(p, q)| p == q).count();
        assert!(same <= 1, "{same} of 35 equal across two calls");
        kiln::manual_seed(1235);
        assert_ne!(Tensor::rand(&[35], &d).unwrap().to_vec::<f32>().unwrap(), first, "another seed, other numbers");
    }
}

#[test]
fn f16_and_f64_outputs() {
    let Some(g) = common::gpu("f16_and_f64_outputs") else { return };
    let _l = lock();
    let cpu = Device::cpu();
    let st = STATES[1];
    // f64 holds the f32 values exactly (CPU backend).
    let x64 = Tensor::zeros(&[1023], &cpu).unwrap().to_dtype(DType::F64).unwrap();
    assert_eq!(draw(st, || Tensor::rand_like(&x64)), draw(st, || Tensor::rand(&[1023], &cpu)));
    assert_eq!(draw(st, || Tensor::randn_like(&x64)), draw(st, || Tensor::randn(&[1023], &cpu)));
    assert!(Tensor::rand_like(&Tensor::zeros(&[2], &cpu).unwrap().to_dtype(DType::I32).unwrap()).is_err());
    if !g.gpu_context().is_some_and(|c| c.has_f16()) {
        eprintln!("SKIPPED the f16 half of f16_and_f64_outputs: the adapter has no SHADER_F16");
        return;
    }
    for n in [7, 4097] {
        let h = |d: &Device| Tensor::zeros(&[n], d).unwrap().to_dtype(DType::F16).unwrap();
        let u = draw(st, || Tensor::rand_like(&h(&g)));
        assert_eq!(u, draw(st, || Tensor::rand_like(&h(&cpu))), "f16 rand_like");
        assert!(
            u.iter().all(|&v| (0.0..1.0).contains(&v) && (v * 2048.0).fract() == 0.0),
            "f16 uniforms are k·2^-11 below 1"
        );
        let z = draw(st, || Tensor::randn_like(&h(&g)));
        let zc = draw(st, || Tensor::randn_like(&h(&cpu)));
        // One f16 rounding step where the f32 values straddle a rounding boundary.
        common::assert_close("f16 randn_like", &z, &zc, 1e-3, 1e-4);
        let x = common::random(&[n], DType::F16, 3, -2.0, 2.0);
        assert_eq!(draw(st, || x.to(&g)?.dropout(0.3)), draw(st, || x.dropout(0.3)), "f16 dropout");
    }
}

// ------------------------------------------------------------------------------- statistics

fn gpu_sample(g: &Device, seed: u64, f: impl Fn(&Device) -> Result<Tensor>) -> Vec<f64> {
    kiln::manual_seed(seed);
    f(g).unwrap().to_f64_vec().unwrap()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0))
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let cov = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (a.len() as f64 - 1.0);
    cov / (va * vb).sqrt()
}

/// The Kolmogorov–Smirnov distance between the sample and `cdf`.
fn ks_distance(v: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .map(|(i, &x)| (cdf(x) - i as f64 / n).abs().max(((i + 1) as f64 / n - cdf(x)).abs()))
        .fold(0.0, f64::max)
}

/// √n·D above this has probability ~0.001 under the null (Kolmogorov distribution).
const KS_CRITICAL: f64 = 1.95;

/// Φ through erfc's continued fraction / series, independent of Kiln (|error| < 1e-12).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let erfc = if z < 3.0 {
        let (mut term, mut sum, mut k) = (z, z, 0.0);
        while term.abs() > 1e-17 {
            k += 1.0;
            term *= -z * z / k;
            sum += term / (2.0 * k + 1.0);
        }
        1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = 0.0;
        for k in (1..80).rev() {
            f = (k as f64 / 2.0) / (z + f);
        }
        (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
    };
    if x >= 0.0 { 1.0 - erfc / 2.0 } else { erfc / 2.0 }
}

#[test]
fn uniform_statistics_on_the_gpu() {
    let Some(g) = common::gpu("uniform_statistics_on_the_gpu") else { return };
    let _l = lock();
    let n = 1 << 20;
    let u = gpu_sample(&g, 2026, |d| Tensor::rand(&[n], d));
    let nf = n as f64;
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let (mean, var) = mean_var(&u);
    // Var(mean) = (1/12)/n; Var(s²) ≈ (μ4 − σ⁴)/n = (1/80 − 1/144)/n.
    assert!((mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / nf).sqrt(), "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 5.0 * ((1.0 / 80.0 - 1.0 / 144.0) / nf).sqrt(), "variance {var}");
    // χ² over 64 equal bins: 63 degrees of freedom, mean 63, sd √126.
    let mut bins = [0f64; 64];
    for &x in &u {
        bins[(x * 64.0) as usize] += 1.0;
    }
    let expect = nf / 64.0;
    let chi2: f64 = bins.iter().map(|&o| (o - expect).powi(2) / expect).sum();
    assert!((chi2 - 63.0).abs() < 5.0 * 126f64.sqrt(), "χ² = {chi2}");
    let d = ks_distance(&u, |x| x);
    assert!(d * nf.sqrt() < KS_CRITICAL, "KS √n·D = {}", d * nf.sqrt());
    // Independence: neighbours (lanes of one block, and across blocks), and the next call.
    assert!(correlation(&u[..n - 1], &u[1..]).abs() < 5.0 / nf.sqrt(), "lag-1 correlation");
    assert!(correlation(&u[..n - 4], &u[4..]).abs() < 5.0 / nf.sqrt(), "lag-4 correlation");
    let next = Tensor::rand(&[n], &g).unwrap().to_f64_vec().unwrap();
    assert!(correlation(&u, &next).abs() < 5.0 / nf.sqrt(), "consecutive calls correlate");
    let equal = u.iter().zip(&next).filter(|(a, b)| a == b).count();
    // P(equal) = 2^-24 per element: about 0.06 expected.
    assert!(equal <= 3, "{equal} equal elements across two calls");
}

#[test]
fn normal_statistics_on_the_gpu() {
    let Some(g) = common::gpu("normal_statistics_on_the_gpu") else { return };
    let _l = lock();
    let n = 1 << 20;
    let z = gpu_sample(&g, 7, |d| Tensor::randn(&[n], d));
    let nf = n as f64;
    assert!(z.iter().all(|x| x.is_finite()));
    let (mean, var) = mean_var(&z);
    assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(), "variance {var}");
    let tail = z.iter().filter(|x| x.abs() > 3.0).count() as f64 / nf;
    let p3 = 2.0 * normal_cdf(-3.0);
    assert!((tail - p3).abs() < 5.0 * (p3 * (1.0 - p3) / nf).sqrt(), "P(|z| > 3) = {tail} vs {p3}");
    let d = ks_distance(&z, normal_cdf);
    assert!(d * nf.sqrt() < KS_CRITICAL, "KS √n·D = {}", d * nf.sqrt());
    // Box–Muller's cos/sin pair (lanes 0, 1) is independent, and so are neighbouring pairs.
    let (even, odd): (Vec<f64>, Vec<f64>) = z.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
    assert!(correlation(&even, &odd).abs() < 5.0 / (nf / 2.0).sqrt(), "cos/sin pair correlation");
    assert!(correlation(&z[..n - 2], &z[2..]).abs() < 5.0 / nf.sqrt(), "lag-2 correlation");
    let sq: Vec<f64> = z.iter().map(|x| x * x).collect();
    assert!(correlation(&sq[..n - 1], &sq[1..]).abs() < 5.0 / nf.sqrt(), "radius shared between a pair");
}

#[test]
fn dropout_keep_fraction_on_the_gpu() {
    let Some(g) = common::gpu("dropout_keep_fraction_on_the_gpu") else { return };
    let _l = lock();
    let n = 1 << 20;
    for p in [0.1, 0.2, 0.5, 0.9] {
        let y = gpu_sample(&g, 31, |d| Tensor::ones(&[n], d)?.dropout(p));
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        let keep = 1.0 - p;
        assert!((kept - keep).abs() < 5.0 * (keep * p / n as f64).sqrt(), "p = {p}: kept {kept}");
        let scale = (1.0 / keep) as f32 as f64;
        assert!(y.iter().all(|&v| v == 0.0 || v == scale), "p = {p}: values other than 0 and 1/keep");
        let b = gpu_sample(&g, 31, |d| Tensor::bernoulli(&[n], keep, d));
        let ones = b.iter().sum::<f64>() / n as f64;
        assert!((ones - keep).abs() < 5.0 * (keep * p / n as f64).sqrt(), "bernoulli({keep}): {ones}");
        // Dropout with the same key keeps exactly the Bernoulli mask's ones.
        assert!(y.iter().zip(&b).all(|(y, b)| (*y != 0.0) == (*b == 1.0)), "p = {p}: dropout ≠ bernoulli mask");
    }
}

// ------------------------------------------------------------------------------- dropout

#[test]
fn dropout_forward_and_backward_match_the_cpu_and_the_mask() {
    let Some(g) = common::gpu("dropout_forward_and_backward_match_the_cpu_and_the_mask") else { return };
    let _l = lock();
    let cpu = Device::cpu();
    for &n in &SIZES[..5] {
        for (i, &st) in STATES.iter().enumerate() {
            let p = [0.2, 0.5, 0.05, 0.7][i];
            let keep = 1.0 - p;
            let x = common::random(&[n], DType::F32, 10 + i as u64, -2.0, 2.0);
            let grad_out = common::random(&[n], DType::F32, 20 + i as u64, -1.0, 1.0);
            let mut results = Vec::new();
            for d in [&cpu, &g] {
                let mask = draw(st, || Tensor::bernoulli(&[n], keep, d));
                let xd = x.to(d).unwrap().with_grad();
                set_rng_state(st);
                let y = xd.dropout(p).unwrap();
                y.backward_with(&grad_out.to(d).unwrap()).unwrap();
                let yv = y.to_f64_vec().unwrap();
                let gv = xd.grad().unwrap().to_f64_vec().unwrap();
                let s = (1.0 / keep) as f32;
                let (xv, go) = (x.to_vec::<f32>().unwrap(), grad_out.to_vec::<f32>().unwrap());
                let want_y: Vec<f64> = xv.iter().zip(&mask).map(|(&x, &m)| (x * (m as f32 * s)) as f64).collect();
                let want_g: Vec<f64> = go.iter().zip(&mask).map(|(&g, &m)| (g * (m as f32 * s)) as f64).collect();
                assert_eq!(yv, want_y, "forward = x·mask/keep, n = {n}, {st:?}, {d:?}");
                assert_eq!(gv, want_g, "backward = grad·mask/keep, n = {n}, {st:?}, {d:?}");
                results.push((yv, gv));
            }
            assert_eq!(results[0], results[1], "gpu vs cpu, n = {n}, {st:?}");
        }
    }
    // Strided input and a second-order use of the same op: the transpose of a [7, 9] matrix.
    let x = common::random(&[7, 9], DType::F32, 40, -2.0, 2.0);
    let st = STATES[2];
    let f = |d: &Device| -> Result<Vec<f64>> {
        let xd = x.to(d)?.with_grad();
        set_rng_state(st);
        let y = xd.t()?.dropout(0.35)?;
        y.mul(&y)?.sum_all()?.backward()?;
        Ok([y.to_f64_vec()?, xd.grad().unwrap().to_f64_vec()?].concat())
    };
    assert_eq!(f(&g).unwrap(), f(&cpu).unwrap(), "dropout of a transpose");
}

#[test]
fn dropout_edge_cases() {
    let Some(g) = common::gpu("dropout_edge_cases") else { return };
    let _l = lock();
    for d in [Device::cpu(), g] {
        let x = common::random(&[5, 3], DType::F32, 50, -2.0, 2.0).to(&d).unwrap();
        let xv = x.to_vec::<f32>().unwrap();
        let before = rng_state();
        assert_eq!(x.dropout(0.0).unwrap().to_vec::<f32>().unwrap(), xv, "p = 0 is the identity");
        assert!(x.dropout(1.0).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0), "p = 1 zeroes");
        assert_eq!(rng_state(), before, "p = 0 and p = 1 draw nothing");
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = x.dropout(bad).unwrap_err();
            assert!(e.to_string().contains("dropout"), "{e}");
        }
        let ints = Tensor::zeros(&[3], &d).unwrap().to_dtype(DType::I32).unwrap();
        assert!(ints.dropout(0.5).is_err());
        assert_eq!(x.to_vec::<f32>().unwrap(), xv, "the input is untouched");
        let empty = Tensor::zeros(&[0, 4], &d).unwrap();
        assert_eq!(empty.dropout(0.5).unwrap().shape(), &[0, 4]);
    }
}

#[test]
fn fused_dropout_never_writes_its_mask() {
    let Some(g) = common::own_gpu("fused_dropout_never_writes_its_mask", |_| {}) else { return };
    let _l = lock();
    kiln::set_fusion(true);
    let ctx = g.gpu_context().unwrap().clone();
    let x = common::random(&[64, 384], DType::F32, 60, -2.0, 2.0).to(&g).unwrap().with_grad();
    let upstream = common::random(&[64, 384], DType::F32, 61, -1.0, 1.0).to(&g).unwrap();
    // The scalar operand of `add_scalar` is built (and cached) once, outside the counts.
    x.add_scalar(1.0).unwrap();
    g.sync().unwrap();
    let before = ctx.fusion_stats();
    // A producer, the dropout and a consumer: one kernel, one stored output (the mask and the
    // gelu's output are computed inline).
    let y = kiln::no_grad(|| x.gelu().unwrap().dropout(0.2).unwrap().add_scalar(1.0).unwrap());
    y.to_vec::<f32>().unwrap();
    let after = ctx.fusion_stats();
    assert_eq!(after.recorded - before.recorded, 4, "{before:?} -> {after:?}");
    assert_eq!(after.kernels - before.kernels, 1, "{before:?} -> {after:?}");
    assert_eq!(after.outputs_written - before.outputs_written, 1, "{before:?} -> {after:?}");
    // Recording for autograd: the graph keeps only what gradient rules read (gelu's input, a
    // leaf), so again one output is written: never the mask, nor gelu's or dropout's outputs.
    let before = ctx.fusion_stats();
    let y = x.gelu().unwrap().dropout(0.2).unwrap().add_scalar(1.0).unwrap();
    y.to_vec::<f32>().unwrap();
    let after = ctx.fusion_stats();
    assert_eq!(after.kernels - before.kernels, 1, "{before:?} -> {after:?}");
    assert_eq!(after.outputs_written - before.outputs_written, 1, "{before:?} -> {after:?}");
    // Backward regenerates the mask: grad·mask/keep is one fused random leaf and one product.
    let z = x.dropout(0.2).unwrap();
    g.sync().unwrap();
    let before = ctx.fusion_stats();
    z.backward_with(&upstream).unwrap();
    x.grad().unwrap().to_vec::<f32>().unwrap();
    let after = ctx.fusion_stats();
    assert_eq!(after.recorded - before.recorded, 2, "{before:?} -> {after:?}");
    assert_eq!(after.outputs_written - before.outputs_written, 1, "{before:?} -> {after:?}");
}

#[test]
fn random_tensors_are_fused_kernels_not_uploads() {
    let Some(g) = common::own_gpu("random_tensors_are_fused_kernels_not_uploads", |_| {}) else { return };
    let _l = lock();
    kiln::set_fusion(true);
    let ctx = g.gpu_context().unwrap().clone();
    g.sync().unwrap();
    let (before, submits) = (ctx.fusion_stats(), ctx.memory_stats().submits);
    // Recorded as fused leaves: nothing computed on the host, nothing uploaded or submitted yet.
    let t = Tensor::rand(&[256, 1024], &g).unwrap();
    let n = Tensor::randn(&[256, 1024], &g).unwrap();
    let after = ctx.fusion_stats();
    assert_eq!((after.recorded - before.recorded, after.kernels - before.kernels), (2, 0), "{before:?} -> {after:?}");
    assert_eq!(ctx.memory_stats().submits, submits);
    // Both written by one kernel when read.
    let s = (&t + &n).unwrap();
    let (tv, nv, sv) = (t.to_vec::<f32>().unwrap(), n.to_vec::<f32>().unwrap(), s.to_vec::<f32>().unwrap());
    assert_eq!(ctx.fusion_stats().kernels - before.kernels, 1);
    assert!(tv.iter().zip(&nv).zip(&sv).all(|((a, b), c)| a + b == *c));
}
