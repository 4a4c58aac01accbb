//! Index ops: `index_select`, `gather`, `scatter_add`, `scatter_reduce`. Ids are u32 or i32;
//! every id is checked against its dimension (negative i32 ids are out of range) before any
//! element is touched. The argument checks (dim, dtypes, shapes) ran before, in
//! `BackendStorage`'s provided methods (kiln-backend's `checks.rs`).

use kiln_backend::{Error, HostData, Layout, Result, ScatterOp};

use crate::binary::same;
use crate::elem::{Elem, Num};
use crate::kernel::{product, with_capacity};
use crate::strided::{check, for_each_index, for_each_position, read};

/// Entries `ids` of `dim`, in the order of `ids` (repeats allowed).
pub(crate) fn index_select(
    data: &HostData,
    layout: &Layout,
    ids: &HostData,
    il: &Layout,
    dim: usize,
) -> Result<HostData> {
    const OP: &str = "index_select";
    let ids = read_ids(OP, ids, il, layout.shape(), dim)?;
    dispatch!(data, v => select_typed(v, layout, &ids, dim))
}

fn select_typed<T: Elem>(v: &[T], layout: &Layout, ids: &[usize], dim: usize) -> Result<HostData> {
    const OP: &str = "index_select";
    check(OP, layout, v.len())?;
    let (shape, strides) = (layout.shape(), layout.strides());
    let outer = Layout::new(shape[..dim].to_vec(), strides[..dim].to_vec(), layout.offset());
    let inner = Layout::new(shape[dim + 1..].to_vec(), strides[dim + 1..].to_vec(), 0);
    let mut inner_offsets = with_capacity(OP, product(OP, inner.shape())?)?;
    for_each_index(&inner, |i| inner_offsets.push(i));
    let mut out = with_capacity(OP, product(OP, &[product(OP, outer.shape())?, ids.len(), inner_offsets.len()])?)?;
    for_each_index(&outer, |base| {
        for &id in ids {
            let start = base + id * strides[dim];
            out.extend(inner_offsets.iter().map(|&r| v[start + r]));
        }
    });
    Ok(T::wrap(out))
}

/// `out[p] = self[p with p[dim] = ids[p]]`; `ids` has self's rank and is no larger in other dims.
pub(crate) fn gather(data: &HostData, layout: &Layout, ids: &HostData, il: &Layout, dim: usize) -> Result<HostData> {
    const OP: &str = "gather";
    let idx = read_ids(OP, ids, il, layout.shape(), dim)?;
    dispatch!(data, v => gather_typed(v, layout, il.shape(), &idx, dim))
}

fn gather_typed<T: Elem>(v: &[T], layout: &Layout, ishape: &[usize], idx: &[usize], dim: usize) -> Result<HostData> {
    const OP: &str = "gather";
    check(OP, layout, v.len())?;
    let mut out = with_capacity(OP, idx.len())?;
    for_each_position(ishape, |flat, pos| {
        out.push(v[layout.offset() + offset_with(pos, layout.strides(), dim, idx[flat])]);
    });
    Ok(T::wrap(out))
}

/// A contiguous copy of self with `src[p]` added at `p with p[dim] = ids[p]`, in row-major order
/// of `p` (deterministic); f32/f16 accumulate in f64, integers wrap.
pub(crate) fn scatter_add(
    data: &HostData,
    layout: &Layout,
    ids: &HostData,
    il: &Layout,
    src: &HostData,
    sl: &Layout,
    dim: usize,
) -> Result<HostData> {
    const OP: &str = "scatter_add";
    let idx = read_ids(OP, ids, il, layout.shape(), dim)?;
    dispatch_num!(data, OP, v => scatter_typed(v, layout, &idx, same(OP, src)?, sl, dim))
}

fn scatter_typed<T: Num>(
    v: &[T],
    layout: &Layout,
    idx: &[usize],
    src: &[T],
    sl: &Layout,
    dim: usize,
) -> Result<HostData> {
    const OP: &str = "scatter_add";
    let x = read(OP, v, layout)?;
    let s = read(OP, src, sl)?;
    let mut acc: Vec<T::Acc> = x.iter().map(|e| e.widen()).collect();
    let out_strides = Layout::contiguous(layout.shape()).strides().to_vec();
    for_each_position(sl.shape(), |flat, pos| {
        let t = offset_with(pos, &out_strides, dim, idx[flat]);
        acc[t] = T::acc_add(acc[t], s[flat].widen());
    });
    Ok(T::wrap(acc.into_iter().map(T::narrow).collect()))
}

