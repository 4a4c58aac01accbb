//! Kiln in a real browser: these tests are compiled to wasm32 and run by
//! `wasm-bindgen-test-runner` in headless Chromium, whose WebGPU adapter (SwiftShader in CI) runs
//! the WGSL kernels; the CPU backend, compiled into the same page, is the oracle. Every read is
//! asynchronous, as a page requires; the blocking forms are checked to refuse with a typed error.
//!
//! ```text
//! CHROMEDRIVER=/usr/bin/chromedriver CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   KILN_REQUIRE_GPU=1 cargo test --target wasm32-unknown-unknown -p kiln-web-tests
//! ```

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kiln::prelude::*;
use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
use kiln_nn::{Linear, Module, ModuleExt, Relu, Sequential};
use kiln_web_tests::{assert_close, check, gpu, random, read, values};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// f32 tolerances for kernels against the CPU backend (different summation orders).
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

#[wasm_bindgen_test]
async fn the_page_has_a_webgpu_adapter() {
    let Some(dev) = gpu("the_page_has_a_webgpu_adapter").await else { return };
    let described = dev.describe();
    assert!(described.contains("browserwebgpu"), "{described}");
    // A second request shares the device, and the blocking form now finds it open.
    assert_eq!(Device::gpu_async().await.expect("second gpu_async"), dev);
    assert_eq!(Device::gpu().expect("Device::gpu after gpu_async"), dev);
}

#[wasm_bindgen_test]
async fn elementwise_ops_match_the_cpu() {
    let Some(g) = gpu("elementwise_ops_match_the_cpu").await else { return };
    for (i, &n) in [1usize, 7, 1023, 4097].iter().enumerate() {
        let x = random(&[n], 10 + i as u64, -2.0, 2.0);
        let y = random(&[n], 20 + i as u64, 0.5, 3.0);
        let s = format!("n={n}");
        check(&format!("exp {s}"), &g, &[x.clone()], RTOL, ATOL, |t| t[0].exp()).await;
        check(&format!("tanh {s}"), &g, &[x.clone()], RTOL, ATOL, |t| t[0].tanh()).await;
        check(&format!("sigmoid {s}"), &g, &[x.clone()], RTOL, ATOL, |t| t[0].sigmoid()).await;
        check(&format!("log {s}"), &g, &[y.clone()], RTOL, ATOL, |t| t[0].log()).await;
        check(&format!("sqrt {s}"), &g, &[y.clone()], RTOL, ATOL, |t| t[0].sqrt()).await;
        check(&format!("div {s}"), &g, &[x.clone(), y.clone()], RTOL, ATOL, |t| &t[0] / &t[1]).await;
        check(&format!("pow {s}"), &g, &[y.clone(), x.clone()], RTOL, ATOL, |t| t[0].pow(&t[1])).await;
        check(&format!("maximum {s}"), &g, &[x.clone(), y.clone()], RTOL, ATOL, |t| t[0].maximum(&t[1])).await;
        check(&format!("fused chain {s}"), &g, &[x.clone(), y.clone()], RTOL, ATOL, |t| {
            t[0].mul_scalar(0.5)?.add(&t[1])?.tanh()?.mul(&t[0])
        })
        .await;
        check(&format!("compare and where {s}"), &g, &[x.clone(), y.clone()], RTOL, ATOL, |t| {
            Tensor::where_(&t[0].gt(&t[1].sub_scalar(1.5)?)?, &t[0], &t[1])
        })
        .await;
        check(&format!("cast to i32 and back {s}"), &g, &[x.clone()], RTOL, ATOL, |t| {
            t[0].mul_scalar(10.0)?.to_dtype(DType::I32)?.to_dtype(DType::F32)
        })
        .await;
    }
}

