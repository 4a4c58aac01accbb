//! Loss scaling's fused unscale-and-check (`Tensor::unscale_check_`, what `GradScaler` runs
//! once per gradient): the GPU kernel against the CPU oracle on random data of odd and
//! multiple-of-4 (vec4 kernel) lengths, f32 and f16, with inf/NaN at the first, a middle and the
//! last element, finite products that overflow, a flag that stays set, gradients past the
//! binding limit, copy-on-write of shared storage, typed errors; and through `GradScaler`:
//! gradients shared between parameters, f64 CPU gradients, and the dispatch count (one kernel
//! per gradient, no reduction). Every comparison also runs `unscale_check_by_`, which reads the
//! scale on the device (GradScaler's form).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, values};
use kiln::HostData;
use kiln::optim_kernels::OptimKernels;
use kiln::prelude::*;
use kiln_nn::{GradScaler, GradScalerConfig, Sgd, SgdConfig};

fn flag(d: &Device) -> Tensor {
    Tensor::full_dtype(&[1], 0.0, DType::U32, d).unwrap()
}

fn flag_value(f: &Tensor) -> u32 {
    f.to_vec::<u32>().unwrap()[0]
}

fn tensor(v: &[f64], dtype: DType, d: &Device) -> Tensor {
    Tensor::from_host(HostData::from_f64(v, dtype), &[v.len()], d).unwrap()
}

/// f32, and f16 where the adapter has SHADER_F16 (said on stderr when it has not).
fn float_dtypes(test: &str, g: &Device) -> Vec<DType> {
    if g.gpu_context().is_some_and(|c| c.has_f16()) {
        vec![DType::F32, DType::F16]
    } else {
        eprintln!("{test}: {} has no SHADER_F16: f16 not checked", g.describe());
        vec![DType::F32]
    }
}

/// The op on the CPU and on `g` over the same values: results agree (inf with inf of the same
/// sign, NaN with NaN) and so do the flags, which must equal `want_flag`. Both forms run: the
/// factor from the host (`unscale_check_`), and `1 / scale` read on the device
/// (`unscale_check_by_`, GradScaler's) with `scale = 1 / inv` as an f32.
fn compare(what: &str, g: &Device, v: &[f64], dtype: DType, inv: f64, want_flag: u32) {
    for on_device in [false, true] {
        let what = &format!("{what}{}", if on_device { " (scale on the device)" } else { "" });
        let mut outs = Vec::new();
        for d in [Device::cpu(), g.clone()] {
            let t = tensor(v, dtype, &d);
            let f = flag(&d);
            let done = if on_device {
                t.unscale_check_by_(&Tensor::full(&[], 1.0 / inv, &d).unwrap(), &f)
            } else {
                t.unscale_check_(inv, &f)
            };
            done.unwrap_or_else(|e| panic!("{what} on {}: {e}", d.describe()));
            assert_eq!(flag_value(&f), want_flag, "{what}: flag on {}", d.describe());
            outs.push(t.to_f64_vec().unwrap());
        }
        // Both sides multiply in f32 and round once to the dtype: only a driver's rounding differs.
        let rtol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
        assert_close(what, &outs[1], &outs[0], rtol, 0.0);
        // The oracle itself against f64 arithmetic, for the finite results.
        let stored: Vec<f64> = HostData::from_f64(v, dtype).to_f64_vec();
        for (i, (&x, &y)) in stored.iter().zip(&outs[0]).enumerate() {
            let want = x * inv;
            if want.is_finite() && y.is_finite() {
                assert!((y - want).abs() <= 2.0 * rtol * want.abs(), "{what}: cpu element {i}: {y} vs {x}·{inv}");
            }
        }
    }
}

