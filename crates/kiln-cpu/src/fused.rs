//! The fused primitives' reference semantics: norms, cross-entropy from logits, attention and
//! the Adam step. f16 and f64 tensors compute in f64 from the inputs' values and round once into
//! the output dtype; f32 tensors compute norms, attention and Adam in f32 (`Real`), as PyTorch's
//! CPU kernels do, without converting every element to f64 and back, and with twice the lanes
//! per vector. Statistics handed from a forward to its backward (norm mean/rstd, log-sum-exp)
//! are stored as f64 either way.

use std::borrow::Cow;
use std::ops::Range;

use kiln_backend::{
    AdamParams, AttentionParams, BackendStorage, CrossEntropyParams, DType, Error, HostData, NormParams, Result,
};
use rayon::prelude::*;

use crate::elem::Float;
use crate::fast32;
use crate::kernel::{PAR_MIN, vectorised};
use crate::storage::CpuStorage;

/// The arithmetic a fused kernel runs in: f32 for f32 tensors, f64 for the others.
trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Default
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
{
    const NEG_INFINITY: Self;
    const INFINITY: Self;
    fn of(v: f64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, o: Self) -> Self;
    /// The first `len` elements of `data` in this type (borrowed when the dtype is this type).
    fn load(data: &HostData, len: usize) -> Cow<'_, [Self]>;
    /// `v` as host data of `dtype`, rounded once (moved when the dtype is this type).
    fn store(v: Vec<Self>, dtype: DType) -> HostData;
    /// matrixmultiply's gemm `c ← alpha·a·b + beta·c` (`c` row-major `m × n`, operands as
    /// (slice, row stride, column stride); `c` is not read when `beta` is 0).
    ///
    /// # Safety
    /// Every element the strides reach lies inside its slice.
    unsafe fn gemm_raw(
        mkn: (usize, usize, usize),
        alpha: Self,
        a: Strided<Self>,
        b: Strided<Self>,
        beta: Self,
        c: &mut [Self],
    );
}

/// A matrix operand: its elements, row stride and column stride.
type Strided<'a, C> = (&'a [C], isize, isize);

/// `c ← alpha·a·b + beta·c` with `a` of `m × k` and `b` of `k × n` read through (row, column)
/// strides, `c` row-major `m × n`: one single-threaded matrixmultiply call, so the same bits on
/// every run. Panics (a bug here, never the user's) if a stride would leave its slice.
fn gemm<C: Real>(
    mkn: (usize, usize, usize),
    alpha: C,
    a: (&[C], usize, usize),
    b: (&[C], usize, usize),
    beta: C,
    c: &mut [C],
) {
    let (m, k, n) = mkn;
    let fits = |(v, rs, cs): (&[C], usize, usize), rows: usize, cols: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < v.len()
    };
    assert!(fits(a, m, k) && fits(b, k, n) && c.len() >= m * n, "attention gemm out of bounds");
    let (a, b) = ((a.0, a.1 as isize, a.2 as isize), (b.0, b.1 as isize, b.2 as isize));
    // SAFETY: checked just above; c holds m × n.
    unsafe { C::gemm_raw(mkn, alpha, a, b, beta, c) }
}

impl Real for f64 {
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    const INFINITY: f64 = f64::INFINITY;
    fn of(v: f64) -> f64 {
        v
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    fn max(self, o: f64) -> f64 {
        f64::max(self, o)
    }
    fn load(data: &HostData, len: usize) -> Cow<'_, [f64]> {
        match data {
            HostData::F64(v) => Cow::Borrowed(&v[..len]),
            other => {
                let mut v = other.to_f64_vec();
                v.truncate(len);
                Cow::Owned(v)
            }
        }
    }
    fn store(v: Vec<f64>, dtype: DType) -> HostData {
        match dtype {
            DType::F64 => HostData::F64(v),
            dtype => HostData::from_f64(&v, dtype),
        }
    }
    unsafe fn gemm_raw(
        (m, k, n): (usize, usize, usize),
        alpha: f64,
        a: Strided<f64>,
        b: Strided<f64>,
        beta: f64,
        c: &mut [f64],
    ) {
        let (pa, pb, pc) = (a.0.as_ptr(), b.0.as_ptr(), c.as_mut_ptr());
        // SAFETY: the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, pa, a.1, a.2, pb, b.1, b.2, beta, pc, n as isize, 1) }
    }
}

impl Real for f32 {
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    const INFINITY: f32 = f32::INFINITY;
    fn of(v: f64) -> f32 {
        v as f32
    }
    #[inline(always)]
    fn exp(self) -> f32 {
        fast32::exp(self)
    }
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    fn max(self, o: f32) -> f32 {
        f32::max(self, o)
    }
    fn load(data: &HostData, len: usize) -> Cow<'_, [f32]> {
        match data {
            HostData::F32(v) => Cow::Borrowed(&v[..len]),
            other => Cow::Owned(other.to_f64_vec()[..len].iter().map(|&x| x as f32).collect()),
        }
    }
    fn store(v: Vec<f32>, dtype: DType) -> HostData {
        match dtype {
            DType::F32 => HostData::F32(v),
            dtype => HostData::from_f64(&v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>(), dtype),
        }
    }
    unsafe fn gemm_raw(
        (m, k, n): (usize, usize, usize),
        alpha: f32,
        a: Strided<f32>,
        b: Strided<f32>,
        beta: f32,
        c: &mut [f32],
    ) {
        let (pa, pb, pc) = (a.0.as_ptr(), b.0.as_ptr(), c.as_mut_ptr());
        // SAFETY: the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, pa, a.1, a.2, pb, b.1, b.2, beta, pc, n as isize, 1) }
    }
}

