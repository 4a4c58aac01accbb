//! Batched matmul `[b, m, k] · [b, k, n] → [b, m, n]` over arbitrary strides.
//!
//! f32 and f64 go straight to `matrixmultiply`'s sgemm/dgemm, which take any row/column
//! stride (zero included), so transposed and broadcast inputs cost no copy. matrixmultiply runs
//! single-threaded; big products split into bands of rows (or of columns, when wider than tall)
//! over rayon's threads here, so one pool serves every kernel. f16 is converted to
//! f32 and multiplied there (f32 accumulation). Integers use a plain triple loop with wrapping
//! arithmetic. `k = 0` gives zeros.

use std::mem::MaybeUninit;

use half::f16;
use kiln_backend::{Error, HostData, Layout, Result};
use rayon::prelude::*;

use crate::binary::same;
use crate::elem::{Elem, Int};
use crate::kernel::{alloc, for_each_block, product, unsupported, with_capacity};
use crate::strided::{check, read};

const OP: &str = "matmul";

pub(crate) fn matmul(a: &HostData, al: &Layout, b: &HostData, bl: &Layout) -> Result<HostData> {
    let dims = Dims::new(al, bl)?;
    match a {
        HostData::F32(x) => Ok(HostData::F32(gemm(x, al, same(OP, b)?, bl, dims)?)),
        HostData::F64(x) => Ok(HostData::F64(gemm(x, al, same(OP, b)?, bl, dims)?)),
        HostData::F16(x) => {
            let y: &[f16] = same(OP, b)?;
            let widen = |v: &[f16], l: &Layout| -> Result<Vec<f32>> {
                Ok(read(OP, v, l)?.iter().map(|e| e.to_f32()).collect())
            };
            let (x32, y32) = (widen(x, al)?, widen(y, bl)?);
            let (cal, cbl) = (Layout::contiguous(al.shape()), Layout::contiguous(bl.shape()));
            let c = gemm(&x32, &cal, &y32, &cbl, dims)?;
            Ok(HostData::F16(c.iter().map(|&e| f16::from_f32(e)).collect()))
        }
        HostData::I32(x) => Ok(HostData::I32(int_matmul(x, al, same(OP, b)?, bl, dims)?)),
        HostData::U32(x) => Ok(HostData::U32(int_matmul(x, al, same(OP, b)?, bl, dims)?)),
        HostData::Bool(_) => Err(unsupported(OP, a.dtype(), "numeric dtypes only")),
    }
}

#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

impl Dims {
    fn new(al: &Layout, bl: &Layout) -> Result<Dims> {
        let (&[batch, m, k], &[b2, k2, n]) = (al.shape(), bl.shape()) else {
            return Err(Error::shape(
                OP,
                format!("expected [b, m, k] · [b, k, n], got {:?} · {:?}", al.shape(), bl.shape()),
            ));
        };
        if batch != b2 || k != k2 {
            return Err(Error::shape(OP, format!("{:?} · {:?}: batch or inner dims differ", al.shape(), bl.shape())));
        }
        Ok(Dims { batch, m, k, n })
    }
}

/// One gemm operand: where its (0, 0) element is and how to step along rows and columns.
#[derive(Clone, Copy)]
struct Operand<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

trait Gemm: Elem {
    /// `c ← a · b` for one m×k by k×n product.
    ///
    /// # Safety
    /// Every `a.ptr + i·a.rs + p·a.cs` (i < m, p < k) and `b.ptr + p·b.rs + j·b.cs` (p < k, j < n)
    /// is in bounds of its allocation, and `c` is a distinct, writable, row-major m×n block.
    unsafe fn gemm(d: Dims, a: Operand<Self>, b: Operand<Self>, c: *mut Self) {
        // SAFETY: forwarded; a row-major m×n block has row stride n.
        unsafe { Self::gemm_into(d, a, b, c, d.n as isize) }
    }

    /// `c ← a · b` into an m×n block of C whose rows are `rsc` apart (column stride 1).
    ///
    /// # Safety
    /// As [`Gemm::gemm`], with `c + i·rsc + j` (i < m, j < n) writable and not read or written by
    /// anyone else during the call.
    unsafe fn gemm_into(d: Dims, a: Operand<Self>, b: Operand<Self>, c: *mut Self, rsc: isize);
}

