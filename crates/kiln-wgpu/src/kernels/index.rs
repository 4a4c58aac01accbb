//! index_select, gather, scatter_add, topk.
use crate::storage::GpuStorage;
use kiln_backend::{Error, Layout, Result};

fn todo(op: &'static str) -> Error {
    Error::Unsupported { op, msg: "not yet on the GPU".into() }
}

pub(crate) fn index_select(_s: &GpuStorage, _l: &Layout, _ids: &GpuStorage, _il: &Layout, _dim: usize) -> Result<GpuStorage> {
    Err(todo("index_select"))
}

pub(crate) fn gather(_s: &GpuStorage, _l: &Layout, _ids: &GpuStorage, _il: &Layout, _dim: usize) -> Result<GpuStorage> {
    Err(todo("gather"))
}

pub(crate) fn scatter_add(
    _s: &GpuStorage,
    _l: &Layout,
    _ids: &GpuStorage,
    _il: &Layout,
    _src: &GpuStorage,
    _sl: &Layout,
    _dim: usize,
) -> Result<GpuStorage> {
    Err(todo("scatter_add"))
}

pub(crate) fn topk(_s: &GpuStorage, _l: &Layout, _k: usize, _largest: bool) -> Result<(GpuStorage, GpuStorage)> {
    Err(todo("topk"))
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    Vec::new()
}
