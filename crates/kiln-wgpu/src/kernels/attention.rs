//! Scaled dot-product attention: forward (`shaders/attention.wgsl`, flash-style with online
//! softmax, saving the row log-sum-exp) and backward (`attention_backward.wgsl`, two passes
//! that recompute probabilities from that log-sum-exp). Specialised by head dim: each thread
//! keeps its row in registers. Calls whose score matrix is small take the materialised path
//! (`attention_matmul.rs`) instead; `attention_path.rs` decides.

use super::fused::{Access, check_float, check_len, enable_for, float_binding, raw_binding, FLOATS};
use super::module;
use crate::storage::GpuStorage;
use kiln_backend::{AttentionParams, BackendStorage, DType, Error, Result};

/// Rows (queries, or keys in the dk/dv pass) per workgroup: four threads each.
const BR: usize = 16;
/// Largest head dim with a kernel: each thread keeps a quarter row in registers.
pub const MAX_HEAD_DIM: usize = 256;

/// vec4s in each of a row's four slices: the head dim padded to a multiple of 16.
fn slices(d: usize) -> usize {
    d.div_ceil(16)
}

/// Rows per shared-memory tile. The forward holds two tiles (`rows · 4 · slices` vec4s each,
/// at most 4 KiB) and one partial-sum array (at most 4 KiB); the backward two tiles and two
/// partial-sum arrays, so its tiles are half as tall. Either stays under the 16 KiB of shared
/// memory every adapter offers. Taller tiles mean fewer barriers per key.
fn tile_rows(d: usize, backward: bool) -> usize {
    let budget = if backward { 32 } else { 64 };
    (budget / slices(d)).clamp(1, 16)
}

fn fill(src: &str, d: usize, backward: bool) -> String {
    let (v, bc) = (slices(d), tile_rows(d, backward));
    src.replace("{{D}}", &d.to_string())
        .replace("{{V}}", &v.to_string())
        .replace("{{BC}}", &bc.to_string())
        .replace("{{TILE4}}", &(bc * 4 * v).to_string())
        .replace("{{PART}}", &(BR * bc * 4).to_string())
}

/// `ld4_<name>(base, e)`: elements `e..e + 4` of the row at `base` (zero past the head dim), and
/// `st4_<name>` storing the ones inside it.
fn vec4_io(name: &str, write: bool) -> String {
    let mut s = format!(
        "fn ld4_{name}(base_: u32, e_: u32) -> vec4<f32> {{
    var r_ = vec4<f32>(0.0);
    for (var x_ = 0u; x_ < 4u; x_++) {{ if e_ + x_ < D {{ r_[x_] = ld_{name}(base_ + e_ + x_); }} }}
    return r_;
}}
"
    );
    if write {
        s += &format!(
            "fn st4_{name}(base_: u32, e_: u32, v_: vec4<f32>) {{
    for (var x_ = 0u; x_ < 4u; x_++) {{ if e_ + x_ < D {{ st_{name}(base_ + e_ + x_, v_[x_]); }} }}
}}
"
        );
    }
    s
}

fn forward_source(dtype: DType, d: usize) -> String {
    let mut b = float_binding(1, "q", dtype, Access::Read);
    b += &float_binding(2, "k", dtype, Access::Read);
    b += &float_binding(3, "v", dtype, Access::Read);
    b += &raw_binding(4, "mask", "u32", Access::Read);
    b += &float_binding(5, "o", dtype, Access::Write);
    b += &raw_binding(6, "lse", "f32", Access::Write);
    for name in ["q", "k", "v"] {
        b += &vec4_io(name, false);
    }
    b += &vec4_io("o", true);
    module(enable_for(dtype), false, &format!("{b}\n{}", fill(crate::shaders::ATTENTION, d, false)))
}

