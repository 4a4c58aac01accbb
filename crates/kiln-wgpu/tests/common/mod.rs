//! Shared by the GPU tests of this crate: the device, or a loud failure under KILN_REQUIRE_GPU
//! (the rule itself is `kiln_testkit::gpu_or_skip`).

use kiln_wgpu::{GpuContext, GpuDevice, context::AdapterChoice};
use std::sync::OnceLock;

/// The test GPU (lavapipe in CI). Without an adapter: a failure when `KILN_REQUIRE_GPU=1`,
/// otherwise `None` and a line on stderr naming the skipped test.
#[allow(dead_code)]
pub fn gpu(test: &str) -> Option<GpuDevice> {
    static DEV: OnceLock<Result<GpuDevice, String>> = OnceLock::new();
    kiln_testkit::gpu_or_skip(
        test,
        DEV.get_or_init(|| GpuContext::new(&AdapterChoice::from_env()).map_err(|e| e.to_string())).clone(),
    )
}

/// The test GPU when it has cooperative matrices (tensor cores). Without them: a failure when
/// `KILN_REQUIRE_COOP=1` (set on the GPU machine, whose NVIDIA adapter has them), otherwise
/// `None` and a `SKIPPED` line naming the test (lavapipe has none).
#[allow(dead_code)]
pub fn coop_gpu(test: &str) -> Option<GpuDevice> {
    let dev = gpu(test)?;
    if dev.coop.is_some() {
        return Some(dev);
    }
    if kiln_testkit::required("KILN_REQUIRE_COOP") {
        panic!("{test}: KILN_REQUIRE_COOP=1 but adapter {} has no cooperative matrices", dev.summary);
    }
    eprintln!(
        "SKIPPED {test}: no cooperative matrices on {} (set KILN_REQUIRE_COOP=1 to make this a failure)",
        dev.summary
    );
    None
}

/// A context of its own with explicit options (profiling, cache directory, autotuning); loud
/// under KILN_REQUIRE_GPU=1 like [`gpu`].
#[allow(dead_code)]
pub fn gpu_with(test: &str, options: &kiln_wgpu::ContextOptions) -> Option<GpuDevice> {
    kiln_testkit::gpu_or_skip(test, GpuContext::new_with(&AdapterChoice::from_env(), options))
}

#[allow(unused_imports)]
pub use kiln_testkit::temp_dir;

/// Whether `dev` runs f16. An adapter without SHADER_F16 (GL; DX12 through FXC) must refuse f16
/// with a typed error rather than run it wrongly: this checks that (an f16 upload and an f32 to
/// f16 cast both give `Error::Unsupported`) and returns false, so a test leaves out only its f16
/// cases, having checked the refusal instead.
#[allow(dead_code)]
pub fn has_f16_else_refused(dev: &GpuDevice) -> bool {
    use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};
    if dev.has_f16() {
        return true;
    }
    let upload = kiln_wgpu::GpuStorage::from_host(dev, &HostData::F16(vec![half::f16::ONE]));
    assert!(
        matches!(upload, Err(Error::Unsupported { .. })),
        "f16 upload on {} without SHADER_F16: {:?}",
        dev.summary,
        upload.err()
    );
    let a = kiln_wgpu::GpuStorage::from_host(dev, &HostData::F32(vec![1.0])).expect("upload");
    let cast = a.cast(&Layout::contiguous(&[1]), DType::F16);
    assert!(
        matches!(cast, Err(Error::Unsupported { .. })),
        "f32->f16 cast on {} without SHADER_F16: {:?}",
        dev.summary,
        cast.err()
    );
    false
}
