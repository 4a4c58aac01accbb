//! Batched strided matmul.
use crate::storage::GpuStorage;
use kiln_backend::{Error, Layout, Result};

pub(crate) fn matmul(_a: &GpuStorage, _al: &Layout, _b: &GpuStorage, _bl: &Layout) -> Result<GpuStorage> {
    Err(Error::Unsupported { op: "matmul", msg: "not yet on the GPU".into() })
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    Vec::new()
}
