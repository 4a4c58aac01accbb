//! Mixed precision: `autocast` (f16 matrix products with f32 results and f32 master-weight
//! gradients) and `GradScaler` (dynamic loss scaling), on the CPU backend and on the GPU.
//!
//! On lavapipe (SHADER_F16, no cooperative matrices) the GPU runs autocast products on the tiled
//! f16 kernel; the no-SHADER_F16 fallback is forced with `pretend_no_f16_for_tests`. Each GPU
//! test prints which path it checked.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, random, values};
use kiln::prelude::*;
use kiln::testing::pretend_no_f16_for_tests;
use kiln::{AutocastGuard, autocast, autocast_dtype, f16};
use kiln_nn::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, GradScaler, GradScalerConfig, Linear, Module,
    ModuleExt, MultiHeadAttention, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};

/// The CPU, and the GPU when there is one (loud under KILN_REQUIRE_GPU=1).
fn devices(test: &str) -> Vec<Device> {
    let mut v = vec![Device::cpu()];
    if let Some(g) = common::gpu(test) {
        let f16_path = match g.gpu_context() {
            Some(c) if c.coop.is_some() => "f16 products on the cooperative-matrix (tensor-core) kernel",
            Some(c) if c.has_f16() => "f16 products on the tiled f16 kernel (SHADER_F16, no cooperative matrices)",
            _ => "NO SHADER_F16: autocast falls back to f32 products on this adapter",
        };
        eprintln!("{test}: GPU {}: {f16_path}", g.describe());
        v.push(g);
    }
    v
}

fn round16(x: f64) -> f64 {
    f16::from_f64(x).to_f64()
}

/// `[m, k] · [k, n]` on the host in f64 from f64 row-major values, each operand element passed
/// through `prep` first.
fn host_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, prep: fn(f64) -> f64) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| prep(a[i * k + p]) * prep(b[p * n + j])).sum();
        }
    }
    out
}

/// Asserts `got` is what an f16 product gives: the exact product of f16-rounded operands,
/// rounded to f16 (one f16 ulp for summation order in f32), and that it is not the plain f32
/// product (so the f16 path really ran).
fn assert_f16_product(what: &str, got: &[f64], a: &[f64], b: &[f64], m: usize, k: usize, n: usize) {
    let want = host_matmul(a, b, m, k, n, round16);
    let exact = host_matmul(a, b, m, k, n, |x| x);
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let tol = 2f64.powi(-10) * w.abs().max(6e-5) + 1e-6 * k as f64;
        assert!((g - w).abs() <= tol, "{what}: element {i}: got {g}, f16 product {w}");
    }
    let differs = got.iter().zip(&exact).filter(|(g, e)| (*g - *e).abs() > 1e-6 * e.abs().max(1.0)).count();
    assert!(differs > got.len() / 4, "{what}: only {differs} of {} elements differ from the f32 product", got.len());
}

#[test]
fn autocast_matmul_is_an_f16_product_with_f32_output() {
    let (m, k, n) = (19, 37, 23);
    // f32-representable values, so the host reference sees exactly what the device holds.
    let f32s = |v: Vec<f64>| -> Vec<f64> { v.into_iter().map(|x| x as f32 as f64).collect() };
    let av = f32s(values(m * k, 1, -1.0, 1.0));
    let bv = f32s(values(k * n, 2, -1.0, 1.0));
    let f32v = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
    for d in devices("autocast_matmul_is_an_f16_product_with_f32_output") {
        let a = Tensor::from_vec(f32v(&av), &[m, k], &d).unwrap();
        // b arrives transposed (non-contiguous), as a Linear's weight does.
        let bt: Vec<f64> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
        let b = Tensor::from_vec(f32v(&bt), &[n, k], &d).unwrap().t().unwrap();
        let y = autocast(DType::F16, || a.matmul(&b)).unwrap();
        assert_eq!(y.dtype(), DType::F32, "{d:?}");
        assert_eq!(y.shape(), &[m, n]);
        assert_f16_product(&format!("{d:?} matmul"), &y.to_f64_vec().unwrap(), &av, &bv, m, k, n);
        // Outside the region the same product is f32 again.
        let plain = a.matmul(&b).unwrap().to_f64_vec().unwrap();
        assert_close(&format!("{d:?} f32 after autocast"), &plain, &host_matmul(&av, &bv, m, k, n, |x| x), 1e-5, 1e-5);
        // f16 × f32 mixes are allowed inside the region (cast up to a product in f16).
        let y2 = autocast(DType::F16, || a.to_dtype(DType::F16)?.matmul(&b)).unwrap();
        assert_eq!(y2.dtype(), DType::F32);
        assert_f16_product(&format!("{d:?} f16·f32"), &y2.to_f64_vec().unwrap(), &av, &bv, m, k, n);
        // ... but still a dtype error outside it.
        assert!(matches!(a.to_dtype(DType::F16).unwrap().matmul(&b), Err(Error::DTypeMismatch { .. })));
    }
}

