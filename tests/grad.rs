//! Every differentiable op: analytic gradients against central differences in f64 on the CPU,
//! and GPU gradients against CPU gradients in f32. One line per op.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, values};
use kiln::prelude::*;

type Op = fn(&[Tensor]) -> Result<Tensor>;

/// Checks d(sum(f(x)·w))/dx for every input against central differences (f64, CPU).
fn gradcheck(name: &str, shapes: &[&[usize]], lo: f64, hi: f64, f: Op) {
    let cpu = Device::cpu();
    let host: Vec<Vec<f64>> =
        shapes.iter().enumerate().map(|(i, s)| values(s.iter().product(), 100 + i as u64, lo, hi)).collect();
    let make = |vals: &[Vec<f64>]| -> Vec<Tensor> {
        vals.iter().zip(shapes).map(|(v, s)| Tensor::from_vec(v.clone(), s, &cpu).unwrap()).collect()
    };
    let leaves: Vec<Tensor> = make(&host).into_iter().map(|t| t.with_grad()).collect();
    let out = f(&leaves).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let w = Tensor::from_vec(values(out.numel(), 7, -1.0, 1.0), out.shape(), &cpu).unwrap();
    let objective = |o: &Tensor| o.mul(&w).unwrap().sum_all().unwrap().item().unwrap();
    out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let eps = 1e-6;
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = match leaf.grad() {
            Some(g) => g.to_f64_vec().unwrap(),
            None => vec![0.0; leaf.numel()],
        };
        let mut numeric = Vec::with_capacity(leaf.numel());
        for j in 0..leaf.numel() {
            let mut plus = host.clone();
            plus[i][j] += eps;
            let mut minus = host.clone();
            minus[i][j] -= eps;
            let fp = objective(&f(&make(&plus)).unwrap());
            let fm = objective(&f(&make(&minus)).unwrap());
            numeric.push((fp - fm) / (2.0 * eps));
        }
        assert_close(&format!("{name}: d/dinput{i}"), &analytic, &numeric, 1e-5, 1e-6);
    }
}

#[test]
fn unary_gradients() {
    gradcheck("neg", &[&[3, 4]], -2.0, 2.0, |t| t[0].neg());
    gradcheck("abs", &[&[3, 4]], 0.1, 2.0, |t| t[0].abs());
    gradcheck("exp", &[&[3, 4]], -2.0, 2.0, |t| t[0].exp());
    gradcheck("exp2", &[&[5]], -2.0, 2.0, |t| t[0].exp2());
    gradcheck("log", &[&[5]], 0.2, 3.0, |t| t[0].log());
    gradcheck("log2", &[&[5]], 0.2, 3.0, |t| t[0].log2());
    gradcheck("log1p", &[&[5]], -0.5, 3.0, |t| t[0].log1p());
    gradcheck("expm1", &[&[5]], -2.0, 2.0, |t| t[0].expm1());
    gradcheck("sqrt", &[&[5]], 0.2, 3.0, |t| t[0].sqrt());
    gradcheck("rsqrt", &[&[5]], 0.2, 3.0, |t| t[0].rsqrt());
    gradcheck("recip", &[&[5]], 0.2, 3.0, |t| t[0].recip());
    gradcheck("square", &[&[5]], -2.0, 2.0, |t| t[0].square());
    gradcheck("sin", &[&[5]], -2.0, 2.0, |t| t[0].sin());
    gradcheck("cos", &[&[5]], -2.0, 2.0, |t| t[0].cos());
    gradcheck("tanh", &[&[5]], -2.0, 2.0, |t| t[0].tanh());
    gradcheck("sigmoid", &[&[5]], -3.0, 3.0, |t| t[0].sigmoid());
    gradcheck("relu", &[&[7]], -2.0, 2.0, |t| t[0].relu());
    gradcheck("leaky_relu", &[&[7]], -2.0, 2.0, |t| t[0].leaky_relu(0.1));
    gradcheck("elu", &[&[7]], -2.0, 2.0, |t| t[0].elu(1.3));
    gradcheck("gelu", &[&[7]], -3.0, 3.0, |t| t[0].gelu());
    // GELU's backward op, and its own gradient (GELU's second derivative), beyond erf's |z| < 2 too.
    gradcheck("gelu", &[&[9]], -6.0, 6.0, |t| t[0].gelu());
    gradcheck("gelu_grad", &[&[9]], -6.0, 6.0, |t| t[0].unary(kiln::UnaryOp::GeluErfGrad));
    gradcheck("gelu_tanh", &[&[7]], -3.0, 3.0, |t| t[0].gelu_tanh());
    gradcheck("silu", &[&[7]], -3.0, 3.0, |t| t[0].silu());
    gradcheck("softplus", &[&[7]], -3.0, 3.0, |t| t[0].softplus());
    gradcheck("mish", &[&[7]], -3.0, 3.0, |t| t[0].mish());
    gradcheck("clamp", &[&[7]], -2.0, 2.0, |t| t[0].clamp(-0.5, 0.7));
    gradcheck("powf", &[&[7]], 0.3, 2.0, |t| t[0].powf(2.7));
}

