//! Reductions over trailing dims, softmax over the last dim, cumulative sum.
use crate::storage::GpuStorage;
use kiln_backend::{Error, Layout, ReduceOp, Result};

pub(crate) fn reduce(_s: &GpuStorage, _l: &Layout, op: ReduceOp, _dims: usize) -> Result<GpuStorage> {
    Err(Error::Unsupported { op: op.name(), msg: "not yet on the GPU".into() })
}

pub(crate) fn softmax_last(_s: &GpuStorage, _l: &Layout, _log: bool) -> Result<GpuStorage> {
    Err(Error::Unsupported { op: "softmax", msg: "not yet on the GPU".into() })
}

pub(crate) fn cumsum(_s: &GpuStorage, _l: &Layout, _dim: usize) -> Result<GpuStorage> {
    Err(Error::Unsupported { op: "cumsum", msg: "not yet on the GPU".into() })
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    Vec::new()
}
