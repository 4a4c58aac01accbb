//! Every op on the GPU (lavapipe in CI) against the CPU oracle: random inputs, odd sizes,
//! non-contiguous and broadcast views, each supported dtype, and the edge cases.

#![allow(clippy::unwrap_used)]
// tests: a panic is the failure report
// `&[a.clone()]` reads like the `&[a.clone(), b.clone()]` calls beside it, and cloning a
// Tensor only bumps a reference count: clearer than `std::slice::from_ref(&a)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use common::{check, has_f16_else_refused, random};
use kiln::prelude::*;
use kiln::{BinaryOp, UnaryOp};

const SIZES: [usize; 4] = [1, 7, 1023, 4097];

fn gpu(test: &str) -> Option<Device> {
    common::gpu(test)
}

#[test]
fn unary_ops_match_cpu() {
    let Some(g) = gpu("unary_ops_match_cpu") else { return };
    for op in UnaryOp::ALL {
        for &n in &SIZES {
            let x = random(&[n], DType::F32, n as u64, -3.0, 3.0);
            let x = if matches!(op, UnaryOp::Log | UnaryOp::Log2 | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Powf(_)) {
                x.abs().unwrap().add_scalar(0.1).unwrap()
            } else {
                x
            };
            check(&format!("{} f32 n={n}", op.name()), &g, &[x], 2e-5, 2e-6, |t| t[0].unary(op));
        }
        // Transposed (strided) input.
        let x = random(&[33, 17], DType::F32, 5, 0.2, 2.0).t().unwrap();
        check(&format!("{} f32 transposed", op.name()), &g, &[x], 2e-5, 2e-6, |t| t[0].unary(op));
        // Integer inputs: ops defined on ints must agree; float-only ones must fail alike.
        let xi = random(&[65], DType::I32, 3, -50.0, 50.0);
        check(&format!("{} i32", op.name()), &g, &[xi], 0.0, 0.0, |t| t[0].unary(op));
    }
}

#[test]
fn unary_f16_matches_cpu() {
    let Some(g) = gpu("unary_f16_matches_cpu") else { return };
    if !has_f16_else_refused(&g) {
        return;
    }
    for op in [UnaryOp::Exp, UnaryOp::Relu, UnaryOp::Tanh, UnaryOp::GeluErf, UnaryOp::Sigmoid, UnaryOp::Neg] {
        let x = random(&[1023], DType::F16, 9, -2.0, 2.0);
        check(&format!("{} f16", op.name()), &g, &[x], 2e-3, 2e-3, |t| t[0].unary(op));
    }
}

#[test]
fn nan_and_inf_propagate() {
    let Some(g) = gpu("nan_and_inf_propagate") else { return };
    let v = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.5];
    let x = Tensor::from_vec(v, &[6], &Device::cpu()).unwrap();
    for op in [
        UnaryOp::Relu,
        UnaryOp::Abs,
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::IsNan,
        UnaryOp::IsInf,
        UnaryOp::Clamp(-1.0, 1.0),
        UnaryOp::Sign,
    ] {
        check(&format!("{} specials", op.name()), &g, &[x.clone()], 1e-6, 1e-7, |t| t[0].unary(op));
    }
    for op in [BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Add, BinaryOp::Mul, BinaryOp::Div] {
        let y = Tensor::from_vec(vec![1.0f32, f32::NAN, 2.0, 0.0, 3.0, f32::INFINITY], &[6], &Device::cpu()).unwrap();
        check(&format!("{} specials", op.name()), &g, &[x.clone(), y], 1e-6, 0.0, |t| t[0].binary(&t[1], op));
    }
}