/// The first `len` values of a float tensor's storage, in `C`.
fn floats_in<'a, C: Real>(op: &'static str, s: &'a CpuStorage, len: usize) -> Result<Cow<'a, [C]>> {
    if !s.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: s.dtype(), why: " (needs a float tensor)".into() });
    }
    values_in(op, s, len)
}

/// The first `len` values of a storage of any dtype (class ids, masks), in `C`.
fn values_in<'a, C: Real>(op: &'static str, s: &'a CpuStorage, len: usize) -> Result<Cow<'a, [C]>> {
    if s.len() < len {
        return Err(Error::invalid(op, format!("storage holds {} elements, needs {len}", s.len())));
    }
    Ok(C::load(s.as_host(), len))
}

fn wrap_in<C: Real>(v: Vec<C>, dtype: DType) -> CpuStorage {
    CpuStorage::from_host_data(C::store(v, dtype))
}

fn floats(op: &'static str, s: &CpuStorage, len: usize) -> Result<Vec<f64>> {
    Ok(floats_in::<f64>(op, s, len)?.into_owned())
}

fn values(op: &'static str, s: &CpuStorage, len: usize) -> Result<Vec<f64>> {
    Ok(values_in::<f64>(op, s, len)?.into_owned())
}

fn wrap(v: &[f64], dtype: DType) -> CpuStorage {
    CpuStorage::from_host_data(HostData::from_f64(v, dtype))
}

pub(crate) fn norm_forward(
    x: &CpuStorage,
    weight: Option<&CpuStorage>,
    bias: Option<&CpuStorage>,
    p: &NormParams,
) -> Result<(CpuStorage, CpuStorage)> {
    match x.dtype() {
        DType::F32 => norm_forward_in::<f32>(x, weight, bias, p),
        _ => norm_forward_in::<f64>(x, weight, bias, p),
    }
}

fn norm_forward_in<C: Real>(
    x: &CpuStorage,
    weight: Option<&CpuStorage>,
    bias: Option<&CpuStorage>,
    p: &NormParams,
) -> Result<(CpuStorage, CpuStorage)> {
    const OP: &str = "norm";
    let (rows, n) = (p.rows, p.n);
    let xs = floats_in::<C>(OP, x, rows * n)?;
    let w = weight.map(|w| floats_in::<C>(OP, w, n)).transpose()?;
    let b = bias.map(|b| floats_in::<C>(OP, b, n)).transpose()?;
    let mut y = vec![C::default(); rows * n];
    let mut stats = vec![C::default(); rows * 2];
    if n == 0 {
        return Ok((wrap_in(y, x.dtype()), wrap_in(stats, DType::F64)));
    }
    let (inv_n, eps) = (C::of(1.0 / n as f64), C::of(p.eps));
    // Rows are independent: each thread takes whole rows, so the bits do not depend on the split.
    per_row(
        &mut y,
        n,
        &mut stats,
        #[inline(always)]
        |r, y, st| {
            let row = &xs[r * n..(r + 1) * n];
            let mean = if p.rms { C::default() } else { sum(row) * inv_n };
            let var = sum_map(row, |v| (v - mean) * (v - mean)) * inv_n;
            let rstd = C::of(1.0) / (var + eps).sqrt();
            st[0] = mean;
            st[1] = rstd;
            for (y, &v) in y.iter_mut().zip(row) {
                *y = (v - mean) * rstd;
            }
            if let Some(w) = &w {
                y.iter_mut().zip(w.iter()).for_each(|(y, &w)| *y *= w);
            }
            if let Some(b) = &b {
                y.iter_mut().zip(b.iter()).for_each(|(y, &b)| *y += b);
            }
        },
    );
    Ok((wrap_in(y, x.dtype()), wrap_in(stats, DType::F64)))
}

pub(crate) fn norm_backward(
    x: &CpuStorage,
    dy: &CpuStorage,
    stats: &CpuStorage,
    weight: Option<&CpuStorage>,
    p: &NormParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    match x.dtype() {
        DType::F32 => norm_backward_in::<f32>(x, dy, stats, weight, p),
        _ => norm_backward_in::<f64>(x, dy, stats, weight, p),
    }
}

