//! A training step never waits for the GPU unless the user reads a value (as in PyTorch).
//!
//! `Device::sync_count` counts every host wait (syncs, readbacks); after a warm-up, steps of an
//! MLP, of the `char_transformer` example (its own `train_step`, included by path) and of a
//! mixed-precision loop (f16 autocast + GradScaler) must add none, and reading the loss must add
//! exactly one. Beside the counts: `clip_grad_norm_`'s device-side norm and factor against the
//! old host arithmetic and the CPU backend, and GradScaler's skip/backoff/growth on inf
//! gradients, decided on the device, against the plain optimizer on the clean steps only.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "common/mod.rs"]
mod helpers;
// The example's modules, as `char_smoke` includes them: `train.rs` refers to `super::common`.
// Both files allow dead code themselves (each includer uses a different subset).
#[path = "../examples/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "../examples/char/train.rs"]
#[allow(unused_imports)]
mod train;

use helpers::{assert_close, random};
use kiln::prelude::*;
use kiln_nn::optim::Optimizer;
use kiln_nn::sched::{LrScheduler, WarmupCosine};
use kiln_nn::{
    AdamW, AdamWConfig, Dropout, GradScaler, GradScalerConfig, Linear, Module, ModuleExt, Relu, Sequential, Sgd,
    SgdConfig, clip_grad_norm_, cross_entropy_loss,
};

/// Steps measured after the warm-up.
const STEPS: usize = 4;

/// The test adapter as a device of its own, so that the waits counted are this test's alone
/// (tests run in parallel); with the environment's options, cooperative matrices included.
/// Loud like `helpers::gpu`.
fn own_gpu(test: &str) -> Option<Device> {
    let shared = helpers::gpu(test)?;
    let name = shared.gpu_context().map(|c| c.summary.name.clone()).expect("a GPU device");
    let choice = kiln_wgpu::context::AdapterChoice::Name(name);
    let ctx =
        kiln_wgpu::GpuContext::new_with(&choice, &kiln_wgpu::ContextOptions::from_env()).expect("a second context");
    Some(Device::Gpu(ctx))
}

/// Runs `f` and returns its result and the host waits on `d` it caused.
fn counting<T>(d: &Device, f: impl FnOnce() -> T) -> (T, u64) {
    let before = d.sync_count();
    let out = f();
    (out, d.sync_count() - before)
}

/// Two warm-up steps (pipelines compile, pools fill, optimizer state appears), then `STEPS`
/// steps that must not wait for the GPU; returns the last step's value.
fn assert_no_syncs<T>(what: &str, d: &Device, mut step: impl FnMut() -> Result<T>) -> T {
    for _ in 0..2 {
        step().unwrap_or_else(|e| panic!("{what}: warm-up step: {e}"));
    }
    d.sync().unwrap();
    let mut last = None;
    for i in 0..STEPS {
        let (out, waits) = counting(d, &mut step);
        last = Some(out.unwrap_or_else(|e| panic!("{what}: step {i}: {e}")));
        assert_eq!(waits, 0, "{what}: step {i} waited for the GPU {waits} times");
    }
    eprintln!("{what}: {STEPS} steps, 0 syncs each on {}", d.describe());
    last.expect("at least one step")
}

/// Reading one value is exactly one wait.
fn assert_one_read(what: &str, d: &Device, t: &Tensor) -> f64 {
    let (v, waits) = counting(d, || t.item().unwrap());
    assert_eq!(waits, 1, "{what}: item() waited {waits} times");
    v
}

#[test]
fn cpu_backend_counts_no_syncs() {
    let d = Device::cpu();
    let t = Tensor::ones(&[3], &d).unwrap();
    assert_eq!(counting(&d, || t.sum_all().unwrap().item().unwrap()), (3.0, 0));
}

#[test]
fn every_read_and_sync_is_counted_once() {
    let Some(d) = own_gpu("every_read_and_sync_is_counted_once") else { return };
    let t = Tensor::ones(&[5], &d).unwrap();
    let (_, waits) = counting(&d, || t.mul_scalar(2.0).unwrap());
    assert_eq!(waits, 0, "recording an op");
    assert_eq!(counting(&d, || d.sync().unwrap()).1, 1, "device.sync()");
    assert_eq!(counting(&d, || t.to_vec::<f32>().unwrap()).1, 1, "to_vec");
    assert_eq!(counting(&d, || pollster::block_on(t.to_vec_async::<f32>()).unwrap()).1, 1, "to_vec_async");
    assert_eq!(assert_one_read("sum", &d, &t.sum_all().unwrap()), 5.0);
    assert_eq!(d.memory_stats().syncs, d.sync_count());
    // The async forms a browser needs work natively too, and count the same.
    assert_eq!(counting(&d, || pollster::block_on(d.sync_async()).unwrap()).1, 1, "sync_async");
    let (v, waits) = counting(&d, || pollster::block_on(t.sum_all().unwrap().item_async()).unwrap());
    assert_eq!((v, waits), (5.0, 1), "item_async");
    let err = pollster::block_on(t.item_async()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "item_async", .. }), "{err}");
}