#[test]
fn unscale_check_matches_cpu_with_and_without_inf_or_nan() {
    const TEST: &str = "unscale_check_matches_cpu_with_and_without_inf_or_nan";
    let Some(g) = common::gpu(TEST) else { return };
    for dtype in float_dtypes(TEST, &g) {
        for n in [1usize, 4, 7, 1023, 1024, 4096, 4097] {
            let clean = values(n, n as u64, -1000.0, 1000.0);
            for inv in [1.0 / 1024.0, 1.0 / 3.0] {
                compare(&format!("{dtype} n={n} inv={inv} clean"), &g, &clean, dtype, inv, 0);
            }
            let mut cases: Vec<(&str, Vec<(usize, f64)>)> = vec![
                ("inf first", vec![(0, f64::INFINITY)]),
                ("-inf last", vec![(n - 1, f64::NEG_INFINITY)]),
                ("NaN middle", vec![(n / 2, f64::NAN)]),
            ];
            if n > 300 {
                // Two workgroups see bad values; with vec4, lanes other than the first.
                cases.push(("inf and NaN far apart", vec![(1, f64::INFINITY), (n - 2, f64::NAN)]));
                // Element 1028: in the second workgroup for 1024 and 4096 (vec4: unit 257).
                cases.push(("-inf at element 1028 mod n", vec![(1028 % n, f64::NEG_INFINITY)]));
            }
            for (case, at) in cases {
                let mut v = clean.clone();
                for &(i, x) in &at {
                    v[i] = x;
                }
                compare(&format!("{dtype} n={n} {case}"), &g, &v, dtype, 1.0 / 1024.0, 1);
            }
        }
    }
}

#[test]
fn unscale_check_flags_a_finite_product_that_overflows() {
    const TEST: &str = "unscale_check_flags_a_finite_product_that_overflows";
    let Some(g) = common::gpu(TEST) else { return };
    for dtype in float_dtypes(TEST, &g) {
        let big = if dtype == DType::F16 { 40000.0 } else { 3e38 };
        for n in [5usize, 8] {
            let mut v = values(n, 7, -1.0, 1.0);
            v[n - 2] = big;
            // 40000·1.6 = 64000 still fits f16; 40000·1.7 = 68000 does not. 3e38·1.6 > f32::MAX.
            let fits = dtype == DType::F16;
            compare(&format!("{dtype} n={n} ×1.6"), &g, &v, dtype, 1.6, u32::from(!fits));
            compare(&format!("{dtype} n={n} ×1.7"), &g, &v, dtype, 1.7, 1);
        }
    }
    // Around where f16's rounding turns to inf (65520, halfway past 65504): a product of 65518
    // is stored as 65504, one of 65522 as inf.
    if g.gpu_context().is_some_and(|c| c.has_f16()) {
        compare("f16 65504·(65518/65504)", &g, &[65504.0, 1.0, 2.0, 3.0], DType::F16, 65518.0 / 65504.0, 0);
        compare("f16 65504·(65522/65504)", &g, &[65504.0, 1.0, 2.0, 3.0], DType::F16, 65522.0 / 65504.0, 1);
    }
}

#[test]
fn unscale_check_flag_is_only_ever_set() {
    const TEST: &str = "unscale_check_flag_is_only_ever_set";
    let Some(g) = common::gpu(TEST) else { return };
    for d in [Device::cpu(), g.clone()] {
        for dtype in float_dtypes(TEST, &g) {
            let f = flag(&d);
            let clean = || tensor(&values(37, 3, -4.0, 4.0), dtype, &d);
            clean().unscale_check_(0.5, &f).unwrap();
            assert_eq!(flag_value(&f), 0, "{} {dtype}: clean gradient set the flag", d.describe());
            let mut bad = values(37, 4, -4.0, 4.0);
            bad[20] = f64::NAN;
            tensor(&bad, dtype, &d).unscale_check_(0.5, &f).unwrap();
            assert_eq!(flag_value(&f), 1, "{} {dtype}: NaN not flagged", d.describe());
            for _ in 0..3 {
                clean().unscale_check_(0.5, &f).unwrap();
                assert_eq!(flag_value(&f), 1, "{} {dtype}: a clean gradient cleared the flag", d.describe());
            }
        }
    }
}

#[test]
fn unscale_check_past_the_binding_limit_matches_cpu() {
    const TEST: &str = "unscale_check_past_the_binding_limit_matches_cpu";
    const LIMIT: u64 = 64 << 10;
    let Some(g) = common::own_gpu(TEST, |l| l.max_storage_buffer_binding_size = LIMIT) else { return };
    for dtype in float_dtypes(TEST, &g) {
        // f32: 160 KB over three 64 KiB windows; f16: an odd count, 140 KB.
        let n = if dtype == DType::F16 { 70_001 } else { 40_001 };
        let clean = values(n, 11, -100.0, 100.0);
        compare(&format!("{dtype} n={n} clean"), &g, &clean, dtype, 1.0 / 3.0, 0);
        for at in [0, n / 2 + 1, n - 1] {
            let mut v = clean.clone();
            v[at] = f64::INFINITY;
            compare(&format!("{dtype} n={n} inf at {at}"), &g, &v, dtype, 1.0 / 3.0, 1);
        }
    }
}

