//! Reductions over trailing dims, softmax over the last dim, and prefix sums.

use kiln_backend::{Error, HostData, Layout, ReduceOp, Result};

use crate::elem::{Elem, Float, Num};
use crate::kernel::{alloc, for_each_block, map_rows, product, unsupported, vectorised};
use crate::strided::{check, read};
use crate::walk::Walk;

/// Reduces the last `reduced_dims` dims. Sum and Prod of f32/f16 accumulate in f64; integers
/// wrap. Max/Min propagate NaN; ArgMax/ArgMin return the first position of the extreme, where a
/// NaN counts as the extreme (the first NaN wins), as torch.argmax/argmin do. Over zero elements
/// Sum is 0 and Prod is 1; Max, Min and the Arg ops are an `InvalidArgument`.
/// `reduced_dims == 0` makes every element its own group.
pub(crate) fn reduce(data: &HostData, layout: &Layout, op: ReduceOp, reduced_dims: usize) -> Result<HostData> {
    let name = op.name();
    if reduced_dims > layout.rank() {
        return Err(Error::invalid(
            name,
            format!("cannot reduce {reduced_dims} dims of a rank-{} tensor {:?}", layout.rank(), layout.shape()),
        ));
    }
    dispatch_num!(data, name, v => reduce_typed(v, layout, op, reduced_dims))
}

fn reduce_typed<T: Num>(v: &[T], layout: &Layout, op: ReduceOp, reduced_dims: usize) -> Result<HostData> {
    let name = op.name();
    if op == ReduceOp::Sum
        && let Some(out) = column_sums(v, layout, reduced_dims)?
    {
        return Ok(T::wrap(out));
    }
    let x = read(name, v, layout)?;
    let (kept, reduced) = layout.shape().split_at(layout.rank() - reduced_dims);
    let (groups, group_len) = (product(name, kept)?, product(name, reduced)?);
    if op.is_arg() && group_len as u64 > u32::MAX as u64 + 1 {
        return Err(Error::invalid(name, format!("{group_len} positions do not fit a u32 index")));
    }
    if group_len == 0 && groups > 0 {
        return match op {
            ReduceOp::Sum => Ok(T::wrap(alloc(name, groups, T::narrow(T::ACC_ZERO))?)),
            ReduceOp::Prod => Ok(T::wrap(alloc(name, groups, T::narrow(T::ACC_ONE))?)),
            _ => Err(Error::invalid(name, format!("reducing {reduced:?} of {:?}: no elements", layout.shape()))),
        };
    }
    if groups == 0 {
        return Ok(if op.is_arg() { HostData::U32(Vec::new()) } else { T::wrap(Vec::new()) });
    }
    Ok(match op {
        ReduceOp::Sum => T::wrap(map_rows(&x, group_len, |g| {
            T::narrow(g.iter().fold(T::ACC_ZERO, |a, &e| T::acc_add(a, e.widen())))
        })),
        ReduceOp::Prod => {
            T::wrap(map_rows(&x, group_len, |g| T::narrow(g.iter().fold(T::ACC_ONE, |a, &e| T::acc_mul(a, e.widen())))))
        }
        ReduceOp::Max => T::wrap(map_rows(&x, group_len, |g| extreme(g, true).1)),
        ReduceOp::Min => T::wrap(map_rows(&x, group_len, |g| extreme(g, false).1)),
        ReduceOp::ArgMax => HostData::U32(map_rows(&x, group_len, |g| extreme(g, true).0 as u32)),
        ReduceOp::ArgMin => HostData::U32(map_rows(&x, group_len, |g| extreme(g, false).0 as u32)),
    })
}

/// Sums over leading dims of a dense block, the shape of a bias gradient (`[rows, n] → [n]`):
/// when the kept dims collapse to one dense run of `n` and the reduced dims to one dim of any
/// stride, `out[j] = Σ_r x[r·stride + j]` accumulates row after row into `n` accumulators, a
/// vectorisable loop, instead of gathering the transposed input first. Each output still adds
/// its elements in row-major order of the reduced dims, as the gathered path does, so the result
/// is the same to the bit. `None` when the layout has another form.
fn column_sums<T: Num>(v: &[T], layout: &Layout, reduced_dims: usize) -> Result<Option<Vec<T>>> {
    let rank = layout.rank();
    if reduced_dims == 0 || reduced_dims == rank {
        return Ok(None);
    }
    if check("sum", layout, v.len())? == 0 {
        return Ok(None);
    }
    let split = rank - reduced_dims;
    let (shape, strides) = (layout.shape(), layout.strides());
    let kept = Walk::new(&shape[..split], [&Layout::new(shape[..split].to_vec(), strides[..split].to_vec(), 0)]);
    let reduced = Walk::new(&shape[split..], [&Layout::new(shape[split..].to_vec(), strides[split..].to_vec(), 0)]);
    let (&[cols], &[1]) = (kept.dims(), kept.strides()) else { return Ok(None) };
    let (&[rows], &[row_stride]) = (reduced.dims(), reduced.strides()) else { return Ok(None) };
    if rows < 2 {
        return Ok(None);
    }
    let mut acc = alloc("sum", cols, T::ACC_ZERO)?;
    for r in 0..rows {
        let row = &v[layout.offset() + r * row_stride..][..cols];
        let sums = &mut acc[..];
        vectorised(
            #[inline(always)]
            move || sums.iter_mut().zip(row).for_each(|(a, &e)| *a = T::acc_add(*a, e.widen())),
        );
    }
    Ok(Some(acc.into_iter().map(T::narrow).collect()))
}