#[test]
fn gpu_async_opens_the_device_gpu_shares() {
    let Some(d) = helpers::gpu("gpu_async_opens_the_device_gpu_shares") else { return };
    if std::env::var("KILN_DEVICE").is_err() {
        assert_eq!(pollster::block_on(Device::gpu_async()).unwrap(), d);
    }
    let ctx = pollster::block_on(kiln_wgpu::GpuContext::new_async(
        &kiln_wgpu::context::AdapterChoice::Any,
        &kiln_wgpu::ContextOptions::default(),
    ))
    .expect("a context opened without blocking");
    let t = Tensor::from_vec(vec![1.5f32, 2.5], &[2], &Device::Gpu(ctx)).unwrap();
    assert_eq!(pollster::block_on(t.to_f64_vec_async()).unwrap(), vec![1.5, 2.5]);
}

/// Linear/ReLU/Dropout/cross-entropy, AdamW, warm-up + cosine, clipping at 1.
#[test]
fn mlp_training_step_does_not_sync() {
    let Some(d) = own_gpu("mlp_training_step_does_not_sync") else { return };
    kiln::manual_seed(3);
    let model = Sequential::new()
        .add(Linear::new(33, 64, true, &d).unwrap())
        .add(Relu)
        .add(Dropout::new(0.1))
        .add(Linear::new(64, 10, true, &d).unwrap());
    let params = model.parameters();
    let mut opt = AdamW::new(params.clone(), AdamWConfig { lr: 1e-2, ..Default::default() }).unwrap();
    let mut schedule = WarmupCosine::new(1e-2, 3, 100, 1e-4).unwrap();
    let x = random(&[16, 33], DType::F32, 1, -1.0, 1.0).to(&d).unwrap();
    let y = Tensor::from_vec((0..16u32).map(|i| (i * 7) % 10).collect(), &[16], &d).unwrap();
    let (loss, norm) = assert_no_syncs("mlp", &d, || {
        let loss = cross_entropy_loss(&model.forward(&x)?, &y)?;
        opt.zero_grad();
        loss.backward()?;
        let norm = clip_grad_norm_(&params, 1.0)?;
        schedule.step(&mut opt);
        opt.step()?;
        Ok((loss, norm))
    });
    assert!(assert_one_read("mlp loss", &d, &loss).is_finite());
    assert!(assert_one_read("mlp norm", &d, &norm) > 0.0);
}

/// The example's own step: embedding, LayerNorm, attention, GELU, dropout, cross-entropy,
/// clipping, AdamW with two parameter groups, warm-up + cosine.
#[test]
fn char_transformer_training_step_does_not_sync() {
    let Some(d) = own_gpu("char_transformer_training_step_does_not_sync") else { return };
    let mut cfg = train::TrainConfig::preset(train::Size::Large);
    (cfg.d_model, cfg.layers, cfg.heads, cfg.seq_len, cfg.batch_size, cfg.steps) = (32, 2, 2, 16, 3, 50);
    assert_eq!((cfg.dropout, cfg.activation), (0.2, train::Activation::Gelu));
    let vocab = 23;
    kiln::manual_seed(cfg.seed);
    let model = train::CharTransformer::new(cfg.model_config(vocab), &d).unwrap();
    let mut opt = train::optimizer(&model, &cfg).unwrap();
    let mut schedule = train::schedule(&cfg).unwrap();
    let params = model.parameters();
    let (b, t) = (cfg.batch_size, cfg.seq_len);
    let mut window = 0u32;
    let (loss, norm) = assert_no_syncs("char_transformer", &d, || {
        // New windows every step, uploaded as the example does (an upload is not a wait).
        window += 1;
        let ids: Vec<u32> = (0..(b * t + 1) as u32).map(|i| (i * 5 + window) % vocab as u32).collect();
        let x = Tensor::from_vec(ids[..b * t].to_vec(), &[b, t], &d)?;
        let y = Tensor::from_vec(ids[1..].to_vec(), &[b * t], &d)?;
        train::train_step(&model, &mut opt, &mut schedule, &params, cfg.grad_clip, &x, &y)
    });
    assert!(assert_one_read("char loss", &d, &loss).is_finite());
    assert!(assert_one_read("char norm", &d, &norm).is_finite());
}

