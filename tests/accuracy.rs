//! Elementwise accuracy on the GPU against f64 truth, where drivers are weakest: `log1p`,
//! `expm1`, `tanh` and `softplus` near 0 (relative error ≤ 1e-6 for |x| < 1e-3; Vulkan only
//! bounds log near 1 absolutely, so formulas through log/exp of 1 + x lose every digit on some
//! adapters), and `sin`/`cos` of large arguments (up to f32's largest: drivers reduce with a
//! short π). Both as single kernels and fused into a chain (the fusion codegen emits the same
//! WGSL helpers; each path is checked). Fusion is a process-wide switch: this binary is its own.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln::UnaryOp;
use kiln::prelude::*;

/// ±10^e for e in [-12, -3] in steps of 1/8, and 0.
fn near_zero() -> Vec<f32> {
    let mut v = vec![0.0f32];
    for i in 0..=72 {
        let x = 10f64.powf(-12.0 + i as f64 / 8.0) as f32;
        v.extend([x, -x]);
    }
    v
}

/// `op` of `xs` on the GPU, unfused (`fused == false`) or at the end of a fused chain whose
/// first steps are exact (two negations).
fn on_gpu(g: &Device, xs: &[f32], op: UnaryOp, fused: bool) -> Vec<f64> {
    kiln::set_fusion(fused);
    let x = Tensor::from_vec(xs.to_vec(), &[xs.len()], g).unwrap();
    let x = if fused { x.neg().unwrap().neg().unwrap() } else { x };
    let y = x.unary(op).unwrap().to_f64_vec().unwrap();
    kiln::set_fusion(true);
    y
}

/// Every `|gpu − truth| ≤ rtol·|truth| + atol`, with the worst case in the message.
fn assert_accurate(what: &str, xs: &[f32], got: &[f64], truth: impl Fn(f64) -> f64, rtol: f64, atol: f64) {
    for (&x, &y) in xs.iter().zip(got) {
        let t = truth(x as f64);
        let t32 = t as f32 as f64;
        let ok = (y - t).abs() <= rtol * t.abs() + atol || y == t32;
        assert!(ok, "{what}({x:e}): gpu {y:e}, f64 truth {t:e}: relative error {:e}", ((y - t) / t).abs());
    }
}

#[test]
fn log1p_expm1_tanh_softplus_are_accurate_near_zero() {
    let Some(g) = common::gpu("log1p_expm1_tanh_softplus_are_accurate_near_zero") else { return };
    let xs = near_zero();
    let softplus = |x: f64| x.exp().ln_1p();
    let cases: [(UnaryOp, &dyn Fn(f64) -> f64); 4] = [
        (UnaryOp::Log1p, &f64::ln_1p),
        (UnaryOp::Expm1, &f64::exp_m1),
        (UnaryOp::Tanh, &f64::tanh),
        (UnaryOp::Softplus, &softplus),
    ];
    for (op, truth) in cases {
        for fused in [false, true] {
            let what = format!("{}{}", op.name(), if fused { " fused" } else { "" });
            assert_accurate(&what, &xs, &on_gpu(&g, &xs, op, fused), truth, 1e-6, 0.0);
        }
    }
    // Past the series' ranges the formulas change: still accurate (f32 rounding of the
    // inputs aside, 1e-6 relative), the boundaries included.
    let mid: Vec<f32> = common::values(2001, 7, -3.0, 3.0)
        .into_iter()
        .map(|x| x as f32)
        .chain([-0.5, 0.5, 1.0, -1.0, 20.0, 21.0])
        .collect();
    for (op, truth) in cases {
        let xs: Vec<f32> =
            if matches!(op, UnaryOp::Log1p) { mid.iter().map(|x| x.abs() - 0.99).collect() } else { mid.clone() };
        for fused in [false, true] {
            let what = format!("{} mid{}", op.name(), if fused { " fused" } else { "" });
            assert_accurate(&what, &xs, &on_gpu(&g, &xs, op, fused), truth, 2e-6, 1e-7);
        }
    }
}

#[test]
fn sin_and_cos_of_large_arguments() {
    let Some(g) = common::gpu("sin_and_cos_of_large_arguments") else { return };
    // i32::MAX (as f32: 2^31, what fuzz_elementwise found on an H100), its neighbours, exact
    // multiples-of-π neighbours, and random magnitudes up to 2^31 and up to f32's largest.
    let mut xs: Vec<f32> =
        vec![2147483647.0, 2147483520.0, -2147483647.0, 16777215.0, 1e9, 355.0, 103993.0, 3.4e38, -3.4e38, 1e-30, 0.0];
    for (i, m) in common::values(4000, 11, 0.0, 1.0).into_iter().enumerate() {
        let top = if i % 2 == 0 { 31.0 } else { 127.0 };
        let x = 2f64.powf(m * top) as f32;
        xs.push(if i % 3 == 0 { -x } else { x });
    }
    for (op, truth) in [(UnaryOp::Sin, f64::sin as fn(f64) -> f64), (UnaryOp::Cos, f64::cos)] {
        for fused in [false, true] {
            let what = format!("{}{}", op.name(), if fused { " fused" } else { "" });
            let got = on_gpu(&g, &xs, op, fused);
            assert_accurate(&what, &xs, &got, truth, 0.0, 5e-7);
            // And the CPU op agrees (fuzz_elementwise's check).
            let cpu = Tensor::from_vec(xs.clone(), &[xs.len()], &Device::cpu())
                .unwrap()
                .unary(op)
                .unwrap()
                .to_f64_vec()
                .unwrap();
            common::assert_close(&what, &got, &cpu, 1e-4, 1e-5);
        }
    }
    // NaN and ±inf give NaN.
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    for op in [UnaryOp::Sin, UnaryOp::Cos] {
        assert!(on_gpu(&g, &specials, op, false).iter().all(|y| y.is_nan()), "{} of NaN/inf", op.name());
    }
}