#[test]
fn binary_ops_broadcast_and_strided() {
    let Some(g) = gpu("binary_ops_broadcast_and_strided") else { return };
    for op in BinaryOp::ALL {
        let dtype = if op.is_logical() { DType::Bool } else { DType::F32 };
        let (lo, hi) = if op == BinaryOp::Pow { (0.1, 2.0) } else { (-3.0, 3.0) };
        for &n in &SIZES {
            let a = random(&[n], DType::F32, 1 + n as u64, lo, hi).to_dtype(dtype).unwrap();
            let b = random(&[n], DType::F32, 2 + n as u64, lo, hi).to_dtype(dtype).unwrap();
            check(&format!("{} n={n}", op.name()), &g, &[a, b], 2e-5, 1e-6, |t| t[0].binary(&t[1], op));
        }
        let a = random(&[5, 1, 7], DType::F32, 7, lo, hi).to_dtype(dtype).unwrap();
        let b = random(&[3, 1], DType::F32, 8, lo, hi).to_dtype(dtype).unwrap();
        check(&format!("{} broadcast", op.name()), &g, &[a, b], 2e-5, 1e-6, |t| t[0].binary(&t[1], op));
        let a = random(&[9, 13], DType::F32, 9, lo, hi).to_dtype(dtype).unwrap().t().unwrap();
        let b = random(&[13, 9], DType::F32, 10, lo, hi).to_dtype(dtype).unwrap();
        check(&format!("{} transposed", op.name()), &g, &[a, b], 2e-5, 1e-6, |t| t[0].binary(&t[1], op));
        if !op.is_logical() {
            let a = random(&[257], DType::I32, 11, -20.0, 20.0);
            let b = random(&[257], DType::I32, 12, -6.0, 6.0);
            let b = if op == BinaryOp::Pow { b.abs().unwrap() } else { b };
            check(&format!("{} i32", op.name()), &g, &[a, b], 0.0, 0.0, |t| t[0].binary(&t[1], op));
        }
    }
}

#[test]
fn integer_division_semantics() {
    let d = Device::cpu();
    // The last three are exact or flooring with a negative operand: GLSL's `%` is undefined
    // there (on llvmpipe's GL, rem(7, -2) came out 5), so the kernels must not lean on it.
    let a = Tensor::from_vec(vec![7i32, -7, 7, -7, 5, i32::MIN, -3, 3, -6], &[9], &d).unwrap();
    let b = Tensor::from_vec(vec![2i32, 2, -2, -2, 0, -1, 3, -3, 4], &[9], &d).unwrap();
    assert_eq!(a.div(&b).unwrap().to_vec::<i32>().unwrap(), vec![3, -4, -4, 3, 0, i32::MIN, -1, -1, -2]);
    assert_eq!(a.rem(&b).unwrap().to_vec::<i32>().unwrap(), vec![1, 1, -1, -1, 0, 0, 0, 0, 2]);
    if let Some(g) = gpu("integer_division_semantics") {
        check("int div", &g, &[a.clone(), b.clone()], 0.0, 0.0, |t| t[0].div(&t[1]));
        check("int rem", &g, &[a, b], 0.0, 0.0, |t| t[0].rem(&t[1]));
    }
}

#[test]
fn scalar_ops_where_and_masked_fill() {
    let Some(g) = gpu("scalar_ops_where_and_masked_fill") else { return };
    let x = random(&[31, 5], DType::F32, 1, -2.0, 2.0);
    check("add_scalar", &g, &[x.clone()], 1e-6, 1e-7, |t| t[0].add_scalar(1.5));
    check("mul_scalar", &g, &[x.clone()], 1e-6, 1e-7, |t| &t[0] * 3.0);
    check("gt_scalar", &g, &[x.clone()], 0.0, 0.0, |t| t[0].gt_scalar(0.25));
    let c = random(&[31, 1], DType::F32, 2, -1.0, 1.0);
    let y = random(&[5], DType::F32, 3, -1.0, 1.0);
    check("where", &g, &[c.clone(), x.clone(), y], 0.0, 0.0, |t| Tensor::where_(&t[0].gt_scalar(0.0)?, &t[1], &t[2]));
    check("masked_fill", &g, &[x, c], 0.0, 0.0, |t| t[0].masked_fill(&t[1].lt_scalar(0.0)?, -9.0));
}

