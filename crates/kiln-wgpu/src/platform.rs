//! What differs in a browser (wasm32 on WebGPU). Nothing there may block the page's event loop,
//! and the browser polls the device by itself:
//! - error scopes cannot be awaited on the spot: the work runs unscoped, and its errors reach the
//!   uncaptured-error handler, which [`Gpu::check`](crate::Gpu::check) reports at
//!   the next sync or readback;
//! - a blocking wait (`sync`, a blocking readback, opening a device) returns
//!   `Error::WouldBlock` naming its async form instead of deadlocking the page;
//! - an async wait only awaits the callback; no helper thread polls for it.

use kiln_backend::{Error, Result};

/// True when compiled for the browser.
pub(crate) const WEB: bool = cfg!(target_arch = "wasm32");

/// Runs `f` inside an error scope of `filter` and returns what the scope caught (always `None`
/// in a browser, see the module notes).
pub(crate) fn scoped<T>(
    device: &wgpu::Device,
    filter: wgpu::ErrorFilter,
    f: impl FnOnce() -> T,
) -> (T, Option<wgpu::Error>) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let scope = device.push_error_scope(filter);
        let out = f();
        (out, pollster::block_on(scope.pop()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (device, filter);
        (f(), None)
    }
}

/// `Err(WouldBlock)` in a browser, where `op` would have to wait for the GPU; `Ok` elsewhere.
pub(crate) fn refuse_blocking(op: &'static str, alternative: &'static str) -> Result<()> {
    if WEB { Err(Error::WouldBlock { op, alternative }) } else { Ok(()) }
}
