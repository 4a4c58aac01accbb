//! The WGSL sources, embedded at build time from the workspace's `shaders/` folder, and the
//! list of every specialisation the backend can generate (validated by naga in tests).

pub const PRELUDE: &str = include_str!("../../../shaders/prelude.wgsl");
pub const MATH: &str = include_str!("../../../shaders/math.wgsl");
pub const ELEMENTWISE: &str = include_str!("../../../shaders/elementwise.wgsl");

/// Every kernel source the backend can build, with its cache key. Each kernel family adds
/// its own list; a test compiles all of them with naga (WGSL → IR → validation → SPIR-V).
pub fn all_specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    all.extend(crate::kernels::elementwise::specialisations());
    all.extend(crate::kernels::extra_specialisations());
    all
}
