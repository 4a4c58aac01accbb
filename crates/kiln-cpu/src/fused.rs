//! The fused primitives' reference semantics: norms, cross-entropy from logits, attention and
//! the Adam step, computed in f64 from the inputs' values and rounded once into the output dtype.
//! Statistics handed from a forward to its backward (norm mean/rstd, log-sum-exp) stay f64.

use kiln_backend::{
    AdamParams, AttentionParams, BackendStorage, CrossEntropyParams, DType, Error, HostData, NormParams, Result,
};
use rayon::prelude::*;

use crate::elem::Float;
use crate::kernel::{PAR_MIN, vectorised};
use crate::storage::CpuStorage;

fn floats(op: &'static str, s: &CpuStorage, len: usize) -> Result<Vec<f64>> {
    if !s.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: s.dtype(), why: " (needs a float tensor)".into() });
    }
    values(op, s, len)
}

fn values(op: &'static str, s: &CpuStorage, len: usize) -> Result<Vec<f64>> {
    if s.len() < len {
        return Err(Error::invalid(op, format!("storage holds {} elements, needs {len}", s.len())));
    }
    let mut v = s.as_host().to_f64_vec();
    v.truncate(len);
    Ok(v)
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
    const OP: &str = "norm";
    let (rows, n) = (p.rows, p.n);
    let xs = floats(OP, x, rows * n)?;
    let w = weight.map(|w| floats(OP, w, n)).transpose()?;
    let b = bias.map(|b| floats(OP, b, n)).transpose()?;
    let mut y = vec![0.0; rows * n];
    let mut stats = vec![0.0; rows * 2];
    if n == 0 {
        return Ok((wrap(&y, x.dtype()), wrap(&stats, DType::F64)));
    }
    // Rows are independent: each thread takes whole rows, so the bits do not depend on the split.
    per_row(&mut y, n, &mut stats, |r, y, st| {
        let row = &xs[r * n..(r + 1) * n];
        let mean = if p.rms { 0.0 } else { row.iter().sum::<f64>() / n as f64 };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + p.eps).sqrt();
        st[0] = mean;
        st[1] = rstd;
        for j in 0..n {
            let mut v = (row[j] - mean) * rstd;
            if let Some(w) = &w {
                v *= w[j];
            }
            if let Some(b) = &b {
                v += b[j];
            }
            y[j] = v;
        }
    });
    Ok((wrap(&y, x.dtype()), wrap(&stats, DType::F64)))
}

pub(crate) fn norm_backward(
    x: &CpuStorage,
    dy: &CpuStorage,
    stats: &CpuStorage,
    weight: Option<&CpuStorage>,
    p: &NormParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    const OP: &str = "norm_backward";
    let (rows, n) = (p.rows, p.n);
    let xs = floats(OP, x, rows * n)?;
    let gs = floats(OP, dy, rows * n)?;
    let st = floats(OP, stats, rows * 2)?;
    let w = weight.map(|w| floats(OP, w, n)).transpose()?;
    let mut dx = vec![0.0; rows * n];
    let mut dw = vec![0.0; n];
    let mut db = vec![0.0; n];
    if n == 0 {
        let dt = x.dtype();
        return Ok((wrap(&dx, dt), wrap(&dw, dt), wrap(&db, dt)));
    }
    let xhat = |r: usize, j: usize| (xs[r * n + j] - st[2 * r]) * st[2 * r + 1];
    // dx row by row, rows split across threads (independent, so the split changes no bits).
    let mut none: Vec<f64> = Vec::new();
    per_row(&mut dx, n, &mut none, |r, dx, _| {
        let rstd = st[2 * r + 1];
        // g = dy·w is the gradient at x̂; dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), without the
        // mean(g) term for RMSNorm (no centring).
        let g = |j: usize| gs[r * n + j] * w.as_ref().map_or(1.0, |w| w[j]);
        let mean_g = if p.rms { 0.0 } else { (0..n).map(g).sum::<f64>() / n as f64 };
        let mean_gx = (0..n).map(|j| g(j) * xhat(r, j)).sum::<f64>() / n as f64;
        for (j, d) in dx.iter_mut().enumerate() {
            *d = rstd * (g(j) - mean_g - xhat(r, j) * mean_gx);
        }
    });
    // dw and db sum over rows in row order on one thread: the same bits for any thread count.
    for r in 0..rows {
        let gr = &gs[r * n..][..n];
        for j in 0..n {
            dw[j] += gr[j] * xhat(r, j);
            db[j] += gr[j];
        }
    }
    let dt = x.dtype();
    Ok((wrap(&dx, dt), wrap(&dw, dt), wrap(&db, dt)))
}