#[wasm_bindgen_test]
async fn strided_and_broadcast_inputs_match_the_cpu() {
    let Some(g) = gpu("strided_and_broadcast_inputs_match_the_cpu").await else { return };
    let a = random(&[7, 13], 1, -1.0, 1.0);
    let row = random(&[13], 2, -1.0, 1.0);
    let col = random(&[7, 1], 3, -1.0, 1.0);
    let b = random(&[13, 7], 4, -1.0, 1.0);
    check("broadcast row", &g, &[a.clone(), row.clone()], RTOL, ATOL, |t| &t[0] + &t[1]).await;
    check("broadcast column", &g, &[a.clone(), col.clone()], RTOL, ATOL, |t| &t[0] * &t[1]).await;
    check("transposed operand", &g, &[a.clone(), b.clone()], RTOL, ATOL, |t| &t[0] - &t[1].t()?).await;
    check("narrowed view", &g, &[a.clone()], RTOL, ATOL, |t| t[0].narrow(1, 3, 9)?.exp()).await;
    check("expanded view", &g, &[col.clone()], RTOL, ATOL, |t| t[0].expand(&[7, 5])?.contiguous()).await;
    check("permute", &g, &[random(&[3, 5, 7], 5, -1.0, 1.0)], RTOL, ATOL, |t| t[0].permute(&[2, 0, 1])?.contiguous())
        .await;
}

#[wasm_bindgen_test]
async fn reductions_match_the_cpu() {
    let Some(g) = gpu("reductions_match_the_cpu").await else { return };
    for (i, &n) in [1usize, 7, 1023, 4097].iter().enumerate() {
        let x = random(&[3, n], 30 + i as u64, -2.0, 2.0);
        let s = format!("[3, {n}]");
        check(&format!("sum rows {s}"), &g, &[x.clone()], RTOL, 1e-3, |t| t[0].sum(&[-1], false)).await;
        check(&format!("sum columns {s}"), &g, &[x.clone()], RTOL, 1e-4, |t| t[0].sum(&[0], true)).await;
        check(&format!("max {s}"), &g, &[x.clone()], 0.0, 0.0, |t| t[0].max(&[-1], false)).await;
        check(&format!("argmax {s}"), &g, &[x.clone()], 0.0, 0.0, |t| t[0].argmax(-1, false)).await;
        check(&format!("softmax {s}"), &g, &[x.clone()], RTOL, ATOL, |t| t[0].softmax(-1)).await;
        check(&format!("log_softmax {s}"), &g, &[x.clone()], RTOL, 1e-4, |t| t[0].log_softmax(-1)).await;
        check(&format!("mean of transposed {s}"), &g, &[x.clone()], RTOL, ATOL, |t| t[0].t()?.mean(&[0], false)).await;
        check(&format!("cumsum {s}"), &g, &[x.clone()], 1e-4, 1e-3, |t| t[0].cumsum(-1)).await;
    }
}

#[wasm_bindgen_test]
async fn matmuls_match_the_cpu() {
    let Some(g) = gpu("matmuls_match_the_cpu").await else { return };
    for (m, k, n) in [(1, 1, 1), (7, 13, 5), (33, 65, 17), (128, 96, 130)] {
        let a = random(&[m, k], (m * k) as u64, -1.0, 1.0);
        let b = random(&[k, n], (k * n) as u64 + 1, -1.0, 1.0);
        let bt = random(&[n, k], (k * n) as u64 + 2, -1.0, 1.0);
        check(&format!("matmul {m}x{k}x{n}"), &g, &[a.clone(), b.clone()], 1e-4, 1e-4, |t| t[0].matmul(&t[1])).await;
        check(&format!("matmul by transposed {m}x{k}x{n}"), &g, &[a.clone(), bt.clone()], 1e-4, 1e-4, |t| {
            t[0].matmul(&t[1].t()?)
        })
        .await;
    }
    let a = random(&[3, 7, 11], 70, -1.0, 1.0);
    let b = random(&[11, 5], 71, -1.0, 1.0);
    check("batched matmul, broadcast rhs", &g, &[a, b], 1e-4, 1e-4, |t| t[0].matmul(&t[1])).await;
}