impl Gemm for f32 {
    unsafe fn gemm_into(d: Dims, a: Operand<f32>, b: Operand<f32>, c: *mut f32, rsc: isize) {
        // SAFETY: forwarded from this function's contract; C's strides are (rsc, 1).
        unsafe { matrixmultiply::sgemm(d.m, d.k, d.n, 1.0, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, 0.0, c, rsc, 1) }
    }
}

impl Gemm for f64 {
    unsafe fn gemm_into(d: Dims, a: Operand<f64>, b: Operand<f64>, c: *mut f64, rsc: isize) {
        // SAFETY: forwarded from this function's contract; C's strides are (rsc, 1).
        unsafe { matrixmultiply::dgemm(d.m, d.k, d.n, 1.0, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, 0.0, c, rsc, 1) }
    }
}

/// Products of at least this many multiply-adds split across threads; smaller ones stay on one
/// (a batch of them spreads over threads by batch). About 50 µs of work on one core: below
/// that, waking a second thread costs more than it saves.
const PAR_GEMM: usize = 1 << 21;

fn gemm<T: Gemm>(a: &[T], al: &Layout, b: &[T], bl: &Layout, d: Dims) -> Result<Vec<T>> {
    check(OP, al, a.len())?;
    check(OP, bl, b.len())?;
    let per_batch = product(OP, &[d.m, d.n])?;
    let total = product(OP, &[d.batch, per_batch])?;
    if total == 0 || d.k == 0 {
        return alloc(OP, total, T::default());
    }
    // Not zeroed first: every element is written below by a gemm with β = 0, which
    // matrixmultiply documents never reads C ("if β is zero, then C does not need to be
    // initialized"), so zeroing would be a wasted pass over the output.
    let mut out: Vec<T> = with_capacity(OP, total)?;
    let dst = &mut out.spare_capacity_mut()[..total];
    let stride = |l: &Layout, i: usize| {
        isize::try_from(l.strides()[i]).map_err(|_| Error::invalid(OP, format!("stride {:?} too large", l.strides())))
    };
    let (rsa, csa, rsb, csb) = (stride(al, 1)?, stride(al, 2)?, stride(bl, 1)?, stride(bl, 2)?);
    isize::try_from(d.n).map_err(|_| Error::invalid(OP, "n too large"))?;
    // Rows `first .. first + c.len() / n` of batch `bi`'s product into `c`.
    let run = |bi: usize, first: usize, c: &mut [MaybeUninit<T>]| {
        let a_off = al.offset() + bi * al.strides()[0] + first * al.strides()[1];
        let b_off = bl.offset() + bi * bl.strides()[0];
        let rows = Dims { m: c.len() / d.n, ..d };
        // SAFETY: `check` proved that every element of both layouts, i.e. every offset
        // `offset + bi·s0 + i·s1 + p·s2` with indices below the shape, is inside its slice, so
        // `a_off`/`b_off` are in bounds and so is every element gemm reads from them (rows
        // `first ..` of A are rows of the layout); `c` is its own block of `out`, `rows.m` full
        // rows of `n`.
        unsafe {
            let a = Operand { ptr: a.as_ptr().add(a_off), rs: rsa, cs: csa };
            let b = Operand { ptr: b.as_ptr().add(b_off), rs: rsb, cs: csb };
            T::gemm(rows, a, b, c.as_mut_ptr().cast::<T>())
        }
    };

    let macs = d.m.saturating_mul(d.n).saturating_mul(d.k);
    if macs < PAR_GEMM {
        for_each_block(dst, per_batch, |bi, c| run(bi, 0, c));
        // SAFETY: the gemms above wrote all `total` elements (the blocks tile the output).
        unsafe { out.set_len(total) };
        return Ok(out);
    }
    let threads = rayon::current_num_threads();
    if d.n > d.m && threads > 1 {
        // Wider than tall (a linear layer's tokens × features): one band of output columns per
        // thread. Each thread packs all of A and its own columns of B, less than the whole of B
        // (the bigger operand here) that a band of rows would pack.
        for (bi, c) in dst.chunks_mut(per_batch).enumerate() {
            column_bands(d, threads, bi, (a, al, rsa, csa), (b, bl, rsb, csb), c);
        }
        // SAFETY: the gemms above wrote all `total` elements (the blocks tile the output).
        unsafe { out.set_len(total) };
        return Ok(out);
    }
    // A big product: one band of output rows per thread, each its own single-threaded gemm
    // (each packs B for itself, in parallel, and its own rows of A).
    let bands = threads.min(d.m).max(1);
    let band_rows = d.m.div_ceil(bands);
    for (bi, c) in dst.chunks_mut(per_batch).enumerate() {
        c.par_chunks_mut(band_rows * d.n).enumerate().for_each(|(i, band)| run(bi, i * band_rows, band));
    }
    // SAFETY: the gemms above wrote all `total` elements (each batch's bands tile its block).
    unsafe { out.set_len(total) };
    Ok(out)
}

