//! Batched matmul `[b, m, k] · [b, k, n] → [b, m, n]` over arbitrary strides.
//!
//! f32 and f64 go to `matrixmultiply`'s sgemm/dgemm, which take any row/column stride (zero
//! included). It packs operands into panels before multiplying, by plain copies when A is
//! column-major and B row-major but one element at a time otherwise; so a row-major A or a
//! column-major B (a Linear layer's `x · Wᵀ` has both) is first transposed into per-thread
//! scratch with a vectorised transpose (`transpose.rs`), which in W6's products of 128 tokens
//! made them 1.4–1.8× faster. matrixmultiply runs
//! single-threaded; big products split into bands of rows (or of columns, when wider than tall)
//! over rayon's threads here, so one pool serves every kernel. f16 is converted to
//! f32 and multiplied there (f32 accumulation). Integers use a plain triple loop with wrapping
//! arithmetic. `k = 0` gives zeros.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::thread::LocalKey;

use half::f16;
use kiln_backend::{Error, HostData, Layout, Result};
use rayon::prelude::*;

use crate::binary::same;
use crate::elem::{Elem, Int};
use crate::kernel::{alloc, for_each_block, product, unsupported, with_capacity};
use crate::strided::{check, read};
use crate::transpose::Transpose;

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

trait Gemm: Elem + Transpose {
    /// This thread's two scratch buffers for transposed operands (see [`gemm_dense`]).
    fn scratch() -> &'static LocalKey<RefCell<[Vec<Self>; 2]>>;

    /// `c ← a · b` into an m×n block of C whose rows are `rsc` apart (column stride 1).
    ///
    /// # Safety
    /// Every `a.ptr + i·a.rs + p·a.cs` (i < m, p < k) and `b.ptr + p·b.rs + j·b.cs` (p < k, j < n)
    /// is in bounds of its allocation, and `c + i·rsc + j` (i < m, j < n) is writable and not
    /// read or written by anyone else during the call.
    unsafe fn gemm_into(d: Dims, a: Operand<Self>, b: Operand<Self>, c: *mut Self, rsc: isize);
}

thread_local! {
    static SCRATCH_F32: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    static SCRATCH_F64: RefCell<[Vec<f64>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

impl Gemm for f32 {
    fn scratch() -> &'static LocalKey<RefCell<[Vec<f32>; 2]>> {
        &SCRATCH_F32
    }

    unsafe fn gemm_into(d: Dims, a: Operand<f32>, b: Operand<f32>, c: *mut f32, rsc: isize) {
        // SAFETY: forwarded from this function's contract; C's strides are (rsc, 1).
        unsafe { matrixmultiply::sgemm(d.m, d.k, d.n, 1.0, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, 0.0, c, rsc, 1) }
    }
}

impl Gemm for f64 {
    fn scratch() -> &'static LocalKey<RefCell<[Vec<f64>; 2]>> {
        &SCRATCH_F64
    }

    unsafe fn gemm_into(d: Dims, a: Operand<f64>, b: Operand<f64>, c: *mut f64, rsc: isize) {
        // SAFETY: forwarded from this function's contract; C's strides are (rsc, 1).
        unsafe { matrixmultiply::dgemm(d.m, d.k, d.n, 1.0, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, 0.0, c, rsc, 1) }
    }
}

/// Operands of at most this many elements are transposed into scratch (below); bigger ones are
/// in products long enough that matrixmultiply's packing is a small share, and the scratch
/// each thread keeps stays at most this size (4 MiB of f32).
const TRANSPOSE_MAX: usize = 1 << 20;

/// `T::gemm_into`, but a row-major A or a column-major B — which matrixmultiply packs by
/// gathering one element at a time, a third of a short product's time — is first transposed
/// into this thread's scratch (8×8 tiles in registers), so that its packing is plain copies.
/// The copy holds the same values, so the result has the same bits either way.
///
/// # Safety
/// As [`Gemm::gemm_into`].
unsafe fn gemm_dense<T: Gemm>(d: Dims, a: Operand<T>, b: Operand<T>, c: *mut T, rsc: isize) {
    // A row-major m×k A (rows `rsa` apart, not overlapping) or a column-major k×n B (B's
    // columns are the rows of Bᵀ, `csb` apart). Under 8 rows or columns there is no whole tile.
    let dense_rows = |rs: isize, cs: isize, rows: usize, cols: usize| {
        cs == 1 && rows >= 8 && cols >= 8 && rows * cols <= TRANSPOSE_MAX && rs >= cols as isize
    };
    let a_t = dense_rows(a.rs, a.cs, d.m, d.k);
    let b_t = dense_rows(b.cs, b.rs, d.n, d.k);
    if !a_t && !b_t {
        // SAFETY: forwarded.
        return unsafe { T::gemm_into(d, a, b, c, rsc) };
    }
    let go = |s: &mut [Vec<T>; 2]| {
        let [sa, sb] = s;
        let (mut a, mut b) = (a, b);
        if a_t {
            // SAFETY: the contract puts every A element in bounds: the last one read is
            // (m−1)·rsa + k−1, so the slice of that length + 1 from `a.ptr` is inside A's
            // allocation (rsa > 0 here).
            let src = unsafe { std::slice::from_raw_parts(a.ptr, (d.m - 1) * a.rs as usize + d.k) };
            a = Operand { ptr: transposed(src, a.rs as usize, d.m, d.k, sa), rs: 1, cs: d.m as isize };
        }
        if b_t {
            // SAFETY: as for A, with Bᵀ's n rows `csb` apart.
            let src = unsafe { std::slice::from_raw_parts(b.ptr, (d.n - 1) * b.cs as usize + d.k) };
            b = Operand { ptr: transposed(src, b.cs as usize, d.n, d.k, sb), rs: d.n as isize, cs: 1 };
        }
        // SAFETY: the transposed operands are dense copies in scratch that nobody else touches
        // during the call (this thread's, and gemm does not call back into here); C as given.
        unsafe { T::gemm_into(d, a, b, c, rsc) }
    };
    T::scratch().with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => go(&mut s),
        // Not reachable (nothing in the gemm re-enters), but never a panic: fresh buffers.
        Err(_) => go(&mut [Vec::new(), Vec::new()]),
    });
}

/// `src` (rows × cols, rows `ld` apart) transposed into `buf`, grown as needed (never shrunk,
/// and never zeroed: every element used is written); the copy's first element.
fn transposed<T: Gemm>(src: &[T], ld: usize, rows: usize, cols: usize, buf: &mut Vec<T>) -> *const T {
    let len = rows * cols;
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    T::transpose(src, ld, rows, cols, &mut buf[..len]);
    buf.as_ptr()
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
            gemm_dense(rows, a, b, c.as_mut_ptr().cast::<T>(), d.n as isize)
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
            gemm_dense(cols, a, b, out.get().add(first), d.n as isize)
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