#[wasm_bindgen_test]
async fn index_conv_and_fused_ops_match_the_cpu() {
    let Some(g) = gpu("index_conv_and_fused_ops_match_the_cpu").await else { return };
    let x = random(&[9, 6], 80, -1.0, 1.0);
    let ids = Tensor::from_vec(vec![8u32, 0, 3, 3, 5], &[5], &Device::cpu()).expect("ids");
    check("index_select", &g, &[x.clone(), ids.clone()], 0.0, 0.0, |t| t[0].index_select(0, &t[1])).await;
    let gather_ids = Tensor::from_vec(
        values(9 * 2, 81, 0.0, 6.0).iter().map(|v| *v as u32).collect::<Vec<_>>(),
        &[9, 2],
        &Device::cpu(),
    )
    .expect("ids");
    check("gather", &g, &[x.clone(), gather_ids], 0.0, 0.0, |t| t[0].gather(1, &t[1])).await;
    check("cat", &g, &[x.clone(), random(&[2, 6], 82, -1.0, 1.0)], 0.0, 0.0, |t| {
        Tensor::cat(&[t[0].clone(), t[1].clone()], 0)
    })
    .await;
    check("pad", &g, &[x.clone()], 0.0, 0.0, |t| t[0].pad(&[(1, 0), (2, 3)], 0.5)).await;
    check("topk values", &g, &[x.clone()], 0.0, 0.0, |t| Ok(t[0].topk(3, true)?.0)).await;
    let img = random(&[2, 3, 9, 7], 83, -1.0, 1.0);
    let w = random(&[4, 3, 3, 3], 84, -0.5, 0.5);
    let bias = random(&[4], 85, -0.5, 0.5);
    let same = Conv2dOptions { padding: (1, 1), ..Default::default() };
    check("conv2d", &g, &[img.clone(), w, bias], 1e-4, 1e-4, |t| t[0].conv2d(&t[1], Some(&t[2]), same)).await;
    check("max_pool2d", &g, &[img.clone()], 0.0, 0.0, |t| t[0].max_pool2d((2, 2), (2, 2), (0, 0))).await;
    let h = random(&[5, 33], 86, -2.0, 2.0);
    let (gamma, beta) = (random(&[33], 87, 0.5, 1.5), random(&[33], 88, -0.5, 0.5));
    check("layer_norm", &g, &[h, gamma, beta], 1e-4, 1e-4, |t| t[0].layer_norm(&[33], Some(&t[1]), Some(&t[2]), 1e-5))
        .await;
    let (q, k, v) = (
        random(&[2, 3, 7, 8], 89, -1.0, 1.0),
        random(&[2, 3, 9, 8], 90, -1.0, 1.0),
        random(&[2, 3, 9, 8], 91, -1.0, 1.0),
    );
    check("attention", &g, &[q, k, v], 1e-4, 1e-4, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], false, None)
    })
    .await;
    let logits = random(&[6, 10], 92, -3.0, 3.0);
    let targets = Tensor::from_vec(vec![0u32, 9, 4, 4, 1, 7], &[6], &Device::cpu()).expect("targets");
    check("cross_entropy", &g, &[logits, targets], 1e-4, 1e-5, |t| kiln_nn::loss::cross_entropy_loss(&t[0], &t[1]))
        .await;
}

#[wasm_bindgen_test]
async fn random_numbers_are_the_same_on_both_devices() {
    let Some(g) = gpu("random_numbers_are_the_same_on_both_devices").await else { return };
    kiln::manual_seed(7);
    let on_gpu = Tensor::randn(&[1023], &g).expect("randn gpu");
    kiln::manual_seed(7);
    let on_cpu = Tensor::randn(&[1023], &Device::cpu()).expect("randn cpu");
    assert_close("randn", &read(&on_gpu).await, &read(&on_cpu).await, 1e-5, 1e-5);
}

/// A 2-layer MLP on `device` with weights from fixed seeds, so that two devices get the same.
fn small_mlp(device: &Device) -> Sequential {
    kiln::manual_seed(3);
    Sequential::new()
        .add(Linear::new(5, 16, true, device).expect("linear"))
        .add(Relu)
        .add(Linear::new(16, 3, true, device).expect("linear"))
}

