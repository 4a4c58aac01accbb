//! `Σ x²` of many tensors at once (`shaders/sum_squares.wgsl`, `shaders/sum_squares_finish.wgsl`):
//! the norm behind `clip_grad_norm_`. The first pass binds up to eight tensors per dispatch and
//! writes one partial sum per workgroup into a shared buffer; the second adds each tensor's
//! partials in one dispatch for all tensors. A model of ~100 parameters pays ~20 dispatches
//! instead of ~300 (a square, one or two reduction passes and an add per gradient).

use super::fused::{Access, check_float, check_len, float_binding, raw_binding};
use super::params::{KernelParams, kernel_params};
use super::{enables, module};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, ReduceOp, Result, UnaryOp};

const OP: &str = "sum_squares";
/// Elements a workgroup sums at least before a tensor gets another workgroup (16 per thread).
const PER_GROUP: usize = 4096;
/// Most workgroups per tensor: enough to fill a large GPU for one big gradient; the finishing
/// pass then folds at most this many partials per tensor.
const MAX_GROUPS: usize = 512;
/// Most tensors one dispatch binds (WebGPU's default limit is 8 storage buffers per stage;
/// `info` and `partials` take two of them).
pub(crate) const MAX_BOUND: usize = 8;

kernel_params! {
    /// `shaders/sum_squares.wgsl`: `tensors` bound, partial slots from `out_base`, the table of
    /// [first workgroup, length, workgroups] per tensor at word `table`.
    struct SumSquaresParams { tensors: u32, out_base: u32, table: u32 }
}

kernel_params! {
    /// `shaders/sum_squares_finish.wgsl`: `tensors` outputs, the table of [first partial,
    /// partial count] per tensor at word `table`.
    struct SumSquaresFinishParams { tensors: u32, table: u32 }
}

/// The first pass for `count` tensors of `dtype`.
fn source(dtype: DType, count: usize) -> String {
    let mut b = raw_binding(1, "partials", "f32", Access::Write);
    let mut cases = String::new();
    for k in 0..count {
        let x = format!("x{k}");
        b += &float_binding(2 + k as u32, &x, dtype, Access::Read);
        // Four independent loads per step keep more memory requests in flight than one.
        b += &format!(
            "fn sum_{x}(c: u32, groups: u32, n: u32, lid: u32) -> f32 {{
    var acc = vec4<f32>(0.0);
    for (var base = c * 1024u; base < n; base += groups * 1024u) {{
        let i = base + lid;
        var v = vec4<f32>(0.0);
        if i < n {{ v.x = ld_{x}(i); }}
        if i + 256u < n {{ v.y = ld_{x}(i + 256u); }}
        if i + 512u < n {{ v.z = ld_{x}(i + 512u); }}
        if i + 768u < n {{ v.w = ld_{x}(i + 768u); }}
        acc += v * v;
    }}
    return acc.x + acc.y + acc.z + acc.w;
}}
"
        );
        cases += &format!("        case {k}u: {{ return sum_{x}(c, groups, n, lid); }}\n");
    }
    b += &format!(
        "fn tensor_sum(t: u32, c: u32, groups: u32, n: u32, lid: u32) -> f32 {{
    switch t {{
{cases}        default: {{ return 0.0; }}
    }}
}}
"
    );
    let body = Template::new(crate::shaders::SUM_SQUARES).params::<SumSquaresParams>().render();
    module(enables(&[dtype]), false, &format!("{b}\n{body}"))
}

fn key(dtype: DType, count: usize) -> String {
    format!("sum_squares|{dtype}|x{count}")
}

fn finish_source() -> String {
    let mut b = raw_binding(1, "partials", "f32", Access::Read);
    b += &raw_binding(2, "out", "f32", Access::Write);
    let body = Template::new(crate::shaders::SUM_SQUARES_FINISH).params::<SumSquaresFinishParams>().render();
    module("", false, &format!("{b}\n{body}"))
}

const FINISH_KEY: &str = "sum_squares|finish";

/// Tensors one dispatch binds on `ctx`: its storage-buffer limit less `info` and one more
/// buffer (the partials, or the scale's factor), at most [`MAX_BOUND`].
pub(crate) fn bound(ctx: &crate::context::GpuContext) -> usize {
    (ctx.limits.max_storage_buffers_per_shader_stage as usize).saturating_sub(2).clamp(1, MAX_BOUND)
}