#[test]
fn autocast_batched_broadcast_matmul_matches_cpu_f32() {
    // [2, 1, m, k] · [3, k, n]: a broadcast batch, odd sizes.
    let (m, k, n) = (7, 33, 9);
    let a = random(&[2, 1, m, k], DType::F32, 3, -1.0, 1.0);
    let b = random(&[3, k, n], DType::F32, 4, -1.0, 1.0);
    let want = a.matmul(&b).unwrap().to_f64_vec().unwrap();
    for d in devices("autocast_batched_broadcast_matmul_matches_cpu_f32") {
        let (a, b) = (a.to(&d).unwrap(), b.to(&d).unwrap());
        let y = autocast(DType::F16, || a.matmul(&b)).unwrap();
        assert_eq!(y.shape(), &[2, 3, m, n]);
        assert_eq!(y.dtype(), DType::F32);
        // f16 tolerance: each operand carries 2^-11 relative rounding, the result one more.
        assert_close(&format!("{d:?} bmm"), &y.to_f64_vec().unwrap(), &want, 2e-3, 4e-3 * (k as f64).sqrt());
    }
}

/// Sets every parameter of `m` from `seed`, uniform in ±1/sqrt(fan-in-ish), so two devices (or
/// two test threads) build the same module.
fn seed_params(params: &[Tensor], seed: u64) {
    for (i, p) in params.iter().enumerate() {
        let bound = 1.0 / (*p.shape().last().unwrap_or(&1) as f64).sqrt();
        let v = random(p.shape(), DType::F32, seed + i as u64, -bound, bound).to(p.device()).unwrap();
        p.set_data(&v).unwrap();
    }
}

/// Linear, conv2d and attention outputs on `d`, with or without autocast, from fixed weights.
fn layer_outputs(d: &Device, amp: bool) -> Vec<(&'static str, Vec<f64>, DType)> {
    let run = |f: &dyn Fn() -> Result<Tensor>| if amp { autocast(DType::F16, f) } else { f() };
    let mut out = Vec::new();
    let mut keep = |name, t: Tensor| out.push((name, t.to_f64_vec().unwrap(), t.dtype()));
    let lin = Linear::new(24, 10, true, d).unwrap();
    seed_params(&lin.parameters(), 51);
    let x = random(&[5, 24], DType::F32, 5, -1.0, 1.0).to(d).unwrap();
    keep("linear", run(&|| lin.forward(&x)).unwrap());
    // conv2d: im2col + a product; padding, stride 2 and a bias.
    let img = random(&[2, 3, 9, 7], DType::F32, 6, -1.0, 1.0).to(d).unwrap();
    let w = random(&[4, 3, 3, 3], DType::F32, 7, -0.5, 0.5).to(d).unwrap();
    let bias = random(&[4], DType::F32, 8, -0.5, 0.5).to(d).unwrap();
    let opts = Conv2dOptions { stride: (2, 2), padding: (1, 1), ..Default::default() };
    keep("conv2d", run(&|| img.conv2d(&w, Some(&bias), opts)).unwrap());
    // Attention: its projections are products; the attention itself stays f32.
    let mha = MultiHeadAttention::new(16, 2, true, d).unwrap();
    seed_params(&mha.parameters(), 61);
    let seq = random(&[2, 5, 16], DType::F32, 9, -1.0, 1.0).to(d).unwrap();
    keep("attention", run(&|| mha.forward_masked(&seq, true, None)).unwrap());
    out
}

