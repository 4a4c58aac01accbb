//! Shared by the GPU tests of this crate: the device, or a loud failure under KILN_REQUIRE_GPU.

use kiln_wgpu::{GpuContext, GpuDevice, context::AdapterChoice};
use std::sync::OnceLock;

/// The test GPU (lavapipe in CI). Without an adapter: a failure when `KILN_REQUIRE_GPU=1`,
/// otherwise `None` and a line on stderr naming the skipped test.
pub fn gpu(test: &str) -> Option<GpuDevice> {
    static DEV: OnceLock<Option<GpuDevice>> = OnceLock::new();
    let dev = DEV.get_or_init(|| GpuContext::new(&AdapterChoice::Any).ok()).clone();
    if dev.is_none() {
        if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("{test}: KILN_REQUIRE_GPU=1 but no GPU adapter was found");
        }
        eprintln!("SKIPPED {test}: no GPU adapter (set KILN_REQUIRE_GPU=1 to make this a failure)");
    }
    dev
}
