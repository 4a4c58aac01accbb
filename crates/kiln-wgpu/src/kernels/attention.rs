//! Scaled dot-product attention: forward (`shaders/attention.wgsl`, flash-style with online
//! softmax, saving the row log-sum-exp) and backward (`attention_backward_dq.wgsl`, then
//! `attention_backward_dkv.wgsl`, both recomputing probabilities from that log-sum-exp). Each
//! kernel is a small register-tiled matmul around the softmax: a workgroup keeps 4·TR rows
//! resident in workgroup memory and streams the other side through in tiles of CN·TC rows;
//! each thread computes a 4×CN block of scores and a 4-row block of output columns (see
//! [`Tiling`]). Calls whose score matrix is small take the materialised path
//! (`attention_matmul.rs`) instead; `attention_path.rs` decides.

use super::fused::{Access, FLOATS, check_float, check_len, enable_for, raw_binding, u32_of};
use super::{module, storage_type};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{AttentionParams, BackendStorage, DType, Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Largest head dim with a kernel.
pub const MAX_HEAD_DIM: usize = 256;

/// The three flash kernels: their workgroup memory differs, so each gets its own tiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Forward,
    /// Backward, first pass: dq and δ.
    Dq,
    /// Backward, second pass: dk and dv.
    Dkv,
}

/// How a flash kernel splits its work. A workgroup has `tr × tc` threads and keeps
/// `4·tr` rows (queries; keys in `Dkv`) resident; the other side streams through in tiles of
/// `cn·tc` rows. Thread (r, c) owns resident rows 4r..4r+3, streamed rows c + tc·j (j < cn) and
/// output vec4 columns c + tc·u (u < ov): `ov·tc` covers the head dim's `d4` vec4s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiling {
    d: u32,
    d4: u32,
    tr: u32,
    tc: u32,
    cn: u32,
    ov: u32,
}

/// (tr, cn) from the largest workgroup tile down: the first that fits the adapter's workgroup
/// memory wins. Taller resident tiles reuse each streamed row more; more streamed rows per
/// tile mean fewer barriers per key.
const SHAPES: [(u32, u32); 9] = [(16, 2), (16, 1), (8, 2), (8, 1), (4, 2), (4, 1), (2, 2), (2, 1), (1, 1)];

impl Tiling {
    /// Column splits for head dim `d`, best first: `(d4, tc, ov)` with `tc` of 16, 8 or 4
    /// threads, the ones that pad the head dim least first (ties: more threads).
    fn columns(d: u32) -> Vec<(u32, u32, u32)> {
        let d4 = d.div_ceil(4);
        let mut all: Vec<(u32, u32, u32)> = [16, 8, 4].into_iter().map(|tc| (d4, tc, d4.div_ceil(tc))).collect();
        all.sort_by_key(|&(_, tc, ov)| (tc * ov, u32::MAX - tc));
        all
    }

    /// The largest tiling of `kernel` for head dim `d` within `max_bytes` of workgroup memory and
    /// `max_threads` invocations (the best column split first, then `SHAPES` in order), or the
    /// shape `KILN_FLASH_TILE` (`TRxCN`, e.g. `8x2`) names where that fits.
    fn choose(kernel: Kernel, d: u32, max_bytes: u32, max_threads: u32) -> Option<Tiling> {
        let fits = |t: &Tiling| t.workgroup_bytes(kernel) <= max_bytes && t.threads() <= max_threads;
        let shapes: Vec<(u32, u32)> = forced_shape().into_iter().chain(SHAPES).collect();
        let candidates = |(d4, tc, ov): (u32, u32, u32)| {
            shapes.clone().into_iter().map(move |(tr, cn)| Tiling { d, d4, tr, tc, cn, ov })
        };
        Tiling::columns(d).into_iter().flat_map(candidates).find(fits)
    }

    fn threads(&self) -> u32 {
        self.tr * self.tc
    }

    /// Resident rows per workgroup.
    fn rows(&self) -> u32 {
        4 * self.tr
    }

    /// Streamed rows per tile.
    fn cols(&self) -> u32 {
        self.cn * self.tc
    }

    /// vec4s of each workgroup array: resident tile (pitch d4 + 1), streamed tile (pitch
    /// ov·tc + 1), a [streamed row][row group] tile, and the row-group statistics.
    fn lens(&self) -> (u32, u32, u32, u32) {
        let resident = self.rows() * (self.d4 + 1);
        let streamed = self.cols() * (self.ov * self.tc + 1);
        (resident, streamed, self.cols() * self.tr, self.tc * self.tr)
    }

