//! im2col and its adjoint col2im: convolution and pooling are built on them.
use crate::storage::GpuStorage;
use kiln_backend::{ConvGeometry, Error, Layout, Result};

pub(crate) fn im2col(_s: &GpuStorage, _l: &Layout, _g: &ConvGeometry, _pad: f64) -> Result<GpuStorage> {
    Err(Error::Unsupported { op: "im2col", msg: "not yet on the GPU".into() })
}

pub(crate) fn col2im(_s: &GpuStorage, _l: &Layout, _g: &ConvGeometry) -> Result<GpuStorage> {
    Err(Error::Unsupported { op: "col2im", msg: "not yet on the GPU".into() })
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    Vec::new()
}