#[test]
fn dropout_gradient_regenerates_its_mask() {
    // The same generator state before every evaluation, so the numeric differences see the
    // mask the analytic gradient regenerates from the op's Philox key.
    gradcheck("dropout", &[&[5, 7]], -2.0, 2.0, |t| {
        kiln::set_rng_state(kiln::RngState { seed: 9, offset: 3 });
        t[0].dropout(0.3)
    });
    gradcheck("dropout of a transpose, twice", &[&[4, 6]], -2.0, 2.0, |t| {
        kiln::set_rng_state(kiln::RngState { seed: 10, offset: 1 << 40 });
        t[0].t()?.dropout(0.6)?.dropout(0.2)
    });
}

#[test]
fn binary_gradients_with_broadcast() {
    gradcheck("add", &[&[3, 4], &[4]], -2.0, 2.0, |t| &t[0] + &t[1]);
    gradcheck("sub", &[&[3, 1], &[1, 4]], -2.0, 2.0, |t| &t[0] - &t[1]);
    gradcheck("mul", &[&[2, 3, 4], &[3, 1]], -2.0, 2.0, |t| &t[0] * &t[1]);
    gradcheck("div", &[&[3, 4], &[4]], 0.5, 2.0, |t| &t[0] / &t[1]);
    gradcheck("pow", &[&[3, 4], &[3, 4]], 0.5, 2.0, |t| t[0].pow(&t[1]));
    gradcheck("maximum", &[&[3, 4], &[3, 4]], -2.0, 2.0, |t| t[0].maximum(&t[1]));
    gradcheck("minimum", &[&[3, 4], &[4]], -2.0, 2.0, |t| t[0].minimum(&t[1]));
    gradcheck("rem", &[&[6], &[6]], 0.5, 3.0, |t| t[0].rem(&t[1]));
    gradcheck("scalar ops", &[&[5]], 0.5, 2.0, |t| {
        t[0].mul_scalar(3.0)?.add_scalar(1.0)?.div_scalar(2.0)?.sub_scalar(0.5)
    });
    gradcheck("where", &[&[3, 4], &[3, 4], &[4]], -2.0, 2.0, |t| Tensor::where_(&t[0].gt_scalar(0.0)?, &t[1], &t[2]));
    gradcheck("masked_fill", &[&[3, 4]], -2.0, 2.0, |t| t[0].masked_fill(&t[0].lt_scalar(0.0)?, 1.0));
}

