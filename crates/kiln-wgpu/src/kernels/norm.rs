//! LayerNorm / RMSNorm forward (`shaders/layer_norm.wgsl`), dx (`layer_norm_backward.wgsl`)
//! and the weight/bias gradients (`norm_params_grad.wgsl`, then the reduce kernel over chunks).

use super::fused::{Access, FLOATS, check_float, check_len, enable_for, float_binding, raw_binding};
use super::params::{KernelParams, kernel_params};
use super::{WG, module};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Layout, NormParams, ReduceOp, Result};

kernel_params! {
    /// `shaders/layer_norm.wgsl`: flags say whether weight and bias are bound (else `x` is).
    struct NormForwardParams { rows: u32, n: u32, has_weight: u32, has_bias: u32, eps: f32 }
}

kernel_params! {
    /// `shaders/layer_norm_backward.wgsl`.
    struct NormBackwardParams { rows: u32, n: u32, has_weight: u32 }
}

kernel_params! {
    /// `shaders/norm_params_grad.wgsl`: `chunks` of `chunk_rows` rows.
    struct NormParamsGradParams { rows: u32, n: u32, chunk_rows: u32, chunks: u32 }
}

/// Rows each thread of the parameter-gradient pass sums before the chunks are folded.
const CHUNK_ROWS: usize = 32;

/// Threads per row: about eight elements each, from 32 (a row of at most 256 shares its
/// workgroup with seven others) to the whole workgroup of 256.
fn lanes(n: usize) -> usize {
    n.div_ceil(8).next_power_of_two().clamp(32, WG as usize)
}

/// Every lane count [`lanes`] gives.
const LANE_COUNTS: [usize; 4] = [32, 64, 128, 256];