fn norm_backward_in<C: Real>(
    x: &CpuStorage,
    dy: &CpuStorage,
    stats: &CpuStorage,
    weight: Option<&CpuStorage>,
    p: &NormParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    const OP: &str = "norm_backward";
    let (rows, n) = (p.rows, p.n);
    let xs = floats_in::<C>(OP, x, rows * n)?;
    let gs = floats_in::<C>(OP, dy, rows * n)?;
    let st = floats_in::<C>(OP, stats, rows * 2)?;
    let w = weight.map(|w| floats_in::<C>(OP, w, n)).transpose()?;
    let mut dx = vec![C::default(); rows * n];
    let mut dw = vec![C::default(); n];
    let mut db = vec![C::default(); n];
    let dt = x.dtype();
    if n == 0 {
        return Ok((wrap_in(dx, dt), wrap_in(dw, dt), wrap_in(db, dt)));
    }
    let inv_n = C::of(1.0 / n as f64);
    // dx row by row, rows split across threads (independent, so the split changes no bits).
    let mut none: Vec<C> = Vec::new();
    per_row(
        &mut dx,
        n,
        &mut none,
        #[inline(always)]
        |r, dx, _| {
            let (mean, rstd) = (st[2 * r], st[2 * r + 1]);
            let (xr, gr) = (&xs[r * n..][..n], &gs[r * n..][..n]);
            // g = dy·w is the gradient at x̂ (computed into dx first); dx = rstd·(g − mean(g)
            // − x̂·mean(g·x̂)), without the mean(g) term for RMSNorm (no centring).
            dx.copy_from_slice(gr);
            if let Some(w) = &w {
                dx.iter_mut().zip(w.iter()).for_each(|(g, &w)| *g *= w);
            }
            let mean_g = if p.rms { C::default() } else { sum(dx) * inv_n };
            let mean_gx = sum_map2(dx, xr, |g, x| g * ((x - mean) * rstd)) * inv_n;
            for (d, &x) in dx.iter_mut().zip(xr) {
                *d = rstd * (*d - mean_g - (x - mean) * rstd * mean_gx);
            }
        },
    );
    // dw and db sum over rows in row order on one thread: the same bits for any thread count.
    vectorised(
        #[inline(always)]
        || {
            for r in 0..rows {
                let (mean, rstd) = (st[2 * r], st[2 * r + 1]);
                let (xr, gr) = (&xs[r * n..][..n], &gs[r * n..][..n]);
                for (((dw, db), &g), &x) in dw.iter_mut().zip(db.iter_mut()).zip(gr).zip(xr) {
                    *dw += g * ((x - mean) * rstd);
                    *db += g;
                }
            }
        },
    );
    Ok((wrap_in(dx, dt), wrap_in(dw, dt), wrap_in(db, dt)))
}

/// `f(r, out_row, side_row)` for each row `r` of `out` (rows of `n`, `n > 0`) with its slice of
/// `side` (2 values a row, or none when `side` is empty); rows go to separate threads when the
/// work is big enough. Each row writes only its own slices, so no result depends on the split.
/// `f` runs under [`vectorised`]; pass it `#[inline(always)]` so its loops get AVX2.
fn per_row<T, F>(out: &mut [T], n: usize, side: &mut [T], f: F)
where
    T: Send,
    F: Fn(usize, &mut [T], &mut [T]) + Sync + Send,
{
    let rows = out.len() / n;
    let sides: Vec<&mut [T]> =
        if side.is_empty() { (0..rows).map(|_| <&mut [T]>::default()).collect() } else { side.chunks_mut(2).collect() };
    let run = |(r, (o, s)): (usize, (&mut [T], &mut [T]))| {
        vectorised(
            #[inline(always)]
            || f(r, o, s),
        )
    };
    if out.len() >= PAR_MIN && rows > 1 {
        out.par_chunks_mut(n).zip(sides).enumerate().for_each(run);
    } else {
        out.chunks_mut(n).zip(sides).enumerate().for_each(run);
    }
}

/// Lanes of the fixed-order sums below: 8 f32 fill an AVX2 register (8 f64, two).
const LANES: usize = 8;

/// `Σ f(aᵢ, bᵢ)` in `LANES` interleaved partial sums (lane `l` takes every `LANES`-th term),
/// added pairwise and then the tail: a fixed order, so the same bits on every run, and one the
/// compiler can vectorise (a single running sum cannot be reordered).
#[inline(always)]
fn sum_map2<C: Real>(a: &[C], b: &[C], f: impl Fn(C, C) -> C) -> C {
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut tail = C::default();
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += f(x, y);
    }
    let mut acc = [C::default(); LANES];
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + tail
}

#[inline(always)]
fn sum_map<C: Real>(a: &[C], f: impl Fn(C) -> C) -> C {
    sum_map2(a, a, |x, _| f(x))
}

#[inline(always)]
fn sum<C: Real>(a: &[C]) -> C {
    sum_map(a, |x| x)
}

/// `Σ aᵢbᵢ`, in the fixed order of [`sum_map2`].
#[inline(always)]
fn dot<C: Real>(a: &[C], b: &[C]) -> C {
    sum_map2(a, b, |x, y| x * y)
}

/// The class of row `r`, or `None` when it is ignored.
fn target(ids: &[f64], r: usize, p: &CrossEntropyParams) -> Result<Option<usize>> {
    let t = ids[r];
    if p.ignore_index.is_some_and(|ii| t == ii as f64) {
        return Ok(None);
    }
    if t < 0.0 || t >= p.classes as f64 {
        return Err(Error::IndexOutOfRange {
            op: "cross_entropy",
            index: t as i64,
            size: p.classes,
            what: "classes".into(),
        });
    }
    Ok(Some(t as usize))
}

fn ids_of(op: &'static str, targets: &CpuStorage, rows: usize) -> Result<Vec<f64>> {
    if !matches!(targets.dtype(), DType::U32 | DType::I32) {
        return Err(Error::dtype(op, "u32 or i32 class ids", targets.dtype()));
    }
    values(op, targets, rows)
}

pub(crate) fn cross_entropy_forward(
    logits: &CpuStorage,
    targets: &CpuStorage,
    p: &CrossEntropyParams,
) -> Result<(CpuStorage, CpuStorage)> {
    const OP: &str = "cross_entropy";
    let (rows, c) = (p.rows, p.classes);
    let xs = floats(OP, logits, rows * c)?;
    let ids = ids_of(OP, targets, rows)?;
    let mut loss = vec![0.0; rows];
    let mut lse = vec![0.0; rows];
    for r in 0..rows {
        let row = &xs[r * c..(r + 1) * c];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        lse[r] = z;
        let Some(t) = target(&ids, r, p)? else { continue };
        let mean = row.iter().sum::<f64>() / c as f64;
        loss[r] = (1.0 - p.smoothing) * (z - row[t]) + p.smoothing * (z - mean);
    }
    Ok((wrap(&loss, logits.dtype()), wrap(&lse, DType::F64)))
}

