//! Argument checks every backend needs, written once. [`BackendStorage`](crate::BackendStorage)
//! runs them in its provided methods (`gather` checks, then calls the backend's `gather_impl`),
//! so they hold whoever calls a backend, and kiln-core calls the same functions for the checks
//! it must make before it reads ids back. Each returns the typed error the user sees.

use crate::{DType, Error, Layout, Result};

/// `dim` must name a dimension of `layout`.
pub fn check_dim(op: &'static str, layout: &Layout, dim: usize) -> Result<()> {
    if dim < layout.rank() {
        Ok(())
    } else {
        Err(Error::invalid(op, format!("dim {dim} out of range for shape {:?}", layout.shape())))
    }
}

/// Index tensors (ids, class targets) are u32 or i32.
pub fn check_ids(op: &'static str, ids: DType) -> Result<()> {
    match ids {
        DType::U32 | DType::I32 => Ok(()),
        d => Err(Error::dtype(op, "u32 or i32 indices", d)),
    }
}

/// `ids` (shape `ishape`) has the rank of the source (shape `shape`) and is no larger than it
/// in every dim but `dim`.
pub fn check_index_shape(op: &'static str, shape: &[usize], ishape: &[usize], dim: usize) -> Result<()> {
    let fits =
        ishape.len() == shape.len() && ishape.iter().zip(shape).enumerate().all(|(d, (&i, &s))| d == dim || i <= s);
    if fits {
        Ok(())
    } else {
        Err(Error::shape(op, format!("indices {ishape:?} do not fit source {shape:?} along dim {dim}")))
    }
}

/// index_select: `dim` in range, ids u32/i32 and 1-D.
pub fn index_select(op: &'static str, layout: &Layout, ids: DType, ids_layout: &Layout, dim: usize) -> Result<()> {
    check_dim(op, layout, dim)?;
    check_ids(op, ids)?;
    if ids_layout.rank() != 1 {
        return Err(Error::shape(op, format!("indices must be 1-D, got {:?}", ids_layout.shape())));
    }
    Ok(())
}

/// gather: `dim` in range, ids u32/i32 and fitting the source outside `dim`.
pub fn gather(op: &'static str, layout: &Layout, ids: DType, ids_layout: &Layout, dim: usize) -> Result<()> {
    check_dim(op, layout, dim)?;
    check_ids(op, ids)?;
    check_index_shape(op, layout.shape(), ids_layout.shape(), dim)
}

/// scatter_add / scatter_reduce: gather's checks, and `src` of self's dtype and the ids' shape.
#[allow(clippy::too_many_arguments)]
pub fn scatter(
    op: &'static str,
    dtype: DType,
    layout: &Layout,
    ids: DType,
    ids_layout: &Layout,
    src: DType,
    src_layout: &Layout,
    dim: usize,
) -> Result<()> {
    check_dim(op, layout, dim)?;
    check_ids(op, ids)?;
    if src != dtype {
        return Err(Error::dtype(op, dtype, src));
    }
    if ids_layout.shape() != src_layout.shape() {
        return Err(Error::shape(op, format!("indices {:?} vs source {:?}", ids_layout.shape(), src_layout.shape())));
    }
    check_index_shape(op, layout.shape(), ids_layout.shape(), dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_its_error() {
        let l = Layout::contiguous(&[3, 4]);
        assert!(matches!(check_dim("t", &l, 2), Err(Error::InvalidArgument { op: "t", .. })));
        assert!(check_dim("t", &l, 1).is_ok());
        assert!(matches!(check_ids("t", DType::F32), Err(Error::DTypeMismatch { op: "t", .. })));
        assert!(check_ids("t", DType::I32).is_ok() && check_ids("t", DType::U32).is_ok());
        assert!(check_index_shape("t", &[3, 4], &[9, 4], 0).is_ok());
        assert!(matches!(check_index_shape("t", &[3, 4], &[4, 4], 1), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(check_index_shape("t", &[3, 4], &[3], 0), Err(Error::ShapeMismatch { .. })));
        let ids = Layout::contiguous(&[2, 2]);
        assert!(matches!(index_select("t", &l, DType::U32, &ids, 0), Err(Error::ShapeMismatch { .. })));
        let src = Layout::contiguous(&[2, 3]);
        let r = scatter("t", DType::F32, &l, DType::U32, &ids, DType::F32, &src, 0);
        assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
        let r = scatter("t", DType::F32, &l, DType::U32, &ids, DType::F16, &ids, 0);
        assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
        assert!(scatter("t", DType::F32, &l, DType::I32, &ids, DType::F32, &ids, 1).is_ok());
    }
}