#[test]
fn reduction_gradients() {
    gradcheck("sum", &[&[3, 4, 5]], -2.0, 2.0, |t| t[0].sum(&[0, 2], false));
    gradcheck("sum keepdim", &[&[3, 4]], -2.0, 2.0, |t| t[0].sum(&[1], true));
    gradcheck("mean", &[&[3, 4, 5]], -2.0, 2.0, |t| t[0].mean(&[1], false));
    gradcheck("max", &[&[3, 4, 5]], -2.0, 2.0, |t| t[0].max(&[2], false));
    gradcheck("min", &[&[3, 4]], -2.0, 2.0, |t| t[0].min(&[0, 1], true));
    gradcheck("prod", &[&[3, 4]], 0.5, 1.5, |t| t[0].prod(&[1], false));
    gradcheck("var", &[&[3, 5]], -2.0, 2.0, |t| t[0].var(&[1], true, false));
    gradcheck("std", &[&[3, 5]], -2.0, 2.0, |t| t[0].std(&[0], false, true));
    gradcheck("logsumexp", &[&[3, 5]], -2.0, 2.0, |t| t[0].logsumexp(&[1], false));
    gradcheck("softmax", &[&[3, 5]], -2.0, 2.0, |t| t[0].softmax(-1));
    gradcheck("softmax dim 0", &[&[3, 5]], -2.0, 2.0, |t| t[0].softmax(0));
    gradcheck("log_softmax", &[&[3, 5]], -2.0, 2.0, |t| t[0].log_softmax(1));
    gradcheck("cumsum", &[&[3, 5]], -2.0, 2.0, |t| t[0].cumsum(1));
}

#[test]
fn view_and_index_gradients() {
    gradcheck("transpose view", &[&[3, 4]], -2.0, 2.0, |t| t[0].t()?.mul_scalar(2.0));
    gradcheck("permute+reshape", &[&[2, 3, 4]], -2.0, 2.0, |t| t[0].permute(&[2, 0, 1])?.reshape(&[4, 6]));
    gradcheck("narrow", &[&[5, 4]], -2.0, 2.0, |t| t[0].narrow(0, 1, 3));
    gradcheck("slice step", &[&[7, 3]], -2.0, 2.0, |t| t[0].slice(0, 1, 7, 3));
    gradcheck("expand", &[&[3, 1]], -2.0, 2.0, |t| t[0].expand(&[2, 3, 4]));
    gradcheck("squeeze/unsqueeze", &[&[3, 1]], -2.0, 2.0, |t| t[0].squeeze(1)?.unsqueeze(0));
    gradcheck("index_select", &[&[5, 3]], -2.0, 2.0, |t| {
        t[0].index_select(0, &Tensor::from_vec(vec![4u32, 0, 4], &[3], t[0].device())?)
    });
    gradcheck("gather", &[&[3, 4]], -2.0, 2.0, |t| {
        t[0].gather(1, &Tensor::from_vec(vec![0u32, 3, 3, 1, 2, 0], &[3, 2], t[0].device())?)
    });
    gradcheck("scatter_add", &[&[3, 4], &[3, 2]], -2.0, 2.0, |t| {
        t[0].scatter_add(1, &Tensor::from_vec(vec![0u32, 0, 3, 1, 2, 2], &[3, 2], t[0].device())?, &t[1])
    });
    gradcheck("cat", &[&[2, 3], &[1, 3]], -2.0, 2.0, |t| Tensor::cat(&[t[0].clone(), t[1].clone()], 0));
    gradcheck("stack", &[&[2, 3], &[2, 3]], -2.0, 2.0, |t| Tensor::stack(&[t[0].clone(), t[1].clone()], 1));
    gradcheck("split", &[&[5, 3]], -2.0, 2.0, |t| t[0].split(2, 0).map(|v| v[2].clone()));
    gradcheck("repeat", &[&[2, 3]], -2.0, 2.0, |t| t[0].repeat(&[2, 1, 2]));
    gradcheck("flip", &[&[2, 3]], -2.0, 2.0, |t| t[0].flip(&[1]));
    gradcheck("pad", &[&[2, 3]], -2.0, 2.0, |t| t[0].pad(&[(1, 2)], 0.5));
    gradcheck("tril", &[&[3, 3]], -2.0, 2.0, |t| t[0].tril(0));
    gradcheck("topk", &[&[3, 5]], -2.0, 2.0, |t| t[0].topk(2, true).map(|p| p.0));
    gradcheck("contiguous", &[&[3, 4]], -2.0, 2.0, |t| t[0].t()?.contiguous());
}