pub(crate) fn cross_entropy_backward(
    logits: &CpuStorage,
    targets: &CpuStorage,
    lse: &CpuStorage,
    grad: &CpuStorage,
    p: &CrossEntropyParams,
) -> Result<CpuStorage> {
    const OP: &str = "cross_entropy_backward";
    let (rows, c) = (p.rows, p.classes);
    let xs = floats(OP, logits, rows * c)?;
    let ids = ids_of(OP, targets, rows)?;
    let z = floats(OP, lse, rows)?;
    let g = floats(OP, grad, rows)?;
    let mut dx = vec![0.0; rows * c];
    for r in 0..rows {
        let Some(t) = target(&ids, r, p)? else { continue };
        for j in 0..c {
            let onehot = if j == t { 1.0 - p.smoothing } else { 0.0 };
            dx[r * c + j] = g[r] * ((xs[r * c + j] - z[r]).exp() - onehot - p.smoothing / c as f64);
        }
    }
    Ok(wrap(&dx, logits.dtype()))
}

struct Attn<'a, C: Clone> {
    q: Cow<'a, [C]>,
    k: Cow<'a, [C]>,
    v: Cow<'a, [C]>,
    mask: Option<Vec<f64>>,
    bias: Option<Cow<'a, [C]>>,
}

impl<'a, C: Real> Attn<'a, C> {
    fn load(
        op: &'static str,
        q: &'a CpuStorage,
        k: &'a CpuStorage,
        v: &'a CpuStorage,
        mask: Option<&CpuStorage>,
        bias: Option<&'a CpuStorage>,
        p: &AttentionParams,
    ) -> Result<Attn<'a, C>> {
        let bh = p.batch * p.heads;
        let dims = [p.batch, p.heads, p.q_len, p.kv_len];
        // The bias's last element read, plus one (0 for an empty call).
        let bias_len = if dims.contains(&0) {
            0
        } else {
            1 + dims.iter().zip(p.bias_strides).map(|(n, s)| (n - 1) * s).sum::<usize>()
        };
        Ok(Attn {
            q: floats_in(op, q, bh * p.q_len * p.head_dim)?,
            k: floats_in(op, k, bh * p.kv_len * p.head_dim)?,
            v: floats_in(op, v, bh * p.kv_len * p.head_dim)?,
            mask: mask.map(|m| values(op, m, p.batch * p.kv_len)).transpose()?,
            bias: bias.map(|b| floats_in(op, b, bias_len)).transpose()?,
        })
    }

    /// Scaled, biased scores of head `bh`'s queries `rows` against its first `kv` keys into
    /// `s` (`rows.len() × kv`, row-major), −inf where hidden: by the masks, or by a bias of
    /// −inf. `scale·Q·Kᵀ` is one gemm.
    #[inline(always)]
    fn scores(&self, p: &AttentionParams, bh: usize, rows: Range<usize>, kv: usize, s: &mut [C]) {
        let (d, ql) = (p.head_dim, p.q_len);
        let q = &self.q[(bh * ql + rows.start) * d..][..rows.len() * d];
        let keys = &self.k[bh * p.kv_len * d..][..kv * d];
        gemm((rows.len(), d, kv), C::of(p.scale), (q, d, 1), (keys, 1, d), C::default(), s);
        let mask = self.mask.as_ref().map(|m| &m[(bh / p.heads) * p.kv_len..][..kv]);
        let [sb, sh, sq, sk] = p.bias_strides;
        for (i, row) in rows.zip(s.chunks_exact_mut(kv.max(1))) {
            if let Some(b) = &self.bias {
                let brow = &b[(bh / p.heads) * sb + (bh % p.heads) * sh + i * sq..];
                row.iter_mut().enumerate().for_each(|(j, sj)| *sj += brow[j * sk]);
            }
            if let Some(m) = mask {
                for (sj, &mj) in row.iter_mut().zip(m) {
                    if mj != 0.0 {
                        *sj = C::NEG_INFINITY;
                    }
                }
            }
            if p.causal && i + 1 < kv {
                row[i + 1..].fill(C::NEG_INFINITY);
            }
        }
    }
}

/// Queries per block of the CPU attention: its scratch is `QUERY_BLOCK × kv_len` scores per
/// head (and as many score gradients in backward), so memory stays linear in the length.
const QUERY_BLOCK: usize = 128;

/// The query rows `0..q_len` in blocks of [`QUERY_BLOCK`].
#[inline(always)]
fn query_blocks(q_len: usize) -> impl Iterator<Item = Range<usize>> {
    (0..q_len).step_by(QUERY_BLOCK).map(move |i| i..(i + QUERY_BLOCK).min(q_len))
}

/// The keys a block of query rows can see: causally, query `i` sees keys `0..=i`, so the
/// block's keys end after its last row; otherwise every key.
#[inline(always)]
fn visible_keys(p: &AttentionParams, rows: &Range<usize>) -> usize {
    if p.causal { rows.end.min(p.kv_len) } else { p.kv_len }
}