    fn workgroup_bytes(&self, kernel: Kernel) -> u32 {
        let (resident, streamed, cross, red) = self.lens();
        let vec4s = match kernel {
            Kernel::Forward => resident + streamed + cross + red,
            // q and dO resident, k and v streamed, dS, and δ of the rows (f32s).
            Kernel::Dq => 2 * resident + 2 * streamed + cross + self.rows().div_ceil(4),
            // k and v resident, q and dO streamed, P and dS, and lse and δ of the queries.
            Kernel::Dkv => 2 * resident + 2 * streamed + 2 * cross + self.cols().div_ceil(2),
        };
        vec4s * 16
    }

    /// `|d64|16x16x2` style part of the specialisation key (and so of `KILN_PROFILE` names):
    /// head dim, then tr × tc × cn.
    fn name(&self) -> String {
        format!("d{}|{}x{}x{}", self.d, self.tr, self.tc, self.cn)
    }

    /// Fills the tiling's sizes into any of the attention shaders (`BR`, `BC` and `RED_LEN` are
    /// not in all of them).
    fn fill(&self, src: &str) -> String {
        let (resident, streamed, cross, red) = self.lens();
        Template::new(src)
            .set("D", self.d.to_string())
            .set("D4", self.d4.to_string())
            .set("TR", self.tr.to_string())
            .set("TC", self.tc.to_string())
            .set("CN", self.cn.to_string())
            .set("OV", self.ov.to_string())
            .set_optional("BR", self.rows().to_string())
            .set_optional("BC", self.cols().to_string())
            .set("WG", self.threads().to_string())
            .set("QS_LEN", resident.to_string())
            .set("KV_LEN", streamed.to_string())
            .set("PS_LEN", cross.to_string())
            .set_optional("RED_LEN", red.to_string())
            .set("ACC_LEN", (4 * self.ov).to_string())
            .render()
    }
}

/// The forced flash tile shape: 0 until decided (`KILN_FLASH_TILE` is read on first use), then
/// 1 for none, or `2 + (tr << 8 | cn)`.
static FORCED: AtomicU32 = AtomicU32::new(0);

fn encode(shape: Option<(u32, u32)>) -> u32 {
    shape.map_or(1, |(tr, cn)| 2 + (tr << 8 | cn))
}

/// Makes every flash attention kernel compiled from now on try the tile shape `(tr, cn)` first
/// (`4·tr` resident rows, `cn` streamed rows per thread), where it fits the adapter; `None`
/// restores the automatic choice. The same as `KILN_FLASH_TILE=TRxCN`, for tuning on a new GPU
/// and for tests; results are the same either way, within rounding.
pub fn set_flash_tile(shape: Option<(u32, u32)>) {
    FORCED.store(encode(shape.filter(|&(tr, cn)| (1..=64).contains(&tr) && (1..=8).contains(&cn))), Ordering::SeqCst);
}

fn forced_shape() -> Option<(u32, u32)> {
    let mut code = FORCED.load(Ordering::Relaxed);
    if code == 0 {
        let shape = std::env::var("KILN_FLASH_TILE").ok().and_then(|v| {
            let parsed = v.split_once('x').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            let valid = parsed.filter(|&(tr, cn): &(u32, u32)| (1..=64).contains(&tr) && (1..=8).contains(&cn));
            if valid.is_none() {
                eprintln!("kiln: KILN_FLASH_TILE={v:?} is not TRxCN (e.g. 8x2); ignored");
            }
            valid
        });
        // A concurrent `set_flash_tile` wins over the environment.
        let _ = FORCED.compare_exchange(0, encode(shape), Ordering::SeqCst, Ordering::SeqCst);
        code = FORCED.load(Ordering::Relaxed);
    }
    (code >= 2).then(|| ((code - 2) >> 8, (code - 2) & 0xff))
}