/// f16 autocast + GradScaler + AdamW, with the usual `unscale_` before clipping; on lavapipe
/// (no cooperative matrices) the products take the tiled f16 kernel, which still has to run.
#[test]
fn mixed_precision_training_step_does_not_sync() {
    let Some(d) = own_gpu("mixed_precision_training_step_does_not_sync") else { return };
    let ctx = d.gpu_context().expect("a GPU");
    assert!(ctx.has_f16(), "the test adapter must hold f16 for autocast to run f16 products");
    kiln::manual_seed(5);
    let l1 = Linear::new(33, 64, true, &d).unwrap();
    let l2 = Linear::new(64, 10, true, &d).unwrap();
    let params: Vec<Tensor> = l1.parameters().into_iter().chain(l2.parameters()).collect();
    let mut opt = AdamW::new(params.clone(), AdamWConfig { lr: 1e-2, ..Default::default() }).unwrap();
    let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
    let x = random(&[16, 33], DType::F32, 2, -1.0, 1.0).to(&d).unwrap();
    let y = Tensor::from_vec((0..16u32).map(|i| (i * 3) % 10).collect(), &[16], &d).unwrap();
    // An f16 product really runs: its operands are cast to f16 inside the region.
    let h = kiln::autocast(DType::F16, || l1.forward(&x)).unwrap();
    assert_eq!(h.dtype(), DType::F32);
    assert_close(
        "autocast product vs f32",
        &h.to_f64_vec().unwrap(),
        &l1.forward(&x).unwrap().to_f64_vec().unwrap(),
        2e-2,
        2e-2,
    );
    let outcome = assert_no_syncs("mixed precision", &d, || {
        opt.zero_grad();
        let loss = kiln::autocast(DType::F16, || cross_entropy_loss(&l2.forward(&l1.forward(&x)?.relu()?)?, &y))?;
        scaler.scale(&loss)?.backward()?;
        scaler.unscale_(&opt)?;
        clip_grad_norm_(&params, 1.0)?;
        let outcome = scaler.step(&mut opt)?;
        scaler.update()?;
        Ok((loss, outcome))
    });
    assert!(assert_one_read("amp loss", &d, &outcome.0).is_finite());
    let (stepped, waits) = counting(&d, || outcome.1.stepped().unwrap());
    assert_eq!(waits, 1, "asking whether the step was taken");
    assert!(stepped, "a clean step was skipped");
    let (scale, waits) = counting(&d, || scaler.get_scale().unwrap());
    assert_eq!((scale, waits), (65536.0, 1));
}

/// One parameter vector whose gradient is set by hand (an upload, not a wait).
fn set_grad(p: &Tensor, g: &[f32]) {
    p.set_grad(Some(Tensor::from_vec(g.to_vec(), &[g.len()], p.device()).unwrap())).unwrap();
}