#[wasm_bindgen_test]
async fn mlp_gradients_match_the_cpu_and_central_differences() {
    let Some(g) = gpu("mlp_gradients_match_the_cpu_and_central_differences").await else { return };
    let x = random(&[11, 5], 100, -1.0, 1.0);
    let y = Tensor::from_vec(
        values(11, 101, 0.0, 3.0).iter().map(|v| *v as u32).collect::<Vec<_>>(),
        &[11],
        &Device::cpu(),
    )
    .expect("labels");
    let mut grads = Vec::new();
    for device in [Device::cpu(), g.clone()] {
        let model = small_mlp(&device);
        let loss = kiln_nn::loss::cross_entropy_loss(
            &model.forward(&x.to(&device).expect("x")).expect("forward"),
            &y.to(&device).expect("y"),
        )
        .expect("loss");
        loss.backward().expect("backward");
        let mut per_param = Vec::new();
        for (name, p) in model.named_parameters() {
            per_param.push((name, read(&p.grad().expect("grad")).await));
        }
        grads.push(per_param);
    }
    for ((name, cpu), (_, gpu)) in grads[0].iter().zip(&grads[1]) {
        assert_close(&format!("grad {name}"), gpu, cpu, 1e-4, 1e-5);
    }
    // The CPU gradients themselves against central differences in f64.
    let model = small_mlp(&Device::cpu());
    let params = model.parameters();
    let loss_f64 = |params: &[Tensor]| -> f64 {
        let h = x.to_dtype(DType::F64).unwrap().matmul(&params[0].to_dtype(DType::F64).unwrap().t().unwrap()).unwrap();
        let h = (&h + &params[1].to_dtype(DType::F64).unwrap()).unwrap().relu().unwrap();
        let o = h.matmul(&params[2].to_dtype(DType::F64).unwrap().t().unwrap()).unwrap();
        let o = (&o + &params[3].to_dtype(DType::F64).unwrap()).unwrap();
        kiln_nn::loss::cross_entropy_loss(&o, &y).unwrap().item().unwrap()
    };
    for (pi, (name, grad)) in grads[0].iter().enumerate() {
        let base = params[pi].to_f64_vec().expect("param");
        for idx in [0, base.len() / 2, base.len() - 1] {
            let eps = 1e-4;
            let shifted = |delta: f64| {
                let mut v = base.clone();
                v[idx] += delta;
                let mut ps: Vec<Tensor> = params.iter().map(|p| p.detach()).collect();
                ps[pi] =
                    Tensor::from_host(kiln::HostData::from_f64(&v, DType::F64), params[pi].shape(), &Device::cpu())
                        .unwrap();
                loss_f64(&ps)
            };
            let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
            assert!(
                (grad[idx] - numeric).abs() <= 1e-3 * numeric.abs() + 1e-4,
                "{name}[{idx}]: autograd {} vs central difference {numeric}",
                grad[idx]
            );
        }
    }
}

#[wasm_bindgen_test]
async fn an_mlp_trains_200_steps_in_the_page() {
    let Some(g) = gpu("an_mlp_trains_200_steps_in_the_page").await else { return };
    // Three classes told apart by which of three random directions a point leans towards.
    let n = 96;
    let x = random(&[n, 8], 200, -1.0, 1.0);
    let dirs = random(&[8, 3], 201, -1.0, 1.0);
    let labels: Vec<u32> = x.matmul(&dirs).unwrap().argmax(-1, false).unwrap().to_vec::<u32>().unwrap();
    let (xg, yg) = (x.to(&g).unwrap(), Tensor::from_vec(labels, &[n], &g).unwrap());
    kiln::manual_seed(4);
    let model = Sequential::new()
        .add(Linear::new(8, 32, true, &g).unwrap())
        .add(Relu)
        .add(Linear::new(32, 3, true, &g).unwrap());
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 0.02, ..Default::default() }).unwrap();
    let syncs_before = g.sync_count();
    let mut losses = Vec::new();
    for step in 0..200 {
        let loss = kiln_nn::loss::cross_entropy_loss(&model.forward(&xg).unwrap(), &yg).unwrap();
        opt.zero_grad();
        loss.backward().unwrap();
        opt.step().unwrap();
        // The loop records without waiting; the loss is read asynchronously every 50 steps.
        if step % 50 == 0 || step == 199 {
            losses.push(loss.item_async().await.unwrap());
        }
    }
    assert_eq!(g.sync_count() - syncs_before, losses.len() as u64, "only the loss reads wait for the GPU");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(first > 0.9, "the untrained loss is about ln 3: {losses:?}");
    assert!(last < 0.15, "200 Adam steps fit 96 points: {losses:?}");
}