/// A binding `name` of `dtype` with `ld4_<name>(base, e)`: elements `e..e + 4` of the row at
/// `base` as f32, zero past the head dim (and `st4_<name>` storing the ones inside it when
/// `write`). Rows whose length is a multiple of 4 start 4-aligned and take one vec4 access.
fn row_binding(binding: u32, name: &str, dtype: DType, write: bool, d: u32) -> String {
    let t = storage_type("scaled_dot_product_attention", dtype).unwrap_or("f32");
    let mode = if write { "read_write" } else { "read" };
    if d.is_multiple_of(4) {
        let mut s = format!(
            "@group(0) @binding({binding}) var<storage, {mode}> {name}: array<vec4<{t}>>;
fn ld4_{name}(base_: u32, e_: u32) -> vec4<f32> {{ return vec4<f32>({name}[(base_ + e_) / 4u]); }}
"
        );
        if write {
            s += &format!(
                "fn st4_{name}(base_: u32, e_: u32, v_: vec4<f32>) {{ {name}[(base_ + e_) / 4u] = vec4<{t}>(v_); }}\n"
            );
        }
        return s;
    }
    let mut s = format!(
        "@group(0) @binding({binding}) var<storage, {mode}> {name}: array<{t}>;
fn ld4_{name}(base_: u32, e_: u32) -> vec4<f32> {{
    var r_ = vec4<f32>(0.0);
    for (var x_ = 0u; x_ < 4u; x_++) {{ if e_ + x_ < D {{ r_[x_] = f32({name}[base_ + e_ + x_]); }} }}
    return r_;
}}
"
    );
    if write {
        s += &format!(
            "fn st4_{name}(base_: u32, e_: u32, v_: vec4<f32>) {{
    for (var x_ = 0u; x_ < 4u; x_++) {{ if e_ + x_ < D {{ {name}[base_ + e_ + x_] = {t}(v_[x_]); }} }}
}}
"
        );
    }
    s
}

fn source(kernel: Kernel, dtype: DType, t: &Tiling) -> String {
    let d = t.d;
    let mut b = String::new();
    let shader = match kernel {
        Kernel::Forward => {
            for (i, name) in ["q", "k", "v"].iter().enumerate() {
                b += &row_binding(i as u32 + 1, name, dtype, false, d);
            }
            b += &raw_binding(4, "mask", "u32", Access::Read);
            b += &row_binding(5, "o", dtype, true, d);
            b += &raw_binding(6, "lse", "f32", Access::Write);
            b += &raw_binding(7, "bias", "f32", Access::Read);
            crate::shaders::ATTENTION
        }
        Kernel::Dq | Kernel::Dkv => {
            for (i, name) in ["q", "k", "v", "o", "dout"].iter().enumerate() {
                b += &row_binding(i as u32 + 1, name, dtype, false, d);
            }
            b += &raw_binding(6, "mask", "u32", Access::Read);
            b += &raw_binding(7, "lse", "f32", Access::Read);
            let dq = kernel == Kernel::Dq;
            b += &raw_binding(8, "delta", "f32", if dq { Access::Write } else { Access::Read });
            b += &row_binding(9, "ga", dtype, true, d);
            if dq {
                b += &raw_binding(10, "bias", "f32", Access::Read);
                crate::shaders::ATTENTION_BACKWARD_DQ
            } else {
                b += &row_binding(10, "gb", dtype, true, d);
                b += &raw_binding(11, "bias", "f32", Access::Read);
                crate::shaders::ATTENTION_BACKWARD_DKV
            }
        }
    };
    // The helpers above name D; the shader defines it.
    module(enable_for(dtype), false, &format!("{}\n{b}\n{}", t.fill(shader), extras_source()))
}

/// The WGSL every attention kernel with a bias or dropout includes: Philox and
/// `attention_extras.wgsl` (which reads `info` words 8..17 and the `bias` binding).
pub(crate) fn extras_source() -> String {
    format!("{}\n{}", crate::shaders::PHILOX, crate::shaders::ATTENTION_EXTRAS)
}

/// A kernel's eight `own` metadata words followed by the ten of `attention_extras.wgsl`: the
/// bias strides (when `biased`), whether there is a bias, keep (f32 bits, 1.0 without dropout)
/// and the dropout's Philox key.
pub(crate) fn with_extras(op: &'static str, own: [u32; 8], p: &AttentionParams, biased: bool) -> Result<[u32; 18]> {
    let mut meta = [0u32; 18];
    meta[..8].copy_from_slice(&own);
    if biased {
        for (m, &st) in meta[8..12].iter_mut().zip(&p.bias_strides) {
            *m = u32_of(op, st, "bias stride")?;
        }
        meta[12] = 1;
    }
    let (keep, key) = p.dropout.map_or((1.0f32, [0; 4]), |d| (d.keep as f32, d.key.words()));
    meta[13] = keep.to_bits();
    meta[14..18].copy_from_slice(&key);
    Ok(meta)
}

