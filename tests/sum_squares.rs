//! Gradient clipping's multi-tensor kernels: the sum of squares (`optim_kernels::sum_squares`,
//! the norm) and the in-place scale (`optim_kernels::scale_each_`). The GPU kernels against
//! values computed here in f64 and against the CPU oracle, over many tensors of odd sizes (1, 7,
//! 1023, 4097, empty, and ones that take several workgroups), f32 and f16 mixed, strided and
//! broadcast views (summed; the scale refuses them), more tensors than one dispatch binds; f64
//! stays f64 on the CPU; shared storage copied before scaling, a tensor listed twice scaled
//! once; typed errors; and the dispatch count of `clip_grad_norm_` (a few kernels for all
//! gradients, no per-gradient reduction or multiply).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, values};
use kiln::HostData;
use kiln::optim_kernels::{scale_each_, sum_squares};
use kiln::prelude::*;

fn tensor(v: &[f64], shape: &[usize], dtype: DType, d: &Device) -> Tensor {
    Tensor::from_host(HostData::from_f64(v, dtype), shape, d).unwrap()
}

/// Σ x² of the values a tensor holds, in f64 (what the kernels must approach).
fn reference(t: &Tensor) -> f64 {
    t.to_f64_vec().unwrap().iter().map(|x| x * x).sum()
}

/// Sizes of one or a few elements, odd ones, one past a workgroup's block, and several
/// workgroups' worth (4096 elements a workgroup, so 70,001 takes 18).
const SIZES: [usize; 12] = [1, 7, 1023, 4097, 0, 3, 70_001, 64, 5, 1024, 8191, 2];

#[test]
fn sum_squares_matches_f64_sums_and_the_cpu() {
    let Some(g) = common::gpu("sum_squares_matches_f64_sums_and_the_cpu") else { return };
    let f16 = g.gpu_context().is_some_and(|c| c.has_f16());
    for (case, mixed) in [("f32", false), ("f32 and f16", true)] {
        if mixed && !f16 {
            eprintln!("sum_squares: {} has no SHADER_F16: mixed f16 not checked", g.describe());
            continue;
        }
        // f16 in every third tensor when mixed: runs of one dtype are cut where it changes.
        let dtype = |i: usize| if mixed && i % 3 == 1 { DType::F16 } else { DType::F32 };
        let host: Vec<Vec<f64>> = SIZES.iter().enumerate().map(|(i, &n)| values(n, 40 + i as u64, -2.0, 2.0)).collect();
        let mut want = Vec::new();
        let mut outs = Vec::new();
        for d in [Device::cpu(), g.clone()] {
            let mut ts: Vec<Tensor> =
                host.iter().enumerate().map(|(i, v)| tensor(v, &[v.len()], dtype(i), &d)).collect();
            // A transposed view and a broadcast one (stride 0) are read as the tensors they are.
            let m = tensor(&values(7 * 13, 90, -1.0, 1.0), &[7, 13], DType::F32, &d);
            ts.push(m.t().unwrap());
            let row = tensor(&values(5, 91, -1.0, 1.0), &[1, 5], DType::F32, &d);
            ts.push(row.expand(&[9, 5]).unwrap());
            want = ts.iter().map(reference).collect::<Vec<f64>>();
            let s = sum_squares(&ts).unwrap();
            assert_eq!((s.shape(), s.dtype()), (&[ts.len()][..], DType::F32), "{case} on {}", d.describe());
            outs.push(s.to_f64_vec().unwrap());
        }
        assert_close(&format!("sum_squares {case} on the CPU"), &outs[0], &want, 1e-6, 1e-9);
        assert_close(&format!("sum_squares {case} on the GPU"), &outs[1], &want, 2e-5, 1e-6);
    }
}

