//! Shared by the cross-crate tests: the GPU device (loud under KILN_REQUIRE_GPU=1), random
//! inputs, and GPU-vs-CPU comparison.

#![allow(dead_code)]

use kiln::prelude::*;
use std::sync::OnceLock;

/// The test GPU (lavapipe in CI). Without one: a failure under `KILN_REQUIRE_GPU=1`, otherwise
/// `None` and a line on stderr naming the skipped test.
pub fn gpu(test: &str) -> Option<Device> {
    static DEV: OnceLock<Option<Device>> = OnceLock::new();
    let dev = DEV.get_or_init(|| Device::gpu().ok()).clone();
    if dev.is_none() {
        if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("{test}: KILN_REQUIRE_GPU=1 but no GPU adapter was found");
        }
        eprintln!("SKIPPED {test}: no GPU adapter (set KILN_REQUIRE_GPU=1 to make this a failure)");
    }
    dev
}

/// Deterministic pseudo-random values in [lo, hi), independent of Kiln's generator.
pub fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// A CPU tensor of `dtype` with random values in [lo, hi).
pub fn random(shape: &[usize], dtype: DType, seed: u64, lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f64> = values(n, seed, lo, hi)
        .into_iter()
        .map(|x| if dtype.is_float() { x } else { x.floor() })
        .collect();
    Tensor::from_host(kiln::HostData::from_f64(&v, dtype), shape, &Device::cpu()).expect("random tensor")
}

/// Asserts two value lists agree within `rtol·|b| + atol`, NaN matching NaN and inf matching inf.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rtol: f64, atol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths {} vs {}", a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= rtol * y.abs() + atol;
        assert!(ok, "{what}: element {i}: gpu {x} vs cpu {y}");
    }
}

/// Runs `f` on CPU inputs and on the same inputs copied to `gpu`; compares the outputs.
pub fn check(what: &str, gpu: &Device, inputs: &[Tensor], rtol: f64, atol: f64, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let before: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec().expect("read input")).collect();
    let cpu_out = f(inputs);
    let gpu_inputs: Vec<Tensor> = inputs.iter().map(|t| t.to(gpu).expect("upload")).collect();
    let gpu_out = f(&gpu_inputs);
    match (cpu_out, gpu_out) {
        (Ok(c), Ok(g)) => {
            assert_eq!(c.shape(), g.shape(), "{what}: shapes");
            assert_eq!(c.dtype(), g.dtype(), "{what}: dtypes");
            assert_close(what, &g.to_f64_vec().expect("gpu read"), &c.to_f64_vec().expect("cpu read"), rtol, atol);
        }
        (Err(c), Err(g)) => assert_eq!(std::mem::discriminant(&c), std::mem::discriminant(&g), "{what}: cpu {c} vs gpu {g}"),
        (c, g) => panic!("{what}: cpu {:?} vs gpu {:?}", c.map(|t| t.shape().to_vec()), g.map(|t| t.shape().to_vec())),
    }
    for (i, (t, b)) in gpu_inputs.iter().chain(inputs).zip(before.iter().chain(&before)).enumerate() {
        let now: Vec<u64> = t.to_f64_vec().expect("read input").iter().map(|v| v.to_bits()).collect();
        let was: Vec<u64> = b.iter().map(|v| v.to_bits()).collect();
        assert_eq!(now, was, "{what}: input {i} changed by the op");
    }
}

/// The test adapter again as a device of its own (its submit count and pool are the caller's
/// alone), with `limits` adjusted; f16 where the adapter has it. Loud like [`gpu`].
#[allow(dead_code)]
pub fn own_gpu(test: &str, limits: impl FnOnce(&mut wgpu::Limits)) -> Option<Device> {
    let g = gpu(test)?;
    let summary = g.gpu_context().map(|c| c.summary.clone()).expect("a GPU device");
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    // The same name on another backend is another adapter (llvmpipe is on Vulkan and GL).
    let same = |info: &wgpu::AdapterInfo| {
        info.name == summary.name && format!("{:?}", info.backend).to_lowercase() == summary.backend
    };
    let adapter = adapters.into_iter().find(|a| same(&a.get_info())).expect("the test adapter is listed");
    let mut required_limits = adapter.limits();
    limits(&mut required_limits);
    let desc = wgpu::DeviceDescriptor {
        label: Some("kiln-test-own"),
        required_features: adapter.features() & wgpu::Features::SHADER_F16,
        required_limits,
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).expect("a second device on the test adapter");
    Some(Device::from_wgpu(&adapter, device, queue))
}

/// Whether `dev` runs f16. A GPU without SHADER_F16 (GL; DX12 through FXC) must refuse f16 with
/// a typed error rather than run it wrongly: this checks that (an f16 tensor moved there and an
/// f32 tensor cast to f16 there both give `Error::Unsupported`) and returns false, so a test
/// leaves out only its f16 cases, having checked the refusal instead.
pub fn has_f16_else_refused(dev: &Device) -> bool {
    let Some(ctx) = dev.gpu_context() else { return true };
    if ctx.has_f16() {
        return true;
    }
    let moved = Tensor::ones(&[3], &Device::cpu()).and_then(|t| t.to_dtype(DType::F16)).expect("f16 on the CPU").to(dev);
    assert!(matches!(moved, Err(kiln::Error::Unsupported { .. })), "f16 tensor to {} without SHADER_F16: {:?}", ctx.summary, moved.err());
    let cast = Tensor::ones(&[3], dev).expect("f32 on the GPU").to_dtype(DType::F16);
    assert!(matches!(cast, Err(kiln::Error::Unsupported { .. })), "f32->f16 cast on {} without SHADER_F16: {:?}", ctx.summary, cast.err());
    false
}