/// A flash kernel's specialisation key (and `KILN_PROFILE` name): kernel, dtype, then the
/// tiling's `name` (head dim and blocking).
pub(crate) fn key(kernel: Kernel, dtype: DType, name: &str) -> String {
    let family = match kernel {
        Kernel::Forward => "attention",
        Kernel::Dq => "attention_bwd_dq",
        Kernel::Dkv => "attention_bwd_dkv",
    };
    format!("{family}|{dtype}|{name}")
}

/// Whether this call takes the materialised path rather than the flash kernels here.
fn materialised(q: &GpuStorage, p: &AttentionParams) -> bool {
    q.context().attention_materialises(p)
}

/// One flash kernel ready to dispatch: its pipeline, metadata and workgroup count.
pub(crate) struct Launch {
    kernel: Arc<crate::cache::Kernel>,
    meta: [u32; 18],
    groups: u32,
}

/// The `kernel` launch for `rows` resident rows (queries, or keys for `Dkv`) per (batch, head):
/// on tensor cores where `attention_coop.rs` covers the call, else the tiled f32-math kernels.
fn launch(
    op: &'static str,
    kernel: Kernel,
    q: &GpuStorage,
    p: &AttentionParams,
    rows: usize,
    masked: bool,
    biased: bool,
) -> Result<Launch> {
    let dtype = q.dtype();
    check_float(op, dtype)?;
    let d = p.head_dim;
    if d == 0 || d > MAX_HEAD_DIM {
        return Err(Error::Unsupported { op, msg: format!("head dim {d} (the GPU kernel takes 1 to {MAX_HEAD_DIM})") });
    }
    let bh = p.batch * p.heads;
    check_len(op, bh * p.q_len.max(p.kv_len) * d)?;
    if let Some(run) = super::attention_coop::launch(op, kernel, q, p, rows, masked, biased)? {
        return Ok(run);
    }
    let ctx = q.context();
    let limits = &ctx.limits;
    let tiling = Tiling::choose(
        kernel,
        d as u32,
        limits.max_compute_workgroup_storage_size,
        limits.max_compute_invocations_per_workgroup,
    )
    .ok_or_else(|| Error::Unsupported {
        op,
        msg: format!(
            "head dim {d}: no flash tiling fits this adapter's {} bytes of workgroup memory",
            limits.max_compute_workgroup_storage_size
        ),
    })?;
    let pipeline =
        ctx.cache.get(&ctx.device, op, &key(kernel, dtype, &tiling.name()), || source(kernel, dtype, &tiling))?;
    launch_with(op, pipeline, p, rows, tiling.rows(), masked, biased)
}

/// A launch of `pipeline` whose workgroups each own `per_group` of the `rows` resident rows of
/// every (batch, head).
pub(crate) fn launch_with(
    op: &'static str,
    pipeline: Arc<crate::cache::Kernel>,
    p: &AttentionParams,
    rows: usize,
    per_group: u32,
    masked: bool,
    biased: bool,
) -> Result<Launch> {
    let bh = p.batch * p.heads;
    let tiles = rows.div_ceil(per_group as usize);
    let groups = check_len(op, bh * tiles)?;
    let own = [
        bh as u32,
        p.heads as u32,
        p.q_len as u32,
        p.kv_len as u32,
        p.causal as u32,
        masked as u32,
        (p.scale as f32).to_bits(),
        tiles as u32,
    ];
    Ok(Launch { kernel: pipeline, meta: with_extras(op, own, p, biased)?, groups })
}