/// Backoff on inf/NaN, growth after the interval, skipped steps that change nothing and do not
/// count (Adam's bias correction uses the count): all decided on the device with no wait, and
/// equal to the plain optimizer stepped on the clean gradients only.
#[test]
fn grad_scaler_skips_backs_off_and_grows_without_syncs() {
    let mut devices = vec![Device::cpu()];
    devices.extend(own_gpu("grad_scaler_skips_backs_off_and_grows_without_syncs"));
    let grads: [[f32; 3]; 8] = [
        [1.0, -2.0, 0.5],
        [0.25, 1.0, -1.0],
        [f32::INFINITY, 1.0, 2.0],
        [3.0, -0.5, 1.5],
        [1.0, f32::NAN, 0.0],
        [-1.0, 2.0, 0.75],
        [0.5, 0.5, -0.25],
        [2.0, -1.0, 1.0],
    ];
    // Grows after 3 clean steps in a row; an inf or NaN halves it and restarts the count.
    let want_scales = [8.0, 8.0, 4.0, 4.0, 2.0, 2.0, 2.0, 4.0];
    for d in &devices {
        let make = |p: &Tensor| {
            AdamW::new(vec![p.clone()], AdamWConfig { lr: 0.1, weight_decay: 0.1, ..Default::default() }).unwrap()
        };
        let make_sgd =
            |p: &Tensor| Sgd::new(vec![p.clone()], SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).unwrap();
        let start = [1.0f32, -2.0, 0.5];
        let (p, q) =
            (Tensor::from_vec(start.to_vec(), &[3], d).unwrap(), Tensor::from_vec(start.to_vec(), &[3], d).unwrap());
        let (p, q) = (p.with_grad(), q.with_grad());
        let (mut adam, mut sgd) = (make(&p), make_sgd(&q));
        let config = GradScalerConfig { init_scale: 8.0, growth_interval: 3, ..Default::default() };
        let (mut scaler, mut scaler_sgd) = (GradScaler::new(config).unwrap(), GradScaler::new(config).unwrap());
        // The reference: the plain optimizers on the clean gradients only.
        let (rp, rq) = (
            Tensor::from_vec(start.to_vec(), &[3], d).unwrap().with_grad(),
            Tensor::from_vec(start.to_vec(), &[3], d).unwrap().with_grad(),
        );
        let (mut ref_adam, mut ref_sgd) = (make(&rp), make_sgd(&rq));
        let mut scale = 8.0f32;
        let mut outcomes = Vec::new();
        for (i, g) in grads.iter().enumerate() {
            let scaled: Vec<f32> = g.iter().map(|v| v * scale).collect();
            set_grad(&p, &scaled);
            set_grad(&q, &scaled);
            let before_p = p.to_vec::<f32>().unwrap();
            let (outcome, waits) = counting(d, || {
                let a = scaler.step(&mut adam).unwrap();
                scaler.update().unwrap();
                let s = scaler_sgd.step(&mut sgd).unwrap();
                scaler_sgd.update().unwrap();
                (a, s)
            });
            assert_eq!(waits, 0, "{d:?} step {i}: the scaler waited for the GPU");
            let clean = g.iter().all(|v| v.is_finite());
            assert_eq!(outcome.0.stepped().unwrap(), clean, "{d:?} step {i}");
            assert_eq!(outcome.1.stepped().unwrap(), clean, "{d:?} step {i} (sgd)");
            outcomes.push(outcome);
            if clean {
                set_grad(&rp, g);
                set_grad(&rq, g);
                ref_adam.step().unwrap();
                ref_sgd.step().unwrap();
            } else {
                assert_eq!(p.to_vec::<f32>().unwrap(), before_p, "{d:?} step {i}: a skipped step moved the parameter");
            }
            assert_eq!(
                p.to_vec::<f32>().unwrap(),
                rp.to_vec::<f32>().unwrap(),
                "{d:?} step {i}: AdamW differs from the clean-only run"
            );
            assert_eq!(
                q.to_vec::<f32>().unwrap(),
                rq.to_vec::<f32>().unwrap(),
                "{d:?} step {i}: SGD differs from the clean-only run"
            );
            let got = scaler.get_scale().unwrap();
            assert_eq!(got, want_scales[i], "{d:?} step {i}: scale");
            assert_eq!(scaler_sgd.get_scale().unwrap(), got);
            scale = got as f32;
        }
        // Skipped steps do not count, for the optimizer and for each parameter.
        assert_eq!((adam.step_count(), sgd.step_count()), (6, 6), "{d:?}");
        let step_of = |o: &dyn Optimizer| o.state().into_iter().find(|(n, _)| n == "0.step").unwrap().1.item().unwrap();
        assert_eq!((step_of(&adam), step_of(&sgd)), (6.0, 6.0), "{d:?}");
        assert_eq!(scaler.state().unwrap(), (4.0, 0), "{d:?}");
        // The outcomes stay readable after later iterations.
        let stepped: Vec<bool> = outcomes.iter().map(|o| o.0.stepped().unwrap()).collect();
        assert_eq!(stepped, grads.iter().map(|g| g.iter().all(|v| v.is_finite())).collect::<Vec<_>>());
    }
}

/// Gradients of odd sizes on several parameters, on the CPU and the GPU.
fn grads_for(d: &Device, scale: f64) -> Vec<Tensor> {
    [1usize, 7, 1023, 4097]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = Tensor::zeros(&[n], d).unwrap().with_grad();
            p.set_grad(Some(random(&[n], DType::F32, 40 + i as u64, -scale, scale).to(d).unwrap())).unwrap();
            p
        })
        .collect()
}