#[test]
fn autocast_linear_conv_and_attention_match_cpu_f32_within_f16_tolerance() {
    let reference = layer_outputs(&Device::cpu(), false);
    for d in devices("autocast_linear_conv_and_attention_match_cpu_f32_within_f16_tolerance") {
        let mixed = layer_outputs(&d, true);
        for ((name, want, _), (_, got, dtype)) in reference.iter().zip(&mixed) {
            assert_eq!(*dtype, DType::F32, "{d:?} {name}");
            assert_close(&format!("{d:?} {name}"), got, want, 1e-2, 1e-2);
            assert_ne!(got, want, "{d:?} {name}: identical to f32, so it did not run in f16");
        }
    }
}

/// A Linear layer with weights from `seed` (Kiln's generator is shared by the test threads, so
/// `manual_seed` alone would not give two calls the same weights).
fn seeded_linear(inp: usize, out: usize, seed: u64, d: &Device) -> Linear {
    let l = Linear::new(inp, out, true, d).unwrap();
    seed_params(&l.parameters(), seed);
    l
}

/// d(sum(c · model(x)))/dθ for a two-layer MLP, with or without autocast.
fn mlp_grads(d: &Device, amp: bool) -> Vec<(Vec<f64>, DType)> {
    let l1 = seeded_linear(13, 17, 21, d);
    let l2 = seeded_linear(17, 6, 25, d);
    let x = random(&[9, 13], DType::F32, 22, -1.0, 1.0).to(d).unwrap();
    let c = random(&[9, 6], DType::F32, 23, -1.0, 1.0).to(d).unwrap();
    let forward = || l2.forward(&l1.forward(&x)?.gelu()?)?.mul(&c)?.sum_all();
    let loss = if amp { autocast(DType::F16, forward).unwrap() } else { forward().unwrap() };
    assert_eq!(loss.dtype(), DType::F32);
    loss.backward().unwrap();
    l1.parameters()
        .iter()
        .chain(l2.parameters().iter())
        .map(|p| {
            let g = p.grad().expect("every parameter gets a gradient");
            (g.to_f64_vec().unwrap(), g.dtype())
        })
        .collect()
}

#[test]
fn autocast_gradients_reach_f32_master_weights() {
    for d in devices("autocast_gradients_reach_f32_master_weights") {
        let exact = mlp_grads(&d, false);
        let mixed = mlp_grads(&d, true);
        assert_eq!(exact.len(), 4);
        for (i, ((e, _), (m, dt))) in exact.iter().zip(&mixed).enumerate() {
            assert_eq!(*dt, DType::F32, "{d:?}: gradient {i} dtype");
            let scale = e.iter().fold(0f64, |s, v| s.max(v.abs()));
            assert_close(&format!("{d:?} grad {i}"), m, e, 1e-2, 1e-2 * scale);
            // The last bias's gradient is sum(c): no product on its way, so it is exact.
            if i < 3 {
                assert_ne!(m, e, "{d:?}: gradient {i} identical to f32: backward did not run in f16");
            } else {
                assert_eq!(m, e, "{d:?}: the output bias gradient involves no product");
            }
        }
    }
}

#[test]
fn autocast_without_shader_f16_falls_back_to_f32() {
    let Some(g) = common::gpu("autocast_without_shader_f16_falls_back_to_f32") else { return };
    eprintln!("autocast_without_shader_f16_falls_back_to_f32: FORCING the no-SHADER_F16 fallback on {}", g.describe());
    let a = random(&[6, 11], DType::F32, 31, -1.0, 1.0).to(&g).unwrap();
    let w = random(&[11, 5], DType::F32, 32, -1.0, 1.0).to(&g).unwrap().with_grad();
    let plain = a.matmul(&w).unwrap().to_f64_vec().unwrap();
    pretend_no_f16_for_tests(true);
    let y = autocast(DType::F16, || a.matmul(&w));
    pretend_no_f16_for_tests(false);
    let y = y.unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(y.to_f64_vec().unwrap(), plain, "the fallback must be the plain f32 product");
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().dtype(), DType::F32);
}