pub(crate) fn forward(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    mask: Option<&GpuStorage>,
    bias: Option<&GpuStorage>,
    p: &AttentionParams,
) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "scaled_dot_product_attention";
    if materialised(q, p) {
        return super::attention_matmul::forward(q, k, v, mask, bias, p);
    }
    let dtype = q.dtype();
    let run = launch(OP, Kernel::Forward, q, p, p.q_len, mask.is_some(), bias.is_some())?;
    let ctx = q.context();
    let bh = p.batch * p.heads;
    let o = GpuStorage::alloc(ctx, OP, dtype, bh * p.q_len * p.head_dim)?;
    let lse = GpuStorage::alloc(ctx, OP, DType::F32, bh * p.q_len)?;
    if bh * p.q_len == 0 {
        return Ok((o, lse));
    }
    let (m, b) = (mask.unwrap_or(q), bias.unwrap_or(q));
    let buffers = [q.binding(), k.binding(), v.binding(), m.binding(), o.binding(), lse.binding(), b.binding()];
    ctx.dispatch(OP, &run.kernel, &buffers, &run.meta, run.groups)?;
    Ok((o, lse))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    mask: Option<&GpuStorage>,
    bias: Option<&GpuStorage>,
    o: &GpuStorage,
    lse: &GpuStorage,
    dout: &GpuStorage,
    p: &AttentionParams,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "scaled_dot_product_attention_backward";
    if materialised(q, p) {
        return super::attention_matmul::backward(q, k, v, mask, bias, lse, dout, p);
    }
    let dtype = q.dtype();
    let ctx = q.context();
    let bh = p.batch * p.heads;
    let d = p.head_dim;
    let pass0 = launch(OP, Kernel::Dq, q, p, p.q_len, mask.is_some(), bias.is_some())?;
    let pass1 = launch(OP, Kernel::Dkv, q, p, p.kv_len, mask.is_some(), bias.is_some())?;
    if bh * p.q_len * p.kv_len == 0 {
        // No query sees a key: every gradient is zero.
        let zero = |n| GpuStorage::full(ctx, n, 0.0, dtype);
        return Ok((zero(bh * p.q_len * d)?, zero(bh * p.kv_len * d)?, zero(bh * p.kv_len * d)?));
    }
    let dq = GpuStorage::alloc(ctx, OP, dtype, bh * p.q_len * d)?;
    let dk = GpuStorage::alloc(ctx, OP, dtype, bh * p.kv_len * d)?;
    let dv = GpuStorage::alloc(ctx, OP, dtype, bh * p.kv_len * d)?;
    let delta = GpuStorage::alloc(ctx, OP, DType::F32, bh * p.q_len)?;
    let (m, b) = (mask.unwrap_or(q), bias.unwrap_or(q));
    let inputs = [
        q.binding(),
        k.binding(),
        v.binding(),
        o.binding(),
        dout.binding(),
        m.binding(),
        lse.binding(),
        delta.binding(),
    ];
    let mut buffers = inputs.to_vec();
    buffers.extend([dq.binding(), b.binding()]);
    ctx.dispatch(OP, &pass0.kernel, &buffers, &pass0.meta, pass0.groups)?;
    let mut buffers = inputs.to_vec();
    buffers.extend([dk.binding(), dv.binding(), b.binding()]);
    ctx.dispatch(OP, &pass1.kernel, &buffers, &pass1.meta, pass1.groups)?;
    Ok((dq, dk, dv))
}

/// Every head dim class in both dtypes, tiled as adapters with 16, 32 and 48 KiB of workgroup
/// memory (and 256 invocations) would tile them.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for dtype in FLOATS {
        for d in [1, 3, 16, 32, 64, 80, 128, 256] {
            for kernel in [Kernel::Forward, Kernel::Dq, Kernel::Dkv] {
                for kib in [16, 32, 48] {
                    let Some(t) = Tiling::choose(kernel, d, kib << 10, 256) else { continue };
                    let k = key(kernel, dtype, &t.name());
                    if !all.iter().any(|(x, _)| *x == k) {
                        all.push((k, source(kernel, dtype, &t)));
                    }
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilings_cover_the_head_dim_and_fit() {
        for d in 1..=256u32 {
            for (d4, tc, ov) in Tiling::columns(d) {
                assert!(tc * ov >= d4 && tc * (ov - 1) < d4, "d {d}: {tc} x {ov}");
            }
            for kernel in [Kernel::Forward, Kernel::Dq, Kernel::Dkv] {
                for kib in [32u32, 48] {
                    let t = Tiling::choose(kernel, d, kib << 10, 1024)
                        .unwrap_or_else(|| panic!("d {d} {kernel:?} {kib} KiB"));
                    assert!(t.workgroup_bytes(kernel) <= kib << 10);
                }
            }
        }
        // An H100 (48 KiB): W10's head dim 64 gets 64 query rows in the forward.
        let t = Tiling::choose(Kernel::Forward, 64, 48 << 10, 1024).unwrap();
        assert_eq!((t.rows(), t.cols(), t.threads()), (64, 32, 256));
        // Head dims that pad least: 80 is 20 vec4s, split over 4 threads of 5.
        assert_eq!(Tiling::columns(80)[0], (20, 4, 5));
        assert_eq!(Tiling::columns(64)[0], (16, 16, 1));
        assert_eq!(Tiling::columns(3)[0], (1, 4, 1));
    }
}