/// What `clip_grad_norm_` did before it stayed on the device: the squared sums read back as
/// f64, the factor in f64, applied to each gradient in f32.
fn host_clip(grads: &[Vec<f64>], max_norm: f64) -> (f64, Vec<Vec<f64>>) {
    let norm = grads.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    let coef = max_norm / (norm + 1e-6);
    let scaled = if norm.is_finite() && coef < 1.0 {
        grads.iter().map(|g| g.iter().map(|v| f64::from((*v as f32) * (coef as f32))).collect()).collect()
    } else {
        grads.to_vec()
    };
    (norm, scaled)
}

#[test]
fn clip_grad_norm_on_the_device_matches_the_host_path_and_the_cpu() {
    let mut devices = vec![Device::cpu()];
    devices.extend(own_gpu("clip_grad_norm_on_the_device_matches_the_host_path_and_the_cpu"));
    for max_norm in [0.5, 1e6, 0.0] {
        let mut results: Vec<(f64, Vec<Vec<f64>>)> = Vec::new();
        for d in &devices {
            let params = grads_for(d, 1.0);
            let before: Vec<Vec<f64>> = params.iter().map(|p| p.grad().unwrap().to_f64_vec().unwrap()).collect();
            let (norm, waits) = counting(d, || clip_grad_norm_(&params, max_norm).unwrap());
            assert_eq!(waits, 0, "{d:?}: clipping waited for the GPU");
            assert_eq!((norm.shape(), norm.device()), (&[][..], d));
            let norm = norm.item().unwrap();
            let after: Vec<Vec<f64>> = params.iter().map(|p| p.grad().unwrap().to_f64_vec().unwrap()).collect();
            let (want_norm, want) = host_clip(&before, max_norm);
            assert_close(&format!("{d:?} norm (max {max_norm})"), &[norm], &[want_norm], 1e-6, 0.0);
            for (i, (a, w)) in after.iter().zip(&want).enumerate() {
                assert_close(&format!("{d:?} grad {i} (max {max_norm})"), a, w, 2e-6, 1e-12);
            }
            if max_norm == 1e6 {
                assert_eq!(after, before, "{d:?}: below the threshold the factor is exactly 1");
            }
            results.push((norm, after));
        }
        if let [(cn, cg), (gn, gg)] = &results[..] {
            assert_close("gpu vs cpu norm", &[*gn], &[*cn], 1e-6, 0.0);
            for (a, b) in gg.iter().zip(cg) {
                assert_close("gpu vs cpu clipped grad", a, b, 2e-6, 1e-12);
            }
        }
    }
}

/// Kiln leaves gradients alone when the norm is not finite (PyTorch would scale them into zeros
/// and NaNs) and returns the inf or NaN norm; nothing is read back either way.
#[test]
fn clip_grad_norm_leaves_gradients_alone_when_the_norm_is_not_finite() {
    let mut devices = vec![Device::cpu()];
    devices.extend(own_gpu("clip_grad_norm_leaves_gradients_alone_when_the_norm_is_not_finite"));
    for d in &devices {
        for (bad, norm_is_nan) in [(f32::INFINITY, false), (f32::NAN, true), (3e38, false)] {
            let params = grads_for(d, 1.0);
            let mut g = params[2].grad().unwrap().to_vec::<f32>().unwrap();
            g[100] = bad;
            g[101] = bad;
            set_grad(&params[2], &g);
            // Bits, except that every NaN counts as one: GPUs may return a NaN with another
            // payload (NVIDIA's does for NaN · 1).
            let bits = |p: &Tensor| -> Vec<u64> {
                p.grad()
                    .unwrap()
                    .to_f64_vec()
                    .unwrap()
                    .iter()
                    .map(|v| if v.is_nan() { f64::NAN.to_bits() } else { v.to_bits() })
                    .collect()
            };
            let before: Vec<Vec<u64>> = params.iter().map(bits).collect();
            let (norm, waits) = counting(d, || clip_grad_norm_(&params, 1.0).unwrap());
            assert_eq!(waits, 0, "{d:?}");
            let norm = norm.item().unwrap();
            assert!(if norm_is_nan { norm.is_nan() } else { norm == f64::INFINITY }, "{d:?} {bad}: norm {norm}");
            let after: Vec<Vec<u64>> = params.iter().map(bits).collect();
            assert_eq!(after, before, "{d:?} {bad}: gradients changed");
        }
    }
}