fn backward_source(dtype: DType, d: usize, pass: u32) -> String {
    let mut b = String::new();
    for (i, name) in ["q", "k", "v", "o", "dout"].iter().enumerate() {
        b += &float_binding(i as u32 + 1, name, dtype, Access::Read);
    }
    b += &raw_binding(6, "mask", "u32", Access::Read);
    b += &raw_binding(7, "lse", "f32", Access::Read);
    if pass == 0 {
        b += &raw_binding(8, "delta", "f32", Access::Write);
        b += "fn st_delta(at_: u32, val_: f32) { delta[at_] = val_; }\n";
        b += &float_binding(9, "ga", dtype, Access::Write);
        b += "fn st4_gb(base_: u32, e_: u32, v_: vec4<f32>) {}\n";
    } else {
        b += &raw_binding(8, "delta", "f32", Access::Read);
        b += "fn st_delta(at_: u32, val_: f32) {}\n";
        b += &float_binding(9, "ga", dtype, Access::Write);
        b += &float_binding(10, "gb", dtype, Access::Write);
    }
    b += "fn ld_delta(at_: u32) -> f32 { return delta[at_]; }\n";
    for name in ["q", "k", "v", "o", "dout"] {
        b += &vec4_io(name, false);
    }
    b += &vec4_io("ga", true);
    if pass == 1 {
        b += &vec4_io("gb", true);
    }
    let body = fill(crate::shaders::ATTENTION_BACKWARD, d, true).replace("{{PASS}}", &pass.to_string());
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

/// Whether this call takes the materialised path rather than the flash kernels here.
fn materialised(q: &GpuStorage, p: &AttentionParams) -> bool {
    q.context().attention_materialises(p)
}

struct Plan {
    meta: [u32; 8],
    mask_on: bool,
}

fn plan(op: &'static str, q: &GpuStorage, p: &AttentionParams, rows: usize) -> Result<Plan> {
    check_float(op, q.dtype())?;
    let d = p.head_dim;
    if d == 0 || d > MAX_HEAD_DIM {
        return Err(Error::Unsupported { op, msg: format!("head dim {d} (the GPU kernel takes 1 to {MAX_HEAD_DIM})") });
    }
    let bh = p.batch * p.heads;
    check_len(op, bh * p.q_len.max(p.kv_len) * d)?;
    let tiles = rows.div_ceil(BR);
    check_len(op, bh * tiles)?;
    let meta = [
        bh as u32,
        p.heads as u32,
        p.q_len as u32,
        p.kv_len as u32,
        p.causal as u32,
        0,
        (p.scale as f32).to_bits(),
        tiles as u32,
    ];
    Ok(Plan { meta, mask_on: false })
}

impl Plan {
    fn with_mask(mut self, mask: Option<&GpuStorage>) -> Self {
        self.mask_on = mask.is_some();
        self.meta[5] = self.mask_on as u32;
        self
    }

    fn groups(&self) -> u32 {
        self.meta[0] * self.meta[7]
    }
}

pub(crate) fn forward(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    mask: Option<&GpuStorage>,
    p: &AttentionParams,
) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "scaled_dot_product_attention";
    if materialised(q, p) {
        return super::attention_matmul::forward(q, k, v, mask, p);
    }
    let dtype = q.dtype();
    let plan = plan(OP, q, p, p.q_len)?.with_mask(mask);
    let ctx = q.context();
    let bh = p.batch * p.heads;
    let o = GpuStorage::alloc(ctx, OP, dtype, bh * p.q_len * p.head_dim)?;
    let lse = GpuStorage::alloc(ctx, OP, DType::F32, bh * p.q_len)?;
    if bh * p.q_len == 0 {
        return Ok((o, lse));
    }
    let d = p.head_dim;
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("attention|{dtype}|{d}"), || forward_source(dtype, d))?;
    let m = mask.unwrap_or(q);
    let buffers = [q.buffer(), k.buffer(), v.buffer(), m.buffer(), o.buffer(), lse.buffer()];
    ctx.dispatch(OP, &kernel, &buffers, &plan.meta, plan.groups())?;
    Ok((o, lse))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    mask: Option<&GpuStorage>,
    o: &GpuStorage,
    lse: &GpuStorage,
    dout: &GpuStorage,
    p: &AttentionParams,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "scaled_dot_product_attention_backward";
    if materialised(q, p) {
        return super::attention_matmul::backward(q, k, v, mask, lse, dout, p);
    }
    let dtype = q.dtype();
    let ctx = q.context();
    let bh = p.batch * p.heads;
    let d = p.head_dim;
    let pass0 = plan(OP, q, p, p.q_len)?.with_mask(mask);
    let pass1 = plan(OP, q, p, p.kv_len)?.with_mask(mask);
    if bh * p.q_len * p.kv_len == 0 {
        // No query sees a key: every gradient is zero.
        let zero = |n| GpuStorage::full(ctx, n, 0.0, dtype);
        return Ok((zero(bh * p.q_len * d)?, zero(bh * p.kv_len * d)?, zero(bh * p.kv_len * d)?));
    }
    let dq = GpuStorage::alloc(ctx, OP, dtype, bh * p.q_len * d)?;
    let dk = GpuStorage::alloc(ctx, OP, dtype, bh * p.kv_len * d)?;
    let dv = GpuStorage::alloc(ctx, OP, dtype, bh * p.kv_len * d)?;
    let delta = GpuStorage::alloc(ctx, OP, DType::F32, bh * p.q_len)?;
    let m = mask.unwrap_or(q);
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("attention_bwd|{dtype}|{d}|0"), || backward_source(dtype, d, 0))?;
    let inputs = [q.buffer(), k.buffer(), v.buffer(), o.buffer(), dout.buffer(), m.buffer(), lse.buffer(), delta.buffer()];
    let mut buffers = inputs.to_vec();
    buffers.push(dq.buffer());
    ctx.dispatch(OP, &kernel, &buffers, &pass0.meta, pass0.groups())?;

    let kernel = ctx.cache.get(&ctx.device, OP, &format!("attention_bwd|{dtype}|{d}|1"), || backward_source(dtype, d, 1))?;
    let mut buffers = inputs.to_vec();
    buffers.extend([dk.buffer(), dv.buffer()]);
    ctx.dispatch(OP, &kernel, &buffers, &pass1.meta, pass1.groups())?;
    Ok((dq, dk, dv))
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dtype in FLOATS {
        for d in [1, 3, 16, 32, 64, 128, 256] {
            all.push((format!("attention|{dtype}|{d}"), forward_source(dtype, d)));
            for pass in [0, 1] {
                all.push((format!("attention_bwd|{dtype}|{d}|{pass}"), backward_source(dtype, d, pass)));
            }
        }
    }
    all
}
