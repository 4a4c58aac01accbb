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
    let name = g.gpu_context().map(|c| c.summary.name.clone()).expect("a GPU device");
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters.into_iter().find(|a| a.get_info().name == name).expect("the test adapter is listed");
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
