//! `topk` over the last dim.

use std::cmp::Ordering;

use kiln_backend::{Error, HostData, Layout, Result};

use crate::elem::Elem;
use crate::kernel::{alloc, for_each_block};
use crate::strided::read;

const OP: &str = "topk";

/// The `k` largest (or smallest) entries of each last-dim row, sorted descending (ascending), and
/// their u32 positions. NaN ranks above every number, as in torch.topk, so it comes first for
/// `largest` and last otherwise; ties keep the lower index first (the sort is stable).
/// A rank-0 tensor is one row of one element.
pub(crate) fn topk(data: &HostData, layout: &Layout, k: usize, largest: bool) -> Result<(HostData, HostData)> {
    let n = layout.shape().last().copied().unwrap_or(1);
    if k > n {
        return Err(Error::invalid(OP, format!("k = {k} exceeds the last dim of {:?}", layout.shape())));
    }
    if n > u32::MAX as usize {
        return Err(Error::invalid(OP, format!("{n} positions do not fit a u32 index")));
    }
    dispatch_num!(data, OP, v => topk_typed(v, layout, n, k, largest))
}

fn topk_typed<T: Elem>(v: &[T], layout: &Layout, n: usize, k: usize, largest: bool) -> Result<(HostData, HostData)> {
    let x = read(OP, v, layout)?;
    let rows = x.len().checked_div(n).unwrap_or(0);
    let mut idx = alloc(OP, rows * k, 0u32)?;
    if idx.is_empty() {
        return Ok((T::wrap(Vec::new()), HostData::U32(idx)));
    }
    for_each_block(&mut idx, k, |r, out| {
        let row = &x[r * n..(r + 1) * n];
        let mut order: Vec<u32> = (0..n as u32).collect();
        if largest {
            order.sort_by(|&i, &j| nan_max_cmp(row[j as usize], row[i as usize]));
        } else {
            order.sort_by(|&i, &j| nan_max_cmp(row[i as usize], row[j as usize]));
        }
        out.copy_from_slice(&order[..k]);
    });
    let values = idx.iter().enumerate().map(|(p, &i)| x[(p / k) * n + i as usize]).collect();
    Ok((T::wrap(values), HostData::U32(idx)))
}

/// A total order with NaN above everything and NaNs equal to each other.
fn nan_max_cmp<T: Elem>(a: T, b: T) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}