#[test]
fn unscale_check_copies_shared_storage_and_ignores_elements_past_the_tensor() {
    const TEST: &str = "unscale_check_copies_shared_storage_and_ignores_elements_past_the_tensor";
    let mut devices = vec![Device::cpu()];
    devices.extend(common::gpu(TEST));
    for d in devices {
        let name = d.describe();
        // A view sharing the storage keeps the old values.
        let a = Tensor::from_vec(vec![2.0f32, 4.0, -8.0, 16.0], &[4], &d).unwrap();
        let b = a.reshape(&[2, 2]).unwrap();
        let f = flag(&d);
        a.unscale_check_(0.5, &f).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 2.0, -4.0, 8.0], "{name}: unscaled");
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![2.0, 4.0, -8.0, 16.0], "{name}: the view changed");
        // A prefix view over a longer storage whose base is gone: the inf past it is not seen.
        let base = Tensor::from_vec(vec![2.0f32, 4.0, 6.0, 8.0, 10.0, f32::INFINITY], &[6], &d).unwrap();
        let prefix = base.narrow(0, 0, 3).unwrap();
        drop(base);
        prefix.unscale_check_(0.5, &f).unwrap();
        assert_eq!(prefix.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0], "{name}: prefix");
        assert_eq!(flag_value(&f), 0, "{name}: an element outside the tensor raised the flag");
        // f64 gradients on the CPU.
        if !d.is_gpu() {
            let g64 = Tensor::from_vec(vec![3.0f64, f64::NAN], &[2], &d).unwrap();
            g64.unscale_check_(1.0 / 3.0, &f).unwrap();
            assert_eq!(g64.to_vec::<f64>().unwrap()[0], 1.0);
            assert_eq!(flag_value(&f), 1, "f64 NaN not flagged");
        }
    }
}

#[test]
fn unscale_check_rejects_bad_arguments_with_typed_errors() {
    const TEST: &str = "unscale_check_rejects_bad_arguments_with_typed_errors";
    let mut devices = vec![Device::cpu()];
    let gpu = common::gpu(TEST);
    devices.extend(gpu.clone());
    for d in devices {
        let name = d.describe();
        let g = Tensor::from_vec(vec![1.0f32; 6], &[2, 3], &d).unwrap();
        let f = flag(&d);
        let ints = Tensor::from_vec(vec![1i32, 2], &[2], &d).unwrap();
        assert!(matches!(ints.unscale_check_(0.5, &f), Err(Error::UnsupportedDType { .. })), "{name}: int gradient");
        let f32_flag = Tensor::zeros(&[1], &d).unwrap();
        assert!(matches!(g.unscale_check_(0.5, &f32_flag), Err(Error::DTypeMismatch { .. })), "{name}: f32 flag");
        let two = Tensor::full_dtype(&[2], 0.0, DType::U32, &d).unwrap();
        assert!(matches!(g.unscale_check_(0.5, &two), Err(Error::ShapeMismatch { .. })), "{name}: flag of 2");
        assert!(
            matches!(g.t().unwrap().unscale_check_(0.5, &f), Err(Error::InvalidArgument { .. })),
            "{name}: transposed"
        );
        assert!(
            matches!(g.narrow(1, 1, 2).unwrap().unscale_check_(0.5, &f), Err(Error::InvalidArgument { .. })),
            "{name}: strided"
        );
        let offset = Tensor::from_vec(vec![1.0f32; 6], &[6], &d).unwrap().narrow(0, 2, 3).unwrap();
        assert!(matches!(offset.unscale_check_(0.5, &f), Err(Error::InvalidArgument { .. })), "{name}: offset view");
        if let Some(gpu) = &gpu
            && d.is_gpu()
        {
            assert!(
                matches!(g.unscale_check_(0.5, &flag(&Device::cpu())), Err(Error::DeviceMismatch { .. })),
                "gpu grad, cpu flag"
            );
            let cpu_g = Tensor::from_vec(vec![1.0f32], &[1], &Device::cpu()).unwrap();
            assert!(
                matches!(cpu_g.unscale_check_(0.5, &flag(gpu)), Err(Error::DeviceMismatch { .. })),
                "cpu grad, gpu flag"
            );
        }
        // The device-scale form: the scale is one f32, distinct from the gradient.
        let half = Tensor::full(&[], 2.0, &d).unwrap();
        let two_scales = Tensor::full(&[2], 2.0, &d).unwrap();
        assert!(
            matches!(g.unscale_check_by_(&two_scales, &f), Err(Error::InvalidArgument { .. })),
            "{name}: scale of 2"
        );
        let int_scale = Tensor::full_dtype(&[], 2.0, DType::I32, &d).unwrap();
        assert!(matches!(g.unscale_check_by_(&int_scale, &f), Err(Error::InvalidArgument { .. })), "{name}: i32 scale");
        let one = Tensor::from_vec(vec![2.0f32], &[1], &d).unwrap();
        assert!(
            matches!(one.unscale_check_by_(&one, &f), Err(Error::InvalidArgument { .. })),
            "{name}: scale is the gradient"
        );
        assert!(matches!(g.unscale_check_by_(&half, &two), Err(Error::ShapeMismatch { .. })), "{name}: flag of 2");
        if d.is_gpu() {
            let cpu_scale = Tensor::full(&[], 2.0, &Device::cpu()).unwrap();
            assert!(
                matches!(g.unscale_check_by_(&cpu_scale, &f), Err(Error::DeviceMismatch { .. })),
                "gpu grad, cpu scale"
            );
        }
        assert_eq!(one.to_vec::<f32>().unwrap(), vec![2.0], "{name}");
        // Nothing was scaled by the refused calls.
        assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0; 6], "{name}");
        assert_eq!(flag_value(&f), 0, "{name}");
    }
}