#[test]
fn autocast_guard_scopes_nests_and_rejects_other_dtypes() {
    assert_eq!(autocast_dtype(), None);
    {
        let _on = AutocastGuard::new(DType::F16).unwrap();
        assert_eq!(autocast_dtype(), Some(DType::F16));
        {
            let _off = AutocastGuard::new(DType::F32).unwrap();
            assert_eq!(autocast_dtype(), None);
        }
        assert_eq!(autocast_dtype(), Some(DType::F16));
        // Another thread does not inherit it.
        std::thread::spawn(|| assert_eq!(autocast_dtype(), None)).join().unwrap();
        // f64 and integer products are never cast.
        let a = Tensor::from_vec(vec![1.0f64 / 3.0; 4], &[2, 2], &Device::cpu()).unwrap();
        let y = a.matmul(&a).unwrap();
        assert_eq!(y.dtype(), DType::F64);
        assert_eq!(y.to_f64_vec().unwrap()[0], 2.0 / 9.0);
        let i = Tensor::from_vec(vec![3i32; 4], &[2, 2], &Device::cpu()).unwrap();
        assert_eq!(i.matmul(&i).unwrap().dtype(), DType::I32);
    }
    assert_eq!(autocast_dtype(), None);
    for bad in [DType::F64, DType::I32, DType::Bool] {
        assert!(matches!(AutocastGuard::new(bad), Err(Error::InvalidArgument { .. })), "{bad}");
    }
    // An error inside the closure is returned and the region still ends.
    let r: Result<Tensor> = autocast(DType::F16, || {
        Tensor::zeros(&[2, 3], &Device::cpu())?.matmul(&Tensor::zeros(&[2, 3], &Device::cpu())?)
    });
    assert!(r.is_err());
    assert_eq!(autocast_dtype(), None);
}

/// One parameter vector with gradient `grad` set by hand, and an optimizer over it.
fn param_with_grad(d: &Device, grad: &[f32]) -> Tensor {
    let p = Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[3], d).unwrap().with_grad();
    p.set_grad(Some(Tensor::from_vec(grad.to_vec(), &[3], d).unwrap())).unwrap();
    p
}

type MakeOpt = fn(Vec<Tensor>) -> Box<dyn Optimizer>;

fn optimizers() -> Vec<(&'static str, MakeOpt)> {
    vec![
        ("Sgd", |p| Box::new(Sgd::new(p, SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).unwrap())),
        ("Adam", |p| Box::new(Adam::new(p, AdamConfig { lr: 0.1, ..Default::default() }).unwrap())),
        ("AdamW", |p| {
            Box::new(AdamW::new(p, AdamWConfig { lr: 0.1, weight_decay: 0.01, ..Default::default() }).unwrap())
        }),
        ("RmsProp", |p| Box::new(RmsProp::new(p, RmsPropConfig { lr: 0.1, ..Default::default() }).unwrap())),
        ("Adagrad", |p| Box::new(Adagrad::new(p, AdagradConfig { lr: 0.1, ..Default::default() }).unwrap())),
    ]
}

