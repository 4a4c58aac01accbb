//! Dtype conversion and strided copies.
//!
//! `cast` semantics: float → int truncates toward zero and saturates, NaN → 0; anything → bool
//! is `!= 0` (NaN → true); bool → number is 0/1; float → float rounds to nearest even;
//! i32 ↔ u32 reinterprets the two's-complement bits (−1 → 4294967295), as C, PyTorch's integer
//! casts and WGSL's `u32(i32)` do.

use kiln_backend::{DType, Error, HostData, Layout, Result};

use crate::binary::same;
use crate::elem::Elem;
use crate::strided::{check, for_each_index, read};
use crate::walk::map1;

pub(crate) fn cast(data: &HostData, layout: &Layout, dtype: DType) -> Result<HostData> {
    const OP: &str = "cast";
    match (data, dtype) {
        (HostData::I32(v), DType::U32) => Ok(HostData::U32(map1(OP, v, layout, |x| x as u32)?)),
        (HostData::U32(v), DType::I32) => Ok(HostData::I32(map1(OP, v, layout, |x| x as i32)?)),
        _ => dispatch!(data, v => cast_from(v, layout, dtype)),
    }
}

/// Every other pair goes through f64, which holds every value of every dtype exactly, so the
/// only rounding is the final one into `dtype`.
fn cast_from<S: Elem>(v: &[S], layout: &Layout, dtype: DType) -> Result<HostData> {
    if dtype == S::DTYPE {
        return Ok(S::wrap(read("cast", v, layout)?.into_owned()));
    }
    Ok(match dtype {
        DType::F32 => HostData::F32(convert(v, layout)?),
        DType::F16 => HostData::F16(convert(v, layout)?),
        DType::F64 => HostData::F64(convert(v, layout)?),
        DType::I32 => HostData::I32(convert(v, layout)?),
        DType::U32 => HostData::U32(convert(v, layout)?),
        DType::Bool => HostData::Bool(convert(v, layout)?),
    })
}

fn convert<S: Elem, D: Elem>(v: &[S], layout: &Layout) -> Result<Vec<D>> {
    map1("cast", v, layout, |e: S| D::from_f64(e.to_f64()))
}

/// Writes the elements of `sl` over `src` into `dst` at `dl`. With overlapping destination
/// positions (stride 0) the last write in row-major order wins.
pub(crate) fn copy_into(src: &HostData, sl: &Layout, dst: &mut HostData, dl: &Layout) -> Result<()> {
    const OP: &str = "copy_into";
    if sl.shape() != dl.shape() {
        return Err(Error::shape(OP, format!("source {:?} vs destination {:?}", sl.shape(), dl.shape())));
    }
    dispatch!(src, v => copy_typed(v, sl, dst, dl))
}

fn copy_typed<T: Elem>(src: &[T], sl: &Layout, dst: &mut HostData, dl: &Layout) -> Result<()> {
    const OP: &str = "copy_into";
    // Typed borrow of dst first: a dtype mismatch is reported before any bounds problem.
    same::<T>(OP, dst)?;
    let x = read(OP, src, sl)?;
    let dst_dtype = dst.dtype();
    let out = T::slice_mut(dst).ok_or_else(|| Error::dtype(OP, T::DTYPE, dst_dtype))?;
    check(OP, dl, out.len())?;
    let mut values = x.iter();
    for_each_index(dl, |i| {
        if let Some(&v) = values.next() {
            out[i] = v;
        }
    });
    Ok(())
}