/// Position and value of the first maximum (or minimum) of `g`; the first NaN beats everything.
fn extreme<T: Elem>(g: &[T], max: bool) -> (usize, T) {
    let mut best = (0, g.first().copied().unwrap_or_default());
    if best.1.is_nan() {
        return best;
    }
    for (i, &e) in g.iter().enumerate().skip(1) {
        if e.is_nan() {
            return (i, e);
        }
        if (max && e > best.1) || (!max && e < best.1) {
            best = (i, e);
        }
    }
    best
}

/// Softmax (or log-softmax) over the last dim, in f64: subtracting the row max keeps exp from
/// overflowing. A row that is all −inf (or holds NaN or +inf) comes out NaN, as in PyTorch.
/// A rank-0 tensor is one row of one element.
pub(crate) fn softmax_last(data: &HostData, layout: &Layout, log: bool) -> Result<HostData> {
    let name = if log { "log_softmax" } else { "softmax" };
    match data {
        HostData::F32(v) => softmax_typed(name, v, layout, log),
        HostData::F16(v) => softmax_typed(name, v, layout, log),
        HostData::F64(v) => softmax_typed(name, v, layout, log),
        other => Err(unsupported(name, other.dtype(), "floating-point dtypes only")),
    }
}

fn softmax_typed<T: Float>(name: &'static str, v: &[T], layout: &Layout, log: bool) -> Result<HostData> {
    let x = read(name, v, layout)?;
    let n = layout.shape().last().copied().unwrap_or(1);
    let mut out = alloc(name, x.len(), T::default())?;
    if n == 0 || x.is_empty() {
        return Ok(T::wrap(out));
    }
    for_each_block(&mut out, n, |r, row| {
        let src = &x[r * n..(r + 1) * n];
        let m = src.iter().fold(f64::NEG_INFINITY, |m, &e| m.max(e.to_f64()));
        let shifted: Vec<f64> = src.iter().map(|&e| e.to_f64() - m).collect();
        if log {
            let lse = shifted.iter().map(|d| d.exp()).sum::<f64>().ln();
            for (o, d) in row.iter_mut().zip(&shifted) {
                *o = T::from_f64(d - lse);
            }
        } else {
            let exps: Vec<f64> = shifted.iter().map(|d| d.exp()).collect();
            let sum: f64 = exps.iter().sum();
            for (o, e) in row.iter_mut().zip(&exps) {
                *o = T::from_f64(e / sum);
            }
        }
    });
    Ok(T::wrap(out))
}

/// Inclusive prefix sum along `dim`; f32/f16 run their sums in f64, integers wrap.
pub(crate) fn cumsum(data: &HostData, layout: &Layout, dim: usize) -> Result<HostData> {
    const OP: &str = "cumsum";
    if dim >= layout.rank() {
        return Err(Error::invalid(OP, format!("dim {dim} out of range for shape {:?}", layout.shape())));
    }
    dispatch_num!(data, OP, v => cumsum_typed(v, layout, dim))
}

fn cumsum_typed<T: Num>(v: &[T], layout: &Layout, dim: usize) -> Result<HostData> {
    const OP: &str = "cumsum";
    let x = read(OP, v, layout)?;
    let shape = layout.shape();
    let (len, inner) = (shape[dim], product(OP, &shape[dim + 1..])?);
    let mut out = alloc(OP, x.len(), T::default())?;
    let block = len * inner;
    if block == 0 {
        return Ok(T::wrap(out));
    }
    for_each_block(&mut out, block, |b, o| {
        let src = &x[b * block..(b + 1) * block];
        for i in 0..inner {
            let mut acc = T::ACC_ZERO;
            for j in 0..len {
                acc = T::acc_add(acc, src[j * inner + i].widen());
                o[j * inner + i] = T::narrow(acc);
            }
        }
    });
    Ok(T::wrap(out))
}