#[test]
fn grad_scaler_skips_the_step_on_inf_or_nan_and_halves_the_scale() {
    for d in devices("grad_scaler_skips_the_step_on_inf_or_nan_and_halves_the_scale") {
        for (name, make) in optimizers() {
            for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                let p = param_with_grad(&d, &[1.0, bad, 2.0]);
                let clean = param_with_grad(&d, &[3.0, 4.0, 5.0]);
                let mut opt = make(vec![p.clone(), clean.clone()]);
                let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
                let stepped = scaler.step(opt.as_mut()).unwrap().stepped().unwrap();
                scaler.update().unwrap();
                assert!(!stepped, "{d:?} {name} {bad}: stepped");
                assert_eq!(p.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 0.5], "{d:?} {name}: param moved");
                assert_eq!(clean.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 0.5], "{d:?} {name}: clean param moved");
                assert_eq!(opt.step_count(), 0, "{d:?} {name}");
                assert_eq!(scaler.get_scale().unwrap(), 32768.0, "{d:?} {name}");
                assert_eq!(scaler.growth_tracker().unwrap(), 0);
            }
        }
    }
}

#[test]
fn grad_scaler_unscales_and_steps_like_the_plain_optimizer() {
    let g = [0.25f32, -3.0, 1.5];
    for d in devices("grad_scaler_unscales_and_steps_like_the_plain_optimizer") {
        for (name, make) in optimizers() {
            // Reference: the optimizer on the true gradient.
            let reference = param_with_grad(&d, &g);
            let mut ref_opt = make(vec![reference.clone()]);
            ref_opt.step().unwrap();
            // Scaled: the gradient is scale·g, as backward on scale(loss) leaves it.
            let mut scaler = GradScaler::new(GradScalerConfig { init_scale: 1024.0, ..Default::default() }).unwrap();
            let scaled: Vec<f32> = g.iter().map(|v| v * 1024.0).collect();
            let p = param_with_grad(&d, &scaled);
            let mut opt = make(vec![p.clone()]);
            scaler.unscale_(opt.as_ref()).unwrap();
            assert_eq!(p.grad().unwrap().to_vec::<f32>().unwrap(), g.to_vec(), "{d:?} {name}: unscaled grad");
            // A second unscale_ in one iteration would divide twice: refused.
            assert!(matches!(scaler.unscale_(opt.as_ref()), Err(Error::InvalidArgument { .. })));
            assert!(scaler.step(opt.as_mut()).unwrap().stepped().unwrap(), "{d:?} {name}: skipped a clean step");
            assert!(matches!(scaler.step(opt.as_mut()), Err(Error::InvalidArgument { .. })));
            scaler.update().unwrap();
            assert_eq!(p.to_vec::<f32>().unwrap(), reference.to_vec::<f32>().unwrap(), "{d:?} {name}: update differs");
            assert_eq!(scaler.get_scale().unwrap(), 1024.0);
            assert_eq!(scaler.growth_tracker().unwrap(), 1);
        }
    }
}

#[test]
fn grad_scaler_grows_after_the_interval_and_backs_off() {
    let d = Device::cpu();
    let config = GradScalerConfig { init_scale: 8.0, growth_interval: 3, ..Default::default() };
    let mut scaler = GradScaler::new(config).unwrap();
    let p = param_with_grad(&d, &[1.0, 1.0, 1.0]);
    let mut opt = Sgd::new(vec![p.clone()], SgdConfig::new(0.0)).unwrap();
    let mut iterate = |scaler: &mut GradScaler, grad: f32| {
        p.set_grad(Some(Tensor::from_vec(vec![grad; 3], &[3], &d).unwrap())).unwrap();
        let stepped = scaler.step(&mut opt).unwrap().stepped().unwrap();
        scaler.update().unwrap();
        stepped
    };
    let mut scales = Vec::new();
    for grad in [1.0, 1.0, 1.0, 1.0, f32::INFINITY, 1.0, 1.0, 1.0] {
        iterate(&mut scaler, grad);
        scales.push(scaler.get_scale().unwrap());
    }
    // Grows after 3 clean steps; the inf halves it and restarts the count.
    assert_eq!(scales, vec![8.0, 8.0, 16.0, 16.0, 8.0, 8.0, 8.0, 16.0]);
    // state() / load_state() carry the scale and the count across a checkpoint.
    let mut restored = GradScaler::new(config).unwrap();
    restored.load_state(scaler.state().unwrap().0, scaler.state().unwrap().1).unwrap();
    assert_eq!((restored.get_scale().unwrap(), restored.growth_tracker().unwrap()), (16.0, 0));
    assert!(matches!(restored.load_state(f64::NAN, 0), Err(Error::InvalidArgument { .. })));
    // scale() multiplies the loss by the current scale, keeping it in the graph.
    let w = Tensor::from_vec(vec![2.0f32], &[1], &d).unwrap().with_grad();
    let loss = w.square().unwrap().sum_all().unwrap();
    let scaled = scaler.scale(&loss).unwrap();
    assert_eq!(scaled.item().unwrap(), 64.0);
    scaled.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec::<f32>().unwrap(), vec![64.0]);
}