/// Parameters whose gradients share storage, unscaled by `GradScaler` and stepped by SGD
/// (lr 1): the values after `unscale_`, and the parameters after `step`.
fn shared_gradient_run(d: &Device) -> Vec<Vec<f32>> {
    let scale = 1024.0f32;
    let param = |shape: &[usize]| Tensor::zeros(shape, d).unwrap().with_grad();
    let (p1, p2, p3, p4, p5) = (param(&[4]), param(&[4]), param(&[3]), param(&[3]), param(&[2, 3]));
    // p1 and p2: one gradient tensor (as `a + b` backward hands out).
    let shared = Tensor::from_vec([1.0f32, -2.0, 3.0, 0.5].iter().map(|v| v * scale).collect(), &[4], d).unwrap();
    p1.set_grad(Some(shared.clone())).unwrap();
    p2.set_grad(Some(shared.clone())).unwrap();
    // p3 and p4: two slices of one tensor (as `cat` backward hands out); p4's at an offset.
    let joint =
        Tensor::from_vec([0.25f32, 4.0, -1.0, 8.0, -0.5, 2.0].iter().map(|v| v * scale).collect(), &[6], d).unwrap();
    p3.set_grad(Some(joint.narrow(0, 0, 3).unwrap())).unwrap();
    p4.set_grad(Some(joint.narrow(0, 3, 3).unwrap())).unwrap();
    // p5: a transposed view.
    let m =
        Tensor::from_vec([1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().map(|v| v * scale).collect(), &[3, 2], d).unwrap();
    p5.set_grad(Some(m.t().unwrap())).unwrap();
    let params = vec![p1.clone(), p2.clone(), p3.clone(), p4.clone(), p5.clone()];
    let mut opt = Sgd::new(params.clone(), SgdConfig::new(1.0)).unwrap();
    let mut scaler = GradScaler::new(GradScalerConfig { init_scale: scale as f64, ..Default::default() }).unwrap();
    scaler.unscale_(&opt).unwrap();
    assert!(p1.grad().unwrap().same(&p2.grad().unwrap()), "{}: p1 and p2 no longer share their gradient", d.describe());
    let mut out: Vec<Vec<f32>> = params.iter().map(|p| p.grad().unwrap().to_vec::<f32>().unwrap()).collect();
    out.push(joint.to_vec::<f32>().unwrap());
    assert!(scaler.step(&mut opt).unwrap().stepped().unwrap());
    scaler.update().unwrap();
    out.extend(params.iter().map(|p| p.to_vec::<f32>().unwrap()));
    out
}

#[test]
fn grad_scaler_unscales_a_shared_gradient_once() {
    let cpu = shared_gradient_run(&Device::cpu());
    let want_grads: Vec<Vec<f32>> = vec![
        vec![1.0, -2.0, 3.0, 0.5],
        vec![1.0, -2.0, 3.0, 0.5],
        vec![0.25, 4.0, -1.0],
        vec![8.0, -0.5, 2.0],
        vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0],
    ];
    assert_eq!(cpu[..5], want_grads[..], "cpu: unscaled gradients");
    // The tensor the slices came from is not the parameters': it keeps its scaled values.
    assert_eq!(
        cpu[5],
        [0.25f32, 4.0, -1.0, 8.0, -0.5, 2.0].iter().map(|v| v * 1024.0).collect::<Vec<_>>(),
        "cpu: joint"
    );
    let stepped: Vec<Vec<f32>> = want_grads.iter().map(|g| g.iter().map(|v| -v).collect()).collect();
    assert_eq!(cpu[6..], stepped[..], "cpu: parameters after one SGD step of lr 1");
    if let Some(g) = common::gpu("grad_scaler_unscales_a_shared_gradient_once") {
        assert_eq!(shared_gradient_run(&g), cpu, "gpu vs cpu");
    }
}