/// The checks both multi-tensor kernels make of their parts: each on `ctx`, a float, holding at
/// least its `n` elements, and `n` within a dispatch's reach.
pub(crate) fn check_parts<'a>(
    op: &'static str,
    ctx: &std::sync::Arc<crate::context::GpuContext>,
    parts: impl IntoIterator<Item = (&'a GpuStorage, usize)>,
) -> Result<()> {
    for (s, n) in parts {
        if !std::sync::Arc::ptr_eq(s.context(), ctx) {
            return Err(Error::DeviceMismatch {
                op,
                lhs: ctx.summary.name.clone(),
                rhs: s.context().summary.name.clone(),
            });
        }
        check_float(op, s.dtype())?;
        if s.len() < n {
            return Err(Error::invalid(op, format!("storage holds {} elements, needs {n}", s.len())));
        }
        check_len(op, n)?;
    }
    Ok(())
}

/// `Σ x²` of the first `n` elements of each part, as `[parts.len()]` f32.
pub(crate) fn sum_squares(parts: &[(&GpuStorage, usize)], dtype: DType) -> Result<GpuStorage> {
    if dtype != DType::F32 {
        return Err(Error::UnsupportedDType { op: OP, dtype, why: " (the GPU sums squares in f32)".into() });
    }
    let Some(&(first, _)) = parts.first() else { return Err(Error::invalid(OP, "needs at least one tensor")) };
    let ctx = first.context().clone();
    let limit = ctx.limits.max_storage_buffer_binding_size;
    check_parts(OP, &ctx, parts.iter().copied())?;
    // A tensor past the binding limit is summed by the chunked square and reduction into a
    // slot of its own; every other one gets workgroups in the first pass.
    let oversized: Vec<bool> = parts.iter().map(|(s, _)| s.byte_size() > limit).collect();
    let groups: Vec<usize> = parts
        .iter()
        .zip(&oversized)
        .map(|(&(_, n), &big)| if big { 1 } else { n.div_ceil(PER_GROUP).clamp(1, MAX_GROUPS) })
        .collect();
    let total: usize = groups.iter().sum();
    check_len(OP, total)?;
    let partials = GpuStorage::alloc(&ctx, OP, DType::F32, total)?;
    let bound = bound(&ctx);

    let mut i = 0;
    let mut base = 0;
    while i < parts.len() {
        let (s, n) = parts[i];
        if oversized[i] {
            let l = Layout::contiguous(&[n]);
            let sum = s.cast(&l, DType::F32)?.unary(&l, UnaryOp::Square)?.reduce(&l, ReduceOp::Sum, 1)?;
            ctx.copy(sum.binding(), 0, partials.binding(), 4 * base as u64, 4)?;
            base += 1;
            i += 1;
            continue;
        }
        // A run of tensors sharing a dtype, none oversized, at most `bound` of them.
        let dt = s.dtype();
        let mut end = i + 1;
        while end < parts.len() && end - i < bound && !oversized[end] && parts[end].0.dtype() == dt {
            end += 1;
        }
        let run = &parts[i..end];
        let table = SumSquaresParams::default().words().len() as u32;
        let params = SumSquaresParams { tensors: run.len() as u32, out_base: base as u32, table };
        let mut meta = params.words().to_vec();
        let mut first_group = 0;
        for (&(_, n), &g) in run.iter().zip(&groups[i..end]) {
            meta.extend([first_group as u32, n as u32, g as u32]);
            first_group += g;
        }
        let kernel = ctx.cache.get(&ctx.device, OP, &key(dt, run.len()), || source(dt, run.len()))?;
        let mut bufs = vec![partials.binding()];
        bufs.extend(run.iter().map(|(s, _)| s.binding()));
        ctx.dispatch(OP, &kernel, &bufs, &meta, check_len(OP, first_group)?)?;
        base += first_group;
        i = end;
    }

    let out = GpuStorage::alloc(&ctx, OP, DType::F32, parts.len())?;
    let table = SumSquaresFinishParams::default().words().len() as u32;
    let mut meta = SumSquaresFinishParams { tensors: parts.len() as u32, table }.words().to_vec();
    let mut start = 0;
    for &g in &groups {
        meta.extend([start as u32, g as u32]);
        start += g;
    }
    let kernel = ctx.cache.get(&ctx.device, OP, FINISH_KEY, finish_source)?;
    ctx.dispatch(OP, &kernel, &[partials.binding(), out.binding()], &meta, check_len(OP, parts.len())?)?;
    Ok(out)
}

/// Every source this module can generate.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = vec![(FINISH_KEY.to_string(), finish_source())];
    for dtype in super::fused::FLOATS {
        for count in 1..=MAX_BOUND {
            all.push((key(dtype, count), source(dtype, count)));
        }
    }
    all
}