#[test]
fn grad_scaler_config_errors_and_disabled_mode() {
    let bad = [
        GradScalerConfig { init_scale: 0.0, ..Default::default() },
        GradScalerConfig { init_scale: f64::INFINITY, ..Default::default() },
        GradScalerConfig { growth_factor: 1.0, ..Default::default() },
        GradScalerConfig { backoff_factor: 1.0, ..Default::default() },
        GradScalerConfig { backoff_factor: 0.0, ..Default::default() },
        GradScalerConfig { growth_interval: 0, ..Default::default() },
    ];
    for c in bad {
        assert!(matches!(GradScaler::new(c), Err(Error::InvalidArgument { .. })), "{c:?}");
    }
    let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
    assert!(matches!(scaler.update(), Err(Error::InvalidArgument { .. })), "update before any step");
    // Disabled: a pass-through, even an inf gradient is stepped on (as in PyTorch).
    let mut off = GradScaler::new(GradScalerConfig { enabled: false, ..Default::default() }).unwrap();
    let p = param_with_grad(&Device::cpu(), &[1.0, 1.0, 1.0]);
    let mut opt = Sgd::new(vec![p.clone()], SgdConfig::new(0.5)).unwrap();
    let loss = Tensor::from_vec(vec![3.0f32], &[], &Device::cpu()).unwrap();
    assert_eq!(off.scale(&loss).unwrap().item().unwrap(), 3.0);
    assert!(off.step(&mut opt).unwrap().stepped().unwrap());
    off.update().unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![0.5, -2.5, 0.0]);
    assert_eq!(off.get_scale().unwrap(), 1.0);
}

/// A tiny regression model trained under autocast + GradScaler with AdamW: the loss must fall
/// well below where it started, and the master weights stay f32.
fn train_tiny(d: &Device) -> (f64, f64) {
    kiln::manual_seed(41);
    let l1 = Linear::new(8, 32, true, d).unwrap();
    let l2 = Linear::new(32, 1, true, d).unwrap();
    let params: Vec<Tensor> = l1.parameters().into_iter().chain(l2.parameters()).collect();
    let mut opt = AdamW::new(params.clone(), AdamWConfig { lr: 1e-2, ..Default::default() }).unwrap();
    let mut scaler = GradScaler::new(GradScalerConfig { growth_interval: 10, ..Default::default() }).unwrap();
    let x = random(&[64, 8], DType::F32, 42, -1.0, 1.0).to(d).unwrap();
    // y = a smooth function of x.
    let w = random(&[8, 1], DType::F32, 43, -1.0, 1.0).to(d).unwrap();
    let y = x.matmul(&w).unwrap().tanh().unwrap();
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    for step in 0..60 {
        opt.zero_grad();
        let loss = autocast(DType::F16, || {
            let pred = l2.forward(&l1.forward(&x)?.relu()?)?;
            (&pred - &y)?.square()?.mean_all()
        })
        .unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        scaler.scale(&loss).unwrap().backward().unwrap();
        scaler.step(&mut opt).unwrap();
        scaler.update().unwrap();
        let v = loss.item().unwrap();
        if step == 0 {
            first = v;
        }
        last = v;
    }
    assert!(params.iter().all(|p| p.dtype() == DType::F32));
    (first, last)
}