/// Dropout's factor for score `(row, j)`: 1/keep where kept, 0 where dropped, 1 without dropout.
fn drop_factor<C: Real>(p: &AttentionParams, row: usize, j: usize) -> C {
    C::of(match p.dropout {
        None => 1.0,
        Some(d) if d.kept(p.kv_len, row, j) => 1.0 / d.keep,
        Some(_) => 0.0,
    })
}

/// Runs `f(bh, a, b, c)` for every head `bh`, where `a`, `b`, `c` are head `bh`'s pieces of
/// three outputs (`len` elements each per head); heads go to separate threads when the work is
/// big enough. Each head writes only its own pieces, so the results do not depend on the thread
/// count. `f` runs under [`vectorised`]; pass it `#[inline(always)]` so its loops get AVX2.
fn per_head<C, F>(p: &AttentionParams, outs: [(&mut [C], usize); 3], f: F)
where
    C: Send,
    F: Fn(usize, &mut [C], &mut [C], &mut [C]) + Sync + Send,
{
    let [(a, la), (b, lb), (c, lc)] = outs;
    let bhs = p.batch * p.heads;
    // Two multiply-adds per score and head dimension in the forward, five in the backward.
    let work = bhs * p.q_len * p.kv_len * p.head_dim.max(1);
    // `chunks_mut(0)` would panic: a zero-length piece is given as an empty slice instead.
    fn chunks<C>(v: &mut [C], len: usize, bhs: usize) -> Vec<&mut [C]> {
        if len == 0 { (0..bhs).map(|_| <&mut [C]>::default()).collect() } else { v.chunks_mut(len).collect() }
    }
    let (ca, cb, cc) = (chunks(a, la, bhs), chunks(b, lb, bhs), chunks(c, lc, bhs));
    let pieces: Vec<[&mut [C]; 3]> = ca.into_iter().zip(cb).zip(cc).map(|((a, b), c)| [a, b, c]).collect();
    let run = |(bh, [a, b, c]): (usize, [&mut [C]; 3])| {
        vectorised(
            #[inline(always)]
            || f(bh, a, b, c),
        )
    };
    if bhs > 1 && work >= PAR_MIN {
        pieces.into_par_iter().enumerate().for_each(run);
    } else {
        pieces.into_iter().enumerate().for_each(run);
    }
}

pub(crate) fn attention_forward(
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    mask: Option<&CpuStorage>,
    bias: Option<&CpuStorage>,
    p: &AttentionParams,
) -> Result<(CpuStorage, CpuStorage)> {
    match q.dtype() {
        DType::F32 => attention_forward_in::<f32>(q, k, v, mask, bias, p),
        _ => attention_forward_in::<f64>(q, k, v, mask, bias, p),
    }
}