#[test]
fn casts_between_all_dtypes() {
    let Some(g) = gpu("casts_between_all_dtypes") else { return };
    let dtypes = [DType::F32, DType::F16, DType::I32, DType::U32, DType::Bool];
    let f16 = has_f16_else_refused(&g);
    for &from in &dtypes {
        for &to in &dtypes {
            if !f16 && (from == DType::F16 || to == DType::F16) {
                continue;
            }
            let x = random(&[129], DType::F32, 4, -300.0, 300.0);
            let x = if from == DType::U32 { x.abs().unwrap() } else { x };
            let x = x.to_dtype(from).unwrap();
            check(&format!("cast {from}->{to}"), &g, &[x], 1e-3, 0.0, |t| t[0].to_dtype(to));
        }
    }
    let specials = Tensor::from_vec(vec![f32::NAN, 1e10, -1e10, -0.7, 0.7], &[5], &Device::cpu()).unwrap();
    check("cast specials i32", &g, &[specials.clone()], 0.0, 0.0, |t| t[0].to_dtype(DType::I32));
    check("cast specials u32", &g, &[specials], 0.0, 0.0, |t| t[0].to_dtype(DType::U32));
}

#[test]
fn reductions_over_axes() {
    let Some(g) = gpu("reductions_over_axes") else { return };
    let x = random(&[6, 7, 33], DType::F32, 21, -2.0, 2.0);
    let xt = random(&[33, 7, 6], DType::F32, 22, -2.0, 2.0).permute(&[2, 1, 0]).unwrap();
    for (name, input) in [("contiguous", x), ("permuted", xt)] {
        for dims in [vec![0isize], vec![1], vec![-1], vec![0, 2], vec![0, 1, 2]] {
            for keep in [false, true] {
                let w = format!("{name} dims {dims:?} keep {keep}");
                check(&format!("sum {w}"), &g, &[input.clone()], 1e-5, 1e-5, |t| t[0].sum(&dims, keep));
                check(&format!("mean {w}"), &g, &[input.clone()], 1e-5, 1e-6, |t| t[0].mean(&dims, keep));
                check(&format!("max {w}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].max(&dims, keep));
                check(&format!("min {w}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].min(&dims, keep));
                check(&format!("var {w}"), &g, &[input.clone()], 1e-4, 1e-5, |t| t[0].var(&dims, true, keep));
                check(&format!("std {w}"), &g, &[input.clone()], 1e-4, 1e-5, |t| t[0].std(&dims, false, keep));
                check(&format!("logsumexp {w}"), &g, &[input.clone()], 1e-5, 1e-5, |t| t[0].logsumexp(&dims, keep));
                check(&format!("any {w}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].gt_scalar(1.9)?.any(&dims, keep));
                check(&format!("all {w}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].gt_scalar(-1.9)?.all(&dims, keep));
            }
        }
        for d in [0isize, 1, 2] {
            check(&format!("argmax {name} {d}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].argmax(d, false));
            check(&format!("argmin {name} {d}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].argmin(d, true));
            check(&format!("softmax {name} {d}"), &g, &[input.clone()], 1e-5, 1e-7, |t| t[0].softmax(d));
            check(&format!("log_softmax {name} {d}"), &g, &[input.clone()], 1e-5, 1e-6, |t| t[0].log_softmax(d));
            check(&format!("cumsum {name} {d}"), &g, &[input.clone()], 1e-5, 1e-5, |t| t[0].cumsum(d));
        }
    }
    let p = random(&[4, 5], DType::F32, 23, 0.5, 1.5);
    check("prod", &g, &[p], 1e-5, 0.0, |t| t[0].prod(&[1], false));
    for &n in &SIZES {
        let v = random(&[n], DType::F32, 30 + n as u64, -1.0, 1.0);
        check(&format!("sum_all n={n}"), &g, &[v], 1e-5, 1e-5, |t| t[0].sum_all());
    }
    let i = random(&[9, 10], DType::I32, 24, -100.0, 100.0);
    check("sum i32", &g, &[i.clone()], 0.0, 0.0, |t| t[0].sum(&[1], false));
    check("max i32", &g, &[i], 0.0, 0.0, |t| t[0].max(&[0], false));
}

#[test]
fn argmax_ties_pick_the_first() {
    let d = Device::cpu();
    let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 2.0, 7.0, 7.0], &[2, 3], &d).unwrap();
    assert_eq!(x.argmax(1, false).unwrap().to_vec::<u32>().unwrap(), vec![1, 1]);
    if let Some(g) = gpu("argmax_ties_pick_the_first") {
        assert_eq!(x.to(&g).unwrap().argmax(1, false).unwrap().to_vec::<u32>().unwrap(), vec![1, 1]);
    }
}

#[test]
fn matmul_cases() {
    let Some(g) = gpu("matmul_cases") else { return };
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![7, 13], vec![13, 5]),
        (vec![65, 67], vec![67, 63]),
        (vec![13], vec![13, 5]),
        (vec![7, 13], vec![13]),
        (vec![13], vec![13]),
        (vec![3, 7, 13], vec![13, 5]),
        (vec![2, 1, 7, 13], vec![3, 13, 5]),
        (vec![1, 1], vec![1, 1]),
    ];
    for (i, (sa, sb)) in cases.into_iter().enumerate() {
        let a = random(&sa, DType::F32, 40 + i as u64, -1.0, 1.0);
        let b = random(&sb, DType::F32, 50 + i as u64, -1.0, 1.0);
        check(&format!("matmul {sa:?}·{sb:?}"), &g, &[a, b], 1e-4, 1e-5, |t| t[0].matmul(&t[1]));
    }
    let a = random(&[13, 7], DType::F32, 60, -1.0, 1.0);
    let b = random(&[5, 13], DType::F32, 61, -1.0, 1.0);
    check("matmul transposed operands", &g, &[a, b], 1e-4, 1e-5, |t| t[0].t()?.matmul(&t[1].t()?));
    let a = random(&[8, 9], DType::I32, 62, -5.0, 5.0);
    let b = random(&[9, 4], DType::I32, 63, -5.0, 5.0);
    check("matmul i32", &g, &[a, b], 0.0, 0.0, |t| t[0].matmul(&t[1]));
}

#[test]
fn indexing_and_assembly() {
    let Some(g) = gpu("indexing_and_assembly") else { return };
    let cpu = Device::cpu();
    let x = random(&[5, 6, 7], DType::F32, 70, -1.0, 1.0);
    let ids = Tensor::from_vec(vec![4u32, 0, 2, 2], &[4], &cpu).unwrap();
    for d in 0..3isize {
        check(&format!("index_select {d}"), &g, &[x.clone(), ids.clone()], 0.0, 0.0, |t| t[0].index_select(d, &t[1]));
    }
    let gi = random(&[5, 6, 3], DType::U32, 71, 0.0, 7.0);
    check("gather", &g, &[x.clone(), gi.clone()], 0.0, 0.0, |t| t[0].gather(2, &t[1]));
    let src = random(&[5, 6, 3], DType::F32, 72, -1.0, 1.0);
    check("scatter_add", &g, &[x.clone(), gi, src], 1e-6, 1e-6, |t| t[0].scatter_add(2, &t[1], &t[2]));
    let labels = Tensor::from_vec(vec![3u32, 0, 9], &[3], &cpu).unwrap();
    check("one_hot", &g, &[labels], 0.0, 0.0, |t| Tensor::one_hot(&t[0], 10));
    let y = random(&[5, 2, 7], DType::F32, 73, -1.0, 1.0);
    check("cat", &g, &[x.clone(), y], 0.0, 0.0, |t| Tensor::cat(&[t[0].clone(), t[1].clone()], 1));
    check("stack", &g, &[x.clone(), x.clone()], 0.0, 0.0, |t| Tensor::stack(&[t[0].clone(), t[1].clone()], 0));
    check("split", &g, &[x.clone()], 0.0, 0.0, |t| t[0].split(4, 1).map(|v| v[1].clone()));
    check("chunk", &g, &[x.clone()], 0.0, 0.0, |t| t[0].chunk(3, 2).map(|v| v[2].contiguous()).and_then(|r| r));
    check("repeat", &g, &[x.clone()], 0.0, 0.0, |t| t[0].narrow(0, 0, 2)?.repeat(&[2, 1, 1, 3]));
    check("flip", &g, &[x.clone()], 0.0, 0.0, |t| t[0].flip(&[0, 2]));
    check("pad", &g, &[x.clone()], 0.0, 0.0, |t| t[0].pad(&[(1, 2), (0, 3)], -1.0));
    check("tril", &g, &[x.clone()], 0.0, 0.0, |t| t[0].tril(0));
    check("triu", &g, &[x.clone()], 0.0, 0.0, |t| t[0].triu(1));
    check("topk values", &g, &[x.clone()], 0.0, 0.0, |t| t[0].topk(3, true).map(|p| p.0));
    check("topk indices", &g, &[x.clone()], 0.0, 0.0, |t| t[0].topk(2, false).map(|p| p.1));
    check("slice step", &g, &[x.clone()], 0.0, 0.0, |t| t[0].slice(2, 1, 7, 2)?.contiguous());
    check("expand contiguous", &g, &[x.narrow(0, 0, 1).unwrap()], 0.0, 0.0, |t| t[0].expand(&[3, 6, 7])?.contiguous());
}

#[test]
fn conv_and_pool() {
    let Some(g) = gpu("conv_and_pool") else { return };
    let x = random(&[2, 3, 9, 8], DType::F32, 80, -1.0, 1.0);
    let w = random(&[4, 3, 3, 2], DType::F32, 81, -1.0, 1.0);
    let b = random(&[4], DType::F32, 82, -1.0, 1.0);
    for (stride, padding, dilation) in [((1, 1), (0, 0), (1, 1)), ((2, 1), (1, 1), (1, 1)), ((1, 2), (2, 1), (2, 2))] {
        let o = Conv2dOptions { stride, padding, dilation, groups: 1 };
        check(&format!("conv2d {o:?}"), &g, &[x.clone(), w.clone(), b.clone()], 1e-4, 1e-5, |t| {
            t[0].conv2d(&t[1], Some(&t[2]), o)
        });
    }
    let x6 = random(&[2, 6, 7, 7], DType::F32, 83, -1.0, 1.0);
    let wg = random(&[4, 3, 3, 3], DType::F32, 84, -1.0, 1.0);
    let o = Conv2dOptions { groups: 2, padding: (1, 1), ..Default::default() };
    check("conv2d groups", &g, &[x6, wg], 1e-4, 1e-5, |t| t[0].conv2d(&t[1], None, o));
    let x1 = random(&[2, 3, 17], DType::F32, 85, -1.0, 1.0);
    let w1 = random(&[5, 3, 4], DType::F32, 86, -1.0, 1.0);
    check("conv1d", &g, &[x1, w1], 1e-4, 1e-5, |t| t[0].conv1d(&t[1], None, 2, 1, 1, 1));
    check("max_pool2d", &g, &[x.clone()], 0.0, 0.0, |t| t[0].max_pool2d((2, 2), (2, 2), (0, 0)));
    check("max_pool2d pad", &g, &[x.clone()], 0.0, 0.0, |t| t[0].max_pool2d((3, 3), (2, 2), (1, 1)));
    check("avg_pool2d", &g, &[x.clone()], 1e-5, 1e-6, |t| t[0].avg_pool2d((3, 2), (1, 2), (1, 1)));
    check("adaptive_avg_pool2d", &g, &[x.clone()], 1e-5, 1e-6, |t| t[0].adaptive_avg_pool2d((4, 3)));
    check("conv2d on permuted input", &g, &[x.permute(&[0, 1, 3, 2]).unwrap(), w], 1e-4, 1e-5, |t| {
        t[0].conv2d(&t[1], None, Conv2dOptions::default())
    });
}

#[test]
fn creation_is_identical_across_devices() {
    let Some(g) = gpu("creation_is_identical_across_devices") else { return };
    let cpu = Device::cpu();
    // Normals agree to a few f32 ulps (each device's own log and sin/cos); tests/random.rs
    // checks every random op, and uniforms bit for bit.
    kiln::manual_seed(7);
    let a = Tensor::randn(&[1023], &cpu).unwrap().to_f64_vec().unwrap();
    kiln::manual_seed(7);
    let b = Tensor::randn(&[1023], &g).unwrap().to_f64_vec().unwrap();
    common::assert_close("randn", &b, &a, 0.0, 1e-5);
    assert_eq!(
        Tensor::eye(3, &g).unwrap().to_vec::<f32>().unwrap(),
        Tensor::eye(3, &cpu).unwrap().to_vec::<f32>().unwrap()
    );
    assert_eq!(Tensor::linspace(0.0, 1.0, 5, &g).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(Tensor::full_dtype(&[3], 4.0, DType::I32, &g).unwrap().to_vec::<i32>().unwrap(), vec![4, 4, 4]);
    assert_eq!(Tensor::arange(1.0, 2.0, 0.25, &g).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.25, 1.5, 1.75]);
}

#[test]
fn empty_and_scalar_tensors() {
    let Some(g) = gpu("empty_and_scalar_tensors") else { return };
    let e = Tensor::zeros(&[0, 3], &Device::cpu()).unwrap();
    check("empty exp", &g, &[e.clone()], 0.0, 0.0, |t| t[0].exp());
    check("empty sum", &g, &[e.clone()], 0.0, 0.0, |t| t[0].sum(&[0], false));
    check("empty matmul", &g, &[e.clone(), Tensor::zeros(&[3, 2], &Device::cpu()).unwrap()], 0.0, 0.0, |t| {
        t[0].matmul(&t[1])
    });
    let s = Tensor::scalar(2.5, &Device::cpu()).unwrap();
    check("scalar sqrt", &g, &[s.clone()], 1e-6, 0.0, |t| t[0].sqrt());
    check("scalar + vector", &g, &[s, random(&[4], DType::F32, 1, 0.0, 1.0)], 1e-6, 0.0, |t| &t[0] + &t[1]);
    assert!(e.to(&g).unwrap().max(&[0], false).is_err());
}

#[test]
fn async_readback_and_sync() {
    let Some(g) = gpu("async_readback_and_sync") else { return };
    let x = Tensor::arange(0.0, 10.0, 1.0, &g).unwrap().mul_scalar(2.0).unwrap();
    let v = pollster_block(x.to_vec_async::<f32>()).unwrap();
    assert_eq!(v, (0..10).map(|i| 2.0 * i as f32).collect::<Vec<_>>());
    g.sync().unwrap();
}

fn pollster_block<F: std::future::Future>(f: F) -> F::Output {
    // A minimal executor: the readback future is woken by the helper thread.
    use std::sync::{Arc, Condvar, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    struct Signal(Mutex<bool>, Condvar);
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_one();
        }
    }
    let signal = Arc::new(Signal(Mutex::new(false), Condvar::new()));
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        let mut woken = signal.0.lock().unwrap();
        while !*woken {
            woken = signal.1.wait(woken).unwrap();
        }
        *woken = false;
    }
}

/// Activations composed from elementwise ops: odd sizes, a transposed and a broadcast input,
/// and i32 inputs refused alike.
#[test]
fn activations_match_cpu() {
    let Some(g) = gpu("activations_match_cpu") else { return };
    type Act = fn(&Tensor) -> Result<Tensor>;
    let acts: [(&str, Act); 12] = [
        ("softplus_with", |x| x.softplus_with(2.0, 3.0)),
        ("softplus negative beta", |x| x.softplus_with(-0.7, 20.0)),
        ("hardtanh", |x| x.hardtanh(-1.5, 0.5)),
        ("relu6", |x| x.relu6()),
        ("hardsigmoid", |x| x.hardsigmoid()),
        ("hardswish", |x| x.hardswish()),
        ("selu", |x| x.selu()),
        ("celu", |x| x.celu(0.8)),
        ("logsigmoid", |x| x.logsigmoid()),
        ("softsign", |x| x.softsign()),
        ("glu", |x| x.glu(0)),
        ("prelu", |x| x.prelu(&Tensor::full_dtype(&[1], 0.3, x.dtype(), x.device())?)),
    ];
    for (name, f) in acts {
        for &n in &SIZES {
            // glu halves dim 0: double the odd sizes.
            let x = random(&[2 * n], DType::F32, n as u64, -9.0, 9.0);
            check(&format!("{name} n={}", 2 * n), &g, &[x], 2e-5, 2e-6, |t| f(&t[0]));
        }
        let xt = random(&[33, 18], DType::F32, 5, -9.0, 9.0).t().unwrap();
        check(&format!("{name} transposed"), &g, &[xt], 2e-5, 2e-6, |t| f(&t[0]));
        let xb = random(&[1, 7], DType::F32, 6, -9.0, 9.0).expand(&[6, 7]).unwrap();
        check(&format!("{name} broadcast"), &g, &[xb], 2e-5, 2e-6, |t| f(&t[0]));
        let xi = random(&[8], DType::I32, 3, -5.0, 5.0);
        check(&format!("{name} i32"), &g, &[xi], 0.0, 0.0, |t| f(&t[0]));
    }
    let x = random(&[3, 5, 7], DType::F32, 7, -2.0, 2.0);
    let w = random(&[5], DType::F32, 8, -1.0, 1.0);
    check("prelu per channel", &g, &[x.clone(), w.clone()], 1e-6, 1e-7, |t| t[0].prelu(&t[1]));
    check(
        "prelu per channel, permuted",
        &g,
        &[x.permute(&[0, 2, 1]).unwrap().contiguous().unwrap().permute(&[0, 2, 1]).unwrap(), w],
        1e-6,
        1e-7,
        |t| t[0].prelu(&t[1]),
    );
    check("glu dim 1", &g, &[random(&[3, 8, 5], DType::F32, 9, -3.0, 3.0)], 2e-5, 2e-6, |t| t[0].glu(1));
}

/// The gradient of `Σ max_pool2d(x) ⊙ w` (random `w`) on the GPU equals the CPU's: each
/// output's weight reaches its window's max, summed where windows overlap.
fn max_pool_grad_matches_cpu(what: &str, g: &Device, x: &Tensor, o: MaxPool2dOptions) {
    let grad = |x: &Tensor| {
        let x = x.detach().with_grad();
        let y = x.max_pool2d_opts(o).unwrap();
        let w = random(y.shape(), DType::F32, 93, -1.0, 1.0).to(x.device()).unwrap();
        (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        x.grad().unwrap().to_f64_vec().unwrap()
    };
    common::assert_close(what, &grad(&x.to(g).unwrap()), &grad(x), 1e-6, 1e-6);
}

#[test]
fn pools_and_conv_transpose_match_cpu() {
    let Some(g) = gpu("pools_and_conv_transpose_match_cpu") else { return };
    let x = random(&[2, 3, 9, 8], DType::F32, 90, -1.0, 1.0);
    let xp = random(&[2, 3, 8, 9], DType::F32, 91, -1.0, 1.0).permute(&[0, 1, 3, 2]).unwrap();
    let maxes = [
        MaxPool2dOptions { kernel: (3, 3), stride: (2, 2), padding: (1, 1), dilation: (1, 1), ceil_mode: true },
        MaxPool2dOptions { kernel: (2, 3), stride: (1, 2), padding: (1, 1), dilation: (2, 1), ceil_mode: false },
        MaxPool2dOptions { kernel: (2, 2), stride: (3, 3), padding: (1, 0), dilation: (2, 3), ceil_mode: true },
    ];
    for (i, o) in maxes.into_iter().enumerate() {
        for (name, input) in [("contiguous", &x), ("permuted", &xp)] {
            check(&format!("max_pool2d {i} {name}"), &g, &[input.clone()], 0.0, 0.0, |t| t[0].max_pool2d_opts(o));
            check(&format!("max_pool2d indices {i} {name}"), &g, &[input.clone()], 0.0, 0.0, |t| {
                t[0].max_pool2d_with_indices(o).map(|p| p.1)
            });
            max_pool_grad_matches_cpu(&format!("max_pool2d gradient {i} {name}"), &g, input, o);
        }
    }
    // Overlapping windows (stride 1) sum several gradients into one pixel; odd sizes.
    let o = MaxPool2dOptions { stride: (1, 1), ..MaxPool2dOptions::new((3, 3)) };
    for shape in [[1, 1, 3, 3], [1, 7, 5, 9], [2, 3, 33, 31]] {
        let input = random(&shape, DType::F32, 92, -1.0, 1.0);
        max_pool_grad_matches_cpu(&format!("max_pool2d gradient overlapping {shape:?}"), &g, &input, o);
    }
    let avgs = [
        AvgPool2dOptions {
            ceil_mode: true,
            count_include_pad: false,
            padding: (1, 1),
            stride: (2, 2),
            ..AvgPool2dOptions::new((3, 3))
        },
        AvgPool2dOptions { ceil_mode: true, padding: (1, 0), stride: (2, 3), ..AvgPool2dOptions::new((3, 2)) },
        AvgPool2dOptions { divisor_override: Some(7), ..AvgPool2dOptions::new((2, 3)) },
    ];
    for (i, o) in avgs.into_iter().enumerate() {
        check(&format!("avg_pool2d {i}"), &g, &[xp.clone()], 1e-5, 1e-6, |t| t[0].avg_pool2d_opts(o));
    }
    for (out_h, out_w) in [(4, 3), (5, 7), (1, 1), (9, 8)] {
        check(&format!("adaptive_max_pool2d {out_h}x{out_w}"), &g, &[xp.clone()], 0.0, 0.0, |t| {
            t[0].adaptive_max_pool2d((out_h, out_w))
        });
        check(&format!("adaptive_max_pool2d indices {out_h}x{out_w}"), &g, &[x.clone()], 0.0, 0.0, |t| {
            t[0].adaptive_max_pool2d_with_indices((out_h, out_w)).map(|p| p.1)
        });
    }
    let m1 = MaxPool1dOptions { kernel: 3, stride: 2, padding: 1, dilation: 2, ceil_mode: true };
    let a1 = AvgPool1dOptions { kernel: 4, stride: 3, padding: 2, ceil_mode: true, count_include_pad: false };
    for &n in &SIZES {
        let x1 = random(&[1, 2, n], DType::F32, 92 + n as u64, -1.0, 1.0);
        // A window of span 5 needs 3 elements besides the padding: n = 1 must fail alike.
        check(&format!("max_pool1d n={n}"), &g, &[x1.clone()], 0.0, 0.0, |t| t[0].max_pool1d(m1));
        check(&format!("max_pool1d indices n={n}"), &g, &[x1.clone()], 0.0, 0.0, |t| {
            t[0].max_pool1d_with_indices(m1).map(|p| p.1)
        });
        check(&format!("avg_pool1d n={n}"), &g, &[x1.clone()], 1e-5, 1e-6, |t| t[0].avg_pool1d(a1));
        check(&format!("adaptive_max_pool1d n={n}"), &g, &[x1.clone()], 0.0, 0.0, |t| t[0].adaptive_max_pool1d(3));
        check(&format!("adaptive_avg_pool1d n={n}"), &g, &[x1], 1e-5, 1e-6, |t| t[0].adaptive_avg_pool1d(3));
    }
    let xc = random(&[2, 4, 5, 4], DType::F32, 93, -1.0, 1.0);
    let wc = random(&[4, 3, 3, 2], DType::F32, 94, -1.0, 1.0);
    let bc = random(&[6], DType::F32, 95, -1.0, 1.0);
    let cts = [
        ConvTranspose2dOptions { stride: (2, 1), padding: (1, 0), output_padding: (1, 0), dilation: (2, 2), groups: 2 },
        ConvTranspose2dOptions { stride: (1, 3), padding: (0, 2), output_padding: (1, 2), dilation: (2, 1), groups: 2 },
    ];
    for (i, o) in cts.into_iter().enumerate() {
        check(&format!("conv_transpose2d {i}"), &g, &[xc.clone(), wc.clone(), bc.clone()], 1e-4, 1e-5, |t| {
            t[0].conv_transpose2d(&t[1], Some(&t[2]), o)
        });
    }
    let w1 = random(&[4, 6, 3, 2], DType::F32, 96, -1.0, 1.0);
    let xt = random(&[2, 4, 4, 5], DType::F32, 97, -1.0, 1.0).permute(&[0, 1, 3, 2]).unwrap();
    check("conv_transpose2d permuted input", &g, &[xt, w1], 1e-4, 1e-5, |t| {
        t[0].conv_transpose2d(&t[1], None, ConvTranspose2dOptions::default())
    });
    let x1 = random(&[2, 4, 7], DType::F32, 98, -1.0, 1.0);
    let w1 = random(&[4, 1, 3], DType::F32, 99, -1.0, 1.0);
    let o = ConvTranspose1dOptions { stride: 3, padding: 1, output_padding: 2, dilation: 1, groups: 2 };
    check("conv_transpose1d", &g, &[x1, w1], 1e-4, 1e-5, |t| t[0].conv_transpose1d(&t[1], None, o));
}