#[test]
fn sum_squares_binds_many_tensors_over_several_dispatches() {
    let Some(g) = common::gpu("sum_squares_binds_many_tensors_over_several_dispatches") else { return };
    // 41 tensors: past any one dispatch's bindings; every size from 1 to 41 (+ 4090 for a
    // few), so every slot of a dispatch meets a different length.
    let host: Vec<Vec<f64>> =
        (0..41).map(|i| values(i + 1 + 4090 * (i % 7 == 3) as usize, 200 + i as u64, -3.0, 3.0)).collect();
    let ts: Vec<Tensor> = host.iter().map(|v| tensor(v, &[v.len()], DType::F32, &g)).collect();
    let got = sum_squares(&ts).unwrap().to_f64_vec().unwrap();
    let want: Vec<f64> = ts.iter().map(reference).collect();
    assert_close("41 tensors", &got, &want, 2e-5, 1e-6);
}

#[test]
fn sum_squares_keeps_f64_in_f64_on_the_cpu() {
    let d = Device::cpu();
    let a = tensor(&[3.0, 1e-5], &[2], DType::F64, &d);
    let b = tensor(&[0.5], &[1], DType::F64, &d);
    let s = sum_squares(&[a.clone(), b]).unwrap();
    assert_eq!(s.dtype(), DType::F64);
    // 9 + 1e-10 is 9 in f32: only an f64 sum keeps it.
    assert_eq!(s.to_vec::<f64>().unwrap(), vec![9.0 + 1e-10, 0.25]);
    // With an f32 tensor beside it the result is f32.
    let c = tensor(&[2.0], &[1], DType::F32, &d);
    assert_eq!(sum_squares(&[a, c]).unwrap().dtype(), DType::F32);
}

#[test]
fn sum_squares_refuses_bad_arguments_with_typed_errors() {
    let d = Device::cpu();
    assert!(matches!(sum_squares(&[]), Err(kiln::Error::InvalidArgument { op: "sum_squares", .. })));
    let ints = Tensor::full_dtype(&[3], 1.0, DType::I32, &d).unwrap();
    let x = tensor(&[1.0], &[1], DType::F32, &d);
    assert!(matches!(sum_squares(&[x.clone(), ints]), Err(kiln::Error::UnsupportedDType { op: "sum_squares", .. })));
    if let Some(g) = common::gpu("sum_squares_refuses_bad_arguments_with_typed_errors") {
        let y = tensor(&[1.0], &[1], DType::F32, &g);
        assert!(matches!(sum_squares(&[x.clone(), y]), Err(kiln::Error::DeviceMismatch { op: "sum_squares", .. })));
    }
    // The inputs are untouched.
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![1.0]);
}

