//! Elementwise maps over strided inputs, written straight into a fresh row-major output.
//!
//! Nothing is gathered into a temporary first. The inputs' dims are collapsed (size-1 dims
//! dropped, neighbours that every input steps through as one run merged), then the output is
//! filled one row of the innermost dim at a time. Inside a row each input advances by its
//! stride, and the strides that broadcasting and dense storage produce (1, or 0 for a broadcast
//! scalar, row or column) get loops over plain slices, which the compiler vectorises (with AVX2
//! where the CPU has it). Dense inputs collapse to one run. Large outputs split across threads.

use std::mem::MaybeUninit;

use kiln_backend::{Layout, Result};
use rayon::prelude::*;

use crate::kernel::{PAR_MIN, vectorised, with_capacity};
use crate::strided::check;

/// `f` of each element of `a` (viewed through `al`), in row-major order.
pub(crate) fn map1<A, U, F>(op: &'static str, a: &[A], al: &Layout, f: F) -> Result<Vec<U>>
where
    A: Copy + Sync,
    U: Copy + Send,
    F: Fn(A) -> U + Sync + Send,
{
    let n = check(op, al, a.len())?;
    let walk = Walk::new(al.shape(), [al]);
    fill(op, n, &walk, |dst, [oa], [sa]| {
        let (len, f) = (dst.len(), &f);
        match sa {
            1 => vectorised(
                #[inline(always)]
                move || dst.iter_mut().zip(&a[oa..oa + len]).for_each(|(d, &x)| _ = d.write(f(x))),
            ),
            0 => {
                let v = f(a[oa]);
                dst.iter_mut().for_each(|d| _ = d.write(v));
            }
            _ => dst.iter_mut().enumerate().for_each(|(j, d)| _ = d.write(f(a[oa + j * sa]))),
        }
    })
}

/// `f` of each pair of elements of `a` and `b`, whose layouts have one shape (callers check).
pub(crate) fn map2<A, B, U, F>(op: &'static str, a: &[A], al: &Layout, b: &[B], bl: &Layout, f: F) -> Result<Vec<U>>
where
    A: Copy + Sync,
    B: Copy + Sync,
    U: Copy + Send,
    F: Fn(A, B) -> U + Sync + Send,
{
    let n = check(op, al, a.len())?;
    check(op, bl, b.len())?;
    let walk = Walk::new(al.shape(), [al, bl]);
    fill(op, n, &walk, |dst, [oa, ob], [sa, sb]| {
        let (len, f) = (dst.len(), &f);
        match (sa, sb) {
            (1, 1) => vectorised(
                #[inline(always)]
                move || {
                    let (x, y) = (&a[oa..oa + len], &b[ob..ob + len]);
                    dst.iter_mut().zip(x.iter().zip(y)).for_each(|(d, (&p, &q))| _ = d.write(f(p, q)));
                },
            ),
            (0, 1) => vectorised(
                #[inline(always)]
                move || {
                    let p = a[oa];
                    dst.iter_mut().zip(&b[ob..ob + len]).for_each(|(d, &q)| _ = d.write(f(p, q)));
                },
            ),
            (1, 0) => vectorised(
                #[inline(always)]
                move || {
                    let q = b[ob];
                    dst.iter_mut().zip(&a[oa..oa + len]).for_each(|(d, &p)| _ = d.write(f(p, q)));
                },
            ),
            _ => dst.iter_mut().enumerate().for_each(|(j, d)| _ = d.write(f(a[oa + j * sa], b[ob + j * sb]))),
        }
    })
}

/// `f` of each triple of elements of `a`, `b` and `c`, whose layouts have one shape.
pub(crate) fn map3<A, B, C, U, F>(
    op: &'static str,
    (a, al): (&[A], &Layout),
    (b, bl): (&[B], &Layout),
    (c, cl): (&[C], &Layout),
    f: F,
) -> Result<Vec<U>>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    U: Copy + Send,
    F: Fn(A, B, C) -> U + Sync + Send,
{
    let n = check(op, al, a.len())?;
    check(op, bl, b.len())?;
    check(op, cl, c.len())?;
    let walk = Walk::new(al.shape(), [al, bl, cl]);
    fill(op, n, &walk, |dst, [oa, ob, oc], [sa, sb, sc]| {
        let (len, f) = (dst.len(), &f);
        if (sa, sb, sc) == (1, 1, 1) {
            vectorised(
                #[inline(always)]
                move || {
                    let (x, y, z) = (&a[oa..oa + len], &b[ob..ob + len], &c[oc..oc + len]);
                    dst.iter_mut().zip(x.iter().zip(y).zip(z)).for_each(|(d, ((&p, &q), &r))| _ = d.write(f(p, q, r)));
                },
            );
        } else {
            dst.iter_mut()
                .enumerate()
                .for_each(|(j, d)| _ = d.write(f(a[oa + j * sa], b[ob + j * sb], c[oc + j * sc])));
        }
    })
}

/// A fresh output of `n` elements, written run by run by `row(dst, offsets, strides)`: a run is
/// (part of) one row of `walk`'s innermost dim, `dst` its part of the output, `offsets` where it
/// starts in each input's storage and `strides` each input's step along the row. Every `row`
/// above writes each element of its `dst` exactly once (a zip or enumerate over all of `dst`,
/// against input slices of the same length, or a panic on a bad index), which is what lets the
/// output skip being zeroed first.
fn fill<U, const N: usize>(
    op: &'static str,
    n: usize,
    walk: &Walk<N>,
    row: impl Fn(&mut [MaybeUninit<U>], [usize; N], [usize; N]) + Sync + Send,
) -> Result<Vec<U>>
where
    U: Copy + Send,
{
    let mut out = with_capacity(op, n)?;
    if n == 0 {
        return Ok(out);
    }
    let steps = walk.inner().1;
    let dst = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_MIN {
        // A few pieces per thread, so that uneven progress still balances; a piece may start
        // or end inside a row.
        let piece = n.div_ceil(4 * rayon::current_num_threads());
        dst.par_chunks_mut(piece).enumerate().for_each(|(i, block)| {
            let start = i * piece;
            walk.segments(start, start + block.len(), |at, len, offsets| {
                row(&mut block[at - start..][..len], offsets, steps)
            });
        });
    } else {
        walk.segments(0, n, |at, len, offsets| row(&mut dst[at..][..len], offsets, steps));
    }
    // SAFETY: `segments(0, n)` (or the pieces, which tile 0..n) visits every position below
    // `n` exactly once, and each `row` writes every element of its run (see above), so the first
    // `n` elements are initialised. Had anything panicked, we would not be here; `U: Copy` has
    // no destructor to skip.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// `N` layouts of one shape, collapsed: size-1 dims dropped, and a dim merged into the one
/// outside it wherever every input steps through the pair as one run (`outer stride = inner
/// stride · inner size`). At least one dim remains (a scalar becomes `[1]`).
pub(crate) struct Walk<const N: usize> {
    shape: Vec<usize>,
    strides: [Vec<usize>; N],
    offsets: [usize; N],
}

impl<const N: usize> Walk<N> {
    /// The layouts must each have `shape` (callers check shapes, `check` checks bounds).
    pub(crate) fn new(shape: &[usize], layouts: [&Layout; N]) -> Walk<N> {
        let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
        let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::with_capacity(shape.len()));
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            let merges = !dims.is_empty()
                && (0..N).all(|k| layouts[k].strides()[d].checked_mul(size) == Some(strides[k][dims.len() - 1]));
            if merges {
                let last = dims.len() - 1;
                // Saturating: only a layout with a 0 dim (never walked) can overflow here.
                dims[last] = dims[last].saturating_mul(size);
                for (k, s) in strides.iter_mut().enumerate() {
                    s[last] = layouts[k].strides()[d];
                }
            } else {
                dims.push(size);
                for (k, s) in strides.iter_mut().enumerate() {
                    s.push(layouts[k].strides()[d]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            strides.iter_mut().for_each(|s| s.push(0));
        }
        Walk { shape: dims, strides, offsets: std::array::from_fn(|k| layouts[k].offset()) }
    }

    /// The collapsed dims.
    pub(crate) fn dims(&self) -> &[usize] {
        &self.shape
    }

    /// Length of a row (the innermost dim) and each input's stride along it.
    fn inner(&self) -> (usize, [usize; N]) {
        let last = self.shape.len() - 1;
        (self.shape[last], std::array::from_fn(|k| self.strides[k][last]))
    }

    /// Calls `f(at, len, offsets)` for each run of output elements `start .. end` (`start <
    /// end <= numel`) that lies in one row: `at` is the run's first flat position, `len` its
    /// length and `offsets` where it starts in every input.
    fn segments(&self, start: usize, end: usize, mut f: impl FnMut(usize, usize, [usize; N])) {
        let (len, steps) = self.inner();
        let (first, last) = (start / len, (end - 1) / len);
        self.rows(first, last - first + 1, |r, mut offsets| {
            let (lo, hi) = ((r * len).max(start), ((r + 1) * len).min(end));
            (0..N).for_each(|k| offsets[k] += (lo - r * len) * steps[k]);
            f(lo, hi - lo, offsets)
        });
    }

    /// Calls `f(row, offsets)` for rows `first .. first + count` in order, with the storage
    /// offset of each row's first element in every input.
    fn rows(&self, first: usize, count: usize, mut f: impl FnMut(usize, [usize; N])) {
        let outer = &self.shape[..self.shape.len() - 1];
        let mut pos = vec![0; outer.len()];
        let mut rest = first;
        for d in (0..outer.len()).rev() {
            pos[d] = rest % outer[d];
            rest /= outer[d];
        }
        let mut offsets = self.offsets;
        for (k, o) in offsets.iter_mut().enumerate() {
            *o += pos.iter().zip(&self.strides[k]).map(|(p, s)| p * s).sum::<usize>();
        }
        for r in first..first + count {
            f(r, offsets);
            // Odometer step; the subtraction only undoes additions made since that digit was 0.
            for d in (0..outer.len()).rev() {
                pos[d] += 1;
                if pos[d] < outer[d] {
                    (0..N).for_each(|k| offsets[k] += self.strides[k][d]);
                    break;
                }
                pos[d] = 0;
                (0..N).for_each(|k| offsets[k] -= (outer[d] - 1) * self.strides[k][d]);
            }
        }
    }
}

impl Walk<1> {
    /// The collapsed strides of a walk over one layout.
    pub(crate) fn strides(&self) -> &[usize] {
        &self.strides[0]
    }
}