#[test]
fn tiny_model_trains_under_autocast_and_grad_scaler() {
    for d in devices("tiny_model_trains_under_autocast_and_grad_scaler") {
        let (first, last) = train_tiny(&d);
        eprintln!("{d:?}: loss {first:.4} -> {last:.4}");
        assert!(last.is_finite() && last < first * 0.2, "{d:?}: loss {first} -> {last}");
    }
}

/// Not an injected inf: with the default scale 65536, a sum loss's gradient (1 per element)
/// scaled to 65536 overflows f16 (max 65504) on its way into backward's product; at 32768 the
/// weight gradient x·32768 = [32768, 65536] overflows the product's f16 result. The scaler must
/// see both, skip those steps, halve the scale each time, and step normally at 16384.
#[test]
fn grad_scaler_backs_off_from_a_real_f16_overflow() {
    for d in devices("grad_scaler_backs_off_from_a_real_f16_overflow") {
        let w = Tensor::from_vec(vec![0.5f32, -0.5], &[2, 1], &d).unwrap().with_grad();
        let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2], &d).unwrap();
        let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1)).unwrap();
        let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
        let mut stepped = Vec::new();
        for _ in 0..3 {
            opt.zero_grad();
            let loss = autocast(DType::F16, || x.matmul(&w)?.sum_all()).unwrap();
            scaler.scale(&loss).unwrap().backward().unwrap();
            stepped.push(scaler.step(&mut opt).unwrap().stepped().unwrap());
            scaler.update().unwrap();
        }
        assert_eq!(stepped, vec![false, false, true], "{d:?}");
        assert_eq!(scaler.get_scale().unwrap(), 16384.0);
        assert_close(&format!("{d:?} w"), &w.to_f64_vec().unwrap(), &[0.4, -0.7], 1e-6, 1e-6);
    }
}

/// One input read by three products in an autocast region (q, k and v projections) is cast to
/// f16 once: one f16 copy is saved for backward, not three, and its gradient (the sum of the
/// three products') still reaches the f32 input and weights within f16 tolerance of f32.
#[test]
fn autocast_casts_an_input_shared_by_several_products_once() {
    for d in devices("autocast_casts_an_input_shared_by_several_products_once") {
        let (rows, inp, out) = (256, 512, 8);
        let layers: Vec<Linear> = (0..3).map(|i| seeded_linear(inp, out, 40 + i, &d)).collect();
        let grads = |amp: bool| {
            let x = random(&[rows, inp], DType::F32, 44, -1.0, 1.0).to(&d).unwrap().with_grad();
            d.sync().unwrap();
            let before = d.memory_stats().live_bytes;
            let forward = || {
                let ys: Vec<Tensor> = layers.iter().map(|l| l.forward(&x)).collect::<Result<_>>()?;
                (&(&ys[0] + &ys[1])? * &ys[2])?.sum_all()
            };
            let loss = if amp { autocast(DType::F16, forward).unwrap() } else { forward().unwrap() };
            d.sync().unwrap();
            let kept = d.memory_stats().live_bytes - before;
            loss.backward().unwrap();
            let mut g = vec![x.grad().unwrap().to_f64_vec().unwrap()];
            for l in &layers {
                g.push(l.weight.grad().unwrap().to_f64_vec().unwrap());
                l.weight.zero_grad();
                l.bias.as_ref().unwrap().zero_grad();
            }
            (g, kept)
        };
        let (exact, _) = grads(false);
        let (mixed, kept) = grads(true);
        for (i, (m, e)) in mixed.iter().zip(&exact).enumerate() {
            let scale = e.iter().fold(0f64, |s, v| s.max(v.abs()));
            assert_close(&format!("{d:?} grad {i}"), m, e, 2e-2, 2e-2 * scale);
        }
        if d.is_gpu() && d.gpu_context().is_some_and(|c| c.has_f16()) {
            // One f16 copy of x (256 KiB); three would be 768 KiB. The rest is small: f16
            // weight copies, the [256, 8] outputs.
            let copy = (rows * inp * 2) as u64;
            assert!(kept < 2 * copy, "{d:?}: forward kept {kept} bytes: more than one f16 copy of x ({copy})");
        }
    }
}