/// `clip_grad_norm_` over 20 gradients: a few `sum_squares` dispatches for all of them and no
/// reduction per gradient (the old path ran a square, one or two reduction passes and an add
/// per gradient: 60–80 dispatches before the scaling).
#[test]
fn clip_grad_norm_sums_all_gradients_in_a_few_dispatches() {
    const TEST: &str = "clip_grad_norm_sums_all_gradients_in_a_few_dispatches";
    if common::gpu(TEST).is_none() {
        return;
    }
    // A context of its own, so that the counts are this test's alone.
    let options = kiln_wgpu::ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..Default::default() };
    let ctx = kiln_wgpu::GpuContext::new_with(&kiln_wgpu::context::AdapterChoice::from_env(), &options)
        .expect("a profiled context");
    let d = Device::Gpu(ctx.clone());
    let params: Vec<Tensor> = (0..20).map(|i| Tensor::zeros(&[3 + 50 * i], &d).unwrap().with_grad()).collect();
    let host: Vec<Vec<f64>> =
        params.iter().enumerate().map(|(i, p)| values(p.numel(), 300 + i as u64, -1.0, 1.0)).collect();
    for (p, v) in params.iter().zip(&host) {
        p.set_grad(Some(tensor(v, &[v.len()], DType::F32, &d))).unwrap();
    }
    d.sync().unwrap();
    let before = ctx.profile_counts();
    let norm = kiln_nn::clip_grad_norm_(&params, 1.0).unwrap();
    d.sync().unwrap();
    let after = ctx.profile_counts();
    let count = |rows: &[(String, u64)], prefix: &str| {
        rows.iter().filter(|r| r.0.starts_with(prefix)).map(|r| r.1).sum::<u64>()
    };
    let bound = (ctx.limits.max_storage_buffers_per_shader_stage as u64).saturating_sub(2).clamp(1, 8);
    let sums = count(&after, "sum_squares|") - count(&before, "sum_squares|");
    assert_eq!(sums, 20u64.div_ceil(bound) + 1, "sum_squares kernels (first passes + one finish):\n{after:?}");
    let scales = count(&after, "scale_each|") - count(&before, "scale_each|");
    assert_eq!(scales, 20u64.div_ceil(bound), "scale_each kernels:\n{after:?}");
    // Besides those: the total's reduction and the norm/factor chain (fused; a handful).
    let total = |rows: &[(String, u64)]| rows.iter().map(|r| r.1).sum::<u64>();
    let others = total(&after) - total(&before) - sums - scales;
    assert!(others <= 6, "{others} other dispatches:\n{after:?}");
    // One reduction: the device's per-gradient sums to its total.
    let reductions = count(&after, "reduce|") - count(&before, "reduce|");
    assert!(reductions <= 2, "{reductions} reduction dispatches:\n{after:?}");
    let want = host.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    assert_close("norm", &[norm.item().unwrap()], &[want], 1e-5, 0.0);
    for (p, v) in params.iter().zip(&host) {
        let scaled: Vec<f64> = v.iter().map(|x| x * (1.0 / (want + 1e-6))).collect();
        assert_close("clipped gradient", &p.grad().unwrap().to_f64_vec().unwrap(), &scaled, 1e-5, 1e-7);
    }
}

/// `x ← x · f` on the GPU and the CPU against f64 products of the same values.
#[test]
fn scale_each_matches_f64_products_and_the_cpu() {
    let Some(g) = common::gpu("scale_each_matches_f64_products_and_the_cpu") else { return };
    let f16 = g.gpu_context().is_some_and(|c| c.has_f16());
    let host: Vec<Vec<f64>> = SIZES.iter().enumerate().map(|(i, &n)| values(n, 70 + i as u64, -2.0, 2.0)).collect();
    let factor = 0.371;
    for (case, mixed) in [("f32", false), ("f32 and f16", true)] {
        if mixed && !f16 {
            eprintln!("scale_each_: {} has no SHADER_F16: mixed f16 not checked", g.describe());
            continue;
        }
        let dtype = |i: usize| if mixed && i % 3 == 1 { DType::F16 } else { DType::F32 };
        let mut outs = Vec::new();
        for d in [Device::cpu(), g.clone()] {
            let ts: Vec<Tensor> = host.iter().enumerate().map(|(i, v)| tensor(v, &[v.len()], dtype(i), &d)).collect();
            scale_each_(&ts, &Tensor::full(&[], factor, &d).unwrap()).unwrap();
            outs.push(ts.iter().map(|t| t.to_f64_vec().unwrap()).collect::<Vec<_>>());
        }
        for (i, v) in host.iter().enumerate() {
            // The stored inputs (f16-rounded where f16) times the factor rounded to f32.
            let stored = tensor(v, &[v.len()], dtype(i), &Device::cpu()).to_f64_vec().unwrap();
            let want: Vec<f64> = stored.iter().map(|x| x * f64::from(factor as f32)).collect();
            let (rtol, atol) = if dtype(i) == DType::F16 { (1e-3, 1e-4) } else { (1e-6, 1e-9) };
            assert_close(&format!("{case} tensor {i} on the CPU"), &outs[0][i], &want, rtol, atol);
            assert_close(&format!("{case} tensor {i} on the GPU"), &outs[1][i], &want, rtol, atol);
        }
    }
}