/// `f(r, out_row, side_row)` for each row `r` of `out` (rows of `n`, `n > 0`) with its slice of
/// `side` (2 values a row, or none when `side` is empty); rows go to separate threads when the
/// work is big enough. Each row writes only its own slices, so no result depends on the split.
fn per_row<F>(out: &mut [f64], n: usize, side: &mut [f64], f: F)
where
    F: Fn(usize, &mut [f64], &mut [f64]) + Sync + Send,
{
    let rows = out.len() / n;
    let sides: Vec<&mut [f64]> = if side.is_empty() {
        (0..rows).map(|_| <&mut [f64]>::default()).collect()
    } else {
        side.chunks_mut(2).collect()
    };
    let run = |(r, (o, s)): (usize, (&mut [f64], &mut [f64]))| f(r, o, s);
    if out.len() >= PAR_MIN && rows > 1 {
        out.par_chunks_mut(n).zip(sides).enumerate().for_each(run);
    } else {
        out.chunks_mut(n).zip(sides).enumerate().for_each(run);
    }
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

struct Attn {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    mask: Option<Vec<f64>>,
    bias: Option<Vec<f64>>,
}

impl Attn {
    fn load(
        op: &'static str,
        q: &CpuStorage,
        k: &CpuStorage,
        v: &CpuStorage,
        mask: Option<&CpuStorage>,
        bias: Option<&CpuStorage>,
        p: &AttentionParams,
    ) -> Result<Attn> {
        let bh = p.batch * p.heads;
        let dims = [p.batch, p.heads, p.q_len, p.kv_len];
        // The bias's last element read, plus one (0 for an empty call).
        let bias_len = if dims.contains(&0) {
            0
        } else {
            1 + dims.iter().zip(p.bias_strides).map(|(n, s)| (n - 1) * s).sum::<usize>()
        };
        Ok(Attn {
            q: floats(op, q, bh * p.q_len * p.head_dim)?,
            k: floats(op, k, bh * p.kv_len * p.head_dim)?,
            v: floats(op, v, bh * p.kv_len * p.head_dim)?,
            mask: mask.map(|m| values(op, m, p.batch * p.kv_len)).transpose()?,
            bias: bias.map(|b| floats(op, b, bias_len)).transpose()?,
        })
    }

    /// Scaled, biased scores of query `i` against every key of head `bh` into `s` (`kv_len`
    /// long), −inf where hidden: by the masks, or by a bias of −inf.
    #[inline(always)]
    fn scores(&self, p: &AttentionParams, bh: usize, i: usize, s: &mut [f64]) {
        let d = p.head_dim;
        let q = &self.q[(bh * p.q_len + i) * d..][..d];
        let keys = &self.k[bh * p.kv_len * d..][..p.kv_len * d];
        let mask = self.mask.as_ref().map(|m| &m[(bh / p.heads) * p.kv_len..][..p.kv_len]);
        let [sb, sh, sq, sk] = p.bias_strides;
        for (j, sj) in s.iter_mut().enumerate() {
            let hidden = (p.causal && j > i) || mask.is_some_and(|m| m[j] != 0.0);
            *sj = if hidden {
                f64::NEG_INFINITY
            } else {
                let bias =
                    self.bias.as_ref().map_or(0.0, |b| b[(bh / p.heads) * sb + (bh % p.heads) * sh + i * sq + j * sk]);
                p.scale * dot(q, &keys[j * d..][..d]) + bias
            };
        }
    }
}

/// `Σ aᵢbᵢ` in f64, in four interleaved partial sums (lane `l` takes every fourth product) added
/// as `(s₀ + s₁) + (s₂ + s₃)` and then the tail: a fixed order, so the same bits on every run, and
/// one the compiler can vectorise (a single running sum cannot be reordered).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    let mut acc = [0.0; 4];
    for (x, y) in ac.zip(bc) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `y ← y + a·x`.
#[inline(always)]
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Dropout's factor for score `(row, j)`: 1/keep where kept, 0 where dropped, 1 without dropout.
fn drop_factor(p: &AttentionParams, row: usize, j: usize) -> f64 {
    match p.dropout {
        None => 1.0,
        Some(d) if d.kept(p.kv_len, row, j) => 1.0 / d.keep,
        Some(_) => 0.0,
    }
}

/// Runs `f(bh, a, b, c)` for every head `bh`, where `a`, `b`, `c` are head `bh`'s pieces of
/// three outputs (`len` elements each per head); heads go to separate threads when the work is
/// big enough. Each head writes only its own pieces, so the results do not depend on the thread
/// count. `f` runs under [`vectorised`]; pass it `#[inline(always)]` so its loops get AVX2.
fn per_head<F>(p: &AttentionParams, outs: [(&mut [f64], usize); 3], f: F)
where
    F: Fn(usize, &mut [f64], &mut [f64], &mut [f64]) + Sync + Send,
{
    let [(a, la), (b, lb), (c, lc)] = outs;
    let bhs = p.batch * p.heads;
    // Two multiply-adds per score and head dimension in the forward, five in the backward.
    let work = bhs * p.q_len * p.kv_len * p.head_dim.max(1);
    // `chunks_mut(0)` would panic: a zero-length piece is given as an empty slice instead.
    fn chunks(v: &mut [f64], len: usize, bhs: usize) -> Vec<&mut [f64]> {
        if len == 0 { (0..bhs).map(|_| <&mut [f64]>::default()).collect() } else { v.chunks_mut(len).collect() }
    }
    let (ca, cb, cc) = (chunks(a, la, bhs), chunks(b, lb, bhs), chunks(c, lc, bhs));
    let pieces: Vec<[&mut [f64]; 3]> = ca.into_iter().zip(cb).zip(cc).map(|((a, b), c)| [a, b, c]).collect();
    let run = |(bh, [a, b, c]): (usize, [&mut [f64]; 3])| {
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
    let a = Attn::load("scaled_dot_product_attention", q, k, v, mask, bias, p)?;
    let (bhs, d) = (p.batch * p.heads, p.head_dim);
    let mut out = vec![0.0; bhs * p.q_len * d];
    let mut lse = vec![f64::INFINITY; bhs * p.q_len];
    let mut none: Vec<f64> = Vec::new();
    per_head(
        p,
        [(&mut out, p.q_len * d), (&mut lse, p.q_len), (&mut none, 0)],
        #[inline(always)]
        |bh, out, lse, _| {
            let values = &a.v[bh * p.kv_len * d..][..p.kv_len * d];
            let mut s = vec![0.0; p.kv_len];
            for i in 0..p.q_len {
                a.scores(p, bh, i, &mut s);
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let z: f64 = s.iter().filter(|&&x| x != f64::NEG_INFINITY).map(|x| (x - m).exp()).sum();
                lse[i] = m + z.ln();
                let row = bh * p.q_len + i;
                let o = &mut out[i * d..][..d];
                for (j, &sj) in s.iter().enumerate() {
                    if sj == f64::NEG_INFINITY {
                        continue;
                    }
                    let w = (sj - lse[i]).exp() * drop_factor(p, row, j);
                    axpy(o, w, &values[j * d..][..d]);
                }
            }
        },
    );
    Ok((wrap(&out, q.dtype()), wrap(&lse, DType::F64)))
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
    const OP: &str = "scaled_dot_product_attention_backward";
    let a = Attn::load(OP, q, k, v, mask, bias, p)?;
    let (bhs, d) = (p.batch * p.heads, p.head_dim);
    let os = floats(OP, o, bhs * p.q_len * d)?;
    let z = floats(OP, lse, bhs * p.q_len)?;
    let dos = floats(OP, dout, bhs * p.q_len * d)?;
    let mut dq = vec![0.0; a.q.len()];
    let mut dk = vec![0.0; a.k.len()];
    let mut dv = vec![0.0; a.v.len()];
    let (ql, kl) = (p.q_len * d, p.kv_len * d);
    per_head(
        p,
        [(&mut dq, ql), (&mut dk, kl), (&mut dv, kl)],
        #[inline(always)]
        |bh, dq, dk, dv| {
            let (qs, keys, values) = (&a.q[bh * ql..][..ql], &a.k[bh * kl..][..kl], &a.v[bh * kl..][..kl]);
            let mut s = vec![0.0; p.kv_len];
            for i in 0..p.q_len {
                let row = bh * p.q_len + i;
                let dorow = &dos[row * d..][..d];
                // Σ_j P_ij dP_ij = dO_i · O_i: the softmax backward's row term (dropout included:
                // dP is the gradient through the dropped, scaled probabilities).
                let delta = dot(dorow, &os[row * d..][..d]);
                a.scores(p, bh, i, &mut s);
                for (j, &sj) in s.iter().enumerate() {
                    if sj == f64::NEG_INFINITY {
                        continue;
                    }
                    let pij = (sj - z[row]).exp();
                    let keep = drop_factor(p, row, j);
                    let dp = dot(dorow, &values[j * d..][..d]) * keep;
                    let ds = pij * (dp - delta) * p.scale;
                    axpy(&mut dv[j * d..][..d], pij * keep, dorow);
                    axpy(&mut dq[i * d..][..d], ds, &keys[j * d..][..d]);
                    axpy(&mut dk[j * d..][..d], ds, &qs[i * d..][..d]);
                }
            }
        },
    );
    let dt = q.dtype();
    Ok((wrap(&dq, dt), wrap(&dk, dt), wrap(&dv, dt)))
}

/// Adam's update in place, one pass over the four buffers. Each element computes in f64 from
/// its stored values and rounds once into its dtype, as every other oracle op does; the loop
/// has no per-element branch, so it vectorises, and a large tensor splits across threads.
pub(crate) fn adam_step(
    param: &mut HostData,
    grad: &HostData,
    m: &mut HostData,
    v: &mut HostData,
    p: &AdamParams,
) -> Result<()> {
    match param {
        HostData::F32(x) => adam_typed(x, grad, m, v, p),
        HostData::F16(x) => adam_typed(x, grad, m, v, p),
        HostData::F64(x) => adam_typed(x, grad, m, v, p),
        other => Err(Error::UnsupportedDType { op: ADAM, dtype: other.dtype(), why: " (needs a float tensor)".into() }),
    }
}

const ADAM: &str = "adam_step";

fn adam_typed<T: Float>(
    ps: &mut [T],
    grad: &HostData,
    m: &mut HostData,
    v: &mut HostData,
    p: &AdamParams,
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
    let AdamParams { lr, beta1, beta2, eps, weight_decay, decoupled, step } = *p;
    let (bias1, bias2) = (1.0 - beta1.powf(step as f64), 1.0 - beta2.powf(step as f64));
    // Hoisted factors, each the value the per-element formula would compute first anyway, so
    // the results are those of the plain formula in f64. Every parameter is a local: read
    // through `p` inside the loop, it could not be proven unchanged by the stores, and the loop
    // would not vectorise.
    let (decay, keep1, keep2) = (1.0 - lr * weight_decay, 1.0 - beta1, 1.0 - beta2);
    let (rate, sqrt_bias2) = (lr / bias1, bias2.sqrt());
    let update = |ps: &mut [T], gs: &[T], ms: &mut [T], vs: &mut [T]| {
        vectorised(
            #[inline(always)]
            move || {
                for (((x, &g), m), v) in ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(vs.iter_mut()) {
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
            },
        )
    };
    if n >= PAR_MIN {
        let piece = n.div_ceil(4 * rayon::current_num_threads());
        ps.par_chunks_mut(piece)
            .zip(gs.par_chunks(piece))
            .zip(ms.par_chunks_mut(piece))
            .zip(vs.par_chunks_mut(piece))
            .for_each(|(((x, g), m), v)| update(x, g, m, v));
    } else {
        update(ps, gs, ms, vs);
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