fn forward_source(dtype: DType, rms: bool, lanes: usize) -> String {
    let mut b = float_binding(1, "x", dtype, Access::Read);
    b += &float_binding(2, "w", dtype, Access::Read);
    b += &float_binding(3, "b", dtype, Access::Read);
    b += &float_binding(4, "y", dtype, Access::Write);
    b += &raw_binding(5, "stats", "f32", Access::Write);
    let body = Template::new(crate::shaders::LAYER_NORM)
        .params::<NormForwardParams>()
        .set("CENTER", if rms { "false" } else { "true" })
        .set("LANES", lanes.to_string())
        .render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

fn backward_source(dtype: DType, rms: bool, lanes: usize) -> String {
    let mut b = float_binding(1, "x", dtype, Access::Read);
    b += &float_binding(2, "dy", dtype, Access::Read);
    b += &float_binding(3, "w", dtype, Access::Read);
    b += &raw_binding(4, "stats", "f32", Access::Read);
    b += &float_binding(5, "dx", dtype, Access::Write);
    let body = Template::new(crate::shaders::LAYER_NORM_BACKWARD)
        .params::<NormBackwardParams>()
        .set("CENTER", if rms { "false" } else { "true" })
        .set("LANES", lanes.to_string())
        .render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

fn params_source(dtype: DType) -> String {
    let mut b = float_binding(1, "x", dtype, Access::Read);
    b += &float_binding(2, "dy", dtype, Access::Read);
    b += &raw_binding(3, "stats", "f32", Access::Read);
    b += &raw_binding(4, "pw", "f32", Access::Write);
    b += &raw_binding(5, "pb", "f32", Access::Write);
    let body = Template::new(crate::shaders::NORM_PARAMS_GRAD).params::<NormParamsGradParams>().render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

fn key(kind: &str, dtype: DType, rms: bool, lanes: usize) -> String {
    format!("{kind}|{dtype}|{}|{lanes}", if rms { "rms" } else { "layer" })
}

/// Workgroups for `rows` rows of `lanes` threads.
fn groups(op: &'static str, rows: usize, lanes: usize) -> Result<u32> {
    check_len(op, rows.div_ceil(WG as usize / lanes))
}

pub(crate) fn forward(
    x: &GpuStorage,
    weight: Option<&GpuStorage>,
    bias: Option<&GpuStorage>,
    p: &NormParams,
) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "norm";
    let dtype = x.dtype();
    check_float(OP, dtype)?;
    let ctx = x.context();
    let numel = p.rows * p.n;
    check_len(OP, numel)?;
    let y = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    let stats = GpuStorage::alloc(ctx, OP, DType::F32, 2 * p.rows)?;
    if numel == 0 {
        return Ok((y, stats));
    }
    let l = lanes(p.n);
    let kernel = ctx.cache.get(&ctx.device, OP, &key("norm", dtype, p.rms, l), || forward_source(dtype, p.rms, l))?;
    let meta = NormForwardParams {
        rows: p.rows as u32,
        n: p.n as u32,
        has_weight: weight.is_some() as u32,
        has_bias: bias.is_some() as u32,
        eps: p.eps as f32,
    };
    let w = weight.unwrap_or(x);
    let b = bias.unwrap_or(x);
    ctx.dispatch(
        OP,
        &kernel,
        &[x.binding(), w.binding(), b.binding(), y.binding(), stats.binding()],
        meta.words(),
        groups(OP, p.rows, l)?,
    )?;
    Ok((y, stats))
}

pub(crate) fn backward(
    x: &GpuStorage,
    dy: &GpuStorage,
    stats: &GpuStorage,
    weight: Option<&GpuStorage>,
    p: &NormParams,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "norm_backward";
    let dtype = x.dtype();
    check_float(OP, dtype)?;
    let ctx = x.context();
    let numel = p.rows * p.n;
    check_len(OP, numel)?;
    let dx = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if numel == 0 {
        let zeros = GpuStorage::full(ctx, p.n, 0.0, dtype)?;
        let zeros2 = GpuStorage::full(ctx, p.n, 0.0, dtype)?;
        return Ok((dx, zeros, zeros2));
    }
    let l = lanes(p.n);
    let kernel =
        ctx.cache.get(&ctx.device, OP, &key("norm_bwd", dtype, p.rms, l), || backward_source(dtype, p.rms, l))?;
    let w = weight.unwrap_or(x);
    let meta = NormBackwardParams { rows: p.rows as u32, n: p.n as u32, has_weight: weight.is_some() as u32 };
    ctx.dispatch(
        OP,
        &kernel,
        &[x.binding(), dy.binding(), w.binding(), stats.binding(), dx.binding()],
        meta.words(),
        groups(OP, p.rows, l)?,
    )?;

    let chunks = p.rows.div_ceil(CHUNK_ROWS);
    let pw = GpuStorage::alloc(ctx, OP, DType::F32, chunks * p.n)?;
    let pb = GpuStorage::alloc(ctx, OP, DType::F32, chunks * p.n)?;
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("norm_params|{dtype}"), || params_source(dtype))?;
    let meta = NormParamsGradParams {
        rows: p.rows as u32,
        n: p.n as u32,
        chunk_rows: CHUNK_ROWS as u32,
        chunks: chunks as u32,
    };
    let groups = check_len(OP, (chunks * p.n).div_ceil(WG as usize))?;
    ctx.dispatch(
        OP,
        &kernel,
        &[x.binding(), dy.binding(), stats.binding(), pw.binding(), pb.binding()],
        meta.words(),
        groups,
    )?;
    // [chunks, n] read as [n, chunks]: the reduce kernel sums each column's chunks.
    let columns = Layout::new(vec![p.n, chunks], vec![1, p.n], 0);
    let fold = |s: &GpuStorage| -> Result<GpuStorage> {
        let sum = super::reduce::reduce(s, &columns, ReduceOp::Sum, 1)?;
        if dtype == DType::F32 { Ok(sum) } else { sum.cast(&Layout::contiguous(&[p.n]), dtype) }
    };
    Ok((dx, fold(&pw)?, fold(&pb)?))
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dtype in FLOATS {
        for rms in [false, true] {
            for l in LANE_COUNTS {
                all.push((key("norm", dtype, rms, l), forward_source(dtype, rms, l)));
                all.push((key("norm_bwd", dtype, rms, l), backward_source(dtype, rms, l)));
            }
        }
        all.push((format!("norm_params|{dtype}"), params_source(dtype)));
    }
    all
}