#[wasm_bindgen_test]
async fn a_checkpoint_saved_to_bytes_loads_back() {
    let Some(g) = gpu("a_checkpoint_saved_to_bytes_loads_back").await else { return };
    let trained = small_mlp(&g);
    for p in trained.parameters() {
        p.set_data(&p.add_scalar(0.25).unwrap()).unwrap();
    }
    let bytes = kiln_nn::checkpoint::save_to_bytes_async(&trained).await.expect("save_to_bytes_async");
    kiln::manual_seed(99);
    let fresh = Sequential::new()
        .add(Linear::new(5, 16, true, &g).unwrap())
        .add(Relu)
        .add(Linear::new(16, 3, true, &g).unwrap());
    kiln_nn::checkpoint::load_from_bytes(&fresh, &bytes).expect("load_from_bytes");
    let x = random(&[4, 5], 300, -1.0, 1.0).to(&g).unwrap();
    let (a, b) = (read(&trained.forward(&x).unwrap()).await, read(&fresh.forward(&x).unwrap()).await);
    assert_eq!(a, b, "the loaded model computes what the saved one did");
    // The same bytes load into a CPU model too, and a flipped byte is caught.
    let cpu = small_mlp(&Device::cpu());
    kiln_nn::checkpoint::load_from_bytes(&cpu, &bytes).expect("load on the cpu");
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let err = kiln_nn::checkpoint::load_from_bytes(&cpu, &corrupt).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    // Saving to a path has no file system to go to: a typed error, not a panic.
    let err = kiln_nn::checkpoint::save(&cpu, "model.safetensors").unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("save_to_bytes_async"), "{err}");
}

#[wasm_bindgen_test]
async fn blocking_calls_and_bad_shapes_are_typed_errors() {
    let Some(g) = gpu("blocking_calls_and_bad_shapes_are_typed_errors").await else { return };
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &g).unwrap();
    let would_block = |r: Result<()>, op: &str, alternative: &str| match r {
        Err(Error::WouldBlock { op: o, alternative: a }) => assert_eq!((o, a), (op, alternative)),
        other => panic!("{op}: expected WouldBlock naming {alternative}, got {other:?}"),
    };
    would_block(t.to_vec::<f32>().map(drop), "to_vec", "to_vec_async");
    would_block(t.sum_all().unwrap().item().map(drop), "item", "item_async");
    would_block(g.sync(), "sync", "sync_async");
    would_block(Device::open_gpu("gpu").map(drop), "Device::gpu", "Device::gpu_async");
    let msg = t.to_vec::<f32>().unwrap_err().to_string();
    assert!(msg.contains("to_vec_async"), "{msg}");
    // The refused calls changed nothing: the async forms still work, and on the CPU the
    // blocking forms do too.
    g.sync_async().await.unwrap();
    assert_eq!(t.to_vec_async::<f32>().await.unwrap(), vec![1.0, 2.0, 3.0]);
    would_block(t.to(&Device::cpu()).map(drop), "to", "to_async");
    assert_eq!(t.to_async(&Device::cpu()).await.unwrap().sum_all().unwrap().item().unwrap(), 6.0);
    let a = Tensor::zeros(&[2, 3], &g).unwrap();
    let b = Tensor::zeros(&[4, 5], &g).unwrap();
    let err = a.matmul(&b).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }) && err.to_string().contains("[2, 3]"), "{err}");
    let err = (&a + &b).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = Tensor::from_vec(vec![1.0f32; 5], &[2, 3], &g).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. } | Error::InvalidArgument { .. }), "{err}");
    assert_eq!(read(&a).await, vec![0.0; 6], "a failed op leaves its inputs intact");
}
