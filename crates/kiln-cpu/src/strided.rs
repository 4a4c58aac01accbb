//! Reading strided layouts: bounds checks and row-major gathers.

use std::borrow::Cow;

use kiln_backend::{Error, Layout, Result};

use crate::kernel::product;
use crate::walk::map1;

/// Checks that every element of `layout` lies inside a storage of `len` elements, and returns
/// the element count. The core builds layouts, but a bad one here would be an out-of-bounds read,
/// so the oracle refuses it instead of trusting it.
pub(crate) fn check(op: &'static str, layout: &Layout, len: usize) -> Result<usize> {
    let (shape, strides) = (layout.shape(), layout.strides());
    if shape.len() != strides.len() {
        return Err(Error::invalid(op, format!("layout has shape {shape:?} but strides {strides:?}")));
    }
    let numel = product(op, shape)?;
    if numel == 0 {
        return Ok(0);
    }
    let mut last = Some(layout.offset());
    for (&d, &s) in shape.iter().zip(strides) {
        last = last.and_then(|l| (d - 1).checked_mul(s).and_then(|x| x.checked_add(l)));
    }
    match last {
        Some(l) if l < len => Ok(numel),
        _ => Err(Error::invalid(
            op,
            format!(
                "layout (shape {shape:?}, strides {strides:?}, offset {}) reaches past a storage of {len} elements",
                layout.offset()
            ),
        )),
    }
}

/// The elements of `layout` in row-major order: borrowed when they already are, gathered otherwise.
pub(crate) fn read<'a, T: Copy + Send + Sync>(
    op: &'static str,
    data: &'a [T],
    layout: &Layout,
) -> Result<Cow<'a, [T]>> {
    let n = check(op, layout, data.len())?;
    if n == 0 {
        return Ok(Cow::Borrowed(&[]));
    }
    if layout.is_contiguous() {
        let start = layout.offset();
        return Ok(Cow::Borrowed(&data[start..start + n]));
    }
    // The elementwise walk: runs along the innermost dims copied as slices (a permuted
    // `[b, s, h, d]` → `[b, h, s, d]` moves `d` elements at a time), split across threads when big.
    Ok(Cow::Owned(map1(op, data, layout, |x| x)?))
}

/// Calls `f` with the storage index of each element, in row-major order. The layout must have
/// passed `check`. Walks the last dim in a tight loop, so a gather costs little more than a copy.
pub(crate) fn for_each_index(layout: &Layout, mut f: impl FnMut(usize)) {
    let (shape, strides) = (layout.shape(), layout.strides());
    if shape.contains(&0) {
        return;
    }
    let Some((&len, outer_shape)) = shape.split_last() else {
        f(layout.offset());
        return;
    };
    let (&stride, outer_strides) = strides.split_last().unwrap_or((&0, &[]));
    let outer = Layout::new(outer_shape.to_vec(), outer_strides.to_vec(), layout.offset());
    for base in outer.indices() {
        for j in 0..len {
            f(base + j * stride);
        }
    }
}

/// Calls `f(flat, position)` for each position of `shape` in row-major order.
pub(crate) fn for_each_position(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut pos = vec![0usize; shape.len()];
    let mut flat = 0;
    loop {
        f(flat, &pos);
        flat += 1;
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            pos[d] += 1;
            if pos[d] < shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
}