#[test]
fn scale_each_copies_shared_storage_and_scales_a_repeated_tensor_once() {
    let mut devices = vec![Device::cpu()];
    devices.extend(common::gpu("scale_each_copies_shared_storage_and_scales_a_repeated_tensor_once"));
    for d in devices {
        let a = tensor(&[1.0, 2.0, 3.0, 4.0], &[4], DType::F32, &d);
        // `view` shares a's storage: it keeps the old values.
        let view = a.reshape(&[2, 2]).unwrap();
        let b = tensor(&[5.0, 6.0, 7.0], &[3], DType::F32, &d);
        scale_each_(&[a.clone(), b.clone(), a.clone()], &Tensor::full(&[1], 2.0, &d).unwrap()).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0, 8.0], "a on {}", d.describe());
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![10.0, 12.0, 14.0], "b on {}", d.describe());
        assert_eq!(view.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0], "the view on {}", d.describe());
        // Errors leave every tensor as it was.
        let f = Tensor::full(&[], 2.0, &d).unwrap();
        let two = Tensor::full(&[2], 2.0, &d).unwrap();
        let strided = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32, &d).t().unwrap();
        let ints = Tensor::full_dtype(&[3], 1.0, DType::I32, &d).unwrap();
        assert!(matches!(
            scale_each_(std::slice::from_ref(&b), &two),
            Err(kiln::Error::ShapeMismatch { op: "scale_each_", .. })
        ));
        assert!(matches!(
            scale_each_(&[b.clone(), strided], &f),
            Err(kiln::Error::InvalidArgument { op: "scale_each_", .. })
        ));
        assert!(matches!(
            scale_each_(&[b.clone(), ints], &f),
            Err(kiln::Error::UnsupportedDType { op: "scale_each_", .. })
        ));
        assert!(matches!(
            scale_each_(&[b.clone(), f.clone()], &f),
            Err(kiln::Error::InvalidArgument { op: "scale_each_", .. })
        ));
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![10.0, 12.0, 14.0], "b after the errors on {}", d.describe());
    }
}

/// Gradients past the binding limit (64 KiB here): the sum of squares takes the chunked square
/// and reduction for them, the scale the windowed in-place path; small ones beside them still
/// share dispatches.
#[test]
fn clip_kernels_take_tensors_past_the_binding_limit() {
    const TEST: &str = "clip_kernels_take_tensors_past_the_binding_limit";
    let Some(g) = common::own_gpu(TEST, |l| l.max_storage_buffer_binding_size = 64 * 1024) else { return };
    // 40,001 f32 (160 KB) and 30,001 (120 KB) past the limit, between small ones.
    let sizes = [7, 40_001, 1023, 30_001, 5];
    let host: Vec<Vec<f64>> = sizes.iter().enumerate().map(|(i, &n)| values(n, 500 + i as u64, -1.0, 1.0)).collect();
    let ts: Vec<Tensor> = host.iter().map(|v| tensor(v, &[v.len()], DType::F32, &g)).collect();
    let want: Vec<f64> = host.iter().map(|v| v.iter().map(|x| x * x).sum()).collect();
    assert_close("sum_squares past the limit", &sum_squares(&ts).unwrap().to_f64_vec().unwrap(), &want, 2e-5, 1e-6);
    scale_each_(&ts, &Tensor::full(&[], 0.25, &g).unwrap()).unwrap();
    for (i, (t, v)) in ts.iter().zip(&host).enumerate() {
        let stored = tensor(v, &[v.len()], DType::F32, &Device::cpu()).to_f64_vec().unwrap();
        let scaled: Vec<f64> = stored.iter().map(|x| x * 0.25).collect();
        assert_close(&format!("scaled tensor {i}"), &t.to_f64_vec().unwrap(), &scaled, 1e-6, 1e-9);
    }
}
