//! What happens at process exit. Devices opened through `kiln_core::Device` live in a static and
//! are never dropped, so the profile table and the pipeline cache would otherwise be lost: every
//! context registers here, and a C `atexit` handler prints the tables of profiled contexts and
//! writes their caches.

use crate::context::GpuContext;
use std::sync::{Arc, Mutex, Once, Weak};

static CONTEXTS: Mutex<Vec<Weak<GpuContext>>> = Mutex::new(Vec::new());

#[cfg(not(target_arch = "wasm32"))]
unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// A browser page has no exit: nothing to install (nor a file system to write the cache to).
#[cfg(target_arch = "wasm32")]
unsafe fn atexit(_callback: extern "C" fn()) -> std::ffi::c_int {
    0
}

extern "C" fn at_exit() {
    // A panic must not unwind into the C runtime.
    let _ = std::panic::catch_unwind(|| {
        for ctx in live() {
            ctx.at_exit();
        }
    });
}

/// Adds `ctx` to the contexts the exit handler visits (installing the handler once).
pub(crate) fn register(ctx: &Arc<GpuContext>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `at_exit` is a plain `extern "C" fn` that lives for the whole program and
        // catches every panic; registering it has no other precondition.
        unsafe {
            atexit(at_exit);
        }
    });
    let mut list = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(ctx));
}

/// Every context still alive, in the order they were opened.
pub(crate) fn live() -> Vec<Arc<GpuContext>> {
    CONTEXTS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect()
}
