//! Cross-entropy from logits: forward (`shaders/cross_entropy.wgsl`, per-row loss and
//! log-sum-exp in one kernel) and backward (`cross_entropy_backward.wgsl`, one kernel).

use super::fused::{Access, FLOATS, check_float, check_len, enable_for, float_binding, raw_binding};
use super::params::{KernelParams, kernel_params};
use super::{WG, module};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, CrossEntropyParams, DType, Result};

fn forward_source(dtype: DType) -> String {
    let mut b = float_binding(1, "x", dtype, Access::Read);
    b += &raw_binding(2, "targets", "u32", Access::Read);
    b += &float_binding(3, "loss", dtype, Access::Write);
    b += &raw_binding(4, "lse", "f32", Access::Write);
    let body = Template::new(crate::shaders::CROSS_ENTROPY).params::<CrossEntropyKernelParams>().render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

fn backward_source(dtype: DType) -> String {
    let mut b = float_binding(1, "x", dtype, Access::Read);
    b += &raw_binding(2, "targets", "u32", Access::Read);
    b += &raw_binding(3, "lse", "f32", Access::Read);
    b += &float_binding(4, "grad", dtype, Access::Read);
    b += &float_binding(5, "dx", dtype, Access::Write);
    let body = Template::new(crate::shaders::CROSS_ENTROPY_BACKWARD).params::<CrossEntropyKernelParams>().render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

kernel_params! {
    /// `shaders/cross_entropy.wgsl` and `cross_entropy_backward.wgsl`.
    struct CrossEntropyKernelParams { rows: u32, classes: u32, has_ignore: u32, ignore_index: u32, smoothing: f32 }
}

fn meta(p: &CrossEntropyParams) -> Vec<u32> {
    let params = CrossEntropyKernelParams {
        rows: p.rows as u32,
        classes: p.classes as u32,
        has_ignore: p.ignore_index.is_some() as u32,
        ignore_index: p.ignore_index.unwrap_or(0),
        smoothing: p.smoothing as f32,
    };
    params.words().to_vec()
}

pub(crate) fn forward(
    x: &GpuStorage,
    targets: &GpuStorage,
    p: &CrossEntropyParams,
) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "cross_entropy";
    let dtype = x.dtype();
    check_float(OP, dtype)?;
    check_len(OP, p.rows * p.classes)?;
    let ctx = x.context();
    let loss = GpuStorage::alloc(ctx, OP, dtype, p.rows)?;
    let lse = GpuStorage::alloc(ctx, OP, DType::F32, p.rows)?;
    if p.rows == 0 {
        return Ok((loss, lse));
    }
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("cross_entropy|{dtype}"), || forward_source(dtype))?;
    ctx.dispatch(
        OP,
        &kernel,
        &[x.binding(), targets.binding(), loss.binding(), lse.binding()],
        &meta(p),
        p.rows as u32,
    )?;
    Ok((loss, lse))
}

pub(crate) fn backward(
    x: &GpuStorage,
    targets: &GpuStorage,
    lse: &GpuStorage,
    grad: &GpuStorage,
    p: &CrossEntropyParams,
) -> Result<GpuStorage> {
    const OP: &str = "cross_entropy_backward";
    let dtype = x.dtype();
    check_float(OP, dtype)?;
    let numel = p.rows * p.classes;
    check_len(OP, numel)?;
    let ctx = x.context();
    let dx = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if numel == 0 {
        return Ok(dx);
    }
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("cross_entropy_bwd|{dtype}"), || backward_source(dtype))?;
    let groups = check_len(OP, numel.div_ceil(WG as usize))?;
    let buffers = [x.binding(), targets.binding(), lse.binding(), grad.binding(), dx.binding()];
    ctx.dispatch(OP, &kernel, &buffers, &meta(p), groups)?;
    Ok(dx)
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    FLOATS
        .iter()
        .flat_map(|&d| {
            [(format!("cross_entropy|{d}"), forward_source(d)), (format!("cross_entropy_bwd|{d}"), backward_source(d))]
        })
        .collect()
}