#[test]
fn matmul_and_conv_gradients() {
    gradcheck("matmul 2d", &[&[3, 4], &[4, 2]], -1.0, 1.0, |t| t[0].matmul(&t[1]));
    gradcheck("matmul batched broadcast", &[&[2, 3, 4], &[4, 2]], -1.0, 1.0, |t| t[0].matmul(&t[1]));
    gradcheck("matmul vector", &[&[4], &[4, 3]], -1.0, 1.0, |t| t[0].matmul(&t[1]));
    gradcheck("matmul transposed", &[&[4, 3], &[2, 4]], -1.0, 1.0, |t| t[0].t()?.matmul(&t[1].t()?));
    gradcheck("linear x·wᵀ + b", &[&[3, 4], &[2, 4], &[2]], -1.0, 1.0, |t| &t[0].matmul(&t[1].t()?)? + &t[2]);
    gradcheck("linear batched", &[&[2, 3, 4], &[5, 4], &[5]], -1.0, 1.0, |t| &t[0].matmul(&t[1].t()?)? + &t[2]);
    gradcheck("conv2d", &[&[1, 2, 5, 4], &[3, 2, 3, 2], &[3]], -1.0, 1.0, |t| {
        t[0].conv2d(&t[1], Some(&t[2]), Conv2dOptions { stride: (2, 1), padding: (1, 1), ..Default::default() })
    });
    gradcheck("conv2d groups dilation", &[&[1, 4, 6, 6], &[2, 2, 2, 2]], -1.0, 1.0, |t| {
        t[0].conv2d(&t[1], None, Conv2dOptions { groups: 2, dilation: (2, 2), ..Default::default() })
    });
    gradcheck("conv2d groups batch stride", &[&[2, 4, 5, 6], &[4, 2, 3, 2], &[4]], -1.0, 1.0, |t| {
        let o = Conv2dOptions { groups: 2, stride: (2, 1), padding: (1, 1), ..Default::default() };
        t[0].conv2d(&t[1], Some(&t[2]), o)
    });
    gradcheck("conv1d", &[&[2, 2, 7], &[3, 2, 3]], -1.0, 1.0, |t| t[0].conv1d(&t[1], None, 2, 1, 1, 1));
    gradcheck("max_pool2d", &[&[1, 2, 4, 5]], -2.0, 2.0, |t| t[0].max_pool2d((2, 2), (2, 2), (0, 1)));
    // Overlapping windows: an input that is the max of several windows sums their gradients.
    gradcheck("max_pool2d overlapping", &[&[2, 2, 5, 6]], -2.0, 2.0, |t| t[0].max_pool2d((3, 3), (1, 2), (1, 1)));
    gradcheck("avg_pool2d", &[&[1, 2, 4, 5]], -2.0, 2.0, |t| t[0].avg_pool2d((3, 3), (1, 2), (1, 1)));
    gradcheck("adaptive_avg_pool2d", &[&[1, 2, 5, 7]], -2.0, 2.0, |t| t[0].adaptive_avg_pool2d((3, 2)));
}

/// GPU gradients against CPU gradients in f32 for a composite that touches the main families.
#[test]
fn gpu_gradients_match_cpu() {
    let Some(g) = common::gpu("gpu_gradients_match_cpu") else { return };
    let grads = |device: &Device| -> Vec<Vec<f64>> {
        let x = common::random(&[2, 3, 6, 6], DType::F32, 1, -1.0, 1.0).to(device).unwrap().with_grad();
        let w = common::random(&[4, 3, 3, 3], DType::F32, 2, -0.5, 0.5).to(device).unwrap().with_grad();
        let l = common::random(&[4 * 3 * 3, 5], DType::F32, 3, -0.5, 0.5).to(device).unwrap().with_grad();
        let y = x.conv2d(&w, None, Conv2dOptions { padding: (1, 1), ..Default::default() }).unwrap();
        let y = y.gelu().unwrap().max_pool2d((2, 2), (2, 2), (0, 0)).unwrap().flatten(1, -1).unwrap();
        let loss = y.matmul(&l).unwrap().log_softmax(-1).unwrap().mean_all().unwrap().neg().unwrap();
        loss.backward().unwrap();
        [x, w, l].iter().map(|t| t.grad().unwrap().to_f64_vec().unwrap()).collect()
    };
    let (c, gg) = (grads(&Device::cpu()), grads(&g));
    for (i, (a, b)) in gg.iter().zip(&c).enumerate() {
        assert_close(&format!("grad {i}"), a, b, 1e-3, 1e-5);
    }
}

