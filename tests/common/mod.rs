//! Shared by the cross-crate tests: the GPU device (loud under KILN_REQUIRE_GPU=1), random
//! inputs, and GPU-vs-CPU comparison, all from `kiln-testkit`; plus a device of the test's own.

#![allow(dead_code)]

use kiln::prelude::*;

/// The test GPU (lavapipe in CI). Without one: a failure under `KILN_REQUIRE_GPU=1`, otherwise
/// `None` and a line on stderr naming the skipped test.
pub fn gpu(test: &str) -> Option<Device> {
    kiln_testkit::gpu(test)
}

// Deterministic inputs and comparisons: the shared test kit's (one copy for every test crate).
#[allow(unused_imports)]
pub use kiln_testkit::{assert_close, check, random, values};

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
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).expect("a second device on the test adapter");
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
    let moved =
        Tensor::ones(&[3], &Device::cpu()).and_then(|t| t.to_dtype(DType::F16)).expect("f16 on the CPU").to(dev);
    assert!(
        matches!(moved, Err(kiln::Error::Unsupported { .. })),
        "f16 tensor to {} without SHADER_F16: {:?}",
        ctx.summary,
        moved.err()
    );
    let cast = Tensor::ones(&[3], dev).expect("f32 on the GPU").to_dtype(DType::F16);
    assert!(
        matches!(cast, Err(kiln::Error::Unsupported { .. })),
        "f32->f16 cast on {} without SHADER_F16: {:?}",
        ctx.summary,
        cast.err()
    );
    false
}