/// A contiguous copy of self where each element named by `ids` becomes `op` over the `src`
/// values landing on it (in row-major order of the index position) and, with `include_self`,
/// its own value; see `BackendStorage::scatter_reduce`. Floats accumulate sums and products in
/// f64 and round once; integers wrap, and their mean is floor division.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scatter_reduce(
    data: &HostData,
    layout: &Layout,
    ids: &HostData,
    il: &Layout,
    src: &HostData,
    sl: &Layout,
    dim: usize,
    op: ScatterOp,
    include_self: bool,
) -> Result<HostData> {
    const OP: &str = "scatter_reduce";
    let idx = read_ids(OP, ids, il, layout.shape(), dim)?;
    dispatch_num!(data, OP, v => reduce_typed(v, layout, &idx, same(OP, src)?, sl, dim, (op, include_self)))
}

fn reduce_typed<T: Num>(
    v: &[T],
    layout: &Layout,
    idx: &[usize],
    src: &[T],
    sl: &Layout,
    dim: usize,
    (op, include_self): (ScatterOp, bool),
) -> Result<HostData> {
    const OP: &str = "scatter_reduce";
    let x = read(OP, v, layout)?;
    let s = read(OP, src, sl)?;
    let out_strides = Layout::contiguous(layout.shape()).strides().to_vec();
    // Per output element: how many source values landed, their running sum or product (in
    // the accumulator type), and the running extreme or last value (amax, amin, replace).
    let mut count = vec![0usize; x.len()];
    let start = |t: usize| match op {
        ScatterOp::Prod if !include_self => T::ACC_ONE,
        ScatterOp::Sum | ScatterOp::Mean if !include_self => T::ACC_ZERO,
        _ => x[t].widen(),
    };
    let mut acc: Vec<T::Acc> = (0..x.len()).map(start).collect();
    let mut pick = x.to_vec();
    for_each_position(sl.shape(), |flat, pos| {
        let t = offset_with(pos, &out_strides, dim, idx[flat]);
        let e = s[flat];
        acc[t] = match op {
            ScatterOp::Prod => T::acc_mul(acc[t], e.widen()),
            _ => T::acc_add(acc[t], e.widen()),
        };
        let first = count[t] == 0 && !include_self;
        pick[t] = match op {
            ScatterOp::Amax | ScatterOp::Amin if first => e,
            ScatterOp::Amax => extreme(pick[t], e, true),
            ScatterOp::Amin => extreme(pick[t], e, false),
            _ => e,
        };
        count[t] += 1;
    });
    let out = (0..x.len())
        .map(|t| match op {
            _ if count[t] == 0 => x[t],
            ScatterOp::Replace | ScatterOp::Amax | ScatterOp::Amin => pick[t],
            ScatterOp::Sum | ScatterOp::Prod => T::narrow(acc[t]),
            ScatterOp::Mean => {
                let n = (count[t] + usize::from(include_self)) as f64;
                let q = T::acc_f64(acc[t]) / n;
                T::from_f64(if T::DTYPE.is_float() { q } else { q.floor() })
            }
        })
        .collect();
    Ok(T::wrap(out))
}

/// The larger (`max`) or smaller of two values, NaN if either is NaN (torch.amax / amin).
fn extreme<T: Elem>(a: T, b: T, max: bool) -> T {
    if a.is_nan() {
        return a;
    }
    if b.is_nan() || (max && b > a) || (!max && b < a) {
        return b;
    }
    a
}

/// Storage offset (without the base offset) of `pos` with `pos[dim]` replaced by `id`.
fn offset_with(pos: &[usize], strides: &[usize], dim: usize, id: usize) -> usize {
    pos.iter().zip(strides).enumerate().map(|(d, (&p, &s))| if d == dim { id * s } else { p * s }).sum()
}

/// The ids in row-major order as usize, each checked to be in `0..shape[dim]`.
fn read_ids(op: &'static str, ids: &HostData, il: &Layout, shape: &[usize], dim: usize) -> Result<Vec<usize>> {
    let size = shape[dim];
    let out_of_range =
        |index: i64| Error::IndexOutOfRange { op, index, size, what: format!("dim {dim} of shape {shape:?}") };
    match ids {
        HostData::U32(v) => read(op, v, il)?
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&u| u < size).ok_or_else(|| out_of_range(i64::from(i))))
            .collect(),
        HostData::I32(v) => read(op, v, il)?
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&u| u < size).ok_or_else(|| out_of_range(i64::from(i))))
            .collect(),
        other => Err(Error::dtype(op, "u32 or i32 ids", other.dtype())),
    }
}
