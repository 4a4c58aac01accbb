//! Materialised attention for short sequences: the `[bh, q, kv]` score matrix is built by the
//! batched matmul (register-tiled, or tensor cores for f16), so almost all the work runs at
//! matmul speed, and one row kernel does the softmax between the products.
//!
//! Forward: `S = Q·Kᵀ`; `attention_probs.wgsl` turns S into P in place and saves the row
//! log-sum-exp; `O = P·V`. Backward (recomputing, like flash): `S = Q·Kᵀ`, `dP = dO·Vᵀ`;
//! `attention_probs_backward.wgsl` turns S into P and dP into `dS = scale·P·(dP − D)`; then
//! `dV = Pᵀ·dO`, `dQ = dS·K`, `dK = dSᵀ·Q`. Every transpose is a strided layout the matmul reads
//! in place. S, P and dS keep the input dtype (the matmul's); the softmax math is f32 and lse is
//! f32, as in the flash kernels, whose contract (hidden keys, rows that see nothing, the bias
//! and dropout of `attention_extras.wgsl`) this follows exactly. Rows up to 2,048 keys take the
//! `_held` row kernels, which keep a row in registers: each element read once and written once.

use super::attention::{extras_source, with_extras};
use super::fused::{Access, FLOATS, check_float, check_len, enable_for, raw_binding, u32_of};
use super::{matmul::matmul, module, storage_type};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{AttentionParams, BackendStorage, DType, Layout, Result};

/// Threads per workgroup of the row kernels (the WGSL's `WG`).
const WG: usize = 64;

/// `ld4_<name>(row_base, c)`: elements `4c..4c + 4` of the row starting at `row_base` as f32 (zero
/// past the row), and `st4_<name>` storing the ones inside it. Rows whose length is a multiple
/// of 4 start 4-aligned and take one vec4 access.
fn row_binding(binding: u32, name: &str, dtype: DType, vec4: bool) -> String {
    let t = storage_type("scaled_dot_product_attention", dtype).unwrap_or("f32");
    if vec4 {
        format!(
            "@group(0) @binding({binding}) var<storage, read_write> {name}: array<vec4<{t}>>;
fn ld4_{name}(base_: u32, c_: u32) -> vec4<f32> {{ return vec4<f32>({name}[base_ / 4u + c_]); }}
fn st4_{name}(base_: u32, c_: u32, v_: vec4<f32>) {{ {name}[base_ / 4u + c_] = vec4<{t}>(v_); }}
"
        )
    } else {
        format!(
            "@group(0) @binding({binding}) var<storage, read_write> {name}: array<{t}>;
fn ld4_{name}(base_: u32, c_: u32) -> vec4<f32> {{
    var r_ = vec4<f32>(0.0);
    for (var x_ = 0u; x_ < 4u; x_++) {{ if c_ * 4u + x_ < row_len() {{ r_[x_] = f32({name}[base_ + c_ * 4u + x_]); }} }}
    return r_;
}}
fn st4_{name}(base_: u32, c_: u32, v_: vec4<f32>) {{
    for (var x_ = 0u; x_ < 4u; x_++) {{ if c_ * 4u + x_ < row_len() {{ {name}[base_ + c_ * 4u + x_] = {t}(v_[x_]); }} }}
}}
"
        )
    }
}

/// Chunks of 4 a thread may hold in registers: rows whose chunks per thread fit one of these
/// take the `_held` kernels (every element read once, written once); longer rows stream twice.
/// 2 covers every row up to 512 keys (see `row_plan`'s lanes), 8 up to 2,048.
const HELD: [usize; 2] = [2, 8];

/// The row kernel's body: streaming (`None`) or holding `held` chunks a thread.
fn row_kernel(streaming: &str, holding: &str, held: Option<usize>) -> String {
    match held {
        None => streaming.to_string(),
        Some(h) => Template::new(holding).set("HELD", h.to_string()).render(),
    }
}

fn row_key(kernel: &str, dtype: DType, vec4: bool, held: Option<usize>) -> String {
    let held = held.map_or(String::new(), |h| format!("|h{h}"));
    format!("{kernel}|{dtype}|v{}{held}", vec4 as u8)
}

fn forward_source(dtype: DType, vec4: bool, held: Option<usize>) -> String {
    let mut b = row_binding(1, "s", dtype, vec4);
    b += &raw_binding(2, "mask", "u32", Access::Read);
    b += &raw_binding(3, "lse", "f32", Access::Write);
    b += &raw_binding(4, "bias", "f32", Access::Read);
    let body = row_kernel(crate::shaders::ATTENTION_PROBS, crate::shaders::ATTENTION_PROBS_HELD, held);
    module(enable_for(dtype), false, &format!("{b}\n{}\n{}\n{body}", extras_source(), crate::shaders::ATTENTION_ROWS))
}

fn backward_source(dtype: DType, vec4: bool, held: Option<usize>) -> String {
    let mut b = row_binding(1, "s", dtype, vec4);
    b += &row_binding(2, "dp", dtype, vec4);
    b += &raw_binding(3, "mask", "u32", Access::Read);
    b += &raw_binding(4, "lse", "f32", Access::Read);
    b += &raw_binding(5, "bias", "f32", Access::Read);
    let body =
        row_kernel(crate::shaders::ATTENTION_PROBS_BACKWARD, crate::shaders::ATTENTION_PROBS_BACKWARD_HELD, held);
    module(enable_for(dtype), false, &format!("{b}\n{}\n{}\n{body}", extras_source(), crate::shaders::ATTENTION_ROWS))
}

