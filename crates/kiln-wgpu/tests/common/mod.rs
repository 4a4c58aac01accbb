//! Shared by the GPU tests of this crate: the device, or a loud failure under KILN_REQUIRE_GPU.

use kiln_wgpu::{GpuContext, GpuDevice, context::AdapterChoice};
use std::sync::OnceLock;

/// The test GPU (lavapipe in CI). Without an adapter: a failure when `KILN_REQUIRE_GPU=1`,
/// otherwise `None` and a line on stderr naming the skipped test.
#[allow(dead_code)]
pub fn gpu(test: &str) -> Option<GpuDevice> {
    static DEV: OnceLock<Option<GpuDevice>> = OnceLock::new();
    let dev = DEV.get_or_init(|| GpuContext::new(&AdapterChoice::from_env()).ok()).clone();
    if dev.is_none() {
        if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("{test}: KILN_REQUIRE_GPU=1 but no GPU adapter was found");
        }
        eprintln!("SKIPPED {test}: no GPU adapter (set KILN_REQUIRE_GPU=1 to make this a failure)");
    }
    dev
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
    if std::env::var("KILN_REQUIRE_COOP").is_ok_and(|v| v == "1") {
        panic!("{test}: KILN_REQUIRE_COOP=1 but adapter {} has no cooperative matrices", dev.summary);
    }
    eprintln!("SKIPPED {test}: no cooperative matrices on {} (set KILN_REQUIRE_COOP=1 to make this a failure)", dev.summary);
    None
}

/// A context of its own with explicit options (profiling, cache directory, autotuning); loud
/// under KILN_REQUIRE_GPU=1 like [`gpu`].
#[allow(dead_code)]
pub fn gpu_with(test: &str, options: &kiln_wgpu::ContextOptions) -> Option<GpuDevice> {
    match GpuContext::new_with(&AdapterChoice::from_env(), options) {
        Ok(dev) => Some(dev),
        Err(e) if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: KILN_REQUIRE_GPU=1 but no GPU context: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no GPU adapter ({e}; set KILN_REQUIRE_GPU=1 to make this a failure)");
            None
        }
    }
}

/// A fresh empty directory under the system temp dir, unique to this process and `name`.
#[allow(dead_code)]
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

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
    assert!(matches!(upload, Err(Error::Unsupported { .. })), "f16 upload on {} without SHADER_F16: {:?}", dev.summary, upload.err());
    let a = kiln_wgpu::GpuStorage::from_host(dev, &HostData::F32(vec![1.0])).expect("upload");
    let cast = a.cast(&Layout::contiguous(&[1]), DType::F16);
    assert!(matches!(cast, Err(Error::Unsupported { .. })), "f32->f16 cast on {} without SHADER_F16: {:?}", dev.summary, cast.err());
    false
}