/// A Linear layer's product `x·wᵀ`: the input, which needs no gradient, gets none (its matmul is
/// skipped), and the weight's gradient arrives dense in the weight's own layout; the numbers
/// against a naive loop, and the GPU's against the CPU's.
#[test]
fn linear_gradients_skip_the_input_and_stay_dense() {
    let (b, k, n) = (5, 7, 3);
    let grads = |device: &Device| -> (Vec<f64>, Vec<f64>) {
        let x = common::random(&[b, k], DType::F32, 11, -1.0, 1.0).to(device).unwrap();
        let w = common::random(&[n, k], DType::F32, 12, -1.0, 1.0).to(device).unwrap().with_grad();
        let bias = common::random(&[n], DType::F32, 13, -1.0, 1.0).to(device).unwrap().with_grad();
        let g = common::random(&[b, n], DType::F32, 14, -1.0, 1.0).to(device).unwrap();
        let y = (&x.matmul(&w.t().unwrap()).unwrap() + &bias).unwrap();
        y.backward_with(&g).unwrap();
        assert!(x.grad().is_none(), "an input without requires_grad gets no gradient");
        let gw = w.grad().unwrap();
        assert!(gw.is_contiguous(), "weight gradient strides {:?}", gw.strides());
        (gw.to_f64_vec().unwrap(), bias.grad().unwrap().to_f64_vec().unwrap())
    };
    let (gw, gb) = grads(&Device::cpu());
    let (xs, gs) =
        (common::random(&[b, k], DType::F32, 11, -1.0, 1.0), common::random(&[b, n], DType::F32, 14, -1.0, 1.0));
    let (xs, gs) = (xs.to_f64_vec().unwrap(), gs.to_f64_vec().unwrap());
    // dL/dw[o][i] = Σ_r g[r][o]·x[r][i]; dL/db[o] = Σ_r g[r][o].
    let want_w: Vec<f64> = (0..n * k).map(|j| (0..b).map(|r| gs[r * n + j / k] * xs[r * k + j % k]).sum()).collect();
    let want_b: Vec<f64> = (0..n).map(|o| (0..b).map(|r| gs[r * n + o]).sum()).collect();
    assert_close("weight gradient", &gw, &want_w, 1e-5, 1e-6);
    assert_close("bias gradient", &gb, &want_b, 1e-5, 1e-6);
    let Some(gpu) = common::gpu("linear_gradients_skip_the_input_and_stay_dense") else { return };
    let (gw_gpu, gb_gpu) = grads(&gpu);
    assert_close("gpu weight gradient", &gw_gpu, &gw, 1e-4, 1e-5);
    assert_close("gpu bias gradient", &gb_gpu, &gb, 1e-4, 1e-5);
}

/// Lookup-table gradients (index_select on dim 0 of a 2-D table, as Embedding does) take a
/// one-hot matmul on the GPU: repeated, unused and i32 ids, f32 and f16, against the CPU.
#[test]
fn gpu_lookup_gradients_match_cpu() {
    let Some(g) = common::gpu("gpu_lookup_gradients_match_cpu") else { return };
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&g) {
            continue;
        }
        for (rows, cols, ids) in [(5, 3, vec![4i32, 0, 4, 4, 2]), (37, 19, (0..131).map(|i| i * 7 % 37).collect())] {
            let grads = |device: &Device| -> Vec<f64> {
                let table = common::random(&[rows, cols], DType::F32, 5, -1.0, 1.0).to_dtype(dtype).unwrap();
                let table = table.to(device).unwrap().with_grad();
                let upstream = common::random(&[ids.len(), cols], DType::F32, 6, -1.0, 1.0).to_dtype(dtype).unwrap();
                let ids_i32 = Tensor::from_vec(ids.clone(), &[ids.len()], device).unwrap();
                let ids_u32 = ids_i32.to_dtype(DType::U32).unwrap();
                let picked = table.index_select(0, &ids_i32).unwrap();
                let both = (&picked + &table.index_select(0, &ids_u32).unwrap()).unwrap();
                both.mul(&upstream.to(device).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
                table.grad().unwrap().to_f64_vec().unwrap()
            };
            let tol = if dtype == DType::F16 { 2e-2 } else { 1e-5 };
            assert_close(
                &format!("{dtype} table {rows}x{cols}, {} ids", ids.len()),
                &grads(&g),
                &grads(&Device::cpu()),
                tol,
                tol,
            );
        }
    }
}