/// A row kernel's plan: metadata, workgroup count, whether rows are 4-aligned (vec4 access),
/// and the chunks a thread holds in registers (`None`: the row streams).
struct RowPlan {
    meta: [u32; 18],
    groups: u32,
    vec4: bool,
    held: Option<usize>,
}

/// Lanes per row: a power of two giving each thread about two 4-element chunks, so short rows
/// share a workgroup.
fn row_plan(op: &'static str, p: &AttentionParams, mask_on: bool, biased: bool) -> Result<RowPlan> {
    let rows = p.batch * p.heads * p.q_len;
    check_len(op, rows * p.kv_len)?;
    let lanes = p.kv_len.div_ceil(8).next_power_of_two().clamp(1, WG);
    let per_thread = p.kv_len.div_ceil(4).div_ceil(lanes);
    let held = HELD.into_iter().find(|&h| per_thread <= h);
    let groups = u32_of(op, rows.div_ceil(WG / lanes), "workgroups")?;
    let own = [
        rows as u32,
        p.q_len as u32,
        p.kv_len as u32,
        p.heads as u32,
        p.causal as u32,
        mask_on as u32,
        (p.scale as f32).to_bits(),
        lanes as u32,
    ];
    Ok(RowPlan { meta: with_extras(op, own, p, biased)?, groups, vec4: p.kv_len.is_multiple_of(4), held })
}

/// `[bh, rows, d]`, contiguous.
fn rows_of(bh: usize, rows: usize, d: usize) -> Layout {
    Layout::contiguous(&[bh, rows, d])
}

/// The transpose of a contiguous `[bh, rows, cols]` matrix, read in place: `[bh, cols, rows]`.
fn transposed(bh: usize, rows: usize, cols: usize) -> Layout {
    Layout::new(vec![bh, cols, rows], vec![rows * cols, 1, cols], 0)
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
    let dtype = q.dtype();
    check_float(OP, dtype)?;
    let (bh, d) = (p.batch * p.heads, p.head_dim);
    let RowPlan { meta, groups, vec4, held } = row_plan(OP, p, mask.is_some(), bias.is_some())?;
    let ctx = q.context();
    let s = matmul(q, &rows_of(bh, p.q_len, d), k, &transposed(bh, p.kv_len, d))?;
    let lse = GpuStorage::alloc(ctx, OP, DType::F32, bh * p.q_len)?;
    let key = row_key("attention_probs", dtype, vec4, held);
    let kernel = ctx.cache.get(&ctx.device, OP, &key, || forward_source(dtype, vec4, held))?;
    let (m, b) = (mask.unwrap_or(q), bias.unwrap_or(q));
    ctx.dispatch(OP, &kernel, &[s.binding(), m.binding(), lse.binding(), b.binding()], &meta, groups)?;
    let o = matmul(&s, &rows_of(bh, p.q_len, p.kv_len), v, &rows_of(bh, p.kv_len, d))?;
    Ok((o, lse))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    mask: Option<&GpuStorage>,
    bias: Option<&GpuStorage>,
    lse: &GpuStorage,
    dout: &GpuStorage,
    p: &AttentionParams,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "scaled_dot_product_attention_backward";
    let dtype = q.dtype();
    check_float(OP, dtype)?;
    let (bh, d, tq, tk) = (p.batch * p.heads, p.head_dim, p.q_len, p.kv_len);
    let RowPlan { meta, groups, vec4, held } = row_plan(OP, p, mask.is_some(), bias.is_some())?;
    let ctx = q.context();
    let s = matmul(q, &rows_of(bh, tq, d), k, &transposed(bh, tk, d))?;
    let dp = matmul(dout, &rows_of(bh, tq, d), v, &transposed(bh, tk, d))?;
    let key = row_key("attention_probs_bwd", dtype, vec4, held);
    let kernel = ctx.cache.get(&ctx.device, OP, &key, || backward_source(dtype, vec4, held))?;
    let (m, b) = (mask.unwrap_or(q), bias.unwrap_or(q));
    ctx.dispatch(OP, &kernel, &[s.binding(), dp.binding(), m.binding(), lse.binding(), b.binding()], &meta, groups)?;
    // s now holds P and dp holds dS.
    let dv = matmul(&s, &transposed(bh, tq, tk), dout, &rows_of(bh, tq, d))?;
    drop(s);
    let dq = matmul(&dp, &rows_of(bh, tq, tk), k, &rows_of(bh, tk, d))?;
    let dk = matmul(&dp, &transposed(bh, tq, tk), q, &rows_of(bh, tq, d))?;
    Ok((dq, dk, dv))
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dtype in FLOATS {
        for vec4 in [false, true] {
            for held in [None].into_iter().chain(HELD.map(Some)) {
                all.push((row_key("attention_probs", dtype, vec4, held), forward_source(dtype, vec4, held)));
                all.push((row_key("attention_probs_bwd", dtype, vec4, held), backward_source(dtype, vec4, held)));
            }
        }
    }
    all
}