fn attention_forward_in<C: Real>(
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    mask: Option<&CpuStorage>,
    bias: Option<&CpuStorage>,
    p: &AttentionParams,
) -> Result<(CpuStorage, CpuStorage)> {
    let a = Attn::<C>::load("scaled_dot_product_attention", q, k, v, mask, bias, p)?;
    let (bhs, d) = (p.batch * p.heads, p.head_dim);
    let mut out = vec![C::default(); bhs * p.q_len * d];
    let mut lse = vec![C::INFINITY; bhs * p.q_len];
    let mut none: Vec<C> = Vec::new();
    per_head(
        p,
        [(&mut out, p.q_len * d), (&mut lse, p.q_len), (&mut none, 0)],
        #[inline(always)]
        |bh, out, lse, _| {
            let values = &a.v[bh * p.kv_len * d..][..p.kv_len * d];
            let mut s = Vec::new();
            for rows in query_blocks(p.q_len) {
                // S, then P·dropout in its place, then O = that · V, over the keys a causal
                // block can see.
                let kv = visible_keys(p, &rows);
                s.resize(rows.len() * kv, C::default());
                a.scores(p, bh, rows.clone(), kv, &mut s);
                for (i, row) in rows.clone().zip(s.chunks_exact_mut(kv.max(1))) {
                    let m = row.iter().fold(C::NEG_INFINITY, |m, &x| m.max(x));
                    if m == C::NEG_INFINITY {
                        // Every key hidden: the row attends to nothing (output 0, lse +inf).
                        row.fill(C::default());
                        continue;
                    }
                    // e^{−inf} = 0: hidden scores add nothing, with no branch.
                    let z = sum_map(row, |x| (x - m).exp());
                    lse[i] = m + z.ln();
                    let l = lse[i];
                    row.iter_mut().for_each(|x| *x = (*x - l).exp());
                    if p.dropout.is_some() {
                        let r = bh * p.q_len + i;
                        row.iter_mut().enumerate().for_each(|(j, x)| *x *= drop_factor::<C>(p, r, j));
                    }
                }
                let o = &mut out[rows.start * d..][..rows.len() * d];
                gemm((rows.len(), kv, d), C::of(1.0), (&s, kv, 1), (values, d, 1), C::default(), o);
            }
        },
    );
    Ok((wrap_in(out, q.dtype()), wrap_in(lse, DType::F64)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    mask: Option<&CpuStorage>,
    bias: Option<&CpuStorage>,
    o: &CpuStorage,
    lse: &CpuStorage,
    dout: &CpuStorage,
    p: &AttentionParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    match q.dtype() {
        DType::F32 => attention_backward_in::<f32>(q, k, v, mask, bias, o, lse, dout, p),
        _ => attention_backward_in::<f64>(q, k, v, mask, bias, o, lse, dout, p),
    }
}

#[allow(clippy::too_many_arguments)]
fn attention_backward_in<C: Real>(
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    mask: Option<&CpuStorage>,
    bias: Option<&CpuStorage>,
    o: &CpuStorage,
    lse: &CpuStorage,
    dout: &CpuStorage,
    p: &AttentionParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    const OP: &str = "scaled_dot_product_attention_backward";
    let a = Attn::<C>::load(OP, q, k, v, mask, bias, p)?;
    let (bhs, d) = (p.batch * p.heads, p.head_dim);
    let os = floats_in::<C>(OP, o, bhs * p.q_len * d)?;
    let z = floats_in::<C>(OP, lse, bhs * p.q_len)?;
    let dos = floats_in::<C>(OP, dout, bhs * p.q_len * d)?;
    let mut dq = vec![C::default(); a.q.len()];
    let mut dk = vec![C::default(); a.k.len()];
    let mut dv = vec![C::default(); a.v.len()];
    let (ql, kl) = (p.q_len * d, p.kv_len * d);
    let scale = C::of(p.scale);
    per_head(
        p,
        [(&mut dq, ql), (&mut dk, kl), (&mut dv, kl)],
        #[inline(always)]
        |bh, dq, dk, dv| {
            let ql = p.q_len;
            let (qs, keys, values) = (&a.q[bh * ql * d..][..ql * d], &a.k[bh * kl..][..kl], &a.v[bh * kl..][..kl]);
            let (dor, orows) = (&dos[bh * ql * d..][..ql * d], &os[bh * ql * d..][..ql * d]);
            let (mut pm, mut ds) = (Vec::new(), Vec::new());
            for rows in query_blocks(ql) {
                // P from the scores and the forward's log-sum-exp (a hidden row's lse is +inf,
                // so its P is 0) and dP = dO·Vᵀ; then dS = P ⊙ (dP·dropout − δ)·scale in dP's
                // place, P·dropout in P's, and three gemms: dQ of these rows, and dK, dV summed
                // over the blocks in order (the same bits on every run).
                let kv = visible_keys(p, &rows);
                let n = rows.len();
                let (q_rows, do_rows) = (&qs[rows.start * d..][..n * d], &dor[rows.start * d..][..n * d]);
                pm.resize(n * kv, C::default());
                ds.resize(n * kv, C::default());
                a.scores(p, bh, rows.clone(), kv, &mut pm);
                gemm((n, d, kv), C::of(1.0), (do_rows, d, 1), (values, 1, d), C::default(), &mut ds);
                let w = kv.max(1);
                for (i, (prow, dsrow)) in rows.clone().zip(pm.chunks_exact_mut(w).zip(ds.chunks_exact_mut(w))) {
                    let r = bh * ql + i;
                    // Σ_j P_ij dP_ij = dO_i · O_i: the softmax backward's row term (dropout
                    // included: dP is the gradient through the dropped, scaled probabilities).
                    let delta = dot(&dor[i * d..][..d], &orows[i * d..][..d]);
                    let zr = z[r];
                    prow.iter_mut().for_each(|x| *x = (*x - zr).exp());
                    if p.dropout.is_some() {
                        for (j, (pij, dp)) in prow.iter_mut().zip(dsrow.iter_mut()).enumerate() {
                            let keep = drop_factor::<C>(p, r, j);
                            *dp = *pij * (*dp * keep - delta) * scale;
                            *pij *= keep;
                        }
                    } else {
                        prow.iter().zip(dsrow.iter_mut()).for_each(|(&pij, dp)| *dp = pij * (*dp - delta) * scale);
                    }
                }
                // The first block writes dK and dV (zero beyond its keys), later ones add to them.
                let (one, zero) = (C::of(1.0), C::default());
                let add = if rows.start == 0 { zero } else { one };
                gemm((kv, n, d), one, (&pm, 1, kv), (do_rows, d, 1), add, &mut dv[..kv * d]);
                gemm((n, kv, d), one, (&ds, kv, 1), (keys, d, 1), zero, &mut dq[rows.start * d..][..n * d]);
                gemm((kv, n, d), one, (&ds, 1, kv), (q_rows, d, 1), add, &mut dk[..kv * d]);
            }
        },
    );
    let dt = q.dtype();
    Ok((wrap_in(dq, dt), wrap_in(dk, dt), wrap_in(dv, dt)))
}

/// Adam's update in place, one pass over the four buffers. f32 tensors compute in f32 (as
/// PyTorch's CPU Adam does; within a few ulp of the f64 formula), f16 and f64 ones in f64 from
/// their stored values, rounded once into the dtype, as every other oracle op does. The loop
/// has no per-element branch, so it vectorises, and a large tensor splits across threads.
pub(crate) fn adam_step(
    param: &mut HostData,
    grad: &HostData,
    m: &mut HostData,
    v: &mut HostData,
    p: &AdamParams,
) -> Result<()> {
    let k = AdamConsts::new(p);
    let decoupled = p.decoupled;
    match param {
        HostData::F32(x) => {
            // Every factor is a local the closure captures by value: read through a reference
            // inside the loop, it could not be proven unchanged by the stores, and the loop
            // would not vectorise.
            let [decay, weight_decay, beta1, keep1, beta2, keep2, sqrt_bias2, eps, rate] =
                k.factors().map(|c| c as f32);
            adam_typed(
                x,
                grad,
                m,
                v,
                #[inline(always)]
                move |x: &mut f32, mut g: f32, m: &mut f32, v: &mut f32| {
                    if decoupled {
                        *x *= decay;
                    } else {
                        g += weight_decay * *x;
                    }
                    *m = beta1 * *m + keep1 * g;
                    *v = beta2 * *v + keep2 * g * g;
                    let denom = v.sqrt() / sqrt_bias2 + eps;
                    *x -= rate * *m / denom;
                },
            )
        }
        HostData::F16(x) => adam_typed(x, grad, m, v, adam_f64(k, decoupled)),
        HostData::F64(x) => adam_typed(x, grad, m, v, adam_f64(k, decoupled)),
        other => Err(Error::UnsupportedDType { op: ADAM, dtype: other.dtype(), why: " (needs a float tensor)".into() }),
    }
}

const ADAM: &str = "adam_step";

/// Adam's per-step factors, each the value the per-element formula would compute first anyway,
/// so hoisting them changes no result.
#[derive(Clone, Copy)]
struct AdamConsts {
    decay: f64,
    weight_decay: f64,
    beta1: f64,
    keep1: f64,
    beta2: f64,
    keep2: f64,
    sqrt_bias2: f64,
    eps: f64,
    rate: f64,
}

impl AdamConsts {
    fn new(p: &AdamParams) -> AdamConsts {
        let AdamParams { lr, beta1, beta2, eps, weight_decay, step, .. } = *p;
        let (bias1, bias2) = (1.0 - beta1.powf(step as f64), 1.0 - beta2.powf(step as f64));
        AdamConsts {
            decay: 1.0 - lr * weight_decay,
            weight_decay,
            beta1,
            keep1: 1.0 - beta1,
            beta2,
            keep2: 1.0 - beta2,
            sqrt_bias2: bias2.sqrt(),
            eps,
            rate: lr / bias1,
        }
    }

    fn factors(self) -> [f64; 9] {
        let AdamConsts { decay, weight_decay, beta1, keep1, beta2, keep2, sqrt_bias2, eps, rate } = self;
        [decay, weight_decay, beta1, keep1, beta2, keep2, sqrt_bias2, eps, rate]
    }
}

/// One element's update in f64 from the stored values, rounded once into `T`.
#[inline(always)]
fn adam_f64<T: Float>(k: AdamConsts, decoupled: bool) -> impl Fn(&mut T, T, &mut T, &mut T) + Copy + Send + Sync {
    let [decay, weight_decay, beta1, keep1, beta2, keep2, sqrt_bias2, eps, rate] = k.factors();
    #[inline(always)]
    move |x: &mut T, g: T, m: &mut T, v: &mut T| {
        let (mut x64, mut g64) = (x.to_f64(), g.to_f64());
        if decoupled {
            x64 *= decay;
        } else {
            g64 += weight_decay * x64;
        }
        let m64 = beta1 * m.to_f64() + keep1 * g64;
        let v64 = beta2 * v.to_f64() + keep2 * g64 * g64;
        let denom = v64.sqrt() / sqrt_bias2 + eps;
        *x = T::from_f64(x64 - rate * m64 / denom);
        *m = T::from_f64(m64);
        *v = T::from_f64(v64);
    }
}

/// Checks the buffers and runs `update(x, g, m, v)` on every element (`decoupled` is the same
/// for all, so its branch is hoisted out of the vectorised loop).
fn adam_typed<T: Float>(
    ps: &mut [T],
    grad: &HostData,
    m: &mut HostData,
    v: &mut HostData,
    update: impl Fn(&mut T, T, &mut T, &mut T) + Copy + Send + Sync,
) -> Result<()> {
    let n = ps.len();
    let (m_dtype, v_dtype) = (m.dtype(), v.dtype());
    let gs = T::slice(grad).ok_or_else(|| Error::dtype(ADAM, T::DTYPE, grad.dtype()))?;
    let ms = T::slice_mut(m).ok_or_else(|| Error::dtype(ADAM, T::DTYPE, m_dtype))?;
    let vs = T::slice_mut(v).ok_or_else(|| Error::dtype(ADAM, T::DTYPE, v_dtype))?;
    for (what, len) in [("gradient", gs.len()), ("exp_avg", ms.len()), ("exp_avg_sq", vs.len())] {
        if len < n {
            return Err(Error::invalid(ADAM, format!("{what} storage holds {len} elements, the parameter {n}")));
        }
    }
    let (gs, ms, vs) = (&gs[..n], &mut ms[..n], &mut vs[..n]);
    let run = |ps: &mut [T], gs: &[T], ms: &mut [T], vs: &mut [T]| {
        vectorised(
            #[inline(always)]
            move || {
                for (((x, &g), m), v) in ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(vs.iter_mut()) {
                    update(x, g, m, v);
                }
            },
        )
    };
    if n >= PAR_MIN {
        let piece = n.div_ceil(4 * rayon::current_num_threads());
        ps.par_chunks_mut(piece)
            .zip(gs.par_chunks(piece))
            .zip(ms.par_chunks_mut(piece))
            .zip(vs.par_chunks_mut(piece))
            .for_each(|(((x, g), m), v)| run(x, g, m, v));
    } else {
        run(ps, gs, ms, vs);
    }
    Ok(())
}

/// [`adam_step`] with the step count in `steps` and the update skipped when `found_inf[0]` is
/// set; see `BackendStorage::adam_step_gated` for the two slots.
pub(crate) fn adam_step_gated(
    param: &mut CpuStorage,
    grad: &CpuStorage,
    m: &mut CpuStorage,
    v: &mut CpuStorage,
    steps: &mut CpuStorage,
    found_inf: &CpuStorage,
    p: &AdamParams,
) -> Result<()> {
    const OP: &str = "adam_step";
    let skip = match found_inf.as_host() {
        HostData::U32(f) if !f.is_empty() => f[0] != 0,
        other => {
            return Err(Error::invalid(
                OP,
                format!("found_inf must be a u32 flag, got {} of {}", other.dtype(), other.len()),
            ));
        }
    };
    if p.step == 0 {
        return Err(Error::invalid(OP, "the attempt number (AdamParams::step) starts at 1"));
    }
    let (rd, wr) = (((p.step - 1) % 2) as usize, (p.step % 2) as usize);
    let mut slots = match steps.as_host() {
        HostData::U32(s) if s.len() >= 2 => s.clone(),
        other => {
            return Err(Error::invalid(
                OP,
                format!("steps must be 2 u32 slots, got {} of {}", other.len(), other.dtype()),
            ));
        }
    };
    let t = slots[rd] + u32::from(!skip);
    slots[wr] = t;
    if !skip {
        adam_step(
            param.host_mut(),
            grad.as_host(),
            m.host_mut(),
            v.host_mut(),
            &AdamParams { step: u64::from(t), ..*p },
        )?;
    }
    *steps = CpuStorage::from_host_data(HostData::U32(slots));
    Ok(())
}

/// `1 / scale[0]` for an f32 scale of one element, as the GPU kernel computes it (in f32).
pub(crate) fn inv_scale_of(scale: &HostData) -> Result<f64> {
    match scale {
        HostData::F32(s) if !s.is_empty() => Ok(f64::from(1.0 / s[0])),
        other => Err(Error::invalid(
            "unscale_check",
            format!("scale must be one f32, got {} of {}", other.len(), other.dtype()),
        )),
    }
}

/// In place `x ← x · inv_scale`, ORing 1 into `found_inf[0]` when a result is inf or NaN.
/// f32 and f16 multiply in f32 by `inv_scale` rounded to f32 (f16 then rounds the product once),
/// exactly what the GPU kernel does; f64 stays f64.
pub(crate) fn unscale_check(data: &mut HostData, inv_scale: f64, found_inf: &mut HostData) -> Result<()> {
    const OP: &str = "unscale_check";
    let flag = match found_inf {
        HostData::U32(f) if !f.is_empty() => &mut f[0],
        other => {
            return Err(Error::invalid(
                OP,
                format!("found_inf must be a u32 flag of at least 1 element, got {} of {}", other.dtype(), other.len()),
            ));
        }
    };
    let inv = inv_scale as f32;
    let bad = match data {
        HostData::F32(v) => v.iter_mut().fold(false, |bad, x| {
            *x *= inv;
            bad | !x.is_finite()
        }),
        HostData::F16(v) => v.iter_mut().fold(false, |bad, x| {
            *x = half::f16::from_f32(x.to_f32() * inv);
            bad | !x.is_finite()
        }),
        HostData::F64(v) => v.iter_mut().fold(false, |bad, x| {
            *x *= inv_scale;
            bad | !x.is_finite()
        }),
        other => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: other.dtype(),
                why: " (needs a float gradient)".into(),
            });
        }
    };
    if bad {
        *flag |= 1;
    }
    Ok(())
}