/// The output pointer, shared by the threads of [`column_bands`], each writing its own columns.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);

impl<T> OutPtr<T> {
    /// The pointer (a method, so that a closure captures the whole `Sync` wrapper, not the field).
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: only used by `column_bands`, whose threads write disjoint elements.
unsafe impl<T> Send for OutPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for OutPtr<T> {}

/// Batch `bi`'s product into `c` (row-major m×n) as one single-threaded gemm per band of
/// `n / threads` columns. Each element is the same k-sum as in one whole gemm (matrixmultiply's
/// blocking along k does not depend on m or n), so the bits do not depend on the split.
fn column_bands<T: Gemm>(
    d: Dims,
    threads: usize,
    bi: usize,
    (a, al, rsa, csa): (&[T], &Layout, isize, isize),
    (b, bl, rsb, csb): (&[T], &Layout, isize, isize),
    c: &mut [MaybeUninit<T>],
) {
    let band = d.n.div_ceil(threads.min(d.n));
    let a_off = al.offset() + bi * al.strides()[0];
    let b_off = bl.offset() + bi * bl.strides()[0];
    debug_assert_eq!(c.len(), d.m * d.n, "matmul: output block");
    let out = OutPtr(c.as_mut_ptr().cast::<T>());
    (0..d.n.div_ceil(band)).into_par_iter().for_each(|i| {
        let first = i * band;
        let cols = Dims { n: band.min(d.n - first), ..d };
        // SAFETY: `check` proved every element of both layouts inside its slice, so every A
        // element gemm reads (rows < m, p < k) and every B element of columns `first ..
        // first + cols.n` (< n) is in bounds. C's columns `first ..` of each of the m rows
        // (row stride n) are inside `c` (one m·n block of the output) and written by this band only.
        unsafe {
            let a = Operand { ptr: a.as_ptr().add(a_off), rs: rsa, cs: csa };
            let b = Operand { ptr: b.as_ptr().add(b_off).offset(first as isize * csb), rs: rsb, cs: csb };
            T::gemm_into(cols, a, b, out.get().add(first), d.n as isize)
        }
    });
}

fn int_matmul<T: Int>(a: &[T], al: &Layout, b: &[T], bl: &Layout, d: Dims) -> Result<Vec<T>> {
    check(OP, al, a.len())?;
    check(OP, bl, b.len())?;
    let mut out = alloc(OP, product(OP, &[d.batch, d.m, d.n])?, T::ZERO)?;
    if out.is_empty() {
        return Ok(out);
    }
    let ([sa0, sa1, sa2], [sb0, sb1, sb2]) = (stride3(al), stride3(bl));
    // One block per output row: (batch, i).
    for_each_block(&mut out, d.n, |row, o| {
        let (bi, i) = (row / d.m, row % d.m);
        let a0 = al.offset() + bi * sa0 + i * sa1;
        let b0 = bl.offset() + bi * sb0;
        for (j, o) in o.iter_mut().enumerate() {
            *o = (0..d.k).fold(T::ZERO, |acc, p| acc.wadd(a[a0 + p * sa2].wmul(b[b0 + p * sb1 + j * sb2])));
        }
    });
    Ok(out)
}

fn stride3(l: &Layout) -> [usize; 3] {
    match l.strides() {
        &[s0, s1, s2] => [s0, s1, s2],
        _ => [0; 3],
    }
}