#[test]
fn grad_scaler_runs_one_unscale_kernel_per_gradient_and_no_reduction() {
    const TEST: &str = "grad_scaler_runs_one_unscale_kernel_per_gradient_and_no_reduction";
    if common::gpu(TEST).is_none() {
        return;
    }
    // A context of its own, so that the counts are this test's alone.
    let options = kiln_wgpu::ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..Default::default() };
    let ctx = kiln_wgpu::GpuContext::new_with(&kiln_wgpu::context::AdapterChoice::from_env(), &options)
        .expect("a profiled context");
    let d = Device::Gpu(ctx.clone());
    let sizes: [&[usize]; 5] = [&[7], &[16, 4], &[1023], &[3, 5], &[64]];
    let params: Vec<Tensor> = sizes.iter().map(|s| Tensor::zeros(s, &d).unwrap().with_grad()).collect();
    for (i, p) in params.iter().enumerate() {
        p.set_grad(Some(Tensor::full(p.shape(), 1024.0 * (i + 1) as f64, &d).unwrap())).unwrap();
    }
    // A sixth parameter shares the fifth's gradient tensor: five distinct gradients.
    let twin = Tensor::zeros(&[64], &d).unwrap().with_grad();
    twin.set_grad(params[4].grad()).unwrap();
    let mut all = params.clone();
    all.push(twin.clone());
    let opt = Sgd::new(all, SgdConfig::new(1.0)).unwrap();
    d.sync().unwrap();
    let before = ctx.profile_counts();
    let mut scaler = GradScaler::new(GradScalerConfig { init_scale: 1024.0, ..Default::default() }).unwrap();
    scaler.unscale_(&opt).unwrap();
    let after = ctx.profile_counts();
    let count = |rows: &[(String, u64)], prefix: &str| {
        rows.iter().filter(|r| r.0.starts_with(prefix)).map(|r| r.1).sum::<u64>()
    };
    assert_eq!(count(&after, "unscale_check|") - count(&before, "unscale_check|"), 5, "unscale kernels:\n{after:?}");
    assert_eq!(count(&after, "reduce|"), count(&before, "reduce|"), "a reduction ran:\n{after:?}");
    let total = |rows: &[(String, u64)]| rows.iter().map(|r| r.1).sum::<u64>();
    // Five unscales and the flag's fill.
    assert!(total(&after) - total(&before) <= 6, "{} dispatches:\n{after:?}", total(&after) - total(&before));
    for (i, p) in params.iter().enumerate() {
        assert!(p.grad().unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == (i + 1) as f32), "gradient {i}");
    }
    assert_eq!(twin.grad().unwrap().to_vec::<f32>().unwrap(), vec![5.0; 64], "the shared gradient");
}

#[test]
fn grad_scaler_unscales_f64_gradients_on_the_cpu() {
    let d = Device::cpu();
    for (grad, stepped) in [(vec![1024.0f64, -512.0], true), (vec![1024.0, f64::INFINITY], false)] {
        let p = Tensor::from_vec(vec![1.0f64, 2.0], &[2], &d).unwrap().with_grad();
        p.set_grad(Some(Tensor::from_vec(grad.clone(), &[2], &d).unwrap())).unwrap();
        let mut opt = Sgd::new(vec![p.clone()], SgdConfig::new(1.0)).unwrap();
        let mut scaler = GradScaler::new(GradScalerConfig { init_scale: 1024.0, ..Default::default() }).unwrap();
        assert_eq!(scaler.step(&mut opt).unwrap().stepped().unwrap(), stepped, "{grad:?}");
        scaler.update().unwrap();
        let want = if stepped { vec![0.0, 2.5] } else { vec![1.0, 2.0] };
        assert_eq!(p.to_vec::<f64>().unwrap(), want, "{grad:?}");
        assert_eq!(scaler.get_scale().unwrap(), if stepped { 1024.0 } else { 512.0 });
    }
}