#[test]
fn autograd_rules() {
    let d = Device::cpu();
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap().with_grad();
    let y = x.mul_scalar(3.0).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    // The graph is freed as backward goes: a second pass is an error, not a panic.
    assert!(matches!(y.backward(), Err(Error::Autograd { .. })));
    // Gradients accumulate across graphs until zero_grad.
    x.mul_scalar(2.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![5.0, 5.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    // Non-scalar without a seed, and a tensor that needs no grad: typed errors.
    assert!(matches!(x.mul_scalar(2.0).unwrap().backward(), Err(Error::Autograd { .. })));
    assert!(matches!(Tensor::ones(&[1], &d).unwrap().backward(), Err(Error::Autograd { .. })));
    // A cast passes the gradient through (converted back to the source dtype).
    let h = Tensor::from_vec(vec![0.5f64, 1.5], &[2], &d).unwrap().with_grad();
    h.to_dtype(DType::F32).unwrap().mul_scalar(4.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(h.grad().unwrap().to_vec::<f64>().unwrap(), vec![4.0, 4.0]);
    // no_grad records nothing; detach cuts the graph.
    let z = kiln::no_grad(|| x.mul_scalar(2.0).unwrap());
    assert!(!z.requires_grad());
    assert!(!x.detach().requires_grad());
}

#[test]
fn fused_op_gradients() {
    gradcheck("layer_norm", &[&[3, 5], &[5], &[5]], -2.0, 2.0, |t| {
        t[0].layer_norm(&[5], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    gradcheck("layer_norm 2-d shape", &[&[2, 3, 2]], -2.0, 2.0, |t| t[0].layer_norm(&[3, 2], None, None, 1e-3));
    gradcheck("rms_norm", &[&[4, 3], &[3]], -2.0, 2.0, |t| t[0].rms_norm(&[3], Some(&t[1]), 1e-6));
    gradcheck("cross_entropy_rows", &[&[4, 5]], -2.0, 2.0, |t| {
        let ids = Tensor::from_vec(vec![4u32, 0, 2, 2], &[4], t[0].device())?;
        t[0].cross_entropy_rows(&ids, Some(2), 0.1)
    });
    gradcheck("attention", &[&[1, 2, 3, 2], &[1, 2, 4, 2], &[1, 2, 4, 2]], -1.5, 1.5, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], false, None)
    });
    gradcheck("attention causal masked", &[&[2, 1, 4, 3], &[2, 1, 4, 3], &[2, 1, 4, 3]], -1.5, 1.5, |t| {
        let mask =
            Tensor::from_vec(vec![false, false, true, false, false, true, false, false], &[2, 4], t[0].device())?;
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, Some(&mask))
    });
}

#[test]
fn activation_gradients() {
    gradcheck("softplus beta threshold", &[&[11]], -3.0, 3.0, |t| t[0].softplus_with(2.0, 1.5));
    gradcheck("softplus negative beta", &[&[7]], -3.0, 3.0, |t| t[0].softplus_with(-0.5, 20.0));
    gradcheck("hardtanh", &[&[11]], -2.0, 2.0, |t| t[0].hardtanh(-0.7, 0.9));
    gradcheck("relu6", &[&[11]], -2.0, 8.0, |t| t[0].relu6());
    gradcheck("hardsigmoid", &[&[11]], -5.0, 5.0, |t| t[0].hardsigmoid());
    gradcheck("hardswish", &[&[11]], -5.0, 5.0, |t| t[0].hardswish());
    gradcheck("selu", &[&[11]], -3.0, 3.0, |t| t[0].selu());
    gradcheck("celu", &[&[11]], -3.0, 3.0, |t| t[0].celu(0.6));
    gradcheck("logsigmoid", &[&[11]], -30.0, 30.0, |t| t[0].logsigmoid());
    gradcheck("softsign", &[&[11]], -3.0, 3.0, |t| t[0].softsign());
    gradcheck("prelu shared slope", &[&[2, 3, 4], &[1]], -2.0, 2.0, |t| t[0].prelu(&t[1]));
    gradcheck("prelu per channel", &[&[2, 3, 4], &[3]], -2.0, 2.0, |t| t[0].prelu(&t[1]));
    gradcheck("prelu 1-d input", &[&[5], &[1]], -2.0, 2.0, |t| t[0].prelu(&t[1]));
    gradcheck("glu", &[&[2, 6, 3]], -2.0, 2.0, |t| t[0].glu(1));
    gradcheck("glu of a transpose", &[&[4, 3]], -2.0, 2.0, |t| t[0].t()?.glu(-1));
}

#[test]
fn pool_and_conv_transpose_gradients() {
    gradcheck("max_pool2d ceil dilation", &[&[1, 2, 7, 6]], -2.0, 2.0, |t| {
        t[0].max_pool2d_opts(MaxPool2dOptions {
            kernel: (3, 2),
            stride: (2, 2),
            padding: (1, 1),
            dilation: (2, 1),
            ceil_mode: true,
        })
    });
    gradcheck("avg_pool2d ceil exclude pad", &[&[1, 2, 6, 7]], -2.0, 2.0, |t| {
        t[0].avg_pool2d_opts(AvgPool2dOptions {
            ceil_mode: true,
            count_include_pad: false,
            padding: (1, 1),
            stride: (2, 2),
            ..AvgPool2dOptions::new((3, 3))
        })
    });
    gradcheck("avg_pool2d divisor", &[&[1, 2, 4, 6]], -2.0, 2.0, |t| {
        t[0].avg_pool2d_opts(AvgPool2dOptions { divisor_override: Some(4), ..AvgPool2dOptions::new((2, 3)) })
    });
    gradcheck("max_pool1d", &[&[2, 2, 9]], -2.0, 2.0, |t| {
        t[0].max_pool1d(MaxPool1dOptions { kernel: 3, stride: 2, padding: 1, dilation: 2, ceil_mode: true })
    });
    gradcheck("avg_pool1d", &[&[2, 2, 9]], -2.0, 2.0, |t| {
        t[0].avg_pool1d(AvgPool1dOptions {
            kernel: 4,
            stride: 3,
            padding: 2,
            ceil_mode: true,
            count_include_pad: false,
        })
    });
    gradcheck("adaptive_max_pool2d", &[&[1, 2, 7, 5]], -2.0, 2.0, |t| t[0].adaptive_max_pool2d((3, 4)));
    gradcheck("adaptive_max_pool1d", &[&[2, 2, 7]], -2.0, 2.0, |t| t[0].adaptive_max_pool1d(3));
    gradcheck("adaptive_avg_pool1d", &[&[2, 2, 7]], -2.0, 2.0, |t| t[0].adaptive_avg_pool1d(3));
    gradcheck("conv_transpose2d groups dilation", &[&[1, 4, 3, 4], &[4, 2, 2, 3], &[4]], -1.0, 1.0, |t| {
        let o = ConvTranspose2dOptions {
            stride: (2, 1),
            padding: (1, 0),
            output_padding: (1, 0),
            dilation: (1, 2),
            groups: 2,
        };
        t[0].conv_transpose2d(&t[1], Some(&t[2]), o)
    });
    gradcheck("conv_transpose2d output_padding past the stride", &[&[1, 2, 3, 3], &[2, 3, 2, 2]], -1.0, 1.0, |t| {
        let o = ConvTranspose2dOptions { dilation: (3, 1), output_padding: (2, 0), ..Default::default() };
        t[0].conv_transpose2d(&t[1], None, o)
    });
    gradcheck("conv_transpose1d", &[&[2, 3, 4], &[3, 2, 3], &[2]], -1.0, 1.0, |t| {
        let o = ConvTranspose1dOptions { stride: 3, padding: 1, output_padding: 2, dilation: 2, groups: 1 };
        t[0].conv_transpose1d(&t[1], Some(&t[2]), o)
    });
}