/// `Σ x²` of each part (the first `len` elements of its storage), summed in f64 and rounded
/// once into `dtype` (f32 or f64).
pub(crate) fn sum_squares(parts: &[(&CpuStorage, usize)], dtype: DType) -> Result<CpuStorage> {
    const OP: &str = "sum_squares";
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType { op: OP, dtype, why: " (sums are f32 or f64)".into() });
    }
    let sums = parts
        .iter()
        .map(|&(s, len)| Ok(floats(OP, s, len)?.iter().map(|x| x * x).sum()))
        .collect::<Result<Vec<f64>>>()?;
    Ok(wrap(&sums, dtype))
}

/// Each part's first `len` elements times `factor[0]`, in place: f32 and f16 multiply in f32
/// by the factor rounded to f32 (what the GPU kernel does), f64 in f64.
pub(crate) fn scale_in_place(parts: &mut [(&mut CpuStorage, usize)], factor: &CpuStorage) -> Result<()> {
    const OP: &str = "scale_in_place";
    let f = match factor.as_host() {
        HostData::F32(v) if !v.is_empty() => f64::from(v[0]),
        HostData::F64(v) if !v.is_empty() => v[0],
        other => {
            return Err(Error::invalid(
                OP,
                format!("factor must be one f32 or f64, got {} of {}", other.len(), other.dtype()),
            ));
        }
    };
    for (s, len) in parts.iter_mut() {
        let len = *len;
        if s.len() < len {
            return Err(Error::invalid(OP, format!("storage holds {} elements, needs {len}", s.len())));
        }
        match s.host_mut() {
            HostData::F32(v) => v[..len].iter_mut().for_each(|x| *x *= f as f32),
            HostData::F16(v) => v[..len].iter_mut().for_each(|x| *x = half::f16::from_f32(x.to_f32() * f as f32)),
            HostData::F64(v) => v[..len].iter_mut().for_each(|x| *x *= f),
            other => {
                return Err(Error::UnsupportedDType {
                    op: OP,
                    dtype: other.dtype(),
                    why: " (needs a float tensor)".into(),
                });
            }
        }
    }
    Ok(())
}
