//! What the fused kernels (norm, cross-entropy, attention, Adam) share: binding declarations
//! with load/store helpers in f32, dtype checks and u32 guards. Their WGSL bodies live in
//! `shaders/`; the generator prepends the bindings built here.

use super::{load, storage_type, store};
use kiln_backend::{DType, Error, Result};

/// Where a binding sits in a kernel: read-only input, or read-write output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// `@binding(i)` of a float tensor named `name`, plus `ld_<name>(k) -> f32` and, when written,
/// `st_<name>(k, v)`.
pub(crate) fn float_binding(binding: u32, name: &str, dtype: DType, access: Access) -> String {
    let st = storage_type("fused", dtype).unwrap_or("f32");
    let mode = if access == Access::Write { "read_write" } else { "read" };
    let mut s = format!("@group(0) @binding({binding}) var<storage, {mode}> {name}: array<{st}>;\n");
    // Parameter names end in `_` so they never shadow a binding.
    s += &format!("fn ld_{name}(at_: u32) -> f32 {{ return {}; }}\n", load(dtype, &format!("{name}[at_]")));
    if access == Access::Write {
        s += &format!("fn st_{name}(at_: u32, val_: f32) {{ {name}[at_] = {}; }}\n", store(dtype, "val_"));
    }
    s
}

/// `@binding(i)` of a plain array (`u32` ids and masks, `f32` statistics).
pub(crate) fn raw_binding(binding: u32, name: &str, ty: &str, access: Access) -> String {
    let mode = if access == Access::Write { "read_write" } else { "read" };
    format!("@group(0) @binding({binding}) var<storage, {mode}> {name}: array<{ty}>;\n")
}

/// The fused kernels compute in f32 and store f32 or f16.
pub(crate) fn check_float(op: &'static str, dtype: DType) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::F16) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype, why: " (f32 and f16 only on the GPU)".into() })
    }
}

pub(crate) fn u32_of(op: &'static str, v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::OutOfMemory { op, msg: format!("{what} ({v}) needs indices past u32") })
}

/// Fails unless `len` elements fit u32 indexing.
pub(crate) fn check_len(op: &'static str, len: usize) -> Result<u32> {
    u32_of(op, len, "elements")
}

/// The dtypes the fused kernels store (their specialisation lists cover both).
pub(crate) const FLOATS: [DType; 2] = [DType::F32, DType::F16];

/// `enable f16;` when any dtype is f16.
pub(crate) fn enable_for(dtype: DType) -> &'static str {
    super::enables(&[dtype])
}
